//! Started calls (`Channel::unary_start`) on the event loop: deadlines that
//! hold whatever else is in flight, no thread per call, cancellation, close,
//! wait-for-ready; and what every call path reports to the caller and to the
//! policy: the server's early status, and metadata refused before sending.

use crate::support::*;
use crossbeam_channel::{unbounded, Receiver};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

fn md(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Starts a call whose result goes to the returned receiver.
fn start(
    ch: &Channel,
    metadata: &[(String, String)],
    deadline: Option<Duration>,
    wait_for_ready: bool,
) -> (CallHandle, Receiver<CallResult>) {
    let (tx, rx) = unbounded();
    let options = CallOptions {
        deadline: deadline.map(|d| Instant::now() + d),
        wait_for_ready: Some(wait_for_ready),
        metadata,
        hash: None,
    };
    let call = ch
        .unary_start("/echo.Echo/Unary", b"hi", &options, move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    (call, rx)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn ready_channel(rt: &Runtime, server: &TestServer) -> Channel {
    let ch = channel(rt, &target(std::slice::from_ref(server)), None, plaintext());
    echo(&mut ch.reader(), true).unwrap();
    ch
}

#[test]
fn a_short_call_ends_at_its_deadline_while_a_long_one_is_in_flight() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers[0]);
    let (_long, long_rx) = start(&ch, &md(&[("x-delay-ms", "3000")]), None, true);
    let t0 = Instant::now();
    let (_short, short_rx) = start(
        &ch,
        &md(&[("x-delay-ms", "3000")]),
        Some(Duration::from_millis(200)),
        true,
    );
    let r = short_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let took = t0.elapsed();
    assert_eq!(r.unwrap_err().code(), Code::DeadlineExceeded);
    // Its deadline, not the long call's 3 s (generous for a loaded machine).
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert!(
        long_rx.try_recv().is_err(),
        "the long call is still running"
    );
    let r = long_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_hundred_silent_calls_neither_delay_a_short_one_nor_add_threads_and_close_ends_each_once() {
    // Threads are counted for the whole process: run alone, in a child.
    if std::env::var_os("SY_CALLS_ALONE").is_none() {
        let name = "calls::a_hundred_silent_calls_neither_delay_a_short_one_nor_add_threads_and_close_ends_each_once";
        // Its output is kept unless it fails, so the run's own test count
        // does not see this test twice.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env("SY_CALLS_ALONE", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the child run failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers[0]);
    let never = md(&[("x-delay-ms", "600000")]);
    let (tx, rx) = unbounded();
    let start_silent = |i: u64| {
        let tx = tx.clone();
        let options = CallOptions {
            metadata: &never,
            ..Default::default()
        };
        ch.unary_start("/echo.Echo/Unary", b"x", &options, move |r| {
            let _ = tx.send((i, r));
        })
        .unwrap()
    };
    start_silent(0);
    let before = threads();
    for i in 1..100 {
        start_silent(i);
    }
    wait_until("100 calls at the server", || servers[0].requests() >= 101);
    assert_eq!(threads(), before, "threads grew with the calls in flight");
    let t0 = Instant::now();
    let (_short, short_rx) = start(&ch, &never, Some(Duration::from_millis(200)), false);
    let r = short_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(r.unwrap_err().code(), Code::DeadlineExceeded);
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert!(rx.try_recv().is_err(), "a silent call completed");

    ch.close();
    // Close waited for every completion: all 100 are in already, once each.
    let mut seen = HashMap::new();
    while let Ok((i, r)) = rx.try_recv() {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::Cancelled);
        assert_eq!(
            s.message(),
            "the channel is closed (grpc: the client connection is closing)"
        );
        *seen.entry(i).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 100);
    assert!(seen.values().all(|&n| n == 1));
    assert!(matches!(
        ch.unary_start("/echo.Echo/Unary", b"x", &CallOptions::default(), |_| {}),
        Err(Error::Closed)
    ));
}

/// Every closer waits for the completions, also one that finds another
/// already closing (a second `close` on another thread, the runtime
/// dropping): once its own close returns, a caller may free what its
/// closures use. (The second closer used to return at once.)
#[test]
fn a_closer_racing_another_waits_for_the_completions_too() {
    let servers = start_servers(1);
    let never = md(&[("x-delay-ms", "600000")]);
    for runtime_drops in [false, true] {
        let rt = Runtime::new().unwrap();
        let ch = Arc::new(ready_channel(&rt, &servers[0]));
        let before = servers[0].requests();
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..10 {
            let ran = ran.clone();
            let options = CallOptions {
                metadata: &never,
                ..Default::default()
            };
            ch.unary_start("/echo.Echo/Unary", b"x", &options, move |_| {
                // Slow closures: a closer that does not wait sees few run.
                std::thread::sleep(Duration::from_millis(20));
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .unwrap();
        }
        wait_until("10 calls at the server", || {
            servers[0].requests() >= before + 10
        });
        let first = {
            let ch = ch.clone();
            std::thread::spawn(move || ch.close())
        };
        wait_until("the first close under way", || ch.is_closed());
        if runtime_drops {
            drop(rt);
        } else {
            ch.close();
        }
        assert_eq!(
            ran.load(std::sync::atomic::Ordering::SeqCst),
            10,
            "returned before the completions ran (runtime dropping: {runtime_drops})"
        );
        first.join().unwrap();
    }
}

#[test]
fn cancel_ends_a_call_with_cancelled_and_resets_its_stream() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers[0]);
    let before = servers[0].requests();
    let (call, rx) = start(&ch, &md(&[("x-delay-ms", "30000")]), None, true);
    wait_until("the call at the server", || servers[0].requests() > before);
    assert!(call.cancel());
    let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(r.unwrap_err().code(), Code::Cancelled);
    wait_until("the server sees RST_STREAM", || servers[0].resets() == 1);
    assert!(!call.cancel(), "a second cancel finds nothing");
    assert!(!ch.cancel_call(call.id()));
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());

    // By id, and a finished call is not found.
    let (call, rx) = start(&ch, &md(&[("x-delay-ms", "30000")]), None, true);
    assert!(ch.cancel_call(call.id()));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_err()
            .code(),
        Code::Cancelled
    );
    let (call, rx) = start(&ch, &[], None, true);
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_ok());
    assert!(!call.cancel());
}

