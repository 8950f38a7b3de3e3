//! Realistic Matrix-like event payloads, sized on request.

use serde_json::{json, Value};

const WORDS: &[&str] = &[
    "hello", "matrix", "room", "message", "sync", "tether", "resume", "event", "lorem", "ipsum",
];

/// A `sync_complete` payload with one room timeline event whose body brings the payload to
/// roughly `size` bytes.
pub fn sync_complete(seq: u64, size: usize) -> Value {
    let mut body = String::new();
    let mut i = seq as usize;
    while body.len() + 420 < size {
        body.push_str(WORDS[i % WORDS.len()]);
        body.push(' ');
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    let rowid = (seq % 1_000_000) as i64;
    json!({
        "rooms": {"!abc:example.org": {
            "timeline": [{"timeline_rowid": rowid, "event_rowid": rowid}],
            "events": [{
                "rowid": rowid, "timeline_rowid": rowid, "room_id": "!abc:example.org",
                "event_id": format!("$ev{seq:016x}"), "sender": "@alice:example.org",
                "type": "m.room.message", "timestamp": 1_700_000_000_000i64 + rowid,
                "content": {"msgtype": "m.text", "body": body}
            }]
        }}
    })
}
