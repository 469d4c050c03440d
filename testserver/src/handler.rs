//! One stream's answer: echo, health Check and Watch, ORCA's
//! StreamCoreMetrics, and the failures a request's metadata asks for.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};

use crate::options::Shared;
use crate::wire;

async fn read_body(body: &mut RecvStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    Some(buf)
}

fn grpc_headers(port: u16) -> Response<()> {
    let mut resp = Response::new(());
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("x-backend-port", port.into());
    resp
}

/// Trailers-only response (HEADERS with END_STREAM carrying the status).
fn trailers_only(respond: &mut SendResponse<Bytes>, port: u16, code: u32, msg: &str) {
    let mut resp = grpc_headers(port);
    resp.headers_mut().insert("grpc-status", code.into());
    if let Ok(v) = HeaderValue::from_str(&percent_encode(msg)) {
        resp.headers_mut().insert("grpc-message", v);
    }
    let _ = respond.send_response(resp, true);
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) async fn handle(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: Arc<Shared>,
) {
    let (parts, mut body) = req.into_parts();
    let port = shared.port;
    *shared
        .last_authority
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = parts.uri.authority().map(|a| a.to_string());
    if parts.uri.path() == "/echo.Echo/Unary"
        && shared
            .refuse
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    if let Some(code) = header("x-respond-early").and_then(|v| v.parse().ok()) {
        return trailers_only(&mut respond, port, code, "answered before the body");
    }
    let Some(raw) = read_body(&mut body).await else {
        return;
    };
    let Some(msg) = wire::decode_unary(&raw).map(<[u8]>::to_vec) else {
        return trailers_only(&mut respond, port, 13, "bad request framing");
    };
    // The attempts of this call before this one (retries and hedges).
    let previous: u64 = header("grpc-previous-rpc-attempts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Hedging tests: only a call's first attempt is slow.
    let first_delay = header("x-delay-first-ms")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|_| previous == 0);
    if let Some(ms) = header("x-delay-ms")
        .and_then(|v| v.parse().ok())
        .or(first_delay)
    {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            reset = std::future::poll_fn(|cx| respond.poll_reset(cx)) => {
                // Err: the connection is gone, not a reset of this stream.
                let counter = if reset.is_ok() {
                    &shared.resets
                } else {
                    &shared.cut_off
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    if let Some(code) = header("x-http-status").and_then(|v| v.parse::<u16>().ok()) {
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        let _ = respond.send_response(resp, true);
        return;
    }
    // Retry tests (gRFC A6): fail the first attempts of a call, fail on one
    // backend only, or fail after the response headers (committed).
    // "none": the failing answer is trailers-only (HEADERS ending the
    // stream, a gRPC content-type) but carries no grpc-status at all.
    let no_status = header("x-fail-code").as_deref() == Some("none");
    let fail_code = header("x-fail-code")
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(14);
    let fail_first = header("x-fail-attempts")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| previous < n);
    let fail_here = header("x-fail-port").and_then(|v| v.parse::<u16>().ok()) == Some(port);
    if fail_first || fail_here {
        let mut resp = grpc_headers(port);
        let h = resp.headers_mut();
        if !no_status {
            h.insert("grpc-status", fail_code.into());
            h.insert("grpc-message", HeaderValue::from_static("failed as asked"));
        }
        if let Some(v) = parts.headers.get("x-pushback-ms") {
            h.insert("grpc-retry-pushback-ms", v.clone());
        }
        let _ = respond.send_response(resp, true);
        return;
    }
    // Hedging tests: response headers at once, the rest (an echo) this
    // much later.
    if let Some(ms) = header("x-delay-after-headers-ms").and_then(|v| v.parse::<u64>().ok()) {
        let Ok(mut stream) = respond.send_response(grpc_headers(port), false) else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut out = msg;
        out.extend_from_slice(format!("|port={port}").as_bytes());
        let _ = stream.send_data(wire::encode_message(&out), false);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let _ = stream.send_trailers(trailers);
        return;
    }
    if let Some(code) = header("x-fail-after-headers").and_then(|v| v.parse::<u32>().ok()) {
        let Ok(mut stream) = respond.send_response(grpc_headers(port), false) else {
            return;
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", code.into());
        if let Some(v) = parts.headers.get("x-pushback-ms") {
            trailers.insert("grpc-retry-pushback-ms", v.clone());
        }
        let _ = stream.send_trailers(trailers);
        return;
    }
    if let Some(code) = header("x-respond-status").and_then(|v| v.parse::<u32>().ok()) {
        let m = header("x-respond-message").unwrap_or_default();
        // A server may attach its load report to an error (gRFC A51).
        let mut resp = grpc_headers(port);
        resp.headers_mut().insert("grpc-status", code.into());
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&m)) {
            resp.headers_mut().insert("grpc-message", v);
        }
        add_call_load(resp.headers_mut(), &shared);
        // A value outside gRPC's printable ASCII (HTTP's obs-text: UTF-8
        // here), as some servers send.
        if parts.headers.contains_key("x-respond-obs-text") {
            if let Ok(v) = HeaderValue::from_bytes("café".as_bytes()) {
                resp.headers_mut().insert("x-obs", v);
            }
        }
        // Error details (gRPC's richer error model), as sent: base64.
        if let Some(v) = parts.headers.get("x-respond-details") {
            resp.headers_mut()
                .insert("grpc-status-details-bin", v.clone());
        }
        let _ = respond.send_response(resp, true);
        return;
    }
    if shared.no_health && parts.uri.path().starts_with("/grpc.health.v1.Health/") {
        return trailers_only(
            &mut respond,
            port,
            12,
            "unknown service grpc.health.v1.Health",
        );
    }
    if shared.no_orca
        && parts
            .uri
            .path()
            .starts_with("/xds.service.orca.v3.OpenRcaService/")
    {
        shared.orca_streams.fetch_add(1, Ordering::Relaxed);
        return trailers_only(
            &mut respond,
            port,
            12,
            "unknown service xds.service.orca.v3.OpenRcaService",
        );
    }
    match parts.uri.path() {
        "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics" => {
            shared.orca_streams.fetch_add(1, Ordering::Relaxed);
            let Some(asked) = wire::decode_orca_request(&msg) else {
                return trailers_only(&mut respond, port, 13, "bad OrcaLoadReportRequest");
            };
            *shared
                .orca_interval
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(asked);
            if let Some(code) = shared.orca_fail {
                return trailers_only(&mut respond, port, code, "ORCA service failing");
            }
            stream_core_metrics(respond, asked.max(shared.orca_min_interval), shared).await;
        }
        "/echo.Echo/Unary" => {
            let mut out = msg;
            out.extend_from_slice(format!("|port={port}").as_bytes());
            // Receive-limit tests: a reply of exactly this many bytes
            // (at most 64 MiB).
            if let Some(n) = header("x-response-bytes")
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&n| n <= 64 << 20)
            {
                out = vec![b'r'; n];
            }
            let mut resp = grpc_headers(port);
            if let Some(v) = parts.headers.get("grpc-previous-rpc-attempts") {
                resp.headers_mut()
                    .insert("x-previous-rpc-attempts", v.clone());
            }
            // Only when asked: a test of small header limits counts every
            // response header.
            if parts.headers.contains_key("x-echo-user-agent") {
                if let Some(v) = parts.headers.get("user-agent") {
                    resp.headers_mut().insert("x-user-agent", v.clone());
                }
            }
            // `x-echo-*` comes back in the response headers,
            // `x-echo-trailer-*` in the trailers.
            let mut echo_trailers = Vec::new();
            for (k, v) in &parts.headers {
                if k.as_str().starts_with("x-echo-trailer-") {
                    echo_trailers.push((k.clone(), v.clone()));
                } else if k.as_str().starts_with("x-echo-") {
                    resp.headers_mut().append(k, v.clone());
                }
            }
            // HTTP-mapping tests: a gRPC response under another HTTP
            // status, and trailers with another grpc-status ("none": none).
            if let Some(s) = header("x-grpc-http-status")
                .and_then(|v| v.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                *resp.status_mut() = s;
            }
            let trailer_status = header("x-trailer-status");
            send_unary_with(respond, resp, &out, port, |t| {
                add_call_load(t, &shared);
                for (k, v) in echo_trailers {
                    t.append(k, v);
                }
                match trailer_status.as_deref() {
                    None => {}
                    Some("none") => {
                        t.remove("grpc-status");
                    }
                    Some(v) => {
                        if let Ok(v) = HeaderValue::from_str(v) {
                            t.insert("grpc-status", v);
                        }
                    }
                }
            });
        }
        "/grpc.health.v1.Health/Check" => {
            let service = wire::decode_health_request(&msg).unwrap_or_default();
            let status = shared.health.borrow().get(&service).copied();
            match status {
                Some(s) => send_unary(
                    respond,
                    grpc_headers(port),
                    &wire::encode_health_response(s),
                    port,
                ),
                None => trailers_only(&mut respond, port, 5, "unknown service"),
            }
        }
        "/grpc.health.v1.Health/Watch" => {
            shared.health_watches.fetch_add(1, Ordering::Relaxed);
            if let Some(code) = shared.health_fail {
                return trailers_only(&mut respond, port, code, "health service failing");
            }
            let service = wire::decode_health_request(&msg).unwrap_or_default();
            watch_health(respond, service, shared).await;
        }
        _ => trailers_only(&mut respond, port, 12, "unknown method"),
    }
}

