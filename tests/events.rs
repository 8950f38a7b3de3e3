//! The RESUMED and TOKEN_RENEWED events over real sockets against the testkit backend. Each
//! test names the section of docs/protocol/gomuks-rpc.md it checks.

mod common;

use std::time::Duration;

use common::*;
use tether::{Config, EventKind, ResumeOutcome, Status};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A client of `b` past `init_complete` that has received three pushed events; returns it
/// and the newest event's id.
async fn three_events_seen(
    b: &tether_testkit::gomuks::Backend,
    f: impl FnOnce(tether::ConfigBuilder) -> tether::ConfigBuilder,
) -> (tether::Client, i64) {
    let c = client(b, f);
    until_command(&c, "init_complete").await;
    let seen = b.push_events(3);
    until(&c, |e| e.request_id() == seen).await;
    (c, seen)
}

fn resumed(evs: &[tether::Event]) -> Vec<Option<ResumeOutcome>> {
    evs.iter()
        .filter(|e| e.kind() == EventKind::Resumed)
        .map(|e| e.resume_outcome())
        .collect()
}

/// §7.2/§7.5: a cut, then a resume that replays every missed event: one RESUMED with
/// `Succeeded`, after the replayed events and just before `init_complete`. A connection that
/// asked for no resume gets no RESUMED.
#[tokio::test]
async fn spec7_2_resume_after_a_cut_reports_succeeded() {
    let b = backend().await;
    let c = client(&b, |c| c);
    let (_, first) = until_command(&c, "init_complete").await;
    assert!(resumed(&first).is_empty(), "{:?}", kinds(&first));
    let seen = b.push_events(3);
    until(&c, |e| e.request_id() == seen).await;
    b.cut_all();
    let missed = b.push_events(5);
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    let (init, evs) = until_command(&c, "init_complete").await;
    assert_eq!(
        resumed(&evs),
        [Some(ResumeOutcome::Succeeded)],
        "{:?}",
        kinds(&evs)
    );
    let at = evs
        .iter()
        .position(|e| e.kind() == EventKind::Resumed)
        .unwrap();
    assert_eq!(at, evs.len() - 1, "RESUMED comes just before init_complete");
    assert_eq!(evs[at].status(), Status::Ok);
    assert_eq!(evs[at].command(), "");
    assert_eq!(init.resume_outcome(), None);
    assert_eq!(
        event_ids(&evs[..at]),
        (missed..seen).rev().collect::<Vec<_>>()
    );
    assert_eq!(c.stats().resumes_succeeded, 1);
    close_and_drain(&c).await;
}

/// §7.2: a backend restart changes `run_id`: RESUMED with `Reset` comes before the new
/// `run_id` message and before the `sync_complete` with `clear_state`.
#[tokio::test]
async fn spec7_2_backend_restart_reports_reset() {
    let b = backend().await;
    let (c, _) = three_events_seen(&b, |c| c).await;
    b.restart();
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    let (ev, before) = until_kind(&c, EventKind::Resumed).await;
    assert_eq!(ev.resume_outcome(), Some(ResumeOutcome::Reset));
    assert!(before.iter().all(|e| e.command() != "run_id"));
    let (_, after) = until_command(&c, "init_complete").await;
    assert_eq!(after.first().map(|e| e.command()), Some("run_id"));
    assert!(after
        .iter()
        .any(|e| e.command() == "sync_complete" && json(e)["clear_state"] == true));
    assert!(
        resumed(&after).is_empty(),
        "decided once: {:?}",
        kinds(&after)
    );
    assert_eq!(c.stats().resumes_reset, 1);
    close_and_drain(&c).await;
}

