//! gomuks dialect over real sockets against the testkit backend.
//! Each test names the section of docs/protocol/gomuks-rpc.md it checks.

mod common;

use std::time::Duration;

use common::*;
use tether::{Client, Config, EventKind, Pop, Status};
use tether_testkit::proxy::Proxy;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Cuts `c`'s connection to `b` and waits for it to connect again, refused by no 401.
async fn reconnects_without_a_401(b: &tether_testkit::gomuks::Backend, c: &Client) {
    b.cut_all();
    let (_, seen) = until_kind(c, EventKind::Connected).await;
    assert!(
        seen.iter().all(|e| e.status() != Status::ErrUnauthorized),
        "{:?}",
        kinds(&seen)
    );
}

/// The DISCONNECTED events among `seen`.
fn disconnects(seen: &[tether::Event]) -> impl Iterator<Item = &tether::Event> {
    seen.iter().filter(|e| e.kind() == EventKind::Disconnected)
}

/// A started client of `b` that retries within 10-50 ms; `f` gives it its credentials.
fn quick_retries(
    b: &tether_testkit::gomuks::Backend,
    f: impl FnOnce(tether::ConfigBuilder) -> tether::ConfigBuilder,
) -> Client {
    start(
        f(Config::builder(&b.http_url()))
            .reconnect_backoff(ms(10), ms(50))
            .build()
            .unwrap(),
    )
}

/// §1.2 + §6.1: cookie auth, then run_id, client_state, sync_status, the initial sync with
/// clear_state and init_complete, all as MESSAGE events with request_id 0.
#[tokio::test]
async fn spec1_2_and_6_1_cookie_auth_and_startup_sequence() {
    let b = backend().await;
    let c = client(&b, |c| c);
    let (connecting, _) = until_kind(&c, EventKind::Connecting).await;
    assert!(!connecting.resume_attempted());
    let (ev, _) = until_kind(&c, EventKind::Connected).await;
    assert!(!ev.resume_attempted());
    let (init, skipped) = until_command(&c, "init_complete").await;
    assert_eq!(init.request_id(), 0);
    let names: Vec<&str> = skipped.iter().map(|e| e.command()).collect();
    for want in ["run_id", "client_state", "sync_status", "sync_complete"] {
        assert!(names.contains(&want), "missing {want} in {names:?}");
    }
    let sync = skipped
        .iter()
        .find(|e| e.command() == "sync_complete")
        .unwrap();
    assert_eq!(json(sync)["clear_state"], true);
    let st = c.resume_state();
    assert_eq!(st.run_id, b.stats().run_id);
    close_and_drain(&c).await;
}

/// §1.2: username/password through POST /_gomuks/auth, then the cookie on the upgrade.
#[tokio::test]
async fn spec1_2_basic_auth_through_auth_endpoint() {
    let b = backend().await;
    let cfg = Config::builder(&b.http_url())
        .basic_auth("tether", "tether-password")
        .build()
        .unwrap();
    let c = start(cfg);
    until_command(&c, "run_id").await;
    close_and_drain(&c).await;
}

/// §1.2: wrong password → UNAUTHORIZED, no retry loop, then CLOSED.
#[tokio::test]
async fn spec1_2_wrong_password_stops_with_unauthorized() {
    let b = backend().await;
    let cfg = Config::builder(&b.http_url())
        .basic_auth("tether", "wrong-pass-SECRET")
        .build()
        .unwrap();
    assert!(!format!("{cfg:?}").contains("SECRET"));
    let c = start(cfg);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrUnauthorized);
    let text = String::from_utf8_lossy(d.data());
    assert!(
        !text.contains("SECRET") && !text.contains("d3Jvbmc"),
        "no password (or its base64) in {text}"
    );
    assert_eq!(d.retry_in(), None);
    assert_eq!(next(&c).await.kind(), EventKind::Closed);
    assert_eq!(b.stats().total_connections, 0);
}

/// §1.2 with the close contract: a client that stops for good on its own (here, a wrong
/// password) ends the requests still waiting with CLIENT_CLOSED after its DISCONNECTED, as a
/// close does, and says why: the app did not close it, the server refused the login. A
/// refusal by the send budget before brings no SEND_READY: nothing can be sent any more.
#[tokio::test]
async fn spec1_2_requests_waiting_when_the_client_gives_up_say_why() {
    let b = backend().await;
    let c = Client::new(
        Config::builder(&b.http_url())
            .basic_auth("tether", "wrong-pass")
            .max_unsent_bytes(100)
            .build()
            .unwrap(),
    );
    let body = br#"{"pad":"xxxxxxxxxxxxxxxxxxxx"}"#;
    let id = c.request("echo", body).unwrap();
    assert_eq!(
        c.request("echo", body).unwrap_err().status(),
        Status::ErrSendBufferFull
    );
    c.connect().unwrap();
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrUnauthorized);
    let r = next(&c).await;
    assert_eq!(
        (r.kind(), r.request_id(), r.status()),
        (EventKind::Response, id, Status::ErrClientClosed)
    );
    let why: String = serde_json::from_slice(r.data()).unwrap();
    assert!(
        why.contains("stopped for good") && why.contains(Status::ErrUnauthorized.description()),
        "{why}"
    );
    assert!(why.contains(&*String::from_utf8_lossy(d.data())), "{why}");
    assert_eq!(next(&c).await.kind(), EventKind::Closed);
}

/// §1.2: an invalid cookie is a 401 at the upgrade; with only a token there is nobody to
/// re-authenticate, so the client stops with UNAUTHORIZED.
#[tokio::test]
async fn spec1_2_invalid_cookie_is_unauthorized() {
    let b = backend().await;
    let c = client_at(&b.http_url(), "not-a-valid-token-SECRET", |c| c);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrUnauthorized);
    assert!(
        !String::from_utf8_lossy(d.data()).contains("SECRET"),
        "the token never appears in errors"
    );
    assert_eq!(d.close_code(), 401);
    assert_eq!(next(&c).await.kind(), EventKind::Closed);
    // Ended by the server: requests are refused, the app's own close is accepted once and
    // adds nothing after CLOSED (tether.h, tether_client_close).
    assert_eq!(
        c.request("ping", b"{}").unwrap_err().status(),
        Status::ErrState
    );
    c.close().unwrap();
    assert_eq!(c.close().unwrap_err().status(), Status::ErrState);
    assert!(matches!(c.poll(Some(Duration::ZERO)), Pop::Finished));
}

/// §16 step 1: HTTP 401 at the upgrade → re-authenticate once with the password, then connect.
#[tokio::test]
async fn spec16_reauth_once_after_401() {
    let b = backend().await;
    let cfg = Config::builder(&b.http_url())
        .token("stale.token")
        .basic_auth("tether", "tether-password")
        .build()
        .unwrap();
    let c = start(cfg);
    let (_, skipped) = until_command(&c, "run_id").await;
    assert_no_drop(&skipped);
    close_and_drain(&c).await;
}

