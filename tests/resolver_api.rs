//! A resolver written outside the crate, with only the public API, drives
//! a channel over real backends on 127.0.0.1: address changes, a service
//! config that switches the policy, errors, and the channel's re-resolution
//! requests reaching it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::resolver::{
    self, Resolver, ResolverBuilder, ResolverClientConn, ResolverState, Target,
};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

/// What the test sees of its resolver: the handle to push through, the
/// target it was built for, how often the channel asked it to resolve, and
/// whether it was closed.
#[derive(Default)]
struct Seen {
    cc: Mutex<Option<ResolverClientConn>>,
    target: Mutex<Option<Target>>,
    resolve_now: AtomicUsize,
    closed: AtomicBool,
}

impl Seen {
    fn cc(&self) -> ResolverClientConn {
        self.cc.lock().unwrap().clone().expect("built")
    }
}

/// A push resolver: the test pushes, it counts what the channel asks.
struct Pushed(&'static str, Arc<Seen>);

struct PushedResolver(Arc<Seen>);

impl ResolverBuilder for Pushed {
    fn scheme(&self) -> &str {
        self.0
    }
    fn build(&self, target: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
        *self.1.target.lock().unwrap() = Some(target.clone());
        *self.1.cc.lock().unwrap() = Some(cc);
        Ok(Box::new(PushedResolver(self.1.clone())))
    }
}

impl Resolver for PushedResolver {
    fn resolve_now(&mut self) {
        self.0.resolve_now.fetch_add(1, Ordering::SeqCst);
    }
    fn close(&mut self) {
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

/// One wait-for-ready echo: the port of the backend that answered.
fn echo(r: &mut Reader) -> Result<u16, Status> {
    let resp = r.unary(
        "/echo.Echo/Unary",
        b"r",
        &CallOptions {
            wait_for_ready: Some(true),
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            ..Default::default()
        },
    )?;
    let text = String::from_utf8(resp.message).unwrap();
    Ok(text.rsplit_once("|port=").unwrap().1.parse().unwrap())
}

/// Polls `cond` every 10 ms for up to 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("never happened: {what}");
}

#[test]
fn a_resolver_outside_the_crate_drives_a_channel() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("outside", seen.clone())));
    let (b0, b1, b2) = (backend(), backend(), backend());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "Outside://auth/some/name",
        Some(r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#),
        insecure(),
    )
    .unwrap();
    // A channel starts IDLE: nothing is resolved until it is used.
    ch.sync().unwrap();
    assert!(seen.target.lock().unwrap().is_none(), "built while IDLE");
    assert_eq!(ch.state(), ConnectivityState::Idle);
    ch.connect().unwrap();
    ch.sync().unwrap();
    let target = seen.target.lock().unwrap().clone().unwrap();
    assert_eq!(
        (
            target.scheme.as_str(),
            target.authority.as_str(),
            target.endpoint()
        ),
        ("outside", "auth", "some/name")
    );
    let cc = seen.cc();
    let mut r = ch.reader();

    // Addresses: b0 alone, then b1 and b2.
    cc.update(ResolverState {
        endpoints: endpoints(&[&b0]),
        service_config: None,
    })
    .unwrap();
    assert_eq!(echo(&mut r).unwrap(), b0.port());
    cc.update(ResolverState {
        endpoints: endpoints(&[&b1, &b2]),
        service_config: None,
    })
    .unwrap();
    eventually("pick_first moves to b1", || echo(&mut r) == Ok(b1.port()));
    assert_eq!(ch.snapshot().unwrap().policy, "pick_first");

    // A service config from the resolver switches the policy: both serve.
    cc.update(ResolverState {
        endpoints: endpoints(&[&b1, &b2]),
        service_config: Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#.into()),
    })
    .unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.snapshot().unwrap().policy, "round_robin");
    let mut ports = std::collections::BTreeSet::new();
    eventually("round_robin uses b1 and b2", || {
        ports.insert(echo(&mut r).unwrap());
        ports.len() == 2
    });
    assert_eq!(ports, [b1.port(), b2.port()].into_iter().collect());

    // An invalid config is logged and the last good one kept.
    cc.update(ResolverState {
        endpoints: endpoints(&[&b1, &b2]),
        service_config: Some("{not json".into()),
    })
    .unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.snapshot().unwrap().policy, "round_robin");

    // An error: the policy keeps serving on its last good endpoints.
    cc.report_error("the name server is down").unwrap();
    ch.sync().unwrap();
    for _ in 0..4 {
        assert!(echo(&mut r).is_ok());
    }

    // A backend goes away: the channel asks the resolver to look again.
    let before = seen.resolve_now.load(Ordering::SeqCst);
    b2.stop();
    eventually("resolve_now after a lost backend", || {
        seen.resolve_now.load(Ordering::SeqCst) > before
    });

    // Closing the channel closes the resolver; later pushes are refused.
    assert!(!seen.closed.load(Ordering::SeqCst));
    drop(r);
    ch.close();
    assert!(seen.closed.load(Ordering::SeqCst));
    let late = cc.update(ResolverState {
        endpoints: endpoints(&[&b0]),
        service_config: None,
    });
    assert_eq!(late, Err(Error::Closed));
    assert_eq!(cc.report_error("late"), Err(Error::Closed));
}