#[test]
fn wait_for_ready_started_calls_succeed_once_the_backend_comes_up() {
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &format!("ipv4:{addr}"), None, plaintext_fast_backoff());
    let calls: Vec<_> = (0..5)
        .map(|_| start(&ch, &[], Some(Duration::from_secs(20)), true))
        .collect();
    wait_state(&ch, ConnectivityState::TransientFailure);
    let fail_fast = start(&ch, &[], Some(Duration::from_secs(20)), false).1;
    assert_eq!(
        fail_fast
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    let _server = TestServer::start(Listen::Tcp(addr), ServerOptions::default()).unwrap();
    for (_, rx) in calls {
        let r = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
}

/// A one-address policy whose picks report to a done hook that records
/// every outcome's error and code.
mod recording {
    use super::*;

    pub type Outcomes = Arc<Mutex<Vec<(Option<String>, Code)>>>;

    struct Hook(Outcomes);
    impl DoneHook for Hook {
        fn done(&self, _: &SubConn, info: &DoneInfo<'_>) {
            self.0
                .lock()
                .unwrap()
                .push((info.error.map(Into::into), info.code));
        }
    }

    struct ReadyPicker {
        sc: Arc<SubConn>,
        hook: Hook,
    }
    impl Picker for ReadyPicker {
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

    struct Recording {
        outcomes: Outcomes,
        sc: Option<Arc<SubConn>>,
    }
    impl Balancer for Recording {
        fn update_client_conn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            s: ClientConnState,
        ) -> Result<(), String> {
            if self.sc.is_none() {
                let sc = cc.new_subconn(s.addresses[0].clone())?;
                cc.connect(sc.id());
                self.sc = Some(sc);
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
            match s.state {
                ConnectivityState::Ready => cc.update_state(
                    ConnectivityState::Ready,
                    Box::new(ReadyPicker {
                        sc,
                        hook: Hook(self.outcomes.clone()),
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
        fn close(&mut self, _: &mut dyn ClientConn) {}
    }

    /// Outcomes, and a policy name of its own: tests run at once, and a
    /// name shared by two would let one's channel build the other's policy.
    struct Build(Outcomes, String);
    impl Builder for Build {
        fn name(&self) -> &str {
            &self.1
        }
        fn build(&self) -> Box<dyn Balancer> {
            Box::new(Recording {
                outcomes: self.0.clone(),
                sc: None,
            })
        }
    }

    /// A ready channel to `server` under the recording policy, and what its
    /// done hook hears (cleared after the warm-up call).
    pub fn channel(rt: &Runtime, server: &TestServer) -> (Channel, Outcomes) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("calls_test_recording_{n}");
        let outcomes = Outcomes::default();
        registry::register(Arc::new(Build(outcomes.clone(), name.clone())));
        let config = format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]}}"#);
        let ch = super::channel(
            rt,
            &target(std::slice::from_ref(server)),
            Some(&config),
            plaintext(),
        );
        echo(&mut ch.reader(), true).unwrap();
        outcomes.lock().unwrap().clear();
        (ch, outcomes)
    }
}

/// Issue 9 defect 5: a server that answers trailers-only before reading the
/// body (as one rejecting a call does) closes the stream while the client
/// may still be sending it; the client must report the server's status,
/// never UNAVAILABLE "inactive stream", and so must the done hook.
#[test]
fn an_early_server_status_is_reported_not_masked_as_unavailable() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let (ch, outcomes) = recording::channel(&rt, &servers[0]);
    let early = md(&[("x-respond-early", "7")]);
    let large = vec![b'x'; 200_000];
    let codes: Vec<Code> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (ch, early, large) = (&ch, &early, &large);
                s.spawn(move || {
                    let mut r = ch.reader();
                    let options = CallOptions {
                        metadata: early,
                        deadline: Some(Instant::now() + Duration::from_secs(60)),
                        ..Default::default()
                    };
                    (0..500)
                        .map(|i| {
                            let body: &[u8] = if (i + w) % 10 == 0 { large } else { b"x" };
                            r.unary("/echo.Echo/Unary", body, &options)
                                .unwrap_err()
                                .code()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    // And started calls, on the loop.
    let (tx, rx) = unbounded();
    for i in 0..200 {
        let tx = tx.clone();
        let body = if i % 10 == 0 {
            large.clone()
        } else {
            b"x".to_vec()
        };
        let options = CallOptions {
            metadata: &early,
            ..Default::default()
        };
        ch.unary_start("/echo.Echo/Unary", &body, &options, move |r| {
            let _ = tx.send(r.map(|_| ()).unwrap_err().code());
        })
        .unwrap();
    }
    let started: Vec<Code> = (0..200)
        .map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap())
        .collect();
    let wrong: Vec<_> = codes
        .iter()
        .chain(&started)
        .filter(|c| **c != Code::PermissionDenied)
        .collect();
    assert!(wrong.is_empty(), "{} of 2200 calls: {wrong:?}", wrong.len());
    let heard = outcomes.lock().unwrap().clone();
    assert_eq!(heard.len(), 2200);
    // The message and the server's code, from both call paths.
    let masked: Vec<_> = heard
        .iter()
        .filter(|(e, code)| {
            e.as_deref() != Some("answered before the body") || *code != Code::PermissionDenied
        })
        .collect();
    assert!(
        masked.is_empty(),
        "the policy heard {} wrong outcomes, the first {:?}",
        masked.len(),
        masked.first()
    );
}

/// Issue 9 defect 7: metadata HTTP/2 cannot carry fails before anything is
/// picked or sent, from both call paths, and the policy hears nothing.
#[test]
fn connection_specific_metadata_is_refused_before_anything_is_sent() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let (ch, outcomes) = recording::channel(&rt, &servers[0]);
    let mut r = ch.reader();
    let before = servers[0].requests();
    for key in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "host",
        ":path",
        "grpc-timeout",
        "content-type",
        "Upper",
        "",
    ] {
        let metadata = md(&[("x-ok", "1"), (key, "v")]);
        let options = CallOptions {
            metadata: &metadata,
            ..Default::default()
        };
        // The error names the key (an empty one in gRPC-Go's words).
        let names = |m: &str| {
            m.contains(&format!("{key:?}"))
                || (key.is_empty() && m.contains("there is an empty key in the header"))
        };
        let e = r.unary("/echo.Echo/Unary", b"x", &options).unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{key}: {e}");
        assert!(names(e.message()), "{e}");
        match ch.unary_start("/echo.Echo/Unary", b"x", &options, |_| {
            panic!("a refused call completed")
        }) {
            Err(Error::InvalidArgument(m)) => assert!(names(&m), "{m}"),
            other => panic!("{key}: {other:?}"),
        }
    }
    let bad_value = md(&[("x-ok", "line\nbreak")]);
    let options = CallOptions {
        metadata: &bad_value,
        ..Default::default()
    };
    assert_eq!(
        r.unary("/echo.Echo/Unary", b"x", &options)
            .unwrap_err()
            .code(),
        Code::Internal
    );
    assert_eq!(servers[0].requests(), before, "something was sent");
    assert!(
        outcomes.lock().unwrap().is_empty(),
        "the policy heard of it"
    );
    // Ordinary metadata still goes through.
    let fine = md(&[("x-echo-a", "b"), ("x-trace-bin", "AAEC")]);
    let options = CallOptions {
        metadata: &fine,
        ..Default::default()
    };
    let resp = r.unary("/echo.Echo/Unary", b"x", &options).unwrap();
    assert_eq!(resp.headers.get("x-echo-a").unwrap(), "b");
}

/// Cancels racing completions: every call completes exactly once, and a
/// cancel that said "still running" always means a CANCELLED completion.
/// (Paced: a burst of resets makes h2 servers close the connection as a
/// rapid-reset attack, failing the calls that were not cancelled.)
#[test]
fn cancel_racing_completion_still_completes_each_call_exactly_once() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers[0]);
    let (tx, rx) = unbounded();
    let mut said_running = HashMap::new();
    let mut previous: Option<(u64, CallHandle)> = None;
    for i in 0..300u64 {
        let metadata = md(&[("x-delay-ms", &(i % 4).to_string())]);
        let options = CallOptions {
            metadata: &metadata,
            ..Default::default()
        };
        let tx = tx.clone();
        let call = ch
            .unary_start("/echo.Echo/Unary", b"x", &options, move |r| {
                let _ = tx.send((i, r.map(|_| ()).map_err(|s| s.code())));
            })
            .unwrap();
        // Cancel some at once (before the loop has seen them, or just
        // after), some a call later (in flight, or just finished).
        match i % 6 {
            0 => {
                said_running.insert(i, call.cancel());
            }
            3 => previous = Some((i, call)),
            _ => {
                said_running.insert(i, false);
            }
        }
        if i % 6 == 4 {
            let (j, call) = previous.take().unwrap();
            said_running.insert(j, call.cancel());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut seen = HashMap::new();
    for _ in 0..300 {
        let (i, r) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(seen.insert(i, r).is_none(), "call {i} completed twice");
    }
    for (i, r) in &seen {
        if said_running[i] {
            assert_eq!(*r, Err(Code::Cancelled), "call {i}");
        } else {
            assert_eq!(*r, Ok(()), "call {i}");
        }
    }
    ch.close();
    assert!(rx.try_recv().is_err());
}

/// Dropping the runtime completes the calls of a channel still alive and
/// waits for their closures; the channel then refuses new calls.
#[test]
fn dropping_the_runtime_completes_every_started_call() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers[0]);
    let silent = md(&[("x-delay-ms", "600000")]);
    let calls: Vec<_> = (0..10).map(|_| start(&ch, &silent, None, false)).collect();
    drop(rt);
    for (call, rx) in calls {
        let s = rx
            .try_recv()
            .expect("completed before drop returned")
            .unwrap_err();
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::Cancelled,
                "the channel is closed (grpc: the client connection is closing)"
            )
        );
        assert!(!call.cancel());
    }
    assert!(ch
        .unary_start("/echo.Echo/Unary", b"x", &CallOptions::default(), |_| {})
        .is_err());
}

