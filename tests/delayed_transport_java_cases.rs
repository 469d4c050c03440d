//! Ported from grpc-java core (grpc-java @ 5fda0c7c):
//! core/src/test/java/io/grpc/internal/DelayedClientTransportTest.java
//! (reprocessSemantics, reprocess_newStreamRacesWithReprocess,
//! reprocess_NoPendingStream, startThenCancelStreamWithoutSetTransport,
//! pendingStream_appendTimeoutInsight_waitForReady_withLastPickFailure) and
//! InternalSubchannelTest.updateAddresses_intersecting_ready /
//! updateAddresses_disjoint_ready end to end (real sockets), onto
//! switchyard's Channel with a driven policy (the test runs closures on the
//! loop through the policy's `work`) and custom pickers keyed by an
//! `x-call` metadata label.
//!
//! Everything else in InternalSubchannelTest, ServiceConfigErrorHandlingTest
//! and AutoConfiguredLoadBalancerFactoryTest is already pinned by
//! channel_java_cases.rs, pick_first_rr_java_cases.rs,
//! idle_service_config_java_cases.rs, service_config_java_cases.rs,
//! service_config_core_cases.rs (see their headers).

#[path = "common/mod.rs"]
mod common;
#[path = "common/driven_lb.rs"]
mod driven_lb;

use common::*;
use driven_lb::{lb, Core, Driven};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use switchyard::picker::QueuePicker;
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const ECHO: &str = "/echo.Echo/Unary";

// ------------------------------------------------------------ driven policy

type Op = Box<dyn FnOnce(&mut dyn ClientConn, &mut Vec<Arc<SubConn>>, &[Address]) + Send>;

#[derive(Default)]
struct Driver {
    core: Core,
    ops: Mutex<Vec<Op>>,
}

