//! The client side of ORCA (gRFC A51) as gRPC's own tests check it, over
//! real sockets on 127.0.0.1, in two parts below:
//!
//! ## grpc-java and gRPC-Go, first port
//! grpc-java's ORCA tests (`xds/src/test/java/io/grpc/xds/orca/`
//! `OrcaOobUtilTest`, `OrcaPerRequestUtilTest`) and gRPC-Go's `orca/`
//! (`producer_test.go`, `producer.go`, `orca.go` `ToLoadReport`) ported to
//! switchyard's public API over real sockets on 127.0.0.1. What
//! tests/managed/orca.rs, tests/engine/orca.rs, tests/health_go_cases.rs and
//! tests/weighted_round_robin_go_cases.rs already pin is not redone.
//!
//! A scripted tokio/h2 backend (`Backend`) plays the ORCA service stream by
//! stream (each stream's behaviour from a script) and records every
//! `StreamCoreMetrics` request (raw bytes, connection, open/end times,
//! whether the client ended it). A small policy (`listening`) registers OOB
//! listeners on its one subchannel on command (as `OrcaOobUtil.setListener`
//! / `orca.RegisterOOBListener` do) and records what its listeners and its
//! done hook hear.
//!
//! ## gRPC-Go, second port
//! gRPC-Go's client-side ORCA tests (`orca/producer_test.go`,
//! `orca/producer.go`, `orca/orca_test.go` `TestToLoadReport`,
//! `balancer_wrapper.go` `closeProducers`) and gRFC A51 on what
//! the first port, tests/managed/orca.rs and
//! tests/weighted_round_robin_go_cases.rs do not already pin: the stream's
//! end with the subchannel's shutdown and the channel's close, duplicate
//! and idempotent unregistration (Go's `intervals` count map and
//! `sync.OnceFunc` stop), registrations on a dead subchannel, a zero
//! period on the wire, and several per-call `endpoint-load-metrics-bin`
//! values (Go: "multiple orca load reports" → no report).
//! These use the same backend and policy, with a few more commands (a
//! registration dropped by id, the subchannel shut down, a graceful
//! GOAWAY) and a parent policy over round_robin.

#[path = "common/tokio_host.rs"]
mod tokio_host;

#[path = "common/mod.rs"]
mod common;

use base64::Engine;
use common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::*;
use switchyard_testserver::{Listen, OrcaLoad, ServerOptions, TestServer};
use tokio_host::Host;

const STREAM_CORE_METRICS: &str = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics";

// ------------------------------------------------------------ protobuf bits

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(tag: u32, wire: u32, out: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | wire), out);
}

fn double(tag: u32, v: f64, out: &mut Vec<u8>) {
    key(tag, 1, out);
    out.extend_from_slice(&v.to_le_bytes());
}

/// One `map<string, double>` entry of field `tag`.
fn entry(tag: u32, k: &str, v: f64, out: &mut Vec<u8>) {
    let mut e = Vec::new();
    key(1, 2, &mut e);
    varint(k.len() as u64, &mut e);
    e.extend_from_slice(k.as_bytes());
    double(2, v, &mut e);
    key(tag, 2, out);
    varint(e.len() as u64, out);
    out.extend_from_slice(&e);
}

/// An `OrcaLoadReport` with every field set (maps with several entries, a
/// map key and a scalar repeated: last one wins, as protobuf merges), and
/// the named metrics switchyard documents for it.
fn full_report() -> (Vec<u8>, Vec<(String, f64)>) {
    let mut b = Vec::new();
    double(1, 0.1, &mut b); // cpu_utilization, overwritten below
    double(1, 0.5, &mut b);
    double(2, 0.25, &mut b); // mem_utilization
    key(3, 0, &mut b); // rps (deprecated; not a metric in Java nor here)
    varint(7, &mut b);
    entry(4, "bytes", 3487.0, &mut b); // request_cost
    entry(4, "db_queries", 2.0, &mut b);
    entry(5, "gpu", 0.1, &mut b); // utilization, overwritten below
    entry(5, "gpu", 0.75, &mut b);
    entry(5, "disk", 0.0, &mut b); // a map entry of 0 is still an entry
    double(6, 120.5, &mut b); // rps_fractional
    double(7, 1.5, &mut b); // eps
    entry(8, "queue", 42.0, &mut b); // named_metrics
    entry(8, "neg", -3.25, &mut b);
    double(9, 0.625, &mut b); // application_utilization
    let want = [
        ("application_utilization", 0.625),
        ("cpu_utilization", 0.5),
        ("eps", 1.5),
        ("mem_utilization", 0.25),
        ("named_metrics.neg", -3.25),
        ("named_metrics.queue", 42.0),
        ("request_cost.bytes", 3487.0),
        ("request_cost.db_queries", 2.0),
        ("rps_fractional", 120.5),
        ("utilization.disk", 0.0),
        ("utilization.gpu", 0.75),
    ];
    (b, owned(&want))
}

fn owned(m: &[(&str, f64)]) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A report of cpu `cpu` at 100 qps.
fn cpu_report(cpu: f64) -> Vec<u8> {
    let mut b = Vec::new();
    double(1, cpu, &mut b);
    double(6, 100.0, &mut b);
    b
}

