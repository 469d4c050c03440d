//! Probe: calls that end early (deadline, cancel, channel close), server
//! RST_STREAM codes that wire_go_tables.rs / conn_go_cases.rs leave out,
//! grpc-timeout propagation with a method config, and wait-for-ready vs
//! fail-fast, against gRPC-Go (internal/transport/http2_client.go,
//! http_util.go, stream.go, picker_wrapper.go, test/end2end_test.go,
//! test/invoke_test.go).
//!
//! A scripted HTTP/2 server on 127.0.0.1 records what the client sends. Each
//! request's message says what to answer: "ok", "silent" (nothing), "rst:N"
//! (RST_STREAM code N), "head-silent" (headers and a message, no trailers),
//! "status:N" (trailers-only grpc-status N, grpc-message "from server"),
//! "sleep:MS:<cmd>" (<cmd> after MS milliseconds from the request's
//! arrival), "refuse-once" (REFUSED_STREAM the first time this connection
//! sees it, then "ok").

#[path = "common/frame_server.rs"]
mod frame_server;
#[path = "common/h2_frames.rs"]
mod h2_frames;
use frame_server::{Ev, H2, TICK};
use h2_frames::*;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use switchyard::backoff::BackoffConfig;
use switchyard::*;

const ECHO: &str = "/echo.Echo/Unary";

/// Request header blocks by (connection, stream).
type Blocks = HashMap<(usize, u32), Vec<u8>>;

/// The frame server of tests/common/frame_server.rs running [`serve`] on
/// each connection, and the request header blocks it recorded.
struct Server {
    addr: SocketAddr,
    inner: frame_server::Server,
    /// Request header blocks by (connection, stream).
    blocks: Arc<Mutex<Blocks>>,
}

#[derive(Clone)]
struct Opts {
    /// The server's SETTINGS payload.
    settings: Vec<u8>,
}

impl Default for Opts {
    fn default() -> Self {
        // SETTINGS_HEADER_TABLE_SIZE 0: request blocks decode on their own.
        Opts {
            settings: vec![0, 1, 0, 0, 0, 0],
        }
    }
}

impl Server {
    fn start(opts: Opts) -> Server {
        Self::start_on("127.0.0.1:0".parse().unwrap(), opts)
    }

    fn start_on(addr: SocketAddr, opts: Opts) -> Server {
        let blocks: Arc<Mutex<Blocks>> = Arc::default();
        let bl = blocks.clone();
        let inner = frame_server::Server::start_on(addr, move |c| serve(c, &opts, &bl));
        Server {
            addr: inner.addr,
            inner,
            blocks,
        }
    }

    fn accepted(&self) -> usize {
        self.inner.accepted().len()
    }

    fn events(&self) -> Vec<(usize, Ev)> {
        self.inner.events()
    }

    fn wait_for(&self, within: Duration, pred: impl Fn(&[(usize, Ev)]) -> bool) -> bool {
        self.inner.wait_for(within, pred)
    }

    /// The stream (connection, id) of the request whose message was `what`.
    fn stream_of(&self, what: &str) -> Option<(usize, u32)> {
        self.streams_of(what).first().copied()
    }

    fn wait_request(&self, what: &str) -> (usize, u32) {
        assert!(
            self.wait_for(Duration::from_secs(5), |_| self.stream_of(what).is_some()),
            "request {what:?} never reached the server: {:?}",
            self.events()
        );
        self.stream_of(what).unwrap()
    }

    /// Every stream (connection, id) whose request message was `what`.
    fn streams_of(&self, what: &str) -> Vec<(usize, u32)> {
        self.inner.streams_of(what)
    }

    fn rsts(&self, conn: usize, stream: u32) -> Vec<u32> {
        self.inner.rsts(conn, stream)
    }

    fn wait_rst(&self, (conn, stream): (usize, u32)) -> Vec<u32> {
        self.wait_for(Duration::from_secs(3), |l| {
            l.iter()
                .any(|(c, e)| *c == conn && matches!(e, Ev::Rst(s, _) if *s == stream))
        });
        self.rsts(conn, stream)
    }

    fn requests(&self) -> usize {
        self.events()
            .iter()
            .filter(|(_, e)| matches!(e, Ev::Request(..)))
            .count()
    }

    fn block(&self, at: (usize, u32)) -> Vec<u8> {
        self.blocks
            .lock()
            .unwrap()
            .get(&at)
            .cloned()
            .unwrap_or_default()
    }
}

/// What to write for a request whose message is `cmd`; `refused` tracks
/// "refuse-once".
fn answer(s: u32, cmd: &str, refused: &mut bool) -> Vec<u8> {
    let rst = |code: u32| frame(RST_STREAM, 0, s, &code.to_be_bytes());
    if cmd == "ok" {
        return ok_answer(s);
    }
    if cmd == "silent" || cmd.starts_with("silent") {
        return Vec::new();
    }
    if let Some(n) = cmd.strip_prefix("fail-once:") {
        // grpc-status N the first time this connection sees it, then "ok".
        if !*refused {
            *refused = true;
            return answer(s, &format!("status:{n}"), refused);
        }
        return ok_answer(s);
    }
    if cmd == "refuse-once" {
        if !*refused {
            *refused = true;
            return rst(0x7);
        }
        return ok_answer(s);
    }
    if cmd == "head-silent" {
        let mut out = headers(
            s,
            &[(":status", b"200"), ("content-type", b"application/grpc")],
            false,
        );
        out.extend(data(s, &msg(b"ok"), false));
        return out;
    }
    if let Some(n) = cmd.strip_prefix("rst:") {
        return rst(n.parse().unwrap());
    }
    if let Some(n) = cmd.strip_prefix("head-rst:") {
        let mut out = headers(
            s,
            &[(":status", b"200"), ("content-type", b"application/grpc")],
            false,
        );
        out.extend(data(s, &msg(b"ok"), false));
        out.extend(rst(n.parse().unwrap()));
        return out;
    }
    if let Some(n) = cmd.strip_prefix("status:") {
        let n = n.as_bytes();
        return headers(
            s,
            &[
                (":status", b"200"),
                ("content-type", b"application/grpc"),
                ("grpc-status", n),
                ("grpc-message", b"from server"),
            ],
            true,
        );
    }
    panic!("unknown command {cmd:?}");
}

