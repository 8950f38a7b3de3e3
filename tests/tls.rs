//! wss:// through rustls: certificates are verified; an extra CA can be trusted; pins are
//! checked on top of the chain; a client certificate is shown to a server that asks; a
//! refused certificate ends the client after one attempt, other TLS failures are retried.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, RevocationReason, RevokedCertParams, SerialNumber,
};
use tether::{Client, Config, ConfigBuilder, Event, EventKind, Status};
use tether_testkit::tls::{FrontConfig, TlsFront as Front};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA made for one test.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A CA under this one.
    fn intermediate(&self, name: &str) -> Ca {
        self.intermediate_with_key(name, KeyPair::generate().unwrap())
    }

    /// A CA under this one with a given key: two of these with one key and name are one
    /// intermediate cross-signed by two CAs.
    fn intermediate_with_key(&self, name: &str, key: KeyPair) -> Ca {
        self.intermediate_with(name, key, |_| {})
    }

    /// A CA under this one, its parameters adjusted by `f` (a fixed serial, say).
    fn intermediate_with(
        &self,
        name: &str,
        key: KeyPair,
        f: impl FnOnce(&mut CertificateParams),
    ) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        f(&mut p);
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Ca { cert, key }
    }

    /// A CRL of this CA revoking the given serial numbers; its next update is long past.
    fn crl(&self, revoked: &[u64]) -> String {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2025, 2, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2025, 1, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .unwrap()
            .pem()
            .unwrap()
    }

    fn pin(&self) -> String {
        pin_of(&self.key)
    }

    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert.der().to_vec())
    }

    /// A leaf for "localhost" (a server) or a client certificate.
    fn issue(&self, client: bool) -> Leaf {
        self.issue_with(client, |_| {})
    }

    fn issue_with(&self, client: bool, f: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.distinguished_name.push(
            DnType::CommonName,
            if client { "client" } else { "localhost" },
        );
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        f(&mut p);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert, key }
    }
}

/// `sha256/<base64>` of the SubjectPublicKeyInfo, as `openssl x509 -pubkey | openssl pkey
/// -pubin -outform der | openssl dgst -sha256 -binary | base64` prints it.
fn pin_of(key: &KeyPair) -> String {
    use base64::Engine;
    let d = ring::digest::digest(&ring::digest::SHA256, &key.public_key_der());
    format!(
        "sha256/{}",
        base64::engine::general_purpose::STANDARD.encode(d.as_ref())
    )
}

struct Leaf {
    cert: Certificate,
    key: KeyPair,
}

impl Leaf {
    fn pin(&self) -> String {
        pin_of(&self.key)
    }

    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert.der().to_vec())
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

/// A front presenting `leaf`; with `client_ca`, it requires a client certificate from it.
async fn front(upstream: std::net::SocketAddr, leaf: &Leaf, client_ca: Option<&Ca>) -> Front {
    front_sending(upstream, leaf, &[], client_ca).await
}

/// A front presenting `leaf` followed by the certificates of `more`, in that order.
async fn front_sending(
    upstream: std::net::SocketAddr,
    leaf: &Leaf,
    more: &[&Ca],
    client_ca: Option<&Ca>,
) -> Front {
    let mut chain = vec![leaf.der()];
    chain.extend(more.iter().map(|ca| ca.der()));
    Front::start(
        upstream,
        FrontConfig {
            chain,
            key: leaf.key_der(),
            client_ca: client_ca.map(Ca::der),
        },
    )
    .await
    .unwrap()
}

fn at(f: &Front) -> String {
    format!("https://localhost:{}", f.port())
}

