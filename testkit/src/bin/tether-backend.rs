//! `tether-backend`: the reference gomuks backend as a process for non-Rust tests and demos.

use std::time::Duration;

use tether_testkit::gomuks::{Backend, BackendConfig};
use tether_testkit::rwws::Hello;

const USAGE: &str = "usage: tether-backend [--listen 127.0.0.1:PORT] [--protocol gomuks|rwws]
  [--username U] [--password P] [--desktop-key K] [--token-key K] [--disable-auth]
  [--buffer-size N] [--ping-timeout-ms N] [--event-rate N] [--event-size MIN..MAX (300..2000)]
  [--seed N] [--not-logged-in] [--token-lifetime-ms N (default 7 days)]
  [--cut-after-events N] [--cut-after-bytes N] [--conn-queue-limit N (default 512, 0: none)]
  [--rwws-key BASE64]... [--rwws-ping-timeout-ms N] [--rwws-hello binary|text|wrong|silent]
  [--rwws-silent-auth] [--rooms N [--history H (default 20)]]
Serves gomuks at /_gomuks/websocket and rwws at /api/ws on the same port (--protocol is
accepted for clarity; both are always served). The default rwws key is dGV0aGVyLXRlc3Qta2V5.
--rooms seeds the room model (testkit rooms.rs): a space, N rooms !r0..!r{N-1}:example.org with
H messages each, and an invite; TETHER_BACKEND_ROOMS / TETHER_BACKEND_HISTORY do the same.
Prints {\"started\":true,\"address\":\"127.0.0.1:PORT\"} once listening; loopback only.
With TETHER_BACKEND_EXIT_ON_STDIN_EOF=1 it exits once its stdin ends: a test harness that
hands it a pipe has it end with the harness, even one killed without a chance to clean up.";

fn main() {
    if std::env::var_os("TETHER_BACKEND_EXIT_ON_STDIN_EOF").is_some_and(|v| v == "1") {
        std::thread::spawn(|| {
            use std::io::Read;
            let mut buf = [0u8; 256];
            // Anything written is ignored: only the end (or an error) matters.
            while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }
    let mut cfg = BackendConfig::default();
    if let Ok(k) = std::env::var("GOMUKS_DESKTOP_KEY") {
        cfg.desktop_key = Some(k);
    }
    let mut rate = 0.0f64;
    let env_usize = |k: &str| -> Option<usize> {
        let v = std::env::var(k).ok()?;
        Some(v.trim().parse().unwrap_or_else(|e| {
            eprintln!("tether-backend: {k}: {e}\n{USAGE}");
            std::process::exit(2)
        }))
    };
    let mut rooms: Option<usize> = env_usize("TETHER_BACKEND_ROOMS");
    let mut history: usize = env_usize("TETHER_BACKEND_HISTORY").unwrap_or(20);
    let mut rwws_keys_given = false;
    let mut args = std::env::args().skip(1);
    let fail = |m: String| -> ! {
        eprintln!("tether-backend: {m}\n{USAGE}");
        std::process::exit(2)
    };
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| fail(format!("{a} needs a value")))
        };
        match a.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            "--listen" => {
                cfg.listen = val()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--listen: {e}")))
            }
            "--protocol" => {
                let p = val();
                if p != "gomuks" && p != "rwws" {
                    fail(format!("unknown protocol {p:?}"));
                }
            }
            "--rwws-key" => {
                use base64::Engine;
                let k = base64::engine::general_purpose::STANDARD
                    .decode(val().trim())
                    .unwrap_or_else(|e| fail(format!("--rwws-key: {e}")));
                if !rwws_keys_given {
                    cfg.rwws.keys.clear();
                    rwws_keys_given = true;
                }
                cfg.rwws.keys.push(k);
            }
            "--rwws-ping-timeout-ms" => {
                let ms: u64 = val()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--rwws-ping-timeout-ms: {e}")));
                cfg.rwws.ping_timeout = Duration::from_millis(ms.max(1));
            }
            "--rwws-hello" => {
                cfg.rwws.hello = match val().as_str() {
                    "binary" => Hello::Binary,
                    "text" => Hello::Text,
                    "wrong" => Hello::Wrong,
                    "silent" => Hello::Silent,
                    other => fail(format!("--rwws-hello: unknown mode {other:?}")),
                }
            }
            "--rwws-silent-auth" => cfg.rwws.silent_auth = true,
            "--conn-queue-limit" => {
                let n: usize = val()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--conn-queue-limit: {e}")));
                cfg.conn_queue_limit = (n > 0).then_some(n);
            }
            "--username" => cfg.username = val(),
            "--password" => cfg.password = val(),
            "--desktop-key" => cfg.desktop_key = Some(val()),
            "--token-key" => cfg.token_key = val().into_bytes(),
            "--disable-auth" => cfg.disable_auth = true,
            "--not-logged-in" => cfg.logged_in = false,
            "--buffer-size" => {
                cfg.event_buffer_size = val()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--buffer-size: {e}")))
            }
            "--token-lifetime-ms" => {
                let ms: u64 = val()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--token-lifetime-ms: {e}")));
                cfg.token_lifetime = Duration::from_millis(ms.max(1000));
            }
            "--ping-timeout-ms" => {
                let ms: u64 = val()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--ping-timeout-ms: {e}")));
                cfg.ping_timeout = Duration::from_millis(ms.max(1));
            }
            "--event-rate" => {
                rate = val()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--event-rate: {e}")))
            }
            "--cut-after-events" => {
                cfg.cut_after_events = Some(
                    val()
                        .parse()
                        .unwrap_or_else(|e| fail(format!("--cut-after-events: {e}"))),
                )
            }
            "--cut-after-bytes" => {
                cfg.cut_after_bytes = Some(
                    val()
                        .parse()
                        .unwrap_or_else(|e| fail(format!("--cut-after-bytes: {e}"))),
                )
            }
            "--event-size" => {
                let v = val();
                let parsed = v
                    .split_once("..")
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .filter(|(a, b): &(usize, usize)| a <= b && *b <= 16 << 20);
                cfg.event_size = parsed.unwrap_or_else(|| {
                    fail(format!("--event-size: want MIN..MAX bytes, got {v:?}"))
                });
            }
            "--rooms" => {
                rooms = Some(
                    val()
                        .parse()
                        .unwrap_or_else(|e| fail(format!("--rooms: {e}"))),
                )
            }
            "--history" => {
                history = val()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--history: {e}")))
            }
            "--seed" => {
                cfg.seed = val()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--seed: {e}")))
            }
            other => fail(format!("unknown argument {other:?}")),
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(format!("runtime: {e}")));
    rt.block_on(async move {
        let backend = Backend::start(cfg)
            .await
            .unwrap_or_else(|e| fail(format!("cannot listen: {e}")));
        if let Some(n) = rooms {
            backend.seed_rooms(n, history);
        }
        println!("{{\"started\":true,\"address\":\"{}\"}}", backend.addr());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if rate > 0.0 {
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(1.0 / rate.min(100_000.0)));
            loop {
                tokio::select! {
                    _ = tick.tick() => { backend.push_events(1); }
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
    });
}