#[test]
fn a_resolver_error_before_any_address_fails_rpcs_with_it() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("erring", seen.clone())));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "erring:x", None, insecure()).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    seen.cc().report_error("no such service").unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    let e = ch
        .reader()
        .unary("/echo.Echo/Unary", b"r", &CallOptions::default())
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("no such service"), "{e:?}");
    // The resolver recovers: the channel follows.
    let b0 = backend();
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: None,
        })
        .unwrap();
    assert_eq!(echo(&mut ch.reader()).unwrap(), b0.port());
}

#[test]
fn a_refused_target_fails_channel_creation_and_a_refused_build_the_channel() {
    // A real backend: what a refused build pushed before refusing would
    // make the channel READY, were it applied.
    let server = backend();
    let pushed = endpoints(&[&server]);
    struct Refuses(Vec<Endpoint>);
    impl ResolverBuilder for Refuses {
        fn scheme(&self) -> &str {
            "refuses"
        }
        fn check(&self, t: &Target) -> Result<(), String> {
            match t.endpoint() {
                "bad" => Err("a bad name".into()),
                _ => Ok(()),
            }
        }
        fn build(&self, t: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
            if t.endpoint() == "pushes" {
                cc.update(ResolverState {
                    endpoints: self.0.clone(),
                    service_config: None,
                })
                .unwrap();
            }
            Err(format!("cannot resolve {}", t.endpoint()))
        }
    }
    resolver::register(Arc::new(Refuses(pushed)));
    let rt = Runtime::new().unwrap();
    let e = Channel::new(&rt, "refuses:///bad", None, insecure())
        .err()
        .unwrap();
    assert_eq!(e, Error::InvalidTarget("a bad name".into()));
    // Built when the channel is first used: a refusal fails its RPCs.
    let ch = Channel::new(&rt, "refuses:///x", None, insecure()).unwrap();
    let e = ch
        .reader()
        .unary("/echo.Echo/Unary", b"r", &CallOptions::default())
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("cannot resolve x"), "{e:?}");
    // The state follows the failing picker's publish (gRPC-Go's order).
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    // A build that pushed before refusing: the push goes with the
    // resolver (it used to be applied after the refusal, and the channel
    // served the refused resolver's addresses).
    let ch = Channel::new(&rt, "refuses:///pushes", None, insecure()).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    let e = ch
        .reader()
        .unary("/echo.Echo/Unary", b"r", &CallOptions::default())
        .unwrap_err();
    assert!(e.message().contains("cannot resolve pushes"), "{e:?}");
    assert_eq!(
        server.connections(),
        0,
        "connected to a refused resolver's address"
    );
    // The built-in dns resolver asks the server in the authority, which
    // must be an IP address: a name is refused, saying so.
    let e = Channel::new(&rt, "dns://ns.example/localhost:1", None, insecure())
        .err()
        .unwrap();
    assert!(e.to_string().contains("must be an IP address"), "{e}");
    // Bad targets of the built-ins fail here too, with the reason.
    let e = Channel::new(&rt, "ipv4:127.0.0.1:99999", None, insecure())
        .err()
        .unwrap();
    assert!(e.to_string().contains("out of range"), "{e}");
}