/// A failed call carries what the server sent with its status: the error
/// details (`grpc-status-details-bin`, decoded: gRPC's richer error model)
/// and its metadata, from a trailers-only answer or from trailers after a
/// message; the transport's own fields (grpc-status, grpc-message,
/// grpc-encoding) are left out, content-type and the details' own field
/// kept, as gRPC-Go's metadata keeps them.
#[test]
fn a_failed_call_carries_the_servers_details_and_trailers() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), RR, plaintext());
    let mut r = ch.reader();
    let port = servers[0].port().to_string();
    let call = |r: &mut Reader, metadata: &[(String, String)]| {
        let options = CallOptions {
            wait_for_ready: Some(true),
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            metadata,
            ..Default::default()
        };
        r.unary("/echo.Echo/Unary", b"x", &options).unwrap_err()
    };
    // Trailers-only: the status, its details and the server's metadata in
    // the headers.
    let e = call(
        &mut r,
        &md(&[
            ("x-respond-status", "9"),
            ("x-respond-message", "no"),
            ("x-respond-details", "CAkSAm5v"),
        ]),
    );
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "no"));
    assert_eq!(e.details(), Some(&[8, 9, 18, 2, b'n', b'o'][..]));
    assert!(e
        .trailers()
        .contains(&("x-backend-port".to_string(), port.clone())));
    for (k, _) in e.trailers() {
        assert!(
            !["grpc-status", "grpc-message", "grpc-encoding"].contains(&k.as_str()),
            "{k}"
        );
    }
    assert!(
        e.trailers().contains(&(
            "grpc-status-details-bin".to_string(),
            "CAkSAm5v".to_string()
        )),
        "{:?}",
        e.trailers()
    );
    assert!(e.trailers().iter().any(|(k, _)| k == "content-type"));
    // A value outside printable ASCII is kept (gRPC-Go passes it on; it
    // used to be dropped).
    let e = call(
        &mut r,
        &md(&[("x-respond-status", "9"), ("x-respond-obs-text", "1")]),
    );
    assert!(
        e.trailers()
            .contains(&("x-obs".to_string(), "café".to_string())),
        "{:?}",
        e.trailers()
    );
    // Trailers-only: no headers apart from the status's.
    assert!(e.headers().is_empty(), "{:?}", e.headers());
    // Trailers after a message.
    let e = call(
        &mut r,
        &md(&[
            ("x-trailer-status", "3"),
            ("x-echo-trailer-why", "bad"),
            ("x-echo-head", "h"),
        ]),
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.details(), None);
    let t = e.trailers();
    assert!(
        t.contains(&("x-echo-trailer-why".to_string(), "bad".to_string())),
        "{t:?}"
    );
    // The headers before those trailers: the failed call's initial
    // metadata (gRPC keeps it), content-type with it (as gRPC-Go's).
    let h = e.headers();
    assert!(
        h.contains(&("x-echo-head".to_string(), "h".to_string())),
        "{h:?}"
    );
    assert!(h.iter().any(|(k, _)| k == "content-type"), "{h:?}");
    assert!(!t.iter().any(|(k, _)| k == "x-echo-head"), "{t:?}");
    assert!(t.contains(&("x-backend-port".to_string(), port)), "{t:?}");
    // A status no server sent carries nothing.
    let e = Status::unavailable("no ready subchannel");
    assert!(e.details().is_none() && e.trailers().is_empty() && e.headers().is_empty());
}
