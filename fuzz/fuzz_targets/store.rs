//! The gomuks store (docs/store.md, "Tolerance"): any sequence of server events and action
//! answers, of any shape, is applied or skipped without a panic, and every read afterwards
//! gives valid JSON or an error, never a panic; after each step the model keeps its rules
//! (timelines ordered without duplicates, pending echoes not in the timeline, indexes valid).
//!
//! Input: records of `[command index][length: u16 LE][data]`; the index picks one of the
//! commands the store consumes (or, past them, an action answer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::internals::StoreHarness;

const COMMANDS: &[&str] = &[
    "sync_complete",
    "events_decrypted",
    "send_complete",
    "typing",
    "client_state",
    "sync_status",
    "run_id",
    "image_auth_token",
    "init_complete",
];

fuzz_target!(|data: &[u8]| {
    let mut h = StoreHarness::default();
    let mut rest = data;
    while rest.len() >= 3 {
        let idx = rest[0] as usize % (COMMANDS.len() + 1);
        let len = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let body = &rest[3..3 + len];
        rest = &rest[3 + len..];
        match COMMANDS.get(idx) {
            Some(cmd) => {
                assert!(h.apply(cmd, body), "{cmd} is consumed");
            }
            None => h.answer(body),
        }
        h.check();
    }
    // JSON by its grammar: events are handed back as received, so a number past what an f64
    // holds (`1e99999`, valid JSON) passes through, and `serde_json::Value` would refuse it.
    for r in h.read_all() {
        if let Ok(json) = r {
            serde_json::from_slice::<Box<serde_json::value::RawValue>>(&json)
                .expect("a read is JSON");
        }
    }
});
