//! Newline splitter (gomuks-rpc.md §3.2: every server message is one JSON object ending in
//! `\n`, and a line may span websocket messages). Feeding the same bytes in fuzzer-chosen
//! chunks must yield the same lines as splitting the concatenation, with the unterminated tail
//! left pending, and the size cap must trip exactly when the pending tail exceeds it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether::internals::LineSplitter;
use tether::Status;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cap = usize::from(data[0]) * 4 + 1;
    let n_chunks = usize::from(data[1] % 16) + 1;
    let body = &data[2..];

    let mut splitter = LineSplitter::new(cap);
    let mut got: Vec<Bytes> = Vec::new();
    let mut overflow = false;
    let step = body.len() / n_chunks + 1;
    let mut fed = 0;
    for chunk in body.chunks(step) {
        fed += chunk.len();
        let r = splitter.feed(Bytes::copy_from_slice(chunk), |l| {
            got.push(l);
            Ok(())
        });
        if let Err(e) = r {
            assert_eq!(e.status(), Status::ErrMessageTooLarge);
            overflow = true;
            break;
        }
    }

    let seen = &body[..fed];
    let mut want: Vec<&[u8]> = seen.split(|&b| b == b'\n').collect();
    let tail = want.pop().unwrap_or(&[]);
    want.retain(|l| !l.is_empty());
    if overflow {
        // The cap tripped: the tail that overflowed is longer than cap, and every line
        // before it came out intact.
        assert!(
            tail.len() > cap,
            "overflow with a {}-byte tail, cap {cap}",
            tail.len()
        );
        assert_eq!(got.len(), want.len());
    } else {
        assert!(tail.len() <= cap);
        assert_eq!(splitter.pending(), tail.len());
    }
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(&g[..], *w);
    }
    assert_eq!(got.len(), want.len());
});