#[test]
fn the_host_as_resolver_hears_resolve_now() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "",
        None,
        ChannelOptions {
            on_resolve_now: Some(Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            })),
            ..insecure()
        },
    )
    .unwrap();
    ch.update_addresses(vec![Address::new(b0.addr().to_string())])
        .unwrap();
    assert_eq!(echo(&mut ch.reader()).unwrap(), b0.port());
    b0.stop();
    eventually("on_resolve_now after a lost backend", || {
        asked.load(Ordering::SeqCst) > 0
    });
}

/// The built-in `dns` resolver behind the same API: a bare `host:port` and
/// `dns:///host:port` reach the backend, and TLS verifies the target's host
/// name (the certificate names "localhost", not 127.0.0.1).
#[test]
fn the_dns_resolver_resolves_localhost_and_tls_follows_its_host() {
    let plain = backend();
    let rt = Runtime::new().unwrap();
    for target in [
        format!("localhost:{}", plain.port()),
        format!("dns:///localhost:{}", plain.port()),
    ] {
        let ch = Channel::new(&rt, &target, None, insecure()).unwrap();
        assert_eq!(echo(&mut ch.reader()).unwrap(), plain.port(), "{target}");
    }
    let pki = switchyard_testserver::TestPki::new();
    let tls = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions {
            tls: Some(pki.server_tls(&[b"h2"])),
            ..Default::default()
        },
    )
    .unwrap();
    let ch = Channel::new(
        &rt,
        &format!("dns:///localhost:{}", tls.port()),
        None,
        ChannelOptions {
            transport: Some(TransportConfig::tls(TlsSettings {
                server_name: String::new(),
                roots_pem: Some(pki.ca_pem.clone()),
                client_cert: None,
            })),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(echo(&mut ch.reader()).unwrap(), tls.port());
}

/// gRPC's precedence (A2, A21): the resolver's config replaces the
/// channel's default one; an invalid first one from the resolver leaves the
/// channel failing with its error (the default does not paper over it)
/// until a valid one comes; an invalid later one keeps the last good one.
#[test]
fn the_resolvers_service_config_comes_first_and_an_invalid_first_one_fails_rpcs() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("configuring", seen.clone())));
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let default = r#"{"methodConfig":[{"name":[{}],"timeout":"7s"}]}"#;
    let ch = Channel::new(&rt, "configuring:x", Some(default), insecure()).unwrap();
    ch.connect().unwrap(); // channels start IDLE: build the resolver
    ch.sync().unwrap();
    let mut r = ch.reader();
    let timeout = |r: &mut Reader| r.method_config("/echo.Echo/Unary").and_then(|c| c.timeout);
    assert_eq!(timeout(&mut r), Some(Duration::from_secs(7)), "the default");

    // The resolver's first config is invalid: nothing runs, RPCs say why.
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: Some(r#"{"methodConfig":[{"timeout":"3"}]}"#.into()),
        })
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    let e = ch
        .reader()
        .unary("/echo.Echo/Unary", b"r", &CallOptions::default())
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.message()
            .contains(r#"methodConfig[0].timeout: "3" is not a duration"#),
        "{e:?}"
    );
    assert_eq!(timeout(&mut r), None, "no config is in force");
    // Wait-for-ready RPCs fail too, at once (gRPC-Go's failing picker ends
    // them "unconditionally"), not at their deadline.
    let t0 = Instant::now();
    let e = echo(&mut r).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(b0.requests(), 0);

    // A valid one: it, not the default, is in force, on the kept endpoints.
    let from_resolver = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"timeout":"2s"}]}"#;
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: Some(from_resolver.into()),
        })
        .unwrap();
    ch.sync().unwrap(); // until then, RPCs still fail at once
    assert_eq!(echo(&mut r).unwrap(), b0.port());
    assert_eq!(timeout(&mut r), Some(Duration::from_secs(2)));
    assert_eq!(
        ch.method_config("/echo.Echo/Other").unwrap().timeout,
        Some(Duration::from_secs(2))
    );
    assert!(ch.method_config("/else.Where/M").is_none());

    // An invalid one now keeps it; no config at all means the default
    // again (gRPC: a resolver result without a config).
    for (config, expected) in [(Some("{\"methodConfig\":7}".to_string()), 2), (None, 7)] {
        seen.cc()
            .update(ResolverState {
                endpoints: endpoints(&[&b0]),
                service_config: config,
            })
            .unwrap();
        ch.sync().unwrap();
        assert_eq!(timeout(&mut r), Some(Duration::from_secs(expected)));
        assert_eq!(echo(&mut r).unwrap(), b0.port());
    }
}

