//! The client's TLS against gRPC-Go's transport credentials
//! (`credentials/tls.go`, `clientconn.go` initAuthority / getServerName,
//! `internal/transport/http2_client.go`), case by case, with real TLS
//! servers on 127.0.0.1.
#[path = "common/mod.rs"]
mod common;

use common::*;
use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, ServerTls, TestServer};

// Generated once with Python cryptography (EC P-256): a CA valid 2020-2120 and leaves it signed.
const CA_CERT: &str = r"-----BEGIN CERTIFICATE-----
MIIBWDCB/qADAgECAgEBMAoGCCqGSM49BAMCMCIxIDAeBgNVBAMMF3N3aXRjaHlh
cmQgdGxzIHByb2JlIENBMCAXDTIwMDEwMTAwMDAwMFoYDzIxMjAwMTAxMDAwMDAw
WjAiMSAwHgYDVQQDDBdzd2l0Y2h5YXJkIHRscyBwcm9iZSBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABPrD2ZUgOL9ukaIA8qvB44yNjae1QdhWRbR1FiEfxfs8
83jn84/h01t6bwJ9GdknmaGsThbguweNHwEfWECjaTGjIzAhMA8GA1UdEwEB/wQF
MAMBAf8wDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMCA0kAMEYCIQDcdavN7EaP
fomEFic28O7Nym/gv7muOmD+/4y97plCZgIhALAzhCnIe9YLO88m9PBpOo9aTE79
/rAfigFZ+PlHKd7n
-----END CERTIFICATE-----
";
const IP_CERT: &str = r"-----BEGIN CERTIFICATE-----
MIIBVzCB/qADAgECAgECMAoGCCqGSM49BAMCMCIxIDAeBgNVBAMMF3N3aXRjaHlh
cmQgdGxzIHByb2JlIENBMCAXDTIwMDEwMTAwMDAwMFoYDzIxMjAwMTAxMDAwMDAw
WjAPMQ0wCwYDVQQDDARsZWFmMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENh9A
YKh1n8mlL++pGcXSzsBBOC98B71BAkr1dOKVS2DalMAe77esEJNsC8g3PrkZ0IDv
NAG23RiNTFwBkkRz66M2MDQwDwYDVR0RBAgwBocEfwAAATAMBgNVHRMBAf8EAjAA
MBMGA1UdJQQMMAoGCCsGAQUFBwMBMAoGCCqGSM49BAMCA0gAMEUCIQCn8eNILeCO
UfDlro7YNYaaxO+o8c9N0tKulNgGv2yeFAIgGDYaWnveUGTCUqt5XBN2RM0KiJlA
TLUZnoo/DfaGBr0=
-----END CERTIFICATE-----
";
const IP_KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgiYpds8BbTmHcv6yt
aa2yFntOHyL0jxg0RdoFzrVYPQqhRANCAAQ2H0BgqHWfyaUv76kZxdLOwEE4L3wH
vUECSvV04pVLYNqUwB7vt6wQk2wLyDc+uRnQgO80AbbdGI1MXAGSRHPr
-----END PRIVATE KEY-----
";
const EXPIRED_CERT: &str = r"-----BEGIN CERTIFICATE-----
MIIBXDCCAQGgAwIBAgIBAzAKBggqhkjOPQQDAjAiMSAwHgYDVQQDDBdzd2l0Y2h5
YXJkIHRscyBwcm9iZSBDQTAeFw0yMDAxMDEwMDAwMDBaFw0yMTAxMDEwMDAwMDBa
MA8xDTALBgNVBAMMBGxlYWYwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARjNKpQ
+xxw6VcGxvBk4M38lfV7M36Fnr5HQ2536AEyA6tIRSUlDSf+hqWMGeBhKcf51JE0
15iPLCT+qQSxvEigozswOTAUBgNVHREEDTALgglsb2NhbGhvc3QwDAYDVR0TAQH/
BAIwADATBgNVHSUEDDAKBggrBgEFBQcDATAKBggqhkjOPQQDAgNJADBGAiEAydw5
DB6RNMnxNcVlsTQYXjESC+MenO2NL8kZGoOQs8sCIQC6GtSXyZhJdrOSKkEnc8FP
PPohmi5/FAy9RJ5kiZfjKw==
-----END CERTIFICATE-----
";
const EXPIRED_KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7ErDXZd3AtO2pfXZ
nB9KQlxET93ClOKhOt8OGCKOj1WhRANCAARjNKpQ+xxw6VcGxvBk4M38lfV7M36F
nr5HQ2536AEyA6tIRSUlDSf+hqWMGeBhKcf51JE015iPLCT+qQSxvEig
-----END PRIVATE KEY-----
";
const FOO_CERT: &str = r"-----BEGIN CERTIFICATE-----
MIIBXDCCAQKgAwIBAgIBBDAKBggqhkjOPQQDAjAiMSAwHgYDVQQDDBdzd2l0Y2h5
YXJkIHRscyBwcm9iZSBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAw
MFowDzENMAsGA1UEAwwEbGVhZjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABN5J
G5WxRCqhhIsZkOaeNUfiKwauT9vVubwcq56X9PKVnQyWIfnTiLo/y7QAmXuKdE9R
Q9dQ9yMJl+hxBe09JlGjOjA4MBMGA1UdEQQMMAqCCGZvby50ZXN0MAwGA1UdEwEB
/wQCMAAwEwYDVR0lBAwwCgYIKwYBBQUHAwEwCgYIKoZIzj0EAwIDSAAwRQIhAJ6f
J2NEoE5NciRzZZubrQIzzixZSZFKT/VtxEmzZkYBAiAMFGw8zbkSUnY5fYAuBBP8
3qYtTOxOGBXajlxiZdvaKQ==
-----END CERTIFICATE-----
";
const FOO_KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYwaW2685xGaTESN5
uqjuQX1bnLV4fHWjdD+JaG2Ubv2hRANCAATeSRuVsUQqoYSLGZDmnjVH4isGrk/b
1bm8HKuel/TylZ0MliH504i6P8u0AJl7inRPUUPXUPcjCZfocQXtPSZR
-----END PRIVATE KEY-----
";

