//! The send budget (`max_unsent_bytes`): requests and packets the link has not taken yet may
//! hold only so many bytes, whether the uplink is slow or the client is disconnected. A call
//! past it is refused with `ErrSendBufferFull` and takes nothing; everything accepted still
//! goes out, exactly once, and its bytes come back once written or ended.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use tether::{EventKind, Status};

const LIMIT: u64 = 256 * 1024;

/// Waits until the client's `unsent_bytes` passes `ok`.
async fn until_unsent(c: &tether::Client, ok: impl Fn(u64) -> bool) {
    let t0 = Instant::now();
    while !ok(c.stats().unsent_bytes) {
        assert!(
            t0.elapsed() < WAIT,
            "unsent_bytes stayed at {}",
            c.stats().unsent_bytes
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client with the test's budget, connected once and then paused.
async fn paused_client(b: &tether_testkit::gomuks::Backend) -> tether::Client {
    let c = client(b, |c| c.max_unsent_bytes(LIMIT));
    until_command(&c, "init_complete").await;
    c.pause().unwrap();
    until_kind(&c, EventKind::Disconnected).await;
    c
}

/// Waits until neither the bytes waiting nor those written change for 200 ms.
async fn until_still(c: &tether::Client) {
    let look = || {
        let s = c.stats();
        (s.unsent_bytes, s.wire_bytes_out)
    };
    let t0 = Instant::now();
    let mut last = look();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = look();
        if now == last {
            return;
        }
        assert!(t0.elapsed() < WAIT, "the client kept writing: {now:?}");
        last = now;
    }
}

/// A server that stops reading: once our socket's buffers are full the requests back up in
/// the client, until the budget refuses one. Nothing accepted is lost: when the server reads
/// again, every accepted request is answered once and the budget is free again.
#[tokio::test]
async fn requests_past_the_budget_behind_a_server_that_does_not_read_are_refused() {
    let b = backend_with(|c| c.recv_buffer = Some(16 * 1024)).await;
    let c = client(&b, |c| c.compression(false).max_unsent_bytes(LIMIT));
    until_command(&c, "init_complete").await;
    assert_eq!(c.stats().unsent_bytes, 0);
    b.set_read_rate(Some(0));
    let body = format!("\"{}\"", "x".repeat(60 * 1024));
    let mut accepted = BTreeSet::new();
    let refused = loop {
        // The kernel's buffers take a few MB first; 64 MB more would be a budget not kept.
        assert!(accepted.len() < 1000, "never refused");
        match c.request_with_timeout("echo", body.as_bytes(), WAIT) {
            Ok(id) => {
                accepted.insert(id);
            }
            // The session may still be handing requests to the socket: a refusal counts once
            // nothing moves any more.
            Err(e) => {
                assert_eq!(e.status(), Status::ErrSendBufferFull, "{e}");
                until_still(&c).await;
                match c.request_with_timeout("echo", body.as_bytes(), WAIT) {
                    Ok(id) => accepted.insert(id),
                    Err(e) => break e,
                };
            }
        }
    };
    assert_eq!(refused.status(), Status::ErrSendBufferFull, "{refused}");
    assert!(refused.message().contains("max_unsent_bytes"), "{refused}");
    let held = c.stats().unsent_bytes;
    assert!(
        held <= LIMIT && held + body.len() as u64 > LIMIT,
        "{held} bytes held when a {}-byte request was refused",
        body.len()
    );
    // The refusal took nothing; a request small enough for the room left still fits.
    assert_eq!(c.stats().unsent_bytes, held);
    let small = c.request_with_timeout("echo", b"{}", WAIT).unwrap();
    accepted.insert(small);

    b.set_read_rate(None);
    let mut answered = BTreeSet::new();
    while answered.len() < accepted.len() {
        let (r, _) = until(&c, |e| e.kind() == EventKind::Response).await;
        assert_eq!(r.status(), Status::Ok, "{:?}", r.data());
        if r.request_id() != small {
            assert_eq!(r.data().len(), body.len());
        }
        assert!(accepted.contains(&r.request_id()));
        assert!(answered.insert(r.request_id()), "answered twice");
    }
    assert_eq!(c.stats().unsent_bytes, 0);
    assert_eq!(b.stats().total_connections, 1);
    let id = c.request("echo", body.as_bytes()).unwrap();
    let (r, _) = until(&c, |e| e.request_id() == id).await;
    assert_eq!(r.status(), Status::Ok);
    close_and_drain(&c).await;
}

/// Disconnected (paused): requests wait for the next connection and count against the
/// budget; one that times out or is cancelled gives its bytes back, and those still waiting
/// go out after unpausing.
#[tokio::test]
async fn requests_made_while_disconnected_hold_the_budget_until_they_end() {
    let b = backend().await;
    let c = paused_client(&b).await;

    let body = format!("\"{}\"", "y".repeat(100 * 1024));
    let soon = c
        .request_with_timeout("echo", body.as_bytes(), Duration::from_secs(2))
        .unwrap();
    let cancelled = c.request("echo", body.as_bytes()).unwrap();
    let held = c.stats().unsent_bytes;
    assert!(held > 2 * 100 * 1024, "{held}");
    let e = c.request("echo", body.as_bytes()).unwrap_err();
    assert_eq!(e.status(), Status::ErrSendBufferFull);

    c.cancel(cancelled).unwrap();
    let (r, skipped) = until(&c, |e| e.request_id() == cancelled).await;
    assert_eq!(r.status(), Status::ErrCancelled);
    assert!(
        skipped.iter().all(|e| e.request_id() != soon),
        "the cancel took longer than the other request's timeout"
    );
    let kept = c.request("echo", body.as_bytes()).unwrap();
    // Ids may differ in length by a digit.
    assert!(c.stats().unsent_bytes.abs_diff(held) < 4);

    let (r, _) = until(&c, |e| e.request_id() == soon).await;
    assert_eq!(r.status(), Status::ErrRequestTimeout);
    until_unsent(&c, |n| n.abs_diff(held / 2) < 4).await;

    c.unpause().unwrap();
    let (r, _) = until(&c, |e| e.request_id() == kept).await;
    assert_eq!(r.status(), Status::Ok);
    assert_eq!(r.data().len(), body.len());
    assert_eq!(c.stats().unsent_bytes, 0);
    close_and_drain(&c).await;
}

/// Closing gives back what never went out: the client's requests end with CLIENT_CLOSED and
/// the budget is empty once CLOSED is taken. A refusal just before does not bring a
/// SEND_READY for the client the app closed.
#[tokio::test]
async fn closing_gives_back_what_never_went_out() {
    let b = backend().await;
    let c = paused_client(&b).await;
    let body = format!("\"{}\"", "z".repeat(50 * 1024));
    let (ids, _) = fill(&c, &body);
    assert!(c.stats().unsent_bytes > 3 * 50 * 1024);
    let evs = close_and_drain(&c).await;
    for id in ids {
        let r = evs.iter().find(|e| e.request_id() == id).expect("answered");
        assert_eq!(r.status(), Status::ErrClientClosed);
    }
    assert_eq!(count(&evs, EventKind::SendReady), 0);
    assert_eq!(c.stats().unsent_bytes, 0);
}

/// Sends `body` until the budget refuses it; the ids accepted, and the refusal.
fn fill(c: &tether::Client, body: &str) -> (Vec<i64>, tether::Error) {
    let mut ids = Vec::new();
    loop {
        assert!(ids.len() < 1000, "never refused");
        match c.request("echo", body.as_bytes()) {
            Ok(id) => ids.push(id),
            Err(e) => {
                assert_eq!(e.status(), Status::ErrSendBufferFull, "{e}");
                return (ids, e);
            }
        }
    }
}

fn count(evs: &[tether::Event], kind: EventKind) -> usize {
    evs.iter().filter(|e| e.kind() == kind).count()
}

/// SEND_READY: a refused app learns when to send again without polling `unsent_bytes`. Not
/// for bytes coming back while nobody was refused, not while the refused request would not
/// fit with at most half the budget waiting, then exactly once for any number of refusals;
/// a later refusal starts over, and room made by writing counts as room made by ending.
#[tokio::test]
async fn a_refused_app_is_told_once_when_room_frees() {
    let b = backend().await;
    let c = paused_client(&b).await;
    let body = format!("\"{}\"", "w".repeat(30 * 1024));
    let first = c.request("echo", body.as_bytes()).unwrap();
    c.cancel(first).unwrap();
    let (_, seen) = until(&c, |e| e.request_id() == first).await;
    assert_eq!(count(&seen, EventKind::SendReady), 0, "nobody was refused");

    let (mut ids, refused) = fill(&c, &body);
    assert!(refused.message().contains("SEND_READY"), "{refused}");
    assert!(ids.len() >= 4, "{} requests fit", ids.len());
    assert!(c.request("echo", body.as_bytes()).is_err(), "refused again");
    let mut ready_at = None;
    while let Some(id) = ids.pop() {
        c.cancel(id).unwrap();
        // The request's message is gone before its RESPONSE: a SEND_READY it made comes first.
        let (r, seen) = until(&c, |e| e.request_id() == id).await;
        assert_eq!(r.status(), Status::ErrCancelled);
        let left = c.stats().unsent_bytes;
        let fits = left <= LIMIT / 2;
        assert_eq!(
            count(&seen, EventKind::SendReady),
            usize::from(fits && ready_at.is_none()),
            "{left} bytes left, ready already at {ready_at:?}"
        );
        if fits && ready_at.is_none() {
            ready_at = Some(left);
        }
    }
    assert!(ready_at.is_some());

    // Refused again, then the link takes everything: one SEND_READY, among the answers.
    let (ids, _) = fill(&c, &body);
    c.unpause().unwrap();
    let mut seen = Vec::new();
    for id in &ids {
        let (r, skipped) = until(&c, |e| e.request_id() == *id).await;
        assert_eq!(r.status(), Status::Ok);
        seen.extend(skipped);
    }
    assert_eq!(count(&seen, EventKind::SendReady), 1);
    let evs = close_and_drain(&c).await;
    assert_eq!(count(&evs, EventKind::SendReady), 0);
}