fn read_varint(b: &[u8], i: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let c = b[*i];
        *i += 1;
        v |= u64::from(c & 0x7f) << shift;
        if c & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// `OrcaLoadReportRequest.report_interval` out of a request's bytes; panics
/// on any other field (gRPC's clients send only this one).
fn request_interval(raw: &[u8]) -> Duration {
    let mut i = 0;
    let mut interval = None;
    while i < raw.len() {
        let k = read_varint(raw, &mut i);
        assert_eq!(k, 0x0a, "only report_interval expected: {raw:?}");
        let len = read_varint(raw, &mut i) as usize;
        let d = &raw[i..i + len];
        i += len;
        let (mut secs, mut nanos, mut j) = (0u64, 0u64, 0);
        while j < d.len() {
            match read_varint(d, &mut j) {
                0x08 => secs = read_varint(d, &mut j),
                0x10 => nanos = read_varint(d, &mut j),
                other => panic!("unexpected Duration field {other}"),
            }
        }
        interval = Some(Duration::new(secs, nanos as u32));
    }
    interval.expect("a report_interval")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ------------------------------------------------------- scripted backend

/// What one `StreamCoreMetrics` stream does.
#[derive(Clone, Debug)]
enum Oob {
    /// Trailers-only at once, with this grpc-status.
    Fail(u32),
    /// Response headers, then `first` (each payload one gRPC message),
    /// then, if `every` is set, the backend's current `report` every
    /// `every`; if `end` is set, trailers with that status after the given
    /// time; else open until the client ends it.
    Stream {
        first: Vec<Vec<u8>>,
        every: Option<Duration>,
        end: Option<(u32, Duration)>,
    },
}

/// One `StreamCoreMetrics` stream as the backend saw it.
#[derive(Clone, Debug)]
struct StreamRec {
    /// The connection it came on (1, 2, ...).
    conn: u64,
    /// The request message (gRPC framing removed).
    raw: Vec<u8>,
    opened: Instant,
    ended: Option<Instant>,
    /// The client ended it (RST_STREAM or the connection went).
    by_client: bool,
}

#[derive(Default)]
struct St {
    /// Stream `i`'s behaviour is `script[i]`, the last one repeating.
    script: Mutex<Vec<Oob>>,
    /// What `Oob::Stream { every }` sends.
    report: Mutex<Vec<u8>>,
    streams: Mutex<Vec<StreamRec>>,
    /// When each connection was accepted.
    conns: Mutex<Vec<Instant>>,
    echoes: AtomicU64,
    /// `endpoint-load-metrics-bin` values each echo's trailers carry.
    call_trailers: Mutex<Vec<String>>,
    /// `endpoint-load-metrics-bin` values each echo's response headers carry.
    call_headers: Mutex<Vec<String>>,
    /// Bumped to drop every connection at once (no GOAWAY).
    kill: Mutex<Option<tokio::sync::watch::Sender<u64>>>,
    /// Bumped to send a graceful GOAWAY on every connection (streams in
    /// flight may finish).
    goaway: Mutex<Option<tokio::sync::watch::Sender<u64>>>,
}

struct Backend {
    addr: SocketAddr,
    st: Arc<St>,
    /// Dropped last: the connections go with it.
    _host: Host,
}

impl Backend {
    fn start(script: Vec<Oob>) -> Backend {
        let st = Arc::new(St::default());
        *st.script.lock().unwrap() = script;
        let (kill_tx, kill_rx) = tokio::sync::watch::channel(0u64);
        *st.kill.lock().unwrap() = Some(kill_tx);
        let (goaway_tx, goaway_rx) = tokio::sync::watch::channel(0u64);
        *st.goaway.lock().unwrap() = Some(goaway_tx);
        let sh = st.clone();
        let host = Host::start(move |sock| {
            let port = sock.local_addr().unwrap().port();
            let n = {
                let mut c = sh.conns.lock().unwrap();
                c.push(Instant::now());
                c.len() as u64
            };
            serve_conn(
                sock,
                sh.clone(),
                port,
                n,
                kill_rx.clone(),
                goaway_rx.clone(),
            )
        });
        Backend {
            addr: host.addr,
            st,
            _host: host,
        }
    }

    fn target(&self) -> String {
        format!("ipv4:{}", self.addr)
    }

    fn streams(&self) -> Vec<StreamRec> {
        self.st.streams.lock().unwrap().clone()
    }

    fn n_streams(&self) -> usize {
        self.st.streams.lock().unwrap().len()
    }

    fn conns(&self) -> Vec<Instant> {
        self.st.conns.lock().unwrap().clone()
    }

    fn set_report(&self, r: Vec<u8>) {
        *self.st.report.lock().unwrap() = r;
    }

    fn goaway(&self) {
        if let Some(g) = self.st.goaway.lock().unwrap().as_ref() {
            g.send_modify(|v| *v += 1);
        }
    }

    fn kill_connections(&self) {
        if let Some(k) = self.st.kill.lock().unwrap().as_ref() {
            k.send_modify(|v| *v += 1);
        }
    }
}

fn grpc_frame(msg: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out.into()
}

fn grpc_headers() -> http::Response<()> {
    let mut r = http::Response::new(());
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    r
}

fn status_trailers(code: u32) -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", code.into());
    t
}

async fn serve_conn(
    sock: tokio::net::TcpStream,
    st: Arc<St>,
    port: u16,
    conn_no: u64,
    mut kill: tokio::sync::watch::Receiver<u64>,
    mut goaway: tokio::sync::watch::Receiver<u64>,
) {
    // Only kills from now on count.
    kill.borrow_and_update();
    goaway.borrow_and_update();
    let Ok(mut conn) = h2::server::handshake(sock).await else {
        return;
    };
    loop {
        tokio::select! {
            r = conn.accept() => match r {
                Some(Ok((req, respond))) => {
                    tokio::spawn(serve_stream(req, respond, st.clone(), port, conn_no));
                }
                _ => return,
            },
            r = kill.changed() => if r.is_ok() { return },
            r = goaway.changed() => if r.is_ok() { conn.graceful_shutdown() },
        }
    }
}

async fn serve_stream(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    st: Arc<St>,
    port: u16,
    conn_no: u64,
) {
    let (parts, mut body) = req.into_parts();
    let mut raw = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        raw.extend_from_slice(&chunk);
    }
    let msg = raw.get(5..).unwrap_or_default().to_vec();
    if parts.uri.path() == STREAM_CORE_METRICS {
        let (idx, oob) = {
            let mut s = st.streams.lock().unwrap();
            s.push(StreamRec {
                conn: conn_no,
                raw: msg,
                opened: Instant::now(),
                ended: None,
                by_client: false,
            });
            let script = st.script.lock().unwrap();
            let i = s.len() - 1;
            (i, script[i.min(script.len() - 1)].clone())
        };
        let finish = |by_client: bool| {
            let mut s = st.streams.lock().unwrap();
            s[idx].ended = Some(Instant::now());
            s[idx].by_client = by_client;
        };
        match oob {
            Oob::Fail(code) => {
                let mut r = grpc_headers();
                r.headers_mut().insert("grpc-status", code.into());
                let _ = respond.send_response(r, true);
                finish(false);
            }
            Oob::Stream { first, every, end } => {
                let Ok(mut stream) = respond.send_response(grpc_headers(), false) else {
                    return finish(true);
                };
                for m in first {
                    if stream.send_data(grpc_frame(&m), false).is_err() {
                        return finish(true);
                    }
                }
                let opened = Instant::now();
                let mut next_report = every.map(|_| Instant::now());
                loop {
                    if let Some((code, after)) = end {
                        if opened.elapsed() >= after {
                            let _ = stream.send_trailers(status_trailers(code));
                            return finish(false);
                        }
                    }
                    if let (Some(at), Some(every)) = (next_report, every) {
                        if Instant::now() >= at {
                            let r = st.report.lock().unwrap().clone();
                            if stream.send_data(grpc_frame(&r), false).is_err() {
                                return finish(true);
                            }
                            next_report = Some(at + every);
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                        _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => {
                            return finish(true);
                        }
                    }
                }
            }
        }
        return;
    }
    // Echo, with the scripted load values.
    st.echoes.fetch_add(1, Ordering::SeqCst);
    let mut resp = grpc_headers();
    for v in st.call_headers.lock().unwrap().iter() {
        resp.headers_mut().append(
            "endpoint-load-metrics-bin",
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let Ok(mut stream) = respond.send_response(resp, false) else {
        return;
    };
    let mut out = msg;
    out.extend_from_slice(format!("|port={port}").as_bytes());
    let _ = stream.send_data(grpc_frame(&out), false);
    let mut t = status_trailers(0);
    for v in st.call_trailers.lock().unwrap().iter() {
        t.append(
            "endpoint-load-metrics-bin",
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let _ = stream.send_trailers(t);
}

// ------------------------------------------------------------ listening policy

mod listening {
    use super::*;

    pub type Metrics = Vec<(String, f64)>;

    pub enum Cmd {
        Register(u32, Duration),
        Unregister(u32),
        /// Unregisters the tag's id but keeps it (to unregister it again).
        UnregisterKeep(u32),
        /// Shuts the subchannel down (its registrations left as they are).
        Shutdown,
    }

    /// What the test steers and what the policy heard.
    #[derive(Default)]
    pub struct Ctl {
        /// Listeners registered on the subchannel as soon as it is made,
        /// before it connects: (tag, period).
        pub initial: Vec<(u32, Duration)>,
        /// Every done hook's load, in order.
        pub loads: Mutex<Vec<Metrics>>,
        /// Every OOB report: (listener tag, metrics sorted by name).
        pub reports: Mutex<Vec<(u32, Metrics)>>,
        cmds: Mutex<Vec<Cmd>>,
        applied: AtomicU64,
        sched: Mutex<Option<WorkScheduler>>,
    }

    impl Ctl {
        /// Runs `cmd` on the loop and waits until it has.
        pub fn run(&self, cmd: Cmd) {
            let want = self.applied.load(Ordering::SeqCst) + 1;
            self.cmds.lock().unwrap().push(cmd);
            self.sched
                .lock()
                .unwrap()
                .as_ref()
                .expect("policy built")
                .schedule_work();
            wait_until("the command to run on the loop", || {
                self.applied.load(Ordering::SeqCst) >= want
            });
        }

        pub fn reports_of(&self, tag: u32) -> Vec<Metrics> {
            self.reports
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _)| *t == tag)
                .map(|(_, m)| m.clone())
                .collect()
        }
    }

    struct Listener(u32, Arc<Ctl>);
    impl LoadReportListener for Listener {
        fn on_load_report(&self, load: &[(&str, f64)]) {
            let mut m: Metrics = load.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            m.sort_by(|a, b| a.0.cmp(&b.0));
            self.1.reports.lock().unwrap().push((self.0, m));
        }
    }

    struct Hook(Arc<Ctl>);
    impl DoneHook for Hook {
        fn done(&self, _: &SubConn, info: &DoneInfo<'_>) {
            let mut m: Metrics = info.load.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            m.sort_by(|a, b| a.0.cmp(&b.0));
            self.0.loads.lock().unwrap().push(m);
        }
    }

    struct Ready {
        sc: Arc<SubConn>,
        hook: Hook,
    }
    impl Picker for Ready {
        fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
            PickResult::Complete {
                subconn: &self.sc,
                done: DoneHooks::one(&self.hook),
            }
        }
    }

    struct Queue;
    impl Picker for Queue {
        fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
            PickResult::Queue
        }
    }

    struct Policy {
        ctl: Arc<Ctl>,
        sc: Option<Arc<SubConn>>,
        ids: BTreeMap<u32, OobListenerId>,
        dead: bool,
    }

    impl Policy {
        fn register(&mut self, cc: &mut dyn ClientConn, tag: u32, period: Duration) {
            let sc = self.sc.as_ref().unwrap().id();
            let id =
                cc.register_oob_listener(sc, period, Arc::new(Listener(tag, self.ctl.clone())));
            self.ids.insert(tag, id);
        }
    }

    impl Balancer for Policy {
        fn update_client_conn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            s: ClientConnState,
        ) -> Result<(), String> {
            *self.ctl.sched.lock().unwrap() = Some(cc.work_scheduler());
            if self.sc.is_none() {
                let sc = cc.new_subconn(s.addresses[0].clone())?;
                self.sc = Some(sc.clone());
                for (tag, period) in self.ctl.initial.clone() {
                    self.register(cc, tag, period);
                }
                cc.connect(sc.id());
                cc.update_state(ConnectivityState::Connecting, Box::new(Queue));
            }
            Ok(())
        }
        fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
        fn update_subconn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            id: SubConnId,
            s: &SubConnState,
        ) {
            let Some(sc) = self.sc.clone() else { return };
            if self.dead {
                return;
            }
            match s.state {
                ConnectivityState::Ready => cc.update_state(
                    ConnectivityState::Ready,
                    Box::new(Ready {
                        sc,
                        hook: Hook(self.ctl.clone()),
                    }),
                ),
                ConnectivityState::Idle => {
                    cc.connect(id);
                    cc.update_state(ConnectivityState::Connecting, Box::new(Queue));
                }
                other => cc.update_state(other, Box::new(Queue)),
            }
        }
        fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
        fn work(&mut self, cc: &mut dyn ClientConn) {
            let cmds: Vec<Cmd> = std::mem::take(&mut *self.ctl.cmds.lock().unwrap());
            for c in cmds {
                match c {
                    Cmd::Register(tag, p) => self.register(cc, tag, p),
                    Cmd::Unregister(tag) => {
                        if let Some(id) = self.ids.remove(&tag) {
                            cc.unregister_oob_listener(id);
                        }
                    }
                    Cmd::UnregisterKeep(tag) => {
                        if let Some(id) = self.ids.get(&tag) {
                            cc.unregister_oob_listener(*id);
                        }
                    }
                    Cmd::Shutdown => {
                        self.dead = true;
                        let id = self.sc.as_ref().unwrap().id();
                        cc.shutdown_subconn(id);
                        cc.update_state(ConnectivityState::TransientFailure, Box::new(Queue));
                    }
                }
                self.ctl.applied.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn close(&mut self, _: &mut dyn ClientConn) {}
    }

    struct Build(Arc<Ctl>, String);
    impl Builder for Build {
        fn name(&self) -> &str {
            &self.1
        }
        fn build(&self) -> Box<dyn Balancer> {
            Box::new(Policy {
                ctl: self.0.clone(),
                sc: None,
                ids: BTreeMap::new(),
                dead: false,
            })
        }
    }

    /// A channel to `target` under a fresh listening policy with `initial`
    /// listeners, connecting at once.
    pub fn channel(
        rt: &Runtime,
        target: &str,
        initial: &[(u32, Duration)],
        opts: ChannelOptions,
    ) -> (Channel, Arc<Ctl>) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("go_orca_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let ctl = Arc::new(Ctl {
            initial: initial.to_vec(),
            ..Default::default()
        });
        registry::register(Arc::new(Build(ctl.clone(), name.clone())));
        let config = format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]}}"#);
        let ch = super::channel(rt, target, Some(&config), opts);
        (ch, ctl)
    }
}

