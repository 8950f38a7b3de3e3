//! The main job: starts the embedded testkit backend and walks through connect, ping, ack, a
//! cut and the resume, all through the tether library.
//!
//! Run: `cargo run --release --example demo`

use std::time::Duration;

use tether::{Client, Config, Event, EventKind};
use tether_testkit::gomuks::{Backend, BackendConfig};

fn show(ev: &Event) {
    match ev.kind() {
        EventKind::Message if ev.request_id() < 0 => {
            println!(
                "  event {:>6}  {} ({} bytes)",
                ev.request_id(),
                ev.command(),
                ev.data().len()
            )
        }
        EventKind::Message => println!("  event      0  {}", ev.command()),
        EventKind::Pong => println!(
            "  pong   rtt {:?}, acked {}",
            ev.rtt().unwrap_or_default(),
            if ev.acked_id() == 0 {
                "nothing new".to_owned()
            } else {
                ev.acked_id().to_string()
            }
        ),
        EventKind::Connected => println!("CONNECTED (resume attempted: {})", ev.resume_attempted()),
        EventKind::Disconnected => println!(
            "DISCONNECTED: {} ({}), retry in {:?}",
            ev.status(),
            String::from_utf8_lossy(ev.data()),
            ev.retry_in()
        ),
        EventKind::Response => println!(
            "  response #{} {:?}: {}",
            ev.request_id(),
            ev.status(),
            String::from_utf8_lossy(ev.data())
        ),
        k => println!("{k:?}"),
    }
}

async fn until(c: &Client, mut f: impl FnMut(&Event) -> bool) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), c.next_event())
            .await
            .expect("demo step timed out")
            .expect("client closed early");
        show(&ev);
        if f(&ev) {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backend = Backend::start(BackendConfig::default()).await?;
    println!("== testkit backend on {}", backend.addr());

    let cfg = Config::builder(&backend.http_url())
        .basic_auth("tether", "tether-password")
        .ping_interval(Duration::from_millis(500))
        .receive_timeout(Duration::from_secs(5))
        .build()?;
    let client = Client::new(cfg);
    println!("== connect (password -> POST /_gomuks/auth -> cookie)");
    client.connect()?;
    until(&client, |e| e.command() == "init_complete").await;

    println!("== request");
    let id = client.request("echo", br#"{"hello":"tether"}"#)?;
    until(&client, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;

    println!("== 5 live events, then a ping acknowledges the newest");
    let newest = backend.push_events(5);
    until(&client, |e| {
        e.kind() == EventKind::Pong && e.acked_id() == newest
    })
    .await;
    println!("   backend's ack table: {:?}", backend.stats().acks);

    println!("== the backend cuts the connection; 7 events happen while we are away");
    backend.cut_all();
    let missed = backend.push_events(7);
    println!("== reconnect and resume (run_id + last_received_event={newest})");
    until(&client, |e| e.request_id() == missed).await;
    until(&client, |e| e.command() == "init_complete").await;
    println!("   resume state now: {:?}", client.resume_state());
    println!(
        "   backend counted {} resume(s), {} fresh start(s)",
        backend.stats().resumes,
        backend.stats().fresh_starts
    );

    println!("== close (1001 frees the backend's buffer entry)");
    client.close()?;
    until(&client, |e| e.kind() == EventKind::Closed).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!(
        "   backend saw close code {:?}",
        backend.stats().last_client_close_code
    );
    Ok(())
}
