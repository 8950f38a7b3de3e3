//! Runs `examples/ping_ack_resume.rs` the way its doc comment says, against a backend that cuts
//! every connection after 40 events, and checks what it claims to show: pings that acknowledge,
//! cuts survived, resumes that replay the missed events in order (gomuks-rpc.md §7.2, §7.3).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec7_example_ping_ack_resume_survives_cuts_without_gaps() {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "ping_ack_resume"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the example failed");
    // target/<profile>/deps/<this test> -> target/<profile>/examples/ping_ack_resume
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/ping_ack_resume");

    let b = std::sync::Arc::new(backend_with(|c| c.cut_after_events = Some(40)).await);
    let url = b.http_url();
    let pusher = {
        let b = b.clone();
        tokio::spawn(async move {
            loop {
                b.push_events(1);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let out = tokio::task::spawn_blocking(move || {
        Command::new(example)
            .args([url.as_str(), "6"])
            .output()
            .expect("the example runs")
    })
    .await
    .unwrap();
    pusher.abort();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{text}", out.status);
    for needle in [
        "connected, resuming after the last received event",
        "in order, no gap",
        "pong: rtt",
        "closing (1000",
        "closed",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("GAP"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("response ") && l.contains(": ok {")),
        "no answered request in:\n{text}"
    );
    let summary = text.lines().last().unwrap_or_default();
    assert!(summary.starts_with("summary: "), "{summary}");
    assert!(summary.contains(" 0 gaps"), "{summary}");
}
