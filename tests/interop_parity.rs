//! The testkit backend held to what the real gomuks backend (go.mau.fi/gomuks v0.2607.0, run by
//! interop/run.sh) was seen to do; each test names its finding in interop/FINDINGS.md and the
//! spec section (docs/protocol/gomuks-rpc.md). Raw sockets, because these are the
//! server's answers to things the library never sends.

use std::time::Duration;

use tether_testkit::gomuks::{Backend, BackendConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn backend(f: impl FnOnce(&mut BackendConfig)) -> Backend {
    let mut cfg = BackendConfig::default();
    f(&mut cfg);
    Backend::start(cfg).await.expect("backend starts")
}

fn basic(user: &str, password: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}");
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Authorization: Basic {out}\r\n")
}

/// One HTTP/1.1 request; returns (status, whole response text).
async fn http(b: &Backend, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(b.addr()).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n",
        b.addr()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut resp = Vec::new();
    timeout(WAIT, s.read_to_end(&mut resp))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A websocket opened by hand with the backend's token.
struct RawWs(TcpStream);

impl RawWs {
    async fn open(b: &Backend) -> RawWs {
        let mut s = TcpStream::connect(b.addr()).await.expect("connect");
        let req = format!(
            "GET /_gomuks/websocket HTTP/1.1\r\nHost: {}\r\nCookie: gomuks_auth={}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            b.addr(),
            b.token()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            timeout(WAIT, s.read_exact(&mut byte))
                .await
                .expect("upgrade in time")
                .expect("read");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawWs(s)
    }

    async fn send_text(&mut self, text: &str) {
        let p = text.as_bytes();
        assert!(p.len() < 126);
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x81, 0x80 | p.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&f).await.expect("write");
    }

    /// The next frame: (opcode, payload).
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        timeout(WAIT, self.0.read_exact(&mut h))
            .await
            .expect("frame in time")
            .expect("read");
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut e = [0u8; 2];
            self.0.read_exact(&mut e).await.expect("read");
            len = u64::from(u16::from_be_bytes(e));
        } else if len == 127 {
            let mut e = [0u8; 8];
            self.0.read_exact(&mut e).await.expect("read");
            len = u64::from_be_bytes(e);
        }
        let mut p = vec![0u8; len as usize];
        self.0.read_exact(&mut p).await.expect("read");
        (h[0] & 0x0f, p)
    }

    /// Text messages until one contains `needle`.
    async fn until(&mut self, needle: &str) -> String {
        loop {
            let (op, p) = self.frame().await;
            assert_ne!(op, 8, "closed: {:?}", String::from_utf8_lossy(&p));
            let t = String::from_utf8_lossy(&p).into_owned();
            if t.contains(needle) {
                return t;
            }
        }
    }

    /// The close frame's (code, reason).
    async fn close_frame(&mut self) -> (u16, String) {
        loop {
            let (op, p) = self.frame().await;
            if op == 8 {
                return (
                    u16::from_be_bytes([p[0], p[1]]),
                    String::from_utf8_lossy(&p[2..]).into_owned(),
                );
            }
        }
    }
}

/// FINDINGS F2, spec §1.2: an invalid cookie on POST /auth falls back to Basic credentials
/// (201); without any, 401 says "Missing", with wrong ones "Incorrect".
#[tokio::test]
async fn auth_bad_cookie_falls_back_to_basic_f2() {
    let b = backend(|_| {}).await;
    let path = "/_gomuks/auth?output=json&no_prompt=true&insecure_cookie=true";
    let good = basic("tether", "tether-password");
    let both = format!("Cookie: gomuks_auth=bogus.token\r\n{good}");
    let (code, resp) = http(&b, "POST", path, &both).await;
    assert_eq!(code, 201, "{resp}");
    assert!(body(&resp).starts_with("{\"token\":\""), "{resp}");
    let (code, resp) = http(&b, "POST", path, "").await;
    assert_eq!((code, body(&resp)), (401, "Missing basic auth credentials"));
    let (code, resp) = http(&b, "POST", path, &basic("tether", "nope")).await;
    assert_eq!(
        (code, body(&resp)),
        (401, "Incorrect basic auth credentials")
    );
}

/// FINDINGS F3, spec §1.3: the 403 for a foreign Origin names both hosts, as coder/websocket
/// words it.
#[tokio::test]
async fn origin_403_text_f3() {
    let b = backend(|_| {}).await;
    let hdr = format!(
        "Cookie: gomuks_auth={}\r\nOrigin: http://evil.example\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        b.token()
    );
    let (code, resp) = http(&b, "GET", "/_gomuks/websocket", &hdr).await;
    assert_eq!(code, 403);
    let want = format!(
        "request Origin \"evil.example\" is not authorized for Host \"{}\"",
        b.addr()
    );
    assert_eq!(body(&resp), want);
}

/// FINDINGS F5, spec §6.2 / §4.2: a backend without an account says sync_status "waiting" and
/// state_checked false; the logged-in default stays "ok".
#[tokio::test]
async fn not_logged_in_snapshot_f5() {
    let b = backend(|c| c.logged_in = false).await;
    let mut ws = RawWs::open(&b).await;
    let state = ws.until("\"client_state\"").await;
    assert!(state.contains("\"state_checked\":false"), "{state}");
    assert!(state.contains("\"is_logged_in\":false"), "{state}");
    let sync = ws.until("\"sync_status\"").await;
    assert!(sync.contains("\"type\":\"waiting\""), "{sync}");

    let b = backend(|_| {}).await;
    let mut ws = RawWs::open(&b).await;
    let sync = ws.until("\"sync_status\"").await;
    assert!(sync.contains("\"type\":\"ok\""), "{sync}");
}

/// FINDINGS F7, spec §3.1: the first JSON value counts and trailing bytes are ignored (Go's
/// json.Decoder), a missing request_id is 0, and a request_id of the wrong type is
/// undecodable: 1003 "Invalid JSON".
#[tokio::test]
async fn envelope_decoding_like_go_f7() {
    let b = backend(|_| {}).await;
    let mut ws = RawWs::open(&b).await;
    ws.send_text(r#"{"command":"ping","request_id":7,"data":{}} trailing"#)
        .await;
    let pong = ws.until("\"pong\"").await;
    assert!(pong.contains("\"request_id\":7"), "{pong}");
    ws.send_text(r#"{"command":"echo","data":{"x":1}}"#).await;
    let echo = ws.until("\"x\":1").await;
    assert!(echo.contains("\"request_id\":0"), "{echo}");
    ws.send_text(r#"{"command":"echo","request_id":"5"}"#).await;
    assert_eq!(ws.close_frame().await, (1003, "Invalid JSON".to_owned()));
}
