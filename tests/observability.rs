//! What a user can attach to a bug report: per-client statistics counted exactly (checked
//! against the testkit backend's own counters), the connection state, and log records for
//! each step of the connection's life (gomuks-rpc.md §1.2 auth, §7.2 resume, §9 close codes).

mod common;

use std::time::Duration;

use common::logs::{records, wait_log};
use common::*;
use tether::{Config, ConnectionState, EventKind, LogLevel, LogRecord, Status};

fn level_of(recs: &[LogRecord], text: &str) -> LogLevel {
    recs.iter()
        .find(|r| r.message.contains(text))
        .map(|r| r.level)
        .unwrap()
}

#[tokio::test]
async fn stats_match_what_the_backend_sent() {
    records();
    for compression in [true, false] {
        let b = backend().await;
        let c = client(&b, |c| c.compression(compression));
        assert_eq!(c.state(), ConnectionState::Connecting);
        until_command(&c, "init_complete").await;
        let newest = b.push_events(40);
        let (_, skipped) = until(&c, |e| e.request_id() == newest).await;
        let id = c.request("sleep", br#"{"ms":0}"#).unwrap();
        until(&c, |e| {
            e.kind() == EventKind::Response && e.request_id() == id
        })
        .await;
        let sent = b.stats();
        let s = c.stats();
        assert_eq!(c.state(), ConnectionState::Connected);
        assert_eq!((s.connect_attempts, s.connections), (1, 1));
        assert_eq!(
            s.messages_received, sent.messages_sent,
            "compression {compression}"
        );
        assert_eq!(s.payload_bytes_in, sent.payload_bytes_sent);
        // Framing, the upgrade response and (for compression) nothing else: the wire carries
        // a little more than the frames' payloads.
        assert!(s.wire_bytes_in > sent.frame_payload_bytes_sent);
        assert!(s.wire_bytes_in < sent.frame_payload_bytes_sent + 4096);
        if compression {
            assert!(s.wire_bytes_in < s.payload_bytes_in / 2, "{s:?}");
        }
        assert!(s.wire_bytes_out > 0);
        // Every server event the app took (the pushed ones and those skipped on the way).
        let taken = 1 + skipped
            .iter()
            .filter(|e| e.kind() == EventKind::Message)
            .count();
        assert!(s.events_received >= taken as u64, "{s:?}");
        assert_eq!(
            (s.requests_sent, s.requests_in_flight, s.requests_timed_out),
            (1, 0, 0)
        );
        assert!(s.connected_for.is_some());
        assert_eq!(s.queued_events, 0);
        close_and_drain(&c).await;
        assert_eq!(c.state(), ConnectionState::Closed);
        assert_eq!(c.stats().connected_for, None);
    }
}

#[tokio::test]
async fn stats_count_events_rtt_timeouts_and_queue_depth() {
    records();
    let b = backend().await;
    let c = client(&b, |c| c.ping_interval(Duration::from_millis(100)));
    until_command(&c, "init_complete").await;
    let before = c.stats().events_received;
    let newest = b.push_events(10);
    // Not taken yet: they wait in the queue.
    b.wait_for(|s| s.newest_id == newest, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.stats().events_received < before + 10 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(c.stats().queued_events >= 10);
    until(&c, |e| e.kind() == EventKind::Pong && e.rtt().is_some()).await;
    assert!(c.stats().last_rtt.is_some());
    let id = c
        .request_with_timeout("sleep", br#"{"ms":5000}"#, Duration::from_millis(50))
        .unwrap();
    let (r, _) = until(&c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    assert_eq!(r.status(), Status::ErrRequestTimeout);
    let s = c.stats();
    assert_eq!((s.requests_timed_out, s.requests_in_flight), (1, 0));
    close_and_drain(&c).await;
}

/// §6 pings: an app that stops taking events fills the queue, and the client stops reading
/// while its pings still go out; their pongs wait unread meanwhile, so they carry no round
/// trip rather than the app's own stall as the network's.
#[tokio::test]
async fn an_app_stall_is_not_counted_as_round_trip_time() {
    records();
    let b = backend().await;
    let c = client(&b, |c| {
        c.ping_interval(Duration::from_millis(100))
            .queue_capacity(8)
    });
    until_command(&c, "init_complete").await;
    until(&c, |e| e.kind() == EventKind::Pong && e.rtt().is_some()).await;
    b.push_events(100);
    // The app takes nothing for 2 s: the queue fills and the pings of that time wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = Duration::from_millis(1500);
    // Pongs read before the queue filled may come first, measured; then the stall's, with no
    // round trip; then measured ones again. None measured counts the stall.
    let (mut unmeasured, mut measured_after) = (0, 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while measured_after == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        let ev = next(&c).await;
        if ev.kind() != EventKind::Pong {
            continue;
        }
        match ev.rtt() {
            Some(rtt) => {
                assert!(rtt < stalled, "a pong after the stall: rtt {rtt:?}");
                if unmeasured > 0 {
                    measured_after += 1;
                }
            }
            None => unmeasured += 1,
        }
    }
    assert!(unmeasured > 0);
    let last = c.stats().last_rtt.unwrap();
    assert!(last < stalled, "last_rtt {last:?}");
    close_and_drain(&c).await;
}

/// §3: a reply after its request timed out is dropped, and the client's log says so (a
/// backend that answers late is what a bug report needs to show).
#[tokio::test]
async fn a_late_reply_is_logged_for_its_client() {
    records();
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    // A request whose deadline passes before the session picks it up is never written, so
    // the timeout leaves room for a loaded machine, and the reply comes well after it.
    let id = c
        .request_with_timeout("sleep", br#"{"ms":1500}"#, Duration::from_millis(300))
        .unwrap();
    let (r, _) = until(&c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    assert_eq!(r.status(), Status::ErrRequestTimeout);
    let recs = wait_log(c.id(), &format!("reply to request {id} ignored")).await;
    assert_eq!(
        level_of(&recs, &format!("reply to request {id} ignored")),
        LogLevel::Debug
    );
    close_and_drain(&c).await;
}

/// §7.2: a cut resumes (succeeded), a backend restart cannot (reset); both counted and logged.
#[tokio::test]
async fn resumes_succeeded_and_reset_are_counted_and_logged() {
    records();
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    b.push_events(3);
    let newest = b.push_events(1);
    until(&c, |e| e.request_id() == newest).await;
    b.cut_all();
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    until_command(&c, "init_complete").await;
    wait_log(c.id(), "resume succeeded").await;
    assert_eq!(
        (c.stats().resumes_succeeded, c.stats().resumes_reset),
        (1, 0)
    );

    b.restart();
    until_kind(&c, EventKind::Connected).await;
    until_command(&c, "init_complete").await;
    let recs = wait_log(c.id(), "resume failed").await;
    assert_eq!(level_of(&recs, "resume failed"), LogLevel::Warn);
    assert!(recs
        .iter()
        .any(|r| r.message.contains("asking to resume run")));
    let s = c.stats();
    assert_eq!((s.resumes_succeeded, s.resumes_reset), (1, 1));
    assert_eq!(s.connect_attempts, s.connections);
    assert!(s.connections >= 3);
    close_and_drain(&c).await;
}

/// A wrong password: the auth call's HTTP status and the end of the client, in the records.
#[tokio::test]
async fn log_records_say_why_a_login_failed() {
    records();
    let b = backend().await;
    let c = start(
        Config::builder(&b.http_url())
            .basic_auth("tether", "wrong")
            .build()
            .unwrap(),
    );
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrUnauthorized);
    let recs = wait_log(c.id(), "connection ended for good").await;
    let auth = recs
        .iter()
        .find(|r| r.message.contains("POST /_gomuks/auth to log in"))
        .expect("auth record");
    assert!(auth.message.contains("401"), "{}", auth.message);
    assert_eq!(auth.level, LogLevel::Warn);
    assert_eq!(
        level_of(&recs, "connection ended for good"),
        LogLevel::Error
    );
    // The login's HTTP status, not read as a websocket close code.
    let end = recs
        .iter()
        .find(|r| r.message.contains("connection ended for good"))
        .unwrap();
    assert!(end.message.contains("(HTTP 401)"), "{}", end.message);
    assert!(recs.iter().all(|r| !r.message.contains("wrong")));
    assert!(recs.iter().all(|r| r.target.starts_with("tether::")));
    close_and_drain(&c).await;
    assert_eq!(c.state(), ConnectionState::Closed);
}

/// A refused port: each attempt, its failure and the backoff chosen.
#[tokio::test]
async fn log_records_describe_attempts_and_backoff() {
    records();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = start(
        Config::builder(&format!("http://127.0.0.1:{port}"))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(50))
            .build()
            .unwrap(),
    );
    let recs = wait_log(c.id(), "attempt 2 failed").await;
    let connecting = recs
        .iter()
        .find(|r| r.message.contains("connecting to"))
        .unwrap();
    assert!(connecting
        .message
        .contains(&format!("127.0.0.1:{port}/_gomuks/websocket")));
    assert!(recs.iter().any(|r| r.message.contains("attempt 1 failed")
        && r.message.contains(&format!("127.0.0.1:{port}"))));
    assert!(recs.iter().any(|r| r.message.contains("reconnecting in")));
    let state = c.state();
    assert!(
        matches!(
            state,
            ConnectionState::Connecting | ConnectionState::Waiting
        ),
        "{state:?}"
    );
    close_and_drain(&c).await;
}

/// A server close code and the timings of a successful connect.
#[tokio::test]
async fn log_records_give_close_codes_and_timings() {
    records();
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let recs = wait_log(c.id(), "connected in").await;
    assert!(recs
        .iter()
        .any(|r| r.message.starts_with("TCP connected to 127.0.0.1:")));
    assert!(recs.iter().any(|r| r
        .message
        .contains("websocket upgrade to /_gomuks/websocket answered 101")));
    b.close_all(4001, "Event queue full");
    let recs = wait_log(c.id(), "close code 4001").await;
    assert_eq!(level_of(&recs, "close code 4001"), LogLevel::Info);
    until_kind(&c, EventKind::Connected).await;
    close_and_drain(&c).await;
    wait_log(c.id(), "client closed").await;
    wait_log(c.id(), "closed by the app (close code 1001)").await;
}

/// gomuks-rpc.md §8: a ping interval of 60 s or more is allowed (a test of the backend's 4002,
/// an app whose requests keep the connection busy) but warned about when the client connects,
/// since the backend closes a websocket that sent nothing for a minute; 59.999 s is not.
#[tokio::test]
async fn a_gomuks_ping_interval_past_the_backends_limit_is_warned_about() {
    records();
    let b = backend().await;
    let text = "is not below the backend's 60 s limit";
    for (ms, warned) in [(60_000, true), (59_999, false)] {
        let c = client(&b, |c| {
            c.ping_interval(Duration::from_millis(ms))
                .receive_timeout(Duration::from_secs(120))
        });
        let recs = wait_log(c.id(), "connected in").await;
        let found = recs.iter().find(|r| r.message.contains(text));
        assert_eq!(
            found.map(|r| r.level),
            warned.then_some(LogLevel::Warn),
            "{ms}"
        );
        close_and_drain(&c).await;
    }
}

/// rwws-binary.md §2.7: a `3003` (the server saw this client's pings stall) is logged loudly,
/// at WARN with what it means; another server close code that is retried stays at INFO.
#[tokio::test]
async fn rwws_3003_is_logged_as_a_warning() {
    records();
    let b = backend().await;
    let c = rwws_client(&b, |c| c);
    for code in [3005u16, 3003] {
        until_kind(&c, EventKind::Pong).await;
        b.rwws().close_all(code, "test");
        let text = format!("close code {code}");
        let recs = wait_log(c.id(), &text).await;
        let want = if code == 3003 {
            LogLevel::Warn
        } else {
            LogLevel::Info
        };
        assert_eq!(level_of(&recs, &text), want, "{code}");
        until_kind(&c, EventKind::Connected).await;
    }
    let recs = wait_log(c.id(), "pings stall").await;
    assert_eq!(level_of(&recs, "pings stall"), LogLevel::Warn);
    close_and_drain(&c).await;
}

/// rwws-binary.md §2.1: a text frame during the handshake is skipped (the client still
/// authenticates), and the note of it reaches the app's log sink with the client's id.
#[tokio::test]
async fn rwws_a_text_frame_in_the_handshake_is_logged_for_the_client() {
    records();
    let b = backend_with(|c| c.rwws.text_before_auth_reply = true).await;
    let c = rwws_client(&b, |c| c);
    until_kind(&c, EventKind::Connected).await;
    let text = "ignoring a text frame while waiting for the auth reply";
    let recs = wait_log(c.id(), text).await;
    assert_eq!(level_of(&recs, text), LogLevel::Debug);
    close_and_drain(&c).await;
}

/// rwws-binary.md §2.2 and §4: what the rwws parser notices reaches the app's log sink with
/// the client's id: a little-endian pong time at WARN (once per process, as the spec asks) and
/// a packet the library hands to the app at DEBUG.
#[tokio::test]
async fn rwws_notes_reach_the_log_sink() {
    records();
    let b = backend().await;
    let c = rwws_client(&b, |c| c);
    until_kind(&c, EventKind::Pong).await;
    b.rwws()
        .inject(tether_testkit::rwws::RwwsFault::LittleEndianPong);
    let recs = wait_log(c.id(), "little-endian").await;
    assert_eq!(level_of(&recs, "little-endian"), LogLevel::Warn);
    b.rwws()
        .inject(tether_testkit::rwws::RwwsFault::UnknownPacket);
    let recs = wait_log(c.id(), "handed to the app").await;
    assert_eq!(level_of(&recs, "handed to the app"), LogLevel::Debug);
    close_and_drain(&c).await;
}
