//! The managed connector: switchyard's own TCP / TLS / HTTP/2 connections,
//! driven by the channel's event loop (the default when the host supplies no
//! transport). Each attempt is a `transport::Connection` registered with the
//! loop's `mio::Poll`; its waker is a `Notifier`, so RPC threads that queue
//! streams wake the loop, which re-polls that one connection.
//!
//! For client-side health checking (gRFC A17) it provides the stream: when
//! the subchannel asks (`Connector::start_health`), a
//! `grpc.health.v1.Health/Watch` is opened on the READY connection and polled
//! with the connection's waker, and what it delivers is reported raw
//! (`HealthStatus`, `HealthStreamEnded`). What that means — READY or
//! TRANSIENT_FAILURE, UNIMPLEMENTED, when to retry — is the subchannel's
//! call (`crate::subchannel`). Health never closes the connection; a
//! GOAWAY, a drain or a loss cancels the Watch with it.
//!
//! Out-of-band load reports (gRFC A51) are the same shape: when the
//! subchannel asks (`Connector::start_load_reports`), an ORCA
//! `StreamCoreMetrics` stream is opened on the READY connection, and each
//! report is passed on as named metrics (`LoadReport`), its end as
//! `LoadReportStreamEnded`; retries and UNIMPLEMENTED are the subchannel's.

