//! The subchannel's health checking (gRFC A17), whatever the connector: a
//! scripted connector (tests queue `TransportEvent`s and wake the loop, which
//! reports them from inside `Connector::notified`), and the external
//! connector, whose host reports health apart from connectivity
//! (`Channel::report_subconn_health`).

use crate::support::{self, Ev, Host};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;

#[derive(Default)]
struct Script {
    queue: Vec<(SubConnId, TransportEvent)>,
    notifier: Option<Notifier>,
    /// `start_health(service)` as `Some`, `stop_health` as `None`.
    health: Vec<Option<String>>,
    connects: usize,
    /// The subchannel that connected last.
    last: Option<SubConnId>,
}

struct Scripted(Arc<Mutex<Script>>);

impl Connector for Scripted {
    fn connect(&mut self, sc: &Arc<SubConn>, _: Instant, ctx: &mut ConnectorCtx<'_>) {
        let mut s = self.0.lock().unwrap();
        s.connects += 1;
        s.last = Some(sc.id());
        s.notifier = Some(ctx.notifier(0));
    }
    fn shutdown(&mut self, _: &Arc<SubConn>, _: &mut ConnectorCtx<'_>) {}
    fn start_health(&mut self, _: &Arc<SubConn>, service: &str, _: &mut ConnectorCtx<'_>) -> bool {
        self.0.lock().unwrap().health.push(Some(service.into()));
        true
    }
    fn stop_health(&mut self, _: &Arc<SubConn>, _: &mut ConnectorCtx<'_>) {
        self.0.lock().unwrap().health.push(None);
    }
    fn notified(&mut self, _: u64, ctx: &mut ConnectorCtx<'_>) {
        for (sc, ev) in std::mem::take(&mut self.0.lock().unwrap().queue) {
            ctx.report(sc, ev);
        }
    }
}

type Log = Arc<Mutex<Vec<(ConnectivityState, Option<String>)>>>;

fn setup(config: &str) -> (Runtime, Channel, Arc<Mutex<Script>>, Log) {
    let rt = Runtime::new().unwrap();
    let script = Arc::new(Mutex::new(Script::default()));
    let log: Log = Arc::default();
    let l2 = log.clone();
    let mut opts = ChannelOptions {
        connector: Some(Box::new(Scripted(script.clone()))),
        on_subconn_state: Some(Arc::new(move |_, st: &SubConnState| {
            l2.lock()
                .unwrap()
                .push((st.state, st.error.as_deref().map(str::to_string)));
        })),
        ..Default::default()
    };
    // The connect deadline is the later of this and the first backoff (the
    // default 1 s, ±20 %): at most 1.2 s after the attempt starts.
    opts.backoff.min_connect_timeout = Duration::from_millis(50);
    let ch = Channel::new(&rt, "", Some(config), opts).unwrap();
    ch.update_addresses(vec![Address::new("127.0.0.1:1")])
        .unwrap();
    ch.sync().unwrap();
    (rt, ch, script, log)
}

fn send(ch: &Channel, script: &Mutex<Script>, ev: TransportEvent) {
    let mut s = script.lock().unwrap();
    let last = s.last.expect("connecting");
    s.queue.push((last, ev));
    s.notifier.as_ref().expect("connecting").notify();
    drop(s);
    ch.sync().unwrap();
}

const RR_HEALTH: &str =
    r#"{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":"svc"}}"#;

/// The transport up, the subchannel asks the connector to check health and
/// stays CONNECTING (connected: no deadline) until the first verdict.
#[test]
fn health_pending_holds_connecting_and_ill_health_keeps_the_connection() {
    let (_rt, ch, script, log) = setup(RR_HEALTH);
    assert!(
        script.lock().unwrap().health.is_empty(),
        "nothing to check yet"
    );
    send(&ch, &script, TransportEvent::Ready);
    assert_eq!(script.lock().unwrap().health, [Some("svc".to_string())]);
    // Past the connect deadline (at most 1.2 s): cancelled when the
    // transport came up.
    std::thread::sleep(Duration::from_millis(1500));
    ch.sync().unwrap();
    assert_eq!(*log.lock().unwrap(), [(Connecting, None)]);
    send(
        &ch,
        &script,
        TransportEvent::Unhealthy("NOT_SERVING".into()),
    );
    send(&ch, &script, TransportEvent::Unhealthy("still".into()));
    send(&ch, &script, TransportEvent::Healthy);
    send(&ch, &script, TransportEvent::Healthy);
    send(&ch, &script, TransportEvent::Unhealthy("again".into()));
    // Unhealthy is not a failed attempt: no backoff, no reconnect.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(script.lock().unwrap().connects, 1);
    send(&ch, &script, TransportEvent::Lost("reset".into()));
    // Stale health after the loss changes nothing.
    send(&ch, &script, TransportEvent::Healthy);
    let got: Vec<_> = log.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            (Connecting, None),
            (TransientFailure, Some("NOT_SERVING".into())),
            // Another verdict with other words is reported too; the same
            // verdict twice (READY) once.
            (TransientFailure, Some("still".into())),
            (Ready, None),
            (TransientFailure, Some("again".into())),
            (Idle, Some("reset".into())),
            // round_robin reconnects an IDLE child at once.
            (Connecting, None),
        ]
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "timing: Miri takes longer than the 1 s connect deadline between events"
)]
fn health_events_before_the_transport_is_up_are_ignored() {
    let (_rt, ch, script, log) = setup(RR_HEALTH);
    send(&ch, &script, TransportEvent::Healthy);
    send(&ch, &script, TransportEvent::Unhealthy("early".into()));
    send(&ch, &script, TransportEvent::HealthStatus(1));
    assert_eq!(*log.lock().unwrap(), [(Connecting, None)]);
}

