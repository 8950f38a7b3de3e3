//! The backend's HTTP control endpoints (for tests in other languages) drive real faults.

mod common;

use common::*;
use tether::{EventKind, Status};

/// reqwest is built without a default TLS provider (the library hands it its own config).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
