//! A phone's network life: pause and unpause in place, the app's reconnect cue, and a pong
//! deadline that notices a silent link long before the receive timeout (gomuks-rpc.md §7
//! resume, §8 keepalive).

mod common;

use std::time::{Duration, Instant};

use common::*;
use tether::{Config, ConnectionState, EventKind, Status};
use tether_testkit::proxy::Proxy;

/// §7.1, §7.2: a pause closes with 1000 (the backend keeps our entry), nothing reconnects
/// meanwhile, requests keep their timeouts, and unpausing resumes with every missed event
/// exactly once, on the same client and event stream.
#[tokio::test]
async fn spec7_pause_and_unpause_in_place_lose_nothing() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let before = b.push_events(3);
    until(&c, |e| e.request_id() == before).await;

    c.pause().unwrap();
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(
        (d.status(), d.close_code(), d.retry_in()),
        (Status::Ok, 1000, None)
    );
    assert_eq!(c.state(), ConnectionState::Paused);
    assert!(
        b.wait_for(|s| s.last_client_close_code == Some(1000), WAIT)
            .await
    );
    let missed = b.push_events(5);

    // Paused: a request's timeout still runs, and nothing reconnects.
    let t0 = Instant::now();
    let id = c
        .request_with_timeout("get_state", b"{}", Duration::from_millis(200))
        .unwrap();
    let (r, skipped) = until(&c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    assert_eq!(r.status(), Status::ErrRequestTimeout);
    assert!(t0.elapsed() < Duration::from_millis(1500));
    assert!(
        skipped.iter().all(|e| e.kind() != EventKind::Connecting),
        "{:?}",
        kinds(&skipped)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.state(), ConnectionState::Paused);
    assert_eq!(b.stats().total_connections, 1);
    c.unpause().unwrap(); // a second pause/unpause pair changes nothing
    c.unpause().unwrap();

    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    let (_, got) = until(&c, |e| e.request_id() == missed).await;
    let mut ids = event_ids(&got);
    ids.push(missed);
    assert_eq!(
        ids,
        ((missed..=before - 1).rev()).collect::<Vec<_>>(),
        "each missed event once, in order"
    );
    until_command(&c, "init_complete").await;
    let s = b.stats();
    assert_eq!((s.resumes, s.total_connections, s.connections), (1, 2, 1));
    close_and_drain(&c).await;
}

/// §7.1: a pause closes with the close handshake, and what the server sends before its close
/// reply reaches the app: a request the pause flushed gets its real RESPONSE, not DISCONNECTED
/// (outcome unknown), which an app retrying a send would have sent twice.
#[tokio::test]
async fn spec7_1_a_reply_arriving_while_a_pause_closes_is_delivered() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    // The server reads the request, and so answers it, before the close frame behind it.
    b.set_read_rate(Some(4096));
    let data = format!(r#"{{"x":"{}"}}"#, "a".repeat(2000));
    let id = c.request("echo", data.as_bytes()).unwrap();
    c.pause().unwrap();
    let (r, skipped) = until(&c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    let text = String::from_utf8_lossy(r.data());
    assert_eq!(r.status(), Status::Ok, "{text}");
    assert!(text == data, "not the echo: {} bytes", text.len());
    assert!(
        skipped.iter().all(|e| e.kind() != EventKind::Disconnected),
        "{:?}",
        kinds(&skipped)
    );
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!((d.status(), d.close_code()), (Status::Ok, 1000));
    close_and_drain(&c).await;
}

/// §7.1, §3.1: while a pause waits (up to 2 s) for a server's close reply that does not come,
/// a request's timeout still ends it on time, as REQUEST_TIMEOUT.
#[tokio::test]
async fn spec7_1_a_timeout_ends_on_time_while_a_pause_waits_for_the_close_reply() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    b.set_read_rate(Some(0));
    let t0 = Instant::now();
    let id = c
        .request_with_timeout("echo", b"{}", Duration::from_millis(300))
        .unwrap();
    c.pause().unwrap();
    let (r, skipped) = until(&c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    let took = t0.elapsed();
    assert_eq!(r.status(), Status::ErrRequestTimeout);
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(
        skipped.iter().all(|e| e.kind() != EventKind::Disconnected),
        "{:?}",
        kinds(&skipped)
    );
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::Ok);
    b.set_read_rate(None);
    close_and_drain(&c).await;
}