fn tls_server(cert: &str, key: &str, alpn: &[&[u8]]) -> TestServer {
    let opts = ServerOptions {
        tls: Some(ServerTls {
            cert_chain_pem: cert.as_bytes().to_vec(),
            key_pem: key.as_bytes().to_vec(),
            alpn: alpn.iter().map(|a| a.to_vec()).collect(),
            client_ca_pem: None,
        }),
        ..Default::default()
    };
    TestServer::start(Listen::Tcp("127.0.0.1:0".parse().unwrap()), opts).unwrap()
}

fn tls_opts(server_name: &str, roots: &str) -> ChannelOptions {
    ChannelOptions {
        transport: Some(TransportConfig::tls(TlsSettings {
            server_name: server_name.into(),
            roots_pem: Some(roots.as_bytes().to_vec()),
            client_cert: None,
        })),
        ..Default::default()
    }
}

/// A non-wait-for-ready unary RPC with a short deadline.
fn quick_call(ch: &Channel) -> Result<Vec<u8>, Status> {
    let opts = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(3)),
        wait_for_ready: Some(false),
        ..Default::default()
    };
    ch.reader()
        .unary("/echo.Echo/Unary", b"ping", &opts)
        .map(|r| r.message)
}

/// The channel fails: TRANSIENT_FAILURE, an RPC fails UNAVAILABLE, and its
/// message names the handshake (gRPC-Go: "transport: authentication
/// handshake failed: ..." in http2_client.go newHTTP2Client).
fn assert_handshake_failure(ch: &Channel, also: &str) {
    wait_state(ch, TransientFailure);
    let e = quick_call(ch).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let m = e.message().to_lowercase();
    assert!(m.contains("handshake"), "{e:?}");
    assert!(m.contains(also), "wanted {also:?} in {e:?}");
}