impl Deref for Driver {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Driver {
    fn run(&self, ch: &Channel, op: Op) {
        self.ops.lock().unwrap().push(op);
        self.kick(ch);
        wait_until("the op ran", || self.ops.lock().unwrap().is_empty());
    }
    fn publish(&self, ch: &Channel, state: ConnectivityState, picker: impl Picker) {
        let mut p = Some(picker);
        self.run(
            ch,
            Box::new(move |cc, _, _| cc.update_state(state, Box::new(p.take().unwrap()))),
        );
    }
    fn wait_ready(&self, k: usize) {
        self.wait_sc_state(k, Ready);
    }
}

impl Driven for Driver {
    fn on_update(&self, cc: &mut dyn ClientConn, first: bool) {
        if first {
            cc.update_state(Connecting, Box::new(QueuePicker));
        }
    }
    fn apply(&self, cc: &mut dyn ClientConn) {
        let ops: Vec<Op> = self.ops.lock().unwrap().drain(..).collect();
        let addrs = self.addrs.lock().unwrap().clone();
        for op in ops {
            let mut scs = self.subconns.lock().unwrap().clone();
            op(cc, &mut scs, &addrs);
            *self.subconns.lock().unwrap() = scs;
        }
    }
}

fn driver(name: &'static str) -> Arc<Driver> {
    driven_lb::register(name, Driver::default())
}

/// New subchannel for resolved address 0 (appended), optionally connected.
fn new_sc(connect: bool) -> Op {
    Box::new(move |cc, scs, addrs| {
        let sc = cc.new_subconn(addrs[0].clone()).unwrap();
        if connect {
            cc.connect(sc.id());
        }
        scs.push(sc);
    })
}

// ------------------------------------------------------------ routed picker

#[derive(Clone)]
enum Rule {
    To(Arc<SubConn>),
    Fail(Status),
    Queue,
}

/// Picks by the call's `x-call` label; logs every pick's label (and the
/// picker's name) in order. Labels without a rule get `default`.
struct Routed {
    name: &'static str,
    rules: Vec<(&'static str, Rule)>,
    default: Rule,
    log: Arc<Mutex<Vec<String>>>,
}

fn label(info: &PickInfo<'_>) -> String {
    info.metadata
        .iter()
        .find(|(k, _)| k == "x-call")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

impl Picker for Routed {
    fn pick<'a>(&'a self, info: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        let l = label(info);
        self.log.lock().unwrap().push(format!("{}:{l}", self.name));
        let rule = self
            .rules
            .iter()
            .find(|(n, _)| *n == l)
            .map(|(_, r)| r)
            .unwrap_or(&self.default);
        match rule {
            Rule::To(sc) => PickResult::Complete {
                subconn: sc,
                done: DoneHooks::NONE,
            },
            Rule::Fail(s) => PickResult::Fail(s),
            Rule::Queue => PickResult::Queue,
        }
    }
}

// ------------------------------------------------------------ helpers

fn backend() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap()
}

fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// A started call labelled `name` (deadline `secs`); its result and handle.
fn start(
    ch: &Channel,
    name: &str,
    wait_for_ready: bool,
    secs: f64,
) -> (Receiver<CallResult>, CallHandle) {
    let md = vec![("x-call".to_string(), name.to_string())];
    let opts = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs_f64(secs)),
        wait_for_ready: Some(wait_for_ready),
        metadata: &md,
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel();
    let h = ch
        .unary_start(ECHO, b"ping", &opts, move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    (rx, h)
}

fn result(rx: &Receiver<CallResult>, what: &str) -> CallResult {
    rx.recv_timeout(Duration::from_secs(8))
        .unwrap_or_else(|_| panic!("{what}: no result in time"))
}

fn still_pending(rx: &Receiver<CallResult>, what: &str) {
    if let Ok(r) = rx.recv_timeout(Duration::from_millis(200)) {
        panic!("{what}: should still wait, ended with {r:?}");
    }
}

fn take_log(log: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

// ====================================================================
// DelayedClientTransportTest
// ====================================================================

/// reprocessSemantics: eight buffered calls (four fail-fast, four
/// wait-for-ready) meet one picker that, per call, picks a READY
/// subchannel (goes out), fails (fail-fast fails with exactly that status;
/// wait-for-ready stays), picks a subchannel with no transport (stays) or
/// queues (stays). The picker is asked for each buffered call once, in the
/// order they were started. The next picker takes every remaining one, in
/// order; a new call then picks from the latest picker at once
/// (reprocess_NoPendingStream: a picker with nothing to reprocess still
/// serves later calls). A buffered call cancelled first
/// (startThenCancelStreamWithoutSetTransport) is CANCELLED, never picked
/// and never sent.
#[test]
fn reprocess_semantics_each_buffered_call_picked_once_in_start_order() {
    let b = backend();
    let d = driver("delayed_java_reprocess");
    let rt = Runtime::new().unwrap();
    let mut o = plaintext();
    o.disable_retry = true;
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", b.addr()),
        Some(&lb("delayed_java_reprocess")),
        o,
    )
    .unwrap();
    let names = ["ff1", "ff2", "ff3", "ff4", "wfr1", "wfr2", "wfr3", "wfr4"];
    let mut calls = Vec::new();
    let (cancelled, ch_handle) = start(&ch, "cancelled", false, 10.0);
    for n in names {
        calls.push(start(&ch, n, n.starts_with("wfr"), 10.0));
    }
    // sc0 READY, sc1 never connected (no transport).
    d.run(&ch, new_sc(true));
    d.run(&ch, new_sc(false));
    d.wait_ready(0);
    assert!(ch_handle.cancel(), "cancel the buffered call");
    let e = result(&cancelled, "cancelled").unwrap_err();
    assert_eq!(e.code(), Code::Cancelled, "{e:?}");
    for (n, (rx, _)) in names.iter().zip(&calls) {
        still_pending(rx, n);
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sc0, sc1) = (d.sc(0), d.sc(1));
    d.publish(
        &ch,
        Ready,
        Routed {
            name: "A",
            rules: vec![
                ("ff1", Rule::To(sc0.clone())),
                (
                    "ff2",
                    Rule::Fail(Status::new(Code::Unavailable, "ff2 fails")),
                ),
                ("ff3", Rule::To(sc1.clone())),
                ("ff4", Rule::Queue),
                ("wfr1", Rule::To(sc0.clone())),
                (
                    "wfr2",
                    Rule::Fail(Status::new(Code::ResourceExhausted, "wfr2 refused")),
                ),
                ("wfr3", Rule::To(sc1.clone())),
                ("wfr4", Rule::Queue),
            ],
            default: Rule::Queue,
            log: log.clone(),
        },
    );
    let ok = |i: usize| {
        let r = result(&calls[i].0, names[i]);
        assert!(r.is_ok(), "{}: {r:?}", names[i]);
    };
    ok(0);
    ok(4);
    let e = result(&calls[1].0, "ff2").unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "ff2 fails"));
    for i in [2, 3, 5, 6, 7] {
        still_pending(&calls[i].0, names[i]);
    }
    let want: Vec<String> = names.iter().map(|n| format!("A:{n}")).collect();
    assert_eq!(take_log(&log), want, "picker A's picks");
    assert_eq!(b.requests(), 2);

    d.publish(
        &ch,
        Ready,
        Routed {
            name: "B",
            rules: vec![],
            default: Rule::To(sc0.clone()),
            log: log.clone(),
        },
    );
    for i in [2, 3, 5, 6, 7] {
        ok(i);
    }
    assert_eq!(
        take_log(&log),
        ["B:ff3", "B:ff4", "B:wfr2", "B:wfr3", "B:wfr4"],
        "picker B's picks"
    );
    assert_eq!(b.requests(), 7, "the cancelled call never went out");

    // New calls use the latest picker.
    d.publish(
        &ch,
        Ready,
        Routed {
            name: "C",
            rules: vec![],
            default: Rule::Queue,
            log: log.clone(),
        },
    );
    let (wfr5, _h) = start(&ch, "wfr5", true, 10.0);
    still_pending(&wfr5, "wfr5");
    assert_eq!(take_log(&log), ["C:wfr5"]);
    d.publish(
        &ch,
        Ready,
        Routed {
            name: "D",
            rules: vec![],
            default: Rule::To(sc0.clone()),
            log: log.clone(),
        },
    );
    assert!(result(&wfr5, "wfr5").is_ok());
    assert_eq!(take_log(&log), ["D:wfr5"]);
    assert_eq!(b.requests(), 8);
    ch.close();
}