/// §7.1, §7.2: a pause whose close meets a full queue drops what arrives before the server's
/// close reply, uncounted, even once the app makes room meanwhile: one counted after a dropped
/// one would move the resume point past it for good (and a compressed stream cannot be
/// decoded past a gap). Unpaused, every event arrives exactly once, in order.
#[tokio::test]
async fn spec7_2_events_dropped_while_a_pause_closes_come_again_with_the_resume() {
    for compression in [false, true] {
        let b = backend().await;
        let c = client(&b, |c| c.compression(compression).queue_capacity(8));
        until_command(&c, "init_complete").await;
        let first = b.push_events(1);
        until(&c, |e| e.request_id() == first).await;
        b.push_events(16);
        until_queue_holds(&c, 8).await;
        // The server reads the close late, and sends what is pushed until then.
        b.set_read_rate(Some(50));
        c.pause().unwrap();
        let mut seen = Vec::new();
        let push = async {
            for _ in 0..15 {
                b.push_events(2);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        // The app makes room while the close runs.
        let read = async {
            let mut got = Vec::new();
            for _ in 0..8 {
                got.push(next(&c).await);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            got
        };
        let ((), got) = tokio::join!(push, read);
        seen.extend(got);
        let (_, rest) = until_kind(&c, EventKind::Disconnected).await;
        seen.extend(rest);
        b.set_read_rate(None);
        let newest = b.push_events(1);
        c.unpause().unwrap();
        let (_, rest) = until(&c, |e| e.request_id() == newest).await;
        seen.extend(rest);
        let mut ids = event_ids(&seen);
        ids.push(newest);
        assert_eq!(
            ids,
            (newest..first).rev().collect::<Vec<_>>(),
            "compression {compression}: each event once, in order"
        );
        close_and_drain(&c).await;
    }
}

/// A pause while the client waits out a backoff stops the attempts; unpause connects at once.
#[tokio::test]
async fn pause_while_waiting_stops_attempts_and_unpause_connects_now() {
    let b = backend().await;
    b.reject_upgrades(1);
    let c = client(&b, |c| {
        c.reconnect_backoff(Duration::from_secs(10), Duration::from_secs(10))
    });
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert!(d.retry_in().is_some());
    c.pause().unwrap();
    // No event says the pause was taken; the state does.
    let start = Instant::now();
    while c.state() != ConnectionState::Paused {
        assert!(start.elapsed() < WAIT, "{:?}", c.state());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = Instant::now();
    c.unpause().unwrap();
    until_kind(&c, EventKind::Connected).await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "did not wait out the 10 s backoff"
    );
    close_and_drain(&c).await;
}

/// An app that stops taking events (a backgrounded app in poll mode) while the server is
/// unreachable does not collect a CONNECTING and a DISCONNECTED per attempt for as long as the
/// outage lasts: once its queue is full the next attempt waits for room (no connection could
/// deliver anything meanwhile), and attempts go on once the app takes events again.
#[tokio::test]
async fn attempts_wait_for_room_while_the_app_takes_no_events() {
    // A port nothing listens on: every attempt is refused at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = start(
        Config::builder(&format!("http://127.0.0.1:{port}"))
            .queue_capacity(8)
            .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2))
            .build()
            .unwrap(),
    );
    until_queue_holds(&c, 8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = c.stats();
    assert!(
        held.queued_events <= 8 + 2,
        "{} events queued",
        held.queued_events
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.stats().connect_attempts,
        held.connect_attempts,
        "attempts went on while the queue was full"
    );
    // Taking events makes room, and the attempts go on.
    let mut disconnects = 0;
    while disconnects < 10 {
        if next(&c).await.kind() == EventKind::Disconnected {
            disconnects += 1;
        }
    }
    assert!(c.stats().connect_attempts > held.connect_attempts);
    close_and_drain(&c).await;
}

/// The reconnect cue while waiting in backoff connects at once, and never opens a second
/// connection.
#[tokio::test]
async fn reconnect_cue_in_backoff_connects_now() {
    let b = backend().await;
    b.reject_upgrades(1);
    let c = client(&b, |c| {
        c.reconnect_backoff(Duration::from_secs(10), Duration::from_secs(10))
    });
    until_kind(&c, EventKind::Disconnected).await;
    let t0 = Instant::now();
    c.reconnect_now().unwrap();
    until_kind(&c, EventKind::Connected).await;
    assert!(t0.elapsed() < Duration::from_secs(3));
    // Connected: a cue probes; the live link answers, so nothing else happens.
    c.reconnect_now().unwrap();
    c.reconnect_now().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = b.stats();
    assert_eq!((s.connections, s.total_connections), (1, 1));
    assert_eq!(c.state(), ConnectionState::Connected);
    let (ev, skipped) = until_kind(&c, EventKind::Pong).await;
    assert!(ev.rtt().is_some());
    assert!(skipped.iter().all(|e| e.kind() != EventKind::Disconnected));
    close_and_drain(&c).await;
}

/// Cues in quick succession (a flapping network's callbacks) while the probe's ping awaits its
/// pong send no second ping: that ping's answer is the verdict they ask for. One PONG comes,
/// and the link stays up.
#[tokio::test]
async fn reconnect_cues_while_a_probe_awaits_its_pong_send_one_ping() {
    let b = backend().await;
    let proxy = Proxy::start(b.addr()).await.unwrap();
    let c = client_at(&format!("http://{}", proxy.addr()), &b.token(), |c| {
        c.ping_interval(Duration::from_secs(25))
            .pong_timeout(Duration::from_secs(5))
    });
    until_command(&c, "init_complete").await;
    // Every chunk through the proxy waits 300 ms: the pong cannot beat the other cues.
    proxy.set_delay(Duration::from_millis(300));
    for _ in 0..20 {
        c.reconnect_now().unwrap();
    }
    until_kind(&c, EventKind::Pong).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut rest = Vec::new();
    c.drain(&mut rest, 1000);
    let kinds: Vec<EventKind> = rest.iter().map(|e| e.kind()).collect();
    // At most one more: a message arriving between two cues answers the first probe, and
    // the next cue then probes anew. Without this, each of the 20 cues sent its own ping.
    let pongs = kinds.iter().filter(|k| **k == EventKind::Pong).count();
    assert!(pongs <= 1, "{} pings for 20 cues: {kinds:?}", pongs + 1);
    assert!(!kinds.contains(&EventKind::Disconnected), "{kinds:?}");
    close_and_drain(&c).await;
}

/// The cue on a link that went silent: the probe goes unanswered within the pong timeout
/// and the client reconnects at once (no backoff), resuming.
#[tokio::test]
async fn reconnect_cue_on_a_silent_link_reconnects_at_once() {
    let b = backend().await;
    let proxy = Proxy::start(b.addr()).await.unwrap();
    let c = client_at(&format!("http://{}", proxy.addr()), &b.token(), |c| {
        c.pong_timeout(Duration::from_millis(300))
            .reconnect_backoff(Duration::from_secs(10), Duration::from_secs(10))
    });
    until_command(&c, "init_complete").await;
    let newest = b.push_events(1);
    until(&c, |e| e.request_id() == newest).await;
    proxy.set_blackhole(true);
    let t0 = Instant::now();
    c.reconnect_now().unwrap();
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    let took = t0.elapsed();
    assert_eq!(d.status(), Status::ErrReceiveTimeout);
    assert_eq!(
        d.retry_in(),
        Some(Duration::ZERO),
        "the app's cue skips the backoff"
    );
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "{took:?}"
    );
    proxy.set_blackhole(false);
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    close_and_drain(&c).await;
}