/// One connection: the SETTINGS of `opts` sent, the preface read; each
/// request's header block recorded, the connection window given back for
/// its DATA, and its message (`Ev::Request`) answered as [`answer`] says,
/// at once or after its "sleep:MS:".
fn serve(c: &mut H2, opts: &Opts, blocks: &Mutex<Blocks>) -> io::Result<()> {
    c.send(&frame(SETTINGS, 0, 0, &opts.settings))?;
    c.preface()?;
    let mut scheduled: Vec<(Instant, u32, String)> = Vec::new();
    let mut refused = false;
    loop {
        let now = Instant::now();
        let mut i = 0;
        while i < scheduled.len() {
            if scheduled[i].0 <= now {
                let (_, s, cmd) = scheduled.remove(i);
                let out = answer(s, &cmd, &mut refused);
                c.send(&out)?;
            } else {
                i += 1;
            }
        }
        let f = match c.next_until(Some(Instant::now() + TICK)) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
            Err(e) => return Err(e),
        };
        if f.kind == HEADERS {
            blocks
                .lock()
                .unwrap()
                .insert((c.index, f.stream), f.header_block());
        }
        if f.kind == DATA && !f.payload.is_empty() {
            c.window_update(0, f.payload.len() as u32)?;
        }
        if f.kind != DATA {
            continue;
        }
        let Some((stream, body)) = c.request_done(&f) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(body.get(5..).unwrap_or(&[])).into_owned();
        let (at, cmd) = match cmd.strip_prefix("sleep:") {
            Some(rest) => {
                let (ms, c) = rest.split_once(':').unwrap();
                (
                    Instant::now() + Duration::from_millis(ms.parse().unwrap()),
                    c.to_string(),
                )
            }
            None => (Instant::now(), cmd),
        };
        scheduled.push((at, stream, cmd));
    }
}

// ---------------------------------------------------------------------------
// Client side.

fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        ..Default::default()
    }
}

fn channel_to(rt: &Runtime, addr: SocketAddr, config: Option<&str>) -> Channel {
    Channel::new(
        rt,
        &format!("ipv4:{addr}"),
        config,
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap()
}

fn opts(deadline: Option<Duration>, wfr: Option<bool>) -> CallOptions<'static> {
    CallOptions {
        deadline: deadline.map(|d| Instant::now() + d),
        wait_for_ready: wfr,
        ..Default::default()
    }
}

fn blocking(ch: &Channel, cmd: &str, o: &CallOptions<'_>) -> CallResult {
    ch.reader().unary(ECHO, cmd.as_bytes(), o)
}

fn start(ch: &Channel, cmd: &str, o: &CallOptions<'_>) -> (CallHandle, mpsc::Receiver<CallResult>) {
    let (tx, rx) = mpsc::channel();
    let h = ch
        .unary_start(ECHO, cmd.as_bytes(), o, move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    (h, rx)
}

fn started(ch: &Channel, cmd: &str, o: &CallOptions<'_>) -> CallResult {
    let (_h, rx) = start(ch, cmd, o);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the started call completes")
}

fn code(r: &CallResult) -> Code {
    r.as_ref().err().map_or(Code::Ok, |s| s.code())
}

fn wait_ready(ch: &Channel) {
    ch.connect().unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while ch.state() != ConnectivityState::Ready {
        assert!(Instant::now() < end, "never READY: {}", ch.state());
        ch.wait_for_state_change(ch.state(), Some(Instant::now() + Duration::from_millis(50)));
    }
}

fn wait_state(ch: &Channel, want: ConnectivityState) {
    ch.connect().unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while ch.state() != want {
        assert!(Instant::now() < end, "never {want}: {}", ch.state());
        ch.wait_for_state_change(ch.state(), Some(Instant::now() + Duration::from_millis(50)));
    }
}

// ---------------------------------------------------------------------------
// (a) What the client sends when a call ends early.

/// gRPC-Go: a call whose context deadline passes while the server says
/// nothing ends DEADLINE_EXCEEDED (stream.go csAttempt.recvMsg ->
/// toRPCErr(ctx.Err())), and the stream is closed with
/// `closeStream(..., rst=true, rstCode=http2.ErrCodeCancel)` (client_stream.go
/// Close / http2_client.go closeStream). The connection stays up: the next
/// call goes out on it. Blocking and started calls alike.
#[test]
fn deadline_while_server_silent_resets_cancel_and_keeps_the_connection() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    for (way, cmd) in [("blocking", "silent-b"), ("started", "silent-s")] {
        let deadline = Duration::from_millis(300);
        let t = Instant::now();
        let r = if way == "blocking" {
            blocking(&ch, cmd, &opts(Some(deadline), None))
        } else {
            started(&ch, cmd, &opts(Some(deadline), None))
        };
        let took = t.elapsed();
        assert_eq!(code(&r), Code::DeadlineExceeded, "{way}: {r:?}");
        assert!(
            took >= Duration::from_millis(280) && took < Duration::from_millis(1500),
            "{way}: ended after {took:?}"
        );
        let at = server.wait_request(cmd);
        let rsts = server.wait_rst(at);
        assert_eq!(
            rsts,
            vec![0x8],
            "{way}: RST_STREAM codes for the expired stream"
        );
        let next = blocking(&ch, "ok", &opts(Some(Duration::from_secs(3)), None));
        assert_eq!(code(&next), Code::Ok, "{way}: the next call {next:?}");
    }
    assert_eq!(server.accepted(), 1, "a deadline cost the connection");
    assert!(
        !server
            .events()
            .iter()
            .any(|(_, e)| matches!(e, Ev::GoAway(..) | Ev::Eof)),
        "{:?}",
        server.events()
    );
    ch.close();
}

