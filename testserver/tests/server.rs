//! The server against a plain h2 client (no switchyard-lb: this crate must
//! not depend on it): echo, health, framing errors, TLS, and both stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Request};
use switchyard_testserver::{wire, Listen, ServerOptions, TestPki, TestServer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;

fn start(opts: ServerOptions) -> TestServer {
    TestServer::start(Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))), opts).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An HTTP/2 client connection over `io`, driven by a task of its own.
async fn client<T>(io: T) -> SendRequest<Bytes>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

async fn plain_client(addr: SocketAddr) -> SendRequest<Bytes> {
    client(tokio::net::TcpStream::connect(addr).await.unwrap()).await
}

/// What a unary call got back.
struct Reply {
    headers: HeaderMap,
    /// The one response message, if there was exactly one.
    message: Option<Vec<u8>>,
    /// grpc-status, from the trailers or a trailers-only response.
    status: Option<u32>,
}

/// One unary call with `body` as the raw request body (framed or not).
async fn call_raw(
    send: &SendRequest<Bytes>,
    path: &str,
    metadata: &[(&str, &str)],
    body: Bytes,
) -> Result<Reply, h2::Error> {
    let mut req = Request::post(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in metadata {
        req = req.header(*k, *v);
    }
    let mut send = send.clone().ready().await?;
    let (resp, mut stream) = send.send_request(req.body(()).unwrap(), false)?;
    stream.send_data(body, true)?;
    let (parts, mut body) = resp.await?.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    let status = trailers
        .get("grpc-status")
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let message = if data.is_empty() {
        None
    } else {
        wire::decode_unary(&data).map(<[u8]>::to_vec)
    };
    Ok(Reply {
        headers: parts.headers,
        message,
        status,
    })
}

async fn call(
    send: &SendRequest<Bytes>,
    path: &str,
    metadata: &[(&str, &str)],
    msg: &[u8],
) -> Result<Reply, h2::Error> {
    call_raw(send, path, metadata, wire::encode_message(msg)).await
}

#[test]
fn unary_echo_round_trip() {
    let srv = start(ServerOptions::default());
    let port = srv.port();
    let reply = runtime().block_on(async {
        let send = plain_client(srv.addr()).await;
        call(&send, "/echo.Echo/Unary", &[("x-echo-who", "me")], b"hi")
            .await
            .unwrap()
    });
    assert_eq!(reply.status, Some(0));
    assert_eq!(reply.message.unwrap(), format!("hi|port={port}").as_bytes());
    assert_eq!(reply.headers["x-backend-port"], port.to_string().as_str());
    assert_eq!(reply.headers["x-echo-who"], "me");
    assert_eq!(srv.requests(), 1);
}

#[test]
fn metadata_steers_the_answer_and_bad_framing_is_internal() {
    let srv = start(ServerOptions::default());
    runtime().block_on(async {
        let send = plain_client(srv.addr()).await;
        let r = call(
            &send,
            "/echo.Echo/Unary",
            &[("x-respond-status", "7"), ("x-respond-message", "no")],
            b"x",
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.message), (Some(7), None));
        assert_eq!(r.headers["grpc-message"], "no");
        let r = call_raw(
            &send,
            "/echo.Echo/Unary",
            &[],
            Bytes::from_static(b"\0\0\0"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, Some(13), "a body that is not one gRPC message");
        let r = call(&send, "/no.Such/Method", &[], b"").await.unwrap();
        assert_eq!(r.status, Some(12));
    });
}

#[test]
fn health_check_answers_what_set_serving_set() {
    let srv = start(ServerOptions::default());
    let rt = runtime();
    let send = rt.block_on(plain_client(srv.addr()));
    let check = |service: &str| {
        // HealthCheckRequest { string service = 1; }, proto3: "" is omitted.
        let mut req = Vec::new();
        if !service.is_empty() {
            req.extend([0x0a, service.len() as u8]);
            req.extend_from_slice(service.as_bytes());
        }
        let r = rt
            .block_on(call(&send, "/grpc.health.v1.Health/Check", &[], &req))
            .unwrap();
        (r.status, r.message)
    };
    assert_eq!(check(""), (Some(0), Some(vec![0x08, 1])), "SERVING");
    srv.set_serving("", switchyard_testserver::NOT_SERVING);
    srv.set_serving("svc", switchyard_testserver::SERVING);
    assert_eq!(check(""), (Some(0), Some(vec![0x08, 2])), "NOT_SERVING");
    assert_eq!(check("svc"), (Some(0), Some(vec![0x08, 1])));
    assert_eq!(check("other").0, Some(5), "NOT_FOUND");

    let no_health = start(ServerOptions {
        no_health: true,
        ..Default::default()
    });
    let send = rt.block_on(plain_client(no_health.addr()));
    let r = rt
        .block_on(call(&send, "/grpc.health.v1.Health/Check", &[], b""))
        .unwrap();
    assert_eq!(r.status, Some(12), "UNIMPLEMENTED");
}

#[test]
fn tls_echo_with_a_test_pki() {
    let pki = TestPki::new();
    let srv = start(ServerOptions {
        tls: Some(pki.server_tls(&[b"h2"])),
        ..Default::default()
    });
    let port = srv.port();
    let reply = runtime().block_on(async {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pki.ca_pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(srv.addr()).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let send = client(tls).await;
        call(&send, "/echo.Echo/Unary", &[], b"tls").await.unwrap()
    });
    assert_eq!(reply.status, Some(0));
    assert_eq!(
        reply.message.unwrap(),
        format!("tls|port={port}").as_bytes()
    );
}

const CALLS: usize = 4;

/// Starts CALLS slow calls (300 ms each) on one connection from a client
/// thread, and returns once all of them have reached the server.
fn slow_calls_in_flight(
    srv: &TestServer,
) -> std::thread::JoinHandle<Vec<Result<Reply, h2::Error>>> {
    let addr = srv.addr();
    let client = std::thread::spawn(move || {
        runtime().block_on(async {
            let send = plain_client(addr).await;
            let calls: Vec<_> = (0..CALLS)
                .map(|_| {
                    let send = send.clone();
                    tokio::spawn(async move {
                        call(&send, "/echo.Echo/Unary", &[("x-delay-ms", "300")], b"slow").await
                    })
                })
                .collect();
            let mut out = Vec::new();
            for c in calls {
                out.push(c.await.unwrap());
            }
            out
        })
    });
    for _ in 0..2000 {
        if srv.in_flight() == CALLS as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        srv.in_flight(),
        CALLS as u64,
        "the calls never reached the server"
    );
    client
}

/// Slow calls that had reached the server when it was stopped: a graceful
/// stop lets every one finish before it closes.
#[test]
fn graceful_stop_finishes_the_calls_in_flight() {
    let srv = start(ServerOptions::default());
    let client = slow_calls_in_flight(&srv);
    assert!(
        srv.graceful_stop(Duration::from_secs(20)),
        "connections still open at the end of the grace"
    );
    for reply in client.join().unwrap() {
        let reply = reply.expect("a call in flight at a graceful stop finishes");
        assert_eq!(reply.status, Some(0));
        assert!(reply.message.unwrap().starts_with(b"slow|port="));
    }
}

/// The contrast: a hard stop drops the connection under the same calls.
#[test]
fn hard_stop_loses_the_calls_in_flight() {
    let srv = start(ServerOptions::default());
    let client = slow_calls_in_flight(&srv);
    srv.stop();
    for reply in client.join().unwrap() {
        assert!(reply.is_err(), "a call in flight at a hard stop is lost");
    }
}