/// A client for the front with the backend's token and a short backoff: a retry would show
/// up within the grace period of [`refused_once`].
fn client_for(
    f: &Front,
    b: &tether_testkit::gomuks::Backend,
    cfg: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> Client {
    client_at(&at(f), &b.token(), cfg)
}

/// The client is refused with `ErrCertificate`, says it will not retry, and makes no second
/// attempt; returns the DISCONNECTED event.
async fn refused_once(c: &Client, f: &Front) -> Event {
    let (d, _) = until_kind(c, EventKind::Disconnected).await;
    let why = String::from_utf8_lossy(d.data()).into_owned();
    assert_eq!(d.status(), Status::ErrCertificate, "{why}");
    assert_eq!(d.retry_in(), None, "{why}");
    // The backoff is 20 ms: a retry storm would be plain in half a second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.stats().connect_attempts, 1, "{why}");
    assert_eq!(f.accepted(), 1, "{why}");
    let (closed, _) = until_kind(c, EventKind::Closed).await;
    assert_eq!(closed.kind(), EventKind::Closed);
    d
}

/// §16 step 2 over wss: with the backend's CA given, the connection is verified and works.
#[tokio::test]
async fn wss_with_extra_ca_connects() {
    let b = backend().await;
    let ca = Ca::new("test CA");
    let f = front(b.addr(), &ca.issue(false), None).await;
    let c = client_for(&f, &b, |x| x.extra_ca_pem(ca.pem().as_bytes()));
    until_command(&c, "init_complete").await;
    let r = c.call("echo", br#"{"over":"tls"}"#).await.unwrap();
    assert_eq!(&r[..], br#"{"over":"tls"}"#);
    close_and_drain(&c).await;
}

/// A server whose CA is not trusted is refused once, with ErrCertificate, and never retried.
#[tokio::test]
async fn unknown_ca_is_final_after_one_attempt() {
    let b = backend().await;
    let f = front(b.addr(), &Ca::new("unknown CA").issue(false), None).await;
    let c = client_for(&f, &b, |x| x);
    let d = refused_once(&c, &f).await;
    let why = String::from_utf8_lossy(d.data()).into_owned();
    assert!(why.contains("UnknownIssuer"), "{why}");
    assert_eq!(b.stats().total_connections, 0);
}

/// The certificate of another name is refused like an unknown CA.
#[tokio::test]
async fn wrong_name_is_final() {
    let b = backend().await;
    let ca = Ca::new("test CA");
    let f = front(b.addr(), &ca.issue(false), None).await;
    let c = client_at(
        &format!("https://127.0.0.1:{}", f.port()),
        &b.token(),
        |x| x.extra_ca_pem(ca.pem().as_bytes()),
    );
    refused_once(&c, &f).await;
}

/// An expired certificate from a trusted CA is refused like an unknown one.
#[tokio::test]
async fn an_expired_certificate_is_final() {
    let b = backend().await;
    let ca = Ca::new("test CA");
    let leaf = ca.issue_with(false, |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let f = front(b.addr(), &leaf, None).await;
    let c = client_for(&f, &b, |x| x.extra_ca_pem(ca.pem().as_bytes()));
    let d = refused_once(&c, &f).await;
    let why = String::from_utf8_lossy(d.data()).into_owned();
    assert!(why.to_lowercase().contains("expired"), "{why}");
}

/// A pin of the leaf's public key, beside one that matches nothing, lets the connection in.
#[tokio::test]
async fn a_matching_pin_connects() {
    let b = backend().await;
    let ca = Ca::new("test CA");
    let leaf = ca.issue(false);
    let other = ca.issue(false);
    let f = front(b.addr(), &leaf, None).await;
    let c = client_for(&f, &b, |x| {
        x.extra_ca_pem(ca.pem().as_bytes())
            .pin_sha256(&other.pin())
            // The bare base64 form (HPKP's pin-sha256) is read too.
            .pin_sha256(leaf.pin().trim_start_matches("sha256/"))
    });
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
}

/// A verified certificate whose key matches no pin is refused once, naming the server's pin.
#[tokio::test]
async fn a_pin_mismatch_is_final_after_one_attempt() {
    let b = backend().await;
    let ca = Ca::new("test CA");
    let leaf = ca.issue(false);
    let f = front(b.addr(), &leaf, None).await;
    let c = client_for(&f, &b, |x| {
        x.extra_ca_pem(ca.pem().as_bytes())
            .pin_sha256(&ca.issue(false).pin())
    });
    let d = refused_once(&c, &f).await;
    let why = String::from_utf8_lossy(d.data()).into_owned();
    assert!(why.contains("pin") && why.contains(&leaf.pin()), "{why}");
}

/// A pin may name the intermediate that issued the leaf, or the trusted root above it: the
/// leaf can be renewed under either without a new pin.
#[tokio::test]
async fn a_pin_of_the_intermediate_or_the_root_connects() {
    let b = backend().await;
    let root = Ca::new("test root");
    let inter = root.intermediate("test intermediate");
    let leaf = inter.issue(false);
    for pin in [inter.pin(), root.pin()] {
        let f = front_sending(b.addr(), &leaf, &[&inter], None).await;
        let c = client_for(&f, &b, |x| {
            x.extra_ca_pem(root.pem().as_bytes()).pin_sha256(&pin)
        });
        until_command(&c, "init_complete").await;
        close_and_drain(&c).await;
    }
}

/// Only keys on the verified path count: not a certificate the server sends beside its chain,
/// and not a trusted root that does not sign it.
#[tokio::test]
async fn a_key_off_the_verified_path_matches_no_pin() {
    let b = backend().await;
    let root = Ca::new("test root");
    let other_root = Ca::new("another trusted root");
    let stray = root.intermediate("an intermediate the leaf is not under");
    let leaf = root.issue(false);
    for pin in [stray.pin(), other_root.pin()] {
        let f = front_sending(b.addr(), &leaf, &[&stray], None).await;
        let c = client_for(&f, &b, |x| {
            x.extra_ca_pem(format!("{}{}", root.pem(), other_root.pem()).as_bytes())
                .pin_sha256(&pin)
        });
        let d = refused_once(&c, &f).await;
        let why = String::from_utf8_lossy(d.data()).into_owned();
        assert!(why.contains("pin") && why.contains(&leaf.pin()), "{why}");
    }
}

/// A cross-signed intermediate gives two paths; the pin of the second path's root is
/// enough although the first path, the one tried first, holds no pinned key.
#[tokio::test]
async fn a_cross_signed_chain_passes_when_any_path_is_pinned() {
    let b = backend().await;
    let (old_root, new_root) = (Ca::new("old root"), Ca::new("new root"));
    let key = KeyPair::generate().unwrap();
    let key_again = KeyPair::from_pem(&key.serialize_pem()).unwrap();
    let under_old = old_root.intermediate_with_key("cross-signed", key);
    let under_new = new_root.intermediate_with_key("cross-signed", key_again);
    let leaf = under_old.issue(false);
    let both = format!("{}{}", old_root.pem(), new_root.pem());
    let trusting_both = |x: ConfigBuilder| x.extra_ca_pem(both.as_bytes());
    let f = front_sending(b.addr(), &leaf, &[&under_old, &under_new], None).await;
    let c = client_for(&f, &b, |x| trusting_both(x).pin_sha256(&new_root.pin()));
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
    // The control: without the new root's certificate sent, only the unpinned path is left.
    let f = front_sending(b.addr(), &leaf, &[&under_old], None).await;
    let c = client_for(&f, &b, |x| trusting_both(x).pin_sha256(&new_root.pin()));
    refused_once(&c, &f).await;
}

/// Pins add to the chain verification, never replace it: a pinned server whose CA is not
/// trusted is still refused.
#[tokio::test]
async fn a_pin_does_not_replace_the_chain_check() {
    let b = backend().await;
    let leaf = Ca::new("unknown CA").issue(false);
    let f = front(b.addr(), &leaf, None).await;
    let c = client_for(&f, &b, |x| x.pin_sha256(&leaf.pin()));
    let d = refused_once(&c, &f).await;
    assert!(String::from_utf8_lossy(d.data()).contains("UnknownIssuer"));
}

/// A leaf that a given CRL revokes is refused once, for good, naming the revocation; one the
/// CRL does not list connects. The CRL is past its next update: it still revokes.
#[tokio::test]
async fn a_revoked_leaf_is_final_and_an_unlisted_one_connects() {
    let b = backend().await;
    let ca = Ca::new("test CA");
    let serial = |n: u64| move |p: &mut CertificateParams| p.serial_number = Some(n.into());
    let crl = ca.crl(&[7]);
    let trusting = |x: ConfigBuilder| x.extra_ca_pem(ca.pem().as_bytes()).crl_pem(crl.as_bytes());
    let f = front(b.addr(), &ca.issue_with(false, serial(7)), None).await;
    let c = client_for(&f, &b, trusting);
    let d = refused_once(&c, &f).await;
    let why = String::from_utf8_lossy(d.data()).into_owned();
    assert!(why.contains("Revoked"), "{why}");
    let f = front(b.addr(), &ca.issue_with(false, serial(8)), None).await;
    let c = client_for(&f, &b, trusting);
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
}

/// A CRL for the leaf's issuer that does not verify (signed by another key under the same
/// name) refuses the certificate for good too: it would fail every attempt alike.
#[tokio::test]
async fn a_crl_that_does_not_verify_is_final() {
    let b = backend().await;
    let ca = Ca::new("test CA");
    let impostor = Ca::new("test CA");
    let f = front(b.addr(), &ca.issue(false), None).await;
    let crl = impostor.crl(&[99]);
    let c = client_for(&f, &b, |x| {
        x.extra_ca_pem(ca.pem().as_bytes()).crl_pem(crl.as_bytes())
    });
    let d = refused_once(&c, &f).await;
    let why = String::from_utf8_lossy(d.data()).into_owned();
    assert!(why.contains("revocation list"), "{why}");
}

/// Only the leaf is checked, and only against the CRLs given: a leaf under an intermediate
/// whose CRL is not given connects beside the root's CRL, even though that CRL revokes the
/// intermediate itself (serial 2), which a check of the whole chain would refuse.
#[tokio::test]
async fn a_leaf_without_a_crl_for_its_issuer_connects() {
    let b = backend().await;
    let root = Ca::new("test root");
    let inter = root.intermediate_with("test intermediate", KeyPair::generate().unwrap(), |p| {
        p.serial_number = Some(2u64.into())
    });
    let leaf = inter.issue(false);
    let f = front_sending(b.addr(), &leaf, &[&inter], None).await;
    let crl = root.crl(&[1, 2, 3]);
    let c = client_for(&f, &b, |x| {
        x.extra_ca_pem(root.pem().as_bytes())
            .crl_pem(crl.as_bytes())
    });
    until_command(&c, "init_complete").await;
    close_and_drain(&c).await;
}

/// mTLS: a server that requires a client certificate accepts ours.
#[tokio::test]
async fn a_client_certificate_is_shown_when_asked() {
    let b = backend().await;
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let me = clients.issue(true);
    let f = front(b.addr(), &ca.issue(false), Some(&clients)).await;
    let c = client_for(&f, &b, |x| {
        x.extra_ca_pem(ca.pem().as_bytes())
            .client_cert_pem(me.cert.pem().as_bytes(), me.key.serialize_pem().as_bytes())
    });
    until_command(&c, "init_complete").await;
    let r = c.call("echo", br#"{"mtls":true}"#).await.unwrap();
    assert_eq!(&r[..], br#"{"mtls":true}"#);
    close_and_drain(&c).await;
}

/// The client certificate is the server's alone: a server behind an `https://` proxy that
/// requires one gets it through the tunnel, and a proxy that requires one is shown none and
/// refuses us, once and for good, before the server is reached.
#[tokio::test]
async fn the_client_certificate_is_shown_to_the_server_not_the_https_proxy() {
    let Some(tinyproxy) = common::proxies::ProxyServer::tinyproxy(None) else {
        return;
    };
    let b = backend().await;
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let me = clients.issue(true);
    let server = front(b.addr(), &ca.issue(false), Some(&clients)).await;
    let to_proxy = ([127, 0, 0, 1], tinyproxy.port).into();
    let via = |proxy: &Front| {
        let (me, ca) = (&me, &ca);
        let proxy = format!("https://localhost:{}", proxy.port());
        move |x: ConfigBuilder| {
            x.extra_ca_pem(ca.pem().as_bytes())
                .client_cert_pem(me.cert.pem().as_bytes(), me.key.serialize_pem().as_bytes())
                .proxy(&proxy)
        }
    };

    let open_proxy = front(to_proxy, &ca.issue(false), None).await;
    let c = client_for(&server, &b, via(&open_proxy));
    until_command(&c, "init_complete").await;
    let r = c
        .call("echo", br#"{"mtls":"through the proxy"}"#)
        .await
        .unwrap();
    assert_eq!(&r[..], br#"{"mtls":"through the proxy"}"#);
    close_and_drain(&c).await;
    assert_eq!(server.handshakes(), 1);

    let strict_proxy = front(to_proxy, &ca.issue(false), Some(&clients)).await;
    let c = client_for(&server, &b, via(&strict_proxy));
    let d = refused_once(&c, &strict_proxy).await;
    let why = String::from_utf8_lossy(d.data()).into_owned();
    assert!(why.contains("HTTPS proxy localhost:"), "{why}");
    assert_eq!(strict_proxy.handshakes(), 0, "{why}");
    assert_eq!(server.accepted(), 1, "{why}");
}

/// Without a client certificate, or with one the server does not trust, the server's refusal
/// is final too.
#[tokio::test]
async fn a_missing_or_untrusted_client_certificate_is_final() {
    let b = backend().await;
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let stranger = Ca::new("other CA").issue(true);
    for with_cert in [false, true] {
        let f = front(b.addr(), &ca.issue(false), Some(&clients)).await;
        let c = client_for(&f, &b, |x| {
            let x = x.extra_ca_pem(ca.pem().as_bytes());
            if with_cert {
                x.client_cert_pem(
                    stranger.cert.pem().as_bytes(),
                    stranger.key.serialize_pem().as_bytes(),
                )
            } else {
                x
            }
        });
        refused_once(&c, &f).await;
    }
    assert_eq!(b.stats().total_connections, 0);
}

/// The gomuks login (`POST /_gomuks/auth`, §1.2) verifies like the websocket, and its refusal
/// of a certificate is as final.
#[tokio::test]
async fn the_login_refuses_the_certificate_once() {
    let b = backend().await;
    let ca = Ca::new("test CA");
    let leaf = ca.issue(false);
    let f = front(b.addr(), &leaf, None).await;
    let cfg = Config::builder(&at(&f))
        .basic_auth("user", "password")
        .extra_ca_pem(ca.pem().as_bytes())
        .pin_sha256(&ca.issue(false).pin())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    let c = start(cfg);
    refused_once(&c, &f).await;
}

/// rwws stops on a refused certificate too: its reconnect table retries failed connections,
/// but this one would fail the same way for ever.
#[tokio::test]
async fn rwws_stops_on_a_refused_certificate() {
    let b = backend().await;
    let f = front(b.addr(), &Ca::new("unknown CA").issue(false), None).await;
    let cfg = Config::builder(&at(&f))
        .protocol(tether::Protocol::Rwws)
        .token(tether_testkit::rwws::DEFAULT_KEY)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    let c = start(cfg);
    refused_once(&c, &f).await;
}

/// A TLS failure that is not about a certificate (the server hangs up mid-handshake) is
/// retried with backoff like a connect failure.
#[tokio::test]
async fn a_broken_handshake_is_retried() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    let c = client_at(&format!("wss://localhost:{port}/"), "t", |x| x);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_ne!(d.status(), Status::ErrCertificate);
    assert!(d.retry_in().is_some());
    until(&c, |e| {
        e.kind() == EventKind::Disconnected && e.attempt() >= 2
    })
    .await;
    assert!(accepted.load(Ordering::SeqCst) >= 2);
    close_and_drain(&c).await;
}

/// Unparsable trust settings are config errors before any connection, and never quote the key.
#[test]
fn bad_trust_settings_are_config_errors() {
    let b = || Config::builder("wss://localhost/");
    let e = b().extra_ca_pem(b"garbage").build().unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig);
    let e = b().pin_sha256("sha256/short").build().unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig);
    for bad in [
        &b"garbage"[..],
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    ] {
        let e = b().crl_pem(bad).build().unwrap_err();
        assert_eq!(e.status(), Status::ErrConfig, "{}", e.message());
        assert!(e.message().contains("CRL"), "{}", e.message());
    }
    // Over plain ws:// nothing would be checked.
    let crl = Ca::new("x").crl(&[1]);
    let e = Config::builder("ws://localhost/")
        .crl_pem(crl.as_bytes())
        .build()
        .unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig);
    assert!(b().crl_pem(crl.as_bytes()).build().is_ok());
    // Two lists of one issuer: webpki would read only the first, so the bundle is refused.
    let ca = Ca::new("y");
    let two = format!("{}{}", ca.crl(&[1]), ca.crl(&[1, 2]));
    let e = b().crl_pem(two.as_bytes()).build().unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig);
    assert!(e.message().contains("same issuer"), "{}", e.message());
    // A pin over plain ws:// would check nothing.
    let e = Config::builder("ws://localhost/")
        .pin_sha256(&Ca::new("x").issue(false).pin())
        .build()
        .unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig);
    let me = Ca::new("x").issue(true);
    let e = b()
        .client_cert_pem(
            me.cert.pem().as_bytes(),
            b"-----BEGIN PRIVATE KEY-----\nSEKRIT\n",
        )
        .build()
        .unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig);
    assert!(!e.message().contains("SEKRIT"), "{}", e.message());
    let cfg = b()
        .client_cert_pem(me.cert.pem().as_bytes(), me.key.serialize_pem().as_bytes())
        .build()
        .unwrap();
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}
