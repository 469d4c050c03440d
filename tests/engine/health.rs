//! The subchannel state machine's health events (gRFC A17), driven by a
//! scripted connector: tests queue `TransportEvent`s and wake the loop, which
//! reports them from inside `Connector::notified`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;

#[derive(Default)]
struct Script {
    queue: Vec<(SubConnId, TransportEvent)>,
    notifier: Option<Notifier>,
    health: Vec<Option<String>>,
    connects: usize,
}

struct Scripted(Arc<Mutex<Script>>);

impl Connector for Scripted {
    fn connect(&mut self, _: &Arc<SubConn>, _: Instant, ctx: &mut ConnectorCtx<'_>) {
        let mut s = self.0.lock().unwrap();
        s.connects += 1;
        s.notifier = Some(ctx.notifier(0));
    }
    fn shutdown(&mut self, _: &Arc<SubConn>, _: &mut ConnectorCtx<'_>) {}
    fn configure_health(&mut self, service: Option<&str>, _: &mut ConnectorCtx<'_>) {
        self.0
            .lock()
            .unwrap()
            .health
            .push(service.map(str::to_string));
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
    opts.backoff.min_connect_timeout = Duration::from_millis(50);
    let ch = Channel::new(&rt, "", Some(config), opts).unwrap();
    ch.update_addresses(vec![Address::new("127.0.0.1:1")])
        .unwrap();
    ch.sync().unwrap();
    (rt, ch, script, log)
}

fn send(ch: &Channel, script: &Mutex<Script>, ev: TransportEvent) {
    let mut s = script.lock().unwrap();
    s.queue.push((SubConnId(1), ev));
    s.notifier.as_ref().expect("connecting").notify();
    drop(s);
    ch.sync().unwrap();
}

const RR_HEALTH: &str =
    r#"{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":"svc"}}"#;

#[test]
fn health_pending_holds_connecting_and_ill_health_keeps_the_connection() {
    let (_rt, ch, script, log) = setup(RR_HEALTH);
    assert_eq!(script.lock().unwrap().health, [Some("svc".to_string())]);
    send(&ch, &script, TransportEvent::HealthPending);
    // Well past the connect deadline: cancelled when the transport came up.
    std::thread::sleep(Duration::from_millis(150));
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
            (Ready, None),
            (TransientFailure, Some("again".into())),
            (Idle, Some("reset".into())),
            // round_robin reconnects an IDLE child at once.
            (Connecting, None),
        ]
    );
}

#[test]
fn health_events_before_the_transport_is_up_are_ignored() {
    let (_rt, ch, script, log) = setup(RR_HEALTH);
    send(&ch, &script, TransportEvent::Healthy);
    send(&ch, &script, TransportEvent::Unhealthy("early".into()));
    assert_eq!(*log.lock().unwrap(), [(Connecting, None)]);
}

#[test]
fn top_level_pick_first_turns_health_checking_off() {
    let (_rt, ch, script, _) = setup(r#"{"healthCheckConfig":{"serviceName":""}}"#);
    ch.update_service_config(RR_HEALTH).unwrap();
    ch.sync().unwrap();
    assert_eq!(
        script.lock().unwrap().health,
        [None, Some("svc".to_string())]
    );
}
