//! Real proxy servers for the proxy tests, started on loopback ports with generated config
//! files: tinyproxy (HTTP CONNECT with BasicAuth), dante (`danted`, SOCKS5 without auth) and
//! microsocks (SOCKS5 with RFC 1929 auth). Each binds its outgoing connections to 127.0.0.2,
//! so the backend tells a proxied connection from a direct one (127.0.0.1) by its peer.
//! `scripts/ensure-tools.sh` installs them.

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The source address the proxies connect from.
pub const PROXY_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The path of `name`, or `None` with the reason printed when it is missing and this is not
/// CI; under `CI=true` a missing proxy fails the test.
pub fn require(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        let why = format!("{name} is not installed (scripts/ensure-tools.sh installs it)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "tether-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running proxy; dropping it stops it (SIGTERM to the process it started, then wait).
pub struct ProxyServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl ProxyServer {
    /// Starts `cmd` with its output in `out`; `log` is where the proxy logs (the same file
    /// unless the proxy writes its own).
    fn spawn(mut cmd: Command, port: u16, dir: PathBuf, out: PathBuf, log: PathBuf) -> ProxyServer {
        let out = std::fs::File::create(&out).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("proxy starts");
        let s = ProxyServer {
            child,
            port,
            dir,
            log,
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "proxy did not listen on {port}: {}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// tinyproxy (HTTP CONNECT and forwarding) with `BasicAuth user pass` when given; its
    /// connections come from [`PROXY_SOURCE`].
    pub fn tinyproxy(auth: Option<(&str, &str)>) -> Option<ProxyServer> {
        Self::tinyproxy_from(auth, Some(PROXY_SOURCE))
    }

    /// tinyproxy as [`Self::tinyproxy`], its connections from whatever address the system
    /// picks (so it reaches IPv6 too).
    pub fn tinyproxy_any_source(auth: Option<(&str, &str)>) -> Option<ProxyServer> {
        Self::tinyproxy_from(auth, None)
    }

    fn tinyproxy_from(
        auth: Option<(&str, &str)>,
        source: Option<std::net::IpAddr>,
    ) -> Option<ProxyServer> {
        let bin = require("tinyproxy")?;
        let port = free_port();
        let dir = temp_dir("tinyproxy");
        let log = dir.join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\n\
             LogLevel Connect\nLogFile \"{}\"\n",
            log.display()
        );
        if let Some(ip) = source {
            conf.push_str(&format!("Bind {ip}\n"));
        }
        if let Some((u, p)) = auth {
            conf.push_str(&format!("BasicAuth {u} {p}\n"));
        }
        let path = dir.join("tinyproxy.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("-d").arg("-c").arg(&path);
        Some(Self::spawn(
            cmd,
            port,
            dir.clone(),
            dir.join("tinyproxy.out"),
            log,
        ))
    }

    /// danted, SOCKS5 without authentication.
    pub fn dante() -> Option<ProxyServer> {
        let bin = require("danted")?;
        let port = free_port();
        let dir = temp_dir("danted");
        let conf = format!(
            "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: {PROXY_SOURCE}\n\
             clientmethod: none\nsocksmethod: none\nuser.unprivileged: nobody\n\
             client pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: connect error\n}}\n\
             socks pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: connect error\n}}\n"
        );
        let path = dir.join("danted.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("-f")
            .arg(&path)
            .arg("-p")
            .arg(dir.join("danted.pid"))
            .arg("-N")
            .arg("1");
        let log = dir.join("danted.log");
        Some(Self::spawn(cmd, port, dir, log.clone(), log))
    }

    /// microsocks, SOCKS5 with user/password authentication (RFC 1929).
    pub fn microsocks(user: &str, pass: &str) -> Option<ProxyServer> {
        let bin = require("microsocks")?;
        let port = free_port();
        let dir = temp_dir("microsocks");
        let mut cmd = Command::new(bin);
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-u", user, "-P", pass])
            .args(["-b", &PROXY_SOURCE.to_string()]);
        let log = dir.join("microsocks.log");
        Some(Self::spawn(cmd, port, dir, log.clone(), log))
    }

    /// Everything the proxy logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        // SIGTERM lets danted stop its own children; the others just exit.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