/// The cue while the app has fallen behind (a phone back in the foreground with a full
/// event queue): the probe's deadline waits for the app to make room, then runs from there,
/// so a dead link still ends at once instead of at the next keepalive ping.
#[tokio::test]
async fn reconnect_cue_with_a_full_queue_still_probes() {
    let b = backend().await;
    let proxy = Proxy::start(b.addr()).await.unwrap();
    let c = client_at(&format!("http://{}", proxy.addr()), &b.token(), |c| {
        c.compression(false)
            .queue_capacity(8)
            .ping_interval(Duration::from_secs(25))
            .pong_timeout(Duration::from_millis(300))
            .reconnect_backoff(Duration::from_secs(10), Duration::from_secs(10))
    });
    until_command(&c, "init_complete").await;
    while matches!(
        c.poll(Some(Duration::from_millis(200))),
        tether::Pop::Event(_)
    ) {}
    b.push_events(8);
    until_queue_holds(&c, 8).await;
    proxy.set_blackhole(true);
    c.reconnect_now().unwrap();
    // Longer than the pong timeout, with the queue still full: no reading, no verdict.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(c.state(), ConnectionState::Connected);
    let t0 = Instant::now();
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    let took = t0.elapsed();
    assert_eq!(d.status(), Status::ErrReceiveTimeout);
    assert_eq!(d.retry_in(), Some(Duration::ZERO), "the app's cue");
    assert!(took < Duration::from_secs(3), "{took:?}");
    proxy.set_blackhole(false);
    close_and_drain(&c).await;
}