/// A raw rustls server accepting one connection: returns the SNI the client
/// sent (None = none), then runs the handshake to its end and hangs up.
fn sni_recorder(
    cert: &str,
    key: &str,
) -> (std::net::SocketAddr, thread::JoinHandle<Option<String>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let cfg = Arc::new(cfg);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (mut sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut conn = rustls::ServerConnection::new(cfg).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while conn.server_name().is_none() && conn.is_handshaking() && Instant::now() < deadline {
            if conn.read_tls(&mut sock).unwrap_or(0) == 0 {
                break;
            }
            if conn.process_new_packets().is_err() {
                break;
            }
            // Past the ClientHello once it wants to write.
            if conn.wants_write() {
                break;
            }
        }
        conn.server_name().map(str::to_string)
    });
    (addr, t)
}

// ---------------------------------------------------------------------------
// Secure by default.

/// Default credentials against a plaintext server: no silent h2c.
#[test]
fn default_credentials_never_fall_back_to_plaintext() {
    let srv = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap();
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        ChannelOptions::default(),
    );
    wait_state(&ch, TransientFailure);
    assert_eq!(quick_call(&ch).unwrap_err().code(), Code::Unavailable);
    assert_eq!(srv.requests(), 0);
}

// ---------------------------------------------------------------------------
// The name verified.

/// `dns:///localhost:PORT`, no server name: the name verified is the
/// target's host ("localhost"), not the resolved address; `:authority` is
/// "localhost:PORT" (gRPC-Go: cc.authority = endpoint; ClientHandshake
/// strips the port with net.SplitHostPort).
#[test]
fn a_dns_target_verifies_its_host_name() {
    let pki = TestPki::new();
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
        &format!("dns:///localhost:{}", srv.port()),
        None,
        tls_opts("", std::str::from_utf8(&pki.ca_pem).unwrap()),
    );
    assert_eq!(echo(&mut ch.reader(), true).unwrap(), srv.port());
    assert_eq!(
        srv.last_authority().as_deref(),
        Some(format!("localhost:{}", srv.port()).as_str())
    );
}

/// An IP-address target verifies the certificate's IP SANs (gRPC-Go:
/// cfg.ServerName = "127.0.0.1"; crypto/tls matches IP SANs for an IP).
#[test]
fn an_ip_target_verifies_the_ip_san() {
    let srv = tls_server(IP_CERT, IP_KEY, &[b"h2"]);
    let rt = Runtime::new().unwrap();
    for target in [
        format!("ipv4:{}", srv.addr()),
        format!("{}", srv.addr()),
        format!("dns:///{}", srv.addr()),
    ] {
        let ch = channel(&rt, &target, None, tls_opts("", CA_CERT));
        assert_eq!(
            echo(&mut ch.reader(), true).unwrap(),
            srv.port(),
            "{target}"
        );
    }
}

/// A certificate for another name: TRANSIENT_FAILURE, UNAVAILABLE.
#[test]
fn a_hostname_mismatch_fails_the_handshake() {
    let srv = tls_server(FOO_CERT, FOO_KEY, &[b"h2"]);
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("dns:///localhost:{}", srv.port()),
        None,
        tls_opts("", CA_CERT),
    );
    assert_handshake_failure(&ch, "certificate");
    // An IP target against a DNS-only certificate fails as well.
    let ch = channel(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        tls_opts("", CA_CERT),
    );
    assert_handshake_failure(&ch, "certificate");
    // The server name override makes it verify.
    let ch = channel(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        tls_opts("foo.test", CA_CERT),
    );
    assert_eq!(echo(&mut ch.reader(), true).unwrap(), srv.port());
}

#[test]
fn an_expired_certificate_fails_the_handshake() {
    let srv = tls_server(EXPIRED_CERT, EXPIRED_KEY, &[b"h2"]);
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        tls_opts("localhost", CA_CERT),
    );
    assert_handshake_failure(&ch, "expired");
}