/// A resolver that brings no config at first: the channel's default is in
/// force, and counts as the last good one when an invalid config follows.
#[test]
fn without_a_resolver_config_the_default_is_the_last_good_one() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("defaulting", seen.clone())));
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let default = r#"{"methodConfig":[{"name":[{}],"waitForReady":true}]}"#;
    let ch = Channel::new(&rt, "defaulting:x", Some(default), insecure()).unwrap();
    ch.connect().unwrap(); // channels start IDLE: build the resolver
    ch.sync().unwrap();
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: None,
        })
        .unwrap();
    let mut r = ch.reader();
    assert_eq!(echo(&mut r).unwrap(), b0.port());
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: Some("{not json".into()),
        })
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::Ready);
    assert_eq!(r.method_config("/a/b").unwrap().wait_for_ready, Some(true));
    // Empty text is no config: the default stays (it used to be parsed as
    // the empty config, which replaced it).
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: Some(" ".into()),
        })
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(r.method_config("/a/b").unwrap().wait_for_ready, Some(true));
}

/// gRPC's rule: a resolver result without a service config means the
/// channel's default one, so a config the resolver stops sending (a DNS TXT
/// record removed) is undone rather than kept forever.
#[test]
fn a_config_the_resolver_stops_sending_gives_way_to_the_default() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("reverting", seen.clone())));
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let default = r#"{"methodConfig":[{"name":[{}],"waitForReady":true}]}"#;
    let ch = Channel::new(&rt, "reverting:x", Some(default), insecure()).unwrap();
    ch.connect().unwrap(); // channels start IDLE: build the resolver
    ch.sync().unwrap();
    let push = |config: Option<&str>| {
        seen.cc()
            .update(ResolverState {
                endpoints: endpoints(&[&b0]),
                service_config: config.map(str::to_string),
            })
            .unwrap();
        ch.sync().unwrap();
    };
    let mut r = ch.reader();
    push(None);
    assert_eq!(echo(&mut r).unwrap(), b0.port());
    assert_eq!(r.method_config("/a/b").unwrap().wait_for_ready, Some(true));
    push(Some(r#"{"methodConfig":[{"name":[{}],"timeout":"5s"}]}"#));
    let resolved = r.method_config("/a/b").unwrap();
    assert_eq!(
        resolved.wait_for_ready, None,
        "the resolver's config replaces the default"
    );
    push(None);
    assert_eq!(
        r.method_config("/a/b").unwrap().wait_for_ready,
        Some(true),
        "without a config from the resolver, the default applies again"
    );
    assert_eq!(echo(&mut r).unwrap(), b0.port());
}

/// A resolver's invalid first config (no good one before it): the channel
/// asks the resolver to resolve again, as gRPC-Go's bad-state answer makes
/// a polling resolver do; one that waits to be asked would otherwise leave
/// the channel failing for good.
#[test]
fn an_invalid_first_config_asks_for_re_resolution() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("badfirstcfg", seen.clone())));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "badfirstcfg:x", None, insecure()).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    let before = seen.resolve_now.load(Ordering::SeqCst);
    seen.cc()
        .update(ResolverState {
            endpoints: vec![Endpoint::from(Address::new("127.0.0.1:1"))],
            service_config: Some(r#"{"loadBalancingConfig":[{"nope":{}}]}"#.into()),
        })
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    // Paced by the channel's backoff: the first request a second on.
    eventually("resolve_now after an invalid first config", || {
        seen.resolve_now.load(Ordering::SeqCst) > before
    });
}

/// An invalid first config, then an update with none at all: the channel's
/// default config applies (a resolver result without a config means the
/// default), so a bad TXT record removed brings the channel back.
#[test]
fn an_update_without_a_config_after_an_invalid_one_brings_the_default_back() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("badthennone", seen.clone())));
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "badthennone:x", None, insecure()).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: Some(r#"{"loadBalancingConfig":[{"nope":{}}]}"#.into()),
        })
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: None,
        })
        .unwrap();
    ch.sync().unwrap();
    let mut r = ch.reader();
    let options = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(5)),
        wait_for_ready: Some(true),
        ..Default::default()
    };
    assert!(r.unary("/echo.Echo/Unary", b"r", &options).is_ok());
}