/// ARCHITECTURE.md "The event queue": an app that fell behind for longer than the receive
/// timeout is not cut when it makes room, even when a command reaches the session in the same
/// turn (the receive timeout restarts at the first turn with room, whichever branch woke it).
#[tokio::test]
async fn room_made_together_with_a_command_restarts_the_receive_timeout() {
    let b = backend().await;
    let c = client(&b, |c| {
        c.compression(false)
            .queue_capacity(8)
            .ping_interval(Duration::from_millis(100))
            // Pongs come every 100 ms; the rest is room for a runtime busy with another test.
            .receive_timeout(Duration::from_millis(400))
            .reconnect_backoff(Duration::from_secs(10), Duration::from_secs(10))
    });
    until_command(&c, "init_complete").await;
    // Waits without blocking the runtime that serves the backend.
    let event_within = |ms| tokio::time::timeout(Duration::from_millis(ms), c.next_event());
    for round in 0..12 {
        while let Ok(Some(e)) = event_within(50).await {
            assert_ne!(e.kind(), EventKind::Disconnected, "round {round}");
        }
        b.push_events(16);
        until_queue_holds(&c, 8).await;
        // Behind for longer than the receive timeout, then room and a request at once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tether::Pop::Event(_) = c.poll(Some(Duration::ZERO)) else {
            panic!("the queue was full")
        };
        c.request("echo", b"1").unwrap();
        let deadline = Instant::now() + Duration::from_millis(600);
        while Instant::now() < deadline {
            if let Ok(Some(e)) = event_within(20).await {
                assert_ne!(
                    e.kind(),
                    EventKind::Disconnected,
                    "round {round}: {}",
                    String::from_utf8_lossy(e.data())
                );
            }
        }
    }
    assert_eq!(b.stats().total_connections, 1);
    close_and_drain(&c).await;
}

/// ARCHITECTURE.md "The event queue": while the app is behind, the session stops reading,
/// and a server blocked writing to us may stop reading too. Its silence on our writes is then
/// ours, as its silence on reads is: the write-stall clock is frozen like the receive timeout
/// and the pong deadline, instead of cutting the link after `receive_timeout`.
#[tokio::test]
async fn a_write_stall_while_the_app_is_behind_is_not_the_servers() {
    let b = backend_with(|c| c.recv_buffer = Some(16 * 1024)).await;
    let c = client(&b, |c| {
        c.compression(false)
            .queue_capacity(8)
            .ping_interval(Duration::from_secs(1))
            .receive_timeout(Duration::from_secs(2))
            .reconnect_backoff(Duration::from_secs(10), Duration::from_secs(10))
    });
    until_command(&c, "init_complete").await;
    // The app falls behind, and the server reads nothing of ours meanwhile.
    b.push_events(16);
    until_queue_holds(&c, 8).await;
    b.set_read_rate(Some(0));
    // More than the kernel's buffers take, so the outbox stays busy and no byte moves.
    let body = format!("\"{}\"", "x".repeat(60 * 1024));
    for _ in 0..150 {
        c.request_with_timeout("echo", body.as_bytes(), WAIT)
            .unwrap();
    }
    let out = c.stats().wire_bytes_out;
    // Behind for longer than the receive timeout, which is also the write-stall limit.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        c.stats().wire_bytes_out,
        out,
        "the outbox was not stuck: the test proves nothing"
    );
    assert_eq!(c.state(), ConnectionState::Connected);
    assert_eq!(b.stats().total_connections, 1);
    b.set_read_rate(None);
    close_and_drain(&c).await;
}