/// A caller's cancel (CallHandle::cancel, Channel::cancel_call): CANCELLED,
/// RST_STREAM(CANCEL) (gRPC-Go: context cancel -> closeStream with
/// ErrCodeCancel; test/end2end_test.go testCancel wants codes.Canceled),
/// and the connection serves the next call. A second cancel says false.
#[test]
fn caller_cancel_resets_cancel_and_keeps_the_connection() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    for (way, cmd) in [("handle", "silent-h"), ("cancel_call", "silent-id")] {
        let (h, rx) = start(&ch, cmd, &opts(Some(Duration::from_secs(10)), None));
        let at = server.wait_request(cmd);
        let t = Instant::now();
        let cancelled = if way == "handle" {
            h.cancel()
        } else {
            ch.cancel_call(h.id())
        };
        assert!(cancelled, "{way}: cancel said the call had finished");
        let r = rx.recv_timeout(Duration::from_secs(3)).expect("completion");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{way}: {:?}",
            t.elapsed()
        );
        assert_eq!(code(&r), Code::Cancelled, "{way}: {r:?}");
        assert_eq!(server.wait_rst(at), vec![0x8], "{way}: RST_STREAM codes");
        assert!(!h.cancel(), "{way}: a finished call cancelled again");
        let next = started(&ch, "ok", &opts(Some(Duration::from_secs(3)), None));
        assert_eq!(code(&next), Code::Ok, "{way}: the next call {next:?}");
    }
    assert_eq!(server.accepted(), 1, "a cancel cost the connection");
    ch.close();
}

