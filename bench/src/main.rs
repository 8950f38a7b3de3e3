//! tether-bench: the blaster (a server that writes a pre-encoded gomuks stream, so the client,
//! not the server, is what gets measured — the blaster pre-encodes its stream), the floor client
//! (bare tokio-tungstenite + zlib-rs with newline split and envelope parse, no library), the
//! Rust-API client, the compression statistics and the resume-latency client (resume.rs).
//!
//! Every client prints one JSON line: `{"client":…,"events":…,"secs":…,"eps":…}`, timed from
//! the first server message to the end marker.

mod resume;
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
         tether-bench echo PORT\n  tether-bench rtt-floor WS_URL COUNT\n  \
         tether-bench conns URL COUNT COMPRESS IDLE_SECS\n  \
         tether-bench stats SHAPE EVENTS PER_MESSAGE\n  \
         tether-bench resume URL CUTS EVENTS_PER_CUT BACKOFF_MIN_MS|default"
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
        "conns" => conns(
            arg(2),
            arg(3).parse().unwrap_or_else(|_| usage()),
            arg(4) == "1",
            arg(5).parse().unwrap_or_else(|_| usage()),
        ),
        "echo" => echo_server(arg(2).parse().unwrap_or_else(|_| usage())),
        "rtt-floor" => rtt_floor(arg(2), arg(3).parse().unwrap_or_else(|_| usage())),
        "stats" => stats(
            Shape::parse(arg(2)).unwrap_or_else(|e| panic!("{e}")),
            arg(3).parse().unwrap_or_else(|_| usage()),
            arg(4).parse().unwrap_or_else(|_| usage()),
        ),
        "resume" => resume::run(
            arg(2),
            arg(3).parse().unwrap_or_else(|_| usage()),
            arg(4).parse().unwrap_or_else(|_| usage()),
            match arg(5) {
                "default" => None,
                ms => Some(ms.parse().unwrap_or_else(|_| usage())),
            },
        ),
        _ => usage(),
    }
}

/// One throughput client's JSON line; `csw` is the process's context switches over the timed
/// part (every thread: the wake-ups a hand-off between threads costs).
fn report(client: &str, events: u64, secs: f64, csw: u64) {
    println!(
        "{{\"client\":\"{client}\",\"events\":{events},\"secs\":{secs:.6},\"eps\":{:.1},\"csw\":{csw}}}",
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

/// Prints round-trip percentiles of `samples` (microseconds) as one JSON line.
fn report_rtt(client: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "{{\"client\":\"{client}\",\"n\":{},\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
        samples.len(),
        pct(0.5),
        pct(0.99)
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
    accept(listener, Some(Box::leak(enc.wire.into_boxed_slice())));
}

/// The gomuks echo server for round trips: every request is answered with its own data.
fn echo_server(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    println!("{{\"port\":{}}}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    accept(listener, None);
}

/// One thread per connection, so one client's pace never holds up another.
fn accept(listener: TcpListener, wire: Option<&'static [u8]>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = serve(conn, wire);
        });
    }
}

/// Answers `/auth` with a token, upgrades the websocket, then either writes the stream
/// (`wire`) or, with `None`, answers every request with a `response` carrying its data
/// (gomuks-rpc.md §3.2). A client close is answered, so no client waits out a close timeout.
fn serve(mut conn: TcpStream, wire: Option<&[u8]>) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut req = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(at) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = conn.read(&mut buf)?;
        if n == 0 || req.len() > 65536 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&req[..head_end]).into_owned();
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
    if let Some(wire) = wire {
        for chunk in wire.chunks(256 * 1024) {
            conn.write_all(chunk)?;
        }
    }
    let mut inbox = req[head_end..].to_vec();
    let mut reply = Vec::new();
    loop {
        while let Some((opcode, payload_at, len)) = client_frame(&inbox) {
            if opcode == 0x8 {
                conn.write_all(&[0x88, 0x02, 0x03, 0xE9])?;
                return Ok(());
            }
            if wire.is_none() && opcode == 0x1 {
                let mask: [u8; 4] = inbox[payload_at - 4..payload_at].try_into().unwrap();
                let payload: Vec<u8> = inbox[payload_at..len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[i % 4])
                    .collect();
                let env: Envelope = serde_json::from_slice(&payload).expect("request envelope");
                // Keepalives get what gomuks sends (§8), so idle clients see real pongs.
                let body = if env.command == "ping" {
                    format!(
                        "{{\"command\":\"pong\",\"request_id\":{},\"data\":null}}\n",
                        env.request_id
                    )
                } else {
                    format!(
                        "{{\"command\":\"response\",\"request_id\":{},\"data\":{}}}\n",
                        env.request_id,
                        env.data.get()
                    )
                };
                reply.clear();
                stream::push_frame(&mut reply, 0x1, body.as_bytes());
                conn.write_all(&reply)?;
            }
            inbox.drain(..len);
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        inbox.extend_from_slice(&buf[..n]);
    }
}