#[test]
fn top_level_pick_first_turns_health_checking_off() {
    let (_rt, ch, script, log) = setup(r#"{"healthCheckConfig":{"serviceName":""}}"#);
    send(&ch, &script, TransportEvent::Ready);
    assert_eq!(*log.lock().unwrap(), [(Connecting, None), (Ready, None)]);
    ch.update_service_config(RR_HEALTH).unwrap();
    ch.sync().unwrap();
    // round_robin health-checks its connection once it is up.
    send(&ch, &script, TransportEvent::Ready);
    assert_eq!(
        script.lock().unwrap().health.last(),
        Some(&Some("svc".to_string()))
    );
}

/// A policy opts in to health checking (as gRPC's do): outlier detection
/// as its child does, so over pick_first it never health-checks, and over
/// round_robin it does.
#[test]
#[cfg_attr(
    miri,
    ignore = "timing: Miri takes longer than the 1 s connect deadline between events"
)]
fn outlier_detection_health_checks_as_its_child_does() {
    let od = |child: &str| {
        format!(
            r#"{{"loadBalancingConfig":[{{"outlier_detection_experimental":
                {{"childPolicy":[{{"{child}":{{}}}}]}}}}],
                "healthCheckConfig":{{"serviceName":"svc"}}}}"#
        )
    };
    let (_rt, ch, script, log) = setup(&od("pick_first"));
    send(&ch, &script, TransportEvent::Ready);
    assert_eq!(*log.lock().unwrap(), [(Connecting, None), (Ready, None)]);
    assert!(script.lock().unwrap().health.is_empty());
    let (_rt, ch, script, _log) = setup(&od("round_robin"));
    send(&ch, &script, TransportEvent::Ready);
    assert_eq!(script.lock().unwrap().health, [Some("svc".to_string())]);
}

/// The subchannel, not the connector, owns the health stream's retries: a
/// stream that ends without a status is TRANSIENT_FAILURE and re-opened
/// after the backoff (CONNECTING meanwhile); UNIMPLEMENTED is healthy and
/// never re-opened.
#[test]
fn the_subchannel_retries_an_ended_health_stream_after_its_backoff() {
    let (_rt, ch, script, log) = setup(RR_HEALTH);
    send(&ch, &script, TransportEvent::Ready);
    let ended = |code: u32| TransportEvent::HealthStreamEnded {
        code,
        message: "gone".into(),
    };
    send(&ch, &script, ended(14));
    assert_eq!(script.lock().unwrap().health.len(), 1);
    // setup's backoff: the default 1 s ±20 %; bounded wait for the retry.
    let deadline = Instant::now() + Duration::from_secs(5);
    while script.lock().unwrap().health.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the health stream was never re-opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    send(&ch, &script, TransportEvent::HealthStatus(1));
    send(&ch, &script, ended(12));
    std::thread::sleep(Duration::from_millis(100));
    ch.sync().unwrap();
    assert_eq!(
        script.lock().unwrap().health.len(),
        2,
        "UNIMPLEMENTED is not retried"
    );
    assert_eq!(
        script.lock().unwrap().connects,
        1,
        "health never costs the connection"
    );
    // CONNECTING again while the stream is re-opened (gRPC-Go's health
    // client does so before every attempt).
    let got: Vec<_> = log.lock().unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(got, [Connecting, TransientFailure, Connecting, Ready]);
    let why = log.lock().unwrap()[1].1.clone().unwrap();
    assert!(
        why.contains("health check RPC error") && why.contains("code = Unavailable"),
        "{why}"
    );
}