use listening::Cmd::{Register, Shutdown, Unregister, UnregisterKeep};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs_f(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A backend whose every stream sends its current report every 20 ms.
fn reporting() -> Backend {
    let b = Backend::start(vec![Oob::Stream {
        first: vec![],
        every: Some(ms(20)),
        end: None,
    }]);
    b.set_report(cpu_report(0.5));
    b
}

/// A backend whose streams send nothing and stay open.
fn silent() -> Backend {
    Backend::start(vec![Oob::Stream {
        first: vec![],
        every: None,
        end: None,
    }])
}

/// Sleeps `d`, then asserts the backend still saw exactly `n` streams.
fn still(b: &Backend, n: usize, d: Duration, what: &str) {
    std::thread::sleep(d);
    assert_eq!(b.n_streams(), n, "{what}: {:#?}", b.streams());
}

// ================================================================ tests

/// gRPC-Go `acBalancerWrapper.Shutdown` → `closeProducers` (the ORCA
/// producer's close cancels its run, so its stream); gRFC A51 (the OOB
/// stream lives on the subchannel): a subchannel shut down with its
/// listener still registered cancels its stream, no report reaches the
/// listener after that, nothing is retried; unregistering the dead
/// registration later, and registering another on the dead subchannel,
/// open nothing and break nothing.
#[test]
fn the_stream_asks_for_the_smallest_period_and_restarts_only_when_it_changes() {
    let b = silent();
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    still(&b, 0, ms(300), "READY without a listener opens nothing");

    ctl.run(Register(1, secs_f(3.0)));
    wait_until("the first stream", || b.n_streams() == 1);
    assert_eq!(request_interval(&b.streams()[0].raw), secs_f(3.0));
    ctl.run(Register(2, secs_f(1.5)));
    wait_until("a stream asking for 1.5 s", || b.n_streams() == 2);
    let s = b.streams();
    assert_eq!(request_interval(&s[1].raw), secs_f(1.5));
    // Exactly report_interval { seconds: 1, nanos: 500000000 }, no
    // request_cost_names.
    let mut want = vec![0x0a, 0x07, 0x08, 0x01, 0x10];
    varint(500_000_000, &mut want);
    want[1] = (want.len() - 2) as u8;
    assert_eq!(s[1].raw, want);
    wait_until("the 3 s stream cancelled", || b.streams()[0].by_client);

    // 2 s: not a new minimum, nothing changes.
    ctl.run(Register(3, secs_f(2.0)));
    still(&b, 2, ms(300), "a larger period restarted the stream");
    assert!(b.streams()[1].ended.is_none());
    // Removing a listener that is not the minimum changes nothing either.
    ctl.run(Unregister(1));
    still(
        &b,
        2,
        ms(300),
        "removing the 3 s listener restarted the stream",
    );
    // 1 s: a new minimum.
    ctl.run(Register(4, secs_f(1.0)));
    wait_until("a stream asking for 1 s", || b.n_streams() == 3);
    assert_eq!(request_interval(&b.streams()[2].raw), secs_f(1.0));
    // The minimum goes: the next smallest (1.5 s) is asked for.
    ctl.run(Unregister(4));
    wait_until("a stream asking for 1.5 s again", || b.n_streams() == 4);
    assert_eq!(request_interval(&b.streams()[3].raw), secs_f(1.5));
    ctl.run(Unregister(2));
    wait_until("a stream asking for 2 s", || b.n_streams() == 5);
    assert_eq!(request_interval(&b.streams()[4].raw), secs_f(2.0));
    // The last one goes: the stream is cancelled, nothing follows.
    ctl.run(Unregister(3));
    wait_until("the last stream cancelled", || b.streams()[4].by_client);
    still(&b, 5, ms(1500), "a stream after the last listener left");
    let s = b.streams();
    assert!(s.iter().all(|r| r.by_client && r.conn == 1), "{s:#?}");
    // The calls never stopped.
    echo(&mut ch.reader(), true).unwrap();
}

/// OrcaOobUtilTest `policiesReceiveSameReportIndependently`; gRPC-Go
/// `TestProducerMultipleListeners`: every listener on the subchannel gets
/// every report, the same metrics, over the one stream.
#[test]
fn every_listener_gets_every_report_over_one_stream() {
    let b = reporting();
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(1.0))], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("listener 1's reports", || ctl.reports_of(1).len() >= 2);
    ctl.run(Register(2, secs_f(5.0)));
    let before = ctl.reports_of(1).len();
    let mark = ctl.reports.lock().unwrap().len();
    wait_until("listener 2's reports", || ctl.reports_of(2).len() >= 3);
    let want = owned(&[("cpu_utilization", 0.5), ("rps_fractional", 100.0)]);
    assert!(ctl.reports_of(2).iter().all(|m| *m == want));
    assert!(ctl.reports_of(1).iter().all(|m| *m == want));
    assert!(ctl.reports_of(1).len() >= before + 2);
    // One stream all along (the 5 s listener is no new minimum).
    assert_eq!(b.n_streams(), 1);
    // They interleave: each report went to both, one after the other.
    let all = ctl.reports.lock().unwrap().clone();
    let after: Vec<u32> = all[mark..].iter().map(|(t, _)| *t).collect();
    let ones = after.iter().filter(|t| **t == 1).count();
    let twos = after.len() - ones;
    assert!(ones.abs_diff(twos) <= 1, "{after:?}");
}

