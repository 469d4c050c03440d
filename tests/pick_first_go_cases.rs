//! gRPC-Go's pick_first tests (balancer/pickfirst/pickfirst_test.go,
//! balancer/pickfirst/pickfirst_ext_test.go, grpc-go @ 4793ad04) ported onto
//! switchyard, case by case. Policy-level cases use the public
//! `TestClientConn` (gRPC-Go's `testutils.BalancerClientConn`); end-to-end
//! cases use real servers on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::balancer::{Balancer, ClientConnState, SubConnState};
use switchyard::ConnectivityState::*;
use switchyard::{registry, Address, Code, Endpoint, SubConnId};

fn pick_first() -> Box<dyn Balancer> {
    registry::get("pick_first").unwrap().build()
}

fn fail(cc: &mut TestClientConn, pf: &mut dyn Balancer, sc: SubConnId, msg: &str) {
    cc.set_subconn_state(
        pf,
        sc,
        SubConnState {
            state: TransientFailure,
            error: Some(Arc::from(msg)),
        },
    );
}

fn id(cc: &TestClientConn, addr: &str) -> SubConnId {
    cc.subconn_for(addr)
        .unwrap_or_else(|| panic!("no subchannel for {addr}"))
        .id()
}

fn fail_message(cc: &mut TestClientConn) -> String {
    match cc.pick() {
        Picked::Fail(s) => {
            assert_eq!(s.code(), Code::Unavailable);
            s.message().to_string()
        }
        p => panic!("expected a failing picker, got {p:?}"),
    }
}

fn update_endpoints(cc: &mut TestClientConn, pf: &mut dyn Balancer, addrs: &[&str]) {
    let eps = addrs
        .iter()
        .map(|a| Endpoint::from(Address::new(*a)))
        .collect();
    cc.update(pf, ClientConnState::new(eps, None)).unwrap();
}

// ---------------------------------------------------------------------------
// Differences
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Agreements (ports of gRPC-Go tests that pass)
// ---------------------------------------------------------------------------

/// TestPickFirstLeaf_TFPickerUpdate (pickfirst_test.go:278).
#[test]
fn go_tf_picker_update() {
    let mut cc = TestClientConn::new();
    let mut pf = pick_first();
    update_endpoints(
        &mut cc,
        &mut *pf,
        &["1.1.1.1:1", "1.1.1.1:1", "2.2.2.2:2", "1.1.1.1:1"],
    );
    let sc1 = id(&cc, "1.1.1.1:1");
    assert_eq!(cc.connects(), [sc1]);
    cc.set_state(&mut *pf, sc1, Connecting);
    fail(&mut cc, &mut *pf, sc1, "test err: connection refused");
    cc.set_state(&mut *pf, sc1, Idle);
    let sc2 = id(&cc, "2.2.2.2:2");
    assert_eq!(
        cc.connects(),
        [sc1, sc2],
        "sc1 not reconnected in the first pass"
    );
    assert_eq!(cc.pick(), Picked::Queue);
    cc.set_state(&mut *pf, sc2, Connecting);
    fail(&mut cc, &mut *pf, sc2, "test err: connection refused");
    assert_eq!(fail_message(&mut cc), "test err: connection refused");
    assert_eq!(
        cc.connects(),
        [sc1, sc2, sc1],
        "sc1 (IDLE) reconnected at pass end"
    );
    cc.set_state(&mut *pf, sc2, Idle);
    assert_eq!(cc.connects(), [sc1, sc2, sc1, sc2]);
    let published = cc.pickers_published();
    fail(&mut cc, &mut *pf, sc2, "test err: unreachable");
    assert_eq!(
        cc.pickers_published(),
        published,
        "one TF of two: no picker"
    );
    fail(&mut cc, &mut *pf, sc2, "test err: unreachable");
    assert_eq!(fail_message(&mut cc), "test err: unreachable");
}

/// TestPickFirst_InitialResolverError (pickfirst_test.go:55).
#[test]
fn go_initial_resolver_error() {
    let mut cc = TestClientConn::new();
    let mut pf = pick_first();
    cc.resolver_error(&mut *pf, "resolution failed: test error");
    assert_eq!(cc.state(), Some(TransientFailure));
    assert_eq!(
        fail_message(&mut cc),
        "name resolver error: resolution failed: test error"
    );
    update_endpoints(&mut cc, &mut *pf, &["1.1.1.1:1", "2.2.2.2:2"]);
    assert_eq!(cc.state(), Some(Connecting));
}

