//! `tether demo`: the embedded testkit backend and a guided walk through connect, request,
//! ping and acknowledgement, a cut, and the resume, with a live status line on a terminal.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use tether::{Client, Config, Event, EventKind};
use tether_testkit::gomuks::{Backend, BackendConfig};

use crate::exit;

#[derive(Args)]
pub struct DemoArgs {
    /// Pause between steps, in milliseconds, to watch the status line.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

/// What the live line shows.
#[derive(Default)]
struct Live {
    state: &'static str,
    events: u64,
    last_event: i64,
    acked: i64,
    rtt_ms: f64,
    reconnects: u64,
}

impl Live {
    fn update(&mut self, ev: &Event) {
        match ev.kind() {
            EventKind::Connecting => self.state = "connecting",
            EventKind::Connected => self.state = "connected",
            EventKind::Disconnected => {
                self.state = "disconnected";
                self.reconnects += u64::from(ev.retry_in().is_some());
            }
            EventKind::Closed => self.state = "closed",
            EventKind::Message if ev.request_id() < 0 => {
                self.events += 1;
                self.last_event = ev.request_id();
            }
            EventKind::Pong => {
                self.rtt_ms = ev.rtt().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                if ev.acked_id() != 0 {
                    self.acked = ev.acked_id();
                }
            }
            _ => {}
        }
        if crate::stderr_is_tty() {
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\r\x1b[2K[{:<12}] events {:>3}  last {:>4}  acked {:>4}  rtt {:>6.2} ms  reconnects {}",
                self.state, self.events, self.last_event, self.acked, self.rtt_ms, self.reconnects
            );
            let _ = e.flush();
        }
    }
}

fn show(ev: &Event) {
    let line = match ev.kind() {
        EventKind::Message if ev.request_id() < 0 => format!(
            "  event {:>4}  {} ({} bytes)",
            ev.request_id(),
            ev.command(),
            ev.data().len()
        ),
        EventKind::Message => format!("  event    0  {}", ev.command()),
        EventKind::Pong => format!(
            "  pong        rtt {:.2} ms, acknowledged {}",
            ev.rtt().unwrap_or_default().as_secs_f64() * 1000.0,
            if ev.acked_id() == 0 {
                "nothing new".to_owned()
            } else {
                ev.acked_id().to_string()
            }
        ),
        EventKind::Connected => format!("CONNECTED (resume attempted: {})", ev.resume_attempted()),
        EventKind::Disconnected => format!(
            "DISCONNECTED: {} ({}); retry in {:?}",
            ev.status(),
            String::from_utf8_lossy(ev.data()),
            ev.retry_in()
        ),
        EventKind::Response => format!(
            "  response #{} {:?}: {}",
            ev.request_id(),
            ev.status(),
            String::from_utf8_lossy(ev.data())
        ),
        EventKind::Resumed => match ev.resume_outcome() {
            Some(tether::ResumeOutcome::Succeeded) => {
                "RESUMED: every missed event is replayed, once".to_owned()
            }
            Some(o) => format!("RESUMED: {o:?}, the cached state is stale"),
            None => "RESUMED".to_owned(),
        },
        k => format!("{k:?}"),
    };
    if crate::stderr_is_tty() {
        eprint!("\r\x1b[2K");
    }
    println!("{line}");
}

/// Shows events until one matches; a step that takes over 20 s fails the demo.
async fn until(
    c: &Client,
    live: &mut Live,
    mut f: impl FnMut(&Event) -> bool,
) -> Result<(), String> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), c.next_event())
            .await
            .map_err(|_| "demo step timed out".to_owned())?
            .ok_or("client closed early")?;
        show(&ev);
        live.update(&ev);
        if f(&ev) {
            return Ok(());
        }
    }
}

pub async fn run(a: DemoArgs) -> u8 {
    match walk(a).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("\ntether demo: {e}");
            exit::CONNECTION
        }
    }
}

async fn walk(a: DemoArgs) -> Result<(), String> {
    let pause = || tokio::time::sleep(Duration::from_millis(a.pause_ms));
    let backend = Backend::start(BackendConfig::default())
        .await
        .map_err(|e| format!("cannot start the backend: {e}"))?;
    println!("== testkit backend on {}", backend.addr());
    let cfg = Config::builder(&backend.http_url())
        .basic_auth("tether", "tether-password")
        .ping_interval(Duration::from_millis(500))
        .receive_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let client = Client::new(cfg);
    let mut live = Live::default();
    println!("== connect (password -> POST /_gomuks/auth -> cookie)");
    client.connect().map_err(|e| e.to_string())?;
    until(&client, &mut live, |e| e.command() == "init_complete").await?;
    pause().await;

    println!("== request");
    let id = client
        .request("echo", br#"{"hello":"tether"}"#)
        .map_err(|e| e.to_string())?;
    until(&client, &mut live, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await?;
    pause().await;

    println!("== 5 live events, then a ping acknowledges the newest");
    let newest = backend.push_events(5);
    until(&client, &mut live, |e| {
        e.kind() == EventKind::Pong && e.acked_id() == newest
    })
    .await?;
    println!("   backend's ack table: {:?}", backend.stats().acks);
    pause().await;

    println!("== the backend cuts the connection; 7 events happen while we are away");
    backend.cut_all();
    let missed = backend.push_events(7);
    println!("== reconnect and resume (run_id + last_received_event={newest})");
    until(&client, &mut live, |e| e.request_id() == missed).await?;
    until(&client, &mut live, |e| e.command() == "init_complete").await?;
    let stats = backend.stats();
    println!("   resume state now: {:?}", client.resume_state());
    println!(
        "   backend counted {} resume(s), {} fresh start(s); 12 events, none missed",
        stats.resumes, stats.fresh_starts
    );
    if stats.resumes != 1 || live.events != 12 {
        return Err(format!(
            "expected 1 resume and 12 events, saw {} and {}",
            stats.resumes, live.events
        ));
    }
    pause().await;

    println!("== close (1001 frees the backend's buffer entry)");
    client.close().map_err(|e| e.to_string())?;
    until(&client, &mut live, |e| e.kind() == EventKind::Closed).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    if crate::stderr_is_tty() {
        eprintln!();
    }
    println!(
        "   backend saw close code {:?}",
        backend.stats().last_client_close_code
    );
    let s = client.stats();
    println!(
        "== summary: {} connections ({} resumed), {} events in {} messages; {} payload bytes \
         arrived as {} bytes on the wire: compression saved {:.1}%",
        s.connections,
        s.resumes_succeeded,
        s.events_received,
        s.messages_received,
        s.payload_bytes_in,
        s.wire_bytes_in,
        crate::output::saved_percent(&s)
    );
    Ok(())
}
