//! TLS setup, in one place: the rustls client configs that the websocket and the gomuks auth
//! call both verify with ([`Configs`]: the server's, and an `https://` proxy's), and which TLS
//! failures are final. Imports only the status leaf.
//!
//! Trust is decided by [`Trust`]:
//! - the roots: the webpki roots (Mozilla's list, compiled in; the default) or the operating
//!   system's store ([`Trust::os_store`], loaded by `rustls-native-certs` when a client
//!   connects: instead of the webpki roots, so a CA the system distrusts stays distrusted),
//!   plus the extra CAs in either case;
//! - pins: SHA-256 hashes of a SubjectPublicKeyInfo. They are checked *in addition to* the
//!   normal chain verification, never instead of it: a pinned self-signed server still needs
//!   its certificate given as an extra CA. A pin matches the leaf's key or the key of any
//!   certificate on a verified path from the leaf to a trusted root, that root included (as
//!   HPKP and OkHttp match): a leaf renewed every few months keeps its intermediate's pin;
//!   a certificate the server sends that is on no such path matches nothing;
//! - a client certificate and key for servers that ask for one (mTLS);
//! - certificate revocation lists: a leaf certificate one of them revokes is refused. Only the
//!   leaf is checked, and only against the CRLs given: a leaf whose issuer has no CRL here is
//!   not refused for that (a private PKI hands its CRL to its clients; the public web has
//!   none to give), and a CRL past its next update still revokes what it lists. A CRL for the
//!   leaf's issuer that does not verify refuses the certificate too (final, like a revoked
//!   one). They apply to every certificate verified with this config: an `https://` proxy's
//!   too, and the login's.
//!
//! The pins and the client certificate are the server's alone: an `https://` proxy's
//! certificate is verified with the roots, the extra CAs and the CRLs, and the proxy is shown
//! no client certificate.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use once_cell::sync::OnceCell;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, OtherError,
    RootCertStore, SignatureScheme,
};

use crate::status::{Error, Status};

/// One SHA-256 pin: the hash of a certificate's DER SubjectPublicKeyInfo.
pub(crate) type Pin = [u8; 32];

/// A client certificate chain and its private key, parsed and checked against each other.
#[derive(Clone)]
pub(crate) struct ClientCert {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret; the chain is public but long.
        write!(
            f,
            "ClientCert({} certificates, key <redacted>)",
            self.chain.len()
        )
    }
}

/// Everything that decides whom a client trusts and how it proves itself; parsed and
/// checked when the configuration is built.
#[derive(Clone, Debug, Default)]
pub(crate) struct Trust {
    /// CAs trusted besides the roots.
    pub(crate) extra_ca: Vec<CertificateDer<'static>>,
    /// Certificate revocation lists for the leaf.
    pub(crate) crls: Vec<CertificateRevocationListDer<'static>>,
    /// The OS store instead of the webpki roots.
    pub(crate) os_store: bool,
    /// With pins, one of them must match a key on a verified path (see the module doc).
    pub(crate) pins: Vec<Pin>,
    /// Shown to a server that asks for a client certificate.
    pub(crate) client_cert: Option<ClientCert>,
}

impl Trust {
    fn is_default(&self) -> bool {
        self.extra_ca.is_empty()
            && !self.os_store
            && self.pins.is_empty()
            && self.client_cert.is_none()
            && self.crls.is_empty()
    }
}

/// The TLS name of a URL's host (brackets of an IPv6 literal removed).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|e| Error::new(Status::ErrConfig, format!("bad TLS server name: {e}")))
}

/// Parses PEM CA certificates; an empty or unparsable bundle is a config error.
pub(crate) fn parse_ca_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(Error::new(
            Status::ErrConfig,
            "CA file holds no certificate",
        )),
        Err(e) => Err(Error::new(
            Status::ErrConfig,
            format!("invalid CA PEM: {e}"),
        )),
    }
}