/// An invalid default config leaves the channel failing (every RPC
/// UNAVAILABLE saying why, wait-for-ready ones too), but the first RPC
/// still builds its resolver, whose valid config heals it.
#[test]
fn an_invalid_default_config_still_builds_the_resolver_which_can_heal_it() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("baddefault", seen.clone())));
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "baddefault:x", Some("{]"), insecure()).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    let mut r = ch.reader();
    let t0 = Instant::now();
    let e = echo(&mut r).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("invalid service config"), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    eventually("the resolver built on first use", || {
        seen.target.lock().unwrap().is_some()
    });
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#.into()),
        })
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(echo(&mut r).unwrap(), b0.port());
}

/// A resolver error before any config: the channel's default config is in
/// force (gRPC-Go applies it then), so an invalid config that follows keeps
/// it instead of failing the channel.
#[test]
fn after_a_resolver_error_an_invalid_config_keeps_the_default() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("errthenbad", seen.clone())));
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let default = r#"{"methodConfig":[{"name":[{}],"timeout":"7s"}]}"#;
    let ch = Channel::new(&rt, "errthenbad:x", Some(default), insecure()).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    seen.cc().report_error("no such name").unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: Some("{not json".into()),
        })
        .unwrap();
    let mut r = ch.reader();
    assert_eq!(echo(&mut r).unwrap(), b0.port());
    assert_eq!(
        r.method_config("/a/b").unwrap().timeout,
        Some(Duration::from_secs(7))
    );
}

/// A resolver that answers every `resolve_now` at once with the same
/// rejected state (no address): the channel asks again only as its backoff
/// allows (gRPC-Go's DNS resolver backs off on a bad state the same way),
/// not in a loop as fast as the loop turns; an accepted update starts the
/// pacing over.
struct Insisting(Arc<Seen>);

struct InsistingResolver(Arc<Seen>);

impl ResolverBuilder for Insisting {
    fn scheme(&self) -> &str {
        "insisting"
    }
    fn build(&self, _: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
        *self.0.cc.lock().unwrap() = Some(cc);
        Ok(Box::new(InsistingResolver(self.0.clone())))
    }
}

impl Resolver for InsistingResolver {
    fn resolve_now(&mut self) {
        self.0.resolve_now.fetch_add(1, Ordering::SeqCst);
        let _ = self.0.cc().update(ResolverState::default());
    }
    fn close(&mut self) {}
}

#[test]
fn re_resolution_after_a_rejected_update_is_paced_by_the_backoff() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Insisting(seen.clone())));
    let rt = Runtime::new().unwrap();
    let mut opts = insecure();
    opts.backoff.initial = Duration::from_millis(100);
    opts.backoff.jitter = 0.0;
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
    let ch = Channel::new(&rt, "insisting:x", Some(config), opts).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    let t0 = Instant::now();
    seen.cc().update(ResolverState::default()).unwrap();
    // Asked at about 100, 260 and 516 ms (1.6x apart; later on a loaded
    // machine, never sooner); unpaced, thousands of times at once.
    let deadline = t0 + Duration::from_secs(10);
    while seen.resolve_now.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "not asked three times");
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "asked 3 times in {took:?}"
    );
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
}

/// `disable_service_config` (gRPC's `WithDisableServiceConfig`): the
/// resolver's configs are ignored, valid or not, and the channel's default
/// stays in force.
#[test]
fn with_service_configs_disabled_the_resolvers_are_ignored() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("noconfigs", seen.clone())));
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let mut opts = insecure();
    opts.resolver.disable_service_config = true;
    let default = r#"{"methodConfig":[{"name":[{}],"timeout":"7s"}]}"#;
    let ch = Channel::new(&rt, "noconfigs:x", Some(default), opts).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    assert!(
        seen.cc().options().disable_service_config,
        "told to the resolver"
    );
    let mut r = ch.reader();
    for config in [
        r#"{"methodConfig":[{"name":[{}],"timeout":"2s"}]}"#,
        "{not json",
    ] {
        seen.cc()
            .update(ResolverState {
                endpoints: endpoints(&[&b0]),
                service_config: Some(config.into()),
            })
            .unwrap();
        ch.sync().unwrap();
        assert_eq!(echo(&mut r).unwrap(), b0.port());
        assert_eq!(
            r.method_config("/a/b").unwrap().timeout,
            Some(Duration::from_secs(7)),
            "{config}"
        );
    }
}

