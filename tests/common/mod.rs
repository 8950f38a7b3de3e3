//! Shared helpers for the integration tests: a real backend, a client, bounded waits.
#![allow(dead_code)]

pub mod logs;
pub mod proxies;

use std::time::Duration;

use tether::{Client, Config, ConfigBuilder, Event, EventKind, Pop};
use tether_testkit::gomuks::{Backend, BackendConfig};

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn backend() -> Backend {
    backend_with(|_| {}).await
}

pub async fn backend_with(f: impl FnOnce(&mut BackendConfig)) -> Backend {
    let mut cfg = BackendConfig::default();
    f(&mut cfg);
    Backend::start(cfg).await.expect("backend starts")
}

/// A connected-to-be client for `url` with the backend's token; `f` adjusts the config.
pub fn client_at(url: &str, token: &str, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Client {
    let b = Config::builder(url)
        .token(token)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let c = Client::new(f(b).build().expect("valid config"));
    c.connect().expect("connect");
    c
}

/// Starts a client for an already-built config.
pub fn start(cfg: Config) -> Client {
    let c = Client::new(cfg);
    c.connect().expect("connect");
    c
}

pub fn client(b: &Backend, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Client {
    client_at(&b.http_url(), &b.token(), f)
}

/// An rwws client of the backend with its default key; `f` adjusts the config.
pub fn rwws_client(b: &Backend, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Client {
    let cfg = Config::builder(&b.http_url())
        .protocol(tether::Protocol::Rwws)
        .token(tether_testkit::rwws::DEFAULT_KEY)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(500));
    start(f(cfg).build().expect("valid config"))
}

/// Next event, bounded (blocking poll runs on a blocking thread).
pub async fn next(c: &Client) -> Event {
    match tokio::time::timeout(WAIT, c.next_event()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("client finished while an event was expected"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// Consumes events until one matches; returns it and everything skipped before it.
pub async fn until(c: &Client, mut pred: impl FnMut(&Event) -> bool) -> (Event, Vec<Event>) {
    let mut skipped = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = match tokio::time::timeout(left, c.next_event()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("client finished; skipped: {:?}", kinds(&skipped)),
            Err(_) => panic!(
                "no matching event within {WAIT:?}; skipped: {:?}",
                kinds(&skipped)
            ),
        };
        if pred(&ev) {
            return (ev, skipped);
        }
        skipped.push(ev);
    }
}

/// Waits until the app's event queue holds `n` events (the session then stops reading).
pub async fn until_queue_holds(c: &Client, n: usize) {
    let t0 = std::time::Instant::now();
    while c.queued_events() < n {
        assert!(t0.elapsed() < WAIT, "the queue never filled");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

pub async fn until_kind(c: &Client, kind: EventKind) -> (Event, Vec<Event>) {
    until(c, |e| e.kind() == kind).await
}

pub async fn until_command(c: &Client, command: &str) -> (Event, Vec<Event>) {
    until(c, |e| {
        e.kind() == EventKind::Message && e.command() == command
    })
    .await
}

pub fn kinds(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .map(|e| format!("{:?}:{}:{}", e.kind(), e.command(), e.request_id()))
        .collect()
}

/// Closes and drains to CLOSED, asserting poll then reports the end.
pub async fn close_and_drain(c: &Client) -> Vec<Event> {
    c.close().expect("close");
    let (_, skipped) = until_kind(c, EventKind::Closed).await;
    assert!(matches!(c.poll(Some(Duration::ZERO)), Pop::Finished));
    skipped
}

/// Ids of buffered (negative id) MESSAGE events.
pub fn event_ids(evs: &[Event]) -> Vec<i64> {
    evs.iter()
        .filter(|e| e.kind() == EventKind::Message && e.request_id() < 0)
        .map(|e| e.request_id())
        .collect()
}

pub fn json(ev: &Event) -> serde_json::Value {
    serde_json::from_slice(ev.data()).expect("event data is JSON")
}

/// Asserts that no connection dropped among these events (a user close reports `Ok`).
pub fn assert_no_drop(evs: &[Event]) {
    let drops = evs
        .iter()
        .filter(|e| e.kind() == EventKind::Disconnected && e.status() != tether::Status::Ok)
        .count();
    assert_eq!(drops, 0, "{:?}", kinds(evs));
}

/// The directory of the in-process doubles (`tests/inproc/fake_gomuksffi.c`), built once per
/// test binary: `libfakegomuksffi.so`, `-nodownload.so` and `-go.so` (tests/inproc/build.sh).
pub fn fake_gomuksffi_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = root.join("target/fake-gomuksffi");
        let status = std::process::Command::new("bash")
            .arg(root.join("tests/inproc/build.sh"))
            .arg(&out)
            .status()
            .expect("run tests/inproc/build.sh");
        assert!(status.success(), "building the fake libgomuksffi failed");
        out
    })
}