/// Parses PEM certificate revocation lists (`X509 CRL` blocks); an empty or unparsable bundle
/// is a config error, and so is a list webpki cannot read (checked here, not at connect).
pub(crate) fn parse_crl_pem(
    pem: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let bad = |why: String| Error::new(Status::ErrConfig, why);
    let crls = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("invalid CRL PEM: {e}")))?;
    if crls.is_empty() {
        return Err(bad("CRL file holds no revocation list".into()));
    }
    // webpki consults the first list that covers a certificate: a second list of the same
    // scope (an older one left in the bundle, say) would be silently ignored.
    let mut scopes = std::collections::HashSet::new();
    for crl in &crls {
        let parsed: webpki::CertRevocationList<'_> =
            webpki::OwnedCertRevocationList::from_der(crl.as_ref())
                .map_err(|e| bad(format!("unusable CRL: {e}")))?
                .into();
        let scope = (
            parsed.issuer().to_vec(),
            parsed.issuing_distribution_point().map(<[u8]>::to_vec),
        );
        if !scopes.insert(scope) {
            return Err(bad(
                "two CRLs of the same issuer and scope: give only the newest".into(),
            ));
        }
    }
    Ok(crls)
}

/// Parses a pin: the base64 SHA-256 of a SubjectPublicKeyInfo, as HPKP's `pin-sha256` value,
/// optionally written `sha256/<base64>` as OkHttp's `CertificatePinner` does.
pub(crate) fn parse_pin(pin: &str) -> Result<Pin, Error> {
    use base64::Engine;
    let text = pin.trim();
    let text = text.strip_prefix("sha256/").unwrap_or(text);
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|b| Pin::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            Error::new(
                Status::ErrConfig,
                format!(
                    "invalid pin {pin:?}: expected sha256/ and the base64 of a 32-byte SHA-256 \
                     (44 characters)"
                ),
            )
        })
}

/// The pin of a DER SubjectPublicKeyInfo.
fn spki_pin(spki: &[u8]) -> Pin {
    let d = ring::digest::digest(&ring::digest::SHA256, spki);
    let mut pin = [0u8; 32];
    pin.copy_from_slice(d.as_ref());
    pin
}

/// `sha256/<base64>`, the form [`parse_pin`] reads.
fn show_pin(pin: &Pin) -> String {
    use base64::Engine;
    format!(
        "sha256/{}",
        base64::engine::general_purpose::STANDARD.encode(pin)
    )
}

/// Parses a client certificate chain and its private key (PKCS#8, PKCS#1 or SEC1 PEM) and
/// checks that they belong together. Errors never quote the key file.
pub(crate) fn parse_client_cert(cert_pem: &[u8], key_pem: &[u8]) -> Result<ClientCert, Error> {
    let bad = |m: &str| Error::new(Status::ErrConfig, m.to_owned());
    let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&format!("invalid client certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad("client certificate PEM holds no certificate"));
    }
    // The PEM parser's errors may quote a line of the input: never for the key.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| bad("client key PEM holds no readable private key"))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
        |e| match e {
            rustls::Error::InconsistentKeys(_) => {
                bad("the client key does not belong to the client certificate")
            }
            _ => bad("the client key is not usable (unsupported key type)"),
        },
    )?;
    Ok(ClientCert {
        chain,
        key: Arc::new(key),
    })
}

/// The rustls configs of one client. The server's carries the pins and the client
/// certificate. An `https://` proxy's verifies with the same roots, extra CAs and CRLs and
/// shows nothing: the pins are the server's keys, and the client certificate says who the
/// client is to the server, which a proxy on the way is not to learn.
#[derive(Clone)]
pub(crate) struct Configs {
    pub(crate) server: Arc<ClientConfig>,
    /// For the TLS to an `https://` proxy; the server's config when there is none (a client's
    /// proxy is fixed when its configuration is built, so it is then never used).
    pub(crate) proxy: Arc<ClientConfig>,
}

/// The [`Configs`] of a client trusting as `trust` says, with an `https://` proxy or not.
pub(crate) fn configs(trust: &Trust, https_proxy: bool) -> Result<Configs, Error> {
    // Without pins or a client certificate the server's config shows a proxy nothing either.
    if !https_proxy || (trust.pins.is_empty() && trust.client_cert.is_none()) {
        let server = client_config(trust)?;
        return Ok(Configs {
            proxy: server.clone(),
            server,
        });
    }
    // One root store for both: the OS store is read once.
    let roots = root_store(trust)?;
    let server = build_with(trust, roots.clone())?;
    let proxy_trust = Trust {
        pins: Vec::new(),
        client_cert: None,
        ..trust.clone()
    };
    let proxy = build_with(&proxy_trust, roots)?;
    Ok(Configs { server, proxy })
}