/// The opcode, payload offset and total length of the first complete client frame in `b`.
fn client_frame(b: &[u8]) -> Option<(u8, usize, usize)> {
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
    (b.len() >= at + len).then_some((b[0] & 0x0F, at, at + len))
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

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A bare tokio-tungstenite connection to the gomuks endpoint, Nagle off.
async fn bare_connect(url: &str, compress: bool) -> Ws {
    let addr = url.trim_start_matches("ws://").split('/').next().unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    let full = format!(
        "{url}/_gomuks/websocket{}",
        if compress { "?compress=1" } else { "" }
    );
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        full.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("Cookie", format!("gomuks_auth={TOKEN}").parse().unwrap());
    tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("handshake")
        .0
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The floor for round trips: a bare tokio-tungstenite client sending gomuks requests to the
/// echo server and parsing each reply's envelope.
fn rtt_floor(url: &str, count: usize) {
    current_thread().block_on(async {
        let mut ws = bare_connect(url, false).await;
        let mut samples = Vec::with_capacity(count);
        for id in 1..=count as i64 {
            let t = Instant::now();
            let req =
                format!("{{\"command\":\"echo\",\"request_id\":{id},\"data\":{{\"n\":{id}}}}}");
            futures_util::SinkExt::send(&mut ws, Message::text(req))
                .await
                .expect("send");
            loop {
                let Message::Text(t) = ws.next().await.expect("eof").expect("read") else {
                    continue;
                };
                let env: Envelope = serde_json::from_str(t.as_str().trim_end()).expect("reply");
                if env.request_id == id {
                    break;
                }
            }
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        report_rtt("floor", &mut samples);
        let _ = ws.close(None).await;
    });
}

fn floor(url: &str, compress: bool) {
    current_thread().block_on(async {
        let mut ws = bare_connect(url, compress).await;
        let mut z = Decompress::new(false);
        let mut out = Vec::new();
        let mut start = None;
        let mut events = 0u64;
        let mut sum = 0i64;
        let mut done = false;
        let mut csw0 = 0;
        while let Some(msg) = ws.next().await {
            let msg = msg.expect("read");
            if start.is_none() {
                csw0 = switches();
                start = Some(Instant::now());
            }
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
        report("floor", events - 1, secs, switches() - csw0);
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
    let mut csw0 = 0;
    'outer: loop {
        match client.poll(None) {
            tether::Pop::Event(ev) => batch.push(ev),
            _ => panic!("closed before the end marker"),
        }
        client.drain(&mut batch, 1023);
        for ev in batch.drain(..) {
            match ev.kind() {
                tether::EventKind::Message => {
                    if start.is_none() {
                        csw0 = switches();
                        start = Some(Instant::now());
                    }
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
    report("rust", events - 1, secs, switches() - csw0);
    let _ = client.close();
    while let tether::Pop::Event(_) = client.poll(Some(Duration::from_secs(5))) {}
}

// ---------------------------------------------------------------- connections

/// A field of /proc/self/status in kB (or a count), summed over `paths`.
fn proc_status(paths: &[std::path::PathBuf], field: &str) -> u64 {
    paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

/// Context switches of every thread of this process: each is a wake-up (or preemption).
fn switches() -> u64 {
    let tasks: Vec<_> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("status")))
        .collect();
    proc_status(&tasks, "voluntary_ctxt_switches:")
        + proc_status(&tasks, "nonvoluntary_ctxt_switches:")
}

/// User plus system CPU time of this process in milliseconds (/proc/self/stat fields 14, 15).
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // /proc reports clock ticks in USER_HZ, which Linux fixes at 100 on every platform.
    ticks as f64 * 10.0
}

fn rss_kib() -> u64 {
    proc_status(&["/proc/self/status".into()], "VmRSS:")
}

/// Memory per connection (RSS growth per added connected client) and the idle cost (CPU time
/// and wake-ups over `idle_secs` with every client connected and nobody sending).
fn conns(url: &str, count: usize, compress: bool, idle_secs: u64) {
    let ping = Duration::from_secs(15);
    let make = || {
        let cfg = tether::Config::builder(url)
            .token(TOKEN)
            .compression(compress)
            .allow_insecure_credentials(true)
            .ping_interval(ping)
            .build()
            .expect("config");
        let c = tether::Client::new(cfg);
        c.connect().expect("connect");
        c
    };
    let wait_connected = |c: &tether::Client| loop {
        match c.poll(Some(Duration::from_secs(30))) {
            tether::Pop::Event(ev) if ev.kind() == tether::EventKind::Connected => break,
            tether::Pop::Event(ev) if ev.kind() == tether::EventKind::Disconnected => {
                panic!("disconnected: {ev:?}")
            }
            tether::Pop::Event(_) => {}
            _ => panic!("no connection"),
        }
    };
    // The first client brings up the shared runtime; it is not what a further client costs.
    let first = make();
    wait_connected(&first);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib();
    let clients: Vec<_> = (0..count).map(|_| make()).collect();
    for c in &clients {
        wait_connected(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib();
    let (cpu0, sw0, t0) = (cpu_ms(), switches(), Instant::now());
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (cpu1, sw1, secs) = (cpu_ms(), switches(), t0.elapsed().as_secs_f64());
    let pings = (count + 1) as f64 * secs / ping.as_secs_f64();
    println!(
        "{{\"clients\":{count},\"compress\":{},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"kib_per_conn\":{:.1},\"idle_secs\":{secs:.1},\"idle_cpu_ms\":{:.0},\"idle_switches\":{},\"pings_expected\":{pings:.0}}}",
        u8::from(compress),
        (after.saturating_sub(before)) as f64 / count as f64,
        cpu1 - cpu0,
        sw1 - sw0
    );
    for c in clients.iter().chain(std::iter::once(&first)) {
        let _ = c.close();
    }
    for c in clients.iter().chain(std::iter::once(&first)) {
        while let tether::Pop::Event(_) = c.poll(Some(Duration::from_secs(5))) {}
    }
}
