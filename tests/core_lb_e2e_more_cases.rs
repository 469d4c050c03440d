//! More of gRPC C-core's test/cpp/end2end/client_lb_end2end_test.cc
//! (commit 005284c8 as stored) not yet in tests/core_lb_e2e_cases.rs, on
//! switchyard's Channel with `resolver::manual::ManualResolver` and real
//! echo servers (switchyard_testserver) on 127.0.0.1.
//!
//! C-core's ConnectionAttemptInjector holds are approximated by a listener
//! that accepts and says nothing (the attempt stays CONNECTING), or by a
//! gate in a TCP proxy.
//!
//! Where C-core and gRPC-Go disagree, switchyard's pick_first is gRPC-Go's
//! (pinned below): an update without the selected address connects anew
//! at once (C-core keeps serving on it meanwhile); an empty update while
//! IDLE reports TRANSIENT_FAILURE (C-core stays IDLE).

#[path = "common/mod.rs"]
mod common;

use common::{free_port, plaintext, start_server, wait_until};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::ConnectivityState::{self, *};
use switchyard::*;
use switchyard_testserver::{ServerOptions, SERVING};

const PF: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;
const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
const RR_HC: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}],
    "healthCheckConfig":{"serviceName":"health_check_service_name"}}"#;

fn state_of(ports: &[u16]) -> ResolverState {
    ResolverState {
        endpoints: ports
            .iter()
            .map(|p| Endpoint::from(Address::new(format!("127.0.0.1:{p}"))))
            .collect(),
        service_config: None,
    }
}

struct Gen {
    r: ManualResolver,
    scheme: String,
}

impl Gen {
    fn new(name: &str) -> Gen {
        let scheme = format!("lb-e2e-more-{name}");
        let r = ManualResolver::new(scheme.clone());
        resolver::register(Arc::new(r.clone()));
        Gen { r, scheme }
    }
    fn target(&self) -> String {
        format!("{}:///default.example.com", self.scheme)
    }
    /// SetNextResolution: what every (re)build gets, and pushed now if open.
    fn set(&self, ports: &[u16]) {
        let st = state_of(ports);
        self.r.set_initial_state(Some(st.clone()));
        let _ = self.r.update(st);
    }
}

fn build(rt: &Runtime, g: &Gen, config: &str, opts: ChannelOptions) -> Channel {
    Channel::new(rt, &g.target(), Some(config), opts).unwrap()
}

fn rpc(ch: &Channel, wait_for_ready: bool, timeout_ms: u64) -> Result<u16, Status> {
    common::rpc(ch, wait_for_ready, Duration::from_millis(timeout_ms))
}

fn ok(ch: &Channel) -> u16 {
    match rpc(ch, false, 2000) {
        Ok(p) => p,
        Err(s) => panic!("RPC failed: {:?}: {}", s.code(), s.message()),
    }
}

fn wait_channel(
    ch: &Channel,
    pred: impl Fn(ConnectivityState) -> bool,
    try_to_connect: bool,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let s = ch.get_state(try_to_connect);
        if pred(s) {
            return true;
        }
        if ch.wait_for_state_change(s, Some(deadline)).is_none() {
            return false;
        }
    }
}

fn wait_ready(ch: &Channel, timeout: Duration) -> bool {
    wait_channel(ch, |s| s == Ready, true, timeout)
}

fn wait_not_ready(ch: &Channel) -> bool {
    wait_channel(ch, |s| s != Ready, false, Duration::from_secs(5))
}

