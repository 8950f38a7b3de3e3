//! `tether`: a command-line client for gomuks JSON RPC and rwws backends, built on the tether
//! library the way websocat is used for plain websockets.

mod demo;
mod output;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tether::{Client, Config, Event, EventKind, Protocol, Status};

/// Exit codes, shared by every subcommand.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The connection failed for good (bad credentials, refused key, config error).
    pub const CONNECTION: u8 = 1;
    /// Bad usage (clap also uses 2).
    pub const USAGE: u8 = 2;
    /// The server answered the request with an error.
    pub const REMOTE: u8 = 3;
    /// No reply in time.
    pub const TIMEOUT: u8 = 4;
    /// Interrupted by Ctrl-C (after a clean close).
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Talk to gomuks JSON RPC and rwws backends."
)]
struct Cli {
    /// Show the library's log records on stderr: -v connection life, -vv details and
    /// timings, -vvv everything. Records never hold a secret.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Connect and stay connected: every event is one JSON line on stdout; requests are read
    /// from stdin as `COMMAND JSON` lines (rwws: hex bytes of a packet). Connection state,
    /// pongs and reconnects go to stderr. At the end of stdin the client closes once the
    /// first connection attempt ended, every request is answered (a timeout at worst) and
    /// every packet typed before the first connection went out (unless --keep-open); packets
    /// never written print as `{"type":"unsent","hex":...}`. Ctrl-C closes cleanly (gomuks: 1001); a
    /// second Ctrl-C stops waiting for the close. Exit status: 0, 1 if it never connected or
    /// the server refused it for good, 130 Ctrl-C.
    /// A phone's network life from a shell: the stdin lines `:pause`, `:unpause` and
    /// `:reconnect`, and SIGUSR1 (e.g. from a network-change hook) as the reconnect cue.
    Connect(Connect),
    /// Send one request and print the response's JSON data. Exit status: 0 ok, 1 connection
    /// failed, 3 the server answered with an error, 4 no answer in time, 130 Ctrl-C.
    Request(Request),
    /// Start the embedded testkit backend and walk through connect, request, ping and
    /// acknowledgement, a cut, and the resume, with a live status line.
    Demo(demo::DemoArgs),
}

#[derive(Args)]
struct ConnOpts {
    /// Backend base (`http(s)://host:port`) or websocket endpoint (`ws(s)://...`).
    url: String,
    /// Wire protocol.
    #[arg(long, value_enum, default_value = "gomuks")]
    protocol: ProtocolArg,
    /// gomuks session token (cookie) or rwws access key (base64). Unset: the TETHER_TOKEN
    /// environment variable, unless --user is given.
    #[arg(long, conflicts_with = "user")]
    token: Option<String>,
    /// gomuks user for `POST /_gomuks/auth` (with --password-stdin).
    #[arg(long, requires = "password_stdin")]
    user: Option<String>,
    /// Read the password from the first line of stdin (with --user).
    #[arg(long, requires = "user")]
    password_stdin: bool,
    /// gomuks: no compression.
    #[arg(long)]
    no_compress: bool,
    /// Extra CA certificates (PEM) to trust for wss/https (the server, and an https proxy).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM), one per issuer: a leaf certificate they revoke (the
    /// server's, or an https proxy's) is refused; only the leaf, only against these lists.
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// Pin a public key: `sha256/BASE64` of the SHA-256 of a SubjectPublicKeyInfo, the
    /// server's or one on its verified chain (an intermediate, the root), checked on top of
    /// the chain verification; repeat for backup pins.
    #[arg(long = "pin", value_name = "SHA256")]
    pins: Vec<String>,
    /// Client certificate chain (PEM) for servers that require one (mTLS).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Trust the operating system's certificate store instead of the built-in webpki roots.
    #[arg(long)]
    os_trust: bool,
    /// Connection status on stderr as JSON lines instead of prose.
    #[arg(long)]
    json_status: bool,
    /// Keepalive ping interval in milliseconds (protocol default if unset).
    #[arg(long, value_name = "MS")]
    ping_interval: Option<u64>,
    /// Pong deadline in milliseconds: a ping unanswered this long (no byte arriving) ends a
    /// silent link; also how long the reconnect cue's probe waits (default 10000).
    #[arg(long, value_name = "MS")]
    pong_timeout: Option<u64>,
    /// Proxy for the websocket and the login: `http://[user:pass@]host:port` (HTTP CONNECT),
    /// `https://...` (the same inside TLS to the proxy), `socks5://...` or `socks5h://...`; `direct` ignores the environment. Unset: the
    /// https_proxy, http_proxy, all_proxy and no_proxy variables decide.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    Gomuks,
    Rwws,
}

