//! Which proxy, if any, a connection goes through: the one decision that the websocket and the
//! gomuks auth call both follow. Parses proxy URLs and reads the environment; opening the
//! tunnel is the transport's job (`session/tunnel.rs`). Imports only leaves.
//!
//! The rules:
//! - An explicit proxy (`ConfigBuilder::proxy`) is used for every destination, loopback
//!   included. `ConfigBuilder::no_proxy` (the value `"direct"`) connects directly and reads
//!   no environment variable.
//! - Otherwise the environment decides, read once when the configuration is built:
//!   `https_proxy`/`HTTPS_PROXY` for `wss://`/`https://`, `http_proxy`/`HTTP_PROXY` for
//!   `ws://`/`http://`, then `all_proxy`/`ALL_PROXY`; the lower-case name wins, an empty value
//!   counts as unset, and `http_proxy`/`HTTP_PROXY` are ignored when `REQUEST_METHOD` is set
//!   (a CGI program, where a request's `Proxy:` header sets `HTTP_PROXY`).
//!   `no_proxy`/`NO_PROXY` (lower case first) lists hosts to reach directly:
//!   comma-separated, `*` for all, a domain matches itself and its subdomains (a leading `.`
//!   is ignored), an IP address matches itself, `a.b.c.d/n` and `v6/n` (or `[v6]/n`) match a
//!   network; `name:port`, `a.b.c.d:port` and `[v6]:port` match that port only (the URL's,
//!   or its scheme's default), as curl and Go read them.
//! - A loopback destination (`localhost`, `127.0.0.0/8`, `::1`) is never proxied from the
//!   environment: a proxy cannot reach the app's own machine.
//! - Proxy URLs: `http://[user:pass@]host[:port]` (HTTP CONNECT, default port 80, Basic
//!   proxy auth), `https://[user:pass@]host[:port]` (the same inside TLS to the proxy,
//!   default port 443; the proxy's certificate is verified like a server's, without the
//!   pins, the proxy is shown no client certificate (`tls::Configs`), and a `wss://` server's
//!   TLS runs inside that), `socks5://[user:pass@]host[:port]` (default port 1080, RFC 1929
//!   auth; the destination name is resolved locally, as curl does, and its addresses raced
//!   through the proxy), `socks5h://` (the proxy resolves the name). `socks://`, which
//!   desktop proxy settings write into `all_proxy`, is taken as `socks5://`, as the OS's own
//!   settings are (SOCKS5 servers such as `ssh -D` and dante answer it). A URL without a
//!   scheme is `http://`. User and password are percent-decoded.
//! - An app's resolver (`ConfigBuilder::proxy_resolver`: PAC, the OS's or the platform's
//!   settings, which change with the network) is asked before every connection and
//!   overrides all of the above when it answers; the answer is a proxy URL as above or
//!   `direct`, and the rules above apply when it has none.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex};

use url::Url;

use crate::secret::Secret;
use crate::status::{Error, Status};

/// The app's choice, before the environment is consulted.
#[derive(Clone, Debug, Default)]
pub(crate) enum ProxyChoice {
    /// Follow the environment variables (the default).
    #[default]
    Environment,
    /// Connect directly; ignore the environment.
    Direct,
    /// This proxy URL for every destination.
    Explicit(Secret),
}

impl ProxyChoice {
    /// The choice a setter's string means: empty is the default, `direct` is [`Direct`],
    /// anything else a proxy URL (checked when the configuration is built).
    ///
    /// [`Direct`]: ProxyChoice::Direct
    pub(crate) fn from_setting(s: &str) -> ProxyChoice {
        let t = s.trim();
        if t.is_empty() {
            ProxyChoice::Environment
        } else if t.eq_ignore_ascii_case("direct") {
            ProxyChoice::Direct
        } else {
            ProxyChoice::Explicit(Secret::new(t))
        }
    }
}

