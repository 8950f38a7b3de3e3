//! Every request ends, on time, whatever the connection is doing (gomuks-rpc.md §3.1, §3.5):
//! a timeout or cancel takes effect while a connection attempt hangs or a backoff runs, and a
//! close racing requests from other threads still answers every accepted id before CLOSED.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tether::{Client, Config, EventKind, Pop, Status};
use tether_testkit::proxy::Proxy;
use tokio::net::TcpListener;

/// Requests one racing thread makes at most before it waits for the close.
const MAX_PER_THREAD: usize = 500;

/// Plenty for a 200 ms timeout on a loaded 2-core machine; a request held by a connection
/// attempt used to take the whole attempt (20-30 s).
const ON_TIME: Duration = Duration::from_millis(1500);

/// A client whose connection attempts take 10 s to give up, against `url`.
fn slow_client(url: &str) -> Client {
    let cfg = Config::builder(url)
        .connect_timeout(Duration::from_secs(10))
        .reconnect_backoff(Duration::from_secs(10), Duration::from_secs(10))
        .build()
        .unwrap();
    start(cfg)
}

/// Waits for the RESPONSE to `id`; returns its status and how long it took from `since`.
async fn response(c: &Client, id: i64, since: Instant) -> (Status, Duration) {
    let (ev, _) = until(c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    (ev.status(), since.elapsed())
}

/// Times out one request and cancels another while the client is stuck in `state`.
async fn timeout_and_cancel_on_time(c: &Client, state: &str) {
    let t0 = Instant::now();
    let timed = c
        .request_with_timeout("get_state", b"{}", Duration::from_millis(200))
        .unwrap();
    let (st, took) = response(c, timed, t0).await;
    assert_eq!(st, Status::ErrRequestTimeout, "{state}");
    assert!(
        took >= Duration::from_millis(190) && took < ON_TIME,
        "{state}: timeout took {took:?}"
    );

    let t0 = Instant::now();
    let cancelled = c.request("get_state", b"{}").unwrap();
    c.cancel(cancelled).unwrap();
    let (st, took) = response(c, cancelled, t0).await;
    assert_eq!(st, Status::ErrCancelled, "{state}");
    assert!(took < ON_TIME, "{state}: cancel took {took:?}");
}

/// A server that takes the TCP connection and never answers the websocket upgrade.
#[tokio::test]
async fn spec3_1_timeout_and_cancel_while_the_upgrade_hangs() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    let c = slow_client(&url);
    until_kind(&c, EventKind::Connecting).await;
    timeout_and_cancel_on_time(&c, "upgrade hangs").await;
    assert!(
        !held.lock().unwrap().is_empty(),
        "the attempt reached the server"
    );
    close_and_drain(&c).await;
}

/// A server whose accept queue is full: the SYN goes unanswered and TCP connect hangs.
#[tokio::test]
async fn spec3_1_timeout_and_cancel_while_tcp_connect_hangs() {
    let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
    let addr = hole.addr();
    let c = slow_client(&format!("http://{addr}"));
    until_kind(&c, EventKind::Connecting).await;
    timeout_and_cancel_on_time(&c, "TCP connect hangs").await;
    close_and_drain(&c).await;
    drop(hole);
}

/// Nothing listens: the client waits out a 10 s backoff between attempts.
#[tokio::test]
async fn spec3_1_timeout_and_cancel_while_waiting_in_backoff() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = slow_client(&format!("http://127.0.0.1:{port}"));
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    // Jitter picks the delay between half and all of the 10 s step.
    assert!(
        d.retry_in().unwrap() >= Duration::from_secs(5),
        "{:?}",
        d.retry_in()
    );
    timeout_and_cancel_on_time(&c, "backoff").await;
    close_and_drain(&c).await;
}

/// A request made while connected times out on time when the server sits on it.
#[tokio::test]
async fn spec3_5_timeout_while_connected_cancels_on_the_server() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let t0 = Instant::now();
    let id = c
        .request_with_timeout("sleep", br#"{"ms":5000}"#, Duration::from_millis(200))
        .unwrap();
    let (st, took) = response(&c, id, t0).await;
    assert_eq!(st, Status::ErrRequestTimeout);
    assert!(took < ON_TIME, "took {took:?}");
    // §3.5: the server is told, so it stops the work nobody waits for.
    assert!(
        b.wait_for(|s| s.cancels == 1, WAIT).await,
        "the backend got {} cancels, expected 1",
        b.stats().cancels
    );
    close_and_drain(&c).await;
}

