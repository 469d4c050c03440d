//! What the managed-connector tests (in-process tokio servers) and the interop
//! tests (real grpcio servers) share: channel and RPC helpers, a recorder of
//! subchannel transitions, a throwaway PKI, and the scenarios themselves,
//! written once against a [`Fleet`] of backends so both suites assert the
//! same exact outcomes.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::backoff::BackoffConfig;
use switchyard::ConnectivityState::*;
use switchyard::*;
pub use switchyard_testserver::TestPki;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

pub const RR: Option<&str> = Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#);
pub const RR_HEALTH: Option<&str> =
    Some(r#"{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":""}}"#);

/// A set of echo backends on 127.0.0.1 that a test can steer.
pub trait Fleet {
    fn addrs(&self) -> Vec<SocketAddr>;
    /// Sets the health of the whole server ("" and every service it has).
    fn set_serving(&mut self, i: usize, serving: bool);
    /// Closes backend `i`'s listener and connections.
    fn stop(&mut self, i: usize);
    /// Serves again on backend `i`'s port.
    fn restart(&mut self, i: usize);

    fn ports(&self) -> Vec<u16> {
        self.addrs().iter().map(SocketAddr::port).collect()
    }
    fn target(&self) -> String {
        let list: Vec<String> = self.addrs().iter().map(ToString::to_string).collect();
        format!("ipv4:{}", list.join(","))
    }
}

pub fn plaintext() -> ChannelOptions {
    ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    }
}

pub fn plaintext_fast_backoff() -> ChannelOptions {
    let mut o = plaintext();
    o.backoff.initial = Duration::from_millis(50);
    o.backoff.max = Duration::from_millis(200);
    o
}

/// A channel that starts connecting at once (`connect`): a channel starts
/// IDLE until used, and most tests are about what comes after.
pub fn channel(rt: &Runtime, target: &str, config: Option<&str>, opts: ChannelOptions) -> Channel {
    let ch = Channel::new(rt, target, config, opts).unwrap();
    ch.connect().unwrap();
    ch
}

/// One echo RPC; returns the port of the backend that served it.
pub fn echo(r: &mut Reader, wait_for_ready: bool) -> Result<u16, Status> {
    let opts = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        wait_for_ready: Some(wait_for_ready),
        ..Default::default()
    };
    let resp = r.unary("/echo.Echo/Unary", b"ping", &opts)?;
    Ok(port_of(resp))
}

/// The port in an echo backend's answer to "ping" ("ping|port=N").
pub fn port_of(resp: UnaryResponse) -> u16 {
    let text = String::from_utf8(resp.message).unwrap();
    let port = text
        .strip_prefix("ping|port=")
        .unwrap_or_else(|| panic!("bad echo {text:?}"));
    port.parse().unwrap()
}

/// One echo RPC on `ch` with a deadline `timeout` away; returns the port of
/// the backend that served it.
pub fn rpc(ch: &Channel, wait_for_ready: bool, timeout: Duration) -> Result<u16, Status> {
    let opts = CallOptions {
        deadline: Some(Instant::now() + timeout),
        wait_for_ready: Some(wait_for_ready),
        ..Default::default()
    };
    let resp = ch.reader().unary("/echo.Echo/Unary", b"ping", &opts)?;
    Ok(port_of(resp))
}

/// `n` wait-for-ready RPCs, counted per backend port.
pub fn split(r: &mut Reader, n: usize) -> HashMap<u16, usize> {
    let mut per = HashMap::new();
    for _ in 0..n {
        *per.entry(echo(r, true).expect("wait-for-ready RPCs never fail"))
            .or_default() += 1;
    }
    per
}

/// Exactly `each` RPCs went to every one of `ports`, and none elsewhere.
pub fn assert_split(per: &HashMap<u16, usize>, ports: &[u16], each: usize) {
    let got: HashSet<u16> = per.keys().copied().collect();
    let want: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(got, want, "backends that served: {per:?}");
    assert!(
        per.values().all(|n| *n == each),
        "want {each} each: {per:?}"
    );
}

/// Polls `cond` every 10 ms for up to 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until the channel is in `state`.
pub fn wait_state(ch: &Channel, state: ConnectivityState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ch.state() != state {
        assert!(
            Instant::now() < deadline,
            "channel never reached {state}, is {}",
            ch.state()
        );
        ch.wait_for_state_change(
            ch.state(),
            Some(Instant::now() + Duration::from_millis(100)),
        );
    }
}

/// The error a pick on a failing channel gets.
pub fn pick_error(ch: &Channel) -> String {
    ch.reader()
        .try_pick(&PickInfo::default())
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

/// Sends RPCs until every backend has answered, so the picker holds them all.
pub fn warm_up(r: &mut Reader, backends: usize) {
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < backends {
        assert!(Instant::now() < deadline, "only {seen:?} answered");
        seen.insert(echo(r, true).unwrap());
    }
}

/// Sends RPCs until `port` serves one (bounded).
pub fn wait_serves(r: &mut Reader, port: u16, what: &str) {
    wait_until(what, || (0..30).any(|_| echo(r, true).unwrap() == port));
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An echo backend on 127.0.0.1:`port` (0: any free port), retried for up
/// to 5 s while the port is still taken (a backend restarted on its port).
pub fn start_server(port: u16, opts: ServerOptions) -> TestServer {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TestServer::start(Listen::Tcp(addr), opts.clone()) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot start on {addr}: {e}"),
        }
    }
}