#[test]
fn a_wrong_ca_fails_the_handshake() {
    let srv = tls_server(FOO_CERT, FOO_KEY, &[b"h2"]);
    let rt = Runtime::new().unwrap();
    let other = TestPki::new();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        tls_opts("foo.test", std::str::from_utf8(&other.ca_pem).unwrap()),
    );
    assert_handshake_failure(&ch, "certificate");
}

/// The authority override (`WithAuthority`) names the server for TLS too:
/// gRPC-Go getServerName returns dopts.authority, ClientHandshake verifies
/// its host with the port stripped, `:authority` is the override as given.
#[test]
fn the_authority_override_is_the_tls_name_and_the_header() {
    let srv = tls_server(FOO_CERT, FOO_KEY, &[b"h2"]);
    let rt = Runtime::new().unwrap();
    let mut opts = tls_opts("", CA_CERT);
    opts.authority = Some("foo.test:8443".into());
    let ch = channel(&rt, &format!("ipv4:{}", srv.addr()), None, opts);
    assert_eq!(echo(&mut ch.reader(), true).unwrap(), srv.port());
    assert_eq!(srv.last_authority().as_deref(), Some("foo.test:8443"));
}

/// SNI: the host of the authority override, port stripped.
#[test]
fn sni_is_the_authority_host_without_port() {
    let (addr, t) = sni_recorder(FOO_CERT, FOO_KEY);
    let rt = Runtime::new().unwrap();
    let mut opts = tls_opts("", CA_CERT);
    opts.authority = Some("foo.test:8443".into());
    let _ch = channel(&rt, &format!("ipv4:{addr}"), None, opts);
    assert_eq!(t.join().unwrap().as_deref(), Some("foo.test"));
    // An IP name: no SNI (crypto/tls sends none for an IP literal).
    let (addr, t) = sni_recorder(IP_CERT, IP_KEY);
    let _ch2 = channel(&rt, &format!("ipv4:{addr}"), None, tls_opts("", CA_CERT));
    assert_eq!(t.join().unwrap(), None);
}

/// A server name override alone is also the calls' `:authority` (gRPC-Go
/// initAuthority: authorityFromCreds = creds.Info().ServerName).
#[test]
fn the_server_name_override_is_the_authority() {
    let srv = tls_server(FOO_CERT, FOO_KEY, &[b"h2"]);
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        tls_opts("foo.test", CA_CERT),
    );
    assert_eq!(echo(&mut ch.reader(), true).unwrap(), srv.port());
    assert_eq!(srv.last_authority().as_deref(), Some("foo.test"));
}

/// A unix socket target: authority "localhost" (gRPC-Go's unix resolver
/// sets it), so TLS sends SNI "localhost" and verifies it. The testserver
/// has no TLS on unix sockets, so a raw rustls peer: its handshake ends
/// only once the client has verified the certificate and sent Finished.
#[test]
fn a_unix_target_verifies_localhost() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = TestPki::new();
    let chain = CertificateDer::pem_slice_iter(&pki.server_cert)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&pki.server_key).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let path = std::env::temp_dir().join(format!("sy-probe-tls-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t = thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(cfg)).unwrap();
        let mut s = rustls::StreamOwned::new(conn, sock);
        let mut preface = [0u8; 24];
        let done = s.read_exact(&mut preface).map_err(|e| e.to_string());
        (s.conn.server_name().map(str::to_string), done)
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("unix://{}", path.display()),
        None,
        tls_opts("", std::str::from_utf8(&pki.ca_pem).unwrap()),
    );
    let (sni, done) = t.join().unwrap();
    drop(ch);
    let _ = std::fs::remove_file(&path);
    assert_eq!(sni.as_deref(), Some("localhost"));
    assert_eq!(done, Ok(()), "the client did not finish the handshake");
}

