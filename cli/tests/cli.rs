//! The `tether` binary driven as a subprocess against the testkit backend.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tether_testkit::gomuks::{Backend, BackendConfig};

const BIN: &str = env!("CARGO_BIN_EXE_tether");

async fn backend() -> Backend {
    Backend::start(BackendConfig::default()).await.unwrap()
}

/// Runs the binary with `stdin` and returns its output (bounded by a 30 s watchdog).
async fn run(args: &[&str], stdin: &str) -> Output {
    run_with_env(args, stdin, &[]).await
}

/// [`run`] with `env` added to the binary's environment.
async fn run_with_env(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&args)
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A process that refuses its arguments exits before reading: a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let pid = child.id();
        let watchdog = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(30));
            // SAFETY: kill on a pid we spawned; harmless if it already exited.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        let out = child.wait_with_output().unwrap();
        drop(watchdog);
        out
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_for_every_command() {
    for args in [
        &["--help"][..],
        &["connect", "--help"],
        &["request", "--help"],
        &["demo", "--help"],
        &["--version"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
    let out = Command::new(BIN).args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Argument mistakes are usage errors (exit 2), never a panic or a password sent as a
/// request; a token in the environment stands back for an explicit --user login.
#[tokio::test]
async fn argument_mistakes_are_usage_errors_and_the_env_token_yields_to_a_login() {
    let b = backend().await;
    let url = b.http_url();
    for args in [
        &["request", &url, "echo", "--timeout", "nan"][..],
        &["request", &url, "echo", "--timeout", "-1"],
        &["request", &url, "echo", "--password-stdin"],
        &["connect", &url, "--password-stdin"],
    ] {
        let out = run(args, "hunter2\n").await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(b.stats().total_connections, 0, "nothing reached the server");
    let out = run_with_env(
        &[
            "request",
            &url,
            "echo",
            "--user",
            "tether",
            "--password-stdin",
        ],
        "tether-password\n",
        &[("TETHER_TOKEN", "a-stale-token")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// `connect` to a server that never answers ends at the end of stdin (exit 1: it never
/// connected), and `request --json-status` reports its failure as one JSON line.
#[tokio::test]
async fn a_connect_that_never_connects_ends_with_stdin_and_request_failures_can_be_json() {
    let t0 = Instant::now();
    let out = run(&["connect", "http://127.0.0.1:9", "--token", "t"], "").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let out = run(
        &[
            "request",
            "http://127.0.0.1:9",
            "echo",
            "--timeout",
            "0.3",
            "--json-status",
        ],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(4));
    let line: serde_json::Value = serde_json::from_str(text(&out.stderr).trim()).unwrap();
    assert_eq!(line["type"], "error");
    assert_eq!(line["status"], "request_timeout");
    assert!(
        line["message"].as_str().unwrap().contains("no answer"),
        "{line}"
    );
}

#[tokio::test]
async fn request_prints_data_and_exit_codes_follow_the_status() {
    let b = backend().await;
    let url = b.http_url();
    let pw = "tether-password\n";
    let auth = ["--user", "tether", "--password-stdin"];
    let req = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["request".to_owned(), url.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(auth.iter().map(|s| s.to_string()));
        v
    };
    let call = |v: Vec<String>, stdin: &'static str| async move {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        run(&refs, stdin).await
    };
    let out = call(req(&["echo", r#"{"a":1}"#]), pw).await;
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "{\"a\":1}\n".into())
    );
    let out = call(req(&["fail", r#"{"message":"nope"}"#]), pw).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("fail: nope"),
        "{}",
        text(&out.stderr)
    );
    let out = call(req(&["sleep", r#"{"ms":5000}"#, "--timeout", "0.3"]), pw).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = call(req(&["echo"]), "wrong-password\n").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unauthorized"));
    // The token from the environment works too, and never shows in the output.
    let token = b.token();
    let out = run_with_env(
        &["request", &url, "get_state"],
        "",
        &[("TETHER_TOKEN", &token)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(&token) && !text(&out.stderr).contains(&token));
    // Nothing listening: no answer in time, with the reason.
    let out = run(
        &["request", "http://127.0.0.1:9", "echo", "--timeout", "0.5"],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("connection"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn connect_streams_events_and_answers_stdin_requests() {
    let b = backend().await;
    let stdin = "tether-password\necho {\"x\":2}\nno_such_command\n";
    let args = [
        "connect",
        &b.http_url(),
        "--user",
        "tether",
        "--password-stdin",
        "--json-status",
    ];
    let out = run(&args, stdin).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    assert!(lines.iter().any(|l| l["command"] == "init_complete"));
    let responses: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["type"] == "response").collect();
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0]["data"], serde_json::json!({"x": 2}));
    assert_eq!(responses[1]["status"], "remote");
    let status: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every --json-status line is JSON"))
        .collect();
    assert!(status.iter().any(|s| s["type"] == "connected"));
    assert_eq!(status.last().unwrap()["type"], "closed");
    assert_eq!(b.stats().last_client_close_code, Some(1001));
}

/// Ctrl-C closes cleanly: close 1001 reaches the backend and the exit status is 130.
#[tokio::test]
async fn ctrl_c_closes_with_1001() {
    let b = backend().await;
    let url = b.http_url();
    let token = b.token();
    let code = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(["connect", &url, "--keep-open", "--ping-interval", "100"])
            .env("TETHER_TOKEN", &token)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut line = String::new();
        // Wait for a pong: connected, and the keepalive runs.
        while !line.starts_with("pong") {
            assert!(Instant::now() < deadline);
            line.clear();
            assert!(err.read_line(&mut line).unwrap() > 0);
        }
        // SAFETY: signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tether connect ignored Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert_eq!(code, Some(130));
    assert!(
        b.wait_for(
            |s| s.last_client_close_code == Some(1001),
            Duration::from_secs(5)
        )
        .await
    );
}

#[tokio::test]
async fn rwws_connect_sends_hex_packets_and_reports_pongs() {
    let b = backend().await;
    let args = [
        "connect",
        &b.http_url(),
        "--protocol",
        "rwws",
        "--token",
        tether_testkit::rwws::DEFAULT_KEY,
    ];
    let out = run(&args, "01 ff\n4243\n").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("server time"));
    let st = b.rwws().stats();
    assert_eq!(
        (st.settings, st.unknown),
        (vec!["01ff".to_owned()], vec!["4243".to_owned()])
    );
    // A rejected key: no retry, exit 1; the packet typed is printed back as never sent (or,
    // if the 3001 came before the line was read, its send failed), not dropped unseen.
    let out = run(
        &[
            "connect",
            &b.http_url(),
            "--protocol",
            "rwws",
            "--token",
            "d3Jvbmc=",
        ],
        "4243\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("3001"), "{err}");
    assert!(
        text(&out.stdout).contains(r#"{"type":"unsent","hex":"4243"}"#) || err.contains("tether: "),
        "{}\n{err}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn demo_walks_through_and_closes_with_1001() {
    let out = run(&["demo"], "").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("CONNECTED (resume attempted: true)"), "{s}");
    assert!(s.contains("backend saw close code Some(1001)"), "{s}");
    assert!(s.contains("compression saved"), "{s}");
}

/// -v/-vv show the library's records on stderr; --stats prints the counters at the end.
#[tokio::test]
async fn verbose_shows_log_records_and_stats_prints_counters() {
    let b = backend().await;
    let url = b.http_url();
    let token = b.token();
    let out = run(
        &["connect", &url, "--token", &token, "-vv", "--stats"],
        "echo {}\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("Info tether::session: connecting to ws://127.0.0.1:"),
        "{err}"
    );
    assert!(
        err.contains("Debug tether::transport: TCP connected to 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("closed by the app (close code 1001)"), "{err}");
    assert!(err.contains("stats: 1 attempts, 1 connections"), "{err}");
    assert!(
        err.contains("requests 1 sent, 0 in flight, 0 timed out"),
        "{err}"
    );
    assert!(!err.contains(&token), "the token reached stderr");
    let out = run(
        &[
            "connect",
            &url,
            "--token",
            &token,
            "-v",
            "--json-status",
            "--stats",
        ],
        "echo {}\n",
    )
    .await;
    let err = text(&out.stderr);
    assert!(
        !err.contains("Debug tether::"),
        "-v shows no debug records: {err}"
    );
    let stats = err
        .lines()
        .find(|l| l.contains(r#""type":"stats""#))
        .expect("a stats line");
    let v: serde_json::Value = serde_json::from_str(stats).unwrap();
    assert_eq!(
        (v["connections"].as_u64(), v["requests_sent"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(v["wire_bytes_in"].as_u64().unwrap() > 0);
    assert_eq!(v["unsent_bytes"].as_u64(), Some(0));
    let out = run(&["connect", &url, "--token", &token], "echo {}\n").await;
    assert!(
        !text(&out.stderr).contains("tether::"),
        "records without -v"
    );
}

#[tokio::test]
async fn no_compress_and_ca_options() {
    let b = backend().await;
    let url = b.http_url();
    let out = run(
        &["connect", &url, "--no-compress", "--token", &b.token()],
        "echo {\"plain\":true}\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(r#""data":{"plain":true}"#));
    let out = run(&["request", &url, "echo", "--ca", "/nonexistent.pem"], "").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent.pem"));
    let dir = std::env::temp_dir().join(format!("tether-cli-ca-{}", std::process::id()));
    std::fs::write(&dir, "not a certificate").unwrap();
    let out = run(
        &["request", &url, "echo", "--ca", dir.to_str().unwrap()],
        "",
    )
    .await;
    let _ = std::fs::remove_file(&dir);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// The trust flags reach the config: a malformed `--pin` is a usage error naming the pin,
/// `--client-cert` needs `--client-key`, and `--os-trust` is accepted.
#[tokio::test]
async fn trust_options() {
    let b = backend().await;
    let url = b.http_url();
    let out = run(
        &[
            "request",
            "https://localhost:1",
            "echo",
            "--pin",
            "sha256/short",
        ],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pin"), "{}", text(&out.stderr));
    let out = run(
        &["request", &url, "echo", "--client-cert", "/nonexistent.pem"],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--client-key"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        &["request", &url, "echo", "--os-trust", "--token", &b.token()],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// `--proxy` carries the login and the websocket through a SOCKS5 proxy with RFC 1929 auth
/// (microsocks, binding its outgoing side to 127.0.0.2 so the backend tells it apart); a wrong
/// proxy password exits with the unauthorized status and never prints the password.
#[tokio::test]
async fn proxy_option_goes_through_socks5() {
    let Some(bin) = ["/usr/bin/microsocks", "/usr/local/bin/microsocks"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "microsocks is not installed (scripts/ensure-tools.sh)"
        );
        eprintln!("SKIPPED: microsocks is not installed (scripts/ensure-tools.sh)");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut proxy = Command::new(bin)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "cu",
            "-P",
            "cp",
            "-b",
            "127.0.0.2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "microsocks did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let b = backend().await;
    let url = b.http_url();
    let good = format!("socks5://cu:cp@127.0.0.1:{port}");
    let args = [
        "request",
        &url,
        "echo",
        r#"{"p":1}"#,
        "--user",
        "tether",
        "--password-stdin",
        "--proxy",
        &good,
    ];
    let out = run(&args, "tether-password\n").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"p\":1}\n");
    let peers = b.stats().tcp_peers;
    assert!(
        !peers.is_empty() && peers.iter().all(|ip| ip.to_string() == "127.0.0.2"),
        "{peers:?}"
    );
    let bad = format!("socks5h://cu:bad-SECRET@127.0.0.1:{port}");
    let out = run(
        &[
            "request",
            &url,
            "echo",
            "--token",
            &b.token(),
            "--proxy",
            &bad,
        ],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("proxy credentials"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("bad-SECRET"));
    let _ = proxy.kill();
    let _ = proxy.wait();
}

/// Network life from a shell (spec §7.1): `:pause` closes with 1000 and no retry, `:unpause`
/// connects again, and SIGUSR1 is the reconnect cue, whose probe a live link answers.
#[tokio::test]
async fn connect_pauses_unpauses_and_takes_the_reconnect_cue() {
    let b = backend().await;
    let url = b.http_url();
    let token = b.token();
    let seen = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(["connect", &url, "--keep-open", "--json-status"])
            .args(["--pong-timeout", "2000"])
            .env("TETHER_TOKEN", &token)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let watchdog = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(30));
            // SAFETY: kill on a pid we spawned; harmless if it already exited.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let mut stdin = child.stdin.take().unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut seen: Vec<serde_json::Value> = Vec::new();
        // The next status line of type `want`, keeping every line read on the way.
        fn until(
            err: &mut impl BufRead,
            seen: &mut Vec<serde_json::Value>,
            want: &str,
        ) -> serde_json::Value {
            loop {
                let mut line = String::new();
                assert!(
                    err.read_line(&mut line).unwrap() > 0,
                    "stderr ended: {seen:?}"
                );
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{e}: {line:?} after {seen:?}"));
                seen.push(v.clone());
                if v["type"] == want {
                    return v;
                }
            }
        }
        let mut next = |want: &str| until(&mut err, &mut seen, want);
        next("connected");
        stdin.write_all(b":pause\n").unwrap();
        let d = next("disconnected");
        assert_eq!(
            (d["code"].as_u64(), d["retry_in_ms"].is_null()),
            (Some(1000), true)
        );
        assert_eq!(d["status"], "ok");
        stdin.write_all(b":unpause\n").unwrap();
        // Reconnected on the same client (what the resume brings back is tested in
        // tests/network_life.rs).
        next("connected");
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
        next("reconnect_cue");
        // The cue's probe (pings are 15 s apart otherwise): answered, so the link stays.
        until(&mut err, &mut seen, "pong");
        let since = seen.iter().rposition(|v| v["type"] == "connected").unwrap();
        assert!(
            !seen[since..].iter().any(|v| v["type"] == "disconnected"),
            "{seen:?}"
        );
        // The same cue from stdin: another probe, another pong.
        stdin.write_all(b":reconnect\n").unwrap();
        until(&mut err, &mut seen, "pong");
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGINT) };
        until(&mut err, &mut seen, "closed");
        let status = child.wait().unwrap();
        drop(watchdog);
        assert_eq!(status.code(), Some(130));
        seen
    })
    .await
    .unwrap();
    assert_eq!(seen.last().unwrap()["type"], "closed");
}
