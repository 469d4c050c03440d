//! Graceful policy switch with real backends on 127.0.0.1: switching policy
//! under load fails no RPC and the channel never leaves READY; a new policy
//! that never becomes ready leaves the old one serving; an RPC in flight on
//! the old policy's connection finishes after the switch (its connection
//! drains).

use crate::support::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::TestServer;

const PF: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;
const NEVER_READY: &str = r#"{"loadBalancingConfig":[{"switch_test_never_ready":{}}]}"#;

/// A channel over `servers` whose published states are recorded.
fn recorded_channel(
    rt: &Runtime,
    servers: &[TestServer],
    config: Option<&str>,
) -> (Arc<Channel>, Arc<Mutex<Vec<ConnectivityState>>>) {
    let states = Arc::new(Mutex::new(Vec::new()));
    let seen = states.clone();
    let mut opts = plaintext();
    opts.on_state_change = Some(Arc::new(move |s| seen.lock().unwrap().push(s)));
    let ch = Arc::new(channel(rt, &target(servers), config, opts));
    (ch, states)
}

/// RPCs sent back to back from several threads until stopped (or a bound):
/// each thread's successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    /// `threads` threads, alternately fail-fast and wait-for-ready.
    fn start(ch: &Arc<Channel>, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let (ch, stop) = (ch.clone(), stop.clone());
                std::thread::spawn(move || {
                    let wait_for_ready = t % 2 == 1;
                    let mut r = ch.reader();
                    let (mut ok, mut failed) = (0, Vec::new());
                    let give_up = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
                        match echo(&mut r, wait_for_ready) {
                            Ok(_) => ok += 1,
                            Err(e) => failed.push(format!("wait_for_ready={wait_for_ready}: {e}")),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the threads: how many RPCs succeeded, and every failure.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for t in self.threads {
            let (o, f) = t.join().unwrap();
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}

/// The channel's subchannels' ids, once they are exactly `n`, all READY
/// (the new policy swapped in and the old one's subchannels gone).
fn wait_subchannels(ch: &Channel, n: usize, what: &str) -> Vec<SubConnId> {
    let mut ids = Vec::new();
    wait_until(what, || {
        let snap = ch.snapshot().unwrap();
        ids = snap.subchannels.iter().map(|s| s.id).collect();
        snap.subchannels.len() == n && snap.subchannels.iter().all(|s| s.state == Ready)
    });
    ids
}

#[test]
fn policy_switches_under_load_fail_no_rpc_and_never_leave_ready() {
    let servers = start_servers(3);
    let rt = Runtime::new().unwrap();
    let (ch, states) = recorded_channel(&rt, &servers, RR);
    warm_up(&mut ch.reader(), 3);
    assert_eq!(*states.lock().unwrap(), [Connecting, Ready]);

    let load = Load::start(&ch, 4);
    for round in 0..3 {
        // Let some RPCs through on each policy.
        let until = servers.iter().map(TestServer::requests).sum::<u64>() + 20;
        wait_until("RPCs to flow", || {
            servers.iter().map(TestServer::requests).sum::<u64>() >= until
        });
        ch.update_service_config(PF).unwrap();
        wait_subchannels(&ch, 1, &format!("pick_first to take over ({round})"));
        ch.update_service_config(RR.unwrap()).unwrap();
        wait_subchannels(&ch, 3, &format!("round_robin to take over ({round})"));
    }
    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} of {} RPCs failed: {failed:?}",
        failed.len(),
        ok + failed.len() as u64
    );
    assert!(ok >= 120, "only {ok} RPCs ran");
    assert_eq!(
        *states.lock().unwrap(),
        [Connecting, Ready],
        "the channel never left READY"
    );
}

/// A policy that connects to every address but never says READY (as if its
/// backends never passed some check of its own): it stays CONNECTING.
struct NeverReady(Vec<Arc<SubConn>>);

impl Balancer for NeverReady {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        if self.0.is_empty() {
            for a in state.addresses {
                let sc = cc.new_subconn(a)?;
                cc.connect(sc.id());
                self.0.push(sc);
            }
        }
        cc.update_state(Connecting, Box::new(picker::QueuePicker));
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, cc: &mut dyn ClientConn) {
        for sc in self.0.drain(..) {
            cc.shutdown_subconn(sc.id());
        }
    }
}

struct NeverReadyBuilder;

impl Builder for NeverReadyBuilder {
    fn name(&self) -> &str {
        "switch_test_never_ready"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(NeverReady(Vec::new()))
    }
}

#[test]
fn a_new_policy_that_never_becomes_ready_leaves_the_old_one_serving() {
    registry::register(Arc::new(NeverReadyBuilder));
    let servers = start_servers(2);
    let rt = Runtime::new().unwrap();
    let (ch, states) = recorded_channel(&rt, &servers, RR);
    let mut r = ch.reader();
    warm_up(&mut r, 2);
    let serving = wait_subchannels(&ch, 2, "round_robin READY");

    ch.update_service_config(NEVER_READY).unwrap();
    // Its own connections come up (READY subchannels), yet it stays
    // CONNECTING: round_robin keeps serving, fail-fast RPCs included.
    wait_subchannels(&ch, 4, "the new policy's subchannels to connect");
    let ports = [servers[0].port(), servers[1].port()];
    for _ in 0..4 {
        assert_split(&split(&mut r, 20), &ports, 10);
        for _ in 0..10 {
            echo(&mut r, false).expect("fail-fast RPCs keep working");
        }
    }
    assert_eq!(ch.state(), Ready);

    // Switching back builds round_robin again beside the old one (the
    // pending policy goes at once), which takes over once READY.
    ch.update_service_config(RR.unwrap()).unwrap();
    let now = wait_subchannels(&ch, 2, "the new round_robin to take over");
    assert!(
        now.iter().all(|id| !serving.contains(id)),
        "{now:?} {serving:?}"
    );
    assert_split(&split(&mut r, 40), &ports, 20);
    assert_eq!(*states.lock().unwrap(), [Connecting, Ready]);
}

#[test]
fn an_rpc_in_flight_on_the_old_policy_finishes_after_the_switch() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let (ch, states) = recorded_channel(&rt, &servers, RR);
    warm_up(&mut ch.reader(), 1);
    let old = wait_subchannels(&ch, 1, "round_robin READY");
    assert_eq!(servers[0].connections(), 1);

    let long = {
        let ch = ch.clone();
        std::thread::spawn(move || {
            let md = vec![("x-delay-ms".to_string(), "5000".to_string())];
            ch.reader().unary(
                "/echo.Echo/Unary",
                b"long",
                &CallOptions {
                    deadline: Some(Instant::now() + Duration::from_secs(10)),
                    metadata: &md,
                    ..Default::default()
                },
            )
        })
    };
    wait_until("the long RPC to reach the server", || {
        servers[0].in_flight() == 1
    });

    // pick_first connects anew, is swapped in, and round_robin's
    // subchannel shuts down while the long RPC is still on its connection.
    ch.update_service_config(PF).unwrap();
    let new = wait_subchannels(&ch, 1, "pick_first to take over");
    assert_ne!(new, old);
    assert!(
        !long.is_finished(),
        "the switch completed before the RPC ended"
    );
    // Counted once the server has read the new connection's preface.
    wait_until("the new connection counted", || {
        servers[0].connections() >= 2
    });
    assert_eq!(servers[0].connections(), 2, "the old connection drains");

    let resp = long.join().unwrap().expect("the RPC in flight finishes OK");
    assert!(resp.message.starts_with(b"long|port="));
    wait_until("the drained connection to close", || {
        servers[0].connections() == 1
    });
    echo(&mut ch.reader(), false).unwrap();
    assert_eq!(*states.lock().unwrap(), [Connecting, Ready]);
}