use crate::balancer::subconn::{SubConn, SubConnId};
use crate::connector::{Connector, ConnectorCtx, LoadMetrics, TransportEvent};
use crate::trace;
use crate::transport::orca::{OrcaEvent, OrcaStream};
use crate::transport::{
    code, Connection, HealthWatch, Keepalive, Limits, Progress, Target, TlsClient, TransportConfig,
    WatchEvent,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

struct Conn {
    sc: Arc<SubConn>,
    conn: Connection,
    token: mio::Token,
    /// Wakes the loop for this connection (and its health stream).
    waker: Waker,
    /// The keepalive timer armed for this connection: (loop timer id, when).
    timer: Option<(u64, Instant)>,
    /// The connection reached READY and is the subchannel's active one.
    ready: bool,
    /// The open health Watch (`Connector::start_health`), until it ends or
    /// is stopped.
    watch: Option<HealthWatch>,
    /// The open ORCA stream (`Connector::start_load_reports`), until it
    /// ends or is stopped.
    oob: Option<OrcaStream>,
}

/// The library's own connections: TCP or Unix sockets, TLS (rustls) and
/// HTTP/2 (h2), driven by the event loop, with keepalive, GOAWAY draining
/// and health Watch streams. What a channel uses when
/// `ChannelOptions::connector` is `None`.
pub struct ManagedConnector {
    /// TLS built once for every connection (so sessions resume); `Err` when
    /// the settings are unusable, which fails every attempt with the reason.
    tls: Result<Option<TlsClient>, String>,
    /// Every call's `:authority` (the channel's); `None`: each address's own.
    authority: Option<String>,
    /// Raised on a "too_many_pings" GOAWAY to twice the time the connection
    /// that got it used (gRFC A8).
    keepalive: Option<Keepalive>,
    limits: Limits,
    /// Every call's `user-agent`, or why the config's is unusable (which
    /// fails every attempt with the reason, as unusable TLS settings do).
    user_agent: Result<http::HeaderValue, String>,
    conns: HashMap<u64, Conn>,
    /// The connection each subchannel uses now (others may still be draining).
    active: HashMap<SubConnId, u64>,
    next_key: u64,
}

impl ManagedConnector {
    /// A connector for `config` (credentials, keepalive, limits).
    pub fn new(config: TransportConfig) -> ManagedConnector {
        ManagedConnector {
            tls: config.tls_settings().map(TlsClient::new).transpose(),
            authority: None,
            // gRFC A8's 10 s floor, applied where gRPC-Go applies it (the
            // channel's option), so the transport uses what it is given.
            keepalive: config.keepalive.map(Keepalive::with_min_time),
            limits: config.limits(),
            user_agent: config.user_agent_header(),
            conns: HashMap::new(),
            active: HashMap::new(),
            next_key: 1,
        }
    }

    /// Every call's `:authority` is `authority` (the channel's), instead of
    /// the address each connection goes to.
    pub(crate) fn with_authority(mut self, authority: Option<String>) -> ManagedConnector {
        self.authority = authority;
        self
    }

    fn close(&mut self, key: u64, ctx: &mut ConnectorCtx<'_>) -> Option<Conn> {
        let mut c = self.conns.remove(&key)?;
        c.conn.close(ctx.registry());
        ctx.release_token(c.token);
        if let Some((id, _)) = c.timer.take() {
            ctx.cancel_timer(id);
        }
        c.watch = None;
        c.oob = None;
        if self.active.get(&c.sc.id()) == Some(&key) {
            self.active.remove(&c.sc.id());
            c.sc.set_transport(None);
        }
        Some(c)
    }

    /// Turns what a connection reported into subchannel events.
    fn progress(&mut self, key: u64, progress: Progress, ctx: &mut ConnectorCtx<'_>) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let sc = c.sc.id();
        let active = self.active.get(&sc) == Some(&key);
        match progress {
            Progress::Pending => {}
            Progress::Ready => {
                if active {
                    c.ready = true;
                    c.sc.set_transport(c.conn.send_handle().map(Arc::new));
                    ctx.report(sc, TransportEvent::Ready);
                }
            }
            Progress::Failed(e) => {
                log::warn!(target: trace::TRANSPORT, "connection failed: {}", with_peer(c.sc.addr(), &e));
                self.close(key, ctx);
                if active {
                    ctx.report(sc, TransportEvent::Failed(e));
                }
            }
            Progress::Lost(e) => {
                log::warn!(target: trace::TRANSPORT, "connection lost: {}", with_peer(c.sc.addr(), &e));
                self.close(key, ctx);
                if active {
                    ctx.report(sc, TransportEvent::Lost(e));
                }
            }
            Progress::GoAway { too_many_pings } => {
                if too_many_pings {
                    // gRFC A8: the server thinks we ping too often; new
                    // connections ping at twice the time this one used
                    // (gRPC-Go's adjustParams: several such GOAWAYs from
                    // connections made with the same time double it once).
                    if let (Some(ka), Some(used)) =
                        (self.keepalive.as_mut(), c.conn.keepalive_time())
                    {
                        ka.time = ka.time.max(used.saturating_mul(2));
                    }
                    // A8: "at a log level that is enabled by default":
                    // ERROR, as gRPC-Go's and C-core's.
                    log::error!(
                        target: trace::TRANSPORT,
                        "GOAWAY from {} (too_many_pings): keepalive time now {:?} for new connections",
                        c.sc.addr(),
                        self.keepalive.map(|k| k.time)
                    );
                } else {
                    log::info!(
                        target: trace::TRANSPORT,
                        "GOAWAY from {}: no new calls on this connection",
                        c.sc.addr()
                    );
                }
                // No new streams here; in-flight ones finish; the subchannel
                // goes IDLE and its policy decides whether to reconnect.
                if active {
                    self.active.remove(&sc);
                    c.sc.set_transport(None);
                    c.ready = false;
                    c.watch = None;
                    c.oob = None;
                    ctx.report(sc, TransportEvent::Lost("server sent GOAWAY".into()));
                }
            }
        }
        self.rearm(key, ctx);
    }

    /// Drives a connection after an event, then its health stream (after, so
    /// a connection that just died is closed, stream and all, without first
    /// reporting its stream's failure as ill health).
    fn drive(
        &mut self,
        key: u64,
        ctx: &mut ConnectorCtx<'_>,
        f: impl FnOnce(&mut Connection) -> Progress,
    ) {
        if let Some(c) = self.conns.get_mut(&key) {
            let p = f(&mut c.conn);
            self.progress(key, p, ctx);
            self.poll_health(key, ctx);
            self.poll_load_reports(key, ctx);
        }
    }

    /// Takes every report the connection's ORCA stream has ready and
    /// passes it on as named metrics; the subchannel hands them out.
    fn poll_load_reports(&mut self, key: u64, ctx: &mut ConnectorCtx<'_>) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let sc = c.sc.id();
        // Bounded: a stream yields each buffered report once, then `None`.
        while let Some(stream) = c.oob.as_mut() {
            match stream.poll(&mut Context::from_waker(&c.waker)) {
                None => return,
                Some(OrcaEvent::Report(report)) => {
                    ctx.report(
                        sc,
                        TransportEvent::LoadReport(LoadMetrics(report.metrics())),
                    );
                }
                Some(OrcaEvent::Ended(e)) => {
                    c.oob = None;
                    ctx.report(
                        sc,
                        TransportEvent::LoadReportStreamEnded {
                            code: e.code,
                            message: e.message,
                        },
                    );
                }
            }
        }
    }

    /// Takes every event the connection's Watch has ready and reports it
    /// raw; the subchannel decides what it means.
    fn poll_health(&mut self, key: u64, ctx: &mut ConnectorCtx<'_>) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let sc = c.sc.id();
        // Bounded: a watch yields each buffered status once, then `None`.
        while let Some(watch) = c.watch.as_mut() {
            match watch.poll(&mut Context::from_waker(&c.waker)) {
                None => return,
                Some(WatchEvent::Status(status)) => {
                    ctx.report(sc, TransportEvent::HealthStatus(status));
                }
                Some(WatchEvent::Ended(e)) => {
                    c.watch = None;
                    ctx.report(
                        sc,
                        TransportEvent::HealthStreamEnded {
                            code: e.code,
                            message: e.message,
                        },
                    );
                }
            }
        }
    }

    /// Keeps the loop timer in step with the connection's keepalive schedule.
    fn rearm(&mut self, key: u64, ctx: &mut ConnectorCtx<'_>) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let want = c.conn.next_timer();
        if c.timer.map(|(_, at)| at) == want {
            return;
        }
        if let Some((id, _)) = c.timer.take() {
            ctx.cancel_timer(id);
        }
        if let Some(at) = want {
            c.timer = Some((ctx.schedule_timer(at, key), at));
        }
    }
}

impl Connector for ManagedConnector {
    fn connect(&mut self, sc: &Arc<SubConn>, _deadline: Instant, ctx: &mut ConnectorCtx<'_>) {
        let target = match parse_target(sc.addr()) {
            Ok(t) => t,
            Err(e) => return ctx.report(sc.id(), TransportEvent::Failed(e)),
        };
        let tls = match &self.tls {
            Ok(tls) => tls.as_ref(),
            Err(e) => return ctx.report(sc.id(), TransportEvent::Failed(e.clone())),
        };
        let user_agent = match &self.user_agent {
            Ok(ua) => ua.clone(),
            Err(e) => return ctx.report(sc.id(), TransportEvent::Failed(e.clone())),
        };
        let key = self.next_key;
        self.next_key += 1;
        let token = ctx.token(key);
        let waker = Waker::from(Arc::new(ctx.notifier(key)));
        match Connection::start(
            &target,
            tls,
            self.authority.as_deref(),
            self.keepalive,
            self.limits,
            user_agent,
            ctx.registry(),
            token,
            waker.clone(),
        ) {
            Ok(conn) => {
                self.conns.insert(
                    key,
                    Conn {
                        sc: sc.clone(),
                        conn,
                        token,
                        waker,
                        timer: None,
                        ready: false,
                        watch: None,
                        oob: None,
                    },
                );
                self.active.insert(sc.id(), key);
            }
            Err(e) => {
                ctx.release_token(token);
                ctx.report(sc.id(), TransportEvent::Failed(e.to_string()));
            }
        }
    }

    /// The subchannel is gone (its address left the resolver's list): as in
    /// gRPC, calls already running on its connections finish; no new ones
    /// start there. A connection that was READY drains (h2 closes it once
    /// its last call is done, and `progress` then closes it here); any other
    /// closes at once. Idle ones close now, in the drive below.
    fn shutdown(&mut self, sc: &Arc<SubConn>, ctx: &mut ConnectorCtx<'_>) {
        let keys: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.sc.id() == sc.id())
            .map(|(k, _)| *k)
            .collect();
        self.active.remove(&sc.id());
        sc.set_transport(None);
        for key in keys {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            if c.conn.drain() {
                c.ready = false;
                c.watch = None;
                c.oob = None;
                self.drive(key, ctx, Connection::on_event);
            } else {
                self.close(key, ctx);
            }
        }
    }

    /// The channel is closing: every connection goes now, draining ones too.
    fn close_all(&mut self, ctx: &mut ConnectorCtx<'_>) {
        let keys: Vec<u64> = self.conns.keys().copied().collect();
        for key in keys {
            if let Some(c) = self.conns.get_mut(&key) {
                c.conn.cancel_calls();
            }
            self.close(key, ctx);
        }
    }

    /// Opens a Watch on `sc`'s READY connection (first time or retry). A
    /// subchannel without one hears that as a stream that ended UNAVAILABLE.
    fn start_health(
        &mut self,
        sc: &Arc<SubConn>,
        service: &str,
        ctx: &mut ConnectorCtx<'_>,
    ) -> bool {
        let ready = self.active.get(&sc.id()).copied().and_then(|key| {
            let c = self.conns.get(&key).filter(|c| c.ready)?;
            Some((key, c.conn.send_handle()?))
        });
        let Some((key, handle)) = ready else {
            ctx.report(
                sc.id(),
                TransportEvent::HealthStreamEnded {
                    code: code::UNAVAILABLE,
                    message: "connection is not ready".into(),
                },
            );
            return true;
        };
        match HealthWatch::start(&handle, service) {
            Ok(watch) => {
                if let Some(c) = self.conns.get_mut(&key) {
                    c.watch = Some(watch);
                }
                self.poll_health(key, ctx);
            }
            Err(e) => ctx.report(
                sc.id(),
                TransportEvent::HealthStreamEnded {
                    code: e.code,
                    message: e.message,
                },
            ),
        }
        true
    }

    fn stop_health(&mut self, sc: &Arc<SubConn>, _: &mut ConnectorCtx<'_>) {
        if let Some(c) = self
            .active
            .get(&sc.id())
            .and_then(|k| self.conns.get_mut(k))
        {
            c.watch = None;
        }
    }

    /// Opens an ORCA stream on `sc`'s READY connection (first time, retry,
    /// or a new period). A subchannel without one hears that as a stream
    /// that ended UNAVAILABLE.
    fn start_load_reports(
        &mut self,
        sc: &Arc<SubConn>,
        period: Duration,
        ctx: &mut ConnectorCtx<'_>,
    ) -> bool {
        let ready = self.active.get(&sc.id()).copied().and_then(|key| {
            let c = self.conns.get(&key).filter(|c| c.ready)?;
            Some((key, c.conn.send_handle()?))
        });
        let ended = |ctx: &mut ConnectorCtx<'_>, code, message| {
            ctx.report(
                sc.id(),
                TransportEvent::LoadReportStreamEnded { code, message },
            )
        };
        let Some((key, handle)) = ready else {
            ended(ctx, code::UNAVAILABLE, "connection is not ready".into());
            return true;
        };
        match OrcaStream::start(&handle, period) {
            Ok(stream) => {
                if let Some(c) = self.conns.get_mut(&key) {
                    c.oob = Some(stream);
                }
                self.poll_load_reports(key, ctx);
            }
            Err(e) => ended(ctx, e.code, e.message),
        }
        true
    }

    fn stop_load_reports(&mut self, sc: &Arc<SubConn>, _: &mut ConnectorCtx<'_>) {
        if let Some(c) = self
            .active
            .get(&sc.id())
            .and_then(|k| self.conns.get_mut(k))
        {
            c.oob = None;
        }
    }

    fn io_event(&mut self, key: u64, _event: &mio::event::Event, ctx: &mut ConnectorCtx<'_>) {
        self.drive(key, ctx, Connection::on_event);
    }

    fn notified(&mut self, key: u64, ctx: &mut ConnectorCtx<'_>) {
        self.drive(key, ctx, Connection::on_event);
    }

    fn timer(&mut self, key: u64, ctx: &mut ConnectorCtx<'_>) {
        let now = ctx.now();
        if let Some(c) = self.conns.get_mut(&key) {
            c.timer = None;
        }
        self.drive(key, ctx, |conn| conn.on_timer(now));
    }
}