/// §8: without any cue, a ping that goes unanswered ends a silent link within the ping
/// interval plus the pong timeout, long before the 60 s receive timeout.
#[tokio::test]
async fn spec8_pong_deadline_notices_a_silent_link() {
    let b = backend().await;
    let proxy = Proxy::start(b.addr()).await.unwrap();
    let c = client_at(&format!("http://{}", proxy.addr()), &b.token(), |c| {
        c.ping_interval(Duration::from_millis(200))
            .pong_timeout(Duration::from_millis(300))
            .receive_timeout(Duration::from_secs(60))
    });
    until_command(&c, "init_complete").await;
    proxy.set_blackhole(true);
    let t0 = Instant::now();
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    let took = t0.elapsed();
    assert_eq!(
        d.status(),
        Status::ErrReceiveTimeout,
        "{}",
        String::from_utf8_lossy(d.data())
    );
    assert!(String::from_utf8_lossy(d.data()).contains("no answer to a ping within 300 ms"));
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(
        d.retry_in().unwrap() > Duration::ZERO,
        "no cue: the backoff applies"
    );
    proxy.set_blackhole(false);
    close_and_drain(&c).await;
}

/// RFC 8305 §5 under the connect timeout: a server whose address never answers (a broken
/// route, a firewall dropping packets) ends the attempt at the connect timeout, and the
/// DISCONNECTED event names the address that stayed silent, for the app's report.
#[tokio::test]
async fn rfc8305_5_a_connect_that_never_answers_names_the_address() {
    let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
    let c = client_at(&format!("http://{}", hole.addr()), "token", |c| {
        c.connect_timeout(Duration::from_millis(400))
    });
    let t0 = Instant::now();
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    let took = t0.elapsed();
    let why = String::from_utf8_lossy(d.data()).into_owned();
    assert_eq!(d.status(), Status::ErrConnect, "{why}");
    let silent = format!("connect to {0}: no answer from {0} in ", hole.addr());
    assert!(why.starts_with(&silent) && why.ends_with(" ms"), "{why}");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    close_and_drain(&c).await;
}

/// RFC 8305 §5 under the connect timeout, for the gomuks login (spec §1.2): its connection
/// is raced and reported as the websocket's, so a silent server is named by address rather
/// than reported as a login that timed out. A slow proxy resolver (200 ms, answering
/// "direct") does not take its time from the connect, which starts once the route is known.
#[tokio::test]
async fn rfc8305_5_a_login_that_never_connects_names_the_address() {
    let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
    let cfg = Config::builder(&format!("http://{}", hole.addr()))
        .basic_auth("user", "password")
        .proxy_resolver(|_| {
            std::thread::sleep(Duration::from_millis(200));
            Ok(Some("direct".to_owned()))
        })
        .connect_timeout(Duration::from_millis(400))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let c = start(cfg);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    let took = t0.elapsed();
    let why = String::from_utf8_lossy(d.data()).into_owned();
    assert_eq!(d.status(), Status::ErrConnect, "{why}");
    let silent = format!(
        "auth request: connect to {0}: no answer from {0} in ",
        hole.addr()
    );
    assert!(why.starts_with(&silent) && why.ends_with(" ms"), "{why}");
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    close_and_drain(&c).await;
}

/// A server that takes the TCP connection and then says nothing (a stuck TLS terminator, a
/// proxy in front of a dead backend): the step it left unanswered, TLS or the websocket
/// upgrade, is named with the server at the connect timeout, not reported as a generic
/// timeout at twice that.
#[tokio::test]
async fn a_server_silent_after_the_connect_is_named_with_the_step() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tether_testkit::blackhole::hold_silently(silent);
    for (scheme, step) in [
        ("wss", "the TLS handshake"),
        ("ws", "the websocket upgrade"),
    ] {
        let c = client_at(
            &format!("{scheme}://{addr}/_gomuks/websocket"),
            "token",
            |c| {
                c.connect_timeout(Duration::from_millis(400))
                    .allow_insecure_credentials(true)
            },
        );
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        let why = String::from_utf8_lossy(d.data()).into_owned();
        assert_eq!(d.status(), Status::ErrConnect, "{why}");
        // Not "connect timed out", the attempt's own limit at twice the connect timeout.
        assert_eq!(why, format!("no answer to {step} from {addr} in 400 ms"));
        close_and_drain(&c).await;
    }
    held.abort();
}