/// gRPC-Go test/end2end_test.go testCancelNoIO: with
/// SETTINGS_MAX_CONCURRENT_STREAMS 1, a call waiting for the stream slot
/// goes out as soon as the call holding it is cancelled (its RST_STREAM
/// frees the slot), and succeeds.
#[test]
fn cancelling_the_call_holding_the_only_stream_slot_lets_the_next_one_go() {
    let server = Server::start(Opts {
        settings: vec![0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1],
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    let (first, _rx1) = start(&ch, "silent-1", &opts(Some(Duration::from_secs(10)), None));
    let at = server.wait_request("silent-1");
    let (_second, rx2) = start(&ch, "ok", &opts(Some(Duration::from_secs(5)), None));
    thread::sleep(Duration::from_millis(200));
    assert!(
        server.stream_of("ok").is_none(),
        "the second call did not wait for the slot: {:?}",
        server.events()
    );
    assert!(first.cancel());
    let r = rx2
        .recv_timeout(Duration::from_secs(5))
        .expect("second call completes");
    assert_eq!(code(&r), Code::Ok, "{r:?}");
    assert_eq!(server.rsts(at.0, at.1), vec![0x8]);
    assert_eq!(server.accepted(), 1);
    ch.close();
}

/// A started wait-for-ready call still waiting for a connection (nothing
/// listens) is cancelled at once: CANCELLED (gRPC-Go picker_wrapper.go
/// pick: `case context.Canceled: status.Error(codes.Canceled, ...)`).
#[test]
fn cancelling_a_call_waiting_for_a_connection_is_cancelled_at_once() {
    let addr = free_addr();
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, addr, None);
    let (h, rx) = start(&ch, "ok", &opts(Some(Duration::from_secs(10)), Some(true)));
    thread::sleep(Duration::from_millis(200));
    assert!(rx.try_recv().is_err(), "a wait-for-ready call did not wait");
    let t = Instant::now();
    assert!(h.cancel());
    let r = rx.recv_timeout(Duration::from_secs(3)).expect("completion");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(code(&r), Code::Cancelled, "{r:?}");
    ch.close();
}

// ---------------------------------------------------------------------------
// (b) Server RST_STREAM codes not in conn_go_cases.rs, REFUSED_STREAM's
// transparent retry, and a RST_STREAM(CANCEL) after the deadline.

/// http_util.go http2ErrConvTab rows conn_go_cases.rs leaves out:
/// SETTINGS_TIMEOUT (0x4), FRAME_SIZE_ERROR (0x6), COMPRESSION_ERROR (0x9),
/// CONNECT_ERROR (0xa) -> INTERNAL, before and after the response headers,
/// blocking and started; the connection stays.
#[test]
fn remaining_rst_stream_codes_map_as_grpc_go() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    let mut wrong = Vec::new();
    for (c, want) in [
        (0x4u32, Code::Internal),
        (0x6, Code::Internal),
        (0x9, Code::Internal),
        (0xa, Code::Internal),
    ] {
        for cmd in [format!("rst:{c}"), format!("head-rst:{c}")] {
            let o = opts(Some(Duration::from_secs(5)), None);
            for (way, r) in [
                ("blocking", blocking(&ch, &cmd, &o)),
                ("started", started(&ch, &cmd, &o)),
            ] {
                if code(&r) != want {
                    wrong.push(format!("{cmd} {way}: got {r:?}, gRPC-Go gives {want:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(server.accepted(), 1, "a reset stream cost the connection");
    ch.close();
}

/// handleRSTStream: REFUSED_STREAM marks the stream unprocessed; stream.go
/// shouldRetry: `cs.firstAttempt && unprocessed` -> transparent retry, with
/// no retry policy and without wait-for-ready: the call succeeds, the
/// server having seen it twice. Refused every time: the retry happens
/// once (firstAttempt is false after it) and the call fails UNAVAILABLE
/// (http2ErrConvTab[REFUSED_STREAM]), two streams in all.
#[test]
fn refused_stream_is_retried_transparently_once() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    let r = blocking(
        &ch,
        "refuse-once",
        &opts(Some(Duration::from_secs(5)), Some(false)),
    );
    assert_eq!(code(&r), Code::Ok, "{r:?}");
    assert_eq!(server.requests(), 2, "{:?}", server.events());

    let before = server.requests();
    let r = blocking(
        &ch,
        "rst:7",
        &opts(Some(Duration::from_secs(5)), Some(false)),
    );
    assert_eq!(code(&r), Code::Unavailable, "{r:?}");
    assert_eq!(
        server.requests() - before,
        2,
        "attempts for an always-refused call"
    );

    let before = server.requests();
    let r = started(
        &ch,
        "rst:7",
        &opts(Some(Duration::from_secs(5)), Some(false)),
    );
    assert_eq!(code(&r), Code::Unavailable, "{r:?}");
    assert_eq!(server.requests() - before, 2, "attempts (started)");
    assert_eq!(server.accepted(), 1);
    ch.close();
}

/// handleRSTStream: a RST_STREAM(CANCEL) that arrives once the call's
/// deadline has passed is reported DEADLINE_EXCEEDED ("Our deadline was
/// already exceeded, and that was likely the cause of this cancellation").
/// The server resets 30 ms after the client's deadline (counted from the
/// request's arrival, later than the call's start); before the headers and
/// after them; blocking and started.
#[test]
fn rst_cancel_after_the_deadline_is_deadline_exceeded() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    let mut wrong = Vec::new();
    for _ in 0..3 {
        for cmd in ["sleep:330:rst:8", "sleep:330:head-rst:8"] {
            let o = opts(Some(Duration::from_millis(300)), None);
            for (way, r) in [
                ("blocking", blocking(&ch, cmd, &o)),
                ("started", started(&ch, cmd, &o)),
            ] {
                if code(&r) != Code::DeadlineExceeded {
                    wrong.push(format!("{cmd} {way}: {r:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Control: a RST_STREAM(CANCEL) well before the deadline is CANCELLED.
    let r = blocking(
        &ch,
        "sleep:50:rst:8",
        &opts(Some(Duration::from_secs(5)), None),
    );
    assert_eq!(code(&r), Code::Cancelled, "{r:?}");
    let next = blocking(&ch, "ok", &opts(Some(Duration::from_secs(3)), None));
    assert_eq!(code(&next), Code::Ok, "{next:?}");
    ch.close();
}

// ---------------------------------------------------------------------------
// (c) Deadlines and grpc-timeout.

/// end2end_test.go TestContextDeadlineNotIgnored: a deadline shorter than
/// the server's response time ends the call DEADLINE_EXCEEDED near the
/// deadline, not when the server answers (1.5 s later); the late answer
/// on the reset stream is ignored and the connection serves the next call.
#[test]
fn a_deadline_shorter_than_the_server_ends_the_call_at_the_deadline() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    for way in ["blocking", "started"] {
        let o = opts(Some(Duration::from_millis(250)), None);
        let t = Instant::now();
        let r = if way == "blocking" {
            blocking(&ch, "sleep:1500:ok", &o)
        } else {
            started(&ch, "sleep:1500:ok", &o)
        };
        let took = t.elapsed();
        assert_eq!(code(&r), Code::DeadlineExceeded, "{way}: {r:?}");
        assert!(took < Duration::from_millis(1200), "{way}: took {took:?}");
    }
    // Let the late answers arrive, then call again on the same connection.
    thread::sleep(Duration::from_millis(1500));
    let next = blocking(&ch, "ok", &opts(Some(Duration::from_secs(3)), None));
    assert_eq!(code(&next), Code::Ok, "{next:?}");
    assert_eq!(server.accepted(), 1);
    ch.close();
}

/// A server answering DEADLINE_EXCEEDED itself (its own view of
/// grpc-timeout) is passed through as is, code and message, before the
/// client's deadline (gRPC-Go takes grpc-status from the trailers).
#[test]
fn a_servers_deadline_exceeded_is_passed_through() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    let o = opts(Some(Duration::from_secs(5)), None);
    for (way, r) in [
        ("blocking", blocking(&ch, "status:4", &o)),
        ("started", started(&ch, "status:4", &o)),
    ] {
        let s = r.expect_err(way);
        assert_eq!(s.code(), Code::DeadlineExceeded, "{way}: {s:?}");
        assert_eq!(s.message(), "from server", "{way}");
    }
    ch.close();
}

// HPACK reading, for grpc-timeout on the wire.
#[path = "common/hpack.rs"]
mod hpack;
use hpack::literal_fields;

/// grpc-timeout in nanoseconds, as sent for the request `cmd`.
fn sent_timeout(server: &Server, cmd: &str) -> Option<u128> {
    let at = server.wait_request(cmd);
    let fields = literal_fields(&server.block(at));
    let (_, t) = fields.iter().find(|(k, _)| k == "grpc-timeout")?;
    let (digits, unit) = t.split_at(t.len() - 1);
    let mult: u128 = match unit {
        "n" => 1,
        "u" => 1_000,
        "m" => 1_000_000,
        "S" => 1_000_000_000,
        "M" => 60_000_000_000,
        "H" => 3_600_000_000_000,
        _ => panic!("bad unit in {t:?}"),
    };
    Some(digits.parse::<u128>().unwrap() * mult)
}

/// stream.go newClientStreamWithParams: `if mc.Timeout != nil { ctx, cancel
/// = context.WithTimeout(ctx, *mc.Timeout) }` on top of the caller's
/// context, so the smaller wins, and the grpc-timeout sent
/// (http2_client.go createHeaderFields: `if dl, ok := ctx.Deadline()`) is
/// that smaller one; with neither, no grpc-timeout at all.
/// (end2end_test.go TestServiceConfigTimeout, seen on the wire.)
#[test]
fn method_config_timeout_caps_the_deadline_and_grpc_timeout_on_the_wire() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"timeout":"0.8s"}]}"#;
    let capped = channel_to(&rt, server.addr, Some(cfg));
    let plain = channel_to(&rt, server.addr, None);
    wait_ready(&capped);
    wait_ready(&plain);
    let s = Duration::from_secs;
    let ms = |n: u128| n * 1_000_000;
    // caller 10 s, config 0.8 s: 0.8 s.
    assert_eq!(
        code(&blocking(&capped, "sleep:1:ok", &opts(Some(s(10)), None))),
        Code::Ok
    );
    let t = sent_timeout(&server, "sleep:1:ok").expect("a grpc-timeout");
    assert!(
        (ms(500)..=ms(801)).contains(&t),
        "config 0.8 s, caller 10 s: sent {t} ns"
    );
    // caller 0.4 s, config 0.8 s: 0.4 s.
    assert_eq!(
        code(&started(
            &capped,
            "sleep:2:ok",
            &opts(Some(Duration::from_millis(400)), None)
        )),
        Code::Ok
    );
    let t = sent_timeout(&server, "sleep:2:ok").expect("a grpc-timeout");
    assert!(
        (ms(200)..=ms(401)).contains(&t),
        "config 0.8 s, caller 0.4 s: sent {t} ns"
    );
    // No caller deadline, config 0.8 s: 0.8 s, and the call ends then.
    assert_eq!(
        code(&blocking(&capped, "sleep:3:ok", &opts(None, None))),
        Code::Ok
    );
    let t = sent_timeout(&server, "sleep:3:ok").expect("a grpc-timeout");
    assert!(
        (ms(500)..=ms(801)).contains(&t),
        "config 0.8 s only: sent {t} ns"
    );
    let t0 = Instant::now();
    let r = started(&capped, "silent-cfg", &opts(None, None));
    assert_eq!(code(&r), Code::DeadlineExceeded, "{r:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(750) && t0.elapsed() < s(2),
        "{:?}",
        t0.elapsed()
    );
    // Neither: no grpc-timeout.
    assert_eq!(
        code(&blocking(&plain, "sleep:4:ok", &opts(None, None))),
        Code::Ok
    );
    assert_eq!(
        sent_timeout(&server, "sleep:4:ok"),
        None,
        "grpc-timeout without a deadline"
    );
    capped.close();
    plain.close();
}

// ---------------------------------------------------------------------------
// (d) Wait-for-ready vs fail-fast.

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// end2end_test.go testFailFast / picker_wrapper.go pick: on a channel in
/// TRANSIENT_FAILURE a fail-fast call fails UNAVAILABLE at once with the
/// picker's error (pick_first's: the connection error, "connection refused"
/// with the address).
#[test]
fn fail_fast_on_transient_failure_is_unavailable_at_once_saying_why() {
    let addr = free_addr();
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, addr, None);
    wait_state(&ch, ConnectivityState::TransientFailure);
    let o = opts(Some(Duration::from_secs(5)), Some(false));
    let t = Instant::now();
    for (way, r) in [
        ("blocking", blocking(&ch, "ok", &o)),
        ("started", started(&ch, "ok", &o)),
        (
            "default",
            blocking(&ch, "ok", &opts(Some(Duration::from_secs(5)), None)),
        ),
    ] {
        let s = r.expect_err(way);
        assert_eq!(s.code(), Code::Unavailable, "{way}: {s:?}");
        let m = s.message().to_lowercase();
        assert!(
            m.contains("refused") && m.contains(&addr.port().to_string()),
            "{way}: the message does not give the connection error: {:?}",
            s.message()
        );
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    ch.close();
}

/// picker_wrapper.go pick: a wait-for-ready call keeps waiting through
/// TRANSIENT_FAILURE; at its deadline it fails DEADLINE_EXCEEDED "latest
/// balancer error: <the connection error>" (end2end_test.go
/// testTimeoutOnDeadServer wants DeadlineExceeded). Blocking and started.
#[test]
fn wait_for_ready_until_the_deadline_names_the_latest_connection_error() {
    let addr = free_addr();
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, addr, None);
    wait_state(&ch, ConnectivityState::TransientFailure);
    for way in ["blocking", "started"] {
        let o = opts(Some(Duration::from_millis(400)), Some(true));
        let t = Instant::now();
        let r = if way == "blocking" {
            blocking(&ch, "ok", &o)
        } else {
            started(&ch, "ok", &o)
        };
        let took = t.elapsed();
        let s = r.expect_err(way);
        assert_eq!(s.code(), Code::DeadlineExceeded, "{way}: {s:?}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{way}: {took:?}"
        );
        assert!(
            s.message().contains("latest balancer error")
                && s.message().to_lowercase().contains("refused"),
            "{way}: {:?}",
            s.message()
        );
    }
    ch.close();
}

/// balancer_test.go TestWaitForReady / end2end TestTimeoutOnDeadServer:
/// a wait-for-ready call waits until a server appears (started later on
/// the same port) and is served there, within its deadline; a fail-fast
/// call meanwhile fails UNAVAILABLE.
#[test]
fn wait_for_ready_is_served_by_a_server_that_comes_up_later() {
    let addr = free_addr();
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, addr, None);
    wait_state(&ch, ConnectivityState::TransientFailure);
    let t0 = Instant::now();
    let (_h, rx) = start(
        &ch,
        "sleep:0:ok",
        &opts(Some(Duration::from_secs(8)), Some(true)),
    );
    let waiter = {
        let mut r = ch.reader();
        thread::spawn(move || {
            r.unary(
                ECHO,
                b"sleep:1:ok",
                &opts(Some(Duration::from_secs(8)), Some(true)),
            )
        })
    };
    thread::sleep(Duration::from_millis(600));
    assert!(
        rx.try_recv().is_err() && !waiter.is_finished(),
        "did not wait"
    );
    let ff = blocking(&ch, "ok", &opts(Some(Duration::from_secs(5)), Some(false)));
    assert_eq!(code(&ff), Code::Unavailable, "{ff:?}");
    let server = Server::start_on(addr, Opts::default());
    let r = rx
        .recv_timeout(Duration::from_secs(8))
        .expect("started call completes");
    assert_eq!(code(&r), Code::Ok, "{r:?}");
    let r = waiter.join().unwrap();
    assert_eq!(code(&r), Code::Ok, "{r:?}");
    assert_eq!(server.requests(), 2);
    // The grpc-timeout sent is what was left of the 8 s when the request
    // went out (http2_client.go createHeaderFields: time.Until(dl)), not 8 s.
    let waited = t0.elapsed().as_nanos();
    for cmd in ["sleep:0:ok", "sleep:1:ok"] {
        let t = sent_timeout(&server, cmd).expect("a grpc-timeout");
        assert!(
            t <= 8_000_000_000 - 500_000_000 && t + waited + 1_000_000_000 >= 8_000_000_000,
            "{cmd}: sent {t} ns after waiting {waited} ns"
        );
    }
    ch.close();
}

/// end2end_test.go TestGetMethodConfig / TestServiceConfigWaitForReady: the
/// method config's waitForReady applies when the call says nothing (true:
/// waits to its deadline, here the config's 0.3 s timeout,
/// DEADLINE_EXCEEDED; false: UNAVAILABLE at once); the call's own
/// WaitForReady option stands over it (stream.go: the method config is
/// applied to callInfo first, then `o.before(callInfo)`); the most specific
/// name wins (method over service).
#[test]
fn method_config_wait_for_ready_applies_unless_the_call_says() {
    let addr = free_addr();
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"methodConfig":[
        {"name":[{"service":"echo.Echo","method":"Unary"}],"waitForReady":true,"timeout":"0.3s"},
        {"name":[{"service":"echo.Echo"}],"waitForReady":false}]}"#;
    let ch = channel_to(&rt, addr, Some(cfg));
    wait_state(&ch, ConnectivityState::TransientFailure);
    let mut wrong = Vec::new();
    let mut check =
        |what: &str, method: &str, o: CallOptions<'_>, want: Code, at_least: Duration| {
            let t = Instant::now();
            let r = ch.reader().unary(method, b"ok", &o);
            let took = t.elapsed();
            if code(&r) != want || took < at_least || took > Duration::from_secs(3) {
                wrong.push(format!("{what}: {r:?} after {took:?}, want {want:?}"));
            }
        };
    let ten = Some(Duration::from_secs(10));
    check(
        "Unary, config wfr true",
        ECHO,
        opts(ten, None),
        Code::DeadlineExceeded,
        Duration::from_millis(250),
    );
    check(
        "Unary, call wfr false",
        ECHO,
        opts(ten, Some(false)),
        Code::Unavailable,
        Duration::ZERO,
    );
    check(
        "Other, config wfr false",
        "/echo.Echo/Other",
        opts(ten, None),
        Code::Unavailable,
        Duration::ZERO,
    );
    check(
        "Other, call wfr true",
        "/echo.Echo/Other",
        opts(Some(Duration::from_millis(300)), Some(true)),
        Code::DeadlineExceeded,
        Duration::from_millis(250),
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    ch.close();
}

/// picker_wrapper.go pick: `if pg == nil { return pick{}, ErrClientConnClosing }`
/// — closing the channel while a wait-for-ready call waits fails it at once
/// with codes.Canceled "grpc: the client connection is closing"; a call on
/// the closed channel fails the same way (invoke_test.go
/// TestInvokeCancelClosedNonFailFast: it must fail).
#[test]
fn closing_the_channel_fails_waiting_wait_for_ready_calls_cancelled() {
    let addr = free_addr();
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, addr, None);
    wait_state(&ch, ConnectivityState::TransientFailure);
    let (_h, rx) = start(&ch, "ok", &opts(Some(Duration::from_secs(10)), Some(true)));
    let waiter = {
        let mut r = ch.reader();
        thread::spawn(move || {
            r.unary(
                ECHO,
                b"ok",
                &opts(Some(Duration::from_secs(10)), Some(true)),
            )
        })
    };
    thread::sleep(Duration::from_millis(300));
    assert!(
        rx.try_recv().is_err() && !waiter.is_finished(),
        "did not wait"
    );
    let t = Instant::now();
    ch.close();
    let a = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("started call completes");
    let b = waiter.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    for (way, r) in [("started", a), ("blocking", b)] {
        let s = r.expect_err(way);
        assert_eq!(s.code(), Code::Cancelled, "{way}: {s:?}");
        assert!(
            s.message().contains("the client connection is closing"),
            "{way}: {:?}",
            s.message()
        );
    }
    let after = blocking(&ch, "ok", &opts(Some(Duration::from_secs(1)), Some(true)));
    let s = after.expect_err("a call on a closed channel");
    assert_eq!(s.code(), Code::Cancelled, "after close: {s:?}");
    assert!(matches!(
        ch.unary_start(ECHO, b"ok", &CallOptions::default(), |_| {}),
        Err(Error::Closed)
    ));
}

