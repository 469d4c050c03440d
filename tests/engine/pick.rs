//! Pick semantics: never-waiting try_pick, waiting pick with deadline and
//! wait-for-ready, drops, one try per picker generation, CLOSED.

use crate::support::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;

/// A policy whose picker and state the test sets directly, with counters.
struct Scripted {
    calls: Arc<AtomicUsize>,
    result: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Queue,
    Fail,
    Drop,
}

impl Picker for Scripted {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        static FAIL: std::sync::OnceLock<Status> = std::sync::OnceLock::new();
        let s = FAIL.get_or_init(|| Status::unavailable("backend on fire"));
        match self.result {
            Kind::Queue => PickResult::Queue,
            Kind::Fail => PickResult::Fail(s),
            Kind::Drop => PickResult::Drop(s),
        }
    }
}

type Script = Arc<Mutex<Vec<(ConnectivityState, Kind)>>>;

/// Publishes, on each exit_idle, the next scripted picker.
struct ScriptedBalancer {
    script: Script,
    calls: Arc<AtomicUsize>,
}

impl Balancer for ScriptedBalancer {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        self.exit_idle(cc);
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        let next = self.script.lock().unwrap().pop();
        if let Some((state, result)) = next {
            cc.update_state(
                state,
                Box::new(Scripted {
                    calls: self.calls.clone(),
                    result,
                }),
            );
        }
    }
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

struct ScriptedBuilder(&'static str, Script, Arc<AtomicUsize>);
impl Builder for ScriptedBuilder {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(ScriptedBalancer {
            script: self.1.clone(),
            calls: self.2.clone(),
        })
    }
}

/// A channel running a scripted policy; `script` is consumed from the end.
fn scripted(
    name: &'static str,
    mut script: Vec<(ConnectivityState, Kind)>,
) -> (Runtime, Channel, Script, Arc<AtomicUsize>) {
    script.reverse();
    let script = Arc::new(Mutex::new(script));
    let calls = Arc::new(AtomicUsize::new(0));
    registry::register(Arc::new(ScriptedBuilder(
        name,
        script.clone(),
        calls.clone(),
    )));
    let rt = Runtime::new().unwrap();
    let cfg = format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]}}"#);
    let ch = Channel::new(&rt, "", Some(&cfg), ChannelOptions::default()).unwrap();
    ch.update_addresses(addrs(&["x:1"])).unwrap();
    ch.sync().unwrap();
    (rt, ch, script, calls)
}

/// A round_robin channel over the host's transports (no addresses yet).
fn round_robin(host: &Arc<Host>) -> (Runtime, Channel) {
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "",
        Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
        options(host),
    )
    .unwrap();
    (rt, ch)
}

fn soon(ms: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(ms))
}

#[test]
fn deadline_while_connecting_says_what_it_waited_for() {
    let (_rt, ch, _, _) = scripted("pick_test_queue", vec![(Connecting, Kind::Queue)]);
    let mut r = ch.reader();
    let t0 = Instant::now();
    assert_eq!(
        r.try_pick(&PickInfo::default()).unwrap_err(),
        PickError::NoSubConnAvailable
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "try_pick never waits"
    );
    let e = r
        .pick(
            &PickInfo::default(),
            &PickOptions {
                deadline: soon(30),
                wait_for_ready: false,
            },
        )
        .unwrap_err();
    assert_eq!(
        e,
        PickError::DeadlineExceeded("waiting for connections to become ready".into())
    );
    assert_eq!(e.status().code(), Code::DeadlineExceeded);
}

