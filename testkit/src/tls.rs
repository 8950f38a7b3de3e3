//! A TLS front for tests: terminates TLS on 127.0.0.1 with the certificate it is given and
//! relays the plain bytes to an upstream (a backend). It can require a client certificate
//! (mTLS) issued by a given CA, and counts the TCP connections it accepted, so a test can
//! tell one attempt from a retry storm.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A running front; it stops with the runtime that started it.
pub struct TlsFront {
    port: u16,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
}

/// What the front presents and whom it asks.
pub struct FrontConfig {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// With a CA, a client certificate issued by it is required.
    pub client_ca: Option<CertificateDer<'static>>,
}

impl TlsFront {
    /// Starts a front relaying to `upstream`.
    pub async fn start(upstream: SocketAddr, cfg: FrontConfig) -> std::io::Result<TlsFront> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?;
        let b = match cfg.client_ca {
            None => b.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).map_err(std::io::Error::other)?;
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(std::io::Error::other)?;
                b.with_client_cert_verifier(v)
            }
        };
        let sc = b
            .with_single_cert(cfg.chain, cfg.key)
            .map_err(std::io::Error::other)?;
        let acceptor = TlsAcceptor::from(Arc::new(sc));
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let port = l.local_addr()?.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (acc, hs) = (accepted.clone(), handshakes.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let hs = hs.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    hs.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        Ok(TlsFront {
            port,
            accepted,
            handshakes,
        })
    }

    /// The front's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// TCP connections accepted so far (each client attempt is one).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes that completed on the server's side.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}