// ---------------------------------------------------------------------------
// More early ends.

/// Closing the channel while calls are in flight on a connection (the
/// server silent): gRPC-Go's ClientConn.Close closes its transports, and
/// the RPCs on them fail codes.Canceled "grpc: the client connection is
/// closing" (http2_client.go Close: `ErrConnClosing` ... the streams are
/// closed with the ClientConn's error; switchyard says it does the same:
/// src/status.rs CLOSED_MESSAGE). Blocking and started, at once.
#[test]
fn closing_the_channel_ends_calls_in_flight_cancelled() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    let (_h, rx) = start(&ch, "silent-s", &opts(Some(Duration::from_secs(10)), None));
    let waiter = {
        let mut r = ch.reader();
        thread::spawn(move || {
            r.unary(
                ECHO,
                b"silent-b",
                &opts(Some(Duration::from_secs(10)), None),
            )
        })
    };
    server.wait_request("silent-s");
    server.wait_request("silent-b");
    let t = Instant::now();
    ch.close();
    let a = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("started call completes");
    let b = waiter.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let mut wrong = Vec::new();
    for (way, r) in [("started", a), ("blocking", b)] {
        match r {
            Err(s)
                if s.code() == Code::Cancelled
                    && s.message().contains("the client connection is closing") => {}
            other => wrong.push(format!("{way}: {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A fail-fast call while the only subchannel is CONNECTING (a server that
/// accepts TCP and never speaks) queues (picker_wrapper.go:
/// ErrNoSubConnAvailable -> wait for the next picker) and ends at its
/// deadline DEADLINE_EXCEEDED, not UNAVAILABLE, "... while waiting for
/// connections to become ready" (no balancer error seen yet).
#[test]
fn fail_fast_while_connecting_waits_to_its_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            thread::sleep(TICK);
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, addr, None);
    wait_state(&ch, ConnectivityState::Connecting);
    for way in ["blocking", "started"] {
        let o = opts(Some(Duration::from_millis(300)), Some(false));
        let t = Instant::now();
        let r = if way == "blocking" {
            blocking(&ch, "ok", &o)
        } else {
            started(&ch, "ok", &o)
        };
        let took = t.elapsed();
        let s = r.expect_err(way);
        assert_eq!(s.code(), Code::DeadlineExceeded, "{way}: {s:?}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{way}: {took:?}"
        );
        assert!(
            s.message()
                .contains("waiting for connections to become ready"),
            "{way}: {:?}",
            s.message()
        );
    }
    ch.close();
    holder.join().unwrap();
}

/// invoke_test.go TestInvokeCancel: a call whose context is already done
/// is never sent. Here a deadline already passed: DEADLINE_EXCEEDED and
/// the server sees nothing (blocking and started).
#[test]
fn an_expired_deadline_sends_nothing() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    let past = CallOptions {
        deadline: Some(Instant::now()),
        ..Default::default()
    };
    assert_eq!(code(&blocking(&ch, "ok", &past)), Code::DeadlineExceeded);
    assert_eq!(code(&started(&ch, "ok", &past)), Code::DeadlineExceeded);
    thread::sleep(Duration::from_millis(100));
    assert!(
        !server
            .events()
            .iter()
            .any(|(_, e)| matches!(e, Ev::Headers(_))),
        "{:?}",
        server.events()
    );
    ch.close();
}

/// A call that fails on the client's side after the response headers (a
/// response message over the receive limit, the server not yet done):
/// gRPC-Go's recvMsg error finishes the attempt and `ClientStream.Close`
/// resets the stream RST_STREAM(CANCEL) (http2_client.go closeStream,
/// rst=true, ErrCodeCancel); the call is RESOURCE_EXHAUSTED and the
/// connection serves the next call.
#[test]
fn a_client_side_failure_mid_response_resets_with_cancel() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let mut transport = TransportConfig::insecure();
    transport.max_recv_message_size = Some(1);
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr),
        None,
        ChannelOptions {
            transport: Some(transport),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap();
    wait_ready(&ch);
    for (way, cmd) in [
        ("blocking", "head-silent"),
        ("started", "sleep:0:head-silent"),
    ] {
        let o = opts(Some(Duration::from_secs(5)), None);
        let t = Instant::now();
        let r = if way == "blocking" {
            blocking(&ch, cmd, &o)
        } else {
            started(&ch, cmd, &o)
        };
        assert_eq!(code(&r), Code::ResourceExhausted, "{way}: {r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{way}: waited {:?}",
            t.elapsed()
        );
        let at = server.wait_request(cmd);
        assert_eq!(server.wait_rst(at), vec![0x8], "{way}: RST_STREAM codes");
    }
    // "ok" is 2 bytes: over the limit too; an empty message would pass. The
    // connection is what matters: still the one.
    let next = blocking(&ch, "status:5", &opts(Some(Duration::from_secs(3)), None));
    assert_eq!(code(&next), Code::NotFound, "{next:?}");
    assert_eq!(server.accepted(), 1);
    ch.close();
}

