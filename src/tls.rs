//! TLS setup, in one place: the rustls client config that the websocket and the gomuks auth
//! call both verify with. Imports only the status leaf.

use std::sync::Arc;

use once_cell::sync::OnceCell;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::status::{Error, Status};

/// Parses PEM CA certificates; an empty or unparsable bundle is a config error.
pub(crate) fn parse_ca_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    use rustls::pki_types::pem::PemObject;
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

/// The rustls config for a client: webpki roots plus `extra_ca_pem`. Without extra CAs every
/// client shares one config (building the root store costs about a millisecond).
pub(crate) fn client_config(extra_ca_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, Error> {
    static DEFAULT: OnceCell<Arc<ClientConfig>> = OnceCell::new();
    match extra_ca_pem {
        None => DEFAULT.get_or_try_init(|| build(None)).cloned(),
        Some(pem) => build(Some(pem)),
    }
}

fn build(extra: Option<&[u8]>) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra {
        for c in parse_ca_pem(pem)? {
            roots
                .add(c)
                .map_err(|e| Error::new(Status::ErrConfig, format!("bad CA certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cc = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(Status::ErrTls, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_pem_is_a_config_error() {
        for pem in [&b""[..], b"-----BEGIN CERTIFICATE-----\nnot base64\n"] {
            assert_eq!(
                client_config(Some(pem)).unwrap_err().status(),
                Status::ErrConfig
            );
        }
    }

    #[test]
    fn default_config_is_shared() {
        let a = client_config(None).unwrap();
        let b = client_config(None).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
