//! rwws wire format (spec §5.1, §5.2): pure functions, no I/O, no panics on any input.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use crate::logging::tlog;
use crate::session::dialect::Incoming;
use crate::status::{Error, Status};

/// The server's first message.
pub(crate) const HELLO: &[u8] = b"ms";
/// Start of the client's auth message.
pub(crate) const AUTH_MAGIC: [u8; 2] = [0xb6, 0xc4];
/// The protocol version byte (0 in every revision, spec §1.2).
pub(crate) const VERSION: u8 = 0;
/// Client to server: Ping.
pub(crate) const PING: u8 = 0x00;
/// Client to server: Settings.
pub(crate) const SETTINGS: u8 = 0x01;
/// Ends a Settings list.
pub(crate) const SETTINGS_END: u8 = 0xff;
/// Server to client: Pong (+ 8-byte unix millis).
pub(crate) const PONG: u8 = 0x00;
/// Bound on the packets parsed from one message (spec §4 item 5).
pub const MAX_PACKETS_PER_MESSAGE: usize = 8192;

/// Whether `m` is the hello, as a binary or a text frame (spec §2.1).
pub(crate) fn is_hello(m: &Message) -> bool {
    match m {
        Message::Binary(b) => &b[..] == HELLO,
        Message::Text(t) => t.as_bytes() == HELLO,
        _ => false,
    }
}

/// `b6 c4`, version, key length, key (spec §5.2). The key is 1..=127 bytes (checked when the
/// config is built).
pub(crate) fn auth_message(key: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + key.len());
    m.extend_from_slice(&AUTH_MAGIC);
    m.push(VERSION);
    m.push(u8::try_from(key.len()).unwrap_or(0));
    m.extend_from_slice(key);
    m
}

/// A Settings packet: `01`, (id, value)*, `ff` (spec §2.8). Ids 0x00 (reserved) and 0xff (the
/// terminator) are refused.
pub(crate) fn settings_packet<'a>(
    settings: impl IntoIterator<Item = (u8, &'a [u8])>,
) -> Result<Vec<u8>, Error> {
    let mut p = vec![SETTINGS];
    for (id, value) in settings {
        if id == 0x00 || id == SETTINGS_END {
            return Err(Error::new(
                Status::ErrInvalidArgument,
                format!("setting id {id:#04x} is reserved"),
            ));
        }
        p.push(id);
        p.extend_from_slice(value);
    }
    p.push(SETTINGS_END);
    Ok(p)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The Pong's time (spec §2.2: byte order undocumented): big-endian, unless that is over a
/// year from the local clock and the little-endian reading is within it. When neither is near
/// the local clock (the device's clock is wrong, back at 1970 say: just when the server's time
/// is worth telling the app), the reading that is a date between 2000 and 2200 wins, the
/// big-endian one first; 0 ("unknown") if neither is.
pub(crate) fn pong_time(raw: [u8; 8], now_ms: i64, client: u64) -> i64 {
    const YEAR_MS: i64 = 366 * 24 * 3600 * 1000;
    const DATES: std::ops::Range<i64> = 946_684_800_000..7_258_118_400_000;
    /// The little-endian reading is reported once per process, as §2.2 asks.
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let little = |le: i64| {
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tlog!(
                client,
                Warn,
                "rwws",
                "the server's pong time is little-endian; using it"
            );
        }
        le
    };
    let near = |v: i64| v.abs_diff(now_ms) <= YEAR_MS.unsigned_abs();
    let be = i64::from_be_bytes(raw);
    let le = i64::from_le_bytes(raw);
    if near(be) {
        be
    } else if near(le) {
        little(le)
    } else if DATES.contains(&be) {
        be
    } else if DATES.contains(&le) {
        little(le)
    } else {
        0
    }
}

/// Parses one server message: each Pong becomes [`Incoming::Pong`]. At an unknown packet id or
/// a truncated Pong, parsing of this message stops and the rest, from that byte on, goes to the
/// app as [`Incoming::Packet`] (spec §4 items 3 and 4); the connection stays up.
pub fn parse_server_message(msg: &[u8], out: impl FnMut(Incoming)) {
    parse_for(0, msg, out)
}