/// One subchannel transition as the policy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub sc: SubConnId,
    pub state: ConnectivityState,
    pub error: Option<String>,
    pub at: Instant,
}

/// Records every subchannel transition of the channels it is attached to.
#[derive(Clone, Default)]
pub struct Transitions(Arc<Mutex<Vec<Seen>>>);

impl Transitions {
    pub fn attach(&self, opts: &mut ChannelOptions) {
        let log = self.0.clone();
        opts.on_subconn_state = Some(Arc::new(move |sc, st: &SubConnState| {
            log.lock().unwrap().push(Seen {
                sc,
                state: st.state,
                error: st.error.as_deref().map(str::to_string),
                at: Instant::now(),
            });
        }));
    }

    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    /// When each connection attempt started.
    pub fn attempts(&self) -> Vec<Instant> {
        self.all()
            .iter()
            .filter(|s| s.state == Connecting)
            .map(|s| s.at)
            .collect()
    }

    /// Waits for a transition matching `f` and returns it.
    pub fn wait_for(&self, what: &str, f: impl Fn(&Seen) -> bool) -> Seen {
        let mut found = None;
        wait_until(what, || {
            found = self.all().into_iter().find(&f);
            found.is_some()
        });
        found.unwrap()
    }

    /// The states subchannel `sc` went through, in order.
    pub fn states_of(&self, sc: SubConnId) -> Vec<ConnectivityState> {
        self.all()
            .iter()
            .filter(|s| s.sc == sc)
            .map(|s| s.state)
            .collect()
    }
}

/// Plaintext options whose subchannel transitions are recorded.
pub fn recorded_plaintext() -> (ChannelOptions, Transitions) {
    let (mut opts, seen) = (plaintext(), Transitions::default());
    seen.attach(&mut opts);
    (opts, seen)
}

// ---------------------------------------------------------------- scenarios

/// round_robin over 3 backends splits 300 RPCs exactly 100/100/100.
pub fn rr_splits_300_exactly(f: &impl Fleet) {
    rr_split_300(f, RR);
}

fn rr_split_300(f: &impl Fleet, config: Option<&str>) {
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &f.target(), config, plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, 3);
    assert_split(&split(&mut r, 300), &f.ports(), 100);
}

/// Backend 1 of 3 stops mid-run: wait-for-ready RPCs never fail, the other
/// two share the load exactly, and the restarted backend gets its third back.
pub fn stopped_backend_fails_over_and_rejoins(f: &mut impl Fleet) {
    let ports = f.ports();
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &f.target(), RR, plaintext_fast_backoff());
    let mut r = ch.reader();
    warm_up(&mut r, 3);
    f.stop(1);
    // RPCs sent while the loss is noticed go to whoever is READY. A hard stop
    // can still answer the one RPC that reached it first with a status of its
    // own (grpcio: UNAVAILABLE "Cancelling all calls"): the server saw that
    // call, so no client may retry it transparently; gRPC fails it too.
    let mut served = 0;
    let mut refused = Vec::new();
    for _ in 0..200 {
        match echo(&mut r, true) {
            Ok(_) => served += 1,
            Err(s) => refused.push(s),
        }
    }
    assert!(
        refused.len() <= 1 && refused.iter().all(|s| s.code() == Code::Unavailable),
        "only the RPC racing the stop may fail: {refused:?}"
    );
    assert_eq!(served + refused.len(), 200);
    // Once it is, only the survivors serve, evenly.
    assert_split(&split(&mut r, 60), &[ports[0], ports[2]], 30);

    f.restart(1);
    wait_serves(&mut r, ports[1], "the restarted backend to rejoin");
    assert_split(&split(&mut r, 300), &ports, 100);
}