#[test]
fn transient_failure_fails_fast_unless_wait_for_ready() {
    let (_rt, ch, _, _) = scripted("pick_test_fail", vec![(TransientFailure, Kind::Fail)]);
    let mut r = ch.reader();
    let e = r
        .pick(
            &PickInfo::default(),
            &PickOptions {
                deadline: None,
                wait_for_ready: false,
            },
        )
        .unwrap_err();
    assert_eq!(
        e,
        PickError::Unavailable(Status::unavailable("backend on fire"))
    );
    let e = r
        .pick(
            &PickInfo::default(),
            &PickOptions {
                deadline: soon(30),
                wait_for_ready: true,
            },
        )
        .unwrap_err();
    assert_eq!(
        e,
        PickError::DeadlineExceeded("latest balancer error: backend on fire".into())
    );
}

#[test]
fn drop_fails_even_wait_for_ready() {
    let (_rt, ch, _, _) = scripted("pick_test_drop", vec![(Ready, Kind::Drop)]);
    let mut r = ch.reader();
    let e = r
        .pick(
            &PickInfo::default(),
            &PickOptions {
                deadline: soon(1000),
                wait_for_ready: true,
            },
        )
        .unwrap_err();
    assert!(matches!(e, PickError::Dropped(_)));
}

/// Each waiter tries each picker generation once: with 3 waiters and 3
/// queueing generations, the pickers are called exactly 9 times.
#[test]
fn each_generation_is_tried_once_per_waiter() {
    // Under Miri a pick's few steps take seconds: the waiters must not
    // reach their deadline before the last picker drops them.
    let patience_ms = if cfg!(miri) { 300_000 } else { 5000 };
    let (_rt, ch, script, calls) = scripted(
        "pick_test_generations",
        vec![
            (Connecting, Kind::Queue),
            (Connecting, Kind::Queue),
            (Connecting, Kind::Queue),
            (TransientFailure, Kind::Drop),
        ],
    );
    let ch = Arc::new(ch);
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let c = ch.clone();
            std::thread::spawn(move || {
                c.reader().pick(
                    &PickInfo::default(),
                    &PickOptions {
                        deadline: soon(patience_ms),
                        wait_for_ready: true,
                    },
                )
            })
        })
        .collect();
    // Let all three try generation 1 and go to sleep.
    let deadline = Instant::now() + Duration::from_millis(patience_ms);
    while calls.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "no waiter re-tries a generation it saw"
    );
    for expected in [6, 9] {
        ch.connect().unwrap();
        ch.sync().unwrap();
        let deadline = Instant::now() + Duration::from_millis(patience_ms);
        while calls.load(Ordering::SeqCst) < expected {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(calls.load(Ordering::SeqCst), expected);
    }
    ch.connect().unwrap(); // publishes the dropping picker: everyone fails now
    for w in waiters {
        assert!(matches!(w.join().unwrap(), Err(PickError::Dropped(_))));
    }
    assert!(script.lock().unwrap().is_empty());
}