/// TestPickFirst_ResolverErrorinTF (pickfirst_test.go:88).
#[test]
fn go_resolver_error_in_tf() {
    let mut cc = TestClientConn::new();
    let mut pf = pick_first();
    update_endpoints(&mut cc, &mut *pf, &["1.1.1.1:1"]);
    let sc1 = cc.connects()[0];
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, sc1, "test error: connection refused");
    assert_eq!(fail_message(&mut cc), "test error: connection refused");
    cc.resolver_error(&mut *pf, "resolution failed: test error");
    assert_eq!(
        fail_message(&mut cc),
        "name resolver error: resolution failed: test error"
    );
    assert!(cc.shutdowns().is_empty());
}

/// Resolver error while CONNECTING / READY after a good update is ignored
/// (pickfirst.go:197-202).
#[test]
fn go_resolver_error_with_previous_update_is_ignored() {
    let mut cc = TestClientConn::new();
    let mut pf = pick_first();
    update_endpoints(&mut cc, &mut *pf, &["1.1.1.1:1"]);
    let sc = cc.connects()[0];
    let n = cc.pickers_published();
    cc.resolver_error(&mut *pf, "boom");
    assert_eq!(cc.pickers_published(), n);
    assert_eq!(cc.pick(), Picked::Queue);
    cc.set_state(&mut *pf, sc, Ready);
    cc.resolver_error(&mut *pf, "boom");
    assert_eq!(cc.state(), Some(Ready));
    assert!(matches!(cc.pick(), Picked::Complete { .. }));
    // IDLE too.
    cc.set_state(&mut *pf, sc, Idle);
    assert_eq!(cc.state(), Some(Idle));
    let n = cc.pickers_published();
    cc.resolver_error(&mut *pf, "boom");
    assert_eq!(cc.pickers_published(), n);
}

/// TestPickFirstLeaf_InterleavingIPv6Preferred (with a duplicate) and
/// TestPickFirstLeaf_InterleavingUnknownPreferred: subchannel creation order.
#[test]
fn go_interleaving_ipv6_and_unknown_preferred() {
    fn creation_order(list: &[&str]) -> Vec<String> {
        let mut cc = TestClientConn::new();
        let mut pf = pick_first();
        update_endpoints(&mut cc, &mut *pf, list);
        // Move on with the timer: subchannels are created in pass order.
        for _ in 0..list.len() {
            cc.advance(&mut *pf, Duration::from_millis(250));
        }
        cc.subconns().iter().map(|s| s.addr().to_string()).collect()
    }
    assert_eq!(
        creation_order(&[
            "[0001:0001:0001:0001:0001:0001:0001:0001]:8080",
            "[0001:0001:0001:0001:0001:0001:0001:0001]:8080",
            "1.1.1.1:1111",
            "2.2.2.2:2",
            "3.3.3.3:3",
            "[::FFFF:192.168.0.1]:2222",
            "[0002:0002:0002:0002:0002:0002:0002:0002]:2222",
            "[fe80::1%eth0]:3333",
            "grpc.io:80",
        ]),
        [
            "[0001:0001:0001:0001:0001:0001:0001:0001]:8080",
            "1.1.1.1:1111",
            "grpc.io:80",
            "[0002:0002:0002:0002:0002:0002:0002:0002]:2222",
            "2.2.2.2:2",
            "[fe80::1%eth0]:3333",
            "3.3.3.3:3",
            "[::FFFF:192.168.0.1]:2222",
        ]
    );
    assert_eq!(
        creation_order(&[
            "grpc.io:80",
            "1.1.1.1:1111",
            "2.2.2.2:2",
            "3.3.3.3:3",
            "[::FFFF:192.168.0.1]:2222",
            "[0001:0001:0001:0001:0001:0001:0001:0001]:8080",
            "[0002:0002:0002:0002:0002:0002:0002:0002]:8080",
            "[fe80::1%eth0]:3333",
            "example.com:80",
        ]),
        [
            "grpc.io:80",
            "1.1.1.1:1111",
            "[0001:0001:0001:0001:0001:0001:0001:0001]:8080",
            "example.com:80",
            "2.2.2.2:2",
            "[0002:0002:0002:0002:0002:0002:0002:0002]:8080",
            "3.3.3.3:3",
            "[fe80::1%eth0]:3333",
            "[::FFFF:192.168.0.1]:2222",
        ]
    );
}