/// §3.1/§3.2: responses are matched by id even out of order.
#[tokio::test]
async fn spec3_responses_matched_by_id_out_of_order() {
    let b = backend().await;
    let c = client(&b, |c| c);
    let slow = c.request("sleep", br#"{"ms":300}"#).unwrap();
    let fast = c.request("echo", br#"{"hello":[1,2,3]}"#).unwrap();
    assert!(fast > slow && slow > 0);
    let (r1, _) = until_kind(&c, EventKind::Response).await;
    let (r2, _) = until_kind(&c, EventKind::Response).await;
    assert_eq!(
        r1.request_id(),
        fast,
        "the fast reply overtakes the slow one"
    );
    assert_eq!(r1.status(), Status::Ok);
    assert_eq!(
        r1.data(),
        br#"{"hello":[1,2,3]}"#,
        "data is the raw JSON, untouched"
    );
    assert_eq!(r2.request_id(), slow);
    assert!(r2.data_is_null());
    close_and_drain(&c).await;
}

/// §3.4: an `error` reply fails the request with REMOTE and the message as a JSON string.
#[tokio::test]
async fn spec3_4_unknown_command_is_remote_error() {
    let b = backend().await;
    let c = client(&b, |c| c);
    let id = c.request("no_such_command", b"{}").unwrap();
    let (r, _) = until_kind(&c, EventKind::Response).await;
    assert_eq!(r.request_id(), id);
    assert_eq!(r.status(), Status::ErrRemote);
    let msg: String = serde_json::from_slice(r.data()).unwrap();
    assert!(msg.contains("unknown command"), "{msg}");
    let err = c.call("no_such_command", b"").await.unwrap_err();
    assert_eq!(err.status(), Status::ErrRemote);
    assert!(err.message().contains("unknown command"));
    close_and_drain(&c).await;
}

/// §3.5: a request past its timeout fails with REQUEST_TIMEOUT and a `cancel` is sent; an
/// explicit cancel fails it with CANCELLED. Late replies are ignored.
#[tokio::test]
async fn spec3_5_timeout_and_cancel() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "run_id").await;
    let t = c
        .request_with_timeout("sleep", br#"{"ms":5000}"#, ms(200))
        .unwrap();
    let (r, _) = until_kind(&c, EventKind::Response).await;
    assert_eq!((r.request_id(), r.status()), (t, Status::ErrRequestTimeout));
    assert!(
        b.wait_for(|s| s.cancels == 1, WAIT).await,
        "no cancel after the timeout: the backend got {}",
        b.stats().cancels
    );
    let x = c.request("sleep", br#"{"ms":5000}"#).unwrap();
    tokio::time::sleep(ms(50)).await;
    c.cancel(x).unwrap();
    let (r, _) = until_kind(&c, EventKind::Response).await;
    assert_eq!((r.request_id(), r.status()), (x, Status::ErrCancelled));
    assert!(
        b.wait_for(|s| s.cancels == 2, WAIT).await,
        "no cancel after cancel(): the backend got {}",
        b.stats().cancels
    );
    // The connection is still fine and no stray RESPONSE follows for the cancelled ids.
    let e = c.request("echo", b"1").unwrap();
    let (r, _) = until_kind(&c, EventKind::Response).await;
    assert_eq!((r.request_id(), r.data()), (e, &b"1"[..]));
    assert_eq!(
        c.cancel(-5).unwrap_err().status(),
        Status::ErrInvalidArgument
    );
    close_and_drain(&c).await;
}

async fn stream_in_order(compress: bool) {
    let b = backend().await;
    let c = client(&b, |c| c.compression(compress));
    until_command(&c, "init_complete").await;
    let newest = b.push_events(300);
    let mut got = Vec::new();
    while got.last() != Some(&newest) {
        let ev = next(&c).await;
        if ev.kind() == EventKind::Message && ev.request_id() < 0 {
            json(&ev);
            got.push(ev.request_id());
        }
    }
    let want: Vec<i64> = (newest..newest + 300).rev().collect();
    assert_eq!(got, want);
    assert_eq!(c.resume_state().last_received_event, newest);
    close_and_drain(&c).await;
}

/// §5: compressed (raw deflate, batched) stream: every event once, in order.
#[tokio::test]
async fn spec5_compressed_stream_in_order() {
    stream_in_order(true).await;
}

/// §3.2: uncompressed text frames: every event once, in order.
#[tokio::test]
async fn spec3_2_uncompressed_stream_in_order() {
    stream_in_order(false).await;
}

/// §5: batched compressed messages far larger than one event (up to 256 KiB here, events of
/// 300 B to 12 KB): every event a compressed client holds until the end keeps exactly the
/// bytes an uncompressed client got for it, while later messages are inflated.
#[tokio::test]
async fn spec5_held_events_of_large_compressed_batches_keep_their_bytes() {
    let b = backend_with(|c| c.event_size = (300, 12_000)).await;
    let z = client(&b, |c| c.compression(true));
    let plain = client(&b, |c| c.compression(false));
    until_command(&z, "init_complete").await;
    until_command(&plain, "init_complete").await;
    let newest = b.push_events(300);
    let mut got = Vec::new();
    for c in [&z, &plain] {
        let mut held = Vec::new();
        while held.last().map(tether::Event::request_id) != Some(newest) {
            let ev = next(c).await;
            if ev.kind() == EventKind::Message && ev.request_id() < 0 {
                held.push(ev);
            }
        }
        got.push(held);
    }
    assert_eq!(got[0].len(), 300);
    // Batched: on average a compressed message decoded to more than 64 KiB, so some were
    // larger than the decoder hands over in place.
    let st = z.stats();
    assert!(
        st.payload_bytes_in / st.messages_received > 64 * 1024,
        "{st:?}"
    );
    for (a, b) in got[0].iter().zip(&got[1]) {
        assert_eq!(a.request_id(), b.request_id());
        assert_eq!(a.data(), b.data(), "event {}", a.request_id());
    }
    close_and_drain(&z).await;
    close_and_drain(&plain).await;
}

/// §7.2/§6.3: after a cut, the client resumes with run_id + last_received_event and gets
/// exactly the missed events, then init_complete, without clear_state. CONNECTING, CONNECTED
/// and DISCONNECTED each say whether their connection asked to resume.
#[tokio::test]
async fn spec7_2_resume_after_cut_replays_missed_events() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let first = b.push_events(10);
    let (_, _) = until(&c, |e| e.request_id() == first).await;
    b.cut_all();
    let newest = b.push_events(25);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert!(d.retry_in().is_some());
    assert_eq!(
        (d.status(), d.close_code()),
        (Status::ErrConnect, 0),
        "a cut is a connection loss"
    );
    assert!(
        !d.resume_attempted(),
        "the first connection asked for no resume"
    );
    let (connecting, _) = until_kind(&c, EventKind::Connecting).await;
    assert!(connecting.resume_attempted());
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    let (_, skipped) = until_command(&c, "init_complete").await;
    assert_eq!(
        event_ids(&skipped),
        (newest..first).rev().collect::<Vec<_>>()
    );
    assert!(!skipped
        .iter()
        .any(|e| e.command() == "sync_complete" && json(e)["clear_state"] == true));
    assert!(b.stats().resumes >= 1);
    b.cut_all();
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert!(d.resume_attempted(), "the resumed connection ended");
    close_and_drain(&c).await;
}

/// §7.2/§7.4: the resume state counts only the events the app has taken. Events the client
/// has read but still queues are lost with it when it is dropped, so a later client resuming
/// from that state must receive them. Pings acknowledge what was read: once one has
/// acknowledged them, the backend may have let them go, and the later client's resume then
/// fails (RESET) instead of leaving a silent gap.
#[tokio::test]
async fn spec7_2_events_queued_when_the_client_is_dropped_come_back_to_the_next_client() {
    for acked in [false, true] {
        let b = backend().await;
        // The default ping interval (15 s) sends no ack during the test.
        let c = client(&b, |c| if acked { c.ping_interval(ms(50)) } else { c });
        until_command(&c, "init_complete").await;
        let taken = b.push_events(3);
        until(&c, |e| e.request_id() == taken).await;
        let queued = b.push_events(5);
        let deadline = tokio::time::Instant::now() + WAIT;
        while c.queued_events() < 5 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the events never arrived"
            );
            tokio::time::sleep(ms(10)).await;
        }
        if acked {
            assert!(b.wait_for(|s| s.last_ack == queued, WAIT).await);
        }
        let state = c.resume_state();
        assert_eq!(state.last_received_event, taken);
        drop(c);
        let more = b.push_events(2);
        let c2 = client(&b, |c| {
            c.resume_state(&state.run_id, state.last_received_event)
        });
        let (resumed, got) = until_kind(&c2, EventKind::Resumed).await;
        if acked {
            assert_eq!(resumed.resume_outcome(), Some(tether::ResumeOutcome::Reset));
        } else {
            assert_eq!(
                resumed.resume_outcome(),
                Some(tether::ResumeOutcome::Succeeded)
            );
            assert_eq!(
                event_ids(&got),
                (more..=queued + 4).rev().collect::<Vec<_>>()
            );
        }
        close_and_drain(&c2).await;
    }
}

