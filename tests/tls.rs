//! wss:// through rustls: certificates are verified; an extra CA can be trusted.

mod common;

use std::sync::Arc;

use common::*;
use tether::{Config, EventKind, Status};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A TLS front on 127.0.0.1 for `upstream`, with a fresh self-signed certificate for
/// "localhost"; returns its port and the certificate PEM.
async fn tls_front(upstream: std::net::SocketAddr) -> (u16, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = ck.cert.pem();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(sc));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (port, pem)
}

/// §16 step 2 over wss: with the backend's CA given, the connection is verified and works.
#[tokio::test]
async fn wss_with_extra_ca_connects() {
    let b = backend().await;
    let (port, pem) = tls_front(b.addr()).await;
    let cfg = Config::builder(&format!("https://localhost:{port}"))
        .token(&b.token())
        .extra_ca_pem(pem.as_bytes())
        .build()
        .unwrap();
    let c = start(cfg);
    until_command(&c, "init_complete").await;
    let r = c.call("echo", br#"{"over":"tls"}"#).await.unwrap();
    assert_eq!(&r[..], br#"{"over":"tls"}"#);
    close_and_drain(&c).await;
}

/// A self-signed backend is refused unless its CA is given.
#[tokio::test]
async fn wss_self_signed_is_refused_by_default() {
    let b = backend().await;
    let (port, _) = tls_front(b.addr()).await;
    let cfg = Config::builder(&format!("wss://localhost:{port}/_gomuks/websocket"))
        .token(&b.token())
        .build()
        .unwrap();
    let c = start(cfg);
    let (d, _) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(
        d.status(),
        Status::ErrTls,
        "{}",
        String::from_utf8_lossy(d.data())
    );
    assert_eq!(b.stats().total_connections, 0);
    close_and_drain(&c).await;
}

/// An unparsable CA file is a config error before any connection.
#[test]
fn bad_ca_pem_is_a_config_error() {
    let e = Config::builder("wss://localhost/")
        .extra_ca_pem(b"garbage")
        .build()
        .unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig);
}
