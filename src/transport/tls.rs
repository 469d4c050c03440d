//! rustls client configuration for the transport.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::TlsSettings;

/// [`TlsSettings`] with the rustls client config built. Build it once and
/// share it among connections: every connection then uses one session
/// cache (so TLS sessions resume) and a bad PEM is found once.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    /// Empty = the target's own host ([`super::Target::host`]).
    server_name: String,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    pub fn new(settings: &TlsSettings) -> Result<TlsClient, String> {
        Ok(TlsClient {
            config: client_config(settings)?,
            server_name: settings.server_name.clone(),
        })
    }

    /// The name to send and verify for `target`.
    pub(crate) fn server_name_for(&self, target: &super::Target) -> String {
        if self.server_name.is_empty() {
            target.host()
        } else {
            self.server_name.clone()
        }
    }

    /// A client session for `server_name`, sharing this config.
    pub(crate) fn connection(&self, server_name: &str) -> Result<ClientConnection, String> {
        client_connection(self.config.clone(), server_name)
    }
}

/// Builds a client config that only speaks `h2` over ALPN. Uses the ring
/// provider explicitly so no process-wide default provider has to be
/// installed (and no aws-lc build is pulled in).
fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
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
        None => roots = default_roots().clone(),
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

/// The roots a channel trusts when it is given none, as gRPC C-core finds
/// them (`DefaultSslRootStore`): the PEM file `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`
/// names, else the system's store (gRPC-Go's default too; `SSL_CERT_FILE`
/// and `SSL_CERT_DIR` honoured), else the Mozilla roots built in. Read once
/// per process, as both do.
fn default_roots() -> &'static RootCertStore {
    static ROOTS: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        if let Some(path) = std::env::var_os("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH") {
            match std::fs::read(&path) {
                Ok(pem) => {
                    let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
                    roots.add_parsable_certificates(certs);
                }
                Err(e) => log::warn!(
                    target: crate::trace::TRANSPORT,
                    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH {path:?}: {e}"
                ),
            }
        }
        if roots.is_empty() {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
        if roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    })
}

fn client_connection(
    config: Arc<ClientConfig>,
    server_name: &str,
) -> Result<ClientConnection, String> {
    let name = ServerName::try_from(without_port(server_name).to_owned())
        .map_err(|e| format!("invalid TLS server name {server_name:?}: {e}"))?;
    ClientConnection::new(config, name).map_err(|e| format!("TLS setup: {e}"))
}

/// The host of a server name given as an authority ("host:port",
/// "[v6]:port"): gRPC-Go's TLS credentials take the name to verify from the
/// authority the same way (`net.SplitHostPort`), so a server name with a
/// port verifies the host. Anything else (a bare IPv6 address included) as
/// it is.
fn without_port(name: &str) -> &str {
    let port = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = name.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, "")) => host,
            Some((host, tail)) if tail.strip_prefix(':').is_some_and(port) => host,
            _ => name,
        };
    }
    match name.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') && port(p) => host,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_name_with_a_port_verifies_its_host() {
        for (given, host) in [
            ("foo.test:443", "foo.test"),
            ("foo.test", "foo.test"),
            ("127.0.0.1:50051", "127.0.0.1"),
            ("[::1]:443", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("foo.test:https", "foo.test:https"),
        ] {
            assert_eq!(without_port(given), host, "{given}");
        }
        let config = client_config(&TlsSettings::default()).unwrap();
        assert!(client_connection(config.clone(), "localhost:8443").is_ok());
        assert!(client_connection(config, "foo.test:https").is_err());
    }
}