/// OrcaOobUtilTest `updateReportingIntervalWhenRpcPendingRetry`: a new
/// period while a retry waits cancels the retry and opens the stream at
/// once with the new period (gRPC-Go: `updateRunLocked` stops the run and
/// starts another).
#[test]
fn a_new_period_while_a_retry_waits_opens_the_stream_at_once() {
    let b = Backend::start(vec![
        Oob::Fail(14),
        Oob::Stream {
            first: vec![],
            every: None,
            end: None,
        },
    ]);
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(2.0))], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the first (failed) stream", || {
        b.streams().first().is_some_and(|s| s.ended.is_some())
    });
    // The retry is 1 s away: a new minimum now.
    ctl.run(Register(2, secs_f(0.5)));
    let asked = Instant::now();
    wait_until("the second stream", || b.n_streams() == 2);
    let s = b.streams();
    assert!(
        s[1].opened.saturating_duration_since(asked) < ms(500),
        "opened {:?} after the new period (the retry was cancelled?)",
        s[1].opened.saturating_duration_since(asked)
    );
    assert_eq!(request_interval(&s[1].raw), secs_f(0.5));
    // And the old retry does not open a third one later.
    still(&b, 2, ms(1500), "the cancelled retry still fired");
}

// ========================================================= failures, backoff

/// OrcaOobUtilTest `orcaReportingStreamClosedAndRetried` (gRPC-Go
/// `TestProducerBackoff`): a stream that ends without a report (OK or not)
/// is retried after the backoff, which grows (1 s, then 1.6 s ± 20 %); one
/// that delivered a report is retried at once and the backoff starts over
/// (the next failure waits 1 s again, not 2.56 s).
#[test]
fn backoff_grows_without_reports_and_starts_over_after_one() {
    let report = cpu_report(0.25);
    let b = Backend::start(vec![
        // Closed without a response, status OK.
        Oob::Stream {
            first: vec![],
            every: None,
            end: Some((0, Duration::ZERO)),
        },
        Oob::Fail(14),
        // A report, then UNAVAILABLE.
        Oob::Stream {
            first: vec![report],
            every: None,
            end: Some((14, ms(20))),
        },
        Oob::Fail(14),
        Oob::Stream {
            first: vec![],
            every: None,
            end: None,
        },
    ]);
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(1.0))], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("five streams", || b.n_streams() == 5);
    let s = b.streams();
    let gap = |i: usize| s[i + 1].opened - s[i].ended.unwrap();
    let gaps: Vec<Duration> = (0..4).map(gap).collect();
    assert!(
        (ms(900)..ms(1500)).contains(&gaps[0]),
        "first backoff: {gaps:?}"
    );
    assert!(
        (ms(1200)..ms(2300)).contains(&gaps[1]),
        "second backoff (1.6 s ± 20 %): {gaps:?}"
    );
    assert!(gaps[2] < ms(300), "after a report, at once: {gaps:?}");
    assert!(
        (ms(900)..ms(1900)).contains(&gaps[3]),
        "after a report the backoff starts over at 1 s, not 2.56 s: {gaps:?}"
    );
    assert_eq!(
        ctl.reports_of(1),
        vec![owned(&[
            ("cpu_utilization", 0.25),
            ("rps_fractional", 100.0)
        ])]
    );
    assert!(s.iter().all(|r| r.conn == 1));
}