#[derive(Args)]
struct Connect {
    #[command(flatten)]
    conn: ConnOpts,
    /// Keep running after the end of stdin.
    #[arg(long)]
    keep_open: bool,
    /// Print the client's statistics on stderr when it closes (JSON with --json-status).
    #[arg(long)]
    stats: bool,
}

#[derive(Args)]
struct Request {
    #[command(flatten)]
    conn: ConnOpts,
    /// The command, e.g. `get_state`.
    command: String,
    /// The request data as JSON (default `{}`).
    json: Option<String>,
    /// Seconds to wait for the answer (the request is cancelled on the server after that).
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    timeout: f64,
}

/// A positive, finite number of seconds (`nan` or `inf` would not make a duration).
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(level) =
        tether::LogLevel::from_u8(cli.verbose.saturating_add(2)).filter(|_| cli.verbose > 0)
    {
        tether::set_log_sink(
            Some(Box::new(|r: &tether::LogRecord| {
                eprintln!(
                    "tether[{}] {:?} {}: {}",
                    r.client, r.level, r.target, r.message
                );
            })),
            level,
        );
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether: cannot start a runtime: {e}");
            return ExitCode::from(exit::CONNECTION);
        }
    };
    let code = rt.block_on(async move {
        match cli.cmd {
            Cmd::Connect(a) => connect(a).await,
            Cmd::Request(a) => request(a).await,
            Cmd::Demo(a) => demo::run(a).await,
        }
    });
    ExitCode::from(code)
}

/// Reads the password line if asked, builds the config, starts the client.
fn start(o: &ConnOpts, stdin: &mut impl BufRead, timeout: Option<Duration>) -> Result<Client, u8> {
    let mut b = Config::builder(&o.url)
        .protocol(match o.protocol {
            ProtocolArg::Gomuks => Protocol::Gomuks,
            ProtocolArg::Rwws => Protocol::Rwws,
        })
        .compression(!o.no_compress);
    // The environment's token stands back for an explicit login.
    let env_token = || {
        std::env::var("TETHER_TOKEN")
            .ok()
            .filter(|_| o.user.is_none())
    };
    if let Some(t) = o.token.clone().or_else(env_token) {
        b = b.token(&t);
    }
    if let Some(user) = &o.user {
        let mut pw = String::new();
        if stdin.read_line(&mut pw).is_err() || pw.is_empty() {
            eprintln!("tether: --password-stdin: no password on stdin");
            return Err(exit::USAGE);
        }
        b = b.basic_auth(user, pw.trim_end_matches(['\r', '\n']));
    }
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| {
            eprintln!("tether: {flag} {}: {e}", path.display());
            exit::USAGE
        })
    };
    if let Some(path) = &o.ca {
        b = b.extra_ca_pem(&read("--ca", path)?);
    }
    if let Some(path) = &o.crl {
        b = b.crl_pem(&read("--crl", path)?);
    }
    for pin in &o.pins {
        b = b.pin_sha256(pin);
    }
    if let (Some(cert), Some(key)) = (&o.client_cert, &o.client_key) {
        b = b.client_cert_pem(&read("--client-cert", cert)?, &read("--client-key", key)?);
    }
    b = b.use_os_trust(o.os_trust);
    if let Some(ms) = o.ping_interval {
        b = b.ping_interval(Duration::from_millis(ms));
    }
    if let Some(ms) = o.pong_timeout {
        b = b.pong_timeout(Duration::from_millis(ms));
    }
    if let Some(p) = &o.proxy {
        b = b.proxy(p);
    }
    if let Some(t) = timeout {
        b = b.request_timeout(t);
    }
    let client = b
        .build()
        .map(Client::new)
        .and_then(|c| c.connect().map(|()| c))
        .map_err(|e| {
            eprintln!("tether: {e}");
            exit::USAGE
        })?;
    Ok(client)
}