#[test]
fn queued_pick_wakes_on_ready_and_done_reaches_the_hook() {
    struct Hooked {
        sc: Arc<SubConn>,
        hook: Box<dyn DoneHook>,
    }
    impl Picker for Hooked {
        fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
            PickResult::Complete {
                subconn: &self.sc,
                done: DoneHooks::one(&*self.hook),
            }
        }
    }
    type Entry = (String, Option<String>, Vec<(String, f64)>);
    #[derive(Default)]
    struct Log(Mutex<Vec<Entry>>);
    struct LogHook(Arc<Log>);
    impl DoneHook for LogHook {
        fn done(&self, sc: &SubConn, info: &DoneInfo<'_>) {
            let load = info.load.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            self.0
                 .0
                .lock()
                .unwrap()
                .push((sc.addr().into(), info.error.map(Into::into), load));
        }
    }
    struct HookBalancer(Arc<Log>);
    impl Balancer for HookBalancer {
        fn update_client_conn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            s: ClientConnState,
        ) -> Result<(), String> {
            let sc = cc.new_subconn(s.addresses[0].clone())?;
            cc.connect(sc.id());
            Ok(())
        }
        fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
        fn update_subconn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            _: SubConnId,
            s: &SubConnState,
        ) {
            if s.state == Ready {
                // Re-entrant: look the subchannel up again through a fresh one.
                let sc = cc.new_subconn(Address::new("hooked:1")).unwrap();
                cc.update_state(
                    Ready,
                    Box::new(Hooked {
                        sc,
                        hook: Box::new(LogHook(self.0.clone())),
                    }),
                );
            }
        }
        fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
        fn close(&mut self, _: &mut dyn ClientConn) {}
    }
    struct HookBuilder(Arc<Log>);
    impl Builder for HookBuilder {
        fn name(&self) -> &str {
            "pick_test_hook"
        }
        fn build(&self) -> Box<dyn Balancer> {
            Box::new(HookBalancer(self.0.clone()))
        }
    }
    let log = Arc::new(Log::default());
    registry::register(Arc::new(HookBuilder(log.clone())));
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let ch = Arc::new(
        Channel::new(
            &rt,
            "",
            Some(r#"{"loadBalancingConfig":[{"pick_test_hook":{}}]}"#),
            options(&host),
        )
        .unwrap(),
    );
    ch.update_addresses(addrs(&["a:1"])).unwrap();
    ch.sync().unwrap();
    let c2 = ch.clone();
    let t = std::thread::spawn(move || {
        let mut r = c2.reader();
        let p = r
            .pick(
                &PickInfo::default(),
                &PickOptions {
                    deadline: soon(5000),
                    wait_for_ready: false,
                },
            )
            .unwrap();
        let addr = p.subconn().addr().to_string();
        p.done(&DoneInfo {
            error: Some("boom"),
            code: switchyard::Code::Internal,
            latency: Duration::from_millis(1),
            load: &[("cpu_utilization", 0.5)],
        });
        let p2 = r.try_pick(&PickInfo::default()).unwrap();
        drop(p2); // dropped without done: reported as such
                  // Through words and back (what the C ABI does), the hook stays on.
        let raw = r.try_pick(&PickInfo::default()).unwrap().into_raw();
        // SAFETY: words from `into_raw`, turned back once.
        let p3 = unsafe { Pick::from_raw(raw) };
        assert!(p3.reports_outcome());
        p3.done(&DoneInfo {
            error: Some("raw"),
            code: switchyard::Code::Internal,
            ..DoneInfo::default()
        });
        // Given back to its reader: the hook hears of it all the same.
        let p4 = r.try_pick(&PickInfo::default()).unwrap();
        r.finish(
            p4,
            &DoneInfo {
                error: Some("finished"),
                code: switchyard::Code::Internal,
                ..DoneInfo::default()
            },
        );
        addr
    });
    std::thread::sleep(Duration::from_millis(20));
    report(&ch, &host, &["a:1"], Ready);
    assert_eq!(t.join().unwrap(), "hooked:1");
    let got = log.0.lock().unwrap().clone();
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[0],
        (
            "hooked:1".into(),
            Some("boom".into()),
            vec![("cpu_utilization".into(), 0.5)]
        )
    );
    assert_eq!(got[1].1.as_deref(), Some("pick dropped without done"));
    assert_eq!(got[2].1.as_deref(), Some("raw"));
    assert_eq!(got[3].1.as_deref(), Some("finished"));
}