/// gRPC-Go `producer.updateRunLocked`: a new minimum period stops the
/// producer's run and starts another (`go p.run`), whose
/// `backoff.RunF` counts attempts from 0: after two failures (1 s, then
/// 1.6 s waited), a new period opens a stream at once and, when that one
/// fails too, the next waits the *first* backoff, 1 s. (grpc-java keeps its
/// `backoffPolicy` across `setReportingConfig` and would wait the third,
/// 2.56 s ± 20 %: the two disagree.)
#[test]
fn a_new_period_starts_the_backoff_over_as_grpc_go_does() {
    let b = Backend::start(vec![Oob::Fail(14)]);
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(2.0))], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("two failed streams", || b.n_streams() == 2);
    ctl.run(Register(2, secs_f(1.0)));
    wait_until("the new period's stream", || b.n_streams() == 3);
    let deadline = Instant::now() + Duration::from_secs(4);
    while b.n_streams() < 4 && Instant::now() < deadline {
        std::thread::sleep(ms(10));
    }
    let s = b.streams();
    assert_eq!(request_interval(&s[2].raw), secs_f(1.0));
    assert!(s.len() >= 4, "no retry within 4 s: {s:#?}");
    let gap = s[3].opened - s[2].ended.unwrap();
    assert!(
        gap < ms(1700),
        "the new run's first retry waited {gap:?} (gRPC-Go: 1 s, a fresh backoff)"
    );
}

/// OrcaOobUtilTest `orcReportingDisabledWhenServiceNotImplemented`; gRPC-Go
/// `producer.run` (Unimplemented: `return err`, no retry): UNIMPLEMENTED
/// stops reporting on the connection even after the stream delivered
/// reports (which would otherwise make the retry immediate); the reports it
/// delivered count.
#[test]
fn unimplemented_after_reports_stops_for_the_connection() {
    let b = Backend::start(vec![Oob::Stream {
        first: vec![cpu_report(0.75)],
        every: None,
        end: Some((12, ms(50))),
    }]);
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(1.0))], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the stream ended", || {
        b.streams().first().is_some_and(|s| s.ended.is_some())
    });
    still(&b, 1, ms(1500), "a stream after UNIMPLEMENTED");
    assert_eq!(ctl.reports_of(1).len(), 1);
    echo(&mut ch.reader(), true).unwrap();
}

/// A report that does not parse fails the stream like any error (grpc-java:
/// the message fails to parse, the call closes INTERNAL, `callHasResponded`
/// still false: backoff; gRPC-Go: `Recv` fails, `resetBackoff` false):
/// nothing reaches the listener, the client ends the stream and the next
/// one waits the backoff; after a good report first, the retry is at once.
#[test]
fn a_malformed_oob_report_ends_the_stream_and_is_retried_on_the_backoff() {
    // A truncated double (cpu_utilization).
    let garbage = vec![0x09, 0x00, 0x00];
    let b = Backend::start(vec![
        Oob::Stream {
            first: vec![garbage.clone()],
            every: None,
            end: None,
        },
        Oob::Stream {
            first: vec![cpu_report(0.5), garbage],
            every: None,
            end: None,
        },
        Oob::Stream {
            first: vec![],
            every: None,
            end: None,
        },
    ]);
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(1.0))], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("three streams", || b.n_streams() == 3);
    let s = b.streams();
    assert!(s[0].by_client && s[1].by_client, "{s:#?}");
    let g0 = s[1].opened - s[0].ended.unwrap();
    let g1 = s[2].opened - s[1].ended.unwrap();
    assert!(g0 >= ms(700), "no report: the backoff ({g0:?})");
    assert!(g1 < ms(300), "a report first: at once ({g1:?})");
    assert_eq!(ctl.reports_of(1).len(), 1, "only the good report");
    assert_eq!(echo(&mut ch.reader(), true).unwrap(), b.addr.port());
}

// ============================================================ connections

/// OrcaOobUtilTest (`adjustOrcaReporting` on state changes): the stream
/// lives with the connection: when it goes the stream goes, when the
/// subchannel is READY again on a new connection a new stream opens at
/// once and reports reach the listener again; one stream per connection.
#[test]
fn a_new_connection_gets_a_new_stream_at_once() {
    let b = reporting();
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(
        &rt,
        &b.target(),
        &[(1, secs_f(1.0))],
        plaintext_fast_backoff(),
    );
    let mut r = ch.reader();
    echo(&mut r, true).unwrap();
    wait_until("reports", || !ctl.reports_of(1).is_empty());
    b.kill_connections();
    wait_until("a second connection", || b.conns().len() == 2);
    wait_until("a second stream", || b.n_streams() == 2);
    let s = b.streams();
    assert_eq!((s[0].conn, s[1].conn), (1, 2));
    let after_conn = s[1].opened - b.conns()[1];
    assert!(
        after_conn < ms(500),
        "opened {after_conn:?} after connecting"
    );
    b.set_report(cpu_report(0.125));
    wait_until("the new stream's reports", || {
        ctl.reports_of(1)
            .last()
            .is_some_and(|m| m[0] == ("cpu_utilization".to_string(), 0.125))
    });
    still(&b, 2, ms(300), "more than one stream on the connection");
    echo(&mut r, true).unwrap();
}

/// OrcaOobUtilTest: leaving READY stops the stream and cancels a pending
/// retry (`adjustOrcaReporting`: `stopRpc`, `backoffPolicy = null`); READY
/// again starts one at once. A stream failed, its retry is 1 s away, the
/// connection drops: the new connection's stream opens at once, and the
/// old retry never opens another.
#[test]
fn a_lost_connection_cancels_the_pending_retry() {
    let b = Backend::start(vec![
        Oob::Fail(14),
        Oob::Stream {
            first: vec![],
            every: None,
            end: None,
        },
    ]);
    let rt = Runtime::new().unwrap();
    let (ch, _ctl) = listening::channel(
        &rt,
        &b.target(),
        &[(1, secs_f(1.0))],
        plaintext_fast_backoff(),
    );
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the failed stream", || b.n_streams() == 1);
    b.kill_connections();
    wait_until("a second connection", || b.conns().len() == 2);
    wait_until("a second stream", || b.n_streams() == 2);
    let s = b.streams();
    assert_eq!(s[1].conn, 2);
    let after_conn = s[1].opened - b.conns()[1];
    assert!(
        after_conn < ms(500),
        "opened {after_conn:?} after connecting"
    );
    still(&b, 2, ms(1500), "the old retry opened another stream");
    assert_eq!(b.conns().len(), 2);
}

// ================================================================ mapping

/// OrcaPerRequestUtil.fromOrcaLoadReport (cpu, application, mem, qps =
/// rps_fractional, eps, request_cost, utilization, named_metrics) for the
/// out-of-band reports: every field of the report reaches the listener
/// under switchyard's documented names; an empty report (grpc-java's
/// `OrcaLoadReport.getDefaultInstance()`) is a report too, with no metrics.
#[test]
fn an_oob_report_maps_every_field_to_named_metrics() {
    let (full, want) = full_report();
    let b = Backend::start(vec![Oob::Stream {
        first: vec![full, Vec::new()],
        every: None,
        end: None,
    }]);
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(1.0))], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("two reports", || ctl.reports_of(1).len() == 2);
    let got = ctl.reports_of(1);
    assert_eq!(got[0], want);
    assert_eq!(got[1], Vec::new());
}