/// §3.1: a request whose deadline passed while it waited to be written (a busy session) ends
/// with REQUEST_TIMEOUT and never reaches the server; a `send_message` that ran anyway would be
/// sent twice by an app that retries what timed out (§3.1: a cancel does not stop a send).
#[tokio::test]
async fn spec3_1_a_request_already_past_its_deadline_is_never_sent() {
    let b = backend().await;
    b.seed_rooms(1, 0);
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let send = |text: &str, timeout| {
        let data = format!(r#"{{"room_id":"!r0:example.org","text":"{text}"}}"#);
        c.request_with_timeout("send_message", data.as_bytes(), timeout)
            .unwrap()
    };
    let late = send("too late", Duration::from_nanos(1));
    let (st, _) = response(&c, late, Instant::now()).await;
    assert_eq!(st, Status::ErrRequestTimeout);
    // The server answers in order: what it did with the first it did before the second.
    send("on time", Duration::from_secs(10));
    let (_, seen) = until(&c, |e| {
        e.command() == "send_complete" && String::from_utf8_lossy(e.data()).contains("on time")
    })
    .await;
    let texts: Vec<String> = seen
        .iter()
        .map(|e| String::from_utf8_lossy(e.data()).into_owned())
        .filter(|d| d.contains("too late"))
        .collect();
    assert!(texts.is_empty(), "the server got it: {texts:?}");
    close_and_drain(&c).await;
}

/// An echo request of about 900 KB: a slow link takes seconds to carry it.
fn big_request() -> Vec<u8> {
    format!("{{\"x\":\"{}\"}}", "a".repeat(900 << 10)).into_bytes()
}

/// A client connected through a fault-injecting proxy, past `init_complete`, whose replies
/// may be large (echoes of `big_request`).
async fn behind_a_proxy() -> (tether_testkit::gomuks::Backend, Proxy, Client) {
    let b = backend().await;
    let proxy = Proxy::start(b.addr()).await.unwrap();
    let c = client_at(&format!("http://{}", proxy.addr()), &b.token(), |c| {
        c.max_message_bytes(64 << 20)
    });
    until_command(&c, "init_complete").await;
    (b, proxy, c)
}

/// A client behind a proxy that delays every 16 KB by 500 ms (about 32 KB/s), with about
/// 21 MB of requests still to write: a write the link takes minutes for.
async fn behind_a_slow_write() -> (tether_testkit::gomuks::Backend, Proxy, Client) {
    let (b, proxy, c) = behind_a_proxy().await;
    proxy.set_delay(Duration::from_millis(500));
    let big = big_request();
    for _ in 0..24 {
        c.request("echo", &big).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    (b, proxy, c)
}

/// §3.5 on a slow uplink (every 16 KB delayed 500 ms: about 32 KB/s): while megabytes of
/// requests wait for the peer to take them, a later request's timeout and another's cancel
/// still end them on time (neither was written, so no cancel goes out), and a close ends
/// the client within its bounded close handshake. A write used to hold every deadline,
/// cancel and close until the receive timeout gave up on the connection.
#[tokio::test]
async fn spec3_5_a_slow_write_holds_no_deadline_cancel_or_close() {
    let (_b, _proxy, c) = behind_a_slow_write().await;
    let t0 = Instant::now();
    let timed = c
        .request_with_timeout("echo", b"{}", Duration::from_millis(300))
        .unwrap();
    let cancelled = c.request("echo", b"{}").unwrap();
    c.cancel(cancelled).unwrap();
    let (st, took) = response(&c, cancelled, t0).await;
    assert_eq!(st, Status::ErrCancelled);
    assert!(took < ON_TIME, "took {took:?}");
    let (st, took) = response(&c, timed, t0).await;
    assert_eq!(st, Status::ErrRequestTimeout);
    assert!(took < ON_TIME, "took {took:?}");
    let t0 = Instant::now();
    c.close().unwrap();
    until_kind(&c, EventKind::Closed).await;
    let took = t0.elapsed();
    // Close frame (2 s at most) and the server's reply (2 s at most), with room for load.
    assert!(
        took < Duration::from_secs(8),
        "CLOSED {took:?} after close()"
    );
}

/// §7.1, §3.1: a pause flushes what the app sent before it (for up to 2 s) over a slow link;
/// a request's timeout still ends it on time meanwhile, as REQUEST_TIMEOUT.
#[tokio::test]
async fn spec3_1_a_timeout_ends_on_time_while_a_pause_flushes_a_slow_write() {
    let (_b, _proxy, c) = behind_a_slow_write().await;
    let t0 = Instant::now();
    let timed = c
        .request_with_timeout("echo", b"{}", Duration::from_millis(300))
        .unwrap();
    c.pause().unwrap();
    let (st, took) = response(&c, timed, t0).await;
    assert_eq!(st, Status::ErrRequestTimeout);
    assert!(took < ON_TIME, "took {took:?}");
    close_and_drain(&c).await;
}

/// §3.1 with §7.1: a request whose timeout passes while a pause flushes the backlog ahead of
/// it is taken out of what is left to write: the server never runs what the app was told
/// timed out (here a message that would have been sent).
#[tokio::test]
async fn spec3_1_a_request_timed_out_during_a_pause_flush_is_never_written() {
    let b = backend().await;
    b.seed_rooms(1, 0);
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let room = "!r0:example.org";
    let before = b.rooms().timeline(room).unwrap().len();
    // The server stops reading: the backlog fills the socket's buffers, the rest waits in the
    // client. Its replies are small, so the server never waits to write once it reads again.
    b.set_read_rate(Some(0));
    let padded = format!(r#"{{"ms":0,"x":"{}"}}"#, "a".repeat(900 << 10));
    for _ in 0..24 {
        c.request("sleep", padded.as_bytes()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let data = format!(r#"{{"room_id":"{room}","text":"too late"}}"#);
    let late = c
        .request_with_timeout("send_message", data.as_bytes(), Duration::from_millis(300))
        .unwrap();
    c.pause().unwrap();
    let (st, _) = response(&c, late, t0).await;
    assert_eq!(st, Status::ErrRequestTimeout);
    // The server reads again, and the flush finishes within its 2 s.
    b.set_read_rate(None);
    until_kind(&c, EventKind::Disconnected).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.rooms().timeline(room).unwrap().len(),
        before,
        "the server sent the message the app was told timed out"
    );
    close_and_drain(&c).await;
}

/// Requests a connection ends before writing are not lost with it: written on the next
/// connection, they are answered there, rather than failed as if the server had them
/// (ERR_DISCONNECTED, "outcome unknown"). Here the backlog made while paused goes out over a
/// slow link that is cut after a few hundred KB.
#[tokio::test]
async fn requests_a_cut_left_unwritten_go_out_on_the_next_connection() {
    let (_b, proxy, c) = behind_a_proxy().await;
    c.pause().unwrap();
    until_kind(&c, EventKind::Disconnected).await;
    let big = big_request();
    let bigs: Vec<i64> = (0..8).map(|_| c.request("echo", &big).unwrap()).collect();
    let tail = c
        .request_with_timeout("echo", br#"{"tail":1}"#, Duration::from_secs(60))
        .unwrap();
    proxy.set_delay(Duration::from_millis(500));
    c.unpause().unwrap();
    until_kind(&c, EventKind::Connected).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.set_delay(Duration::ZERO);
    proxy.cut_all();
    let t0 = Instant::now();
    let (ev, seen) = until(&c, |e| {
        e.kind() == EventKind::Response && e.request_id() == tail
    })
    .await;
    assert_eq!(
        ev.status(),
        Status::Ok,
        "{}",
        String::from_utf8_lossy(ev.data())
    );
    assert_eq!(ev.data(), br#"{"tail":1}"#);
    let lost = seen
        .iter()
        .filter(|e| e.kind() == EventKind::Response && e.status() == Status::ErrDisconnected)
        .count();
    assert!(
        lost < bigs.len(),
        "{lost} of the 8 big requests failed: all were written?"
    );
    assert!(t0.elapsed() < WAIT);
    close_and_drain(&c).await;
}

/// A timeout past what the clock can add (`Duration::MAX`, Rust's "never") is refused with a
/// clear error instead of panicking in the caller, and the client goes on: the longest one
/// taken (u32::MAX ms) is answered like any other.
#[tokio::test]
async fn a_timeout_too_long_for_the_clock_is_refused() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    for t in [
        Duration::MAX,
        Duration::from_millis(u64::from(u32::MAX) + 1),
    ] {
        let e = c.request_with_timeout("echo", b"{}", t).unwrap_err();
        assert_eq!(e.status(), Status::ErrInvalidArgument, "{e}");
        assert!(e.message().contains("at most"), "{e}");
    }
    let t0 = Instant::now();
    let id = c
        .request_with_timeout("echo", b"{}", Duration::from_millis(u64::from(u32::MAX)))
        .unwrap();
    assert_eq!(response(&c, id, t0).await.0, Status::Ok);
    close_and_drain(&c).await;
}

/// `n` threads request until refused, pausing `pause` between requests (none: as fast as
/// they can); each returns the ids that were accepted. A thread that reached `MAX_PER_THREAD`
/// waits for the refusal without adding more: the point is the race with close, not load.
fn spawn_requesters(
    c: &Arc<Client>,
    n: usize,
    pause: Option<Duration>,
    closing: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<i64>>> {
    (0..n)
        .map(|_| {
            let c = c.clone();
            let closing = closing.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                while let Ok(id) = c.request("sleep", br#"{"ms":50}"#) {
                    ids.push(id);
                    if let Some(p) = pause {
                        std::thread::sleep(p);
                    }
                    // Also released when the session stopped by itself (nobody sets `closing`
                    // then): the next request is refused and the thread ends.
                    while ids.len() >= MAX_PER_THREAD
                        && !closing.load(Ordering::Acquire)
                        && c.state() != tether::ConnectionState::Closed
                    {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                ids
            })
        })
        .collect()
}

/// Polls to CLOSED; returns the ids of every RESPONSE, asserting none repeats.
fn responses_until_closed(c: &Client, round: usize) -> HashSet<i64> {
    let mut answered = HashSet::new();
    loop {
        match c.poll(Some(WAIT)) {
            Pop::Event(ev) if ev.kind() == EventKind::Response => {
                assert!(
                    answered.insert(ev.request_id()),
                    "round {round}: duplicate RESPONSE"
                );
            }
            Pop::Event(ev) if ev.kind() == EventKind::Closed => return answered,
            Pop::Event(_) => {}
            other => panic!("round {round}: {other:?} before CLOSED"),
        }
    }
}

/// A session that stops by itself (the backend refuses the token: no retry) while threads
/// request: every accepted id still gets its RESPONSE before CLOSED.
#[test]
fn spec1_2_fatal_stop_racing_requests_answers_every_accepted_id_before_closed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = rt.block_on(backend());
    for round in 0..50 {
        let c = Arc::new(client_at(&b.http_url(), "not-the-token", |c| c));
        // Paced: the stop comes within milliseconds, and unpaced threads would queue
        // millions of requests meanwhile.
        let threads = spawn_requesters(
            &c,
            3,
            Some(Duration::from_micros(100)),
            &Arc::new(AtomicBool::new(false)),
        );
        let answered = responses_until_closed(&c, round);
        let accepted: HashSet<i64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(accepted, answered, "round {round}");
    }
}

/// Many threads request while another closes: every id accepted gets exactly one RESPONSE
/// before CLOSED, and a request refused after the close never produces one.
#[test]
fn close_racing_requests_answers_every_accepted_id_before_closed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = rt.block_on(backend());
    let rounds = std::env::var("TETHER_CLOSE_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for round in 0..rounds {
        let c = Arc::new(client(&b, |c| c));
        if round % 2 == 0 {
            // Half the rounds close while connecting, half once connected.
            let mut connected = false;
            let deadline = Instant::now() + WAIT;
            while let Pop::Event(ev) =
                c.poll(Some(deadline.saturating_duration_since(Instant::now())))
            {
                if ev.kind() == EventKind::Connected {
                    connected = true;
                    break;
                }
            }
            // Otherwise this round would race the close with a connection attempt again.
            assert!(connected, "round {round}: never connected");
        }
        let closing = Arc::new(AtomicBool::new(false));
        let threads = spawn_requesters(&c, 3, None, &closing);
        std::thread::sleep(Duration::from_micros(rand::random_range(0..1000)));
        closing.store(true, Ordering::Release);
        c.close().unwrap();
        let closed_at = Instant::now();
        let answered = responses_until_closed(&c, round);
        assert!(closed_at.elapsed() < WAIT);
        let accepted: Vec<i64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let accepted_set: HashSet<i64> = accepted.iter().copied().collect();
        assert_eq!(
            accepted_set.len(),
            accepted.len(),
            "round {round}: an id twice"
        );
        let lost: Vec<_> = accepted_set.difference(&answered).collect();
        let extra: Vec<_> = answered.difference(&accepted_set).collect();
        assert!(
            lost.is_empty() && extra.is_empty(),
            "round {round}: accepted {} answered {} lost {lost:?} extra {extra:?}",
            accepted.len(),
            answered.len()
        );
    }
}

/// §3.5: dropping a `Client::call` future before its reply (a timeout around it, a losing
/// `select!` branch) cancels the request: the server is told and stops working on it, and
/// the client no longer counts it in flight; the connection goes on.
#[tokio::test]
async fn spec3_5_a_dropped_call_cancels_its_request() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let call = c.call("sleep", br#"{"ms":30000}"#);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err(),
        "the server sits on it"
    );
    let t0 = Instant::now();
    while b.stats().cancels == 0 {
        assert!(t0.elapsed() < ON_TIME, "no cancel reached the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.stats().requests_in_flight, 0);
    assert_eq!(c.call("echo", b"1").await.unwrap(), &b"1"[..]);
    assert_eq!(b.stats().cancels, 1);
    close_and_drain(&c).await;
}