/// §7.2: a saved point the backend's run never reached (a corrupt save) gets a fresh start.
/// The client then forgets it: kept, it would be asked for again after the next cut, once the
/// backend's ids had passed it, and the backend would replay only what follows it.
#[tokio::test]
async fn spec7_2_a_point_the_run_never_reached_is_forgotten_after_the_fresh_start() {
    let b = backend().await;
    let run = b.stats().run_id;
    let c = client(&b, |c| {
        c.resume_state(&run, -50).reconnect_backoff(ms(10), ms(50))
    });
    let (r, _) = until_kind(&c, EventKind::Resumed).await;
    assert_eq!(r.resume_outcome(), Some(tether::ResumeOutcome::Reset));
    until_command(&c, "init_complete").await;
    let live = b.push_events(40);
    until(&c, |e| e.request_id() == live).await;
    assert_eq!(c.resume_state().last_received_event, live);
    b.reject_upgrades(u64::MAX);
    b.cut_all();
    until_kind(&c, EventKind::Disconnected).await;
    let newest = b.push_events(15);
    b.reject_upgrades(0);
    let (r, seen) = until_kind(&c, EventKind::Resumed).await;
    assert_eq!(r.resume_outcome(), Some(tether::ResumeOutcome::Succeeded));
    let (_, more) = until_command(&c, "init_complete").await;
    let seen: Vec<_> = seen.into_iter().chain(more).collect();
    assert_eq!(event_ids(&seen), (newest..live).rev().collect::<Vec<_>>());
    close_and_drain(&c).await;
}

/// §7.2/§16: a buffered event over `max_message_bytes` comes back with every resume and
/// ends every connection. Each ending says why (`ErrMessageTooLarge`, naming the limit), and
/// the backoff grows instead of starting over after each short connection: no reconnect storm,
/// and nothing skipped (the resume point stays before the event, for a client with a larger
/// limit).
#[tokio::test]
async fn spec7_2_an_event_over_the_size_limit_backs_off_instead_of_looping() {
    let b = backend().await;
    let c = client(&b, |c| {
        c.compression(false)
            .max_message_bytes(4096)
            .reconnect_backoff(ms(10), ms(5000))
    });
    until_command(&c, "init_complete").await;
    let before = b.push_events(1);
    until(&c, |e| e.request_id() == before).await;
    b.push_event("big", serde_json::json!({ "text": "x".repeat(8000) }));
    let mut delays = Vec::new();
    while delays.len() < 6 {
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        assert_eq!(d.status(), Status::ErrMessageTooLarge);
        let why = String::from_utf8_lossy(d.data()).into_owned();
        assert!(why.contains("max_message_bytes"), "{why}");
        delays.push(d.retry_in().expect("retried").as_millis());
    }
    // Drawn from [min/2, min] of a step that doubles: the sixth is at least 160 ms; without
    // the growth every one is at most 10 ms.
    assert!(delays[5] >= 160, "{delays:?}");
    assert_eq!(c.resume_state().last_received_event, before);
    close_and_drain(&c).await;
}

/// §7.3/§7.4: pings acknowledge the last received event, only when it changed.
#[tokio::test]
async fn spec7_3_pings_ack_last_received_event() {
    let b = backend().await;
    let c = client(&b, |c| c.ping_interval(ms(100)).receive_timeout(ms(2000)));
    until_command(&c, "init_complete").await;
    let newest = b.push_events(5);
    until(&c, |e| e.request_id() == newest).await;
    let (pong, _) = until(&c, |e| e.kind() == EventKind::Pong && e.acked_id() != 0).await;
    assert_eq!(pong.acked_id(), newest);
    assert!(pong.rtt().is_some());
    assert!(
        b.wait_for(|s| s.last_ack == newest, WAIT).await,
        "backend saw the ack"
    );
    // Later pings carry no ack until something new arrives.
    let (p2, _) = until_kind(&c, EventKind::Pong).await;
    assert_eq!(p2.acked_id(), 0);
    close_and_drain(&c).await;
}

/// §7.4 (GC drops a listener whose ack is newer than the oldest stored event): after a failed
/// resume in the same run, the client must not ack its stale resume point. If it did, the
/// backend would drop the new listener, store nothing more, and fail the next resume too —
/// the events of that cut would never be replayed. (Checked: sending that ack fails here.)
#[tokio::test]
async fn spec7_4_no_stale_ack_after_a_failed_resume() {
    let b = backend_with(|c| c.event_buffer_size = 5).await;
    let c = client(&b, |c| c.ping_interval(ms(50)).receive_timeout(ms(2000)));
    until_command(&c, "init_complete").await;
    let acked = b.push_events(3);
    until(&c, |e| e.request_id() == acked).await;
    assert!(b.wait_for(|s| s.last_ack == acked, WAIT).await);
    // Offline while more events happen than the buffer holds: the resume will fail.
    b.reject_upgrades(u64::MAX);
    b.cut_all();
    until_kind(&c, EventKind::Disconnected).await;
    b.push_events(10);
    let fresh_before = b.stats().fresh_starts;
    b.reject_upgrades(0);
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    until_command(&c, "init_complete").await;
    assert_eq!(
        b.stats().fresh_starts,
        fresh_before + 1,
        "the resume failed"
    );
    // Several pings with no new event: nothing to ack yet on this connection.
    tokio::time::sleep(ms(400)).await;
    let live = b.push_events(2);
    until(&c, |e| e.request_id() == live).await;
    assert!(b.wait_for(|s| s.last_ack == live, WAIT).await);
    // This cut must resume and replay what it missed.
    b.reject_upgrades(u64::MAX);
    b.cut_all();
    until_kind(&c, EventKind::Disconnected).await;
    let missed = b.push_events(2);
    let resumes_before = b.stats().resumes;
    b.reject_upgrades(0);
    let (_, seen) = until_command(&c, "init_complete").await;
    assert_eq!(b.stats().resumes, resumes_before + 1, "{:?}", kinds(&seen));
    assert_eq!(event_ids(&seen), [live - 1, missed]);
    close_and_drain(&c).await;
}