/// The same report per call: the `endpoint-load-metrics-bin` trailer's
/// fields are the done hook's named metrics (grpc-java's tracer
/// `inboundTrailers` → `fromOrcaLoadReport`; gRPC-Go's
/// `DoneInfo.ServerLoad`); no trailer, no metrics.
#[test]
fn a_per_call_report_maps_every_field_to_the_done_hooks_named_metrics() {
    let (full, want) = full_report();
    let b = silent();
    *b.st.call_trailers.lock().unwrap() = vec![b64(&full)];
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[], plaintext());
    let mut r = ch.reader();
    echo(&mut r, true).unwrap();
    b.st.call_trailers.lock().unwrap().clear();
    echo(&mut r, true).unwrap();
    wait_until("two done hooks", || ctl.loads.lock().unwrap().len() == 2);
    let loads = ctl.loads.lock().unwrap().clone();
    assert_eq!(loads[0], want);
    assert_eq!(loads[1], Vec::new());
}

/// gRPC-Go `orca.ToLoadReport` (`proto.Unmarshal` fails: an error, the
/// report dropped), grpc-java (a trailer whose message does not parse is no
/// report): a `endpoint-load-metrics-bin` that is valid base64 but not an
/// `OrcaLoadReport` never fails the call that carries it; the done hook
/// gets no metrics. A report in the response *headers* is no per-call
/// report either (gRPC-Go parses `Trailer()`, grpc-java `inboundTrailers`).
#[test]
fn malformed_per_call_reports_are_ignored_and_the_call_succeeds() {
    let b = silent();
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[], plaintext());
    let mut r = ch.reader();
    echo(&mut r, true).unwrap();
    ctl.loads.lock().unwrap().clear();
    let bad = [
        // A truncated double.
        b64(&[0x09, 0x00, 0x00]),
        // A length-delimited field running past the end.
        b64(&[0x22, 0x10, 0x0a]),
        // A field number 0.
        b64(&[0x01, 0x00]),
        // A map entry whose value is truncated.
        b64(&[0x42, 0x05, 0x0a, 0x01, b'a', 0x11, 0x00]),
    ];
    for v in &bad {
        *b.st.call_trailers.lock().unwrap() = vec![v.clone()];
        assert_eq!(echo(&mut r, false).unwrap(), b.addr.port(), "{v}");
    }
    b.st.call_trailers.lock().unwrap().clear();
    *b.st.call_headers.lock().unwrap() = vec![b64(&cpu_report(0.5))];
    assert_eq!(echo(&mut r, false).unwrap(), b.addr.port());
    wait_until("the done hooks", || {
        ctl.loads.lock().unwrap().len() == bad.len() + 1
    });
    let loads = ctl.loads.lock().unwrap().clone();
    assert!(loads.iter().all(Vec::is_empty), "{loads:?}");
}

/// Not base64 at all is another matter, in gRPC as here: gRPC-Go's
/// transport fails the call INTERNAL for any `-bin` header it cannot
/// decode (`internal/transport/http2_client.go` `operateHeaders`:
/// `headerError = "transport: malformed %s: %v"`), before ORCA sees it;
/// grpc-java's `TransportFrameUtil.toRawSerializedHeaders` throws on it
/// (`BaseEncoding.base64().decode`). The done hook hears the failure.
#[test]
fn a_load_trailer_that_is_not_base64_fails_the_call_internal_as_in_grpc_go() {
    let b = silent();
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[], plaintext());
    let mut r = ch.reader();
    echo(&mut r, true).unwrap();
    *b.st.call_trailers.lock().unwrap() = vec!["%%%not-base64%%%".to_string()];
    let e = echo(&mut r, false).unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(
        e.message().contains("malformed endpoint-load-metrics-bin"),
        "{e:?}"
    );
    wait_until("the done hooks", || ctl.loads.lock().unwrap().len() == 2);
    assert!(ctl.loads.lock().unwrap()[1].is_empty());
}

/// Protobuf parsers (protobuf-go `consumeFloat64` → `errUnknown`;
/// protobuf-java's generated `switch (tag)` → `parseUnknownField`; C++
/// likewise) treat a known field number arriving with another wire type as
/// an unknown field and keep the rest of the message. So gRPC-Go's
/// `ToLoadReport` and grpc-java's trailer parsing keep the report below
/// (cpu_utilization sent as a varint, then application_utilization and
/// rps_fractional as doubles): application_utilization 0.5 at 100 qps.
#[test]
fn a_known_field_with_another_wire_type_is_skipped_not_the_whole_report() {
    let mut report = Vec::new();
    key(1, 0, &mut report); // cpu_utilization as a varint
    varint(1, &mut report);
    double(9, 0.5, &mut report);
    double(6, 100.0, &mut report);
    let b = silent();
    *b.st.call_trailers.lock().unwrap() = vec![b64(&report)];
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the done hook", || ctl.loads.lock().unwrap().len() == 1);
    assert_eq!(
        ctl.loads.lock().unwrap()[0],
        owned(&[("application_utilization", 0.5), ("rps_fractional", 100.0)])
    );
}

/// The same report out of band: gRPC-Go's `stream.Recv` decodes it (the
/// mismatched field kept as unknown) and hands it to the listeners; the
/// stream goes on.
#[test]
fn an_oob_report_with_a_field_of_another_wire_type_is_delivered() {
    let mut report = Vec::new();
    key(1, 0, &mut report);
    varint(1, &mut report);
    double(9, 0.5, &mut report);
    double(6, 100.0, &mut report);
    let b = Backend::start(vec![Oob::Stream {
        first: vec![report],
        every: None,
        end: None,
    }]);
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(1.0))], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while ctl.reports_of(1).is_empty() && Instant::now() < deadline {
        std::thread::sleep(ms(20));
    }
    assert_eq!(
        ctl.reports_of(1),
        vec![owned(&[
            ("application_utilization", 0.5),
            ("rps_fractional", 100.0)
        ])],
        "streams: {:#?}",
        b.streams()
    );
    assert_eq!(b.n_streams(), 1, "the stream was ended and reopened");
}

// ============================================== weighted_round_robin + OOB

/// gRFC A58 / gRPC-Go's WRR (`if !cfg.EnableOOBLoadReport` around the
/// per-call `Done`) / grpc-java's WRR (OOB listener *or* per-request
/// tracer): with OOB on, per-call reports are ignored, even when the
/// backends have no ORCA service (UNIMPLEMENTED, so no OOB weight ever):
/// the trailers that would weigh 1:9 leave an even split. Control: the
/// same backends with OOB off split about 1:9.
#[test]
fn per_call_reports_are_ignored_with_oob_on_even_without_an_orca_service() {
    let opts = ServerOptions {
        no_orca: true,
        ..Default::default()
    };
    let servers: Vec<TestServer> = (0..2)
        .map(|_| {
            TestServer::start(Listen::Tcp("127.0.0.1:0".parse().unwrap()), opts.clone()).unwrap()
        })
        .collect();
    for (s, util) in servers.iter().zip([0.9, 0.1]) {
        s.set_call_load(Some(OrcaLoad {
            application_utilization: util,
            rps_fractional: 100.0,
            ..Default::default()
        }));
    }
    let target = format!("ipv4:{},{}", servers[0].addr(), servers[1].addr());
    let wrr = |oob: bool| {
        format!(
            r#"{{"loadBalancingConfig":[{{"weighted_round_robin":{{
            "enableOobLoadReport":{oob},"oobReportingPeriod":"0.05s",
            "blackoutPeriod":"0s","weightUpdatePeriod":"0.1s"}}}}]}}"#
        )
    };
    let rt = Runtime::new().unwrap();
    let share_of_1 = |oob: bool| {
        let ch = channel(&rt, &target, Some(&wrr(oob)), plaintext());
        let mut r = ch.reader();
        warm_up(&mut r, 2);
        let mut last = 0.0;
        for _ in 0..6 {
            for _ in 0..100 {
                echo(&mut r, true).unwrap();
            }
            std::thread::sleep(ms(150));
            let per = split(&mut r, 200);
            last = *per.get(&servers[1].port()).unwrap_or(&0) as f64 / 200.0;
        }
        last
    };
    let on = share_of_1(true);
    assert!((0.45..=0.55).contains(&on), "OOB on: backend 1 took {on}");
    let off = share_of_1(false);
    assert!(off >= 0.8, "OOB off (control): backend 1 took {off}");
}