/// A listener that accepts and holds each connection `hold` without a
/// byte, then closes it (C-core's injector hold, for the HTTP/2 handshake).
struct Holder {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Holder {
    fn start(port: u16, hold: Duration) -> Holder {
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (st, acc) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(30);
            let mut held: Vec<(Instant, TcpStream)> = Vec::new();
            while !st.load(Ordering::Acquire) && Instant::now() < end {
                if let Ok((s, _)) = l.accept() {
                    acc.fetch_add(1, Ordering::AcqRel);
                    held.push((Instant::now() + hold, s));
                }
                held.retain(|(until, _)| Instant::now() < *until);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Holder {
            stop,
            accepted,
            thread: Some(thread),
        }
    }
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ====================================================================
// PickFirstTest
// ====================================================================

/// PickFirstTest.ResetConnectionBackoff: initial backoff 1 s, no server:
/// not connected within 10 ms; a server comes up: still not connected 10 ms
/// later (throttled by the backoff); ChannelResetConnectionBackoff: then
/// connected in under the 1 s backoff.
#[test]
fn pick_first_reset_connection_backoff() {
    let port = free_port();
    let rt = Runtime::new().unwrap();
    let g = Gen::new("pf-reset-backoff");
    let mut o = plaintext();
    o.backoff.initial = Duration::from_secs(1);
    // No jitter would let the backoff land below 1 s here: keep default.
    let ch = build(&rt, &g, PF, o);
    g.set(&[port]);
    ch.sync().unwrap();
    assert!(!wait_ready(&ch, Duration::from_millis(10)));
    // Make sure the first attempt failed (refused) and we are in backoff.
    assert!(
        wait_channel(&ch, |s| s == TransientFailure, true, Duration::from_secs(2)),
        "is {}",
        ch.state()
    );
    let _server = start_server(port, ServerOptions::default());
    let t0 = Instant::now();
    assert!(!wait_ready(&ch, Duration::from_millis(10)));
    ch.reset_connect_backoff().unwrap();
    assert!(
        wait_ready(&ch, Duration::from_millis(1000)),
        "not READY within 1 s of the reset: {}",
        ch.state()
    );
    assert!(
        t0.elapsed() < Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
}

/// PickFirstTest.PendingUpdateAndSelectedSubchannelFails: READY on [0];
/// an update to [1] whose attempt is held. C-core keeps serving on [0]
/// (its pending subchannel list) until [0] fails or [1] is READY.
/// gRPC-Go's pick_first (`UpdateClientConnState`) drops a selected
/// connection whose address the new list lacks and goes CONNECTING at
/// once, and so does switchyard (pinned): RPCs queue for [1] (a fail-fast
/// one ends at its deadline, not on [0]); the hold ends, [1] runs: READY,
/// RPCs to [1].
#[test]
fn pick_first_update_without_the_selected_address_connects_anew_as_grpc_go() {
    let p0 = free_port();
    let p1 = free_port();
    let s0 = start_server(p0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let g = Gen::new("pf-pending-fails");
    let ch = build(&rt, &g, PF, plaintext());
    g.set(&[p0]);
    assert_eq!(rpc(&ch, true, 2000).unwrap(), p0);
    assert_eq!(ch.get_state(false), Ready);
    let hold = Holder::start(p1, Duration::from_secs(20));
    g.set(&[p1]);
    wait_until("the held attempt on [1]", || hold.accepted() >= 1);
    assert_eq!(ch.get_state(false), Connecting);
    let r = rpc(&ch, false, 1000);
    assert_eq!(
        r.as_ref().map_err(|s| s.code()),
        Err(Code::DeadlineExceeded),
        "after the update (pending [1] held): {:?}",
        r.as_ref().map_err(|s| (s.code(), s.message().to_string())),
    );
    s0.stop();
    // Resume: the held attempt ends, the real server comes up on [1].
    drop(hold);
    let _s1 = start_server(p1, ServerOptions::default());
    assert!(wait_ready(&ch, Duration::from_secs(5)), "is {}", ch.state());
    assert_eq!(ok(&ch), p1);
}

/// PickFirstTest.StaysIdleUponEmptyUpdate: READY; the server stops: IDLE;
/// an empty resolver update. C-core's pick_first stays IDLE (it only keeps
/// the update while idle); gRPC-Go's (`UpdateClientConnState` on no
/// addresses: `resolverErrorLocked`) reports TRANSIENT_FAILURE whatever
/// its state, and so does switchyard (pinned); either way the resolver
/// hears the update rejected. The server back and a non-empty update: an
/// RPC serves, READY.
#[test]
fn pick_first_empty_update_while_idle_fails_as_grpc_go() {
    let port = free_port();
    let s = start_server(port, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let g = Gen::new("pf-stays-idle-empty");
    let ch = build(&rt, &g, PF, plaintext());
    g.set(&[port]);
    assert_eq!(ok(&ch), port);
    assert_eq!(ch.get_state(false), Ready);
    s.stop();
    assert!(wait_not_ready(&ch));
    assert_eq!(ch.get_state(false), Idle);
    g.set(&[]);
    ch.sync().unwrap();
    let changed = ch.wait_for_state_change(Idle, Some(Instant::now() + Duration::from_secs(3)));
    assert_eq!(changed, Some(TransientFailure), "upon an empty update");
    let _s = start_server(port, ServerOptions::default());
    g.set(&[port]);
    ch.sync().unwrap();
    assert_eq!(rpc(&ch, true, 2000).unwrap(), port);
    assert_eq!(ch.get_state(false), Ready);
}

// ====================================================================
// RoundRobinTest
// ====================================================================

/// A TCP proxy on its own port in front of `backend`; while the gate is
/// closed, new connections are accepted and held (C-core's injector hold)
/// until it opens.
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(backend: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (o, st, acc) = (open.clone(), stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(30);
            while !st.load(Ordering::Acquire) && Instant::now() < end {
                match l.accept() {
                    Ok((c, _)) => {
                        acc.fetch_add(1, Ordering::AcqRel);
                        let (o, st) = (o.clone(), st.clone());
                        std::thread::spawn(move || {
                            while !o.load(Ordering::Acquire) {
                                if st.load(Ordering::Acquire) {
                                    return;
                                }
                                std::thread::sleep(Duration::from_millis(2));
                            }
                            c.set_nonblocking(false).unwrap();
                            let Ok(b) = TcpStream::connect(("127.0.0.1", backend)) else {
                                return;
                            };
                            let (mut c2, mut b2) = (c.try_clone().unwrap(), b.try_clone().unwrap());
                            let t = std::thread::spawn(move || {
                                let _ = std::io::copy(&mut b2, &mut c2);
                                let _ = c2.shutdown(std::net::Shutdown::Both);
                            });
                            let (mut c3, mut b3) = (c, b);
                            let _ = std::io::copy(&mut c3, &mut b3);
                            let _ = b3.shutdown(std::net::Shutdown::Both);
                            let _ = t.join();
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Proxy {
            port,
            open,
            stop,
            accepted,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.open.store(true, Ordering::Release);
    }
}

/// RoundRobinTest.DoesNotFailRpcsUponDisconnection: one backend, a thread
/// sending fail-fast RPCs in a loop (every one must succeed); the backend
/// sends GOAWAY and stops; the reconnection attempt is held; the backend
/// restarts and the attempt resumes: no RPC failed meanwhile.
#[test]
fn round_robin_does_not_fail_rpcs_upon_disconnection() {
    let backend = free_port();
    let s = start_server(backend, ServerOptions::default());
    let proxy = Proxy::start(backend);
    let rt = Runtime::new().unwrap();
    let g = Gen::new("rr-no-fail-disconnect");
    let ch = Arc::new(build(&rt, &g, RR, plaintext()));
    g.set(&[proxy.port]);
    let shutdown = Arc::new(AtomicBool::new(false));
    let first = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let thd = {
        let (ch, shutdown, first, failures) = (
            ch.clone(),
            shutdown.clone(),
            first.clone(),
            failures.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !shutdown.load(Ordering::Acquire) {
                if let Err(e) = rpc(&ch, false, 2000) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{:?}: {}", e.code(), e.message()));
                }
                first.store(true, Ordering::Release);
                n += 1;
            }
            n
        })
    };
    wait_until("the first RPC", || first.load(Ordering::Acquire));
    assert_eq!(ch.get_state(false), Ready);
    let before = proxy.accepted.load(Ordering::Acquire);
    proxy.open.store(false, Ordering::Release);
    // SendGoaways, 1 s, Shutdown.
    s.goaway();
    std::thread::sleep(Duration::from_secs(1));
    s.stop();
    wait_until("the reconnection attempt", || {
        proxy.accepted.load(Ordering::Acquire) > before
    });
    let _s = start_server(backend, ServerOptions::default());
    proxy.open.store(true, Ordering::Release);
    assert!(wait_ready(&ch, Duration::from_secs(5)), "is {}", ch.state());
    std::thread::sleep(Duration::from_millis(200));
    shutdown.store(true, Ordering::Release);
    let n = thd.join().unwrap();
    let f = failures.lock().unwrap().clone();
    assert!(f.is_empty(), "{} of {n} RPCs failed: {f:?}", f.len());
}

/// RoundRobinTest.ServersHealthCheckingUnimplementedTreatedAsHealthy: a
/// health-check service name configured, the server has no health service
/// (UNIMPLEMENTED): READY, an RPC serves.
#[test]
fn round_robin_health_checking_unimplemented_treated_as_healthy() {
    let port = free_port();
    let _s = start_server(
        port,
        ServerOptions {
            no_health: true,
            ..Default::default()
        },
    );
    let rt = Runtime::new().unwrap();
    let g = Gen::new("rr-hc-unimpl");
    let ch = build(&rt, &g, RR_HC, plaintext());
    g.set(&[port]);
    assert!(wait_ready(&ch, Duration::from_secs(5)), "is {}", ch.state());
    assert_eq!(ok(&ch), port);
}

/// RoundRobinTest.WithHealthCheckingInhibitPerChannel: two channels with
/// the same health-check config, the second with health checking inhibited
/// (GRPC_ARG_INHIBIT_HEALTH_CHECKING; here `disable_health_check`): the
/// first does not get READY within 1 s and fails "connections to all
/// backends failing; last error: UNAVAILABLE: backend unhealthy"; the
/// second is READY within 1 s and serves; once the backend reports
/// SERVING, a wait-for-ready RPC on the first serves. (C-core's "one
/// subchannel to the backend" relies on its global subchannel pool: not
/// ported.)
#[test]
fn round_robin_with_health_checking_inhibit_per_channel() {
    let port = free_port();
    let s = start_server(port, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let g1 = Gen::new("rr-hc-inhibit-1");
    let ch1 = build(&rt, &g1, RR_HC, plaintext());
    g1.set(&[port]);
    let g2 = Gen::new("rr-hc-inhibit-2");
    let mut o2 = plaintext();
    o2.disable_health_check = true;
    let ch2 = build(&rt, &g2, RR_HC, o2);
    g2.set(&[port]);
    assert!(!wait_ready(&ch1, Duration::from_secs(1)));
    let e = rpc(&ch1, false, 1000).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    // C-core: "connections to all backends failing; last error: UNAVAILABLE:
    // backend unhealthy"; switchyard words it its own way (as
    // core_lb_e2e_cases.rs's round_robin_health_checking accepts).
    assert!(e.message().contains("health"), "{}", e.message());
    assert!(
        wait_ready(&ch2, Duration::from_secs(2)),
        "is {}",
        ch2.state()
    );
    assert_eq!(ok(&ch2), port);
    s.set_serving("health_check_service_name", SERVING);
    assert_eq!(rpc(&ch1, true, 5000).unwrap(), port);
}

// ====================================================================
// ClientLbEnd2endTest
// ====================================================================

/// ClientLbEnd2endTest.ChannelStateConnectingWhenResolving: no resolution
/// yet: IDLE; GetState(true) answers IDLE (the change is only triggered);
/// then CONNECTING while the resolver has not answered; a resolution:
/// READY.
#[test]
fn channel_state_connecting_when_resolving() {
    let port = free_port();
    let _s = start_server(port, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let g = Gen::new("connecting-when-resolving");
    let ch = build(&rt, &g, PF, plaintext());
    assert_eq!(ch.get_state(false), Idle);
    assert_eq!(ch.get_state(true), Idle);
    ch.sync().unwrap();
    assert_eq!(ch.get_state(false), Connecting);
    g.set(&[port]);
    assert!(wait_ready(&ch, Duration::from_secs(5)), "is {}", ch.state());
}

/// ClientLbEnd2endTest.ChannelIdleness: idle timeout 1 s: IDLE at first;
/// an RPC: READY; 1.2 s without RPCs: IDLE; another RPC: READY again.
#[test]
fn channel_idleness() {
    let port = free_port();
    let _s = start_server(port, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let g = Gen::new("channel-idleness");
    let mut o = plaintext();
    o.idle_timeout = Some(Duration::from_secs(1));
    let ch = build(&rt, &g, PF, o);
    assert_eq!(ch.get_state(false), Idle);
    g.set(&[port]);
    assert_eq!(ok(&ch), port);
    assert_eq!(ch.get_state(false), Ready);
    // C-core sleeps 1.2 s; a generous bound for a loaded machine.
    assert!(
        wait_channel(&ch, |s| s == Idle, false, Duration::from_millis(2500)),
        "is {}",
        ch.state()
    );
    g.set(&[port]);
    assert_eq!(ok(&ch), port);
    assert_eq!(ch.get_state(false), Ready);
}

/// ClientLbEnd2endTest.AuthorityOverrideOnChannel: GRPC_ARG_DEFAULT_AUTHORITY
/// "foo.example.com" (here `ChannelOptions::authority`): the server sees
/// that authority. (AuthorityOverrideFromResolver/Precedence need a
/// per-address authority attribute, which switchyard's Address lacks.)
#[test]
fn authority_override_on_channel() {
    let port = free_port();
    let s = start_server(port, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let g = Gen::new("authority-override");
    let mut o = plaintext();
    o.authority = Some("foo.example.com".into());
    let ch = build(&rt, &g, PF, o);
    g.set(&[port]);
    assert_eq!(rpc(&ch, false, 1000).unwrap(), port);
    assert_eq!(s.last_authority().as_deref(), Some("foo.example.com"));
}

/// PickFirstTest.ProcessPending: channel 1 serves from [0]; a second
/// channel on the same address serves a fail-fast RPC at once.
#[test]
fn pick_first_process_pending() {
    let port = free_port();
    let _s = start_server(port, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let g1 = Gen::new("pf-process-pending-1");
    let ch1 = build(&rt, &g1, PF, plaintext());
    g1.set(&[port]);
    assert_eq!(ok(&ch1), port);
    let g2 = Gen::new("pf-process-pending-2");
    let ch2 = build(&rt, &g2, PF, plaintext());
    g2.set(&[port]);
    assert_eq!(ok(&ch2), port);
}