/// §7.2/§7.4: more events while away than the backend's buffer holds: the resume point is
/// gone, the backend starts afresh in the same run, and RESUMED says `Reset` before the
/// `sync_complete` with `clear_state`.
#[tokio::test]
async fn spec7_2_buffer_overrun_reports_reset() {
    let b = backend_with(|c| c.event_buffer_size = 5).await;
    let (c, seen) =
        three_events_seen(&b, |c| c.ping_interval(ms(50)).receive_timeout(ms(2000))).await;
    assert!(b.wait_for(|s| s.last_ack == seen, WAIT).await);
    b.reject_upgrades(u64::MAX);
    b.cut_all();
    until_kind(&c, EventKind::Disconnected).await;
    b.push_events(10);
    let run = b.stats().run_id;
    b.reject_upgrades(0);
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    let (ev, _) = until_kind(&c, EventKind::Resumed).await;
    assert_eq!(ev.resume_outcome(), Some(ResumeOutcome::Reset));
    let (sync, _) = until_command(&c, "sync_complete").await;
    assert_eq!(json(&sync)["clear_state"], true);
    assert_eq!(b.stats().run_id, run, "same run: the buffer, not a restart");
    assert_eq!(c.stats().resumes_reset, 1);
    close_and_drain(&c).await;
}

/// §7.2/§6.1: the same overrun for a client that sends `last_server_ts`: the backend answers
/// with a catchup instead of the replay, and RESUMED says `CaughtUp` before that
/// `sync_complete` (with `catchup`, without `clear_state`).
#[tokio::test]
async fn spec7_2_buffer_overrun_with_last_server_ts_reports_caught_up() {
    let b = backend_with(|c| c.event_buffer_size = 5).await;
    let (c, seen) = three_events_seen(&b, |c| {
        c.ping_interval(ms(50))
            .receive_timeout(ms(2000))
            .last_server_ts(1_700_000_000_000)
    })
    .await;
    assert!(b.wait_for(|s| s.last_ack == seen, WAIT).await);
    b.reject_upgrades(u64::MAX);
    b.cut_all();
    until_kind(&c, EventKind::Disconnected).await;
    b.push_events(10);
    b.reject_upgrades(0);
    let (ev, _) = until_kind(&c, EventKind::Resumed).await;
    assert_eq!(ev.resume_outcome(), Some(ResumeOutcome::CaughtUp));
    let (sync, _) = until_command(&c, "sync_complete").await;
    assert_eq!(json(&sync)["catchup"], true);
    assert_ne!(json(&sync)["clear_state"], true);
    close_and_drain(&c).await;
}

/// §6.1, §7.5: a backend restart for a client that sends `last_server_ts`: the new run
/// answers with a catchup (`catchup`, no `clear_state`), not its state afresh, so RESUMED
/// says `CaughtUp` (dropping the cache on `Reset` and applying a delta would lose every
/// room the delta leaves out), once, before that `sync_complete`.
#[tokio::test]
async fn spec6_1_backend_restart_with_last_server_ts_reports_caught_up() {
    let b = backend().await;
    let (c, _) = three_events_seen(&b, |c| c.last_server_ts(1_700_000_000_000)).await;
    b.restart();
    let (ev, _) = until_kind(&c, EventKind::Resumed).await;
    assert_eq!(ev.resume_outcome(), Some(ResumeOutcome::CaughtUp));
    let (sync, _) = until_command(&c, "sync_complete").await;
    assert_eq!(json(&sync)["catchup"], true);
    assert_ne!(json(&sync)["clear_state"], true);
    let (_, after) = until_command(&c, "init_complete").await;
    assert!(resumed(&after).is_empty(), "decided once");
    assert_eq!(c.stats().resumes_reset, 1);
    close_and_drain(&c).await;
}