/// The app's per-connection proxy decision (see the module doc): called with the URL a
/// connection is about to open; `Ok(None)` (or an empty answer) leaves the decision to the
/// configuration, `Ok(Some(..))` is a proxy URL or `direct`, `Err` fails the attempt with
/// its status (`ErrConfig` ends the client, anything else is retried).
///
/// Each client asks through a gate of its own ([`Resolver::for_client`]): at most one call
/// of a client runs at a time, so a resolver that hangs holds one thread, not one per
/// attempt; and [`Resolver::close_and_wait`] lets the client's end wait for a call in
/// progress and let go of the function there, so the app's code (its resolver, and the
/// destructor of what the resolver holds) never runs on a network thread after the client
/// is freed.
#[derive(Clone)]
pub(crate) struct Resolver {
    gate: Arc<Gate>,
}

/// What [`Resolver`] wraps.
pub(crate) type ResolverFn = dyn Fn(&str) -> Result<Option<String>, Error> + Send + Sync;

/// The answer of one call.
type Answer = Result<Option<String>, Error>;

struct Gate {
    state: Mutex<GateState>,
    done: Condvar,
    /// The call of an attempt that gave up waiting for it (its connect timed out), still
    /// running: the next attempt waits for it instead of starting a second.
    running: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Answer>>>,
}

struct GateState {
    /// The gate's reference to the app's function, the only one outside a call in
    /// progress; `None` once closed, so no call starts.
    f: Option<Arc<ResolverFn>>,
    /// The thread of the call in progress.
    calling: Option<std::thread::ThreadId>,
    /// When the call in progress started.
    since: Option<std::time::Instant>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver(..)")
    }
}

impl Resolver {
    pub(crate) fn new(f: Arc<ResolverFn>) -> Resolver {
        Resolver::gated(Some(f))
    }

    fn gated(f: Option<Arc<ResolverFn>>) -> Resolver {
        Resolver {
            gate: Arc::new(Gate {
                state: Mutex::new(GateState {
                    f,
                    calling: None,
                    since: None,
                }),
                done: Condvar::new(),
                running: tokio::sync::Mutex::default(),
            }),
        }
    }

    /// The same resolver behind a new gate, for one client.
    pub(crate) fn for_client(&self) -> Resolver {
        Resolver::gated(self.gate.state().f.clone())
    }

    /// Asks about `url` on a blocking thread (a PAC script or an OS lookup may take a while),
    /// after the call an earlier attempt left running, if any, has ended: a client never
    /// holds more than one thread in the app's resolver. That call's answer is not used: it
    /// may be old (a pause, a network change since), and every connection asks afresh.
    pub(crate) async fn ask(&self, url: String) -> Answer {
        let mut slot = self.gate.running.lock().await;
        if let Some(earlier) = slot.as_mut() {
            let _ = earlier.await;
        }
        let gate = self.gate.clone();
        // Dropped mid-call (the attempt timed out), the handle stays in the slot.
        let call = slot.insert(tokio::task::spawn_blocking(move || gate.call(&url)));
        let answer = call.await;
        *slot = None;
        answer.unwrap_or_else(|_| Err(Error::new(Status::ErrConnect, "it panicked")))
    }

    /// How long the call in progress has been running, if there is one.
    pub(crate) fn busy_for(&self) -> Option<std::time::Duration> {
        self.gate.state().since.map(|t| t.elapsed())
    }