/// The rustls config for a client. With default trust every client shares one config
/// (building the root store costs about a millisecond); the OS store is read anew for each
/// client that asks for it, so a CA installed meanwhile counts.
pub(crate) fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, Error> {
    static DEFAULT: OnceCell<Arc<ClientConfig>> = OnceCell::new();
    if trust.is_default() {
        return DEFAULT.get_or_try_init(|| build(trust)).cloned();
    }
    build(trust)
}

fn build(trust: &Trust) -> Result<Arc<ClientConfig>, Error> {
    build_with(trust, root_store(trust)?)
}

/// The roots `trust` verifies with: the webpki roots or the OS store, plus the extra CAs.
fn root_store(trust: &Trust) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    if trust.os_store {
        let found = rustls_native_certs::load_native_certs();
        // Unreadable entries are skipped, as OpenSSL does; only a store with nothing usable
        // in it is an error (every connection would be refused).
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 && trust.extra_ca.is_empty() {
            let why = found
                .errors
                .first()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            return Err(Error::new(
                Status::ErrTls,
                format!("the OS trust store holds no usable certificate{why}"),
            ));
        }
    } else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for c in &trust.extra_ca {
        roots
            .add(c.clone())
            .map_err(|e| Error::new(Status::ErrConfig, format!("bad CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The config for `trust` over `roots` (from [`root_store`]).
fn build_with(trust: &Trust, roots: Arc<RootCertStore>) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(Status::ErrTls, e.to_string()))?;
    let mut verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone());
    if !trust.crls.is_empty() {
        verifier = verifier
            .with_crls(trust.crls.iter().cloned())
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let inner = verifier
        .build()
        .map_err(|e| Error::new(Status::ErrTls, e.to_string()))?;
    let builder = if trust.pins.is_empty() {
        builder.with_webpki_verifier(inner)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                inner,
                roots,
                algorithms: provider.signature_verification_algorithms,
                pins: trust.pins.clone(),
            }))
    };
    let cc = match &trust.client_cert {
        None => builder.with_no_client_auth(),
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .map_err(|_| Error::new(Status::ErrConfig, "the client key is not usable"))?,
    };
    Ok(Arc::new(cc))
}

/// The normal verification, then the pins: the leaf's key, or a key on a verified path from
/// it to one of `roots`, must hash to one.
#[derive(Debug)]
struct Pinned {
    inner: Arc<WebPkiServerVerifier>,
    /// The roots `inner` verifies with, for building the paths the pins are matched against.
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    pins: Vec<Pin>,
}

impl Pinned {
    fn pinned(&self, spki: &[u8]) -> bool {
        self.pins.contains(&spki_pin(spki))
    }

    /// Whether a path from `leaf` through some of `intermediates` to a root holds a pinned
    /// key. webpki's path building tries every candidate path until the check accepts one,
    /// so a cross-signed chain passes if any of its paths is pinned, not only the first.
    fn path_is_pinned(
        &self,
        leaf: &webpki::EndEntityCert<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> bool {
        let pinned_path = |path: &webpki::VerifiedPath<'_>| {
            let hit = path
                .intermediate_certificates()
                .any(|c| self.pinned(c.subject_public_key_info().as_ref()))
                || self.pinned(webpki::spki_for_anchor(path.anchor()).as_ref());
            // The variant only steers the search on to the next candidate; it is never shown.
            hit.then_some(()).ok_or(webpki::Error::UnknownIssuer)
        };
        leaf.verify_for_usage(
            self.algorithms.all,
            &self.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            Some(&pinned_path),
        )
        .is_ok()
    }
}

/// A verified certificate whose public key matches no pin.
struct PinMismatch(Pin);

// rustls shows the error inside `InvalidCertificate` with `Debug`: make that the message.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's public key ({}) matches no configured pin, and no key on its \
             certificate's verified path to a trusted root does",
            show_pin(&self.0)
        )
    }
}

impl StdError for PinMismatch {}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let leaf = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let pin = spki_pin(leaf.subject_public_key_info().as_ref());
        // The leaf first: the common pin, and it needs no second path search.
        if self.pins.contains(&pin) || self.path_is_pinned(&leaf, intermediates, now) {
            Ok(ok)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch(pin))),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `e` (or an error under it) is a refused certificate: ours refusing the server's
