//! tether-bench: the blaster (a server that writes a pre-encoded gomuks stream, so the client,
//! not the server, is what gets measured — performance-anchors.md §1.2/§7), the floor client
//! (bare tokio-tungstenite + zlib-rs with newline split and envelope parse, no library), the
//! Rust-API client and the compression statistics.
//!
//! Every client prints one JSON line: `{"client":…,"events":…,"secs":…,"eps":…}`, timed from
//! the first server message to the end marker.

mod stream;

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use flate2::{Decompress, FlushDecompress, Status};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use stream::{Shape, END_COMMAND};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::Message;

/// The cookie every client sends; the blaster accepts anything.
const TOKEN: &str = "bench-token";

fn usage() -> ! {
    eprintln!(
        "usage:\n  tether-bench blaster PORT SHAPE EVENTS COMPRESS(0|1) PER_MESSAGE\n  \
         tether-bench floor URL COMPRESS\n  tether-bench rust URL COMPRESS\n  \
         tether-bench stats SHAPE EVENTS PER_MESSAGE"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    match arg(1) {
        "blaster" => {
            let shape = Shape::parse(arg(3)).unwrap_or_else(|e| panic!("{e}"));
            blaster(
                arg(2).parse().unwrap_or_else(|_| usage()),
                shape,
                arg(4).parse().unwrap_or_else(|_| usage()),
                arg(5) == "1",
                arg(6).parse().unwrap_or_else(|_| usage()),
            )
        }
        "floor" => floor(arg(2), arg(3) == "1"),
        "rust" => rust_api(arg(2), arg(3) == "1"),
        "stats" => stats(
            Shape::parse(arg(2)).unwrap_or_else(|e| panic!("{e}")),
            arg(3).parse().unwrap_or_else(|_| usage()),
            arg(4).parse().unwrap_or_else(|_| usage()),
        ),
        _ => usage(),
    }
}

fn report(client: &str, events: u64, secs: f64) {
    println!(
        "{{\"client\":\"{client}\",\"events\":{events},\"secs\":{secs:.6},\"eps\":{:.1}}}",
        events as f64 / secs
    );
}

/// Bandwidth of one stream plain and compressed (gomuks-rpc.md §5), as JSON.
fn stats(shape: Shape, events: u64, per_message: usize) {
    let lines = stream::lines(shape, events);
    let plain = stream::encode(&lines, false, 1);
    let single = stream::encode(&lines, true, 1);
    let batched = stream::encode(&lines, true, per_message);
    println!(
        "{{\"events\":{},\"json_bytes\":{},\"plain_wire\":{},\"z_wire_1\":{},\"z_wire_batched\":{},\"per_message\":{}}}",
        plain.events,
        plain.json_bytes,
        plain.wire.len(),
        single.wire.len(),
        batched.wire.len(),
        per_message
    );
}

// ---------------------------------------------------------------- blaster

fn blaster(port: u16, shape: Shape, events: u64, compress: bool, per_message: usize) {
    let enc = stream::encode(&stream::lines(shape, events), compress, per_message);
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let port = listener.local_addr().unwrap().port();
    println!(
        "{{\"port\":{port},\"events\":{},\"json_bytes\":{},\"wire_bytes\":{}}}",
        enc.events,
        enc.json_bytes,
        enc.wire.len()
    );
    std::io::stdout().flush().unwrap();
    let wire: &'static [u8] = Box::leak(enc.wire.into_boxed_slice());
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = serve(conn, wire);
        });
    }
}

/// Answers `/auth` with a token, upgrades the websocket, writes the stream, then answers the
/// client's close so its shutdown is not delayed by a close timeout.
fn serve(mut conn: TcpStream, wire: &[u8]) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || req.len() > 65536 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&req).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("");
    if path.starts_with("/_gomuks/auth") {
        let body = format!("{{\"token\":\"{TOKEN}\"}}\n");
        write!(
            conn,
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    write!(
        conn,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )?;
    for chunk in wire.chunks(256 * 1024) {
        conn.write_all(chunk)?;
    }
    // Client frames are masked; only a close frame matters here.
    let mut inbox = Vec::new();
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        inbox.extend_from_slice(&buf[..n]);
        while let Some((opcode, len)) = client_frame(&inbox) {
            if opcode == 0x8 {
                conn.write_all(&[0x88, 0x02, 0x03, 0xE9])?;
                return Ok(());
            }
            inbox.drain(..len);
        }
    }
}

