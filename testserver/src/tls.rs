//! TLS for the server (a tokio-rustls acceptor from PEM) and throwaway
//! certificates made with rcgen.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_rustls::rustls;

use crate::options::ServerTls;

pub(crate) fn tls_acceptor(t: &ServerTls) -> io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let chain = CertificateDer::pem_slice_iter(&t.cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&t.key_pem).map_err(|e| bad(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?;
    let builder = match &t.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| bad(e.to_string()))?;
    cfg.alpn_protocols = t.alpn.clone();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// A throwaway CA and a "localhost" server certificate it signed, for TLS
/// tests (each call makes a new CA, so two of them distrust each other).
pub struct TestPki {
    /// The CA certificate, PEM: the roots a client should trust.
    pub ca_pem: Vec<u8>,
    /// The server certificate (for "localhost"), PEM.
    pub server_cert: Vec<u8>,
    /// The server certificate's key, PEM.
    pub server_key: Vec<u8>,
    /// A client certificate the same CA signed, for mutual TLS.
    pub client_cert: Vec<u8>,
    /// The client certificate's key, PEM.
    pub client_key: Vec<u8>,
}

impl TestPki {
    /// A fresh CA with its server and client certificates.
    pub fn new() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names, so a wrong CA fails as an unknown issuer.
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("switchyard test CA {} {n}", std::process::id()),
        );
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(vec!["client.test".to_string()]).unwrap();
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client.signed_by(&client_key, &issuer).unwrap();
        TestPki {
            ca_pem: ca.pem().into_bytes(),
            server_cert: cert.pem().into_bytes(),
            server_key: key.serialize_pem().into_bytes(),
            client_cert: client.pem().into_bytes(),
            client_key: client_key.serialize_pem().into_bytes(),
        }
    }

    /// The server side, offering `alpn` (empty = no ALPN).
    pub fn server_tls(&self, alpn: &[&[u8]]) -> ServerTls {
        ServerTls {
            cert_chain_pem: self.server_cert.clone(),
            key_pem: self.server_key.clone(),
            alpn: alpn.iter().map(|a| a.to_vec()).collect(),
            client_ca_pem: None,
        }
    }

    /// Writes the server's certificate and key as PEM files into `dir`.
    pub fn write_server_pems(&self, dir: &std::path::Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert, &self.server_cert).unwrap();
        std::fs::write(&key, &self.server_key).unwrap();
        (cert, key)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
