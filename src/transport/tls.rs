//! rustls client configuration for the transport.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::TlsSettings;

/// Builds a client config that only speaks `h2` over ALPN. Uses the ring
/// provider explicitly so no process-wide default provider has to be
/// installed (and no aws-lc build is pulled in).
pub(crate) fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match &settings.roots_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("bad root certificate PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad root certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("roots_pem contains no certificates".into());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS config: {e}"))?
        .with_root_certificates(roots);
    let mut config = match &settings.client_cert {
        None => builder.with_no_client_auth(),
        Some((chain_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(chain_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("bad client certificate PEM: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| format!("bad client key PEM: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

pub(crate) fn client_connection(
    config: Arc<ClientConfig>,
    server_name: &str,
) -> Result<ClientConnection, String> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("invalid TLS server name {server_name:?}: {e}"))?;
    ClientConnection::new(config, name).map_err(|e| format!("TLS setup: {e}"))
}
