//! The in-process transport (gomuks-rpc.md §12) against `tests/inproc/fake_gomuksffi.c`, a
//! test double of `libgomuksffi` built here with the system C compiler: what the real backend
//! cannot be made to do on demand (slow calls, start failures, event floods, media progress
//! and streamed downloads). The interop suite runs the same transport against the real
//! library.
//!
//! One in-process backend runs per process, so the tests here take turns.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use tether::{Client, Config, ConfigBuilder, EventKind, Protocol, Status};

/// One backend per process: the tests take turns.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The double, built once per test run.
fn fake_library() -> PathBuf {
    fake_gomuksffi_dir().join("libfakegomuksffi.so")
}

/// A fresh data root, removed with the value.
struct Root(PathBuf);

impl Root {
    fn new() -> Root {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("tether-inproc-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Root(p)
    }

    /// Makes the double's GomuksStart behave as `file` says (see its header comment).
    fn with(self, file: &str, value: &str) -> Root {
        std::fs::create_dir_all(&self.0).unwrap();
        std::fs::write(self.0.join(file), value).unwrap();
        self
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(root: &Root, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Config {
    f(Config::builder("").in_process(fake_library(), &root.0))
        .build()
        .unwrap()
}

/// A connected in-process client past its two startup events.
async fn started(root: &Root, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Client {
    let c = start(config(root, f));
    let (ev, before) = until_kind(&c, EventKind::Connected).await;
    assert_eq!(ev.attempt(), 1);
    assert!(!ev.resume_attempted());
    assert_eq!(kinds(&before), ["Connecting::0"]);
    for cmd in ["client_state", "sync_status"] {
        let ev = next(&c).await;
        assert_eq!(
            (ev.kind(), ev.command(), ev.request_id()),
            (EventKind::Message, cmd, 0)
        );
    }
    c
}

/// The RESPONSE to `id`, and the events before it.
async fn response(c: &Client, id: i64) -> (tether::Event, Vec<tether::Event>) {
    until(c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await
}

/// Plenty on a loaded 2-core machine for something that should be immediate.
const PROMPT: Duration = Duration::from_millis(1500);

/// §12.3: the startup events arrive as MESSAGE events (id 0), requests are answered with the
/// backend's data, its `error` is ERR_REMOTE with its text, and close ends with
/// DISCONNECTED (OK, no retry) then CLOSED.
#[tokio::test]
async fn spec12_startup_events_requests_errors_and_close() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    let id = c.request("echo", br#"{"a":[1,2]}"#).unwrap();
    let (ev, _) = response(&c, id).await;
    assert_eq!(
        (ev.status(), ev.data()),
        (Status::Ok, &br#"{"a":[1,2]}"#[..])
    );
    let data = c.call("get_account_info", b"").await.unwrap();
    assert!(String::from_utf8_lossy(&data).contains("@fake:localhost"));
    let id = c.request("no_such", b"{}").unwrap();
    let (ev, _) = response(&c, id).await;
    assert_eq!(ev.status(), Status::ErrRemote);
    assert_eq!(json(&ev), "unknown command \"no_such\"");
    let stats = c.stats();
    assert_eq!((stats.connections, stats.requests_sent), (1, 3));
    // No websocket: the backend's events are counted, no message, byte or compression.
    assert!(stats.events_received > 0, "{stats:?}");
    assert_eq!(
        (
            stats.messages_received,
            stats.payload_bytes_in,
            stats.wire_bytes_in
        ),
        (0, 0, 0)
    );

    c.close().unwrap();
    let (ev, skipped) = until_kind(&c, EventKind::Disconnected).await;
    assert!(skipped.is_empty(), "{:?}", kinds(&skipped));
    assert_eq!((ev.status(), ev.retry_in()), (Status::Ok, None));
    assert_eq!(next(&c).await.kind(), EventKind::Closed);
}

/// Settings only a connection uses are ignored in-process, not checked: an app that shares
/// one configuration between the websocket and the bundled backend (pins, a client
/// certificate, its own ping timing, a proxy...) gets a working client, as the header says,
/// not a config error about a URL it never gave.
#[tokio::test]
async fn connection_settings_are_ignored_in_process() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| {
        b.pin_sha256("sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .extra_ca_pem(b"not a certificate")
            .crl_pem(b"not a CRL")
            .client_cert_pem(b"not a certificate", b"not a key")
            .use_os_trust(true)
            .proxy("http://[not a proxy")
            .ping_interval(Duration::from_secs(20))
            .receive_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::ZERO)
            .reconnect_backoff(Duration::from_secs(5), Duration::from_secs(1))
            .resume_state("run-7", -42)
            .header("Host", "elsewhere")
            .token("unused")
    })
    .await;
    let data = c.call("echo", br#"{"ok":true}"#).await.unwrap();
    assert_eq!(&data[..], br#"{"ok":true}"#);
    // Unused, and handed back as given: saved after this run, they still serve the app's
    // websocket client.
    let point = c.resume_state();
    assert_eq!(
        (point.run_id.as_str(), point.last_received_event),
        ("run-7", -42)
    );
    assert_eq!(c.auth_token().as_deref(), Some("unused"));
    c.close().unwrap();
    until_kind(&c, EventKind::Closed).await;
}

/// §12.3: the FFI's calls block and cannot be cancelled; a timeout and a cancel answer the
/// app at once all the same, and the backend's late replies are dropped, not delivered twice.
#[tokio::test]
async fn spec12_3_timeout_and_cancel_answer_at_once_and_late_replies_are_dropped() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    let t0 = Instant::now();
    let timed = c
        .request_with_timeout("sleep", br#"{"ms":1500}"#, Duration::from_millis(200))
        .unwrap();
    let cancelled = c.request("sleep", br#"{"ms":1500}"#).unwrap();
    c.cancel(cancelled).unwrap();
    let (ev, _) = response(&c, cancelled).await;
    assert_eq!(ev.status(), Status::ErrCancelled);
    let (ev, _) = response(&c, timed).await;
    assert_eq!(ev.status(), Status::ErrRequestTimeout);
    assert!(
        t0.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
    // Both sleeps end meanwhile; their answers must not surface.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let id = c.request("echo", b"{}").unwrap();
    let (_, skipped) = response(&c, id).await;
    assert!(
        skipped.is_empty(),
        "late replies leaked: {:?}",
        kinds(&skipped)
    );
    close_and_drain(&c).await;
}

/// §12.2: nothing may reach the FFI before GomuksStart returned (the real one aborts the
/// process, and so does the double): a request made during a slow start waits and is
/// answered after CONNECTED.
#[tokio::test]
async fn spec12_2_requests_during_start_wait_for_it() {
    let _turn = serial().await;
    let root = Root::new().with("fake_start_delay_ms", "600");
    let c = start(config(&root, |b| b));
    let id = c.request("echo", br#"{"early":true}"#).unwrap();
    let (ev, before) = response(&c, id).await;
    assert_eq!(ev.status(), Status::Ok);
    assert_eq!(
        kinds(&before),
        [
            "Connecting::0",
            "Connected::0",
            "Message:client_state:0",
            "Message:sync_status:0"
        ]
    );
    close_and_drain(&c).await;
}

/// §12.2: GomuksStart's codes 10, 11 and 12 (and any other) end the client with a status
/// each, no retry, then CLOSED; requests waiting for the start end with CLIENT_CLOSED (the
/// app did not close it), whose text gives the start's error.
#[tokio::test]
async fn spec12_2_start_codes_map_to_statuses() {
    let _turn = serial().await;
    for (code, status) in [
        ("10", Status::ErrBackendDatabase),
        ("11", Status::ErrBackendAccount),
        ("12", Status::ErrBackendStart),
        ("99", Status::ErrBackendStart),
    ] {
        // The start fails only after a while, so the request below surely waits for it: a
        // start failing at once can end the session before the request is made (then the
        // request itself is refused, which is a different case).
        let root = Root::new()
            .with("fake_start_code", code)
            .with("fake_start_delay_ms", "500");
        let c = start(config(&root, |b| b));
        let id = c.request("echo", b"{}").unwrap();
        let (ev, _) = until_kind(&c, EventKind::Disconnected).await;
        assert_eq!((ev.status(), ev.retry_in()), (status, None), "code {code}");
        assert!(String::from_utf8_lossy(ev.data()).contains(&format!("returned {code}")));
        let (ev, _) = response(&c, id).await;
        assert_eq!(ev.status(), Status::ErrClientClosed);
        let why: String = serde_json::from_slice(ev.data()).unwrap();
        assert!(
            why.contains("stopped for good") && why.contains(&format!("returned {code}")),
            "{why}"
        );
        until_kind(&c, EventKind::Closed).await;
    }
}

/// A data root serves one client at a time, and a process runs one in-process backend: a
/// second is refused at connect with ERR_IN_USE (and left as it was); after the first closes,
/// the root and the slot are free again.
#[tokio::test]
async fn one_backend_per_root_and_per_process() {
    let _turn = serial().await;
    let root = Root::new();
    let first = started(&root, |b| b).await;
    let same_root = Client::new(config(&root, |b| b));
    let err = same_root.connect().unwrap_err();
    assert_eq!(err.status(), Status::ErrInUse, "{err}");
    let other = Root::new();
    let other_root = Client::new(config(&other, |b| b));
    assert_eq!(other_root.connect().unwrap_err().status(), Status::ErrInUse);
    // Refused before its library is loaded: a second gomuks library would bring a second Go
    // runtime into the process.
    let copy = other
        .0
        .with_file_name(format!("libgomuksffi-copy-{}.so", std::process::id()));
    std::fs::copy(fake_library(), &copy).unwrap();
    let another_library = Client::new(
        Config::builder("")
            .in_process(&copy, &other.0)
            .build()
            .unwrap(),
    );
    let err = another_library.connect().unwrap_err();
    assert_eq!(err.status(), Status::ErrInUse, "{err}");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains(copy.to_str().unwrap()),
        "the refused client's library was loaded"
    );
    let _ = std::fs::remove_file(&copy);
    close_and_drain(&first).await;
    // The refused clients are untouched: connect works now.
    same_root.connect().unwrap();
    until_kind(&same_root, EventKind::Connected).await;
    close_and_drain(&same_root).await;
    other_root.connect().unwrap();
    until_kind(&other_root, EventKind::Connected).await;
    close_and_drain(&other_root).await;
}

/// §12.3: the FFI's event callback never waits for the app. With a queue of 16 and the app
/// not taking events for a second, the backend delivers 20 000 events without a callback
/// taking more than a fraction of that second; the queue stays within its capacity; the app
/// then gets every event, once, in order.
#[tokio::test]
async fn spec12_3_a_slow_app_never_stalls_the_backend() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b.queue_capacity(16)).await;
    const N: u64 = 20_000;
    let id = c
        .request(
            "emit",
            format!(r#"{{"count":{N},"command":"flood"}}"#).as_bytes(),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(c.queued_events() <= 16, "{}", c.queued_events());
    let mut seq = 0;
    let mut answered = false;
    while seq < N || !answered {
        let ev = next(&c).await;
        match ev.kind() {
            EventKind::Message => {
                assert_eq!(ev.command(), "flood");
                assert_eq!(json(&ev)["seq"], seq);
                seq += 1;
            }
            EventKind::Response if ev.request_id() == id => answered = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    let stats = fake_stats(&c).await;
    assert_eq!(stats["emitted"], N);
    let max_us = stats["max_callback_us"].as_u64().unwrap();
    assert!(
        max_us < 250_000,
        "a callback waited {max_us} µs for the app"
    );
    close_and_drain(&c).await;
}

/// §12.3: a call the FFI cannot interrupt holds a thread of the shared blocking pool until the
/// backend answers, also after its request timed out. At most 64 run at once; the rest wait in
/// the session, where a timeout ends them before they reach the backend (and gives their bytes
/// back to the send budget), and a request behind them is served as soon as a call returns.
#[tokio::test]
async fn spec12_3_at_most_64_calls_run_at_once_and_ended_requests_never_start() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    let t0 = Instant::now();
    let slow: Vec<i64> = (0..100)
        .map(|_| {
            c.request_with_timeout("sleep", br#"{"ms":1500}"#, Duration::from_millis(100))
                .unwrap()
        })
        .collect();
    let mut timed_out = 0;
    while timed_out < slow.len() {
        let ev = next(&c).await;
        if ev.kind() == EventKind::Response && slow.contains(&ev.request_id()) {
            assert_eq!(ev.status(), Status::ErrRequestTimeout);
            timed_out += 1;
        }
    }
    // The 36 that ended waiting gave their bytes back at once, while every call still runs.
    assert_eq!(c.stats().unsent_bytes, 0);
    let echo = c.call("echo", br#"{"behind":true}"#).await.unwrap();
    assert_eq!(&echo[..], br#"{"behind":true}"#);
    assert!(
        t0.elapsed() < Duration::from_millis(1500) + PROMPT,
        "{:?}",
        t0.elapsed()
    );
    let stats = fake_stats(&c).await;
    assert_eq!(stats["max_running"], 64, "{stats}");
    assert_eq!(
        stats["submitted"],
        64 + 2,
        "the 36 that timed out waiting never started: {stats}"
    );
    close_and_drain(&c).await;
}

/// §12.3: eight uploads report progress at once (the FFI's callback slots); the others wait in
/// tether like any request not handed over yet: a timeout ends one before it reaches the
/// backend, its bytes stay in the send budget while it waits, and it holds none of the 64
/// call places, so requests of other kinds go past any number of them.
#[tokio::test]
async fn uploads_past_the_eight_progress_slots_wait_in_tether() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    let hold = br#"{"filename":"f","hold_ms":1200}"#;
    let mut ok: Vec<i64> = (0..8)
        .map(|_| c.upload_media(hold, Some(b"x"), None).unwrap())
        .collect();
    let t0 = Instant::now();
    let late = c
        .upload_media(hold, Some(b"x"), Some(Duration::from_millis(300)))
        .unwrap();
    let big = vec![7u8; 100 << 10];
    // More than the 64 call places wait for the upload lane.
    ok.extend((0..70).map(|_| {
        c.upload_media(br#"{"filename":"g"}"#, Some(&big), None)
            .unwrap()
    }));
    let echo = c.call("echo", br#"{"past":true}"#).await.unwrap();
    assert_eq!(&echo[..], br#"{"past":true}"#);
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        c.stats().unsent_bytes >= 70 * (100 << 10),
        "waiting uploads keep their bytes in the budget"
    );
    let (ev, _) = response(&c, late).await;
    assert_eq!(ev.status(), Status::ErrRequestTimeout);
    for ev in replies(&c, &ok, None).await.0 {
        assert_eq!(ev.status(), Status::Ok, "{}", json(&ev));
    }
    assert_eq!(c.stats().unsent_bytes, 0);
    let stats = fake_stats(&c).await;
    assert_eq!(stats["max_uploading"], 8, "{stats}");
    assert_eq!(
        stats["uploads"], 78,
        "the one that timed out waiting never started: {stats}"
    );
    close_and_drain(&c).await;
}

/// §12.3 close: "a close answers every request at once", also those still waiting for one of
/// the 64 call slots, not only those the backend runs; the stop then waits for the running
/// calls (here 2 s) before DISCONNECTED and CLOSED.
#[tokio::test]
async fn a_close_answers_requests_waiting_for_a_call_at_once() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    let ids: Vec<i64> = (0..66)
        .map(|_| c.request("sleep", br#"{"ms":2000}"#).unwrap())
        .collect();
    // Until the backend runs 64 of them (two wait).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    c.close().unwrap();
    let (_, seen) = until_kind(&c, EventKind::Closed).await;
    let answered: Vec<&tether::Event> = seen
        .iter()
        .take_while(|e| e.kind() != EventKind::Disconnected)
        .filter(|e| e.kind() == EventKind::Response && ids.contains(&e.request_id()))
        .collect();
    assert_eq!(
        answered.len(),
        ids.len(),
        "answered before DISCONNECTED: {:?}",
        kinds(&seen)
    );
    assert!(answered
        .iter()
        .all(|e| e.status() == Status::ErrClientClosed));
    assert!(seen.iter().any(|e| e.kind() == EventKind::Disconnected));
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "the stop waited for the calls"
    );
}

/// §12.3 close: a call the backend answered before the close keeps its answer, also while a
/// full queue kept that answer waiting behind the backend's events; it used to end with
/// CLIENT_CLOSED as if it had never been answered. A streamed download keeps its chunks with
/// it: an OK after only part of the file would read as a complete (or cached) download.
#[tokio::test]
async fn a_close_keeps_the_answers_of_calls_that_returned() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b.queue_capacity(4)).await;
    c.request("emit", br#"{"count":50,"command":"flood"}"#)
        .unwrap();
    let t0 = Instant::now();
    while c.queued_events() < 4 {
        assert!(t0.elapsed() < PROMPT, "the queue never filled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = c.request("echo", b"1").unwrap();
    const SIZE: usize = 200_000;
    let download = c
        .download_media(format!(r#"{{"mxc":"mxc://fake/{SIZE}"}}"#).as_bytes(), None)
        .unwrap();
    // The backend answers at once; the answers wait behind the flood for room in the queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.close().unwrap();
    let (_, seen) = until_kind(&c, EventKind::Closed).await;
    let answer = |id| {
        seen.iter()
            .find(|e| e.kind() == EventKind::Response && e.request_id() == id)
            .unwrap_or_else(|| panic!("no RESPONSE: {:?}", kinds(&seen)))
    };
    assert_eq!(
        (answer(id).status(), answer(id).data()),
        (Status::Ok, &b"1"[..])
    );
    assert_eq!(answer(download).status(), Status::Ok);
    let file: Vec<u8> = seen
        .iter()
        .filter(|e| e.kind() == EventKind::Chunk && e.request_id() == download)
        .flat_map(|e| e.data().iter().copied())
        .collect();
    assert_eq!(file.len(), SIZE, "the chunks before the OK");
}

/// §12.3 with the send budget: requests waiting for one of the 64 call slots hold their bytes,
/// so with a small budget one more is refused; the refused app gets one SEND_READY once the
/// calls return and the waiting requests reach the backend, and its request then goes through.
#[tokio::test]
async fn spec12_3_requests_waiting_for_a_call_hold_the_budget_and_room_is_announced() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b.max_unsent_bytes(256)).await;
    let body = br#"{"ms":500}"#;
    let mut ids: Vec<i64> = Vec::new();
    // The first 64 reach the backend and give their bytes back; the app can outrun the
    // session, so wait for each.
    for _ in 0..64 {
        ids.push(c.request("sleep", body).unwrap());
        let t0 = Instant::now();
        while c.stats().unsent_bytes != 0 {
            assert!(t0.elapsed() < PROMPT, "a call did not start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let refused = loop {
        assert!(ids.len() < 200, "never refused");
        match c.request("sleep", body) {
            Ok(id) => ids.push(id),
            Err(e) => break e,
        }
    };
    assert_eq!(refused.status(), Status::ErrSendBufferFull, "{refused}");
    // Refused by the requests that wait for a call: the 64 running hold nothing.
    assert!(c.stats().unsent_bytes > 0);
    // The calls end in any order.
    let (mut answered, mut ready) = (0, 0);
    while answered < ids.len() {
        let ev = next(&c).await;
        match ev.kind() {
            EventKind::Response if ids.contains(&ev.request_id()) => {
                assert_eq!(ev.status(), Status::Ok);
                answered += 1;
            }
            EventKind::SendReady => ready += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ready, 1);
    assert_eq!(c.stats().unsent_bytes, 0);
    let id = c.request("sleep", br#"{"ms":1}"#).unwrap();
    assert_eq!(response(&c, id).await.0.status(), Status::Ok);
    close_and_drain(&c).await;
}

/// Media upload with progress (§12.2 GomuksUploadMediaBytes/Path): PROGRESS events for the
/// request, rising, then its RESPONSE; a failing upload is ERR_REMOTE with the backend's text.
#[tokio::test]
async fn spec12_2_upload_reports_progress_then_the_content() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    let id = c
        .upload_media(br#"{"filename":"a.bin"}"#, Some(&[7u8; 1000]), None)
        .unwrap();
    let (ev, before) = response(&c, id).await;
    assert_eq!(ev.status(), Status::Ok);
    assert_eq!(json(&ev)["url"], "mxc://fake/1000");
    let progress: Vec<f64> = before
        .iter()
        .filter(|e| e.kind() == EventKind::Progress && e.request_id() == id)
        .map(|e| e.progress().unwrap())
        .collect();
    assert_eq!(progress, [0.0, 50.0, 100.0]);
    assert_eq!(before[0].data(), b"0");

    let file = root.0.join("upload.txt");
    std::fs::write(&file, b"hello").unwrap();
    let params = serde_json::json!({ "path": file }).to_string();
    let id = c.upload_media(params.as_bytes(), None, None).unwrap();
    let (ev, before) = response(&c, id).await;
    assert_eq!(json(&ev)["url"], "mxc://fake/5");
    assert_eq!(before.len(), 3);
    // Exactly one source: bytes, or a "path" in the params; neither and both are refused.
    let neither: &[u8] = br#"{"filename":"a"}"#;
    for (params, bytes) in [(params.as_bytes(), Some(&b"x"[..])), (neither, None)] {
        let e = c.upload_media(params, bytes, None).unwrap_err();
        assert_eq!(e.status(), Status::ErrInvalidArgument, "{}", e.message());
        assert!(e.message().contains("\"path\""), "{}", e.message());
    }

    let id = c
        .upload_media(br#"{"fail":true}"#, Some(b"x"), None)
        .unwrap();
    let (ev, _) = response(&c, id).await;
    assert_eq!(ev.status(), Status::ErrRemote);
    assert_eq!(json(&ev), "upload failed");
    close_and_drain(&c).await;
}

/// Streamed download (GomuksDownloadMediaPath): CHUNK events carry the file in order, then
/// the RESPONSE; several downloads at once keep their chunks apart.
#[tokio::test]
async fn spec12_2_download_streams_chunks_in_order() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    let sizes = [200_000usize, 70_000, 1];
    let ids: Vec<i64> = sizes
        .iter()
        .map(|n| {
            let p = format!(r#"{{"mxc":"mxc://fake/{n}"}}"#);
            c.download_media(p.as_bytes(), None).unwrap()
        })
        .collect();
    let mut files = vec![Vec::new(); ids.len()];
    let mut done = 0;
    while done < ids.len() {
        let ev = next(&c).await;
        let i = ids.iter().position(|&id| id == ev.request_id()).unwrap();
        match ev.kind() {
            EventKind::Chunk => files[i].extend_from_slice(ev.data()),
            EventKind::Response => {
                assert_eq!(ev.status(), Status::Ok);
                assert_eq!(json(&ev)["size"], sizes[i]);
                done += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for (file, n) in files.iter().zip(sizes) {
        let want: Vec<u8> = (0..n).map(|k| (k % 251) as u8).collect();
        assert!(*file == want, "download of {n} bytes differs");
    }
    close_and_drain(&c).await;
}

/// gomuks aborts the whole process when `upload_media` or `calculate_room_id` run without an
/// account (interop/FINDINGS.md I7), and so does every command that reaches the homeserver
/// URL it does not have (`get_profile`, `join_room`, `paginate`, ..., and newer gomuks's
/// `download_media`, streamed or not, and `get_url_preview`): while the backend's
/// `client_state` says it is not logged in, tether answers them ERR_STATE instead of calling
/// it (the double aborts as gomuks does); the login commands and other requests go on.
#[tokio::test]
async fn account_commands_are_refused_while_the_backend_is_logged_out() {
    let _turn = serial().await;
    let root = Root::new().with("fake_logged_out", "1");
    let c = start(config(&root, |b| b));
    let (ev, _) = until_command(&c, "client_state").await;
    assert_eq!(json(&ev)["is_logged_in"], false);
    let ids = [
        c.upload_media(br#"{"filename":"a"}"#, Some(b"x"), None)
            .unwrap(),
        c.request("upload_media", br#"{"path":"/etc/hostname"}"#)
            .unwrap(),
        c.request("calculate_room_id", b"{}").unwrap(),
        c.download_media(br#"{"mxc":"mxc://fake/10"}"#, None)
            .unwrap(),
        c.request("download_media", br#"{"mxc":"mxc://fake/10"}"#)
            .unwrap(),
        c.request("get_url_preview", br#"{"url":"https://example.org"}"#)
            .unwrap(),
        c.request("get_profile", br#"{"user_id":"@a:b"}"#).unwrap(),
        c.request("join_room", br##"{"room_id_or_alias":"#a:b"}"##)
            .unwrap(),
        c.request(
            "paginate",
            br#"{"room_id":"!a:b","max_timeline_id":0,"limit":50}"#,
        )
        .unwrap(),
    ];
    for ev in replies(&c, &ids, None).await.0 {
        assert_eq!(ev.status(), Status::ErrState);
        assert!(json(&ev).as_str().unwrap().contains("logged-in backend"));
    }
    let id = c.request("echo", b"{}").unwrap();
    assert_eq!(response(&c, id).await.0.status(), Status::Ok);
    // A login command reaches the backend (the double does not know it).
    let id = c
        .request(
            "get_login_flows",
            br#"{"homeserver_url":"http://127.0.0.1:1"}"#,
        )
        .unwrap();
    let (ev, _) = response(&c, id).await;
    assert_eq!(ev.status(), Status::ErrRemote);
    assert!(json(&ev).as_str().unwrap().contains("unknown command"));
    close_and_drain(&c).await;
}

/// §12.3 logout: newer gomuks sets its client to nil while it logs out, and a call meanwhile
/// panics (aborting the process; the double aborts as it does). tether runs nothing beside a
/// logout: requests made while it runs wait for it, and an account command among them is
/// refused once it is done, not run without an account.
#[tokio::test]
async fn a_logout_runs_alone_and_ends_account_commands() {
    let _turn = serial().await;
    let root = Root::new();
    let c = start(config(&root, |b| b));
    let (ev, _) = until_command(&c, "client_state").await;
    assert_eq!(json(&ev)["is_logged_in"], true);
    let logout = c.request("logout", br#"{"ms": 400}"#).unwrap();
    let marker = root.0.join("fake_logging_out");
    let deadline = Instant::now() + WAIT;
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the logout never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let echo = c.request("echo", b"{}").unwrap();
    let account = c.request("calculate_room_id", b"{}").unwrap();
    let is_state = |e: &tether::Event| e.command() == "client_state";
    let (r, state) = replies(&c, &[logout, echo, account], Some(&is_state)).await;
    let statuses: Vec<Status> = r.iter().map(|e| e.status()).collect();
    assert_eq!(
        statuses,
        [Status::Ok, Status::Ok, Status::ErrState],
        "{:?}",
        kinds(&r)
    );
    assert_eq!(json(&state.unwrap())["is_logged_in"], false);
    close_and_drain(&c).await;
}

/// gomuks logs out by itself when the homeserver no longer knows its session (the device was
/// signed out from elsewhere): its sync fails for good with M_UNKNOWN_TOKEN, and the logout it
/// then runs drops its client until it restarts one, so any call into the FFI meanwhile would
/// abort the process (the double aborts as gomuks does). tether refuses every request from
/// that `sync_status` until the restarted client's `client_state`; then plain commands go on
/// and account commands stay refused (logged out).
#[tokio::test]
async fn a_session_revoked_elsewhere_refuses_calls_until_the_backend_restarted() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    c.request("revoke", br#"{"ms": 600}"#).unwrap();
    let (status, _) = until_command(&c, "sync_status").await;
    assert_eq!(json(&status)["type"], "permanently-failed");
    let err = c.call("echo", b"1").await.unwrap_err();
    assert_eq!(err.status(), Status::ErrState, "{err}");
    assert!(err.message().contains("logging out by itself"), "{err}");
    let (state, _) = until_command(&c, "client_state").await;
    assert_eq!(json(&state)["is_logged_in"], false);
    assert_eq!(c.call("echo", b"2").await.unwrap(), &b"2"[..]);
    let id = c.request("calculate_room_id", b"{}").unwrap();
    assert_eq!(response(&c, id).await.0.status(), Status::ErrState);
    close_and_drain(&c).await;
}

/// What the libgomuksffi double counted (its `fake_stats` command).
async fn fake_stats(c: &Client) -> serde_json::Value {
    serde_json::from_slice(&c.call("fake_stats", b"").await.unwrap()).unwrap()
}

/// Takes events until the RESPONSE of each of `ids` (in any order: each call runs on its own
/// blocking thread) and, with `message`, the first MESSAGE it matches have come; returns the
/// responses in the order of `ids`, and that message.
async fn replies(
    c: &Client,
    ids: &[i64],
    message: Option<&dyn Fn(&tether::Event) -> bool>,
) -> (Vec<tether::Event>, Option<tether::Event>) {
    let mut got = std::collections::HashMap::new();
    let mut matched = None;
    while got.len() < ids.len() || (message.is_some() && matched.is_none()) {
        let ev = next(c).await;
        if ev.kind() == EventKind::Response && ids.contains(&ev.request_id()) {
            got.insert(ev.request_id(), ev);
        } else if ev.kind() == EventKind::Message
            && matched.is_none()
            && message.is_some_and(|m| m(&ev))
        {
            matched = Some(ev);
        }
    }
    let responses = ids.iter().map(|id| got.remove(id).unwrap()).collect();
    (responses, matched)
}

/// Returns once the one call made before (and not answered) runs in the double: it got one
/// command more than the stats calls made here.
async fn until_the_backend_runs_it(c: &Client) {
    let deadline = Instant::now() + WAIT;
    for polls in 1u64.. {
        let id = c.request("fake_stats", b"{}").unwrap();
        if json(&response(c, id).await.0)["submitted"].as_u64() > Some(polls) {
            return;
        }
        assert!(Instant::now() < deadline, "the call never ran");
    }
}

/// A logout still waiting for a running call when the client is closed never runs: the app
/// was told the client closed, and a logout revokes the token and deletes the data.
#[tokio::test]
async fn a_logout_waiting_when_the_client_closes_never_runs() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    c.request("sleep", br#"{"ms": 500}"#).unwrap();
    until_the_backend_runs_it(&c).await;
    let logout = c.request("logout", b"{}").unwrap();
    c.close().unwrap();
    let (r, _) = response(&c, logout).await;
    assert_eq!(r.status(), Status::ErrClientClosed, "{}", json(&r));
    until_kind(&c, EventKind::Closed).await;
    assert!(
        !root.0.join("fake_logging_out").exists(),
        "the logout ran after the close"
    );
}

/// After a logout, gomuks's old client may still report itself logged in (a profile fetch
/// returning late), naming the device that logged out: account commands stay refused (the
/// double aborts as gomuks does if one reaches it).
#[tokio::test]
async fn a_late_logged_in_report_of_the_ended_device_changes_nothing() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    let logout = c
        .request("logout", br#"{"late_login_state": true}"#)
        .unwrap();
    let late = |e: &tether::Event| e.command() == "client_state" && json(e)["is_logged_in"] == true;
    let (r, state) = replies(&c, &[logout], Some(&late)).await;
    assert_eq!(r[0].status(), Status::Ok, "{}", json(&r[0]));
    assert_eq!(json(&state.unwrap())["device_id"], "FAKE");
    let id = c.request("calculate_room_id", b"{}").unwrap();
    let (r, _) = response(&c, id).await;
    assert_eq!(r.status(), Status::ErrState, "{}", json(&r));
    close_and_drain(&c).await;
}

/// An account command made while a logout waits for a running call is looked at once the
/// logout is done, so it is refused rather than run without an account (which aborts the
/// process; the double aborts as gomuks does). A second logout is refused too: gomuks's own
/// logout reads the account.
#[tokio::test]
async fn an_account_command_behind_a_waiting_logout_is_refused() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    let sleep = c.request("sleep", br#"{"ms": 300}"#).unwrap();
    until_the_backend_runs_it(&c).await;
    let logout = c.request("logout", b"{}").unwrap();
    let account = c.request("calculate_room_id", b"{}").unwrap();
    let (r, _) = replies(&c, &[sleep, logout, account], None).await;
    assert_eq!(r[0].status(), Status::Ok, "{}", json(&r[0]));
    assert_eq!(r[1].status(), Status::Ok, "{}", json(&r[1]));
    // Refused after the logout, or (if it reached the backend before the logout asked for
    // it) run while still logged in; never run after the logout.
    assert!(
        [Status::ErrState, Status::ErrRemote].contains(&r[2].status()),
        "{:?} {}",
        r[2].status(),
        json(&r[2])
    );
    let again = c.request("logout", b"{}").unwrap();
    let (r, _) = response(&c, again).await;
    assert_eq!(r.status(), Status::ErrState, "{}", json(&r));
    close_and_drain(&c).await;
}

/// A backend that breaks its JSON promise loses nothing and breaks nothing: its non-JSON
/// event data and reply arrive as JSON strings of the text, so every MESSAGE and RESPONSE
/// stays JSON (as the websocket's parser guarantees).
#[tokio::test]
async fn non_json_from_the_backend_arrives_as_a_json_string() {
    let _turn = serial().await;
    common::logs::records();
    let root = Root::new();
    let c = started(&root, |b| b).await;
    let id = c.request("not_json", b"{}").unwrap();
    let (ev, _) = response(&c, id).await;
    assert_eq!((ev.status(), json(&ev)), (Status::Ok, "not json {".into()));
    // And the app's log says so, for this client.
    let recs = common::logs::wait_log(c.id(), "10 bytes that are not JSON").await;
    let r = recs
        .iter()
        .find(|r| r.message.contains("not JSON"))
        .unwrap();
    assert_eq!(
        (r.level, r.target),
        (tether::LogLevel::Warn, "tether::gomuks")
    );
    c.request("emit", br#"{"count":2,"command":"odd","not_json":true}"#)
        .unwrap();
    for seq in 0..2 {
        let (ev, _) = until_command(&c, "odd").await;
        assert_eq!(json(&ev), format!("seq {seq}").as_str());
    }
    close_and_drain(&c).await;
}

/// A library without GomuksDownloadMediaPath (gomuks v0.2607.0) answers a streamed download
/// with ERR_UNSUPPORTED in its RESPONSE; the client goes on.
#[tokio::test]
async fn spec12_2_download_without_the_streaming_entry_point_is_unsupported() {
    let _turn = serial().await;
    // Logged out: a library this old would not run the download, so that is no reason to
    // refuse it (what it lacks is said first), and its hicli answers download_media as an
    // unknown command rather than panicking.
    let root = Root::new().with("fake_logged_out", "1");
    let lib = fake_library().with_file_name("libfakegomuksffi-nodownload.so");
    let c = start(
        Config::builder("")
            .in_process(lib, &root.0)
            .build()
            .unwrap(),
    );
    until_kind(&c, EventKind::Connected).await;
    let id = c
        .download_media(br#"{"mxc":"mxc://fake/10"}"#, None)
        .unwrap();
    let (ev, _) = response(&c, id).await;
    assert_eq!(ev.status(), Status::ErrUnsupported);
    assert!(json(&ev)
        .as_str()
        .unwrap()
        .contains("GomuksDownloadMediaPath"));
    let id = c
        .request("download_media", br#"{"mxc":"mxc://fake/10"}"#)
        .unwrap();
    let (ev, _) = response(&c, id).await;
    assert_eq!(ev.status(), Status::ErrRemote, "{}", json(&ev));
    let id = c.request("echo", b"{}").unwrap();
    assert_eq!(response(&c, id).await.0.status(), Status::Ok);
    close_and_drain(&c).await;
}

/// What has no meaning in-process answers a clear status: pause, unpause and reconnect are
/// ERR_UNSUPPORTED; media calls on a websocket client (gomuks or rwws) too; an rwws in-process config and a
/// library that is not a gomuks FFI are configuration errors.
#[tokio::test]
async fn calls_that_do_not_apply_answer_a_clear_status() {
    let _turn = serial().await;
    let root = Root::new();
    let c = started(&root, |b| b).await;
    for r in [c.pause(), c.unpause(), c.reconnect_now()] {
        assert_eq!(r.unwrap_err().status(), Status::ErrUnsupported);
    }
    assert_eq!(c.send_packet(b"x").unwrap_err().status(), Status::ErrState);
    close_and_drain(&c).await;

    // gomuks and rwws over the websocket alike (rwws has no requests at all, but the app
    // that falls back to HTTP media on this status must see it).
    let rwws = Config::builder("ws://127.0.0.1:9/")
        .protocol(Protocol::Rwws)
        .token("AAEC");
    for cfg in [Config::builder("ws://127.0.0.1:9/"), rwws] {
        let ws = Client::new(cfg.build().unwrap());
        let e = ws.upload_media(b"{}", Some(b"x"), None).unwrap_err();
        assert_eq!(e.status(), Status::ErrUnsupported, "{e}");
        assert_eq!(
            ws.download_media(b"{}", None).unwrap_err().status(),
            Status::ErrUnsupported
        );
    }

    let e = Config::builder("")
        .protocol(Protocol::Rwws)
        .token("AAEC")
        .in_process(fake_library(), &root.0)
        .build()
        .unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig);
    for lib in ["/nonexistent/libgomuksffi.so", "/bin/sh"] {
        let c = Client::new(
            Config::builder("")
                .in_process(lib, &root.0)
                .build()
                .unwrap(),
        );
        let e = c.connect().unwrap_err();
        assert_eq!(e.status(), Status::ErrConfig, "{lib}: {e}");
    }
    let libc_path = "/lib/x86_64-linux-gnu/libc.so.6";
    if Path::new(libc_path).exists() {
        let c = Client::new(
            Config::builder("")
                .in_process(libc_path, &root.0)
                .build()
                .unwrap(),
        );
        let e = c.connect().unwrap_err();
        assert!(e.message().contains("GomuksInit"), "{e}");
    }
}

/// A close while the start still runs answers at once (the start cannot be interrupted); the
/// backend is stopped once its start returns, after which the root serves a new client.
#[tokio::test]
async fn close_during_a_slow_start_is_prompt() {
    let _turn = serial().await;
    let root = Root::new().with("fake_start_delay_ms", "1200");
    let c = start(config(&root, |b| b));
    let id = c.request("echo", b"{}").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    c.close().unwrap();
    let (ev, _) = response(&c, id).await;
    assert_eq!(ev.status(), Status::ErrClientClosed);
    until_kind(&c, EventKind::Closed).await;
    assert!(t0.elapsed() < PROMPT, "{:?}", t0.elapsed());
    std::fs::remove_file(root.0.join("fake_start_delay_ms")).unwrap();
    connect_once_free(&root).await;
}

/// A new client on `root`, connecting as soon as the previous backend has stopped (that stop
/// runs in the background).
async fn connect_when_free(root: &Root) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = Client::new(config(root, |b| b));
        match c.connect() {
            Ok(()) => return c,
            Err(e) if e.status() == Status::ErrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Connects a new client on `root` once the previous backend has stopped, then closes it.
async fn connect_once_free(root: &Root) {
    let again = connect_when_free(root).await;
    until_kind(&again, EventKind::Connected).await;
    close_and_drain(&again).await;
}

/// §12.3: the callbacks carry no context, and gomuks's event goroutine may still send an event
/// after `GomuksDestroy` returned. One that arrives while the next client's backend starts is
/// not that backend's: the next client sees exactly its own start events, in order.
#[tokio::test]
async fn spec12_3_a_late_event_of_the_previous_backend_is_not_the_next_ones() {
    let _turn = serial().await;
    let first_root = Root::new().with("fake_late_event_ms", "150");
    let first = started(&first_root, |b| b).await;
    close_and_drain(&first).await;
    // The late event comes 150 ms after the first backend stopped, while this start sleeps.
    let root = Root::new().with("fake_start_delay_ms", "600");
    let c = connect_when_free(&root).await;
    let (_, before) = until_kind(&c, EventKind::Connected).await;
    assert_eq!(kinds(&before), ["Connecting::0"]);
    let ev = next(&c).await;
    assert_eq!(
        (ev.kind(), ev.command()),
        (EventKind::Message, "client_state")
    );
    assert_eq!(
        json(&ev)["is_logged_in"],
        true,
        "the late event of the first backend"
    );
    assert_eq!(next(&c).await.command(), "sync_status");
    let id = c.request("echo", b"{}").unwrap();
    let (_, between) = response(&c, id).await;
    assert!(between.is_empty(), "{:?}", kinds(&between));
    close_and_drain(&c).await;
}

/// Dropping a client without close stops its backend too: the root is free afterwards.
#[tokio::test]
async fn drop_without_close_stops_the_backend() {
    let _turn = serial().await;
    let root = Root::new();
    drop(started(&root, |b| b).await);
    connect_once_free(&root).await;
}

/// The store sits above both transports (docs/store.md): attached to an in-process client, it
/// applies the backend's startup events before the app sees them, announces each with a
/// STORE event, counts events it cannot read (the double's non-JSON `sync_complete`, which
/// arrives as a JSON string) without losing the stream, and detaches when dropped.
#[tokio::test]
async fn the_store_follows_an_in_process_backend() {
    let _turn = serial().await;
    let root = Root::new();
    // last_server_ts does not apply in-process (there is no catchup), so it does not keep a
    // store away as it does over the websocket.
    let c = Client::new(config(&root, |b| b.last_server_ts(1)));
    let store = tether::Store::attach(&c, b"").unwrap();
    c.connect().unwrap();
    let (ev, _) = until_command(&c, "sync_status").await;
    assert_eq!(ev.request_id(), 0);
    let session: serde_json::Value =
        serde_json::from_slice(&store.read("session", b"").unwrap()).unwrap();
    assert_eq!(session["client_state"]["is_logged_in"], true);
    assert_eq!(session["sync_status"]["type"], "waiting");
    let change = next(&c).await;
    assert_eq!(change.kind(), EventKind::Store);
    assert_eq!(json(&change)["cause"]["command"], "sync_status");
    let id = c
        .request(
            "emit",
            br#"{"count": 2, "command": "sync_complete", "not_json": true}"#,
        )
        .unwrap();
    let (_, mut seen) = response(&c, id).await;
    while seen
        .iter()
        .filter(|e| e.command() == "sync_complete")
        .count()
        < 2
    {
        seen.push(next(&c).await);
    }
    assert!(
        seen.iter().all(|e| e.kind() != EventKind::Store),
        "{:?}",
        kinds(&seen)
    );
    let session: serde_json::Value =
        serde_json::from_slice(&store.read("session", b"").unwrap()).unwrap();
    assert_eq!(session["undecodable"], 2);
    drop(store);
    let id = c
        .request("emit", br#"{"count": 1, "command": "init_complete"}"#)
        .unwrap();
    let (_, mut seen) = response(&c, id).await;
    while !seen.iter().any(|e| e.command() == "init_complete") {
        seen.push(next(&c).await);
    }
    assert!(
        seen.iter().all(|e| e.kind() != EventKind::Store),
        "{:?}",
        kinds(&seen)
    );
    close_and_drain(&c).await;
}