/// [`parse_server_message`] for `client`, whose log its warnings go to.
pub(crate) fn parse_for(client: u64, msg: &[u8], mut out: impl FnMut(Incoming)) {
    let now = now_ms();
    let mut at = 0;
    let mut packets = 0;
    while at < msg.len() {
        if packets == MAX_PACKETS_PER_MESSAGE {
            tlog!(
                client,
                Warn,
                "rwws",
                "a server message holds over {MAX_PACKETS_PER_MESSAGE} packets; the rest is ignored"
            );
            return;
        }
        packets += 1;
        match msg[at] {
            PONG if msg.len() - at >= 9 => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&msg[at + 1..at + 9]);
                out(Incoming::Pong {
                    id: 0,
                    server_time_ms: pong_time(raw, now, client),
                });
                at += 9;
            }
            id => {
                tlog!(
                    client,
                    Debug,
                    "rwws",
                    "packet {id:#04x} is not the library's; handed to the app"
                );
                out(Incoming::Packet(Bytes::copy_from_slice(&msg[at..])));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_724_256_000_000; // 2024-08-21T16:00:00Z

    fn parse(msg: &[u8]) -> Vec<Incoming> {
        let mut v = Vec::new();
        parse_server_message(msg, |i| v.push(i));
        v
    }

    /// §5.2: the auth message for key "AAECAw==" is `b6 c4 00 04 00 01 02 03`.
    #[test]
    fn spec5_2_auth_message_bytes() {
        assert_eq!(
            auth_message(&[0, 1, 2, 3]),
            [0xb6, 0xc4, 0x00, 0x04, 0x00, 0x01, 0x02, 0x03]
        );
    }

    /// §2.2: big-endian millis, little-endian only when it alone is plausible.
    #[test]
    fn spec2_2_pong_time_byte_order() {
        assert_eq!(pong_time(T.to_be_bytes(), T + 5, 0), T);
        assert_eq!(pong_time(T.to_le_bytes(), T + 5, 0), T);
        // A local clock years off (here at 1970, then five years ahead): the reading that is
        // a date is the server's time, in either byte order.
        let ahead = T + 5 * 366 * 24 * 3600 * 1000;
        for now in [0, ahead] {
            assert_eq!(pong_time(T.to_be_bytes(), now, 0), T);
            assert_eq!(pong_time(T.to_le_bytes(), now, 0), T);
            let t = 1_733_000_000_000i64;
            assert_eq!(pong_time(t.to_le_bytes(), now, 0), t);
        }
        // Neither reading a date: unknown.
        assert_eq!(pong_time([0xff; 8], T, 0), 0);
        assert_eq!(pong_time(i64::MIN.to_be_bytes(), T, 0), 0);
        assert_eq!(pong_time([0x7f, 0, 0, 0, 0, 0, 0, 0x7f], 0, 0), 0);
        // The extremes against the extremes of the local clock: no overflow (a panic in a
        // debug build, a wrong answer in release).
        for now in [0, i64::MIN, i64::MAX] {
            for v in [i64::MIN, i64::MAX, -1] {
                pong_time(v.to_be_bytes(), now, 0);
            }
        }
    }

    /// §2.3: several packets per message, in order; an unknown id hands the rest to the app.
    #[test]
    fn spec2_3_several_packets_and_unknown_id() {
        // Within a year of the local clock, so the plausibility rule keeps it.
        let t = now_ms();
        let mut m = vec![PONG];
        m.extend_from_slice(&t.to_be_bytes());
        m.push(PONG);
        m.extend_from_slice(&(t + 1).to_be_bytes());
        m.extend_from_slice(&[0x7f, 1, 2]);
        let v = parse(&m);
        assert_eq!(v.len(), 3);
        assert!(matches!(v[0], Incoming::Pong { server_time_ms, .. } if server_time_ms == t));
        assert!(matches!(v[1], Incoming::Pong { server_time_ms, .. } if server_time_ms == t + 1));
        assert!(matches!(&v[2], Incoming::Packet(b) if b[..] == [0x7f, 1, 2]));
    }

    /// §4 item 5: at most 8192 packets of one message are parsed; what follows is dropped
    /// (a legitimate message holds a few), so a rogue peer cannot make one message cost
    /// unbounded work or events.
    #[test]
    fn spec4_item5_packets_per_message_cap() {
        let pong = [PONG, 0, 0, 1, 0x91, 0x75, 0xaa, 0x98, 0];
        let mut m = pong.repeat(MAX_PACKETS_PER_MESSAGE);
        let v = parse(&m);
        assert_eq!(v.len(), MAX_PACKETS_PER_MESSAGE);
        assert!(v.iter().all(|i| matches!(i, Incoming::Pong { .. })));
        // One more Pong, then an app packet: both past the cap.
        m.extend_from_slice(&pong);
        m.extend_from_slice(&[0x7f, 1, 2]);
        let v = parse(&m);
        assert_eq!(v.len(), MAX_PACKETS_PER_MESSAGE);
        assert!(v.iter().all(|i| matches!(i, Incoming::Pong { .. })));
        // Under the cap, the packet after the Pongs reaches the app.
        let mut m = pong.repeat(MAX_PACKETS_PER_MESSAGE - 1);
        m.extend_from_slice(&[0x7f, 1, 2]);
        let v = parse(&m);
        assert_eq!(v.len(), MAX_PACKETS_PER_MESSAGE);
        assert!(matches!(v.last(), Some(Incoming::Packet(b)) if b[..] == [0x7f, 1, 2]));
    }

    /// §4 item 4: a truncated Pong is not a Pong; its bytes go to the app.
    #[test]
    fn spec4_truncated_pong() {
        let v = parse(&[PONG, 1, 2, 3]);
        assert!(matches!(&v[..], [Incoming::Packet(b)] if b[..] == [0, 1, 2, 3]));
        assert!(parse(&[]).is_empty());
    }

    /// §2.8: `01 (id value)* ff`; ids 0x00 and 0xff refused.
    #[test]
    fn spec2_8_settings_encoding() {
        assert_eq!(settings_packet([]).unwrap(), [0x01, 0xff]);
        assert_eq!(
            settings_packet([(5u8, &[9u8, 9][..])]).unwrap(),
            [0x01, 5, 9, 9, 0xff]
        );
        for id in [0x00, 0xff] {
            assert_eq!(
                settings_packet([(id, &[][..])]).unwrap_err().status(),
                Status::ErrInvalidArgument
            );
        }
    }

    #[test]
    fn hello_as_binary_or_text() {
        assert!(is_hello(&Message::binary(b"ms".to_vec())));
        assert!(is_hello(&Message::text("ms")));
        assert!(!is_hello(&Message::binary(b"mx".to_vec())));
    }

    /// No input panics or loops forever.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u32 = 7;
        for len in 0..200 {
            let m: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 24) as u8 & 0x03
                })
                .collect();
            let _ = parse(&m);
        }
    }
}