    /// No call starts any more; returns once the one in progress, if any, has returned, after
    /// letting go of the function on this thread (the app's destructor of it may run here).
    /// Called from inside that call (the app frees its client from its resolver) it cannot
    /// wait for it: the call's own reference then goes last, when it returns.
    pub(crate) fn close_and_wait(&self) {
        let mut s = self.gate.state();
        let f = s.f.take();
        let me = std::thread::current().id();
        while s.calling.is_some_and(|t| t != me) {
            s = self.gate.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        drop(s);
        drop(f);
    }
}

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        crate::lock(&self.state)
    }

    fn call(&self, url: &str) -> Answer {
        let f = {
            let mut s = self.state();
            let Some(f) = s.f.clone() else {
                return Err(Error::new(Status::ErrConnect, "the client is closed"));
            };
            s.calling = Some(std::thread::current().id());
            s.since = Some(std::time::Instant::now());
            f
        };
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(url)))
            .unwrap_or_else(|_| Err(Error::new(Status::ErrConnect, "it panicked")));
        // Gone before `calling` clears: close_and_wait then holds the last reference.
        drop(f);
        {
            let mut s = self.state();
            s.calling = None;
            s.since = None;
        }
        self.done.notify_all();
        answer
    }
}

/// How the tunnel is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProxyKind {
    /// HTTP CONNECT.
    Http,
    /// HTTP CONNECT inside TLS to the proxy.
    Https,
    /// SOCKS5, the destination name resolved locally.
    Socks5,
    /// SOCKS5, the destination name resolved by the proxy.
    Socks5h,
}

/// A resolved proxy. `Debug` and `Display` show the kind and `host:port` only.
#[derive(Clone)]
pub(crate) struct Proxy {
    pub(crate) kind: ProxyKind,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Username and password, percent-decoded.
    pub(crate) auth: Option<(String, Secret)>,
    /// Where it came from: `explicit` or the environment variable's name.
    pub(crate) source: &'static str,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({self}, from {})", self.source)
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ProxyKind::Http => "HTTP",
            ProxyKind::Https => "HTTPS",
            ProxyKind::Socks5 => "SOCKS5",
            ProxyKind::Socks5h => "SOCKS5h",
        };
        if self.host.contains(':') {
            write!(f, "{kind} proxy [{}]:{}", self.host, self.port)
        } else {
            write!(f, "{kind} proxy {}:{}", self.host, self.port)
        }
    }
}

impl Proxy {
    /// `host:port` of the proxy (never its credentials).
    pub(crate) fn addr(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// Whether the proxy runs on this machine.
    pub(crate) fn is_loopback(&self) -> bool {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => is_loopback(&url::Host::Domain(&self.host)),
        }
    }
}

