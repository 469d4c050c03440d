//! A tokio + h2 server that records each request's body (the raw bytes,
//! length prefixes included) and answers every request OK with one message
//! the test makes of that body. Included with
//! `#[path = "common/body_server.rs"] mod body_server;`, next to
//! `#[path = "common/tokio_host.rs"] mod tokio_host;`, which it runs on.
#![allow(dead_code)]

use crate::tokio_host::Host;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct BodyServer {
    pub host: Host,
    /// Every request's body, in the order the requests ended.
    pub bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// Starts a server answering each request with the message `answer(body)`.
pub fn body_server(answer: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) -> BodyServer {
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let answer = Arc::new(answer);
    let b2 = bodies.clone();
    let host = Host::start(move |sock| {
        let bodies = b2.clone();
        let answer = answer.clone();
        async move {
            let Ok(mut conn) = h2::server::handshake(sock).await else {
                return;
            };
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let bodies = bodies.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut body = req.into_body();
                    let mut got = Vec::new();
                    while let Some(chunk) = body.data().await {
                        let Ok(chunk) = chunk else { break };
                        let _ = body.flow_control().release_capacity(chunk.len());
                        got.extend_from_slice(&chunk);
                    }
                    let reply = answer(&got);
                    bodies.lock().unwrap().push(got);
                    let mut resp = Response::new(());
                    resp.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    let Ok(mut s) = respond.send_response(resp, false) else {
                        return;
                    };
                    let mut m = vec![0u8];
                    m.extend((reply.len() as u32).to_be_bytes());
                    m.extend(reply);
                    let _ = s.send_data(Bytes::from(m), false);
                    let mut t = HeaderMap::new();
                    t.insert("grpc-status", HeaderValue::from_static("0"));
                    let _ = s.send_trailers(t);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                });
            }
        }
    });
    BodyServer { host, bodies }
}
