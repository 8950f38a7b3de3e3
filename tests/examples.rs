//! Runs `examples/ping_ack_resume.rs` the way its doc comment says, against a backend that cuts
//! every connection after 40 events, and checks what it claims to show: pings that acknowledge,
//! cuts survived, resumes that replay the missed events in order (gomuks-rpc.md §7.2, §7.3).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Builds the example and runs it for 6 s against a backend that cuts every 40 events while
/// one event a 50 ms is pushed; `after_2s` runs 2 s in. Returns its output, having checked
/// that it exited 0.
async fn run_example(after_2s: impl FnOnce(&tether_testkit::gomuks::Backend)) -> String {
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
    let run = tokio::task::spawn_blocking(move || {
        Command::new(example)
            .args([url.as_str(), "6"])
            .output()
            .expect("the example runs")
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    after_2s(&b);
    let out = run.await.unwrap();
    pusher.abort();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "exit {:?}\n{text}", out.status);
    text
}

/// §7.2: a backend restart in the middle is a RESUMED RESET: the example drops its state and
/// carries on with the new run's ids, counting no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec7_2_example_ping_ack_resume_follows_a_reset() {
    let text = run_example(|b| b.restart()).await;
    assert!(text.contains("RESUMED Reset"), "{text}");
    assert!(!text.contains("GAP"), "{text}");
    let summary = text.lines().last().unwrap_or_default();
    assert!(summary.contains(" 0 gaps"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec7_example_ping_ack_resume_survives_cuts_without_gaps() {
    let text = run_example(|_| {}).await;
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