/// pendingStream_appendTimeoutInsight_waitForReady_withLastPickFailure: a
/// buffered wait-for-ready call whose picker failed it (PERMISSION_DENIED),
/// then a picker that only queues, reaches its deadline: DEADLINE_EXCEEDED,
/// naming the last pick failure (Java: "Last Pick Failure=..."; gRPC-Go's
/// picker_wrapper keeps lastPickErr across ErrNoSubConnAvailable too:
/// "latest balancer error: ..."). Started and blocking.
#[test]
fn a_wait_for_ready_deadline_names_the_last_pick_failure_across_a_queueing_picker() {
    let b = backend();
    let d = driver("delayed_java_insight");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", b.addr()),
        Some(&lb("delayed_java_insight")),
        plaintext(),
    )
    .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (started, _h) = start(&ch, "s", true, 1.5);
    // A blocking wait-for-ready pick on another thread, same deadline.
    let mut rd2 = ch.reader();
    let blocking = thread::spawn(move || {
        let md = vec![("x-call".to_string(), "b".to_string())];
        let info = PickInfo {
            method: ECHO,
            hash: None,
            metadata: &md,
        };
        let opts = PickOptions {
            deadline: Some(Instant::now() + Duration::from_millis(1500)),
            wait_for_ready: true,
        };
        rd2.pick(&info, &opts).map(|_| ()).unwrap_err()
    });
    d.run(&ch, new_sc(false));
    d.publish(
        &ch,
        TransientFailure,
        Routed {
            name: "A",
            rules: vec![],
            default: Rule::Fail(Status::new(Code::PermissionDenied, "not for you")),
            log: log.clone(),
        },
    );
    wait_until("both picked by A", || {
        let l = log.lock().unwrap();
        l.contains(&"A:s".to_string()) && l.contains(&"A:b".to_string())
    });
    d.publish(
        &ch,
        Connecting,
        Routed {
            name: "B",
            rules: vec![],
            default: Rule::Queue,
            log: log.clone(),
        },
    );
    wait_until("both picked by B", || {
        let l = log.lock().unwrap();
        l.contains(&"B:s".to_string()) && l.contains(&"B:b".to_string())
    });
    let e = result(&started, "started").unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("not for you"), "started: {e:?}");
    let e = blocking.join().unwrap();
    let s = e.status();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert!(s.message().contains("not for you"), "blocking: {s:?}");
    ch.close();
}