/// Backend 1 of 3 is NOT_SERVING: with `healthCheckConfig` round_robin leaves
/// it out (its subchannel is TRANSIENT_FAILURE saying why, its connection
/// kept); without, it serves like the others. SERVING again brings it back.
pub fn not_serving_is_excluded_only_with_health_checking(f: &mut impl Fleet) {
    let ports = f.ports();
    f.set_serving(1, false);
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let checked = channel(&rt, &f.target(), RR_HEALTH, opts);
    let unchecked = channel(&rt, &f.target(), RR, plaintext());

    let mut ru = unchecked.reader();
    warm_up(&mut ru, 3);
    assert_split(&split(&mut ru, 300), &ports, 100);

    let mut rc = checked.reader();
    warm_up(&mut rc, 2);
    let sick = seen.wait_for("the unhealthy subchannel's failure", |s| {
        s.state == TransientFailure
    });
    let why = sick.error.unwrap_or_default();
    assert!(
        why.contains("NOT_SERVING") && why.contains(&ports[1].to_string()),
        "{why}"
    );
    assert_split(&split(&mut rc, 300), &[ports[0], ports[2]], 150);

    f.set_serving(1, true);
    wait_serves(&mut rc, ports[1], "the backend to serve again once SERVING");
    assert_split(&split(&mut rc, 300), &ports, 100);
    // Health never cost it the connection: CONNECTING (health pending),
    // TRANSIENT_FAILURE (NOT_SERVING), READY (SERVING), nothing else.
    assert_eq!(
        seen.states_of(sick.sc),
        [Connecting, TransientFailure, Ready]
    );
}

/// Backends without the health service (Watch ends UNIMPLEMENTED) count as
/// healthy: with `healthCheckConfig` all three share the load exactly.
pub fn missing_health_service_counts_as_healthy(f: &impl Fleet) {
    rr_split_300(f, RR_HEALTH);
}

/// A TLS backend serves with the right CA; with a wrong one the channel
/// fails saying the certificate is the problem.
pub fn tls_right_ca_works_wrong_ca_says_why(addr: SocketAddr, ca_pem: &[u8]) {
    let rt = Runtime::new().unwrap();
    let tls = |roots: Vec<u8>| ChannelOptions {
        transport: Some(TransportConfig::tls(TlsSettings {
            server_name: "localhost".into(),
            roots_pem: Some(roots),
            client_cert: None,
        })),
        ..Default::default()
    };
    let target = format!("ipv4:{addr}");
    let good = channel(&rt, &target, RR, tls(ca_pem.to_vec()));
    let mut r = good.reader();
    warm_up(&mut r, 1);
    assert_split(&split(&mut r, 20), &[addr.port()], 20);

    let bad = channel(&rt, &target, None, tls(TestPki::new().ca_pem));
    wait_state(&bad, TransientFailure);
    let e = pick_error(&bad);
    assert!(
        e.contains("TLS handshake") && e.contains("certificate"),
        "{e}"
    );

    // A plaintext channel to it: the error says what that likely means,
    // whether the server answers in TLS or closes without a word.
    let plain = channel(&rt, &target, None, plaintext());
    wait_state(&plain, TransientFailure);
    let e = pick_error(&plain);
    assert!(e.contains("TLS"), "{e}");
}

/// A listener that accepts TCP and never speaks: TRANSIENT_FAILURE at the
/// connect deadline (200 ms here), saying it timed out.
pub fn silent_listener_fails_at_the_connect_deadline(addr: SocketAddr) {
    let rt = Runtime::new().unwrap();
    let (mut opts, seen) = recorded_plaintext();
    opts.backoff = BackoffConfig {
        initial: Duration::from_millis(50),
        min_connect_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let ch = channel(&rt, &format!("ipv4:{addr}"), None, opts);
    wait_state(&ch, TransientFailure);
    assert!(pick_error(&ch).contains("timed out"), "{}", pick_error(&ch));
    let all = seen.all();
    let start = all.iter().find(|s| s.state == Connecting).unwrap().at;
    let failed = all.iter().find(|s| s.state == TransientFailure).unwrap();
    // The times are the callbacks', not the attempt's: a little early or
    // late (a loaded machine), never near the 50 ms backoff or the 20 s
    // default.
    let took = (failed.at - start).as_secs_f64();
    assert!((0.19..1.0).contains(&took), "failed after {took:.3}s");
    assert!(failed.error.as_deref().unwrap().contains("timed out"));
}

/// Nothing listens on the port: attempts start 100 ms apart, then each
/// interval ×1.6 with ±20 % jitter (measured from the attempts' timestamps).
pub fn refused_connections_back_off_by_1_6_with_jitter() {
    let port = free_port();
    let rt = Runtime::new().unwrap();
    let (mut opts, seen) = recorded_plaintext();
    opts.backoff = BackoffConfig {
        initial: Duration::from_millis(100),
        ..Default::default()
    };
    let _ch = channel(&rt, &format!("ipv4:127.0.0.1:{port}"), None, opts);
    wait_until("6 connection attempts", || seen.attempts().len() >= 6);
    let t = seen.attempts();
    let mut nominal = 0.1;
    for (k, w) in t.windows(2).take(5).enumerate() {
        let got = (w[1] - w[0]).as_secs_f64();
        let (lo, hi) = if k == 0 {
            (nominal, nominal)
        } else {
            (nominal * 0.8, nominal * 1.2)
        };
        // The times are the callbacks', taken a little after each attempt
        // starts: a late one shortens the interval after it.
        assert!(
            got >= lo - 0.01 && got <= hi + 0.15,
            "interval {k}: {got:.3}s, want {lo:.3}..{hi:.3}"
        );
        nominal *= 1.6;
    }
}
