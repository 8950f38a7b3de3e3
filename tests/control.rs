//! The backend's HTTP control endpoints (for tests in other languages) drive real faults.

mod common;

use common::*;
use tether::{EventKind, Status};

/// Plain HTTP only: the control endpoints are on loopback.
fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(b: &tether_testkit::gomuks::Backend, path: &str) -> (u16, serde_json::Value) {
    let r = http()
        .post(format!("{}{path}", b.http_url()))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}

#[tokio::test]
async fn control_endpoints_push_fault_stats() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let (code, v) = post(&b, "/_testkit/push?n=5").await;
    assert_eq!(code, 200);
    let newest = v["newest_id"].as_i64().unwrap();
    assert_eq!(newest, -5);
    until(&c, |e| e.request_id() == newest).await;
    let stats: serde_json::Value = http()
        .get(format!("{}/_testkit/stats", b.http_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["newest_id"], -5);
    assert_eq!(stats["connections"], 1);
    assert_eq!(post(&b, "/_testkit/fault?kind=nonsense").await.0, 400);
    assert_eq!(post(&b, "/_testkit/fault?kind=invalid_json").await.0, 200);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrJson);
    until_kind(&c, EventKind::Connected).await;
    until_command(&c, "init_complete").await;
    assert_eq!(
        post(&b, "/_testkit/close?code=4001&reason=Event%20queue%20full")
            .await
            .0,
        200
    );
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(
        (d.status(), d.close_code()),
        (Status::ErrRemoteClosed, 4001)
    );
    // The query is percent-decoded: the close frame carries the reason as written.
    let reason = String::from_utf8_lossy(d.data()).into_owned();
    assert!(reason.contains("Event queue full"), "{reason}");
    close_and_drain(&c).await;
}

/// `POST /_testkit/cut?push=N` (spec §7, resume): the N events are buffered after every
/// connection is dropped, so the client gets them only as the replay of its resumed connection,
/// in order and once each.
#[tokio::test]
async fn spec7_cut_with_push_replays_the_pushed_events_on_resume() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let (_, v) = post(&b, "/_testkit/push?n=1").await;
    let last = v["newest_id"].as_i64().unwrap();
    until(&c, |e| e.request_id() == last).await;

    let (code, v) = post(&b, "/_testkit/cut?push=3").await;
    assert_eq!(code, 200);
    let newest = v["newest_id"].as_i64().unwrap();
    assert_eq!(newest, last - 3);
    until_kind(&c, EventKind::Disconnected).await;
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    let mut ids = Vec::new();
    let (ev, _) = until(&c, |e| {
        if e.request_id() < 0 {
            ids.push(e.request_id());
        }
        e.command() == "init_complete"
    })
    .await;
    assert_eq!(ev.command(), "init_complete");
    assert_eq!(
        ids,
        vec![last - 1, last - 2, last - 3],
        "replayed before init_complete"
    );
    // Without `push` the endpoint answers as before.
    let (code, v) = post(&b, "/_testkit/cut").await;
    assert_eq!((code, v["ok"].as_bool()), (200, Some(true)));
    assert!(v.get("newest_id").is_none());
    close_and_drain(&c).await;
}
