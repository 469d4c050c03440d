//! The roots a channel trusts by default are gRPC's: the file
//! `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH` names, else the system's store
//! (`SSL_CERT_FILE` honoured), as gRPC-Go (`NewTLS` with no `RootCAs`) and
//! C-core (`DefaultSslRootStore`) find them. A binary of its own: the
//! default roots are read once per process, so nothing else here may make a
//! channel with them first.

#[path = "common/mod.rs"]
mod common;

use common::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestPki, TestServer};

/// No credentials given: TLS verified against the *system* roots. gRPC-Go:
/// `credentials.NewClientTLSFromCert(nil, "")` / `NewTLS(&tls.Config{})`
/// leave `RootCAs` nil, so crypto/tls verifies with `x509.SystemCertPool`,
/// which on Linux honours `SSL_CERT_FILE` / `SSL_CERT_DIR`
/// (go/src/crypto/x509/root_unix.go); C-core likewise reads
/// `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`, then the system store. A CA the host
/// trusts (a corporate CA, a private PKI) is trusted by the channel.
#[test]
fn default_credentials_trust_the_system_store() {
    let pki = TestPki::new();
    let dir = std::env::temp_dir().join(format!("sy-tls-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::env::set_var("SSL_CERT_FILE", &ca);
    std::env::set_var("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", &ca);
    let srv = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions {
            tls: Some(pki.server_tls(&[b"h2"])),
            ..Default::default()
        },
    )
    .unwrap();
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        ChannelOptions {
            authority: Some(format!("localhost:{}", srv.port())),
            ..Default::default()
        },
    );
    let r = echo(&mut ch.reader(), true);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r.map_err(|e| e.to_string()), Ok(srv.port()));
}