/// (unknown issuer, wrong name, expired, revoked, pin mismatch) or the server refusing ours
/// (its alert). Such a failure repeats on every attempt until the configuration or the
/// server changes, so the session stops instead of retrying; other TLS failures (a reset
/// during the handshake, a truncated record) are retried.
pub(crate) fn is_certificate_failure(e: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return refuses_certificate(r);
        }
        // `io::Error::source` skips the error it wraps; look inside.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if is_certificate_failure(inner) {
                    return true;
                }
            }
        }
        cur = e.source();
    }
    false
}

/// The status of a failed connection step: `ERR_CERTIFICATE` (final) when `e` is a refused
/// certificate (see [`is_certificate_failure`]), else the step's own `otherwise` (retried).
pub(crate) fn certificate_or(e: &(dyn StdError + 'static), otherwise: Status) -> Status {
    if is_certificate_failure(e) {
        Status::ErrCertificate
    } else {
        otherwise
    }
}

fn refuses_certificate(e: &rustls::Error) -> bool {
    match e {
        // A CRL given for the server's issuer that does not verify (another key, no cRLSign)
        // fails every attempt alike.
        rustls::Error::InvalidCertificate(_) | rustls::Error::InvalidCertRevocationList(_) => true,
        rustls::Error::AlertReceived(a) => matches!(
            a,
            AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateRequired
                | AlertDescription::AccessDenied
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_pem_is_a_config_error() {
        for pem in [&b""[..], b"-----BEGIN CERTIFICATE-----\nnot base64\n"] {
            assert_eq!(parse_ca_pem(pem).unwrap_err().status(), Status::ErrConfig);
        }
    }

    #[test]
    fn default_config_is_shared() {
        let a = client_config(&Trust::default()).unwrap();
        let b = client_config(&Trust::default()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    /// An `https://` proxy gets a config of its own only when the server's has something to
    /// keep from it (pins, a client certificate); otherwise both are one.
    #[test]
    fn the_proxy_config_differs_only_when_it_must() {
        let plain = configs(&Trust::default(), true).unwrap();
        assert!(Arc::ptr_eq(&plain.server, &plain.proxy));
        let pinned = Trust {
            pins: vec![[7; 32]],
            ..Trust::default()
        };
        let c = configs(&pinned, false).unwrap();
        assert!(Arc::ptr_eq(&c.server, &c.proxy));
        let c = configs(&pinned, true).unwrap();
        assert!(!Arc::ptr_eq(&c.server, &c.proxy));
        assert!(!c.proxy.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn pins_read_both_forms_and_nothing_else() {
        let b64 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let want = spki_pin(b"");
        assert_eq!(parse_pin(b64).unwrap(), want);
        assert_eq!(parse_pin(&format!("sha256/{b64}")).unwrap(), want);
        assert_eq!(show_pin(&want), format!("sha256/{b64}"));
        for bad in [
            "",
            "sha256/",
            "sha1/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hS",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert_eq!(
                parse_pin(bad).unwrap_err().status(),
                Status::ErrConfig,
                "{bad}"
            );
        }
    }

    #[test]
    fn client_key_errors_never_quote_the_key() {
        let e = parse_client_cert(b"", b"").unwrap_err();
        assert_eq!(e.status(), Status::ErrConfig);
        let key = b"-----BEGIN PRIVATE KEY-----\nSECRETSECRET!!\n-----END PRIVATE KEY-----\n";
        let cert = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        let e = parse_client_cert(cert.cert.pem().as_bytes(), key).unwrap_err();
        assert!(!e.message().contains("SECRET"), "{}", e.message());
        // A key of another certificate.
        let other = rcgen::generate_simple_self_signed(vec!["y".to_owned()]).unwrap();
        let e = parse_client_cert(
            cert.cert.pem().as_bytes(),
            other.key_pair.serialize_pem().as_bytes(),
        )
        .unwrap_err();
        assert!(e.message().contains("does not belong"), "{}", e.message());
        let ok = parse_client_cert(
            cert.cert.pem().as_bytes(),
            cert.key_pair.serialize_pem().as_bytes(),
        )
        .unwrap();
        assert!(!format!("{ok:?}").contains("BEGIN"));
    }

    #[test]
    fn certificate_failures_are_told_apart_from_other_tls_failures() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert!(is_certificate_failure(&io(
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        )));
        assert!(is_certificate_failure(&io(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
        ))));
        assert!(!is_certificate_failure(&io(rustls::Error::DecryptError)));
        assert!(!is_certificate_failure(&std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        )));
    }
}