// ------------------------------------------------ gRPC-Go, second port

#[test]
fn shutting_down_the_subchannel_closes_its_stream_for_good() {
    let b = reporting();
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(1.0))], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("listener 1's reports", || ctl.reports_of(1).len() >= 2);
    ctl.run(Shutdown);
    let heard = ctl.reports_of(1).len();
    wait_until("the stream cancelled by the client", || {
        b.streams()[0].ended.is_some()
    });
    assert!(b.streams()[0].by_client, "{:#?}", b.streams());
    still(&b, 1, ms(1500), "a stream after the subchannel's shutdown");
    assert_eq!(
        ctl.reports_of(1).len(),
        heard,
        "reports after the subchannel's shutdown"
    );
    ctl.run(UnregisterKeep(1));
    ctl.run(Register(2, secs_f(0.5)));
    still(&b, 1, ms(500), "a registration on a shut-down subchannel");
    assert!(ctl.reports_of(2).is_empty());
    ctl.run(Unregister(2));
    drop(ch);
}

/// gRPC-Go `ClientConn.Close` shuts every SubConn down (producers closed):
/// closing the channel cancels the ORCA stream.
#[test]
fn closing_the_channel_cancels_the_stream() {
    let b = silent();
    let rt = Runtime::new().unwrap();
    let (ch, _ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(1.0))], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the stream", || b.n_streams() == 1);
    ch.close();
    wait_until("the stream ended", || b.streams()[0].ended.is_some());
    assert!(b.streams()[0].by_client);
    still(&b, 1, ms(300), "a stream after close");
}

/// gRPC-Go `producer.unregisterListener` (`intervals` is a count per
/// period: the minimum changes only when the last listener asking for it
/// goes) and `RegisterOOBListener`'s `sync.OnceFunc` stop (a second stop
/// has no effect): two listeners at 1 s and one at 2 s; one 1 s listener
/// goes: same stream, it hears nothing more, the others go on; its stop
/// again changes nothing; the other 1 s listener goes: the stream restarts
/// asking for 2 s and the 2 s listener keeps hearing reports.
#[test]
fn a_shared_minimum_period_survives_one_of_its_listeners_and_stop_is_idempotent() {
    let b = reporting();
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(
        &rt,
        &b.target(),
        &[(1, secs_f(1.0)), (2, secs_f(1.0)), (3, secs_f(2.0))],
        plaintext(),
    );
    echo(&mut ch.reader(), true).unwrap();
    wait_until("every listener's reports", || {
        (1..=3).all(|t| ctl.reports_of(t).len() >= 2)
    });
    assert_eq!(b.n_streams(), 1);
    assert_eq!(request_interval(&b.streams()[0].raw), secs_f(1.0));

    ctl.run(UnregisterKeep(1));
    let heard = ctl.reports_of(1).len();
    let (two, three) = (ctl.reports_of(2).len(), ctl.reports_of(3).len());
    still(
        &b,
        1,
        ms(400),
        "removing one of two 1 s listeners restarted",
    );
    assert_eq!(
        ctl.reports_of(1).len(),
        heard,
        "a removed listener heard more"
    );
    assert!(ctl.reports_of(2).len() >= two + 3);
    assert!(ctl.reports_of(3).len() >= three + 3);

    ctl.run(UnregisterKeep(1));
    still(
        &b,
        1,
        ms(300),
        "a second stop of the same listener restarted",
    );
    assert!(b.streams()[0].ended.is_none());

    ctl.run(Unregister(2));
    wait_until("a stream asking for 2 s", || b.n_streams() == 2);
    assert_eq!(request_interval(&b.streams()[1].raw), secs_f(2.0));
    let three = ctl.reports_of(3).len();
    wait_until("listener 3 on the new stream", || {
        ctl.reports_of(3).len() >= three + 3
    });
    assert_eq!(ctl.reports_of(1).len(), heard);
}

/// gRPC-Go `runStream`: `ReportInterval: durationpb.New(interval)` is
/// always set, so a listener asking for 0 sends `report_interval {}` (bytes
/// 0a 00), which the server clamps to its minimum (A51: the server's
/// minimum applies); the listener gets reports.
#[test]
fn a_zero_period_is_sent_as_an_empty_duration() {
    let b = reporting();
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[(1, Duration::ZERO)], plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the stream", || b.n_streams() == 1);
    assert_eq!(b.streams()[0].raw, vec![0x0a, 0x00]);
    wait_until("reports", || ctl.reports_of(1).len() >= 2);
}

/// gRPC-Go `orca/orca_test.go` `TestToLoadReport` "multiple load reports"
/// (`ToLoadReport`: error, so `balancerload.Parse` gives no `ServerLoad`,
/// and WRR's `Done` sees none): a call whose trailers carry two
/// `endpoint-load-metrics-bin` values has no load report; the call
/// succeeds. Control: one value is a report. (grpc-java reads
/// `Metadata.get`, the last value: it would take 0.7; implementations
/// disagree.)
#[test]
fn two_per_call_load_reports_are_no_report() {
    let b = silent();
    let rt = Runtime::new().unwrap();
    let (ch, ctl) = listening::channel(&rt, &b.target(), &[], plaintext());
    let mut r = ch.reader();
    *b.st.call_trailers.lock().unwrap() = vec![b64(&cpu_report(0.5))];
    echo(&mut r, true).unwrap();
    wait_until("the done hook", || ctl.loads.lock().unwrap().len() == 1);
    assert_eq!(
        ctl.loads.lock().unwrap()[0],
        owned(&[("cpu_utilization", 0.5), ("rps_fractional", 100.0)])
    );
    *b.st.call_trailers.lock().unwrap() = vec![b64(&cpu_report(0.5)), b64(&cpu_report(0.7))];
    echo(&mut r, true).unwrap();
    wait_until("the done hook", || ctl.loads.lock().unwrap().len() == 2);
    assert_eq!(ctl.loads.lock().unwrap()[1], vec![]);
}