fn send_unary(respond: SendResponse<Bytes>, resp: Response<()>, msg: &[u8], port: u16) {
    send_unary_with(respond, resp, msg, port, |_| {});
}

/// `send_unary`, with `more` adding to the trailers.
fn send_unary_with(
    mut respond: SendResponse<Bytes>,
    resp: Response<()>,
    msg: &[u8],
    port: u16,
    more: impl FnOnce(&mut HeaderMap),
) {
    let Ok(mut stream) = respond.send_response(resp, false) else {
        return;
    };
    // h2 buffers the data until the window allows it; fine for tests.
    let _ = stream.send_data(wire::encode_message(msg), false);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("x-backend-port", port.into());
    more(&mut trailers);
    let _ = stream.send_trailers(trailers);
}

/// The per-call ORCA trailer, if the test set a load for it.
fn add_call_load(trailers: &mut HeaderMap, shared: &Shared) {
    let load = *shared.call_load.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(load) = load {
        let value = wire::base64(&wire::encode_orca_report(&load));
        if let Ok(v) = HeaderValue::from_str(&value) {
            trailers.insert("endpoint-load-metrics-bin", v);
        }
    }
}

/// Server-streaming `StreamCoreMetrics`: a report now and every `interval`
/// after, with the load the test set at that moment, until the client
/// resets the stream or the server stops.
async fn stream_core_metrics(
    mut respond: SendResponse<Bytes>,
    interval: Duration,
    shared: Arc<Shared>,
) {
    let Ok(mut stream) = respond.send_response(grpc_headers(shared.port), false) else {
        return;
    };
    loop {
        let load = *shared.oob_load.lock().unwrap_or_else(|p| p.into_inner());
        let frame = wire::encode_message(&wire::encode_orca_report(&load));
        if stream.send_data(frame, false).is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => return,
        }
    }
}

/// Server-streaming Watch: sends the status now and on every change, until
/// the client resets the stream or the server stops.
async fn watch_health(mut respond: SendResponse<Bytes>, service: String, shared: Arc<Shared>) {
    let Ok(mut stream) = respond.send_response(grpc_headers(shared.port), false) else {
        return;
    };
    let mut rx = shared.health.subscribe();
    let mut broken = shared.break_watches.subscribe();
    let mut last = None;
    loop {
        let now = rx
            .borrow_and_update()
            .get(&service)
            .copied()
            .unwrap_or(wire::SERVICE_UNKNOWN);
        if last != Some(now) {
            last = Some(now);
            let frame = wire::encode_message(&wire::encode_health_response(now));
            if stream.send_data(frame, false).is_err() {
                return;
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => return,
            r = broken.changed() => if r.is_ok() {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("14"));
                trailers.insert("grpc-message", HeaderValue::from_static("health watch broken by test"));
                let _ = stream.send_trailers(trailers);
                return;
            },
        }
    }
}