// ---------------------------------------------------------------------------
// ALPN, handshake failures, mTLS.

/// A TLS server that negotiates no ALPN: gRPC-Go (>= 1.67, EnforceALPN
/// default true) fails the handshake ("missing selected ALPN property").
#[test]
fn a_server_without_alpn_fails() {
    let srv = tls_server(FOO_CERT, FOO_KEY, &[]);
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        tls_opts("foo.test", CA_CERT),
    );
    wait_state(&ch, TransientFailure);
    let e = quick_call(&ch).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("ALPN"), "{e:?}");
    assert_eq!(srv.requests(), 0);
}

/// A server that reads the ClientHello and hangs up.
#[test]
fn a_server_closing_during_the_handshake_fails_unavailable() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf);
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{addr}"),
        None,
        tls_opts("foo.test", CA_CERT),
    );
    wait_state(&ch, TransientFailure);
    let e = quick_call(&ch).unwrap_err();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    t.join().unwrap();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

/// mTLS server, client without a certificate: under TLS 1.3 the client's
/// handshake completes before the server refuses it; the connection must
/// still never be READY, and a non-wait-for-ready RPC fails UNAVAILABLE
/// (gRPC-Go: the transport is not ready until the server preface; the
/// server's alert ends it first).
#[test]
fn mtls_without_a_client_certificate_is_unavailable() {
    let pki = TestPki::new();
    let mut tls = pki.server_tls(&[b"h2"]);
    tls.client_ca_pem = Some(pki.ca_pem.clone());
    let srv = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions {
            tls: Some(tls),
            ..Default::default()
        },
    )
    .unwrap();
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        tls_opts("localhost", std::str::from_utf8(&pki.ca_pem).unwrap()),
    );
    wait_state(&ch, TransientFailure);
    let e = quick_call(&ch).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    // With the certificate, it serves.
    let mut opts = tls_opts("localhost", std::str::from_utf8(&pki.ca_pem).unwrap());
    if let Some(TransportConfig {
        credentials: Credentials::Tls(t),
        ..
    }) = opts.transport.as_mut()
    {
        t.client_cert = Some((pki.client_cert.clone(), pki.client_key.clone()));
    }
    let ch = channel(&rt, &format!("ipv4:{}", srv.addr()), None, opts);
    assert!(quick_call(&ch).is_ok());
}

/// A TLS 1.2-only server is fine (gRPC-Go's MinVersion is TLS 1.2, not
/// 1.3: credentials/tls.go applyDefaults).
#[test]
fn a_tls12_only_server_is_accepted() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(FOO_CERT.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(FOO_KEY.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(cfg)).unwrap();
        let mut s = rustls::StreamOwned::new(conn, sock);
        let mut preface = [0u8; 24];
        let r = s.read_exact(&mut preface).map_err(|e| e.to_string());
        (r, s.conn.protocol_version())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{addr}"),
        None,
        tls_opts("foo.test", CA_CERT),
    );
    let (r, v) = t.join().unwrap();
    drop(ch);
    assert_eq!(r, Ok(()));
    assert_eq!(v, Some(rustls::ProtocolVersion::TLSv1_2));
}

/// Host names compare without case and without a trailing dot (Go's
/// crypto/x509 matchHostnames lowercases and trims the final '.').
#[test]
fn names_match_without_case_or_trailing_dot() {
    let srv = tls_server(FOO_CERT, FOO_KEY, &[b"h2"]);
    let rt = Runtime::new().unwrap();
    for name in ["FOO.Test", "foo.test."] {
        let mut opts = tls_opts("", CA_CERT);
        opts.authority = Some(format!("{name}:8443"));
        let ch = Channel::new(&rt, &format!("ipv4:{}", srv.addr()), None, opts)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        ch.connect().unwrap();
        assert_eq!(
            echo(&mut ch.reader(), true).map_err(|e| e.to_string()),
            Ok(srv.port()),
            "{name}"
        );
    }
}