/// reprocess_newStreamRacesWithReprocess: a pick running inside the old
/// picker while new pickers are published (the same behaviour again, then
/// a different one) is not lost: once the old picker answers "queue", the
/// pick runs again on the newest picker (Java: "newStream() detects that
/// there has been a new picker while it's stuck, thus will pick again").
/// The pick is a blocking wait-for-ready `Reader::pick` on another thread;
/// the old picker's pick is held inside `pick` by a gate.
#[test]
fn a_pick_racing_with_a_new_picker_picks_again_from_the_newest() {
    let b = backend();
    let d = driver("delayed_java_race");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", b.addr()),
        Some(&lb("delayed_java_race")),
        plaintext(),
    )
    .unwrap();
    ch.connect().unwrap();
    d.run(&ch, new_sc(true));
    d.wait_ready(0);
    let sc0 = d.sc(0);

    struct Gated {
        name: &'static str,
        gate: Arc<AtomicBool>,
        entered: Arc<AtomicBool>,
        log: Arc<Mutex<Vec<String>>>,
        result: Option<Arc<SubConn>>,
    }
    impl Picker for Gated {
        fn pick<'a>(&'a self, info: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
            self.log
                .lock()
                .unwrap()
                .push(format!("{}:{}", self.name, label(info)));
            if !self.entered.swap(true, Ordering::SeqCst) {
                let t = Instant::now();
                while !self.gate.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(5) {
                    thread::sleep(Duration::from_millis(2));
                }
            }
            match &self.result {
                Some(sc) => PickResult::Complete {
                    subconn: sc,
                    done: DoneHooks::NONE,
                },
                None => PickResult::Queue,
            }
        }
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(AtomicBool::new(false));
    let entered_a = Arc::new(AtomicBool::new(false));
    let done_entering = Arc::new(AtomicBool::new(true));
    d.publish(
        &ch,
        Connecting,
        Gated {
            name: "A",
            gate: gate.clone(),
            entered: entered_a.clone(),
            log: log.clone(),
            result: None,
        },
    );
    let mut rd2 = ch.reader();
    let picker_thread = thread::spawn(move || {
        let md = vec![("x-call".to_string(), "s1".to_string())];
        let info = PickInfo {
            method: ECHO,
            hash: None,
            metadata: &md,
        };
        let opts = PickOptions {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            wait_for_ready: true,
        };
        rd2.pick(&info, &opts)
            .map(|p| p.subconn().id())
            .map_err(|e| e.to_string())
    });
    wait_until("s1 inside picker A", || entered_a.load(Ordering::SeqCst));
    // Phase 1: a new picker, same behaviour (queue), while s1 is stuck in A.
    d.publish(
        &ch,
        Connecting,
        Gated {
            name: "A2",
            gate: gate.clone(),
            entered: done_entering.clone(),
            log: log.clone(),
            result: None,
        },
    );
    gate.store(true, Ordering::SeqCst);
    wait_until("s1 picked again by A2", || {
        log.lock().unwrap().contains(&"A2:s1".to_string())
    });
    // Phase 2: a different picker that completes.
    d.publish(
        &ch,
        Ready,
        Gated {
            name: "B",
            gate: gate.clone(),
            entered: done_entering.clone(),
            log: log.clone(),
            result: Some(sc0.clone()),
        },
    );
    let got = picker_thread.join().unwrap();
    assert_eq!(got, Ok(sc0.id()));
    assert_eq!(take_log(&log), ["A:s1", "A2:s1", "B:s1"]);
    ch.close();
}

// ====================================================================
// InternalSubchannelTest, end to end (pick_first over real sockets)
// ====================================================================

fn manual(scheme: &'static str) -> ManualResolver {
    let r = ManualResolver::new(scheme);
    resolver::register(Arc::new(r.clone()));
    r
}

fn push(r: &ManualResolver, addrs: &[SocketAddr]) {
    wait_until("resolver built", || r.client_conn().is_some());
    r.update(ResolverState {
        endpoints: addrs
            .iter()
            .map(|a| Endpoint::from(Address::new(a.to_string())))
            .collect(),
        service_config: None,
    })
    .unwrap();
}