/// Resolves at the first Ctrl-C. The listener is installed at once, not on the first poll of a
/// `select!` branch, so a signal can never slip between loop turns.
fn interrupted() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(());
        }
    });
    rx
}

/// Yields once per SIGUSR1, the reconnect cue a network-change hook can send
/// (`kill -USR1 PID`). Installed at once, like [`interrupted`]; never yields elsewhere.
fn reconnect_cues() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    if let Ok(mut usr1) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
    {
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// A DISCONNECTED after which nothing follows: the connection failed for good.
fn gave_up(ev: &Event) -> bool {
    ev.kind() == EventKind::Disconnected && ev.retry_in().is_none() && ev.status() != Status::Ok
}

async fn connect(a: Connect) -> u8 {
    output::set_json_status(a.conn.json_status);
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut stdin = std::io::stdin().lock();
    let client = match start(&a.conn, &mut stdin, None) {
        Ok(c) => Arc::new(c),
        Err(code) => return code,
    };
    drop(stdin);
    // After the password is read: until then Ctrl-C ends the process as usual.
    let mut sigint = interrupted();
    let mut cues = reconnect_cues();
    // Blocking stdin reads live on their own thread; lines arrive through the channel, and
    // its end means the end of stdin.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let rwws = matches!(a.conn.protocol, ProtocolArg::Rwws);
    let pending = AtomicUsize::new(0);
    let mut stdin_open = true;
    let mut closing = false;
    let mut was_interrupted = false;
    let mut failed = false;
    // Packets typed before the first connection go out when it opens, so the end of stdin
    // waits for that; requests have their answer (a timeout at worst) to wait for.
    let mut connected_once = false;
    let mut packets_waiting = false;
    // The end of stdin waits for the first attempt to end either way, so that an empty stdin
    // still shows whether the server can be reached.
    let mut attempted = false;
    loop {
        tokio::select! {
            line = lines.recv(), if stdin_open => match line {
                Some(line) => match send_line(&client, &line, rwws) {
                    Ok(Sent::Request) => { pending.fetch_add(1, Ordering::Relaxed); }
                    Ok(Sent::Packet) => packets_waiting |= !connected_once,
                    Ok(Sent::Nothing) => {}
                    Err(e) => eprintln!("tether: {e}"),
                },
                None => {
                    stdin_open = false;
                    if a.keep_open { continue; }
                }
            },
            ev = client.next_event() => {
                let Some(ev) = ev else { break };
                output::emit(&ev);
                if ev.kind() == EventKind::Response {
                    pending.fetch_sub(1, Ordering::Relaxed);
                }
                failed |= gave_up(&ev);
                connected_once |= ev.kind() == EventKind::Connected;
                attempted |= matches!(ev.kind(), EventKind::Connected | EventKind::Disconnected);
                if ev.kind() == EventKind::Closed {
                    break;
                }
            },
            Some(()) = cues.recv() => {
                output::status("reconnect cue (SIGUSR1)", || r#"{"type":"reconnect_cue"}"#.into());
                if let Err(e) = client.reconnect_now() {
                    eprintln!("tether: {e}");
                }
            },
            _ = &mut sigint => {
                if closing {
                    break; // a second Ctrl-C: stop waiting for the close
                }
                was_interrupted = true;
                closing = true;
                let _ = client.close();
                sigint = interrupted();
            },
        }
        if !closing
            && !stdin_open
            && !a.keep_open
            && attempted
            && (connected_once || !packets_waiting)
            && pending.load(Ordering::Relaxed) == 0
        {
            closing = true;
            let _ = client.close();
        }
    }
    if a.stats {
        output::stats(&client.stats());
    }
    if was_interrupted {
        exit::INTERRUPTED
    } else if failed || !connected_once {
        exit::CONNECTION
    } else {
        exit::OK
    }
}

/// What a stdin line sent.
enum Sent {
    Nothing,
    Request,
    Packet,
}

/// Sends one stdin line.
fn send_line(client: &Client, line: &str, rwws: bool) -> Result<Sent, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Sent::Nothing);
    }
    let control = match line {
        ":pause" => Some(client.pause()),
        ":unpause" => Some(client.unpause()),
        ":reconnect" => Some(client.reconnect_now()),
        _ => None,
    };
    if let Some(r) = control {
        return r.map(|()| Sent::Nothing).map_err(|e| e.to_string());
    }
    if rwws {
        let hex: String = line.split_whitespace().collect();
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| format!("not hex bytes: {line:?}"))?;
        client.send_packet(&bytes).map_err(|e| e.to_string())?;
        return Ok(Sent::Packet);
    }
    let (command, data) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    client
        .request(command, data.trim().as_bytes())
        .map(|id| {
            output::status(&format!("request {id}: {command}"), || {
                format!(r#"{{"type":"request","request_id":{id}}}"#)
            })
        })
        .map(|()| Sent::Request)
        .map_err(|e| e.to_string())
}