/// A slow link is not a dead one: bytes still arriving keep the connection, even when no
/// whole message (and so no pong) gets through within the pong timeout.
#[tokio::test]
async fn spec8_a_slow_link_is_not_dead() {
    let b = backend().await;
    let proxy = Proxy::start(b.addr()).await.unwrap();
    let c = client_at(&format!("http://{}", proxy.addr()), &b.token(), |c| {
        c.ping_interval(Duration::from_millis(100))
            .pong_timeout(Duration::from_millis(150))
            .compression(false)
    });
    until_command(&c, "init_complete").await;
    // Every chunk waits 40 ms and carries one byte: a message takes far longer than the
    // pong timeout to arrive whole, but bytes keep coming.
    proxy.set_slice(Some(1));
    proxy.set_delay(Duration::from_millis(40));
    let newest = b.push_events(1);
    let (_, skipped) = until(&c, |e| e.request_id() == newest).await;
    assert!(
        skipped.iter().all(|e| e.kind() != EventKind::Disconnected),
        "{:?}",
        kinds(&skipped)
    );
    proxy.set_delay(Duration::ZERO);
    proxy.set_slice(None);
    close_and_drain(&c).await;
}

#[test]
fn pause_and_cues_on_a_closed_client_are_refused() {
    let c = tether::Client::new(
        tether::Config::builder("ws://127.0.0.1:9/")
            .build()
            .unwrap(),
    );
    c.close().unwrap();
    for r in [c.pause(), c.unpause(), c.reconnect_now()] {
        assert_eq!(r.unwrap_err().status(), Status::ErrState);
    }
    assert!(tether::Config::builder("ws://127.0.0.1:9/")
        .pong_timeout(Duration::ZERO)
        .build()
        .is_err());
}

/// §8 behind a slow uplink: a ping written after a large send waits in our own send buffer
/// until the link has carried the send, which takes longer than the pong timeout (and the
/// receive timeout). While the server keeps taking our bytes, neither deadline cuts the link
/// and the send's reply arrives; once the server takes none, the link is cut as before.
#[tokio::test]
async fn spec8_a_ping_behind_our_own_backlog_is_not_a_silent_server() {
    let b = backend_with(|c| c.recv_buffer = Some(16 * 1024)).await;
    let c = client(&b, |c| {
        c.compression(false)
            .ping_interval(Duration::from_millis(400))
            // Wide enough that a test runner starving the server's reads for a moment under
            // load does not look like a peer that stopped taking our bytes.
            .pong_timeout(Duration::from_millis(600))
            .receive_timeout(Duration::from_millis(1500))
            .reconnect_backoff(Duration::from_secs(10), Duration::from_secs(10))
    });
    until_command(&c, "init_complete").await;
    // About 3 s for the link to carry: five pong timeouts, two receive timeouts.
    b.set_read_rate(Some(300 * 1024));
    let big = format!("\"{}\"", "x".repeat(900 * 1024));
    let t0 = Instant::now();
    let id = c
        .request_with_timeout("echo", big.as_bytes(), WAIT)
        .unwrap();
    let (r, seen) = until(&c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    let took = t0.elapsed();
    if r.status() != Status::Ok {
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        panic!("the link was cut: {}", String::from_utf8_lossy(d.data()));
    }
    assert_eq!(r.data().len(), big.len());
    assert!(
        took > Duration::from_secs(2),
        "the uplink was not slow: {took:?}"
    );
    assert!(
        seen.iter().all(|e| e.kind() != EventKind::Disconnected),
        "{:?}",
        kinds(&seen)
    );
    assert_eq!(b.stats().total_connections, 1);

    // A server that stops reading: the backlog no longer moves, and the pong deadline ends it.
    b.set_read_rate(Some(0));
    c.request_with_timeout("echo", big.as_bytes(), WAIT)
        .unwrap();
    let t0 = Instant::now();
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    let took = t0.elapsed();
    let why = String::from_utf8_lossy(d.data());
    assert_eq!(d.status(), Status::ErrReceiveTimeout, "{why}");
    assert!(why.contains("ping"), "{why}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    b.set_read_rate(None);
    close_and_drain(&c).await;
}