/// A deadline that passes while the request is still being sent (held by
/// the server's stream flow-control window, never opened past 64 KiB):
/// DEADLINE_EXCEEDED and RST_STREAM(CANCEL), as for a silent server
/// (gRPC-Go closeStream(rst=true, ErrCodeCancel)); the connection (its
/// connection-level window refunded by the server) serves the next call.
#[test]
fn deadline_while_the_request_is_held_by_flow_control_resets_with_cancel() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    let big = vec![b'x'; 100_000];
    for way in ["blocking", "started"] {
        let before: Vec<u32> = server
            .events()
            .iter()
            .filter_map(|(_, e)| match e {
                Ev::Headers(s) => Some(*s),
                _ => None,
            })
            .collect();
        let o = opts(Some(Duration::from_millis(300)), None);
        let t = Instant::now();
        let r = if way == "blocking" {
            ch.reader().unary(ECHO, &big, &o)
        } else {
            let (tx, rx) = mpsc::channel();
            ch.unary_start(ECHO, &big, &o, move |r| {
                let _ = tx.send(r);
            })
            .unwrap();
            rx.recv_timeout(Duration::from_secs(5)).expect("completes")
        };
        assert_eq!(code(&r), Code::DeadlineExceeded, "{way}: {r:?}");
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{way}: {:?}",
            t.elapsed()
        );
        let stream = server
            .events()
            .iter()
            .find_map(|(_, e)| match e {
                Ev::Headers(s) if !before.contains(s) => Some(*s),
                _ => None,
            })
            .expect("the big request's HEADERS");
        assert_eq!(
            server.wait_rst((0, stream)),
            vec![0x8],
            "{way}: RST_STREAM codes"
        );
    }
    let next = blocking(&ch, "ok", &opts(Some(Duration::from_secs(3)), None));
    assert_eq!(code(&next), Code::Ok, "{next:?}");
    assert_eq!(server.accepted(), 1);
    ch.close();
}