/// updateAddresses_intersecting_ready: READY on the second address of
/// [dead, B]; a new list [C, B] that still has B keeps B's connection (no
/// new connection anywhere, calls still go to B, the channel never leaves
/// READY). updateAddresses_disjoint_ready: then [C, D] without B: B's
/// connection is closed and the channel moves to C (Java goes IDLE first
/// and reconnects on the next call; gRPC-Go and gRFC A61 start a pass at
/// once: either way the next call lands on C).
#[test]
fn pick_first_keeps_a_ready_connection_whose_address_stays_listed() {
    let dead = free_addr();
    let bb = backend();
    let cb = backend();
    let db = backend();
    let r = manual("delayed-java-intersect");
    let rt = Runtime::new().unwrap();
    let states = Arc::new(Mutex::new(Vec::new()));
    let mut o = plaintext_fast_backoff();
    let st = states.clone();
    o.on_state_change = Some(Arc::new(move |s| st.lock().unwrap().push(s)));
    let ch = Channel::new(
        &rt,
        "delayed-java-intersect:///x",
        Some(r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#),
        o,
    )
    .unwrap();
    ch.connect().unwrap();
    push(&r, &[dead, bb.addr()]);
    wait_state(&ch, Ready);
    let mut rd = ch.reader();
    assert_eq!(echo(&mut rd, false).unwrap(), bb.port());
    let b_sc = |ch: &Channel| {
        ch.snapshot()
            .unwrap()
            .subchannels
            .iter()
            .filter(|s| s.address == bb.addr().to_string())
            .map(|s| (s.id, s.state))
            .collect::<Vec<_>>()
    };
    let before = b_sc(&ch);
    assert_eq!(before.len(), 1, "{before:?}");
    states.lock().unwrap().clear();
    push(&r, &[cb.addr(), bb.addr()]);
    ch.sync().unwrap();
    for _ in 0..5 {
        assert_eq!(echo(&mut rd, false).unwrap(), bb.port());
    }
    thread::sleep(Duration::from_millis(200));
    assert_eq!(b_sc(&ch), before, "B's subchannel (and connection) kept");
    assert_eq!(cb.connections(), 0, "C never dialled");
    assert_eq!(bb.connections(), 1);
    assert_eq!(
        *states.lock().unwrap(),
        [] as [ConnectivityState; 0],
        "never left READY"
    );
    push(&r, &[cb.addr(), db.addr()]);
    ch.sync().unwrap();
    ch.sync().unwrap();
    assert_eq!(echo(&mut rd, true).unwrap(), cb.port());
    wait_until("B's connection closed", || bb.connections() == 0);
    assert_eq!(db.connections(), 0, "D not dialled once C is READY");
    ch.close();
}

/// DelayedClientTransport decides by the pick's result, not by the state
/// published with the picker (reprocessSemantics' ff3/ff4 under any
/// state; gRPC-Go's picker_wrapper likewise): a picker published with
/// TRANSIENT_FAILURE that queues, or picks a subchannel with no
/// transport, keeps fail-fast calls buffered (started and blocking) until
/// a picker that picks a READY subchannel.
#[test]
fn fail_fast_calls_stay_buffered_under_a_transient_failure_picker_that_queues() {
    let b = backend();
    let d = driver("delayed_java_tf_queue");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", b.addr()),
        Some(&lb("delayed_java_tf_queue")),
        plaintext(),
    )
    .unwrap();
    let (q, _h1) = start(&ch, "q", false, 10.0);
    let (idle, _h2) = start(&ch, "idle", false, 10.0);
    d.run(&ch, new_sc(true));
    d.run(&ch, new_sc(false));
    d.wait_ready(0);
    let log = Arc::new(Mutex::new(Vec::new()));
    d.publish(
        &ch,
        TransientFailure,
        Routed {
            name: "A",
            rules: vec![("idle", Rule::To(d.sc(1)))],
            default: Rule::Queue,
            log: log.clone(),
        },
    );
    let mut rd = ch.reader();
    let blocking = thread::spawn(move || {
        let md = vec![("x-call".to_string(), "blk".to_string())];
        let info = PickInfo {
            method: ECHO,
            hash: None,
            metadata: &md,
        };
        let opts = PickOptions {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            wait_for_ready: false,
        };
        rd.pick(&info, &opts)
            .map(|p| p.subconn().id())
            .map_err(|e| e.to_string())
    });
    wait_until("all picked by A", || log.lock().unwrap().len() >= 3);
    still_pending(&q, "q under a TF picker that queues");
    still_pending(
        &idle,
        "idle under a TF picker picking an unconnected subchannel",
    );
    assert!(
        !blocking.is_finished(),
        "blocking fail-fast pick should wait"
    );
    d.publish(
        &ch,
        Ready,
        Routed {
            name: "B",
            rules: vec![],
            default: Rule::To(d.sc(0)),
            log: log.clone(),
        },
    );
    assert!(result(&q, "q").is_ok());
    assert!(result(&idle, "idle").is_ok());
    assert_eq!(blocking.join().unwrap(), Ok(d.sc(0).id()));
    ch.close();
}
