//! Resume latency through the Rust API: the time from the backend cutting the connection to the
//! first *replayed* event delivered to the application (gomuks-rpc.md §7).
//!
//! The server is the testkit's `tether-backend` (the reference gomuks backend with gomuks' event
//! buffer and resume rule), in its own process. Each cycle starts caught up at event id `last`
//! and asks the backend, over its HTTP control port, to cut every connection and push
//! `per_cut` events under one lock (`POST /_testkit/cut?push=N`): the cut connection never
//! carries them and the client cannot reconnect before they are buffered, so they can only
//! reach the client as the replay of the resumed connection. The cycle then checks that the
//! first event id after the reconnect is exactly `last - 1` (ids are negative and grow more
//! negative), that every replayed id follows without gap or duplicate, that all of them arrive
//! before `init_complete` (replayed, not live), and that the connection was a resume attempt.
//! Any deviation aborts the run, so the figure cannot come from the wrong event.
//!
//! Times are taken when `poll` hands the event to the application; t0 is taken just before
//! the control request is sent, so every figure is an upper bound (the control round trip,
//! reported as `ctl_ms`, bounds how much later the cut itself happened).
//!
//! Prints one JSON line with every sample in milliseconds; bench/report.py computes the
//! percentiles (the C client, bench/c/resume_c.c, prints the same shape).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tether::{Event, EventKind, Pop};

/// The library's default gomuks reconnect backoff (src/config.rs), as a user gets it. Only
/// reported and checked against the delays the library draws: a changed default fails the run
/// instead of being mislabelled.
pub const DEFAULT_BACKOFF_MS: (u64, u64) = (125, 10_000);

/// The testkit backend's default credentials (`tether-backend` without `--username`).
pub const USER: (&str, &str) = ("tether", "tether-password");

/// Pause after a cycle is caught up, so each cut hits a settled connection.
pub const PAUSE: Duration = Duration::from_millis(20);

/// No single event may take longer than this; a lost resume shows as a failure, not a hang.
const STALL: Duration = Duration::from_secs(30);

/// One `POST` to the backend's control port; returns the `newest_id` of the answer, if any.
pub fn control(addr: &str, path: &str) -> Option<i64> {
    let mut s = TcpStream::connect(addr).expect("control connect");
    s.set_nodelay(true).ok();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("control write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("control read");
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "control {path} failed: {resp}"
    );
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body.trim()).expect("control body");
    v["newest_id"].as_i64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Samples of one run, in milliseconds from t0 (`retry_ms` and `ctl_ms` are durations).
#[derive(Default)]
struct Samples {
    disc: Vec<f64>,
    conn: Vec<f64>,
    first: Vec<f64>,
    caught_up: Vec<f64>,
    retry: Vec<f64>,
    ctl: Vec<f64>,
}

fn next_event(client: &tether::Client) -> Event {
    match client.poll(Some(STALL)) {
        Pop::Event(ev) => ev,
        other => panic!("no event within {STALL:?}: {other:?}"),
    }
}

/// Consumes the start-up of the first (fresh) connection up to `init_complete`.
fn wait_initial(client: &tether::Client) {
    loop {
        let ev = next_event(client);
        match ev.kind() {
            EventKind::Message if ev.command() == "init_complete" => return,
            EventKind::Disconnected => panic!("disconnected before the first sync: {ev:?}"),
            _ => {}
        }
    }
}

/// Consumes live events up to id `newest`, checking each id follows the one before.
fn consume_live(client: &tether::Client, newest: i64, count: usize) {
    let mut want = newest + count as i64 - 1;
    while want >= newest {
        let ev = next_event(client);
        match ev.kind() {
            EventKind::Message if ev.request_id() != 0 => {
                assert_eq!(ev.request_id(), want, "live event out of sequence");
                want -= 1;
            }
            EventKind::Disconnected => panic!("disconnected during warm-up: {ev:?}"),
            _ => {}
        }
    }
}