/// A REFUSED_STREAM that comes after the response headers and a message
/// is not retried: the call is committed. gRFC A6 ("An RPC becomes
/// committed in two scenarios: the client receives Response-Headers; the
/// client's outgoing message has overflowed the buffer" — no retry of a
/// committed RPC, transparent ones included); gRPC-Go (stream.go, HEAD):
/// `invoke` calls RecvMsg twice, the first, getting the message, succeeds
/// and `withRetry`'s onSuccess (`commitAttemptLocked`) commits the
/// attempt; the second gets the RST error and `withRetry` returns it as
/// is (`if cs.committed { return toRPCErr(op(cs.attempt)) }`): UNAVAILABLE
/// after one attempt. The server already ran the request once; a retry
/// runs it again.
#[test]
fn refused_stream_after_the_response_headers_is_not_retried() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, server.addr, None);
    wait_ready(&ch);
    let mut wrong = Vec::new();
    for way in ["blocking", "started"] {
        let before = server.requests();
        let o = opts(Some(Duration::from_secs(5)), Some(false));
        let r = if way == "blocking" {
            blocking(&ch, "head-rst:7", &o)
        } else {
            started(&ch, "head-rst:7", &o)
        };
        let attempts = server.requests() - before;
        if code(&r) != Code::Unavailable || attempts != 1 {
            wrong.push(format!(
                "{way}: {r:?} after {attempts} attempts (gRPC-Go: UNAVAILABLE, 1)"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    ch.close();
}

/// A retried attempt sends what is left of the call's deadline as its
/// grpc-timeout (each attempt's stream is made under the call's context:
/// http2_client.go createHeaderFields, `time.Until(dl)`), not the whole
/// timeout again; a retry waiting out its backoff is cancelled at once by
/// the caller (stream.go shouldRetry: `case <-cs.ctx.Done()`), CANCELLED,
/// with no further attempt.
#[test]
fn retries_send_the_remaining_timeout_and_a_cancel_ends_the_backoff() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let cfg = |backoff: &str| {
        format!(
            r#"{{"methodConfig":[{{"name":[{{"service":"echo.Echo"}}],"retryPolicy":{{"maxAttempts":3,"initialBackoff":"{backoff}","maxBackoff":"{backoff}","backoffMultiplier":1.0,"retryableStatusCodes":["UNAVAILABLE"]}}}}]}}"#
        )
    };
    let ch = channel_to(&rt, server.addr, Some(&cfg("0.4s")));
    wait_ready(&ch);
    let r = blocking(
        &ch,
        "fail-once:14",
        &opts(Some(Duration::from_secs(5)), None),
    );
    assert_eq!(code(&r), Code::Ok, "{r:?}");
    let at = server.streams_of("fail-once:14");
    assert_eq!(at.len(), 2, "{:?}", server.events());
    let first = literal_fields(&server.block(at[0]));
    let second = literal_fields(&server.block(at[1]));
    let nanos = |f: &[(String, String)]| {
        let (_, t) = f
            .iter()
            .find(|(k, _)| k == "grpc-timeout")
            .expect("grpc-timeout");
        let (d, u) = t.split_at(t.len() - 1);
        let m: u128 = match u {
            "n" => 1,
            "u" => 1_000,
            "m" => 1_000_000,
            "S" => 1_000_000_000,
            _ => 60_000_000_000,
        };
        d.parse::<u128>().unwrap() * m
    };
    let (a, b) = (nanos(&first), nanos(&second));
    assert!(
        b + 250_000_000 <= a,
        "the retry's grpc-timeout {b} ns is not what was left of the first's {a} ns"
    );
    ch.close();

    // Cancelled during a long backoff.
    let ch = channel_to(&rt, server.addr, Some(&cfg("3s")));
    wait_ready(&ch);
    let (h, rx) = start(&ch, "status:14", &opts(Some(Duration::from_secs(10)), None));
    server.wait_request("status:14");
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert!(h.cancel());
    let r = rx.recv_timeout(Duration::from_secs(5)).expect("completes");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(code(&r), Code::Cancelled, "{r:?}");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        server.streams_of("status:14").len(),
        1,
        "attempts after the cancel"
    );
    ch.close();
}

/// stream.go: `if mc.Timeout != nil && *mc.Timeout >= 0 {
/// context.WithTimeout(ctx, *mc.Timeout) }` — a method timeout of 0s is a
/// deadline already passed: DEADLINE_EXCEEDED, nothing sent.
#[test]
fn a_zero_method_timeout_is_deadline_exceeded_unsent() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"timeout":"0s"}]}"#;
    let ch = channel_to(&rt, server.addr, Some(cfg));
    ch.connect().unwrap();
    let r = blocking(&ch, "ok", &opts(Some(Duration::from_secs(5)), Some(true)));
    assert_eq!(code(&r), Code::DeadlineExceeded, "{r:?}");
    let r = started(&ch, "ok", &opts(None, Some(true)));
    assert_eq!(code(&r), Code::DeadlineExceeded, "{r:?}");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(server.requests(), 0);
    ch.close();
}

