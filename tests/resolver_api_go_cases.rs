//! switchyard's resolver plug-in API against gRPC-Go's resolver
//! package and its ClientConn's treatment of resolver calls
//! (`resolver_wrapper.go`, `clientconn.go` updateResolverStateAndUnlock,
//! `internal/balancer/gracefulswitch`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::resolver::{
    self, Resolver, ResolverBuilder, ResolverClientConn, ResolverState, Target,
};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

#[derive(Default)]
struct Seen {
    cc: Mutex<Option<ResolverClientConn>>,
    builds: AtomicUsize,
    resolve_now: AtomicUsize,
    resolve_now_after_close: AtomicUsize,
    closes: AtomicUsize,
    closed: AtomicBool,
}

impl Seen {
    fn cc(&self) -> ResolverClientConn {
        self.cc.lock().unwrap().clone().expect("built")
    }
}

/// What the builder pushes inside `build`.
#[derive(Clone)]
enum OnBuild {
    Nothing,
    Update(ResolverState),
    Error(&'static str),
}

struct Pushed(&'static str, Arc<Seen>, OnBuild);
struct PushedResolver(Arc<Seen>);

impl ResolverBuilder for Pushed {
    fn scheme(&self) -> &str {
        self.0
    }
    fn build(&self, _: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
        self.1.builds.fetch_add(1, Ordering::SeqCst);
        self.1.closed.store(false, Ordering::SeqCst);
        *self.1.cc.lock().unwrap() = Some(cc.clone());
        match self.2.clone() {
            OnBuild::Nothing => {}
            OnBuild::Update(s) => cc.update(s).unwrap(),
            OnBuild::Error(e) => cc.report_error(e).unwrap(),
        }
        Ok(Box::new(PushedResolver(self.1.clone())))
    }
}

impl Resolver for PushedResolver {
    fn resolve_now(&mut self) {
        if self.0.closed.load(Ordering::SeqCst) {
            self.0
                .resolve_now_after_close
                .fetch_add(1, Ordering::SeqCst);
        }
        self.0.resolve_now.fetch_add(1, Ordering::SeqCst);
    }
    fn close(&mut self) {
        self.0.closes.fetch_add(1, Ordering::SeqCst);
        self.0.closed.store(true, Ordering::SeqCst);
    }
}

fn backend() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap()
}

fn endpoints(servers: &[&TestServer]) -> Vec<Endpoint> {
    servers
        .iter()
        .map(|s| Endpoint::from(Address::new(s.addr().to_string())))
        .collect()
}

fn insecure() -> ChannelOptions {
    ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    }
}

fn call(r: &mut Reader, wfr: bool, deadline: Duration) -> Result<u16, Status> {
    let resp = r.unary(
        "/echo.Echo/Unary",
        b"r",
        &CallOptions {
            wait_for_ready: Some(wfr),
            deadline: Some(Instant::now() + deadline),
            ..Default::default()
        },
    )?;
    let text = String::from_utf8(resp.message).unwrap();
    Ok(text.rsplit_once("|port=").unwrap().1.parse().unwrap())
}

/// gRPC-Go TestResolverUpdateDuringBuild_ServiceConfigParseError: an
/// update with an invalid config pushed inside Build; the first RPC (which
/// builds the resolver) fails UNAVAILABLE "error parsing service config".
#[test]
fn invalid_config_pushed_during_build_fails_the_first_rpc() {
    let seen = Arc::new(Seen::default());
    let state = ResolverState {
        endpoints: vec![],
        service_config: Some("bad json service config".into()),
    };
    resolver::register(Arc::new(Pushed(
        "go-ra-buildbad",
        seen.clone(),
        OnBuild::Update(state),
    )));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "go-ra-buildbad:///test.server", None, insecure()).unwrap();
    let e = call(&mut ch.reader(), false, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("error parsing service config"),
        "{e:?}"
    );
}

/// gRPC-Go TestResolverReportError: ReportError inside Build: the channel
/// goes TRANSIENT_FAILURE and RPCs fail UNAVAILABLE with the error.
#[test]
fn error_reported_during_build_fails_rpcs_with_it() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed(
        "go-ra-builderr",
        seen.clone(),
        OnBuild::Error("test resolver error"),
    )));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "go-ra-builderr:///", None, insecure()).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    let mut r = ch.reader();
    for _ in 0..5 {
        let e = call(&mut r, false, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(e.message().contains("test resolver error"), "{e:?}");
    }
}