/// The opcode and total length of the first complete client frame in `b`.
fn client_frame(b: &[u8]) -> Option<(u8, usize)> {
    if b.len() < 2 {
        return None;
    }
    let (len, mut at) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b[1] & 0x80 != 0 {
        at += 4;
    }
    (b.len() >= at + len).then_some((b[0] & 0x0F, at + len))
}

// ---------------------------------------------------------------- floor

/// What every client is required to extract from a message (gomuks-rpc.md §3.2).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    command: Cow<'a, str>,
    request_id: i64,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Inflates one sync-flushed message with the connection's inflater (gomuks-rpc.md §5).
fn inflate(z: &mut Decompress, input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut pos = 0;
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let (bi, bo) = (z.total_in(), z.total_out());
        let st = z
            .decompress_vec(&input[pos..], out, FlushDecompress::Sync)
            .expect("inflate");
        pos += (z.total_in() - bi) as usize;
        let made = z.total_out() - bo;
        if st == Status::StreamEnd || (pos >= input.len() && made == 0) {
            return;
        }
        if pos >= input.len() && out.len() < out.capacity() {
            return;
        }
    }
}

fn floor(url: &str, compress: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = url.trim_start_matches("ws://").split('/').next().unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).unwrap();
        let full = format!(
            "{url}/_gomuks/websocket{}",
            if compress { "?compress=1" } else { "" }
        );
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                full.as_str(),
            )
            .unwrap();
        req.headers_mut()
            .insert("Cookie", format!("gomuks_auth={TOKEN}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
            .await
            .expect("handshake");
        let mut z = Decompress::new(false);
        let mut out = Vec::new();
        let mut start = None;
        let mut events = 0u64;
        let mut sum = 0i64;
        let mut done = false;
        while let Some(msg) = ws.next().await {
            let msg = msg.expect("read");
            start.get_or_insert_with(Instant::now);
            let text: &[u8] = match &msg {
                Message::Binary(b) => {
                    inflate(&mut z, b, &mut out);
                    &out
                }
                Message::Text(t) => t.as_bytes(),
                _ => continue,
            };
            for line in text.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                let env: Envelope = serde_json::from_slice(line).expect("envelope");
                sum = sum.wrapping_add(env.request_id ^ env.data.get().len() as i64);
                if env.command == END_COMMAND {
                    done = true;
                    break;
                }
                events += 1;
            }
            if done {
                break;
            }
        }
        let secs = start.expect("no message").elapsed().as_secs_f64();
        assert!(done, "stream ended early");
        std::hint::black_box(sum);
        // The run_id snapshot is not an event of the stream.
        report("floor", events - 1, secs);
        let _ = ws.close(None).await;
    });
}

// ---------------------------------------------------------------- Rust API

fn rust_api(url: &str, compress: bool) {
    let cfg = tether::Config::builder(url)
        .token(TOKEN)
        .compression(compress)
        .allow_insecure_credentials(true)
        .ping_interval(Duration::from_secs(300))
        .receive_timeout(Duration::from_secs(600))
        .build()
        .expect("config");
    let client = tether::Client::new(cfg);
    client.connect().expect("connect");
    let mut start = None;
    let mut events = 0u64;
    let mut sum = 0i64;
    let mut batch = Vec::with_capacity(1024);
    'outer: loop {
        match client.poll(None) {
            tether::queue::Pop::Event(ev) => batch.push(ev),
            _ => panic!("closed before the end marker"),
        }
        client.drain(&mut batch, 1023);
        for ev in batch.drain(..) {
            match ev.kind() {
                tether::EventKind::Message => {
                    start.get_or_insert_with(Instant::now);
                    sum = sum.wrapping_add(ev.request_id() ^ ev.data().len() as i64);
                    if ev.command() == END_COMMAND {
                        break 'outer;
                    }
                    events += 1;
                }
                tether::EventKind::Disconnected => panic!("disconnected: {ev:?}"),
                _ => {}
            }
        }
    }
    let secs = start.unwrap().elapsed().as_secs_f64();
    std::hint::black_box(sum);
    report("rust", events - 1, secs);
    let _ = client.close();
    while let tether::queue::Pop::Event(_) = client.poll(Some(Duration::from_secs(5))) {}
}