const ADDR: &str = "127.0.5.1:443";

/// An external-connector channel (round_robin, health checking for "svc"
/// unless `config` says otherwise) over one address, recording transitions.
fn host_channel(host: &Arc<Host>, config: &str) -> (Runtime, Channel, Log) {
    let rt = Runtime::new().unwrap();
    let log: Log = Arc::default();
    let l2 = log.clone();
    let mut opts = support::options(host);
    opts.on_subconn_state = Some(Arc::new(move |_, st: &SubConnState| {
        l2.lock()
            .unwrap()
            .push((st.state, st.error.as_deref().map(str::to_string)));
    }));
    let ch = Channel::new(&rt, "", Some(config), opts).unwrap();
    ch.update_addresses(support::addrs(&[ADDR])).unwrap();
    host.wait("connect", |e| e.contains(&Ev::Connect(ADDR.into())));
    (rt, ch, log)
}

fn health(ch: &Channel, host: &Host, serving: bool, message: &str) {
    ch.report_subconn_health(host.id(ADDR), serving, message)
        .unwrap();
    ch.sync().unwrap();
}

fn states(log: &Log) -> Vec<ConnectivityState> {
    log.lock().unwrap().iter().map(|(s, _)| *s).collect()
}

/// A host that checks health hears the service name once its transport is
/// up; its verdicts, reported apart from connectivity, gate READY and move
/// the subchannel between READY and TRANSIENT_FAILURE with the transport
/// kept (no shutdown, no new connect).
#[test]
fn host_health_reports_gate_ready_and_keep_the_transport() {
    let host = Host::checking_health();
    let (_rt, ch, log) = host_channel(&host, RR_HEALTH);
    let mut r = ch.reader();
    // Early verdicts (before the transport is up) count for nothing.
    health(&ch, &host, true, "");
    assert!(host.events().iter().all(|e| !matches!(e, Ev::Health(..))));
    support::report(&ch, &host, &[ADDR], Ready);
    assert_eq!(host.count(&Ev::Health(ADDR.into(), Some("svc".into()))), 1);
    // Connected, not yet healthy: still CONNECTING, picks queue.
    assert_eq!(states(&log), [Connecting]);
    assert_eq!(ch.state(), Connecting);
    assert!(matches!(
        r.try_pick(&PickInfo::default()),
        Err(PickError::NoSubConnAvailable)
    ));
    health(&ch, &host, true, "");
    assert_eq!(ch.state(), Ready);
    assert_eq!(support::pick_addr(&mut r), ADDR);
    health(&ch, &host, false, "draining for a deploy");
    health(&ch, &host, false, "still draining");
    assert_eq!(ch.state(), TransientFailure);
    match r.try_pick(&PickInfo::default()) {
        Err(PickError::Unavailable(s)) => {
            // The latest verdict's words.
            assert!(s.message().contains("still draining"), "{s:?}")
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    health(&ch, &host, true, "");
    assert_eq!(support::pick_addr(&mut r), ADDR);
    // The transport ends: IDLE; a stale verdict then changes nothing.
    support::report(&ch, &host, &[ADDR], Idle);
    health(&ch, &host, true, "");
    assert_eq!(
        *log.lock().unwrap(),
        [
            (Connecting, None),
            (Ready, None),
            (TransientFailure, Some("draining for a deploy".into())),
            (TransientFailure, Some("still draining".into())),
            (Ready, None),
            (Idle, Some("test report".into())),
            (Connecting, None),
        ]
    );
    assert_eq!(host.count(&Ev::Connect(ADDR.into())), 2);
    assert_eq!(host.count(&Ev::Shutdown(ADDR.into())), 0);
}

/// A host that does not check health (the default) gets READY subchannels
/// as soon as they are connected, health checking or not, and its health
/// reports are ignored.
#[test]
fn a_host_that_does_not_check_health_is_ready_once_connected() {
    let host = Host::new();
    let (_rt, ch, log) = host_channel(&host, RR_HEALTH);
    support::report(&ch, &host, &[ADDR], Ready);
    assert_eq!(states(&log), [Connecting, Ready]);
    health(&ch, &host, false, "ignored");
    assert_eq!(states(&log), [Connecting, Ready]);
    assert_eq!(ch.state(), Ready);
}

/// The host follows the service config: asked to check when health checking
/// is turned on (a READY subchannel stays READY until the verdict), stopped
/// and asked again for a new service name (an unhealthy subchannel is
/// CONNECTING until the new verdict), stopped (and the subchannel READY)
/// when it is turned off; a top-level pick_first is never checked.
#[test]
fn the_host_follows_health_config_changes() {
    let host = Host::checking_health();
    let (_rt, ch, log) = host_channel(&host, r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#);
    support::report(&ch, &host, &[ADDR], Ready);
    assert_eq!(states(&log), [Connecting, Ready]);
    let health_events = || -> Vec<Ev> {
        host.events()
            .into_iter()
            .filter(|e| matches!(e, Ev::Health(..)))
            .collect()
    };
    assert!(health_events().is_empty());
    ch.update_service_config(RR_HEALTH).unwrap();
    ch.sync().unwrap();
    assert_eq!(states(&log), [Connecting, Ready], "READY until a verdict");
    health(&ch, &host, false, "no");
    let other = r#"{"loadBalancingConfig":[{"round_robin":{}}],
                    "healthCheckConfig":{"serviceName":"other"}}"#;
    ch.update_service_config(other).unwrap();
    ch.sync().unwrap();
    health(&ch, &host, true, "");
    ch.update_service_config(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#)
        .unwrap();
    ch.sync().unwrap();
    let h = |service: Option<&str>| Ev::Health(ADDR.into(), service.map(str::to_string));
    assert_eq!(
        health_events(),
        [h(Some("svc")), h(None), h(Some("other")), h(None)]
    );
    assert_eq!(
        states(&log),
        [Connecting, Ready, TransientFailure, Connecting, Ready]
    );

    // A top-level pick_first never health-checks (gRFC A17).
    let host = Host::checking_health();
    let (_rt, ch, log) = host_channel(&host, r#"{"healthCheckConfig":{"serviceName":""}}"#);
    support::report(&ch, &host, &[ADDR], Ready);
    assert_eq!(states(&log), [Connecting, Ready]);
    assert!(host.events().iter().all(|e| !matches!(e, Ev::Health(..))));
}

/// Health reports are for channels whose transports are not the library's
/// own, and for open channels.
#[test]
fn health_reports_are_refused_where_they_cannot_count() {
    let rt = Runtime::new().unwrap();
    let managed = Channel::new(
        &rt,
        "",
        None,
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        managed.report_subconn_health(SubConnId(1), true, ""),
        Err(Error::InvalidArgument(_))
    ));
    // Nor transport states: a READY reported for a library connection
    // would make the channel READY with no transport behind it.
    assert!(matches!(
        managed.report_subconn_state(SubConnId(1), ConnectivityState::Ready, ""),
        Err(Error::InvalidArgument(_))
    ));
    let host = Host::checking_health();
    let (_rt, ch, _) = host_channel(&host, RR_HEALTH);
    ch.close();
    assert!(matches!(
        ch.report_subconn_health(host.id(ADDR), true, ""),
        Err(Error::Closed)
    ));
}

/// The transport comes up but drops before the first health verdict (the
/// subchannel goes CONNECTING -> IDLE): as gRPC-Go's pick_first, the
/// endpoint's child goes IDLE and round_robin reconnects it, instead of
/// staying CONNECTING with RPCs queued for good.
#[test]
fn a_connection_lost_before_its_first_health_verdict_is_made_again() {
    let (_rt, ch, script, _log) = setup(RR_HEALTH);
    send(&ch, &script, TransportEvent::Ready);
    send(&ch, &script, TransportEvent::Lost("reset".into()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while script.lock().unwrap().connects < 2 {
        assert!(Instant::now() < deadline, "never reconnected");
        std::thread::sleep(Duration::from_millis(10));
        ch.sync().unwrap();
    }
}