pub fn run(url: &str, cuts: usize, per_cut: usize, backoff_min_ms: Option<u64>) {
    assert!(per_cut >= 1, "a cut needs at least one event to replay");
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut b = tether::Config::builder(url)
        .basic_auth(USER.0, USER.1)
        .compression(true) // the library default, stated so the output's label stays true
        .allow_insecure_credentials(true);
    let (min_ms, max_ms) = match backoff_min_ms {
        Some(min) => {
            let max = 1000.max(min);
            b = b.reconnect_backoff(Duration::from_millis(min), Duration::from_millis(max));
            (min, max)
        }
        None => DEFAULT_BACKOFF_MS,
    };
    // Everything else (15 s pings, timeouts) stays at the library default.
    let client = tether::Client::new(b.build().expect("config"));
    client.connect().expect("connect");
    wait_initial(&client);
    // A resume point needs an event: one live batch first.
    let mut last = control(addr, &format!("/_testkit/push?n={per_cut}")).expect("newest_id");
    consume_live(&client, last, per_cut);

    let mut s = Samples::default();
    for cycle in 0..cuts {
        std::thread::sleep(PAUSE);
        let t0 = Instant::now();
        let newest =
            control(addr, &format!("/_testkit/cut?push={per_cut}")).expect("cut without newest_id");
        s.ctl.push(ms(t0.elapsed()));
        assert_eq!(
            newest,
            last - per_cut as i64,
            "cycle {cycle}: events were pushed by someone else"
        );
        let (mut disc, mut conn, mut first) = (None, None, None);
        let mut want = last - 1;
        loop {
            let ev = next_event(&client);
            let at = ms(t0.elapsed());
            match ev.kind() {
                EventKind::Connecting | EventKind::Pong => {}
                EventKind::Disconnected => {
                    // A second one would mean a reconnect attempt failed.
                    assert!(disc.is_none(), "cycle {cycle}: reconnect failed: {ev:?}");
                    let retry = ev.retry_in().expect("a cut is retried");
                    let r = ms(retry);
                    assert!(
                        r >= min_ms as f64 / 2.0 - 0.001 && r <= min_ms as f64 + 0.001,
                        "cycle {cycle}: first retry delay {r:.3} ms outside [{}, {min_ms}] ms; \
                         has the library's default backoff changed? (DEFAULT_BACKOFF_MS)",
                        min_ms as f64 / 2.0
                    );
                    s.retry.push(r);
                    disc = Some(at);
                }
                // The library's own verdict; the replay below is checked event by event too.
                EventKind::Resumed => assert_eq!(
                    ev.resume_outcome(),
                    Some(tether::ResumeOutcome::Succeeded),
                    "cycle {cycle}: resume failed"
                ),
                EventKind::Connected => {
                    assert!(disc.is_some(), "cycle {cycle}: CONNECTED without a cut");
                    assert!(ev.resume_attempted(), "cycle {cycle}: no resume attempted");
                    conn = Some(at);
                }
                EventKind::Message => {
                    assert!(
                        conn.is_some(),
                        "cycle {cycle}: {} {} arrived on the cut connection",
                        ev.command(),
                        ev.request_id()
                    );
                    let id = ev.request_id();
                    if id == 0 {
                        match ev.command() {
                            "init_complete" => {
                                assert!(
                                    want == newest - 1,
                                    "cycle {cycle}: init_complete before the replay ended \
                                     (next expected {want}, newest {newest})"
                                );
                                s.caught_up.push(at);
                                break;
                            }
                            "sync_complete" => {
                                panic!("cycle {cycle}: fresh start (initial sync): resume failed")
                            }
                            _ => {} // run_id, client_state, sync_status, image_auth_token
                        }
                        continue;
                    }
                    assert!(
                        id == want,
                        "cycle {cycle}: expected event {want}, got {id} ({})",
                        if id < want { "gap" } else { "duplicate" }
                    );
                    if first.is_none() {
                        first = Some(at);
                    }
                    want -= 1;
                }
                other => panic!("cycle {cycle}: unexpected {other:?}: {ev:?}"),
            }
        }
        s.disc.push(disc.expect("DISCONNECTED"));
        s.conn.push(conn.expect("CONNECTED"));
        s.first.push(first.expect("a replayed event"));
        last = newest;
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "{{\"client\":\"rust\",\"backoff_default\":{},\"backoff_min_ms\":{min_ms},\"backoff_max_ms\":{max_ms},\
         \"compress\":1,\"cuts\":{cuts},\"per_cut\":{per_cut},\"pause_ms\":{},\"replayed_checked\":{},\
         \"disc_ms\":[{}],\"conn_ms\":[{}],\"first_ms\":[{}],\"caught_up_ms\":[{}],\"retry_ms\":[{}],\"ctl_ms\":[{}]}}",
        backoff_min_ms.is_none(),
        PAUSE.as_millis(),
        cuts * per_cut,
        list(&s.disc),
        list(&s.conn),
        list(&s.first),
        list(&s.caught_up),
        list(&s.retry),
        list(&s.ctl)
    );
    let _ = client.close();
    while let Pop::Event(_) = client.poll(Some(Duration::from_secs(5))) {}
}
