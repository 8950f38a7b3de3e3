//! Secrets never reach the logs: every log record of the library and its dependencies
//! (tracing and `log`, at TRACE) and every record of the app's log sink (the path of the C
//! hook and the bindings' loggers) is captured while clients authenticate with an rwws key, a
//! gomuks password and a gomuks token, and none of them appears, in any encoding we can think
//! of (rwws spec §2.6: the key never appears in logs, errors or Debug output).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tether::{Config, EventKind, Protocol};
use tether_testkit::rwws::DEFAULT_KEY;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_in_trace_logs() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();
    let hooked = Captured::default();
    let mut hook = hooked.clone();
    assert!(tether::set_log_sink(
        Some(Box::new(move |r: &tether::LogRecord| {
            let _ = writeln!(
                hook,
                "{:?} {} [{}] {}",
                r.level, r.target, r.client, r.message
            );
        })),
        tether::LogLevel::Trace,
    ));

    let b = backend().await;
    // rwws with the default key.
    let c = start(
        Config::builder(&b.http_url())
            .protocol(Protocol::Rwws)
            .token(DEFAULT_KEY)
            .build()
            .unwrap(),
    );
    until(&c, |e| e.kind() == EventKind::Pong && e.rtt().is_some()).await;
    close_and_drain(&c).await;
    // gomuks with a password (goes through POST /_gomuks/auth) and then the token.
    let c = start(
        Config::builder(&b.http_url())
            .basic_auth("tether", "tether-password")
            .build()
            .unwrap(),
    );
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
    let token = b.token();
    let c = client(&b, |c| c.ping_interval(Duration::from_millis(100)));
    until_kind(&c, EventKind::Pong).await;
    close_and_drain(&c).await;
    // mTLS: the client key goes to a TLS front that requires it, and a bad key is refused.
    let mut refusals = String::new();
    let key_pem = {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = p.self_signed(&ca_key).unwrap();
        let issue = || {
            let k = KeyPair::generate().unwrap();
            let c = CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .signed_by(&k, &ca, &ca_key)
                .unwrap();
            (c, k)
        };
        let (server, server_key) = issue();
        let (me, my_key) = issue();
        let key_pem = my_key.serialize_pem();
        let f = tether_testkit::tls::TlsFront::start(
            b.addr(),
            tether_testkit::tls::FrontConfig {
                chain: vec![server.der().clone()],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
                client_ca: Some(CertificateDer::from(ca.der().to_vec())),
            },
        )
        .await
        .unwrap();
        let cfg = Config::builder(&format!("https://localhost:{}", f.port()))
            .token(&token)
            .extra_ca_pem(ca.pem().as_bytes())
            .client_cert_pem(me.pem().as_bytes(), key_pem.as_bytes());
        refusals.push_str(&format!("{cfg:?}"));
        let cfg = cfg.build().unwrap();
        refusals.push_str(&format!("{cfg:?}"));
        let c = start(cfg);
        until_command(&c, "init_complete").await;
        close_and_drain(&c).await;
        // The key with a line changed: refused without quoting it.
        let broken: Vec<String> = key_pem
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == 1 {
                    format!("{l}!")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        let broken = broken.join("\n");
        let e = Config::builder("wss://localhost/")
            .client_cert_pem(me.pem().as_bytes(), broken.as_bytes())
            .build()
            .unwrap_err();
        refusals.push_str(e.message());
        key_pem
    };
    // Through proxies with credentials: the login and the websocket through tinyproxy, then a
    // wrong proxy password (HTTP CONNECT) and SOCKS5 credentials; none of them is logged.
    if let Some(p) = common::proxies::ProxyServer::tinyproxy(Some(("puser", "proxy-pass-1"))) {
        let c = start(
            Config::builder(&b.http_url())
                .basic_auth("tether", "tether-password")
                .proxy(&format!("http://puser:proxy-pass-1@127.0.0.1:{}", p.port))
                .build()
                .unwrap(),
        );
        until_command(&c, "init_complete").await;
        close_and_drain(&c).await;
        let c = client(&b, |c| {
            c.proxy(&format!("http://puser:proxy-pass-2@127.0.0.1:{}", p.port))
        });
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        refusals.push_str(&String::from_utf8_lossy(d.data()));
        until_kind(&c, EventKind::Closed).await;
    }
    if let Some(p) = common::proxies::ProxyServer::microsocks("suser", "proxy-pass-3") {
        for pass in ["proxy-pass-3", "proxy-pass-4"] {
            let c = client(&b, |c| {
                c.proxy(&format!("socks5h://suser:{pass}@127.0.0.1:{}", p.port))
            });
            let (ev, _) = until(&c, |e| {
                matches!(e.kind(), EventKind::Connected | EventKind::Disconnected)
            })
            .await;
            refusals.push_str(&String::from_utf8_lossy(ev.data()));
            close_and_drain(&c).await;
        }
    }
    // gomuks renewing a short-lived token while connected (spec §1.2), then after a 401: the
    // old and the new tokens stay out of the logs.
    let short = backend_with(|c| c.token_lifetime = Duration::from_secs(2)).await;
    let mut tokens = vec![short.token()];
    let c = client_at(&short.http_url(), &tokens[0], |c| c);
    for _ in 0..2 {
        until_kind(&c, EventKind::TokenRenewed).await;
        tokens.push(c.auth_token().unwrap());
    }
    short.reject_upgrades_with(1, 401);
    short.cut_all();
    until_kind(&c, EventKind::Connected).await;
    tokens.push(c.auth_token().unwrap());
    assert!(short.stats().token_renewals >= 3);
    close_and_drain(&c).await;

    // The sink runs on its own thread: give it the last records.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hooked = String::from_utf8_lossy(&hooked.0.lock().unwrap()).into_owned();
    assert!(
        hooked.contains("POST /_gomuks/auth to log in")
            && hooked.contains("POST /_gomuks/auth to renew the token")
            && hooked.contains("connected in"),
        "the sink missed records: {hooked}"
    );
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned() + &hooked + &refusals;
    assert!(text.len() > 1000, "logging was not captured: {text}");
    let key = b"tether-test-key";
    let decimal = key
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("tether:tether-password");
    let proxy_basic: Vec<String> = ["puser:proxy-pass-1", "puser:proxy-pass-2"]
        .iter()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s))
        .collect();
    // Every line of the client key's base64 body, and the body's longest run of them.
    let key_lines: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect();
    assert!(!key_lines.is_empty());
    for line in &key_lines {
        if let Some(at) = text.find(line) {
            panic!(
                "the client key found in the logs: {}",
                &text[at.saturating_sub(80)..(at + 80).min(text.len())]
            );
        }
    }
    for secret in [
        "proxy-pass-1",
        "proxy-pass-2",
        "proxy-pass-3",
        "proxy-pass-4",
        proxy_basic[0].as_str(),
        proxy_basic[1].as_str(),
        DEFAULT_KEY,
        "tether-test-key",
        decimal.as_str(),
        hex.as_str(),
        "tether-password",
        basic.as_str(),
        &token[..token.len().min(24)],
    ]
    .into_iter()
    .chain(tokens.iter().flat_map(|t| {
        // The signature is what differs between tokens; the payload is no secret by itself.
        let sig = t.split_once('.').map_or(t.as_str(), |(_, s)| s);
        [t.as_str(), sig]
    })) {
        if let Some(at) = text.find(secret) {
            let line = text[..at].rfind('\n').unwrap_or(0);
            panic!(
                "secret {secret:?} found in the logs: {}",
                &text[line..(at + 80).min(text.len())]
            );
        }
    }
}