/// An invalid config after a good one keeps the good one and still gives
/// the policy the endpoints, but the update counts as rejected (gRPC-Go
/// returns ErrBadResolverState): the resolver is asked again, paced, while
/// the channel serves on.
#[test]
fn an_invalid_config_after_a_good_one_asks_the_resolver_again() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("badafter", seen.clone())));
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let mut opts = insecure();
    opts.backoff.initial = Duration::from_millis(100);
    opts.backoff.jitter = 0.0;
    let ch = Channel::new(&rt, "badafter:x", None, opts).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    let good = r#"{"methodConfig":[{"name":[{}],"timeout":"7s"}]}"#;
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: Some(good.into()),
        })
        .unwrap();
    let mut r = ch.reader();
    assert_eq!(echo(&mut r).unwrap(), b0.port());
    std::thread::sleep(Duration::from_millis(300));
    let before = seen.resolve_now.load(Ordering::SeqCst);
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: Some("{not json".into()),
        })
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(echo(&mut r).unwrap(), b0.port());
    assert_eq!(
        r.method_config("/a/b").unwrap().timeout,
        Some(Duration::from_secs(7)),
        "the good config stays"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.resolve_now.load(Ordering::SeqCst) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen.resolve_now.load(Ordering::SeqCst) > before,
        "the resolver was never asked again"
    );
    assert_eq!(ch.state(), ConnectivityState::Ready);
}

/// An endpoint of two addresses under round_robin with health checking:
/// the first connection made wins its pick_first child's pass whatever its
/// health says, as in gRPC-Go (health decides READY or TRANSIENT_FAILURE,
/// not which address): NOT_SERVING on the first backend never sends the
/// child to the second, and SERVING brings it READY there.
#[test]
fn a_connected_but_unhealthy_address_is_kept_not_failed_over() {
    use switchyard::transport::health_proto::{NOT_SERVING, SERVING};
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("twoaddrs", seen.clone())));
    let (b0, b1) = (backend(), backend());
    b0.set_serving("", NOT_SERVING);
    let rt = Runtime::new().unwrap();
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}],
                     "healthCheckConfig":{"serviceName":""}}"#;
    let ch = Channel::new(&rt, "twoaddrs:x", Some(config), insecure()).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    seen.cc()
        .update(ResolverState {
            endpoints: vec![Endpoint::new(vec![
                Address::new(b0.addr().to_string()),
                Address::new(b1.addr().to_string()),
            ])],
            service_config: None,
        })
        .unwrap();
    eventually("TRANSIENT_FAILURE on b0's health", || {
        ch.state() == ConnectivityState::TransientFailure
    });
    // Well past the happy eyeballs delay (250 ms): b1 is never tried.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    assert_eq!(b1.connections(), 0, "failed over to the second address");
    b0.set_serving("", SERVING);
    let mut r = ch.reader();
    assert_eq!(echo(&mut r).unwrap(), b0.addr().port());
    assert_eq!(b1.connections(), 0);
}

/// A resolver unit-tested with no channel: `TestResolverClientConn` records
/// what it pushes (here the built-in `ipv4` resolver's one update) and can
/// stand for a channel that closed it.
#[test]
fn a_resolver_is_tested_against_a_recording_client_conn() {
    use switchyard::resolver::testing::TestResolverClientConn;
    let cc = TestResolverClientConn::new();
    let target = Target::parse("ipv4:127.0.0.1:1,127.0.0.1:2").unwrap();
    let builder = resolver::get("ipv4").unwrap();
    let mut r = builder.build(&target, cc.client_conn()).unwrap();
    assert!(cc.wait_for_pushes(1, Duration::from_secs(5)));
    let updates = cc.updates();
    assert_eq!(updates.len(), 1);
    let addrs: Vec<&str> = updates[0]
        .endpoints
        .iter()
        .map(|e| e.addresses[0].addr.as_str())
        .collect();
    assert_eq!(addrs, ["127.0.0.1:1", "127.0.0.1:2"]);
    assert!(cc.errors().is_empty());
    r.resolve_now();
    r.close();
    cc.close();
    let pushed = cc.client_conn().update(ResolverState::default());
    assert!(matches!(pushed, Err(Error::Closed)), "{pushed:?}");
    cc.client_conn().report_error("late").unwrap_err();
    assert_eq!(cc.updates().len(), 1);
}