/// balancer_test.go TestWaitForReady: with the resolver reporting an error
/// and no addresses, a fail-fast call fails UNAVAILABLE, a wait-for-ready
/// one waits (and, at its deadline, names the resolver's error as the
/// latest balancer error), and once the resolver gives the server's
/// address the waiting call is served there.
#[test]
fn wait_for_ready_waits_through_a_resolver_error_until_addresses_come() {
    let server = Server::start(Opts::default());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "",
        None,
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap();
    ch.connect().unwrap();
    ch.report_resolver_error("fake resolver error").unwrap();
    wait_state(&ch, ConnectivityState::TransientFailure);
    let ff = blocking(&ch, "ok", &opts(Some(Duration::from_secs(5)), None));
    assert_eq!(code(&ff), Code::Unavailable, "{ff:?}");
    let de = blocking(
        &ch,
        "ok",
        &opts(Some(Duration::from_millis(200)), Some(true)),
    );
    let s = de.expect_err("deadline");
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert!(
        s.message().contains("latest balancer error")
            && s.message().contains("fake resolver error"),
        "{:?}",
        s.message()
    );
    let (_h, rx) = start(&ch, "ok", &opts(Some(Duration::from_secs(8)), Some(true)));
    thread::sleep(Duration::from_millis(100));
    assert!(
        rx.try_recv().is_err(),
        "the wait-for-ready call did not wait"
    );
    ch.update_addresses(vec![Address::new(server.addr.to_string())])
        .unwrap();
    let r = rx.recv_timeout(Duration::from_secs(5)).expect("completes");
    assert_eq!(code(&r), Code::Ok, "{r:?}");
    ch.close();
}

/// end2end_test.go testTimeoutOnDeadServer: after a call succeeded, the
/// server stops; once the channel has left READY, a wait-for-ready call
/// with a short deadline ends DEADLINE_EXCEEDED (not UNAVAILABLE), near
/// its deadline.
#[test]
fn wait_for_ready_on_a_dead_server_times_out() {
    let server = Server::start(Opts::default());
    let addr = server.addr;
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, addr, None);
    let ok = blocking(&ch, "ok", &opts(Some(Duration::from_secs(5)), Some(true)));
    assert_eq!(code(&ok), Code::Ok, "{ok:?}");
    drop(server);
    let end = Instant::now() + Duration::from_secs(5);
    while ch.state() == ConnectivityState::Ready {
        assert!(Instant::now() < end, "still READY");
        ch.wait_for_state_change(
            ConnectivityState::Ready,
            Some(Instant::now() + Duration::from_millis(50)),
        );
    }
    for way in ["blocking", "started"] {
        let o = opts(Some(Duration::from_millis(300)), Some(true));
        let t = Instant::now();
        let r = if way == "blocking" {
            blocking(&ch, "ok", &o)
        } else {
            started(&ch, "ok", &o)
        };
        assert_eq!(code(&r), Code::DeadlineExceeded, "{way}: {r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{way}: {:?}",
            t.elapsed()
        );
    }
    ch.close();
}