/// The hit path hands out each rotation entry with the address's id, text
/// and tag; after a publish it steps aside until `try_pick` catches up, and
/// then rotates over the new picker only.
#[test]
fn cached_picks_hand_out_each_entry_with_its_tag() {
    let host = Host::new();
    let (_rt, ch) = round_robin(&host);
    let names = ["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"];
    let tagged = names
        .iter()
        .zip([10u64, 20, 30])
        .map(|(a, t)| Address::new(*a).with_tag(t))
        .collect();
    ch.update_addresses(tagged).unwrap();
    ch.sync().unwrap();
    report(&ch, &host, &names, Ready);
    let mut r = ch.reader();
    r.try_pick(&PickInfo::default())
        .unwrap()
        .done(&DoneInfo::default());
    let mut seen = std::collections::HashMap::new();
    for _ in 0..300 {
        let (pick, listed) = r.try_pick_cached(None).expect("a current rotation");
        let sc = pick.subconn();
        let (ptr, len) = listed.addr_raw();
        // SAFETY: the entry's address lives as long as the pick.
        let text = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len) };
        assert_eq!(text, sc.addr().as_bytes());
        assert_eq!(listed.id(), sc.id());
        assert_eq!(listed.tag(), sc.tag());
        *seen.entry(listed.tag()).or_insert(0) += 1;
        r.finish(pick, &DoneInfo::default());
    }
    assert_eq!(seen, [(10, 100), (20, 100), (30, 100)].into());
    report(&ch, &host, &["127.0.0.2:1"], Idle);
    assert!(
        r.try_pick_cached(None).is_none(),
        "a newer picker was published"
    );
    drop(r.try_pick(&PickInfo::default()).unwrap());
    for _ in 0..10 {
        let (pick, listed) = r.try_pick_cached(None).unwrap();
        assert_ne!(listed.tag(), 20);
        drop(pick);
    }
}

/// A borrowed pick reports to the done hook like an owned one, and a reader
/// moves on to a new picker once the borrow ends.
#[test]
fn borrowed_picks_report_done_and_release_the_reader() {
    let host = Host::new();
    let (_rt, ch) = round_robin(&host);
    ch.update_addresses(addrs(&["127.0.0.1:1", "127.0.0.2:1"]))
        .unwrap();
    ch.sync().unwrap();
    report(&ch, &host, &["127.0.0.1:1", "127.0.0.2:1"], Ready);
    let mut r = ch.reader();
    let mut seen = std::collections::HashMap::new();
    for _ in 0..10 {
        let p = r.try_pick_ref(&PickInfo::default()).unwrap();
        *seen.entry(p.subconn().addr().to_string()).or_insert(0) += 1;
        p.done(&DoneInfo::default());
    }
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), vec![5, 5]);
    report(&ch, &host, &["127.0.0.2:1"], Idle);
    for _ in 0..4 {
        let p = r.try_pick_ref(&PickInfo::default()).unwrap();
        assert_eq!(p.subconn().addr(), "127.0.0.1:1");
    }
}

/// The pick a reader keeps (what `sy_reader_pick` is made of): it waits
/// for a picker as `pick` does, hands out the subchannel until the next
/// pick, and is finished once; every READY address gets its turn through
/// the inline rotation afterwards.
#[test]
fn kept_picks_wait_rotate_and_finish_once() {
    let host = Host::new();
    let (_rt, ch) = round_robin(&host);
    let names = ["127.0.0.1:1", "127.0.0.2:1"];
    ch.update_addresses(addrs(&names)).unwrap();
    ch.sync().unwrap();
    let ch = Arc::new(ch);
    let c2 = ch.clone();
    let waiter = std::thread::spawn(move || {
        let mut r = c2.reader();
        assert!(!r.finish_kept(&DoneInfo::OK), "nothing kept yet");
        let options = PickOptions {
            deadline: soon(5000),
            wait_for_ready: false,
        };
        let addr = r
            .pick_kept(&PickInfo::default(), &options)
            .unwrap()
            .addr()
            .to_string();
        assert!(r.finish_kept(&DoneInfo::OK));
        assert!(!r.finish_kept(&DoneInfo::OK), "finished once");
        (r, addr)
    });
    std::thread::sleep(Duration::from_millis(20));
    report(&ch, &host, &names, Ready);
    let (mut r, first) = waiter.join().unwrap();
    assert!(names.contains(&first.as_str()));
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..100 {
        let addr = match r.try_pick_kept_cached(None) {
            Some(entry) => {
                let (p, len) = entry.addr_raw();
                // SAFETY: the entry's address lives in the reader's cached
                // table, which nothing can retire before the next pick.
                let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
                String::from_utf8(bytes.to_vec()).unwrap()
            }
            None => r
                .try_pick_kept(&PickInfo::default())
                .unwrap()
                .addr()
                .to_string(),
        };
        assert!(!r.kept_reports_outcome(), "round_robin has no done hook");
        assert!(r.finish_kept(&DoneInfo::OK));
        *seen.entry(addr).or_default() += 1;
    }
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), [50, 50]);
}

