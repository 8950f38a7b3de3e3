//! rwws server-message parser (rwws-binary.md §2.2, §4 items 3-5): no panic on any input, and
//! the output accounts for the message exactly: 9 bytes per Pong, then at most one Packet
//! holding the rest from the first byte the library does not consume, and nothing after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::internals::{parse_server_message, MAX_PACKETS_PER_MESSAGE};
use tether::internals::Incoming;

fuzz_target!(|msg: &[u8]| {
    let mut pongs = 0usize;
    let mut packet: Option<Vec<u8>> = None;
    parse_server_message(msg, |inc| {
        assert!(packet.is_none(), "output after the raw packet");
        match inc {
            Incoming::Pong { id, .. } => {
                assert_eq!(id, 0);
                pongs += 1;
            }
            Incoming::Packet(p) => packet = Some(p.to_vec()),
            _ => panic!("unexpected output from the rwws parser"),
        }
    });
    assert!(pongs <= MAX_PACKETS_PER_MESSAGE);
    for i in 0..pongs {
        assert_eq!(msg[i * 9], 0x00, "pong {i} does not start with 0x00");
    }
    let rest = &msg[(pongs * 9).min(msg.len())..];
    match packet {
        Some(p) => {
            assert_eq!(&p[..], rest);
            assert!(rest[0] != 0x00 || rest.len() < 9);
        }
        None => assert!(rest.is_empty() || pongs == MAX_PACKETS_PER_MESSAGE),
    }
});
