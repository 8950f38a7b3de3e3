//! The OS trust store option. The test cannot put a CA into this machine's store (that needs
//! root and changes /etc/ssl for everyone), so it points `SSL_CERT_FILE` at a PEM file of its
//! own (and unsets `SSL_CERT_DIR`): `rustls-native-certs` then reads that file *instead of*
//! the system locations, as OpenSSL does. This binary holds this one test, so the variable is set before any thread
//! could read the environment.

mod common;

use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tether::{EventKind, Status};
use tether_testkit::tls::{FrontConfig, TlsFront};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[tokio::test]
async fn the_os_store_replaces_the_webpki_roots() {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "tether OS store CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let store = std::env::temp_dir().join(format!("tether-os-store-{}.pem", std::process::id()));
    std::fs::write(&store, ca.pem()).unwrap();
    std::env::set_var("SSL_CERT_FILE", &store);
    // Set, SSL_CERT_DIR's directories would be read too (some CI images set both).
    std::env::remove_var("SSL_CERT_DIR");

    let b = backend().await;
    let front = |upstream| {
        TlsFront::start(
            upstream,
            FrontConfig {
                chain: vec![CertificateDer::from(leaf.der().to_vec())],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
                client_ca: None,
            },
        )
    };
    let f = front(b.addr()).await.unwrap();
    let url = format!("https://localhost:{}", f.port());
    // With the option, the CA in the "system" store is trusted.
    let c = client_at(&url, &b.token(), |x| x.use_os_trust(true));
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
    // It verifies an https:// proxy too, also on the way to a plain ws:// server.
    if let Some(p) = common::proxies::ProxyServer::tinyproxy(None) {
        let pf = front(([127, 0, 0, 1], p.port).into()).await.unwrap();
        let c = client_at(&b.ws_url(), &b.token(), |x| {
            x.use_os_trust(true)
                .proxy(&format!("https://localhost:{}", pf.port()))
        });
        until_command(&c, "init_complete").await;
        close_and_drain(&c).await;
        assert_eq!(pf.handshakes(), 1);
        // And when a resolver, not the configuration, answers that proxy.
        let answer = format!("https://localhost:{}", pf.port());
        let c = client_at(&b.ws_url(), &b.token(), |x| {
            x.use_os_trust(true)
                .proxy_resolver(move |_| Ok(Some(answer.clone())))
        });
        until_command(&c, "init_complete").await;
        close_and_drain(&c).await;
        assert_eq!(pf.handshakes(), 2);
    }
    // Without it, the webpki roots alone do not know the CA: refused, once, for good.
    let c = client_at(&url, &b.token(), |x| x);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrCertificate);
    assert_eq!(d.retry_in(), None);
    until_kind(&c, EventKind::Closed).await;
    // An empty store is an error at connect, not a silent refusal of every server.
    std::fs::write(&store, "").unwrap();
    let c = tether::Client::new(
        tether::Config::builder(&url)
            .token(&b.token())
            .use_os_trust(true)
            .build()
            .unwrap(),
    );
    let e = c.connect().unwrap_err();
    assert_eq!(e.status(), Status::ErrTls, "{}", e.message());
    assert!(e.message().contains("OS trust store"), "{}", e.message());
    // A plain ws:// client whose resolver may answer an https:// proxy (Kotlin always has
    // one) needs no store to connect directly: the webpki roots stand in.
    let c = client_at(&b.ws_url(), &b.token(), |x| {
        x.use_os_trust(true)
            .proxy_resolver(|_| Ok(Some("direct".to_owned())))
    });
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
    let _ = std::fs::remove_file(&store);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