async fn request(a: Request) -> u8 {
    output::set_json_status(a.conn.json_status);
    let timeout = Duration::from_secs_f64(a.timeout.clamp(0.001, 86_400.0));
    let mut stdin = std::io::stdin().lock();
    let client = match start(&a.conn, &mut stdin, Some(timeout)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    drop(stdin);
    // After the password is read: until then Ctrl-C ends the process as usual.
    let mut sigint = interrupted();
    let data = a.json.unwrap_or_default();
    let id = match client.request(&a.command, data.as_bytes()) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("tether: {e}");
            return exit::USAGE;
        }
    };
    let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(1);
    let mut last_problem = String::new();
    let code = loop {
        tokio::select! {
            ev = client.next_event() => {
                let Some(ev) = ev else { break exit::CONNECTION };
                if ev.kind() == EventKind::Response && ev.request_id() == id {
                    break match ev.status() {
                        Status::Ok => {
                            println!("{}", String::from_utf8_lossy(ev.data()));
                            exit::OK
                        }
                        Status::ErrRemote => {
                            // The error data is a JSON string (gomuks spec §3.4).
                            let text = serde_json::from_slice::<String>(ev.data())
                                .unwrap_or_else(|_| String::from_utf8_lossy(ev.data()).into_owned());
                            failure(Status::ErrRemote, &format!("{}: {text}", a.command));
                            exit::REMOTE
                        }
                        Status::ErrRequestTimeout => {
                            failure(Status::ErrRequestTimeout, &format!("no answer within {timeout:?}{last_problem}"));
                            exit::TIMEOUT
                        }
                        s => {
                            failure(s, &format!("{s}: {}", String::from_utf8_lossy(ev.data())));
                            exit::CONNECTION
                        }
                    };
                }
                if ev.kind() == EventKind::Disconnected {
                    last_problem = format!(" (last attempt: {}: {})", ev.status(), String::from_utf8_lossy(ev.data()));
                }
                if gave_up(&ev) {
                    failure(ev.status(), &format!("{}: {}", ev.status(), String::from_utf8_lossy(ev.data())));
                    break exit::CONNECTION;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                failure(Status::ErrRequestTimeout, &format!("no answer within {timeout:?}{last_problem}"));
                break exit::TIMEOUT;
            }
            _ = &mut sigint => break exit::INTERRUPTED,
        }
    };
    // Close cleanly (gomuks 1001) and wait, bounded, for the end.
    let _ = client.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(ev) = client.next_event().await {
            if ev.kind() == EventKind::Closed {
                break;
            }
        }
    })
    .await;
    code
}

/// Why `request` failed, on stderr: prose, or with --json-status one JSON line
/// `{"type":"error","status":NAME,"message":TEXT}`.
fn failure(status: Status, message: &str) {
    output::status(&format!("tether: {message}"), || {
        serde_json::json!({
            "type": "error",
            "status": output::status_name(status),
            "message": message,
        })
        .to_string()
    });
}

/// Whether stderr is a terminal (for the demo's live line).
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}