/// gRFC A51: "When the client subchannel is shutting down or when the
/// backend sends a `GOAWAY`, the client will cancel the
/// `StreamCoreMetrics` call" (gRPC-Go: the GOAWAY moves the SubConn out
/// of READY, and `updateState` → `closeProducers` cancels the stream). The
/// backend sends a graceful GOAWAY and leaves the open ORCA stream alone:
/// the client cancels it (so the old connection can drain), and the next
/// connection gets a stream of its own.
#[test]
fn a_graceful_goaway_cancels_the_stream_and_the_next_connection_opens_one() {
    let b = silent();
    let rt = Runtime::new().unwrap();
    let (ch, _ctl) = listening::channel(&rt, &b.target(), &[(1, secs_f(1.0))], plaintext());
    let mut r = ch.reader();
    echo(&mut r, true).unwrap();
    wait_until("the stream", || b.n_streams() == 1);
    b.goaway();
    wait_until("the stream on the GOAWAY'd connection ended", || {
        b.streams()[0].ended.is_some()
    });
    assert!(b.streams()[0].by_client, "{:#?}", b.streams());
    wait_until("a stream on the next connection", || {
        let _ = echo(&mut r, true);
        b.n_streams() == 2
    });
    let s = b.streams();
    assert_eq!((s[0].conn, s[1].conn), (1, 2), "{s:#?}");
    assert_eq!(request_interval(&s[1].raw), secs_f(1.0));
}

// ------------------------------------------- a parent over round_robin

/// gRPC-Go `producer_test.go`'s `customLB`: round_robin wrapped by a
/// policy whose `ClientConn` wrapper registers an OOB listener on every
/// subchannel round_robin makes (`ccWrapper.NewSubConn`), round_robin
/// knowing nothing of it (gRFC A51: "it should be possible for a non-leaf
/// LB policy to subscribe to out-of-band reports from a child policy like
/// `round_robin`").
mod wrapping {
    use super::*;

    pub struct Heard(pub Mutex<Vec<f64>>);
    impl LoadReportListener for Heard {
        fn on_load_report(&self, load: &[(&str, f64)]) {
            for (k, v) in load {
                if *k == "cpu_utilization" {
                    self.0.lock().unwrap().push(*v);
                }
            }
        }
    }

    struct Wrap<'a> {
        cc: &'a mut dyn ClientConn,
        heard: Arc<Heard>,
    }

    impl ClientConn for Wrap<'_> {
        fn new_subconn(&mut self, address: Address) -> Result<Arc<SubConn>, String> {
            let sc = self.cc.new_subconn(address)?;
            self.cc
                .register_oob_listener(sc.id(), Duration::from_millis(50), self.heard.clone());
            Ok(sc)
        }
        fn connect(&mut self, sc: SubConnId) {
            self.cc.connect(sc)
        }
        fn shutdown_subconn(&mut self, sc: SubConnId) {
            self.cc.shutdown_subconn(sc)
        }
        fn update_state(&mut self, state: ConnectivityState, picker: Box<dyn Picker>) {
            self.cc.update_state(state, picker)
        }
        fn resolve_now(&mut self) {
            self.cc.resolve_now()
        }
        fn schedule_timer(&mut self, after: Duration) -> TimerToken {
            self.cc.schedule_timer(after)
        }
        fn cancel_timer(&mut self, token: TimerToken) {
            self.cc.cancel_timer(token)
        }
        fn now(&self) -> Instant {
            self.cc.now()
        }
        fn clock(&self) -> Arc<dyn Clock> {
            self.cc.clock()
        }
        fn random(&mut self) -> u64 {
            self.cc.random()
        }
        fn work_scheduler(&self) -> WorkScheduler {
            self.cc.work_scheduler()
        }
        fn register_oob_listener(
            &mut self,
            sc: SubConnId,
            period: Duration,
            listener: Arc<dyn LoadReportListener>,
        ) -> OobListenerId {
            self.cc.register_oob_listener(sc, period, listener)
        }
        fn unregister_oob_listener(&mut self, id: OobListenerId) {
            self.cc.unregister_oob_listener(id)
        }
    }

    struct Parent {
        inner: Box<dyn Balancer>,
        heard: Arc<Heard>,
    }

    impl Parent {
        fn w<'a>(&self, cc: &'a mut dyn ClientConn) -> Wrap<'a> {
            Wrap {
                cc,
                heard: self.heard.clone(),
            }
        }
    }

    impl Balancer for Parent {
        fn update_client_conn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            s: ClientConnState,
        ) -> Result<(), String> {
            let mut w = self.w(cc);
            self.inner.update_client_conn_state(&mut w, s)
        }
        fn resolver_error(&mut self, cc: &mut dyn ClientConn, e: &str) {
            let mut w = self.w(cc);
            self.inner.resolver_error(&mut w, e)
        }
        fn update_subconn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            id: SubConnId,
            s: &SubConnState,
        ) {
            let mut w = self.w(cc);
            self.inner.update_subconn_state(&mut w, id, s)
        }
        fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
            let mut w = self.w(cc);
            self.inner.exit_idle(&mut w)
        }
        fn work(&mut self, cc: &mut dyn ClientConn) {
            let mut w = self.w(cc);
            self.inner.work(&mut w)
        }
        fn timer(&mut self, cc: &mut dyn ClientConn, t: TimerToken) {
            let mut w = self.w(cc);
            self.inner.timer(&mut w, t)
        }
        fn close(&mut self, cc: &mut dyn ClientConn) {
            let mut w = self.w(cc);
            self.inner.close(&mut w)
        }
    }

    struct Build(Arc<Heard>, String);
    impl Builder for Build {
        fn name(&self) -> &str {
            &self.1
        }
        fn build(&self) -> Box<dyn Balancer> {
            Box::new(Parent {
                inner: registry::get("round_robin").unwrap().build(),
                heard: self.0.clone(),
            })
        }
    }

    pub fn channel(rt: &Runtime, target: &str) -> (Channel, Arc<Heard>) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("go_custom_lb_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let heard = Arc::new(Heard(Mutex::new(Vec::new())));
        registry::register(Arc::new(Build(heard.clone(), name.clone())));
        let config = format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]}}"#);
        (
            super::channel(rt, target, Some(&config), plaintext()),
            heard,
        )
    }
}

/// gRPC-Go `TestProducer` (a listener registered by a parent on the
/// child's subchannels hears the server's reports, and their changes):
/// two backends under the wrapped round_robin, each reporting its own
/// cpu; the one listener hears both, each backend one stream asking for
/// 50 ms; a changed report reaches it too; the calls go round robin.
#[test]
fn a_parent_policy_hears_oob_reports_from_its_round_robin_childs_subchannels() {
    let (a, b) = (reporting(), reporting());
    a.set_report(cpu_report(0.25));
    b.set_report(cpu_report(0.75));
    let rt = Runtime::new().unwrap();
    let target = format!("ipv4:{},{}", a.addr, b.addr);
    let (ch, heard) = wrapping::channel(&rt, &target);
    let mut r = ch.reader();
    let per = split(&mut r, 20);
    assert_eq!(per.len(), 2, "{per:?}");
    let has = |v: f64| heard.0.lock().unwrap().contains(&v);
    wait_until("both backends' reports", || has(0.25) && has(0.75));
    for s in [&a, &b] {
        assert_eq!(s.n_streams(), 1);
        assert_eq!(request_interval(&s.streams()[0].raw), ms(50));
    }
    a.set_report(cpu_report(0.5));
    wait_until("the changed report", || has(0.5));
}