/// §7.1: only close code 1001 frees the listener's buffer entry. `close()` is final (1001) and
/// a later resume from its state finds nothing kept; `close_keep_resume()` closes with 1000
/// and a new client given the resume state receives exactly what it missed.
#[tokio::test]
async fn spec7_1_close_keep_resume_keeps_the_buffer_entry() {
    for keep in [false, true] {
        let b = backend().await;
        let c = client(&b, |c| c.ping_interval(ms(50)));
        until_command(&c, "init_complete").await;
        let seen = b.push_events(3);
        until(&c, |e| e.request_id() == seen).await;
        assert!(b.wait_for(|s| s.last_ack == seen, WAIT).await);
        let state = c.resume_state();
        if keep {
            c.close_keep_resume().unwrap();
        } else {
            c.close().unwrap();
        }
        until_kind(&c, EventKind::Closed).await;
        let code = if keep { 1000 } else { 1001 };
        assert!(
            b.wait_for(|s| s.last_client_close_code == Some(code), WAIT)
                .await
        );
        assert_eq!(b.stats().acks.is_empty(), !keep, "{:?}", b.stats().acks);
        let missed = b.push_events(2);
        let c2 = client(&b, |c| {
            c.resume_state(&state.run_id, state.last_received_event)
        });
        let (_, got) = until_command(&c2, "init_complete").await;
        if keep {
            assert_eq!(event_ids(&got), [missed + 1, missed]);
            assert_eq!(b.stats().resumes, 1);
        } else {
            assert!(event_ids(&got).is_empty());
            assert_eq!(b.stats().resumes, 0, "nothing was kept to resume from");
        }
        close_and_drain(&c2).await;
    }
}

/// §7.2: a backend restart changes run_id: full resync with clear_state, stale id dropped.
#[tokio::test]
async fn spec7_2_restart_gives_full_resync_not_stale_resume() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let old = b.push_events(20);
    until(&c, |e| e.request_id() == old).await;
    let old_run = c.resume_state().run_id;
    b.restart();
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    let (run, _) = until_command(&c, "run_id").await;
    assert_ne!(json(&run)["run_id"].as_str().unwrap(), old_run);
    let (_, skipped) = until_command(&c, "init_complete").await;
    assert!(skipped
        .iter()
        .any(|e| e.command() == "sync_complete" && json(e)["clear_state"] == true));
    let st = c.resume_state();
    assert_ne!(st.run_id, old_run);
    assert!(
        st.last_received_event > old || st.last_received_event == 0,
        "stale id forgotten: {st:?}"
    );
    close_and_drain(&c).await;
}

/// §16 step 6: requests in flight when the socket drops fail with DISCONNECTED.
#[tokio::test]
async fn spec16_pending_requests_fail_on_drop() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "run_id").await;
    let id = c.request("sleep", br#"{"ms":10000}"#).unwrap();
    // Answered over the same socket after it: the sleep request was written.
    c.call("echo", b"1").await.unwrap();
    b.cut_all();
    let (r, _) = until_kind(&c, EventKind::Response).await;
    assert_eq!((r.request_id(), r.status()), (id, Status::ErrDisconnected));
    until_kind(&c, EventKind::Connected).await;
    close_and_drain(&c).await;
}

/// §8: nothing received within the receive timeout → close and reconnect.
#[tokio::test]
async fn spec8_receive_timeout_reconnects() {
    let b = backend().await;
    let p = Proxy::start(b.addr()).await.unwrap();
    let url = format!("http://{}", p.addr());
    let c = client_at(&url, &b.token(), |c| {
        c.ping_interval(ms(100)).receive_timeout(ms(600))
    });
    until_command(&c, "run_id").await;
    p.set_blackhole(true);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrReceiveTimeout);
    p.set_blackhole(false);
    until_kind(&c, EventKind::Connected).await;
    until_command(&c, "run_id").await;
    close_and_drain(&c).await;
}

/// §5 via the proxy: 1-byte TCP slicing yields exactly the same events.
#[tokio::test]
async fn spec5_one_byte_slicing_is_transparent() {
    let b = backend().await;
    let p = Proxy::start(b.addr()).await.unwrap();
    p.set_slice(Some(1));
    let url = format!("http://{}", p.addr());
    let c = client_at(&url, &b.token(), |c| c);
    until_command(&c, "init_complete").await;
    let newest = b.push_events(40);
    let (_, skipped) = until(&c, |e| e.request_id() == newest).await;
    let mut ids = event_ids(&skipped);
    ids.push(newest);
    assert_eq!(ids, (newest..newest + 40).rev().collect::<Vec<_>>());
    close_and_drain(&c).await;
}

/// §7.2 chaos: 10,000 events, the stream cut 50 times at random byte offsets: every event
/// arrives exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec7_2_ten_thousand_events_cut_fifty_times_exactly_once() {
    use rand::Rng;
    let b = backend_with(|c| c.event_buffer_size = 20_000).await;
    let p = Proxy::start(b.addr()).await.unwrap();
    let mut rng = rand::rng();
    // First connection must get through start-up; later ones are cut mid-stream.
    let mut schedule = vec![u64::MAX];
    // Offsets well below the compressed stream size (~600 KB), so nearly all 50 land.
    schedule.extend((0..50).map(|_| rng.random_range(2_000..40_000u64)));
    p.set_cut_schedule(schedule);
    let url = format!("http://{}", p.addr());
    let c = client_at(&url, &b.token(), |c| c);
    until_command(&c, "init_complete").await;
    // A resume point must exist before the cuts start (otherwise a fresh start is correct).
    let seed = b.push_events(1);
    until(&c, |e| e.request_id() == seed).await;
    p.cut_all();
    let total = 10_000usize;
    let mut newest = 0;
    for _ in 0..(total / 500) {
        newest = b.push_events(500);
        tokio::time::sleep(ms(15)).await;
    }
    let first = seed - 1;
    assert_eq!(newest, first - total as i64 + 1);
    let mut got = Vec::with_capacity(total);
    let mut disconnects = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while got.last() != Some(&newest) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled after {} events",
            got.len()
        );
        let ev = next(&c).await;
        match ev.kind() {
            EventKind::Message if ev.request_id() < 0 => got.push(ev.request_id()),
            // Before the first event there is nothing to resume from; after it, a resync
            // would mean a failed resume.
            EventKind::Message if ev.command() == "sync_complete" && !got.is_empty() => {
                assert_ne!(
                    json(&ev)["clear_state"],
                    true,
                    "resume failed after {} events",
                    got.len()
                );
            }
            EventKind::Disconnected => disconnects += 1,
            _ => {}
        }
    }
    assert_eq!(got, (newest..=first).rev().collect::<Vec<_>>());
    assert!(disconnects >= 10, "only {disconnects} cuts happened");
    close_and_drain(&c).await;
}