/// §1.2: a client holding a token renews it while connected, before it expires, with the
/// app's headers (the backend here stands behind a header-checking proxy), and announces
/// each new token with TOKEN_RENEWED, which carries no secret. The connection stays up.
#[tokio::test]
async fn spec1_2_token_is_renewed_while_connected() {
    let b = backend_with(|c| {
        c.token_lifetime = Duration::from_secs(3);
        c.required_header = Some(("x-proxy-auth".into(), "let-me-in".into()));
    })
    .await;
    let first = b.token();
    let c = client(&b, |c| c.header("X-Proxy-Auth", "let-me-in"));
    until_command(&c, "init_complete").await;
    let mut tokens = vec![first];
    for _ in 0..2 {
        let (ev, skipped) = until_kind(&c, EventKind::TokenRenewed).await;
        assert_no_drop(&skipped);
        assert!(ev.data().is_empty() && ev.command().is_empty());
        let t = c.auth_token().expect("a token");
        assert!(!tokens.contains(&t), "a new token each time");
        tokens.push(t);
    }
    let s = b.stats();
    assert!(s.token_renewals >= 2, "{s:?}");
    assert_eq!(s.total_connections, 1, "renewed without reconnecting");
    // Well past the first token's life: the renewed one still opens a connection.
    tokio::time::sleep(ms(1500)).await;
    b.cut_all();
    let (conn, skipped) = until_kind(&c, EventKind::Connected).await;
    assert!(
        skipped
            .iter()
            .all(|e| e.status() != Status::ErrUnauthorized),
        "{:?}",
        kinds(&skipped)
    );
    assert!(conn.attempt() >= 2);
    close_and_drain(&c).await;
}

/// §1.2: a 401 at the upgrade for a client that holds only a token: it renews the token with
/// the cookie once and connects, instead of stopping with UNAUTHORIZED.
#[tokio::test]
async fn spec1_2_upgrade_401_renews_a_token_only_client() {
    let b = backend().await;
    let first = b.token();
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    // Tokens carry their expiry in whole seconds: one from the next second differs.
    tokio::time::sleep(ms(1100)).await;
    b.reject_upgrades_with(1, 401);
    b.cut_all();
    let (ev, skipped) = until_kind(&c, EventKind::TokenRenewed).await;
    assert!(
        skipped
            .iter()
            .any(|e| e.kind() == EventKind::Connecting && e.attempt() == 2),
        "{:?}",
        kinds(&skipped)
    );
    assert!(ev.data().is_empty());
    assert_ne!(c.auth_token().unwrap(), first);
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert_eq!(
        conn.attempt(),
        2,
        "the same attempt, retried after the renewal"
    );
    assert_eq!(b.stats().token_renewals, 1);
    close_and_drain(&c).await;
}

/// §1.2: the first token of a password login is not announced (it replaces nothing); a new
/// login after a 401 replaces it and is.
#[tokio::test]
async fn spec1_2_relogin_after_a_401_is_announced_not_the_first_login() {
    let b = backend().await;
    let cfg = Config::builder(&b.http_url())
        .basic_auth("tether", "tether-password")
        .reconnect_backoff(ms(20), ms(200))
        .build()
        .unwrap();
    let c = start(cfg);
    assert_eq!(c.auth_token(), None);
    let (_, skipped) = until_command(&c, "init_complete").await;
    assert!(
        skipped.iter().all(|e| e.kind() != EventKind::TokenRenewed),
        "{:?}",
        kinds(&skipped)
    );
    let first = c.auth_token().expect("the login's token");
    tokio::time::sleep(ms(1100)).await;
    b.reject_upgrades_with(1, 401);
    b.cut_all();
    let (_, skipped) = until_kind(&c, EventKind::TokenRenewed).await;
    assert!(skipped.iter().all(|e| e.kind() != EventKind::Connected));
    assert_ne!(c.auth_token().unwrap(), first);
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert_eq!(conn.attempt(), 2);
    assert_eq!(b.stats().token_renewals, 0, "a login, not a renewal");
    close_and_drain(&c).await;
}

/// §1.2: a token that expires while the client holds it is a 401 renewal cannot cure: the
/// client stops with UNAUTHORIZED rather than retrying for ever.
#[tokio::test]
async fn spec1_2_expired_token_stops_with_unauthorized() {
    let b = backend_with(|c| c.token_lifetime = Duration::from_secs(1)).await;
    let token = b.token();
    tokio::time::sleep(ms(1100)).await;
    let c = client_at(&b.http_url(), &token, |c| c);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrUnauthorized);
    assert!(d.retry_in().is_none());
    until_kind(&c, EventKind::Closed).await;
}