/// Any pick ends the reader's kept pick, as the header says ("valid until
/// the reader's next pick: any"), whether it takes the hit path or not: a
/// token pick (`try_pick`, `try_pick_cached`, the C ABI's `sy_pick`) or a
/// borrowed one (`try_pick_ref`) right after a kept pick leaves nothing to
/// finish. (On the hit path the kept pick used to survive, so the outcome
/// depended on whether a picker had been published in between.)
#[test]
fn any_pick_ends_the_kept_pick() {
    let host = Host::new();
    let (_rt, ch) = round_robin(&host);
    let names = ["127.0.0.1:1", "127.0.0.2:1"];
    ch.update_addresses(addrs(&names)).unwrap();
    ch.sync().unwrap();
    report(&ch, &host, &names, Ready);
    let mut r = ch.reader();
    for way in 0..3 {
        // Warm: the rotation is cached, so the next picks hit.
        let _ = r.try_pick(&PickInfo::default()).unwrap();
        r.try_pick_kept(&PickInfo::default()).unwrap();
        match way {
            0 => drop(r.try_pick(&PickInfo::default()).unwrap()),
            // As the C ABI does: the hit path, else the general one.
            1 => {
                if r.try_pick_cached(None).is_none() {
                    drop(r.try_pick(&PickInfo::default()).unwrap());
                }
            }
            _ => r
                .try_pick_ref(&PickInfo::default())
                .unwrap()
                .done(&DoneInfo::OK),
        }
        assert!(
            !r.finish_kept(&DoneInfo::OK),
            "way {way}: the kept pick survived"
        );
    }
}

/// Publishes its scripted picker inside a wrapper that only forwards.
struct Forwarding(Arc<dyn Picker>, Arc<AtomicUsize>);

impl Picker for Forwarding {
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.pick(info, local)
    }
    fn forwards_to(&self) -> Option<&dyn Picker> {
        Some(&*self.0)
    }
}

struct ForwardingBalancer(Arc<AtomicUsize>, Arc<AtomicUsize>);

impl Balancer for ForwardingBalancer {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        let inner = Arc::new(Scripted {
            calls: self.0.clone(),
            result: Kind::Fail,
        });
        cc.update_state(
            TransientFailure,
            Box::new(Forwarding(inner, self.1.clone())),
        );
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

struct ForwardingBuilder(Arc<AtomicUsize>, Arc<AtomicUsize>);
impl Builder for ForwardingBuilder {
    fn name(&self) -> &str {
        "pick_test_forwarding"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(ForwardingBalancer(self.0.clone(), self.1.clone()))
    }
}

#[test]
fn readers_call_the_picker_a_forwarding_picker_names() {
    let (inner, outer) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    registry::register(Arc::new(ForwardingBuilder(inner.clone(), outer.clone())));
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"pick_test_forwarding":{}}]}"#;
    let ch = Channel::new(&rt, "", Some(cfg), ChannelOptions::default()).unwrap();
    ch.update_addresses(addrs(&["x:1"])).unwrap();
    ch.sync().unwrap();
    let mut r = ch.reader();
    for _ in 0..5 {
        let e = r.try_pick(&PickInfo::default()).unwrap_err();
        assert_eq!(
            e,
            PickError::Unavailable(Status::unavailable("backend on fire"))
        );
    }
    assert_eq!(inner.load(Ordering::SeqCst), 5, "the inner picker picked");
    assert_eq!(
        outer.load(Ordering::SeqCst),
        0,
        "the forwarder was looked through"
    );
}
