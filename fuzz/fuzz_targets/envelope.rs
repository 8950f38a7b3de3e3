//! Envelope parser (gomuks-rpc.md §3.2): any line gives a parsed envelope or an error, never a
//! panic. When it parses, `data` is a zero-copy slice of the line holding valid JSON (or the
//! literal `null` when absent), and `command`/`request_id` agree with a generic JSON parse.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use tether::internals::{parse_envelope, Kind};

fuzz_target!(|data: &[u8]| {
    let line = Bytes::copy_from_slice(data);
    let Ok(env) = parse_envelope(&line) else {
        return;
    };
    // JSON allows numbers of any magnitude (RFC 8259 §6) and the parser passes them through
    // raw; serde_json's Value refuses those beyond f64, so that one refusal is checked against
    // the grammar alone.
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&env.data) {
        assert!(
            e.to_string().starts_with("number out of range"),
            "data is not valid JSON: {e}"
        );
        serde_json::from_slice::<IgnoredAny>(&env.data).expect("data is valid JSON");
    }
    if &env.data[..] != b"null" {
        let lo = line.as_ptr() as usize;
        let p = env.data.as_ptr() as usize;
        assert!(
            p >= lo && p + env.data.len() <= lo + line.len(),
            "data is not a slice of the line"
        );
    }
    let kind = env.kind();
    // serde_json::Value keeps the last of duplicate keys, as the envelope parser does.
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(data) {
        assert_eq!(
            o.get("request_id").and_then(|v| v.as_i64()),
            Some(env.request_id)
        );
        let cmd = o.get("command").and_then(|v| v.as_str()).expect("command");
        let want = match cmd {
            "response" => Kind::Response,
            "error" => Kind::Error,
            "pong" => Kind::Pong,
            _ => Kind::Event,
        };
        assert_eq!(kind, want);
    }
});
