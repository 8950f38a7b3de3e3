//! Proxies, over real sockets against real proxy servers (tinyproxy, dante, microsocks; see
//! `common/proxies.rs`): the websocket and the gomuks login (`POST /_gomuks/auth`, spec §1.2)
//! take the same route, a proxy's refusal of our credentials is final and clear, a cut is
//! resumed through the proxy (spec §7), and the environment variables decide when nothing
//! is set explicitly.

mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::proxies::{ProxyServer, PROXY_SOURCE};
use common::*;
use tether::{Client, Config, EventKind, Status};

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn peers(b: &tether_testkit::gomuks::Backend) -> Vec<IpAddr> {
    b.stats().tcp_peers
}

fn text(ev: &tether::Event) -> String {
    String::from_utf8_lossy(ev.data()).into_owned()
}

/// A client that logs in with the backend's username and password (spec §1.2) through `proxy`.
fn login_client(b: &tether_testkit::gomuks::Backend, proxy: &str) -> Client {
    start(login_at(&b.http_url(), proxy).build().unwrap())
}

/// The configuration of a client that logs in at `url` with the backend's username and
/// password through `proxy`, with a short backoff.
fn login_at(url: &str, proxy: &str) -> tether::ConfigBuilder {
    Config::builder(url)
        .basic_auth("tether", "tether-password")
        .proxy(proxy)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// §1.2, §16: through an HTTP proxy with Basic proxy auth, the login and the websocket both
/// reach the backend from the proxy, and requests work.
#[tokio::test]
async fn spec1_2_http_connect_with_auth_carries_the_login_and_the_websocket() {
    let Some(p) = ProxyServer::tinyproxy(Some(("puser", "ppass"))) else {
        return;
    };
    let b = backend().await;
    let c = login_client(&b, &format!("http://puser:ppass@127.0.0.1:{}", p.port));
    until_command(&c, "init_complete").await;
    let reply = c.call("echo", br#"{"via":"proxy"}"#).await.unwrap();
    assert_eq!(&reply[..], br#"{"via":"proxy"}"#);
    let s = b.stats();
    assert!(s.auth_requests >= 1, "{s:?}");
    assert!(s.tcp_peers.len() >= 2, "{:?}", s.tcp_peers);
    assert!(
        s.tcp_peers.iter().all(|ip| *ip == PROXY_SOURCE),
        "every connection came through the proxy: {:?}\n{}",
        s.tcp_peers,
        p.log_text()
    );
    assert!(
        p.log_text().contains("CONNECT 127.0.0.1:"),
        "{}",
        p.log_text()
    );
    close_and_drain(&c).await;
}

/// A proxy that refuses our credentials ends the client, like a 401 from the server: one
/// DISCONNECTED with ERR_UNAUTHORIZED and the proxy's status, no retry, CLOSED — whether the
/// websocket's CONNECT or the login's meets the refusal. The password never shows.
#[tokio::test]
async fn a_wrong_proxy_password_is_final_and_clear() {
    let Some(p) = ProxyServer::tinyproxy(Some(("puser", "ppass"))) else {
        return;
    };
    let b = backend().await;
    let wrong = format!("http://puser:wrong-SECRET@127.0.0.1:{}", p.port);
    // A token: the websocket's CONNECT is the first request.
    let c = client(&b, |c| c.proxy(&wrong));
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrUnauthorized, "{}", text(&d));
    assert_eq!(d.retry_in(), None);
    // tinyproxy answers a CONNECT with wrong credentials 401, without credentials 407; both
    // are the proxy's refusal, reported as 407 so that nobody takes it for the server's 401
    // (which would also make a token-only client try a fresh login).
    assert_eq!(d.close_code(), 407);
    let msg = text(&d);
    assert!(msg.contains(&format!("127.0.0.1:{}", p.port)), "{msg}");
    assert!(!msg.contains("wrong-SECRET"), "{msg}");
    until_kind(&c, EventKind::Closed).await;
    // The login tunnels as the websocket does, and meets the same refusal.
    let c = login_client(&b, &wrong);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrUnauthorized, "{}", text(&d));
    assert_eq!(d.retry_in(), None);
    until_kind(&c, EventKind::Closed).await;
    // No credentials at all: 407.
    let c = client(&b, |c| c.proxy(&format!("http://127.0.0.1:{}", p.port)));
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!((d.status(), d.close_code()), (Status::ErrUnauthorized, 407));
    assert!(
        text(&d).contains("requires proxy credentials"),
        "{}",
        text(&d)
    );
    until_kind(&c, EventKind::Closed).await;
    // rwws stops on it too (§4: a refusal of credentials, here the proxy's).
    let c = start(
        Config::builder(&format!("http://{}/api/ws", b.addr()))
            .protocol(tether::Protocol::Rwws)
            .token(tether_testkit::rwws::DEFAULT_KEY)
            .proxy(&wrong)
            .build()
            .unwrap(),
    );
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!((d.status(), d.close_code()), (Status::ErrUnauthorized, 407));
    assert_eq!(d.retry_in(), None, "{}", text(&d));
    until_kind(&c, EventKind::Closed).await;
    // No storm: four clients, four requests at the proxy, nothing reached the backend.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = p.log_text();
    assert_eq!(log.matches("Request (file descriptor").count(), 4, "{log}");
    assert!(peers(&b).is_empty());
}

/// §1.2 over TLS: the https login's CONNECT refused for wrong credentials (tinyproxy: 401) is
/// as final and clear as the websocket's, and says it was the login's.
#[tokio::test]
async fn a_wrong_proxy_password_on_the_https_login_is_final_and_clear() {
    let Some(p) = ProxyServer::tinyproxy(Some(("puser", "ppass"))) else {
        return;
    };
    let b = backend().await;
    let (port, pem, _) = tls_front(b.addr()).await;
    let wrong = format!("http://puser:wrong-SECRET@127.0.0.1:{}", p.port);
    let c = start(
        login_at(&format!("https://localhost:{port}"), &wrong)
            .extra_ca_pem(pem.as_bytes())
            .build()
            .unwrap(),
    );
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    let msg = text(&d);
    assert_eq!(d.status(), Status::ErrUnauthorized, "{msg}");
    assert_eq!((d.retry_in(), d.close_code()), (None, 407), "{msg}");
    assert!(msg.starts_with("auth request: "), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{}", p.port)), "{msg}");
    assert!(!msg.contains("wrong-SECRET"), "{msg}");
    until_kind(&c, EventKind::Closed).await;
    assert!(peers(&b).is_empty());
}

/// §1.2 to an IPv6-literal server through an HTTP proxy: the https login and the wss
/// websocket both tunnel to `[::1]:port`, and TLS verifies the address (the certificate is
/// for the IP).
#[tokio::test]
async fn spec1_2_an_ipv6_literal_server_through_a_proxy_logs_in() {
    // tinyproxy without a source address of its own: it must reach IPv6 loopback.
    let Some(p) = ProxyServer::tinyproxy_any_source(Some(("puser", "ppass"))) else {
        return;
    };
    let b = backend().await;
    let front = tls_front_named(b.addr(), "::1").await;
    let proxy = format!("http://puser:ppass@127.0.0.1:{}", p.port);
    let c = start(
        login_at(&format!("https://[::1]:{}", front.port), &proxy)
            .extra_ca_pem(front.pem.as_bytes())
            .build()
            .unwrap(),
    );
    until_command(&c, "init_complete").await;
    let r = c.call("echo", br#"{"over":"v6"}"#).await.unwrap();
    assert_eq!(&r[..], br#"{"over":"v6"}"#);
    close_and_drain(&c).await;
    assert!(b.stats().auth_requests >= 1);
    let log = p.log_text();
    assert!(
        log.matches(&format!("CONNECT [::1]:{}", front.port))
            .count()
            >= 2,
        "the login and the websocket: {log}"
    );
}

/// §7: SOCKS5 with the name resolved by the proxy (dante, no auth): connected, a request
/// answered, and a cut resumed through the proxy with every missed event once.
#[tokio::test]
async fn spec7_socks5h_through_dante_requests_and_resumes_after_a_cut() {
    let Some(p) = ProxyServer::dante() else {
        return;
    };
    let b = backend().await;
    let url = format!("http://localhost:{}", b.addr().port());
    let c = client_at(&url, &b.token(), |c| {
        c.proxy(&format!("socks5h://127.0.0.1:{}", p.port))
    });
    until_command(&c, "init_complete").await;
    let reply = c.call("echo", br#"{"socks":5}"#).await.unwrap();
    assert_eq!(&reply[..], br#"{"socks":5}"#);
    let before = b.push_events(2);
    until(&c, |e| e.request_id() == before).await;

    b.cut_all();
    until_kind(&c, EventKind::Disconnected).await;
    let missed = b.push_events(4);
    let (conn, _) = until_kind(&c, EventKind::Connected).await;
    assert!(conn.resume_attempted());
    let (_, got) = until(&c, |e| e.request_id() == missed).await;
    let mut ids = event_ids(&got);
    ids.push(missed);
    assert_eq!(ids, ((missed..=before - 1).rev()).collect::<Vec<_>>());
    let s = b.stats();
    assert_eq!((s.resumes, s.total_connections), (1, 2));
    assert!(
        s.tcp_peers.len() == 2 && s.tcp_peers.iter().all(|ip| *ip == PROXY_SOURCE),
        "{:?}\n{}",
        s.tcp_peers,
        p.log_text()
    );
    close_and_drain(&c).await;
}

/// §1.2 through `socks5h://` to an IP-literal server (RFC 1928 §5): the address goes as an
/// address, so a strict proxy that refuses an IP sent as a name (the testkit's) carries the
/// login and the websocket; both arrive from loopback, the proxy asked for the address each
/// time.
#[tokio::test]
async fn spec1_2_socks5h_sends_an_ip_literal_server_as_an_address() {
    let p = tether_testkit::socks::Socks5::start().await.unwrap();
    let b = backend().await;
    let c = login_client(&b, &format!("socks5h://{}", p.addr()));
    until_command(&c, "init_complete").await;
    let reply = c.call("echo", br#"{"socks":"ip"}"#).await.unwrap();
    assert_eq!(&reply[..], br#"{"socks":"ip"}"#);
    let asked = p.asked();
    assert!(
        asked.len() >= 2 && asked.iter().all(|a| *a == b.addr().to_string()),
        "{asked:?}"
    );
    close_and_drain(&c).await;
}

/// RFC 1035 §2.3.4 and RFC 1928 §5: a host name no resolver and no SOCKS5 request can carry
/// is refused when the configuration is built, not by a panic or a garbled request later.
#[test]
fn a_host_name_longer_than_253_bytes_is_a_config_error() {
    let label = "a".repeat(63);
    let long = [&label[..], &label, &label, &label, "example"].join(".");
    assert!(long.len() > 253);
    for proxy in ["socks5h://127.0.0.1:1", "socks5://127.0.0.1:1", "direct"] {
        let e = Config::builder(&format!("wss://{long}/"))
            .proxy(proxy)
            .build()
            .unwrap_err();
        assert_eq!(e.status(), Status::ErrConfig, "{proxy}");
        assert!(e.message().contains("253"), "{}", e.message());
    }
    // 253 bytes, and one trailing dot more, still build.
    let fits = [&label[..], &label, &label, &"b".repeat(61)].join(".");
    assert_eq!(fits.len(), 253);
    for host in [fits.clone(), format!("{fits}.")] {
        Config::builder(&format!("wss://{host}/"))
            .proxy("socks5h://127.0.0.1:1")
            .build()
            .unwrap();
    }
}

/// §1.2: SOCKS5 with RFC 1929 auth (microsocks): the login and the websocket go through it;
/// a wrong password ends the client with ERR_UNAUTHORIZED and reaches nothing.
#[tokio::test]
async fn spec1_2_socks5_with_auth_carries_the_login_and_refuses_a_wrong_password() {
    let Some(p) = ProxyServer::microsocks("suser", "spass") else {
        return;
    };
    let b = backend().await;
    let c = login_client(&b, &format!("socks5://suser:spass@127.0.0.1:{}", p.port));
    until_command(&c, "init_complete").await;
    c.call("echo", b"{}").await.unwrap();
    let s = b.stats();
    assert!(s.auth_requests >= 1);
    assert!(
        s.tcp_peers.len() >= 2 && s.tcp_peers.iter().all(|ip| *ip == PROXY_SOURCE),
        "{:?}",
        s.tcp_peers
    );
    close_and_drain(&c).await;

    let before = peers(&b).len();
    for c in [
        login_client(
            &b,
            &format!("socks5://suser:nope-SECRET@127.0.0.1:{}", p.port),
        ),
        client(&b, |c| {
            c.proxy(&format!("socks5h://suser:nope-SECRET@127.0.0.1:{}", p.port))
        }),
    ] {
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        assert_eq!(d.status(), Status::ErrUnauthorized, "{}", text(&d));
        assert_eq!(d.retry_in(), None);
        assert!(text(&d).contains("proxy credentials"), "{}", text(&d));
        assert!(!text(&d).contains("nope-SECRET"));
        until_kind(&c, EventKind::Closed).await;
    }
    assert_eq!(peers(&b).len(), before);
}

/// The host name of this machine when it resolves to loopback only: a destination the
/// library does not know to be loopback (it does not resolve names to decide), so the
/// environment's proxy applies, while the proxy can still reach the test backend.
fn loopback_hostname() -> Option<String> {
    use std::net::ToSocketAddrs;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_owned();
    let addrs: Vec<_> = (name.as_str(), 1).to_socket_addrs().ok()?.collect();
    (!addrs.is_empty() && addrs.iter().all(|a| a.ip() == LOCAL)).then_some(name)
}

/// `http_proxy` applies to `ws://` when nothing is set explicitly, `no_proxy` exempts the
/// host, an explicit `no_proxy()` ignores the environment, and a loopback address is never
/// proxied from the environment. The only test here that reads the environment.
#[tokio::test]
async fn environment_variables_and_no_proxy_are_honoured() {
    let Some(p) = ProxyServer::tinyproxy(None) else {
        return;
    };
    let Some(host) = loopback_hostname() else {
        eprintln!("SKIPPED: this machine's host name does not resolve to 127.0.0.1 only");
        return;
    };
    let b = backend().await;
    let url = format!("http://{host}:{}", b.addr().port());
    for v in [
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        std::env::remove_var(v);
    }
    std::env::set_var("HTTP_PROXY", format!("http://127.0.0.1:{}", p.port));
    let connect_once = |url: String, f: fn(tether::ConfigBuilder) -> tether::ConfigBuilder| {
        let token = b.token();
        async move {
            let c = client_at(&url, &token, |c| f(c.allow_insecure_credentials(true)));
            until_kind(&c, EventKind::Connected).await;
            close_and_drain(&c).await;
        }
    };
    connect_once(url.clone(), |c| c).await;
    assert_eq!(peers(&b), [PROXY_SOURCE], "HTTP_PROXY applies");
    connect_once(url.clone(), |c| c.no_proxy()).await;
    assert_eq!(peers(&b)[1], LOCAL, "no_proxy() ignores the environment");
    connect_once(b.http_url(), |c| c).await;
    assert_eq!(
        peers(&b)[2],
        LOCAL,
        "127.0.0.1 is never proxied from the environment"
    );
    std::env::set_var("NO_PROXY", format!("example.org, .{host}"));
    connect_once(url.clone(), |c| c).await;
    assert_eq!(peers(&b)[3], LOCAL, "NO_PROXY exempts the host");
    std::env::set_var("no_proxy", "example.org");
    connect_once(url.clone(), |c| c).await;
    assert_eq!(peers(&b)[4], PROXY_SOURCE, "no_proxy wins over NO_PROXY");
    for v in ["HTTP_PROXY", "no_proxy", "NO_PROXY"] {
        std::env::remove_var(v);
    }
    assert_eq!(peers(&b).len(), 5);
}

/// A TLS front on 127.0.0.1 for `upstream` with a fresh self-signed certificate for
/// "localhost" (as in tests/tls.rs); returns its port, the certificate PEM and the peers it
/// accepted.
async fn tls_front(upstream: std::net::SocketAddr) -> (u16, String, Arc<Mutex<Vec<IpAddr>>>) {
    let f = tls_front_named(upstream, "localhost").await;
    (f.port, f.pem, f.peers)
}

/// A TLS front as [`tls_front`] makes, its certificate for `name` (a DNS name or an IP; for
/// `::1` it listens on IPv6 loopback).
struct Front {
    port: u16,
    pem: String,
    /// `sha256/<base64>` of the certificate's public key.
    pin: String,
    peers: Arc<Mutex<Vec<IpAddr>>>,
}

async fn tls_front_named(upstream: std::net::SocketAddr, name: &str) -> Front {
    use base64::Engine;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let pem = ck.cert.pem();
    let digest = ring::digest::digest(&ring::digest::SHA256, &ck.key_pair.public_key_der());
    let pin = format!(
        "sha256/{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    );
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sc));
    // An IPv6 name is served on IPv6 loopback.
    let bind = if name.contains(':') {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let l = tokio::net::TcpListener::bind(bind).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = l.accept().await {
            seen.lock().unwrap().push(peer.ip());
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    Front {
        port,
        pem,
        pin,
        peers,
    }
}

/// tinyproxy behind a TLS front whose certificate is for `name`: an `https://` proxy.
async fn https_proxy(name: &str) -> Option<(ProxyServer, Front)> {
    let p = ProxyServer::tinyproxy(Some(("puser", "ppass")))?;
    let front = tls_front_named(([127, 0, 0, 1], p.port).into(), name).await;
    Some((p, front))
}

/// §1.2 through an `https://` proxy: the login (plain http, sent to the proxy inside TLS) and
/// the websocket (CONNECT inside TLS) both reach the backend from the proxy, the proxy's
/// certificate verified with the extra CA.
#[tokio::test]
async fn spec1_2_an_https_proxy_carries_the_login_and_the_websocket() {
    let Some((p, front)) = https_proxy("localhost").await else {
        return;
    };
    let b = backend().await;
    let proxy = format!("https://puser:ppass@localhost:{}", front.port);
    let c = start(
        login_at(&b.http_url(), &proxy)
            .extra_ca_pem(front.pem.as_bytes())
            .build()
            .unwrap(),
    );
    until_command(&c, "init_complete").await;
    let reply = c.call("echo", br#"{"via":"https proxy"}"#).await.unwrap();
    assert_eq!(&reply[..], br#"{"via":"https proxy"}"#);
    close_and_drain(&c).await;
    let s = b.stats();
    assert!(s.auth_requests >= 1, "{s:?}");
    assert!(
        s.tcp_peers.len() >= 2 && s.tcp_peers.iter().all(|ip| *ip == PROXY_SOURCE),
        "every connection came through the proxy: {:?}\n{}",
        s.tcp_peers,
        p.log_text()
    );
    assert!(front.peers.lock().unwrap().len() >= 2);
    assert!(p.log_text().contains("CONNECT"), "{}", p.log_text());
}

/// The client is refused once with `ERR_CERTIFICATE` and never retries; returns the reason.
async fn refused_for_good(c: &Client) -> String {
    let (d, _) = until_kind(c, EventKind::Disconnected).await;
    let why = text(&d);
    assert_eq!(d.status(), Status::ErrCertificate, "{why}");
    assert_eq!(d.retry_in(), None, "{why}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.stats().connect_attempts, 1, "{why}");
    why
}

/// Pins are the server's: through an `https://` proxy with a certificate of its own, a pin of
/// the server's key lets the wss login and websocket in; a pin of the proxy's key alone
/// refuses the server, once, as any pin mismatch, on the login's route and on the websocket's
/// (a token, no login) alike. The proxy is never pinned, even under the server's own name.
#[tokio::test]
async fn pins_check_the_server_not_the_https_proxy() {
    let Some((_p, proxy)) = https_proxy("127.0.0.1").await else {
        return;
    };
    let b = backend().await;
    let server = tls_front_named(b.addr(), "localhost").await;
    let url = format!("https://localhost:{}", server.port);
    let trust_both = format!("{}{}", server.pem, proxy.pem);
    let via_proxy = |x: tether::ConfigBuilder, pin: &str| {
        x.extra_ca_pem(trust_both.as_bytes())
            .pin_sha256(pin)
            .proxy(&format!("https://puser:ppass@127.0.0.1:{}", proxy.port))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
    };
    let login = |pin: &str| {
        let x = Config::builder(&url).basic_auth("tether", "tether-password");
        start(via_proxy(x, pin).build().unwrap())
    };
    let c = login(&server.pin);
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
    assert!(b.stats().auth_requests >= 1);

    let why = refused_for_good(&login(&proxy.pin)).await;
    assert!(why.contains("pin") && why.contains(&server.pin), "{why}");

    let c = client_at(&url, &b.token(), |x| via_proxy(x, &proxy.pin));
    let why = refused_for_good(&c).await;
    assert!(why.contains("pin") && why.contains(&server.pin), "{why}");
    let c = client_at(&url, &b.token(), |x| via_proxy(x, &server.pin));
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;

    // A proxy under the server's own name is verified without the pins as well.
    let Some((_q, same_name)) = https_proxy("localhost").await else {
        return;
    };
    let trust = format!("{}{}", server.pem, same_name.pem);
    let c = client_at(&url, &b.token(), |x| {
        x.extra_ca_pem(trust.as_bytes())
            .pin_sha256(&server.pin)
            .proxy(&format!("https://puser:ppass@localhost:{}", same_name.port))
    });
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
    assert_eq!(same_name.peers.lock().unwrap().len(), 1);
}

/// An `https://` proxy whose certificate is not trusted is refused like a server's: once,
/// `ERR_CERTIFICATE`, on the websocket's route (the message naming the proxy) and on the
/// login's; the server is never reached.
#[tokio::test]
async fn an_untrusted_https_proxy_is_final_after_one_attempt() {
    let Some((_p, front)) = https_proxy("localhost").await else {
        return;
    };
    let b = backend().await;
    let proxy = format!("https://puser:ppass@localhost:{}", front.port);
    let c = client_at(&b.ws_url(), &b.token(), |x| {
        x.proxy(&proxy)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
    });
    let why = refused_for_good(&c).await;
    assert!(why.contains("HTTPS proxy localhost:"), "{why}");
    assert_eq!(front.peers.lock().unwrap().len(), 1);
    refused_for_good(&login_client(&b, &proxy)).await;
    assert_eq!(front.peers.lock().unwrap().len(), 2);
    assert!(b.stats().tcp_peers.is_empty());
}

/// §1.2 over TLS: the https login and the wss websocket both tunnel through the HTTP proxy
/// (CONNECT), and TLS runs end to end with the origin's name ("localhost") verified.
#[tokio::test]
async fn spec1_2_wss_and_the_https_login_tunnel_through_http_connect() {
    let Some(p) = ProxyServer::tinyproxy(Some(("puser", "ppass"))) else {
        return;
    };
    let b = backend().await;
    let (port, pem, front_peers) = tls_front(b.addr()).await;
    let proxy = format!("http://puser:ppass@127.0.0.1:{}", p.port);
    let c = start(
        login_at(&format!("https://localhost:{port}"), &proxy)
            .extra_ca_pem(pem.as_bytes())
            .build()
            .unwrap(),
    );
    until_command(&c, "init_complete").await;
    let r = c.call("echo", br#"{"over":"tls"}"#).await.unwrap();
    assert_eq!(&r[..], br#"{"over":"tls"}"#);
    close_and_drain(&c).await;
    assert!(b.stats().auth_requests >= 1);
    let front = front_peers.lock().unwrap().clone();
    assert!(
        front.len() >= 2 && front.iter().all(|ip| *ip == PROXY_SOURCE),
        "{front:?}"
    );
    let log = p.log_text();
    assert!(
        log.matches(&format!("CONNECT localhost:{port}")).count() >= 2,
        "{log}"
    );
}

/// A resolver's answers, changed by the test, and every URL it was asked about.
#[derive(Clone)]
struct Answers {
    next: Arc<Mutex<Result<Option<String>, String>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Default for Answers {
    fn default() -> Answers {
        Answers {
            next: Arc::new(Mutex::new(Ok(None))),
            asked: Arc::default(),
        }
    }
}

impl Answers {
    fn set(&self, answer: Result<Option<&str>, &str>) {
        *self.next.lock().unwrap() = answer.map(|a| a.map(str::to_owned)).map_err(str::to_owned);
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    fn resolver(&self) -> impl Fn(&str) -> Result<Option<String>, String> + Send + Sync + 'static {
        let me = self.clone();
        move |url| {
            me.asked.lock().unwrap().push(url.to_owned());
            me.next.lock().unwrap().clone()
        }
    }
}

/// A proxy resolver (PAC, the OS's settings) is asked before every connection, the login's
/// and the websocket's, and its answer holds for that connection only: through the proxy
/// first, directly after the network changed and the link was cut; no answer leaves the
/// decision to the configured proxy.
#[tokio::test]
async fn spec1_2_a_proxy_resolver_decides_each_connection() {
    let Some(p) = ProxyServer::tinyproxy(Some(("puser", "ppass"))) else {
        return;
    };
    let b = backend().await;
    let answers = Answers::default();
    let proxy = format!("http://puser:ppass@127.0.0.1:{}", p.port);
    answers.set(Ok(Some(&proxy)));
    let c = start(
        login_at(&b.http_url(), "direct")
            .proxy_resolver(answers.resolver())
            .build()
            .unwrap(),
    );
    until_command(&c, "init_complete").await;
    assert_eq!(peers(&b), [PROXY_SOURCE, PROXY_SOURCE], "login, websocket");
    let port = b.addr().port();
    assert_eq!(
        answers.asked(),
        [
            format!("http://127.0.0.1:{port}/_gomuks/auth"),
            format!("ws://127.0.0.1:{port}/_gomuks/websocket"),
        ]
    );

    answers.set(Ok(Some("direct")));
    b.cut_all();
    until_kind(&c, EventKind::Connected).await;
    assert_eq!(peers(&b)[2..], [LOCAL]);
    close_and_drain(&c).await;

    // No answer: the configured proxy.
    answers.set(Ok(None));
    let c = start(
        login_at(&b.http_url(), &proxy)
            .proxy_resolver(answers.resolver())
            .build()
            .unwrap(),
    );
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
    assert!(peers(&b)[3..].iter().all(|ip| *ip == PROXY_SOURCE));
    assert_eq!(answers.asked().len(), 5);
}

/// A resolver that fails fails that attempt only (`ERR_CONNECT`, retried, and the next
/// attempt asks again); an answer that is not a proxy, or that would carry credentials over
/// plain ws:// through a proxy on another machine, ends the client with `ERR_CONFIG`. Nothing
/// reaches the network for them, and no answer is echoed (it may hold a password).
#[tokio::test]
async fn a_failing_or_unusable_proxy_resolver_is_a_clear_error() {
    let b = backend().await;
    let answers = Answers::default();
    answers.set(Err("PAC script unreachable"));
    let c = client_at(&b.ws_url(), &b.token(), |x| {
        x.proxy_resolver(answers.resolver())
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(50))
    });
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrConnect, "{}", text(&d));
    assert!(text(&d).contains("the proxy resolver failed: PAC script unreachable"));
    assert!(d.retry_in().is_some());
    answers.set(Ok(Some("direct")));
    until_kind(&c, EventKind::Connected).await;
    assert!(answers.asked().len() >= 2);
    close_and_drain(&c).await;

    let before = peers(&b).len();
    for answer in [
        "ftp://me:hunter2@proxy:21",
        "http://me:hunter2@192.0.2.1:3128",
    ] {
        answers.set(Ok(Some(answer)));
        let c = client_at(&b.ws_url(), &b.token(), |x| {
            x.proxy_resolver(answers.resolver())
                .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(50))
        });
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        let why = text(&d);
        assert_eq!(d.status(), Status::ErrConfig, "{why}");
        assert_eq!(d.retry_in(), None, "{why}");
        assert!(!why.contains("hunter2"), "{why}");
        until_kind(&c, EventKind::Closed).await;
    }
    assert_eq!(peers(&b).len(), before, "{:?}", peers(&b));
}

/// A resolver that hangs holds one thread of its client, not one per attempt: while its call
/// runs, the attempts that time out waiting for it start no other call, and each says that
/// the resolver has not answered rather than blame the server. Freeing the client
/// waits for the call in progress and lets go of the resolver there, so the app's code (the
/// resolver and what it owns) never runs after its client is gone, nor on a network thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_proxy_resolver_holds_one_thread_and_the_client_waits_for_it() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    /// Records the thread the resolver was dropped on.
    struct Owned(Arc<Mutex<Option<std::thread::ThreadId>>>);
    impl Drop for Owned {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(std::thread::current().id());
        }
    }
    let dropped_on = Arc::new(Mutex::new(None));
    let owned = Owned(dropped_on.clone());
    let b = backend().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let returned = Arc::new(AtomicBool::new(false));
    let (c2, r2, done) = (calls.clone(), release.clone(), returned.clone());
    let c = client_at(&b.ws_url(), &b.token(), move |x| {
        x.connect_timeout(Duration::from_millis(100))
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
            .proxy_resolver(move |_| {
                let _owned = &owned;
                c2.fetch_add(1, Ordering::SeqCst);
                while !r2.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                done.store(true, Ordering::SeqCst);
                Ok(Some("direct".to_owned()))
            })
    });
    // Should an assertion fail, the resolver returns before the client is dropped (which
    // would wait for it forever).
    struct ReleaseOnDrop(Arc<AtomicBool>);
    impl Drop for ReleaseOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _on_failure = ReleaseOnDrop(release.clone());
    // Several attempts time out meanwhile (each ends within twice the connect timeout), each
    // saying that the resolver did not answer, not blaming the server.
    let mut attempts = 0;
    while attempts < 4 {
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        let why = text(&d);
        assert!(
            why.contains("connect timed out after 200 ms: the proxy resolver has not answered"),
            "{why}"
        );
        attempts += 1;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one call in flight at a time"
    );

    let releaser = {
        let release = release.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            release.store(true, Ordering::SeqCst);
        })
    };
    let t0 = std::time::Instant::now();
    tokio::task::block_in_place(|| drop(c));
    assert!(
        returned.load(Ordering::SeqCst),
        "free returned before the resolver"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        *dropped_on.lock().unwrap(),
        Some(std::thread::current().id()),
        "the resolver is dropped by the client's drop"
    );
    releaser.join().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no call after the client is gone"
    );
}
