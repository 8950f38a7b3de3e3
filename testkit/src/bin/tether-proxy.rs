//! `tether-proxy`: the fault-injecting TCP proxy as a process, for tests in other languages.
//!
//! Prints `{"started":true,"address":"127.0.0.1:PORT"}` once listening, then reads commands,
//! one per line, on stdin (each answered with `ok` or `error: ...` on stdout):
//!   cut | slice N | slice off | delay MS | rst on|off | blackhole on|off | schedule N,N,...
//!   | connections
//! It exits when stdin closes.

use std::io::Write;
use std::time::Duration;

use tether_testkit::proxy::Proxy;
use tokio::io::{AsyncBufReadExt, BufReader};

const USAGE: &str = "usage: tether-proxy --upstream 127.0.0.1:PORT
Forwards 127.0.0.1:0 (printed) to the upstream; commands on stdin:
  cut | slice N | slice off | delay MS | rst on|off | blackhole on|off | schedule N,N,... | connections";

fn main() {
    let mut upstream = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--upstream" => upstream = args.next(),
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("tether-proxy: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let Some(upstream) = upstream.and_then(|u| u.parse().ok()) else {
        eprintln!("tether-proxy: --upstream 127.0.0.1:PORT is required\n{USAGE}");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async move {
        let p = match Proxy::start(upstream).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("tether-proxy: cannot listen: {e}");
                std::process::exit(1);
            }
        };
        say(&format!(
            "{{\"started\":true,\"address\":\"{}\"}}",
            p.addr()
        ));
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            let reply = match words.as_slice() {
                ["cut"] => {
                    p.cut_all();
                    "ok".to_owned()
                }
                ["slice", "off"] => {
                    p.set_slice(None);
                    "ok".to_owned()
                }
                ["slice", n] => match n.parse() {
                    Ok(n) => {
                        p.set_slice(Some(n));
                        "ok".to_owned()
                    }
                    Err(e) => format!("error: {e}"),
                },
                ["delay", ms] => match ms.parse() {
                    Ok(ms) => {
                        p.set_delay(Duration::from_millis(ms));
                        "ok".to_owned()
                    }
                    Err(e) => format!("error: {e}"),
                },
                ["rst", on @ ("on" | "off")] => {
                    p.set_reset(*on == "on");
                    "ok".to_owned()
                }
                ["blackhole", on @ ("on" | "off")] => {
                    p.set_blackhole(*on == "on");
                    "ok".to_owned()
                }
                ["schedule", list] => {
                    match list
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<Vec<u64>, _>>()
                    {
                        Ok(v) => {
                            p.set_cut_schedule(v);
                            "ok".to_owned()
                        }
                        Err(e) => format!("error: {e}"),
                    }
                }
                ["connections"] => p.connections().to_string(),
                [] => continue,
                _ => format!("error: unknown command {line:?}"),
            };
            say(&reply);
        }
    });
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