/// TestPickFirstLeaf_Reconnection (pickfirst_ext_test.go:2650).
#[test]
fn go_reconnection() {
    let mut cc = TestClientConn::new();
    let mut pf = pick_first();
    update_endpoints(&mut cc, &mut *pf, &["1.1.1.1:1"]);
    assert_eq!(cc.states(), [Connecting]);
    let sc1 = cc.connects()[0];
    cc.set_state(&mut *pf, sc1, Connecting);
    cc.set_state(&mut *pf, sc1, Ready);
    assert_eq!(cc.state(), Some(Ready));
    cc.set_state(&mut *pf, sc1, Idle);
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.pick(), Picked::Queue);
    assert!(cc.run_work(&mut *pf));
    assert_eq!(cc.connects(), [sc1, sc1]);
    update_endpoints(&mut cc, &mut *pf, &["2.2.2.2:2"]);
    let sc2 = id(&cc, "2.2.2.2:2");
    assert_eq!(cc.connects().last(), Some(&sc2));
    assert!(cc.shutdowns().contains(&sc1));
    cc.set_state(&mut *pf, sc2, Connecting);
    cc.set_state(&mut *pf, sc2, Ready);
    assert_eq!(cc.state(), Some(Ready));
}

/// HappyEyeballs_TF_AfterEndOfList (pickfirst_ext_test.go:1935): timers
/// reach the end of the list, failures arrive out of order; TF only after
/// the last one.
#[test]
fn go_happy_eyeballs_tf_after_end_of_list() {
    let mut cc = TestClientConn::new();
    let mut pf = pick_first();
    update_endpoints(
        &mut cc,
        &mut *pf,
        &["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"],
    );
    let a = id(&cc, "127.0.0.1:1");
    cc.set_state(&mut *pf, a, Connecting);
    assert_eq!(cc.advance(&mut *pf, Duration::from_millis(250)), 1);
    let b = id(&cc, "127.0.0.2:1");
    cc.set_state(&mut *pf, b, Connecting);
    assert_eq!(cc.advance(&mut *pf, Duration::from_millis(250)), 1);
    let c = id(&cc, "127.0.0.3:1");
    cc.set_state(&mut *pf, c, Connecting);
    assert!(cc.timers().is_empty(), "no timer after the last address");
    fail(&mut cc, &mut *pf, a, "x");
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, c, "x");
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, b, "x");
    assert_eq!(cc.state(), Some(TransientFailure));
}

