//! The pre-encoded gomuks event stream the blaster sends: realistic or fixed-size events,
//! framed as gomuks frames them (gomuks-rpc.md §3.2 text per message, §5 raw deflate with one
//! compressor per connection, sync-flushed per message, events batched per message).

use flate2::{Compress, Compression, FlushCompress};

/// Which events the stream holds.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// A mix shaped like a live Matrix session: room messages of varying length, typing
    /// notices, send confirmations (about 450 B per event on average).
    Realistic,
    /// Every event exactly this many bytes of JSON (newline included).
    Fixed(usize),
}

impl Shape {
    /// Parses `realistic` or a byte count such as `1024`.
    pub fn parse(s: &str) -> Result<Shape, String> {
        if s == "realistic" {
            return Ok(Shape::Realistic);
        }
        let n: usize = s.parse().map_err(|_| format!("bad size {s:?}"))?;
        if n < 256 {
            return Err("fixed sizes start at 256 bytes".into());
        }
        Ok(Shape::Fixed(n))
    }
}

/// The command of the event that ends every stream; clients stop when they see it.
pub const END_COMMAND: &str = "bench_end";

const WORDS: &[&str] = &[
    "the",
    "meeting",
    "is",
    "moved",
    "to",
    "tomorrow",
    "afternoon",
    "please",
    "review",
    "my",
    "pull",
    "request",
    "when",
    "you",
    "have",
    "time",
    "deploy",
    "finished",
    "without",
    "errors",
    "lunch",
    "anyone",
    "coffee",
    "server",
    "restart",
    "ok",
    "thanks",
    "great",
    "idea",
    "ü",
    "naïve",
    "weekend",
    "plans",
    "ticket",
    "closed",
    "release",
    "notes",
    "\\\"quoted\\\"",
];

/// Deterministic generator (xorshift) so every run and every client sees the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn body(rng: &mut Rng, min_len: usize) -> String {
    let mut s = String::new();
    while s.len() < min_len {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

fn room_message(rng: &mut Rng, id: i64, text: &str) -> String {
    let room = rng.below(40);
    let user = rng.below(200);
    let ts = 1_760_000_000_000u64 + rng.below(1_000_000_000);
    format!(
        concat!(
            r#"{{"command":"sync_complete","request_id":{id},"data":{{"rooms":{{"!room{room}:example.org":"#,
            r#"{{"meta":{{"room_id":"!room{room}:example.org","sorting_timestamp":{ts},"unread_messages":{un}}},"#,
            r#""timeline":[{{"timeline_rowid":{row},"event_rowid":{row}}}],"events":[{{"rowid":{row},"#,
            r#""room_id":"!room{room}:example.org","event_id":"$ev{row}x{ts}","sender":"@user{user}:example.org","#,
            r#""type":"m.room.message","timestamp":{ts},"content":{{"msgtype":"m.text","body":"{text}"}},"#,
            r#""unsigned":{{}},"decryption_error":"","reactions":null,"last_edit_rowid":0}}]}}}},"#,
            r#""invited_rooms":null,"left_rooms":null,"account_data":null,"since":"s{row}"}}}}"#,
            "\n"
        ),
        id = id,
        room = room,
        ts = ts,
        un = rng.below(30),
        row = -id,
        user = user,
        text = text
    )
}

/// One event line (with its newline) for event number `i` (request id `-(i+1)`).
fn event_line(rng: &mut Rng, shape: Shape, i: u64) -> String {
    let id = -(i as i64 + 1);
    match shape {
        Shape::Fixed(size) => {
            let mut line = room_message(rng, id, "");
            if line.len() < size {
                // The body sits right before the closing quotes; pad it to the exact size.
                let pad = size - line.len();
                let at = line.find(r#""body":""#).unwrap() + 8;
                line.insert_str(at, &"x".repeat(pad));
            }
            line
        }
        Shape::Realistic => match rng.below(10) {
            0..=6 => {
                // Chat message lengths are skewed: most short, a few paragraphs.
                let len = match rng.below(10) {
                    0..=5 => 10 + rng.below(60),
                    6..=8 => 80 + rng.below(200),
                    _ => 400 + rng.below(1200),
                } as usize;
                let text = body(rng, len);
                room_message(rng, id, &text)
            }
            7..=8 => format!(
                "{{\"command\":\"typing\",\"request_id\":0,\"data\":{{\"room_id\":\"!room{}:example.org\",\"user_ids\":[\"@user{}:example.org\"]}}}}\n",
                rng.below(40),
                rng.below(200)
            ),
            _ => format!(
                "{{\"command\":\"send_complete\",\"request_id\":{id},\"data\":{{\"event\":{{\"rowid\":{},\"room_id\":\"!room{}:example.org\",\"event_id\":\"$sent{}\",\"transaction_id\":\"tx{}\"}},\"error\":null}}}}\n",
                -id,
                rng.below(40),
                -id,
                rng.below(1 << 30)
            ),
        },
    }
}

/// The stream's JSON lines: a `run_id` snapshot, `events` events, then the end marker.
pub fn lines(shape: Shape, events: u64) -> Vec<String> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(events as usize + 2);
    out.push(
        "{\"command\":\"run_id\",\"request_id\":0,\"data\":{\"run_id\":\"bench\",\"etag\":\"\",\"listener_id\":1}}\n"
            .to_string(),
    );
    for i in 0..events {
        out.push(event_line(&mut rng, shape, i));
    }
    out.push(format!(
        "{{\"command\":\"{END_COMMAND}\",\"request_id\":0,\"data\":{{}}}}\n"
    ));
    out
}

/// Appends one unmasked server frame (FIN set) with `opcode` and `payload`.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// The encoded stream and what it cost.
pub struct Encoded {
    /// Every frame, ready to write after the handshake.
    pub wire: Vec<u8>,
    /// JSON bytes before compression (newlines included).
    pub json_bytes: u64,
    /// Events between the `run_id` snapshot and the end marker.
    pub events: u64,
}

/// Encodes `lines` as gomuks would: one text message per line, or (compressed) raw deflate
/// with `per_message` lines batched into each binary message and a sync flush after each.
pub fn encode(lines: &[String], compress: bool, per_message: usize) -> Encoded {
    let json_bytes = lines.iter().map(|l| l.len() as u64).sum();
    let mut wire = Vec::new();
    if !compress {
        for l in lines {
            push_frame(&mut wire, 0x1, l.as_bytes());
        }
    } else {
        let mut z = Compress::new(Compression::new(6), false);
        // The snapshot and the end marker travel alone, as gomuks never batches them (§5).
        let last = lines.len() - 1;
        let mut groups: Vec<&[String]> = vec![&lines[..1]];
        groups.extend(lines[1..last].chunks(per_message.max(1)));
        groups.push(&lines[last..]);
        let mut input = Vec::new();
        let mut out = Vec::new();
        for g in groups {
            input.clear();
            for l in g {
                input.extend_from_slice(l.as_bytes());
            }
            out.clear();
            out.reserve(input.len() + 64);
            let mut pos = 0;
            loop {
                let before = z.total_in();
                z.compress_vec(&input[pos..], &mut out, FlushCompress::Sync)
                    .expect("deflate");
                pos += (z.total_in() - before) as usize;
                if pos >= input.len() && out.len() < out.capacity() {
                    break;
                }
                out.reserve(out.capacity().max(64));
            }
            push_frame(&mut wire, 0x2, &out);
        }
    }
    Encoded {
        wire,
        json_bytes,
        events: lines.len() as u64 - 2,
    }
}