/// gRPC-Go's TestRPCWaitsForResolver: a call made before the resolver's
/// first answer takes its method's settings from the config that answer
/// brings (here a request limit it is over), not from the channel's before.
#[test]
fn a_call_waiting_for_resolution_follows_the_config_it_brings() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("latecfg", seen.clone())));
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(Channel::new(&rt, "latecfg:x", None, insecure()).unwrap());
    let c2 = ch.clone();
    let call = std::thread::spawn(move || {
        let mut r = c2.reader();
        echo(&mut r).map_err(|s| s.code())
    });
    // The same call started on the loop.
    let (tx, rx) = std::sync::mpsc::channel();
    let opts = CallOptions {
        wait_for_ready: Some(true),
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        ..Default::default()
    };
    ch.unary_start("/echo.Echo/Unary", b"r", &opts, move |r| {
        let _ = tx.send(r.map(|_| ()).map_err(|s| s.code()));
    })
    .unwrap();
    eventually("the resolver built by the call", || {
        seen.cc.lock().unwrap().is_some()
    });
    std::thread::sleep(Duration::from_millis(100));
    let config = r#"{"methodConfig":[{"name":[{}],"maxRequestMessageBytes":0}]}"#;
    seen.cc()
        .update(ResolverState {
            endpoints: endpoints(&[&b0]),
            service_config: Some(config.into()),
        })
        .unwrap();
    assert_eq!(call.join().unwrap(), Err(Code::ResourceExhausted));
    let started = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(started, Err(Code::ResourceExhausted), "the started call");
    assert_eq!(
        b0.requests(),
        0,
        "sent under the settings before the config"
    );
}

/// The idle timeout takes a channel failing on its resolver's invalid
/// config back to IDLE, as any other state (connectivity semantics: TF ->
/// IDLE on idle timeout; gRPC-Go's `enterIdleMode` closes the resolver and
/// the failing policy with it and publishes IDLE). Used again, it resolves
/// afresh: CONNECTING until the new resolver says, and failing again only
/// if its config is still invalid.
#[test]
fn a_channel_failing_on_its_resolvers_config_goes_idle_at_the_idle_timeout() {
    let seen = Arc::new(Seen::default());
    resolver::register(Arc::new(Pushed("badcfgidle", seen.clone())));
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
    let default = r#"{"methodConfig":[{"name":[{}],"timeout":"7s"}]}"#;
    let ch = Channel::new(&rt, "badcfgidle:x", Some(default), opts).unwrap();
    let timeout = || ch.method_config("/echo.Echo/Unary").and_then(|c| c.timeout);
    ch.connect().unwrap();
    ch.sync().unwrap();
    let bad = || ResolverState {
        endpoints: vec![Endpoint::from(Address::new("127.0.0.1:1"))],
        service_config: Some(r#"{"loadBalancingConfig":[{"nope":{}}]}"#.into()),
    };
    seen.cc().update(bad()).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    assert_eq!(timeout(), None, "no config is in force");

    for _ in 0..3 {
        clock.advance(Duration::from_secs(61));
        ch.sync().unwrap();
        ch.sync().unwrap();
    }
    assert!(seen.closed.load(Ordering::SeqCst), "the resolver is closed");
    assert_eq!(ch.state(), ConnectivityState::Idle);
    assert_eq!(timeout(), Some(Duration::from_secs(7)), "the default again");

    // Used again: a new resolver, and nothing fails before it speaks.
    seen.closed.store(false, Ordering::SeqCst);
    ch.connect().unwrap();
    assert_eq!(ch.state(), ConnectivityState::Connecting);
    ch.sync().unwrap();
    assert!(!seen.closed.load(Ordering::SeqCst));
    seen.cc().update(bad()).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
}