/// Parses a proxy URL; the error names `what` (the option or variable), never the URL, which
/// may hold a password.
pub(crate) fn parse(text: &str, what: &str, source: &'static str) -> Result<Proxy, Error> {
    let bad = |why: &str| Error::new(Status::ErrConfig, format!("{what}: {why}"));
    let text = text.trim();
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let url = Url::parse(&with_scheme).map_err(|_| bad("not a valid proxy URL"))?;
    let (kind, default_port) = match url.scheme() {
        "http" => (ProxyKind::Http, 80),
        "https" => (ProxyKind::Https, 443),
        "socks5" | "socks" => (ProxyKind::Socks5, 1080),
        "socks5h" => (ProxyKind::Socks5h, 1080),
        _ => {
            return Err(bad(
                "unsupported proxy scheme (use http://, https://, socks5:// or socks5h://; \
                 SOCKS4 is not spoken)",
            ))
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(bad("the proxy URL has no host")),
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a proxy URL has no path, query or fragment"));
    }
    let port = url.port().unwrap_or(default_port);
    let decode =
        |s: &str| percent_decode(s).ok_or_else(|| bad("the proxy credentials are not valid UTF-8"));
    let auth = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        let user = decode(url.username())?;
        let pass = decode(url.password().unwrap_or(""))?;
        // RFC 1929 §2: each is one to 255 bytes.
        let fits = |s: &str| (1..=255).contains(&s.len());
        let socks = matches!(kind, ProxyKind::Socks5 | ProxyKind::Socks5h);
        if socks && !(fits(&user) && fits(&pass)) {
            return Err(bad("SOCKS5 user name and password are 1 to 255 bytes each"));
        }
        Some((user, Secret::new(pass)))
    };
    Ok(Proxy {
        kind,
        host,
        port,
        auth,
        source,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The proxy for a connection to `url` (`ws`, `wss`, `http` or `https`), `None` for direct.
/// `env` looks up an environment variable (the process environment in use; a map in tests).
pub(crate) fn resolve(
    choice: &ProxyChoice,
    url: &Url,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, Error> {
    match choice {
        ProxyChoice::Direct => Ok(None),
        ProxyChoice::Explicit(u) => parse(u.expose(), "proxy", "explicit").map(Some),
        ProxyChoice::Environment => {
            let secure = matches!(url.scheme(), "wss" | "https");
            let names: &[&'static str] = if secure {
                &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
            } else {
                &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            };
            // In a CGI program a request's `Proxy:` header arrives as HTTP_PROXY ("httpoxy"):
            // the client of that request would pick the proxy. Both spellings are skipped
            // there, since names ignore case on Windows; Go refuses them there too.
            let cgi = env("REQUEST_METHOD").is_some_and(|m| !m.is_empty());
            let Some((name, value)) = names
                .iter()
                .filter(|n| !(cgi && n.eq_ignore_ascii_case("http_proxy")))
                .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
            else {
                return Ok(None);
            };
            let Some(host) = url.host() else {
                return Ok(None);
            };
            if is_loopback(&host) {
                return Ok(None);
            }
            let no_proxy = env("no_proxy")
                .filter(|v| !v.trim().is_empty())
                .or_else(|| env("NO_PROXY"));
            let port = url.port_or_known_default();
            if no_proxy.is_some_and(|list| bypassed(&list, &host, port)) {
                return Ok(None);
            }
            parse(&value, &format!("environment variable {name}"), name).map(Some)
        }
    }
}

/// The process environment, for [`resolve`].
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Whether `NO_PROXY`'s list exempts `host` at `port`.
fn bypassed(list: &str, host: &url::Host<&str>, port: Option<u16>) -> bool {
    let ip: Option<IpAddr> = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        url::Host::Domain(_) => None,
    };
    let name = match host {
        url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        _ => String::new(),
    };
    list.split([',', ' ', '\t', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let Some(NoProxyEntry {
                host: entry,
                bits,
                port: only,
            }) = NoProxyEntry::parse(entry)
            else {
                return false;
            };
            if only.is_some() && only != port {
                return false;
            }
            if let Some(ip) = ip {
                return match bits {
                    Some(bits) => cidr_contains(entry, bits, ip),
                    None => entry.parse::<IpAddr>().is_ok_and(|e| e == ip),
                };
            }
            if bits.is_some() {
                return false;
            }
            let e = entry
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            !e.is_empty()
                && (name == e
                    || (name.ends_with(&e) && name[..name.len() - e.len()].ends_with('.')))
        })
}

/// One `NO_PROXY` entry taken apart: a host (name, IP, or a network's address), a network's
/// prefix length, a port.
struct NoProxyEntry<'a> {
    host: &'a str,
    bits: Option<&'a str>,
    port: Option<u16>,
}

impl<'a> NoProxyEntry<'a> {
    /// `None` for an entry that can match nothing (a port that is not one, a bracket left
    /// open).
    fn parse(entry: &'a str) -> Option<NoProxyEntry<'a>> {
        let number = |p: &str| p.parse::<u16>().ok();
        let (host, bits, port) = if let Some(rest) = entry.strip_prefix('[') {
            // `[v6]`, `[v6]:port`, `[v6]/bits`.
            let (host, after) = rest.split_once(']')?;
            if after.is_empty() {
                (host, None, None)
            } else if let Some(p) = after.strip_prefix(':') {
                (host, None, Some(number(p)?))
            } else {
                (host, Some(after.strip_prefix('/')?), None)
            }
        } else if let Some((host, bits)) = entry.split_once('/') {
            (host, Some(bits), None)
        } else {
            // One colon is a port; more are a bare IPv6 address.
            match entry.split_once(':') {
                Some((host, p)) if !p.contains(':') => (host, None, Some(number(p)?)),
                _ => (entry, None, None),
            }
        };
        Some(NoProxyEntry { host, bits, port })
    }
}

fn cidr_contains(net: &str, bits: &str, ip: IpAddr) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn at(u: &str, e: &[(&str, &str)]) -> Option<String> {
        resolve(&ProxyChoice::Environment, &Url::parse(u).unwrap(), &env(e))
            .unwrap()
            .map(|p| format!("{p} {}", p.source))
    }

    #[test]
    fn parses_the_four_kinds_and_keeps_credentials_out_of_debug() {
        let p = parse(
            "http://us%40er:p%3Ass@proxy.example:3128",
            "proxy",
            "explicit",
        )
        .unwrap();
        assert_eq!(p.kind, ProxyKind::Http);
        assert_eq!(p.addr(), ("proxy.example", 3128));
        let (u, pw) = p.auth.clone().unwrap();
        assert_eq!((u.as_str(), pw.expose()), ("us@er", "p:ss"));
        let shown = format!("{p:?} {p}");
        assert!(
            !shown.contains("p:ss") && !shown.contains("p%3Ass"),
            "{shown}"
        );
        assert_eq!(
            parse("proxy:8080", "x", "explicit").unwrap().kind,
            ProxyKind::Http
        );
        assert_eq!(parse("proxy", "x", "explicit").unwrap().port, 80);
        let s = parse("socks5://[::1]", "x", "explicit").unwrap();
        assert_eq!(
            (s.kind, s.port, s.host.as_str()),
            (ProxyKind::Socks5, 1080, "::1")
        );
        assert_eq!(format!("{s}"), "SOCKS5 proxy [::1]:1080");
        assert_eq!(
            parse("socks5h://h:1", "x", "explicit").unwrap().kind,
            ProxyKind::Socks5h
        );
        let t = parse("https://u:p@tls.proxy", "x", "explicit").unwrap();
        assert_eq!((t.kind, t.port), (ProxyKind::Https, 443));
        assert_eq!(format!("{t}"), "HTTPS proxy tls.proxy:443");
    }

    #[test]
    fn bad_proxy_urls_are_config_errors_that_do_not_echo_the_url() {
        for u in [
            "ftp://u:hunter2@h:1",
            "socks4://u:hunter2@h:1",
            "http://u:hunter2@h:1/path",
            "http://u:hunter2@:1",
            "http://u:hunter2@h:99999",
            "socks5://:hunter2@h:1",
            "socks5h://u@h:1",
        ] {
            let e = parse(u, "proxy", "explicit").unwrap_err();
            assert_eq!(e.status(), Status::ErrConfig, "{u}");
            assert!(!e.message().contains("hunter2"), "{}", e.message());
        }
    }

    #[test]
    fn the_environment_variable_follows_the_scheme() {
        let e = [
            ("HTTPS_PROXY", "http://s:1"),
            ("http_proxy", "http://p:2"),
            ("ALL_PROXY", "socks5h://a:3"),
        ];
        assert_eq!(at("wss://h/x", &e).unwrap(), "HTTP proxy s:1 HTTPS_PROXY");
        assert_eq!(at("https://h/x", &e).unwrap(), "HTTP proxy s:1 HTTPS_PROXY");
        assert_eq!(at("ws://h/x", &e).unwrap(), "HTTP proxy p:2 http_proxy");
        assert_eq!(
            at("ws://h/x", &[("ALL_PROXY", "socks5h://a:3")]).unwrap(),
            "SOCKS5h proxy a:3 ALL_PROXY"
        );
        // Lower case wins; empty is unset.
        assert_eq!(
            at(
                "wss://h/",
                &[("https_proxy", "l:1"), ("HTTPS_PROXY", "u:2")]
            )
            .unwrap(),
            "HTTP proxy l:1 https_proxy"
        );
        assert_eq!(
            at("wss://h/", &[("https_proxy", ""), ("HTTPS_PROXY", "u:2")]).unwrap(),
            "HTTP proxy u:2 HTTPS_PROXY"
        );
        assert_eq!(at("wss://h/", &[("http_proxy", "p:1")]), None);
        assert_eq!(at("wss://h/", &[]), None);
    }

    #[test]
    fn a_cgi_program_ignores_http_proxy_which_a_request_header_can_set() {
        let cgi = [
            ("REQUEST_METHOD", "GET"),
            ("HTTP_PROXY", "http://evil:1"),
            ("http_proxy", "http://evil:2"),
            ("ALL_PROXY", "socks5h://a:3"),
        ];
        assert_eq!(at("ws://h/x", &cgi).unwrap(), "SOCKS5h proxy a:3 ALL_PROXY");
        assert_eq!(at("ws://h/x", &cgi[..3]), None);
        // HTTPS_PROXY, which no header sets, still counts.
        let mut e = cgi.to_vec();
        e.push(("HTTPS_PROXY", "s:4"));
        assert_eq!(at("wss://h/x", &e).unwrap(), "HTTP proxy s:4 HTTPS_PROXY");
        // Outside CGI (an empty REQUEST_METHOD included) both are read as before.
        assert_eq!(
            at("ws://h/x", &cgi[1..2]).unwrap(),
            "HTTP proxy evil:1 HTTP_PROXY"
        );
        let mut e = cgi.to_vec();
        e[0].1 = "";
        assert_eq!(at("ws://h/x", &e).unwrap(), "HTTP proxy evil:2 http_proxy");
    }

    #[test]
    fn loopback_is_never_proxied_from_the_environment() {
        let e = [("ALL_PROXY", "http://p:1")];
        for u in [
            "ws://localhost:5/",
            "ws://LOCALHOST./",
            "ws://a.localhost/",
            "ws://127.0.0.1/",
            "ws://127.9.9.9/",
            "ws://[::1]/",
        ] {
            assert_eq!(at(u, &e), None, "{u}");
        }
        // An explicit proxy is used for loopback too.
        let p = resolve(
            &ProxyChoice::from_setting("http://p:1"),
            &Url::parse("ws://127.0.0.1/").unwrap(),
            &env(&[]),
        )
        .unwrap();
        assert!(p.is_some());
    }

    #[test]
    fn no_proxy_lists_suffixes_ips_networks_and_star() {
        let with = |np: &str, u: &str| at(u, &[("ALL_PROXY", "http://p:1"), ("NO_PROXY", np)]);
        assert_eq!(with("example.org", "ws://example.org/"), None);
        assert_eq!(with("example.org", "ws://a.b.example.org/"), None);
        assert_eq!(with(".example.org", "ws://a.example.org/"), None);
        assert!(with("example.org", "ws://badexample.org/").is_some());
        assert!(with("example.org", "ws://example.org.evil/").is_some());
        assert_eq!(with("*", "ws://anything/"), None);
        assert_eq!(with("x, 10.1.2.3 ,y", "ws://10.1.2.3/"), None);
        assert!(with("10.1.2.3", "ws://10.1.2.4/").is_some());
        assert_eq!(with("10.0.0.0/8", "ws://10.200.0.1/"), None);
        assert!(with("10.0.0.0/8", "ws://11.0.0.1/").is_some());
        assert_eq!(with("[2001:db8::1]", "ws://[2001:db8::1]/"), None);
        assert_eq!(with("2001:db8::/32", "ws://[2001:db8::7]/"), None);
        // Lower case first.
        assert!(at(
            "ws://e.org/",
            &[
                ("ALL_PROXY", "p:1"),
                ("no_proxy", "x.org"),
                ("NO_PROXY", "e.org")
            ]
        )
        .is_some());
    }

    #[test]
    fn no_proxy_entries_with_a_port_match_that_port_only() {
        let with = |np: &str, u: &str| at(u, &[("ALL_PROXY", "http://p:1"), ("NO_PROXY", np)]);
        // The URL's port, or its scheme's default.
        assert_eq!(
            with("internal.corp:8443", "wss://internal.corp:8443/x"),
            None
        );
        assert_eq!(with("a.corp:8443", "wss://b.a.corp:8443/x"), None);
        assert!(with("internal.corp:8443", "wss://internal.corp/x").is_some());
        assert_eq!(with("internal.corp:443", "wss://internal.corp/x"), None);
        assert_eq!(with("internal.corp:80", "ws://internal.corp/x"), None);
        assert_eq!(with("10.1.2.3:9000", "ws://10.1.2.3:9000/"), None);
        assert!(with("10.1.2.3:9000", "ws://10.1.2.3:9001/").is_some());
        assert_eq!(with("[2001:db8::7]:443", "wss://[2001:db8::7]/x"), None);
        assert!(with("[2001:db8::7]:443", "ws://[2001:db8::7]/x").is_some());
        // A bracketed network, and a bare address whose colons are not a port.
        assert_eq!(with("[2001:db8::]/32", "wss://[2001:db8::7]/x"), None);
        assert!(with("[2001:db8::]/32", "wss://[2001:db9::7]/x").is_some());
        assert_eq!(with("2001:db8::7", "wss://[2001:db8::7]/x"), None);
        // What cannot be a port, or a bracket left open, matches nothing.
        for bad in [
            "internal.corp:x",
            "internal.corp:99999",
            "[2001:db8::7",
            "[::1]x",
        ] {
            assert!(with(bad, "wss://internal.corp/x").is_some(), "{bad}");
        }
        assert!(with("[2001:db8::7", "wss://[2001:db8::7]/x").is_some());
    }

    #[test]
    fn socks_as_desktop_settings_write_it_is_socks5() {
        let p = parse("socks://h:1080/", "x", "all_proxy").unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::Socks5, 1080));
        assert_eq!(
            at("ws://h/x", &[("all_proxy", "socks://s.corp:1080/")]).unwrap(),
            "SOCKS5 proxy s.corp:1080 all_proxy"
        );
    }

    #[test]
    fn credentials_decode_only_two_hex_digits_after_a_percent() {
        let creds = |u: &str| {
            let p = parse(u, "proxy", "explicit").unwrap();
            let (user, pass) = p.auth.unwrap();
            (user, pass.expose().to_owned())
        };
        // A `%` not followed by two hex digits is itself, as curl reads it: `+1` is no byte.
        assert_eq!(creds("http://u:50%+1off@h:1").1, "50%+1off");
        assert_eq!(creds("http://u:a%zzb%4@h:1").1, "a%zzb%4");
        assert_eq!(creds("http://%41%3a:%C3%A9@h:1"), ("A:".into(), "é".into()));
        let e = parse("http://u:%FF@h:1", "proxy", "explicit").unwrap_err();
        assert_eq!(e.status(), Status::ErrConfig);
    }

    #[test]
    fn direct_and_empty_settings() {
        let u = Url::parse("ws://h/").unwrap();
        let e = env(&[("ALL_PROXY", "http://p:1")]);
        assert!(resolve(&ProxyChoice::from_setting("direct"), &u, &e)
            .unwrap()
            .is_none());
        assert!(resolve(&ProxyChoice::from_setting(""), &u, &e)
            .unwrap()
            .is_some());
        // A broken variable names itself, not its value.
        let e = env(&[("ALL_PROXY", "ftp://u:hunter2@p:1")]);
        let err = resolve(&ProxyChoice::Environment, &u, &e).unwrap_err();
        assert!(err.message().contains("ALL_PROXY") && !err.message().contains("hunter2"));
    }
}