/// ARCHITECTURE.md "The event queue": a full queue stops reading the socket; nothing is dropped.
#[tokio::test]
async fn backpressure_loses_nothing() {
    // The backend neither closes the connection it cannot write to (4001 past 512 waiting
    // events, §10) nor forgets events meanwhile: only the client's own backpressure is tested.
    let b = backend_with(|c| {
        c.conn_queue_limit = None;
        c.event_buffer_size = 4096;
    })
    .await;
    // Uncompressed: one event per message, so a read takes no more events than there is room
    // for (a compressed batch could overfill the queue by hundreds).
    let c = client(&b, |c| c.queue_capacity(8).compression(false));
    until_command(&c, "init_complete").await;
    let before = c.stats().events_received;
    let pushed = 2000;
    let newest = b.push_events(pushed);
    until_queue_holds(&c, 8).await;
    tokio::time::sleep(ms(300)).await;
    let queued = c.queued_events();
    let read = c.stats().events_received - before;
    // Small slack: a PONG read beside the events is queued too.
    assert!(queued <= 8 + 2, "{queued} events queued, capacity 8");
    assert!(
        read <= 8 + 2,
        "{read} of {pushed} events read while the queue was full"
    );
    tokio::time::sleep(ms(500)).await;
    assert_eq!(
        c.stats().events_received - before,
        read,
        "the socket was read while the queue stayed full"
    );
    let (_, skipped) = until(&c, |e| e.request_id() == newest).await;
    let mut ids = event_ids(&skipped);
    ids.push(newest);
    assert_eq!(
        ids,
        (newest..newest + pushed as i64).rev().collect::<Vec<_>>()
    );
    close_and_drain(&c).await;
}

/// §7.1/§9: close sends 1001 so the backend frees the listener; CLOSED is last; a second
/// close and later requests are refused.
#[tokio::test]
async fn spec9_close_sends_1001_and_closed_is_last() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "run_id").await;
    c.close().unwrap();
    assert_eq!(c.close().unwrap_err().status(), Status::ErrState);
    assert_eq!(
        c.request("echo", b"{}").unwrap_err().status(),
        Status::ErrState
    );
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(
        (d.status(), d.close_code(), d.retry_in()),
        (Status::Ok, 1001, None)
    );
    assert_eq!(next(&c).await.kind(), EventKind::Closed);
    assert!(c.next_event().await.is_none());
    assert!(
        b.wait_for(|s| s.last_client_close_code == Some(1001), WAIT)
            .await
    );
}