/// HappyEyeballs_TF_ThenTimerFires (pickfirst_ext_test.go:2093).
#[test]
fn go_happy_eyeballs_tf_then_timer_fires() {
    let mut cc = TestClientConn::new();
    let mut pf = pick_first();
    update_endpoints(
        &mut cc,
        &mut *pf,
        &["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"],
    );
    let a = id(&cc, "127.0.0.1:1");
    cc.set_state(&mut *pf, a, Connecting);
    fail(&mut cc, &mut *pf, a, "x");
    let b = id(&cc, "127.0.0.2:1");
    assert_eq!(cc.connects(), [a, b]);
    cc.set_state(&mut *pf, b, Connecting);
    assert_eq!(cc.advance(&mut *pf, Duration::from_millis(249)), 0);
    assert_eq!(cc.advance(&mut *pf, Duration::from_millis(1)), 1);
    let c = id(&cc, "127.0.0.3:1");
    assert_eq!(cc.connects(), [a, b, c]);
    cc.set_state(&mut *pf, b, Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert!(cc.shutdowns().contains(&c));
}

/// ResolverUpdates while READY (Active/InActiveBackendInUpdatedList,
/// IdenticalLists, DisjointLists): state sequences.
#[test]
fn go_resolver_updates_while_ready() {
    let mut cc = TestClientConn::new();
    let mut pf = pick_first();
    update_endpoints(&mut cc, &mut *pf, &["127.0.0.1:1", "127.0.0.2:1"]);
    let a = id(&cc, "127.0.0.1:1");
    cc.set_state(&mut *pf, a, Connecting);
    fail(&mut cc, &mut *pf, a, "down");
    let b = id(&cc, "127.0.0.2:1");
    cc.set_state(&mut *pf, b, Connecting);
    cc.set_state(&mut *pf, b, Ready);
    assert_eq!(cc.states(), [Connecting, Ready]);
    assert!(cc.shutdowns().contains(&a));
    // Identical, then active backend in a new list: nothing.
    update_endpoints(&mut cc, &mut *pf, &["127.0.0.1:1", "127.0.0.2:1"]);
    update_endpoints(&mut cc, &mut *pf, &["127.0.0.3:1", "127.0.0.2:1"]);
    assert_eq!(cc.states(), [Connecting, Ready]);
    assert!(cc.subconn_for("127.0.0.3:1").is_none());
    // Inactive backend in list: a new pass from CONNECTING.
    update_endpoints(&mut cc, &mut *pf, &["127.0.0.1:1", "127.0.0.3:1"]);
    assert_eq!(cc.states(), [Connecting, Ready, Connecting]);
    assert!(cc.shutdowns().contains(&b));
    let a2 = id(&cc, "127.0.0.1:1");
    assert_ne!(a2, a);
    cc.set_state(&mut *pf, a2, Connecting);
    cc.set_state(&mut *pf, a2, Ready);
    assert_eq!(cc.states(), [Connecting, Ready, Connecting, Ready]);
}

/// Address list update while CONNECTING (pickfirst.go:303-329): removed
/// subchannels shut down, the pass restarts at the new list's first
/// address, a kept CONNECTING subchannel is not asked again, and its READY
/// wins.
#[test]
fn go_update_while_connecting_restarts_the_pass() {
    let mut cc = TestClientConn::new();
    let mut pf = pick_first();
    update_endpoints(&mut cc, &mut *pf, &["127.0.0.1:1", "127.0.0.2:1"]);
    let a = id(&cc, "127.0.0.1:1");
    cc.set_state(&mut *pf, a, Connecting);
    cc.advance(&mut *pf, Duration::from_millis(250));
    let b = id(&cc, "127.0.0.2:1");
    cc.set_state(&mut *pf, b, Connecting);
    update_endpoints(&mut cc, &mut *pf, &["127.0.0.3:1", "127.0.0.2:1"]);
    assert_eq!(cc.shutdowns(), [a]);
    let c = id(&cc, "127.0.0.3:1");
    assert_eq!(cc.connects(), [a, b, c]);
    assert_eq!(cc.state(), Some(Connecting));
    cc.set_state(&mut *pf, c, Connecting);
    cc.advance(&mut *pf, Duration::from_millis(250));
    assert_eq!(cc.connects(), [a, b, c], "b is CONNECTING already");
    cc.set_state(&mut *pf, b, Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert!(cc.shutdowns().contains(&c));
}

/// EmptyAddressList (pickfirst_ext_test.go:1884) and
/// ResolverError_ZeroAddresses_WithPreviousUpdate.
#[test]
fn go_empty_address_list() {
    let mut cc = TestClientConn::new();
    let mut pf = pick_first();
    update_endpoints(&mut cc, &mut *pf, &["127.0.0.1:1"]);
    let a = cc.connects()[0];
    cc.set_state(&mut *pf, a, Connecting);
    cc.set_state(&mut *pf, a, Ready);
    assert!(cc
        .update(&mut *pf, ClientConnState::new(vec![], None))
        .is_err());
    assert_eq!(cc.state(), Some(TransientFailure));
    assert!(fail_message(&mut cc).contains("produced zero addresses"));
    assert!(cc.shutdowns().contains(&a));
    update_endpoints(&mut cc, &mut *pf, &["127.0.0.1:1"]);
    let a2 = id(&cc, "127.0.0.1:1");
    cc.set_state(&mut *pf, a2, Connecting);
    cc.set_state(&mut *pf, a2, Ready);
    assert_eq!(
        cc.states(),
        [Connecting, Ready, TransientFailure, Connecting, Ready]
    );
}

// ---------------------------------------------------------------------------
// End-to-end ports (real servers on 127.0.0.1)
// ---------------------------------------------------------------------------

#[path = "common/mod.rs"]
mod common;

mod e2e {
    use super::common::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use switchyard::ConnectivityState::*;
    use switchyard::*;
    use switchyard_testserver::{Listen, ServerOptions, TestServer};

    fn servers(n: usize) -> Vec<TestServer> {
        (0..n)
            .map(|_| {
                TestServer::start(
                    Listen::Tcp("127.0.0.1:0".parse().unwrap()),
                    ServerOptions::default(),
                )
                .unwrap()
            })
            .collect()
    }

    fn addrs(list: &[std::net::SocketAddr]) -> Vec<Address> {
        list.iter().map(|a| Address::new(a.to_string())).collect()
    }

    fn fast() -> ChannelOptions {
        plaintext_fast_backoff()
    }

    fn manual_channel(rt: &Runtime, opts: ChannelOptions, config: Option<&str>) -> Channel {
        Channel::new(rt, "", config, opts).unwrap()
    }

    /// Fail-fast RPCs until one reaches `port` (CheckRPCsToBackend).
    fn check_rpcs_to(ch: &Channel, port: u16) {
        let mut r = ch.reader();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(p) = echo(&mut r, false) {
                if p == port {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "RPCs never reached port {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..5 {
            assert_eq!(echo(&mut r, false).unwrap(), port);
        }
    }

    /// A listener that accepts and closes at once (a stopped
    /// RestartableListener); the thread is leaked when the test ends.
    fn hang_up_listener() -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
        addr
    }

    /// TestPickFirst_OneServerDown.
    #[test]
    fn go_one_server_down() {
        let mut s = servers(2);
        let list: Vec<_> = s.iter().map(TestServer::addr).collect();
        let rt = Runtime::new().unwrap();
        let ch = manual_channel(&rt, fast(), None);
        ch.update_addresses(addrs(&list)).unwrap();
        check_rpcs_to(&ch, list[0].port());
        s.remove(0).stop();
        check_rpcs_to(&ch, list[1].port());
    }

    /// TestPickFirst_AllServersDown.
    #[test]
    fn go_all_servers_down() {
        let s = servers(2);
        let list: Vec<_> = s.iter().map(TestServer::addr).collect();
        let rt = Runtime::new().unwrap();
        let ch = manual_channel(&rt, fast(), None);
        ch.update_addresses(addrs(&list)).unwrap();
        check_rpcs_to(&ch, list[0].port());
        for x in s {
            x.stop();
        }
        let mut r = ch.reader();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match echo(&mut r, false) {
                Err(e) if e.code() == Code::Unavailable => break,
                _ => {}
            }
            assert!(Instant::now() < deadline, "never UNAVAILABLE");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// TestPickFirst_AddressesRemoved.
    #[test]
    fn go_addresses_removed() {
        let s = servers(3);
        let a: Vec<_> = s.iter().map(TestServer::addr).collect();
        let rt = Runtime::new().unwrap();
        let ch = manual_channel(&rt, fast(), None);
        ch.update_addresses(addrs(&a)).unwrap();
        check_rpcs_to(&ch, a[0].port());
        ch.update_addresses(addrs(&[a[1], a[2]])).unwrap();
        check_rpcs_to(&ch, a[1].port());
        ch.update_addresses(addrs(&[a[1], a[2], a[0]])).unwrap();
        check_rpcs_to(&ch, a[1].port());
        ch.update_addresses(addrs(&[a[2], a[0]])).unwrap();
        check_rpcs_to(&ch, a[2].port());
        ch.update_addresses(addrs(&[a[0]])).unwrap();
        check_rpcs_to(&ch, a[0].port());
    }

    /// TestPickFirst_NewAddressWhileBlocking: an empty update fails the
    /// channel (TF); a wait-for-ready RPC blocks and completes once a
    /// backend is pushed.
    #[test]
    fn go_new_address_while_blocking() {
        let s = servers(2);
        let a: Vec<_> = s.iter().map(TestServer::addr).collect();
        let rt = Runtime::new().unwrap();
        let ch = Arc::new(manual_channel(&rt, fast(), None));
        ch.update_addresses(addrs(&a)).unwrap();
        check_rpcs_to(&ch, a[0].port());
        let _ = ch.update_addresses(vec![]);
        wait_state(&ch, TransientFailure);
        let ch2 = ch.clone();
        let t = std::thread::spawn(move || echo(&mut ch2.reader(), true));
        std::thread::sleep(Duration::from_millis(200));
        ch.update_addresses(addrs(&[a[0]])).unwrap();
        assert_eq!(t.join().unwrap().unwrap(), a[0].port());
    }

    /// TestPickFirstLeaf_StopConnectedServer_FirstServerRestart and
    /// TestPickFirstLeaf_EmptyAddressList: channel state transitions.
    #[test]
    fn go_stop_connected_server_and_empty_list_transitions() {
        let mut s = servers(1);
        let a = s[0].addr();
        let rt = Runtime::new().unwrap();
        let states = Arc::new(Mutex::new(Vec::new()));
        let mut opts = fast();
        let st = states.clone();
        opts.on_state_change = Some(Arc::new(move |x| st.lock().unwrap().push(x)));
        let ch = manual_channel(&rt, opts, None);
        ch.update_addresses(addrs(&[a])).unwrap();
        check_rpcs_to(&ch, a.port());
        s.remove(0).stop();
        wait_state(&ch, Idle);
        let restarted = TestServer::start(Listen::Tcp(a), ServerOptions::default()).unwrap();
        check_rpcs_to(&ch, a.port());
        let _ = ch.update_addresses(vec![]);
        wait_state(&ch, TransientFailure);
        ch.update_addresses(addrs(&[a])).unwrap();
        check_rpcs_to(&ch, a.port());
        ch.sync().unwrap();
        let got: Vec<_> = states
            .lock()
            .unwrap()
            .iter()
            .copied()
            .skip_while(|s| *s == Idle)
            .collect();
        assert_eq!(
            got,
            [
                Connecting,
                Ready,
                Idle,
                Connecting,
                Ready,
                TransientFailure,
                Connecting,
                Ready
            ]
        );
        drop(restarted);
    }

    /// TestPickFirst_ResolverError_WithPreviousUpdate_TransientFailure: a
    /// server that hangs up before speaking makes the channel TF; a
    /// resolver error then replaces the error RPCs fail with.
    #[test]
    fn go_resolver_error_after_tf_replaces_the_error() {
        let a = hang_up_listener();
        let rt = Runtime::new().unwrap();
        let ch = manual_channel(&rt, fast(), None);
        ch.update_addresses(addrs(&[a])).unwrap();
        ch.connect().unwrap();
        wait_state(&ch, TransientFailure);
        let e = echo(&mut ch.reader(), false).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        ch.report_resolver_error("error from name resolver")
            .unwrap();
        ch.sync().unwrap();
        let e = echo(&mut ch.reader(), false).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().contains("error from name resolver"), "{e:?}");
    }

    /// TestPickFirst_ResolverError_WithPreviousUpdate_Connecting: CONNECTING
    /// (a server that accepts and stays silent), a resolver error does not
    /// fail RPCs; they time out. Closing the connection gives TF/UNAVAILABLE.
    #[test]
    fn go_resolver_error_while_connecting_is_ignored() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let rel = release.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            l.set_nonblocking(true).unwrap();
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if let Ok((c, _)) = l.accept() {
                    if !rel.load(Ordering::SeqCst) {
                        held.push(c);
                    }
                }
                if rel.load(Ordering::SeqCst) {
                    held.clear();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let rt = Runtime::new().unwrap();
        let ch = manual_channel(&rt, fast(), None);
        ch.update_addresses(addrs(&[a])).unwrap();
        ch.connect().unwrap();
        wait_state(&ch, Connecting);
        ch.report_resolver_error("error from name resolver")
            .unwrap();
        ch.sync().unwrap();
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_millis(300)),
            wait_for_ready: Some(false),
            ..Default::default()
        };
        let e = ch
            .reader()
            .unary("/echo.Echo/Unary", b"ping", &opts)
            .unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        release.store(true, Ordering::SeqCst);
        wait_state(&ch, TransientFailure);
        let e = echo(&mut ch.reader(), false).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
    }

    /// TestPickFirst_ShuffleAddressList (first half): turning
    /// shuffleAddressList on for the same addresses keeps the connection
    /// (same policy, the READY address still listed: pickfirst.go:311).
    #[test]
    fn go_enabling_shuffle_keeps_the_connection() {
        let s = servers(2);
        let a: Vec<_> = s.iter().map(TestServer::addr).collect();
        for seed in 0..4u64 {
            let rt = Runtime::with_config(RuntimeConfig {
                seed: Some(seed),
                ..Default::default()
            })
            .unwrap();
            let (opts, seen) = {
                let (mut o, t) = recorded_plaintext();
                o.backoff = fast().backoff;
                (o, t)
            };
            let ch = manual_channel(&rt, opts, None);
            ch.update_addresses(addrs(&a)).unwrap();
            check_rpcs_to(&ch, a[0].port());
            let before: std::collections::HashSet<_> = seen.all().iter().map(|s| s.sc).collect();
            ch.update_service_config(
                r#"{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}"#,
            )
            .unwrap();
            ch.update_addresses(addrs(&a)).unwrap();
            ch.sync().unwrap();
            check_rpcs_to(&ch, a[0].port());
            let after: std::collections::HashSet<_> = seen.all().iter().map(|s| s.sc).collect();
            assert_eq!(before, after, "seed {seed}: a new subchannel was made");
        }
    }
}
