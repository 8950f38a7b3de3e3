//! ping_ack_resume: the gomuks keepalive, acknowledgement and resume flow through the Rust API.
//!
//! Connects to a running tether-backend (or any gomuks backend), sends a request every two
//! seconds, prints each pong with its round-trip time and the event id it acknowledged, rides
//! out the cuts the backend makes, shows the events it missed being replayed, and closes
//! cleanly after the given number of seconds with close code 1000, so the backend keeps the
//! events a later client resuming from the printed resume state will need.
//!
//! ```sh
//! tether-backend --event-rate 20 --cut-after-events 40 &     # prints its address
//! cargo run --example ping_ack_resume -- http://127.0.0.1:PORT [seconds] [user] [password]
//! ```
//!
//! On each reconnect that asks to resume, the RESUMED event says how it went: `Succeeded` (the
//! missed events were replayed, each once), `Reset` (the backend restarted or lost the resume
//! point: the cached state is dropped and the fresh state follows) or `CaughtUp` (only with
//! `last_server_ts`).
//!
//! Exit status 0 when every buffered event arrived exactly once and in order, a reset starting
//! afresh.

use std::process::ExitCode;
use std::time::Duration;

use tether::{Client, Config, EventKind, ResumeOutcome};
use tokio::time::{interval_at, sleep, Instant};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(url) = args.get(1) else {
        eprintln!("usage: {} URL [seconds] [user] [password]", args[0]);
        return ExitCode::from(2);
    };
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let user = args.get(3).map_or("tether", String::as_str);
    let password = args.get(4).map_or("tether-password", String::as_str);

    let cfg = match Config::builder(url)
        .basic_auth(user, password)
        .ping_interval(Duration::from_secs(1))
        .build()
    {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("config: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = Client::new(cfg);
    if let Err(e) = client.connect() {
        eprintln!("connect: {e}");
        return ExitCode::FAILURE;
    }

    let mut tally = Tally::default();
    let close_at = sleep(Duration::from_secs(seconds));
    tokio::pin!(close_at);
    let mut requests = interval_at(
        Instant::now() + Duration::from_secs(2),
        Duration::from_secs(2),
    );
    let mut closing = false;
    loop {
        tokio::select! {
            () = &mut close_at, if !closing => {
                println!("closing (1000: the backend keeps what a resume needs)");
                if let Err(e) = client.close_keep_resume() {
                    eprintln!("close: {e}");
                }
                closing = true;
            }
            _ = requests.tick(), if !closing => {
                let body = br#"{"hello":"from Rust"}"#;
                match client.request("echo", body) {
                    Ok(id) => println!("request {id}: echo {}", String::from_utf8_lossy(body)),
                    Err(e) => eprintln!("request: {e}"),
                }
            }
            ev = client.next_event() => {
                let Some(ev) = ev else { break };
                if !tally.show(&ev) {
                    break;
                }
            }
        }
    }
    // The loop ends only with CLOSED: the resume state no longer moves.
    let state = client.resume_state();
    println!(
        "resume state to persist: run_id {}, last event {}",
        state.run_id, state.last_received_event
    );
    println!(
        "summary: {} events, {} gaps, {} cuts survived, {} resets, {} pongs",
        tally.received, tally.gaps, tally.cuts, tally.resets, tally.pongs
    );
    if tally.gaps == 0 && tally.received > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What the example has seen; buffered event ids count down (-1, -2, ...), so a gap is an id
/// that is not one below the previous.
#[derive(Default)]
struct Tally {
    /// Most recent buffered event id; 0: none since a fresh start.
    last_id: i64,
    received: u64,
    gaps: u64,
    cuts: u64,
    resets: u64,
    pongs: u64,
    /// Between a CONNECTED that asked to resume and its RESUMED: the events that arrive are the
    /// replay if the resume succeeds, the new state if it is reset, so an id that does not
    /// follow is only a gap once RESUMED says `Succeeded`.
    resuming: bool,
    unsure: u64,
    replayed: u64,
}

impl Tally {
    /// Prints one event; false once the final CLOSED event arrived.
    fn show(&mut self, ev: &tether::Event) -> bool {
        let data = String::from_utf8_lossy(ev.data());
        match ev.kind() {
            EventKind::Connecting => println!("connecting (attempt {})", ev.attempt()),
            EventKind::Connected => {
                self.resuming = ev.resume_attempted();
                self.replayed = 0;
                if self.resuming {
                    println!("connected, resuming after the last received event");
                    println!("  resume from event {}", self.last_id);
                } else {
                    println!("connected");
                    self.last_id = 0; // no resume asked: the backend sends its state afresh
                }
            }
            // Once per connection that asked to resume, before the message that decided it.
            EventKind::Resumed => {
                match ev.resume_outcome() {
                    // The missed events arrived just before, each once: keep the cached state.
                    Some(ResumeOutcome::Succeeded) => {
                        self.gaps += self.unsure;
                        let verdict = if self.gaps > 0 {
                            "WITH GAPS"
                        } else {
                            "in order, no gap"
                        };
                        println!(
                            "  RESUMED Succeeded: replayed {} missed events, up to {}; {verdict}",
                            self.replayed, self.last_id
                        );
                    }
                    // The backend restarted or no longer held the resume point: the missed
                    // events are gone and its state comes afresh (a new run's ids start at -1).
                    Some(ResumeOutcome::Reset) => {
                        self.resets += 1;
                        println!("  RESUMED Reset: drop the cached state; the fresh state follows");
                        self.last_id = 0;
                    }
                    // Only with `last_server_ts`: the missed events are gone, but a
                    // sync_complete with catchup brings the cached state up to date.
                    Some(ResumeOutcome::CaughtUp) => {
                        println!(
                            "  RESUMED CaughtUp: keep the cached state; a catchup sync follows"
                        );
                        self.last_id = 0;
                    }
                    _ => {}
                }
                self.resuming = false;
                self.unsure = 0;
            }
            EventKind::Disconnected => {
                // A cut is retried; the DISCONNECTED of our own close is not.
                self.cuts += u64::from(ev.retry_in().is_some());
                let retry = ev.retry_in().map_or(-1, |d| d.as_millis() as i64);
                println!(
                    "disconnected: {}, close code {}, {data:?}; retry in {retry} ms",
                    ev.status(),
                    ev.close_code()
                );
            }
            EventKind::Message if ev.request_id() < 0 => {
                let id = ev.request_id();
                if self.last_id != 0 && id != self.last_id - 1 {
                    if self.resuming {
                        println!(
                            "  event {id} after {}: a gap unless the resume was reset",
                            self.last_id
                        );
                        self.unsure += 1;
                    } else {
                        println!("  GAP: event {id} after {}", self.last_id);
                        self.gaps += 1;
                    }
                }
                if id < self.last_id || self.last_id == 0 {
                    self.last_id = id;
                }
                self.received += 1;
                if self.resuming {
                    if self.replayed == 0 {
                        println!("  replay starts at event {id}");
                    }
                    self.replayed += 1;
                }
            }
            EventKind::Message => println!("event {}", ev.command()),
            EventKind::Response => {
                println!("response {}: {} {data}", ev.request_id(), ev.status())
            }
            EventKind::Pong => {
                self.pongs += 1;
                let rtt = ev.rtt().map_or(-1, |d| d.as_micros() as i64);
                println!("pong: rtt {rtt} us, acknowledged event {}", ev.acked_id());
            }
            EventKind::Closed => {
                println!("closed");
                return false;
            }
            _ => {}
        }
        true
    }
}