/// `ip:port`, `[v6]:port`, `unix:/path` or `unix-abstract:name`.
fn parse_target(addr: &str) -> Result<Target, String> {
    if let Some(name) = addr.strip_prefix("unix-abstract:") {
        return Ok(Target::UnixAbstract(name.as_bytes().to_vec()));
    }
    if let Some(path) = addr.strip_prefix("unix:") {
        return Ok(Target::Unix(path.into()));
    }
    addr.parse::<SocketAddr>().map(Target::Tcp).map_err(|_| {
        format!("cannot connect to \"{addr}\": not an IP address with a port, a unix: path or a unix-abstract: name")
    })
}

/// A transport error for the log, naming the peer once.
fn with_peer(addr: &str, error: &str) -> String {
    if error.contains(addr) {
        error.to_string()
    } else {
        format!("{addr}: {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use std::time::Duration;

    /// gRFC A8: a server's "too_many_pings" GOAWAY doubles the keepalive time
    /// for the connections that follow: twice the time the connection that
    /// got it was made with, so GOAWAYs from two connections made with the
    /// same time double it once (gRPC-Go's adjustParams). The GOAWAY's
    /// detection itself is tested against a real peer in the transport
    /// tests.
    #[test]
    #[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
    fn too_many_pings_doubles_keepalive_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut env, _poll) = crate::runtime::LoopContext::for_test();
        let keepalive = Keepalive {
            time: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            permit_without_calls: false,
        };
        let mut m = ManagedConnector::new(TransportConfig {
            keepalive: Some(keepalive),
            ..TransportConfig::insecure()
        });
        let sc = Arc::new(SubConn::new(
            SubConnId(1),
            Address::new(listener.local_addr().unwrap().to_string()),
        ));
        let mut events = Vec::new();
        let mut ctx = ConnectorCtx {
            env: &mut env,
            task: 1,
            events: &mut events,
        };
        let other = Arc::new(SubConn::new(
            SubConnId(2),
            Address::new(listener.local_addr().unwrap().to_string()),
        ));
        m.connect(&sc, Instant::now(), &mut ctx);
        m.connect(&other, Instant::now(), &mut ctx);
        let key = *m.active.get(&sc.id()).expect("connecting");
        let other_key = *m.active.get(&other.id()).expect("connecting");
        m.progress(
            key,
            Progress::GoAway {
                too_many_pings: false,
            },
            &mut ctx,
        );
        assert_eq!(m.keepalive.unwrap().time, Duration::from_secs(10));
        m.progress(
            key,
            Progress::GoAway {
                too_many_pings: true,
            },
            &mut ctx,
        );
        assert_eq!(m.keepalive.unwrap().time, Duration::from_secs(20));
        // The other connection was made with 10 s too: still 20 s.
        m.progress(
            other_key,
            Progress::GoAway {
                too_many_pings: true,
            },
            &mut ctx,
        );
        assert_eq!(m.keepalive.unwrap().time, Duration::from_secs(20));
        // One made since (with 20 s): 40 s.
        m.connect(&sc, Instant::now(), &mut ctx);
        let key = *m.active.get(&sc.id()).expect("connecting");
        m.progress(
            key,
            Progress::GoAway {
                too_many_pings: true,
            },
            &mut ctx,
        );
        assert_eq!(m.keepalive.unwrap().time, Duration::from_secs(40));
        m.shutdown(&sc, &mut ctx);
        m.shutdown(&other, &mut ctx);
        let lost = |id| (id, TransportEvent::Lost("server sent GOAWAY".into()));
        assert_eq!(events, vec![lost(sc.id()), lost(other.id()), lost(sc.id())]);
    }

    /// gRFC A8: a client keepalive time under 10 s is raised to 10 s (gRPC-Go's
    /// `WithKeepaliveParams`, gRPC Java's `keepAliveTime`), for the
    /// connections the channel makes, 0 included (`None` is off); the
    /// timeout and permit-without-calls are kept.
    #[test]
    #[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
    fn keepalive_time_under_ten_seconds_is_raised_to_ten() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut env, _poll) = crate::runtime::LoopContext::for_test();
        let with = |time: Duration| {
            ManagedConnector::new(TransportConfig {
                keepalive: Some(Keepalive {
                    time,
                    timeout: Duration::from_secs(3),
                    permit_without_calls: true,
                }),
                ..TransportConfig::insecure()
            })
        };
        let ten = Keepalive {
            time: Duration::from_secs(10),
            timeout: Duration::from_secs(3),
            permit_without_calls: true,
        };
        for time in [
            Duration::ZERO,
            Duration::from_millis(1),
            Duration::from_secs(9),
        ] {
            assert_eq!(with(time).keepalive, Some(ten), "{time:?}");
        }
        let longer = Duration::from_secs(11);
        assert_eq!(with(longer).keepalive.map(|k| k.time), Some(longer));
        // The connection is made with the raised time.
        let mut m = with(Duration::from_millis(50));
        let sc = Arc::new(SubConn::new(
            SubConnId(1),
            Address::new(listener.local_addr().unwrap().to_string()),
        ));
        let mut events = Vec::new();
        let mut ctx = ConnectorCtx {
            env: &mut env,
            task: 1,
            events: &mut events,
        };
        m.connect(&sc, Instant::now(), &mut ctx);
        let key = *m.active.get(&sc.id()).expect("connecting");
        assert_eq!(
            m.conns[&key].conn.keepalive_time(),
            Some(Duration::from_secs(10))
        );
        m.shutdown(&sc, &mut ctx);
    }

    /// A resolver update that drops a backend lets the calls in flight on it
    /// finish, as gRPC does (closing its connection at once failed them with
    /// "stream closed because of a broken pipe"); the next calls go to the
    /// backend that remains, and the drained connection then closes.
    #[test]
    #[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
    fn removed_address_lets_its_calls_in_flight_finish() {
        use crate::{Address, CallOptions, Channel, ChannelOptions, Runtime};
        use switchyard_testserver::{Listen, ServerOptions, TestServer};
        const CALLS: u64 = 4;
        let start = || {
            TestServer::start(
                Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
                ServerOptions::default(),
            )
            .unwrap()
        };
        let (old, new) = (start(), start());
        let rt = Runtime::new().unwrap();
        let opts = ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        };
        let rr = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
        let target = format!("ipv4:{}", old.addr());
        let ch = Arc::new(Channel::new(&rt, &target, Some(rr), opts).unwrap());
        let port_of = |r: &crate::UnaryResponse| String::from_utf8_lossy(&r.message).into_owned();
        let call = |ch: &Channel, delay: &str| {
            let metadata = [("x-delay-ms".to_string(), delay.to_string())];
            let opts = CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(20)),
                wait_for_ready: Some(true),
                metadata: &metadata,
                ..Default::default()
            };
            ch.reader().unary("/echo.Echo/Unary", b"x", &opts)
        };
        let slow: Vec<_> = (0..CALLS)
            .map(|_| {
                let ch = ch.clone();
                std::thread::spawn(move || call(&ch, "300"))
            })
            .collect();
        for _ in 0..2000 {
            if old.in_flight() == CALLS {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(old.in_flight(), CALLS, "the calls never reached the server");

        ch.update_addresses(vec![Address::new(new.addr().to_string())])
            .unwrap();
        for t in slow {
            let resp = t
                .join()
                .unwrap()
                .expect("a call in flight on a removed address");
            assert_eq!(port_of(&resp), format!("x|port={}", old.port()));
        }
        let resp = call(&ch, "0").unwrap();
        assert_eq!(port_of(&resp), format!("x|port={}", new.port()));
        // Drained, the connection closes: the old backend sees it go.
        for _ in 0..2000 {
            if old.connections() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(old.connections(), 0, "the drained connection stays open");
    }

    /// Unusable TLS settings are found once, when the connector is made, and
    /// every attempt fails with the reason (no socket is opened).
    #[test]
    #[cfg_attr(miri, ignore = "TLS: ring runs C and assembly Miri cannot")]
    fn bad_tls_settings_fail_every_attempt_with_the_reason() {
        let (mut env, _poll) = crate::runtime::LoopContext::for_test();
        let mut m = ManagedConnector::new(TransportConfig::tls(crate::transport::TlsSettings {
            roots_pem: Some(b"not a certificate".to_vec()),
            ..Default::default()
        }));
        assert!(m.tls.is_err());
        let sc = Arc::new(SubConn::new(SubConnId(1), Address::new("127.0.0.1:1")));
        let mut events = Vec::new();
        let mut ctx = ConnectorCtx {
            env: &mut env,
            task: 1,
            events: &mut events,
        };
        m.connect(&sc, Instant::now(), &mut ctx);
        m.connect(&sc, Instant::now(), &mut ctx);
        assert!(m.conns.is_empty());
        let failed = TransportEvent::Failed("roots_pem contains no certificates".into());
        assert_eq!(events, vec![(sc.id(), failed.clone()), (sc.id(), failed)]);
    }
}