/// gRPC-Go: a fail-fast RPC on a channel whose resolver has not answered
/// waits (waitForResolvedAddrs, then a queueing picker) until its deadline.
#[test]
fn fail_fast_rpc_waits_for_the_first_resolution() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed(
        "go-ra-silent",
        seen.clone(),
        OnBuild::Nothing,
    )));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "go-ra-silent:x", None, insecure()).unwrap();
    let e = call(&mut ch.reader(), false, Duration::from_millis(300)).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert_eq!(ch.state(), ConnectivityState::Connecting);
}

/// gRPC-Go: enterIdleMode closes the resolver (ccr.close: Close once, then
/// nil), the next use builds a new one; ClientConn.Close closes the live
/// one once, and an IDLE channel's (already closed) resolver not again.
/// ResolveNow never reaches a closed resolver.
#[test]
fn resolver_closed_once_per_build_across_idle_and_close() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed(
        "go-ra-idleclose",
        seen.clone(),
        OnBuild::Nothing,
    )));
    let b0 = backend();
    let clock = Arc::new(ManualClock::new());
    let rt = Runtime::with_config(RuntimeConfig {
        clock: clock.clone(),
        seed: Some(7),
    })
    .unwrap();
    let opts = ChannelOptions {
        idle_timeout: Some(Duration::from_secs(60)),
        ..insecure()
    };
    let ch = Channel::new(&rt, "go-ra-idleclose:x", None, opts).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    assert_eq!(seen.builds.load(Ordering::SeqCst), 1);
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: None,
        })
        .unwrap();
    ch.sync().unwrap();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(61));
        ch.sync().unwrap();
        ch.sync().unwrap();
    }
    assert_eq!(ch.state(), ConnectivityState::Idle);
    assert_eq!(seen.closes.load(Ordering::SeqCst), 1);
    // A closed resolver's pushes are ignored: the channel stays IDLE.
    let _ = seen.cc().update(ResolverState {
        endpoints: endpoints(&[&b0]),
        service_config: None,
    });
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::Idle);
    assert_eq!(seen.builds.load(Ordering::SeqCst), 1);
    // Used again: rebuilt; closed going IDLE again; then close: no extra.
    ch.connect().unwrap();
    ch.sync().unwrap();
    assert_eq!(seen.builds.load(Ordering::SeqCst), 2);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(61));
        ch.sync().unwrap();
        ch.sync().unwrap();
    }
    assert_eq!(ch.state(), ConnectivityState::Idle);
    assert_eq!(seen.closes.load(Ordering::SeqCst), 2);
    ch.close();
    assert_eq!(
        seen.closes.load(Ordering::SeqCst),
        2,
        "closed again on channel close"
    );
    assert_eq!(seen.resolve_now_after_close.load(Ordering::SeqCst), 0);
}

/// gRPC-Go TestResolverBalancerInteraction: Build -> UpdateState (during
/// Build, with a config naming a policy) -> the policy's
/// UpdateClientConnState calls ResolveNow -> the resolver's ResolveNow.
#[test]
fn policy_resolve_now_during_update_reaches_the_resolver() {
    struct AskAgain;
    struct AskAgainB;
    impl Balancer for AskAgainB {
        fn update_client_conn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            _: ClientConnState,
        ) -> Result<(), String> {
            cc.resolve_now();
            Ok(())
        }
        fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
        fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {
        }
        fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
        fn close(&mut self, _: &mut dyn ClientConn) {}
    }
    impl Builder for AskAgain {
        fn name(&self) -> &str {
            "go_ra_askagain"
        }
        fn build(&self) -> Box<dyn Balancer> {
            Box::new(AskAgainB)
        }
    }
    switchyard::registry::register(Arc::new(AskAgain));
    let seen = Arc::new(Seen::default());
    let state = ResolverState {
        endpoints: vec![Endpoint::from(Address::new("test:1"))],
        service_config: Some(r#"{"loadBalancingConfig":[{"go_ra_askagain":{}}]}"#.into()),
    };
    resolver::register(Arc::new(Pushed(
        "go-ra-interact",
        seen.clone(),
        OnBuild::Update(state),
    )));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "go-ra-interact:///", None, insecure()).unwrap();
    ch.connect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.resolve_now.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        seen.resolve_now.load(Ordering::SeqCst) > 0,
        "ResolveNow never reached the resolver"
    );
}