/// Requests made before the connection exists are sent once it opens.
#[tokio::test]
async fn requests_before_connect_are_sent_when_connected() {
    let b = backend().await;
    let cfg = Config::builder(&b.http_url())
        .token(&b.token())
        .build()
        .unwrap();
    let c = Client::new(cfg);
    let id = c.request("echo", br#"{"early":true}"#).unwrap();
    c.connect().unwrap();
    assert_eq!(c.connect().unwrap_err().status(), Status::ErrState);
    let (r, _) = until_kind(&c, EventKind::Response).await;
    assert_eq!((r.request_id(), r.data()), (id, &br#"{"early":true}"#[..]));
    close_and_drain(&c).await;
}

/// Bad caller input returns a status and changes nothing.
#[tokio::test]
async fn bad_request_input_is_rejected() {
    let b = backend().await;
    let c = client(&b, |c| c);
    assert_eq!(
        c.request("echo", b"{not json").unwrap_err().status(),
        Status::ErrInvalidUtf8
    );
    assert_eq!(
        c.request("", b"{}").unwrap_err().status(),
        Status::ErrInvalidArgument
    );
    // §4.1/§7.3: its reply is a pong, which no request would ever get as its response.
    let e = c.request("ping", b"{}").unwrap_err();
    assert_eq!(e.status(), Status::ErrInvalidArgument, "{e}");
    let id = c.request("echo", b"[1]").unwrap();
    let (r, _) = until_kind(&c, EventKind::Response).await;
    assert_eq!(r.request_id(), id);
    close_and_drain(&c).await;
}

/// A connection refused at TCP level retries with backoff and reports CONNECT errors.
#[tokio::test]
async fn refused_connection_retries_with_backoff() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let c = client_at(&format!("http://{addr}"), "t", |c| c);
    for _ in 0..3 {
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        assert_eq!(d.status(), Status::ErrConnect);
        assert!(d.retry_in().unwrap() <= ms(200));
    }
    close_and_drain(&c).await;
}

/// §1.3: an Origin the backend does not allow is a 403 → FORBIDDEN and no retry; a matching
/// Origin (extra header) connects.
#[tokio::test]
async fn spec1_3_origin_header() {
    let b = backend().await;
    let c = client(&b, |c| c.header("Origin", "https://evil.example"));
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(
        (d.status(), d.close_code(), d.retry_in()),
        (Status::ErrForbidden, 403, None)
    );
    assert_eq!(next(&c).await.kind(), EventKind::Closed);
    let origin = format!("http://{}", b.addr());
    let c = client(&b, |c| c.header("Origin", &origin));
    until_command(&c, "run_id").await;
    close_and_drain(&c).await;
}

/// §1.2: the desktop key form (Basic user `desktop-key`).
#[tokio::test]
async fn spec1_2_desktop_key_auth() {
    let b = backend_with(|c| c.desktop_key = Some("desk-key-123".into())).await;
    let cfg = Config::builder(&b.http_url())
        .desktop_key("desk-key-123")
        .build()
        .unwrap();
    let c = start(cfg);
    until_command(&c, "run_id").await;
    close_and_drain(&c).await;
}

/// §2/§6.1: with `last_server_ts` a non-resumed start is a catchup, not a clear_state dump.
#[tokio::test]
async fn spec6_1_last_server_ts_gives_catchup() {
    let b = backend().await;
    let c = client(&b, |c| c.last_server_ts(1_700_000_000_000));
    let (_, skipped) = until_command(&c, "init_complete").await;
    let sync = skipped
        .iter()
        .find(|e| e.command() == "sync_complete")
        .expect("a sync");
    assert_eq!(json(sync)["catchup"], true);
    assert_ne!(json(sync)["clear_state"], true);
    close_and_drain(&c).await;
}

/// §10 (client→server limit: 1 MiB, larger closes with 1009): a request over the limit is
/// refused at the call with ERR_INVALID_ARGUMENT and never sent, so the connection, and the
/// request made before it, go on; one just under the limit is answered.
#[tokio::test]
async fn spec10_a_request_over_the_1_mib_read_limit_is_refused_at_the_call() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let string_of = |n: usize| format!("\"{}\"", "a".repeat(n - 2)).into_bytes();
    let before = c.request("echo", b"{}").unwrap();
    let e = c.request("echo", &string_of(1024 * 1024 + 1)).unwrap_err();
    assert_eq!(e.status(), Status::ErrInvalidArgument, "{}", e.message());
    assert!(
        e.message().contains("1048576-byte limit"),
        "{}",
        e.message()
    );
    // The envelope around the data takes well under 100 bytes.
    let under = c.request("echo", &string_of(1024 * 1024 - 100)).unwrap();
    let (first, skipped) = until(&c, |e| e.kind() == EventKind::Response).await;
    assert_eq!((first.request_id(), first.status()), (before, Status::Ok));
    let (last, more) = until(&c, |e| e.kind() == EventKind::Response).await;
    assert_eq!((last.request_id(), last.status()), (under, Status::Ok));
    assert_eq!(last.data().len(), 1024 * 1024 - 100);
    let all: Vec<_> = skipped.iter().chain(&more).map(|e| e.kind()).collect();
    assert!(!all.contains(&EventKind::Disconnected), "{all:?}");
    close_and_drain(&c).await;
}

/// §3: `null` as a request's data is refused at the call: gomuks reads it into a nil
/// parameter struct and the command's handler dereferences it (the backend closes the
/// connection with 1011; in process the app's process would abort). Nothing is sent.
#[tokio::test]
async fn spec3_null_request_data_is_refused_at_the_call() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    for data in [&b"null"[..], b" null\n"] {
        let e = c.request("mark_read", data).unwrap_err();
        assert_eq!(e.status(), Status::ErrInvalidArgument, "{}", e.message());
    }
    // Nested nulls and other values are the backend's to judge.
    let id = c.request("echo", br#"{"room_id":null}"#).unwrap();
    let (r, _) = until(&c, |e| e.kind() == EventKind::Response).await;
    assert_eq!((r.request_id(), r.status()), (id, Status::Ok));
    close_and_drain(&c).await;
}

/// §6.1 with §9 1011 (interop/FINDINGS.md F8): while the backend's `client_state` says it is
/// not logged in, a command that needs the account is refused at the call with ERR_STATE: its
/// handler would dereference the nil homeserver URL, and the backend closes the connection
/// (1011), failing every request in flight. Account-free commands and unknown names go
/// through.
#[tokio::test]
async fn spec6_1_account_commands_are_refused_while_the_backend_is_logged_out() {
    let b = backend_with(|c| c.logged_in = false).await;
    let c = client(&b, |c| c);
    let (st, _) = until_command(&c, "client_state").await;
    assert_eq!(json(&st)["is_logged_in"], false);
    let slow = c.request("sleep", br#"{"ms":300}"#).unwrap();
    for cmd in [
        "get_profile",
        "calculate_room_id",
        "join_room",
        "send_message",
        "logout",
    ] {
        let e = c.request(cmd, b"{}").unwrap_err();
        assert_eq!(e.status(), Status::ErrState, "{cmd}: {}", e.message());
        assert!(e.message().contains("logged-in backend"), "{}", e.message());
    }
    let free = c.request("get_state", b"{}").unwrap();
    let unknown = c.request("no_such", b"{}").unwrap();
    let mut answered = std::collections::HashMap::new();
    let (_, seen) = until(&c, |e| {
        if e.kind() == EventKind::Response {
            answered.insert(e.request_id(), e.status());
        }
        answered.len() == 3
    })
    .await;
    assert_eq!(
        answered[&slow],
        Status::Ok,
        "the request in flight was not failed"
    );
    assert_eq!(answered[&free], Status::Ok);
    assert_eq!(answered[&unknown], Status::ErrRemote);
    assert!(seen.iter().all(|e| e.kind() != EventKind::Disconnected));
    close_and_drain(&c).await;
}

/// §8/§9: a client that stays silent past the server's ping timeout is closed with 4002 and
/// reconnects; one that pings in time stays connected.
#[tokio::test]
async fn spec8_server_ping_timeout_4002() {
    // Well above the client's 100 ms pings: a runtime busy with another test must not
    // make a pinging client look silent.
    let b = backend_with(|c| c.ping_timeout = ms(1000)).await;
    let silent = client(&b, |c| {
        c.ping_interval(Duration::from_secs(30))
            .receive_timeout(Duration::from_secs(60))
    });
    let (d, _) = until_kind(&silent, EventKind::Disconnected).await;
    assert_eq!(
        (d.status(), d.close_code()),
        (Status::ErrRemoteClosed, 4002)
    );
    assert_eq!(d.data(), b"Ping timeout");
    assert!(d.retry_in().is_some());
    until_kind(&silent, EventKind::Connected).await;
    close_and_drain(&silent).await;

    let pinging = client(&b, |c| c.ping_interval(ms(100)).receive_timeout(ms(2000)));
    until_command(&pinging, "run_id").await;
    tokio::time::sleep(ms(1500)).await;
    let skipped = close_and_drain(&pinging).await;
    assert_no_drop(&skipped);
}

/// Spec §16 (resume) under the backend's scheduled cuts: every connection is cut after
/// `cut` (events or bytes, see `cut_after_events`/`cut_after_bytes` and the matching
/// `tether-backend` flags), and every event still arrives exactly once and in order.
async fn resume_across_scheduled_cuts(
    cut: impl FnOnce(&mut tether_testkit::gomuks::BackendConfig),
) {
    let b = backend_with(cut).await;
    let c = client(&b, |c| {
        c.reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
    });
    until_command(&c, "init_complete").await;
    // A trickle, like a live stream: the cut counts live traffic, not replayed events. It
    // goes on until the third connection (two cuts), however long a reconnect takes, and
    // then once more, so both cuts come before the last event.
    let start = std::time::Instant::now();
    while b.stats().total_connections < 3 {
        assert!(start.elapsed() < WAIT, "fewer than two cuts in {WAIT:?}");
        b.push_events(5);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let newest = b.push_events(5);
    let (_, seen) = until(&c, |e| e.request_id() == newest).await;
    let mut ids = event_ids(&seen);
    ids.push(newest);
    assert_eq!(ids, (newest..=-1).rev().collect::<Vec<_>>());
    let cuts = seen
        .iter()
        .filter(|e| e.kind() == EventKind::Disconnected)
        .count();
    assert!(cuts >= 2, "expected scheduled cuts, saw {cuts}");
    close_and_drain(&c).await;
}

#[tokio::test]
async fn resume_across_cuts_after_n_events() {
    resume_across_scheduled_cuts(|c| c.cut_after_events = Some(10)).await;
}

#[tokio::test]
async fn resume_across_cuts_after_n_bytes() {
    resume_across_scheduled_cuts(|c| c.cut_after_bytes = Some(1500)).await;
}

/// Spec §11.1 (web client reconnect): the first retry reconnects directly; later retries first
/// re-POST `/_gomuks/auth`, which refreshes the token before it can expire.
#[tokio::test]
async fn spec10_later_retries_refresh_the_token() {
    let b = backend().await;
    let c = quick_retries(&b, |c| c.basic_auth("tether", "tether-password"));
    until_command(&c, "init_complete").await;
    assert_eq!(b.stats().auth_requests, 1);
    // A plain cut: the first retry succeeds without a new token.
    b.cut_all();
    until_kind(&c, EventKind::Connected).await;
    assert_eq!(b.stats().auth_requests, 1);
    // Two refused upgrades: retry 1 goes direct, retries 2 and 3 refresh first.
    b.reject_upgrades(2);
    b.cut_all();
    let (_, seen) = until_kind(&c, EventKind::Connected).await;
    let refused: Vec<u16> = disconnects(&seen).map(|e| e.close_code()).collect();
    assert_eq!(refused, [0, 503, 503], "{:?}", kinds(&seen));
    let s = b.stats();
    assert_eq!(s.auth_requests, 3);
    // Renewed with the token as the cookie, as the web client does: no password hashed.
    assert_eq!(s.token_renewals, 2, "{s:?}");
    // A renewal the backend refuses falls back to the username and password at once.
    b.answer_auth_with(
        1,
        401,
        r#"{"errcode":"FI.MAU.GOMUKS.INVALID_COOKIE","error":"Invalid gomuks_auth cookie"}"#,
    );
    b.reject_upgrades(2);
    reconnects_without_a_401(&b, &c).await;
    let s = b.stats();
    assert_eq!(
        (s.auth_requests, s.token_renewals),
        (3 + 3, 3),
        "retry 2: refused renewal, then a login; retry 3: a renewal"
    );
    close_and_drain(&c).await;
}

/// Spec §1.2 + §11.1: a client configured with a token alone renews it the same way, by
/// re-POSTing `/_gomuks/auth` with the cookie, so a long session does not die after 7 days.
#[tokio::test]
async fn spec1_2_token_only_clients_renew_their_cookie_on_later_retries() {
    let b = backend().await;
    let c = quick_retries(&b, |c| c.token(&b.token()));
    until_command(&c, "init_complete").await;
    assert_eq!(
        b.stats().auth_requests,
        0,
        "a configured token is used as it is"
    );
    b.reject_upgrades(2);
    b.cut_all();
    until_kind(&c, EventKind::Connected).await;
    assert_eq!(
        b.stats().auth_requests,
        2,
        "retries 2 and 3 renew the cookie first"
    );
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
}

/// Spec §1.2 + §11.1: the renewal before a later retry fails without a refusal (here the auth
/// endpoint is not published by the reverse proxy: 404; a 5xx is the same). The token held
/// has not expired, so the upgrade goes ahead with it instead of failing every attempt.
#[tokio::test]
async fn spec1_2_a_failing_auth_endpoint_does_not_keep_a_valid_token_off_the_upgrade() {
    a_failing_auth_endpoint_keeps_the_token_on_the_upgrade(404, "404 page not found").await;
}

/// Spec §1.2: gomuks's auth endpoint refuses a token with 401 and never answers 403 to this
/// client; a 403 there comes from in front of it (a reverse proxy that denies the path), so
/// it does not end a client whose token the upgrade still takes.
#[tokio::test]
async fn spec1_2_a_forbidden_auth_endpoint_does_not_keep_a_valid_token_off_the_upgrade() {
    a_failing_auth_endpoint_keeps_the_token_on_the_upgrade(403, "Forbidden").await;
}

async fn a_failing_auth_endpoint_keeps_the_token_on_the_upgrade(code: u16, body: &str) {
    let b = backend().await;
    let c = quick_retries(&b, |c| c.token(&b.token()));
    until_command(&c, "init_complete").await;
    b.answer_auth_with(u64::MAX, code, body);
    b.reject_upgrades(1);
    b.cut_all();
    let (_, seen) = until_kind(&c, EventKind::Connected).await;
    let failed: Vec<Status> = disconnects(&seen).map(|e| e.status()).collect();
    assert_eq!(
        failed,
        [Status::ErrConnect, Status::ErrHttp],
        "the cut, the refused upgrade, then connected: {:?}",
        kinds(&seen)
    );
    assert_eq!(b.stats().auth_requests, 1, "the renewal was tried");
    until_command(&c, "init_complete").await;
    // Its failure counts: the next renewal backs off (30 s) instead of running again as
    // soon as the connection opened.
    tokio::time::sleep(ms(300)).await;
    assert_eq!(b.stats().auth_requests, 1);
    close_and_drain(&c).await;
}

/// Spec §1.2: the upgrade refused the token held (the backend's key changed), and the login
/// with the password then failed without a refusal (the auth endpoint answered 502 while the
/// backend restarted). The refused token is not tried again, nor renewed with itself: the
/// password logs in at the next attempt, and the client connects instead of stopping.
#[tokio::test]
async fn spec1_2_a_token_the_upgrade_refused_is_not_used_again_while_auth_fails() {
    let b = backend().await;
    let c = quick_retries(&b, |c| c.basic_auth("tether", "tether-password"));
    until_command(&c, "init_complete").await;
    b.rotate_token_key();
    b.answer_auth_with(2, 502, "bad gateway");
    reconnects_without_a_401(&b, &c).await;
    assert!(b.stats().auth_requests >= 4, "{:?}", b.stats());
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
}

/// Spec §1.2: a 2xx from the auth endpoint without a token the upgrade can carry (a
/// control character, a `;` that would start another cookie, a bare JSON string) is a
/// protocol error of that attempt, retried, and its message never quotes the body; the
/// next login's token connects.
#[tokio::test]
async fn spec1_2_a_malformed_token_from_the_auth_endpoint_is_retried_and_not_shown() {
    let b = backend().await;
    for body in [
        r#"{"token":"SECRET\u0001cd"}"#,
        r#"{"token":"SECRET;gomuks_auth=x"}"#,
        r#"{"token":""}"#,
        r#""SECRET.signature""#,
    ] {
        b.answer_auth_with(1, 201, body);
        let c = quick_retries(&b, |c| c.basic_auth("tether", "tether-password"));
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        assert_eq!(
            d.status(),
            Status::ErrProtocol,
            "{body}: {}",
            String::from_utf8_lossy(d.data())
        );
        assert!(d.retry_in().is_some(), "{body}");
        assert!(
            !String::from_utf8_lossy(d.data()).contains("SECRET"),
            "{}",
            String::from_utf8_lossy(d.data())
        );
        until_command(&c, "init_complete").await;
        close_and_drain(&c).await;
    }
}

/// Spec §1.2: a backend that had auth disabled (204 from `/_gomuks/auth`) and comes back
/// with it on: the upgrade's 401 leads to a login with the configured password, not to a
/// final UNAUTHORIZED.
#[tokio::test]
async fn spec1_2_auth_turned_on_after_a_204_logs_in() {
    let b = backend_with(|c| c.disable_auth = true).await;
    let c = quick_retries(&b, |c| c.basic_auth("tether", "tether-password"));
    until_command(&c, "init_complete").await;
    assert_eq!(c.auth_token(), None, "auth disabled: no token");
    b.set_auth_disabled(false);
    reconnects_without_a_401(&b, &c).await;
    assert!(c.auth_token().is_some());
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
}

/// Spec §16 with the testkit's cut: a cut keeps its place among the events, even inside a
/// batch (§5), so the events pushed after it reach the client on the next connection, by
/// resume, never on the connection that was cut.
#[tokio::test]
async fn spec16_events_pushed_after_a_cut_come_after_it() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let first = b.push_events(20);
    b.cut_all();
    let newest = b.push_events(5);
    let (_, seen) = until(&c, |e| e.request_id() == newest).await;
    let cut = seen
        .iter()
        .position(|e| e.kind() == EventKind::Disconnected)
        .expect("the cut comes before the last event");
    let after = seen
        .iter()
        .position(|e| e.kind() == EventKind::Message && e.request_id() < first)
        .unwrap_or(seen.len());
    assert!(cut < after, "{:?}", kinds(&seen));
    let mut ids = event_ids(&seen);
    ids.push(newest);
    assert_eq!(ids, (newest..=-1).rev().collect::<Vec<_>>());
    close_and_drain(&c).await;
}

/// Spec §10: more than 512 events queued for one connection close it with 4001 "Event queue
/// full"; the client reconnects, resumes, and with a large enough buffer loses nothing.
#[tokio::test]
async fn spec10_event_queue_full_closes_4001_then_resume() {
    let b = backend_with(|c| c.event_buffer_size = 2000).await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let seed = b.push_events(1);
    until(&c, |e| e.request_id() == seed).await;
    let newest = b.push_events(600); // one burst: the connection's queue overflows
    let (_, seen) = until(&c, |e| e.request_id() == newest).await;
    let closes: Vec<(u16, Status)> = seen
        .iter()
        .filter(|e| e.kind() == EventKind::Disconnected)
        .map(|e| (e.close_code(), e.status()))
        .collect();
    assert_eq!(
        closes,
        [(4001, Status::ErrRemoteClosed)],
        "{:?}",
        kinds(&seen)
    );
    let mut ids = event_ids(&seen);
    ids.push(newest);
    assert_eq!(ids, (newest..seed).rev().collect::<Vec<_>>());
    close_and_drain(&c).await;
}

/// Latency through the fault proxy shows in the PONG round-trip time (both directions).
#[tokio::test]
async fn proxy_delay_shows_in_pong_rtt() {
    let b = backend().await;
    let p = Proxy::start(b.addr()).await.unwrap();
    let c = client_at(&format!("http://{}", p.addr()), &b.token(), |c| {
        c.ping_interval(ms(100))
    });
    until_command(&c, "init_complete").await;
    p.set_delay(ms(60));
    // A pong for a ping sent after the delay was set.
    let mut rtt = Duration::ZERO;
    for _ in 0..3 {
        let (pong, _) = until_kind(&c, EventKind::Pong).await;
        rtt = pong.rtt().unwrap();
    }
    assert!(rtt >= ms(120), "rtt {rtt:?}");
    p.set_delay(Duration::ZERO);
    close_and_drain(&c).await;
}

/// A connection reset (RST, no close frame, no FIN) is a connection error: the client
/// reconnects and resumes with nothing lost (spec §16).
#[tokio::test]
async fn tcp_reset_reconnects_and_resumes() {
    let b = backend().await;
    let p = Proxy::start(b.addr()).await.unwrap();
    p.set_reset(true);
    let c = client_at(&format!("http://{}", p.addr()), &b.token(), |c| c);
    until_command(&c, "init_complete").await;
    let first = b.push_events(5);
    until(&c, |e| e.request_id() == first).await;
    p.cut_all();
    let newest = b.push_events(5);
    let (_, seen) = until(&c, |e| e.request_id() == newest).await;
    let (d, _) = seen
        .iter()
        .find(|e| e.kind() == EventKind::Disconnected)
        .map(|d| (d, ()))
        .expect("a disconnect");
    let why = String::from_utf8_lossy(d.data());
    assert_eq!(d.status(), Status::ErrConnect, "{why}");
    assert!(why.to_lowercase().contains("reset"), "not a reset: {why}");
    let mut ids = event_ids(&seen);
    ids.push(newest);
    assert_eq!(ids, (newest..first).rev().collect::<Vec<_>>());
    close_and_drain(&c).await;
}

/// §1.2: an app cookie (e.g. for a proxy in front of the backend) travels with the library's
/// `gomuks_auth` cookie, and the connection is authorized; an app cookie that sets
/// `gomuks_auth` itself next to configured credentials is refused at build.
#[tokio::test]
async fn spec1_2_app_cookie_travels_with_the_auth_cookie() {
    let b = backend().await;
    let c = client(&b, |c| c.header("Cookie", "theme=dark; lb=node-2"));
    until_command(&c, "run_id").await;
    close_and_drain(&c).await;
    let e = Config::builder(&b.http_url())
        .token("tok")
        .header("cookie", "x=1; gomuks_auth=other")
        .build()
        .unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig);
    assert!(e.message().contains("gomuks_auth"), "{}", e.message());
}

/// §1.2: the token the library holds is handed back for the app to persist instead of the
/// password: none before the login, the backend's after it, and it alone authorizes a new
/// client; a stale configured token is reported until a login replaces it.
#[tokio::test]
async fn spec1_2_auth_token_is_handed_back_after_login() {
    let b = backend().await;
    let cfg = Config::builder(&b.http_url())
        .basic_auth("tether", "tether-password")
        .build()
        .unwrap();
    let c = Client::new(cfg);
    assert_eq!(c.auth_token(), None, "no login yet");
    c.connect().unwrap();
    until_command(&c, "run_id").await;
    let token = c.auth_token().expect("a token after the login");
    assert!(!token.is_empty());
    close_and_drain(&c).await;
    let c2 = client_at(&b.http_url(), &token, |c| c);
    assert_eq!(c2.auth_token().as_deref(), Some(token.as_str()));
    until_command(&c2, "run_id").await;
    close_and_drain(&c2).await;

    let cfg = Config::builder(&b.http_url())
        .token("stale.token")
        .basic_auth("tether", "tether-password")
        .build()
        .unwrap();
    let c3 = Client::new(cfg);
    assert_eq!(c3.auth_token().as_deref(), Some("stale.token"));
    c3.connect().unwrap();
    until_command(&c3, "run_id").await;
    let renewed = c3.auth_token().unwrap();
    assert_ne!(renewed, "stale.token");
    close_and_drain(&c3).await;
}

/// Spec §1.2 behind a reverse proxy with its own header auth: the app's headers go on the
/// `POST /_gomuks/auth` login as well as on the websocket upgrade, so the login gets through.
#[tokio::test]
async fn spec1_2_app_headers_reach_the_auth_call_and_the_upgrade() {
    let b = backend_with(|c| c.required_header = Some(("x-proxy-auth".into(), "let-me-in".into())))
        .await;
    let login = |header: bool| {
        let mut cfg = Config::builder(&b.http_url()).basic_auth("tether", "tether-password");
        if header {
            cfg = cfg.header("X-Proxy-Auth", "let-me-in");
        }
        start(cfg.build().unwrap())
    };
    let c = login(true);
    until_command(&c, "init_complete").await;
    assert_eq!(
        b.stats().auth_requests,
        1,
        "the login went through the proxy"
    );
    close_and_drain(&c).await;
    let c = login(false);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(
        d.status(),
        Status::ErrForbidden,
        "{}",
        String::from_utf8_lossy(d.data())
    );
    close_and_drain(&c).await;
}

/// Spec §1: an IPv6 literal URL (`http://[::1]:port`) reaches a backend on IPv6 loopback,
/// auth call included.
#[tokio::test]
async fn spec1_ipv6_literal_url() {
    let b = backend_with(|c| c.listen = "[::1]:0".parse().unwrap()).await;
    let url = format!("http://[::1]:{}", b.addr().port());
    let c = start(
        Config::builder(&url)
            .basic_auth("tether", "tether-password")
            .build()
            .unwrap(),
    );
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
}

/// A client whose backoff starts at 50 ms and doubles up to 10 s.
fn backing_off_from_50_ms(b: &tether_testkit::gomuks::Backend) -> Client {
    start(
        Config::builder(&b.http_url())
            .token(&b.token())
            .reconnect_backoff(ms(50), Duration::from_secs(10))
            .build()
            .unwrap(),
    )
}

/// Spec §11.1 (reconnect with backoff): a backend that sends a message and then drops every
/// connection before `init_complete` (a start-up failure, §9; a 4001 during a large resume)
/// sees the backoff grow. One message used to reset it, so the client reconnected at its
/// shortest delay for ever, each time with a full handshake.
#[tokio::test]
async fn spec11_1_connections_dropped_before_init_complete_back_off() {
    let b = backend_with(|c| c.cut_during_startup = Some(1)).await;
    let c = backing_off_from_50_ms(&b);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Doubling from 50 ms (with up to half of each step as jitter): at most 8 attempts fit in
    // 3 s; at the shortest delay, 24 or more would.
    let n = b.stats().total_connections;
    assert!((2..=8).contains(&n), "{n} connections in 3 s");
    let _ = c.close();
}

/// Spec §6.1 with §11.1: a backend without a verified account sends no `init_complete`; its
/// `client_state` saying so ends the start, so a session cut soon after still resets the
/// backoff (a login screen on a flaky network reconnects at once, every time).
#[tokio::test]
async fn spec6_1_a_session_without_an_account_resets_the_backoff_at_its_client_state() {
    let b = backend_with(|c| c.logged_in = false).await;
    let c = backing_off_from_50_ms(&b);
    for cut in 0..4 {
        until_command(&c, "client_state").await;
        b.cut_all();
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        let retry = d.retry_in().expect("a retry follows");
        assert!(retry <= ms(50), "cut {cut}: retry in {retry:?}");
    }
    close_and_drain(&c).await;
}
