//! The managed connector: switchyard's own TCP / TLS / HTTP/2 connections,
//! driven by the channel's event loop (the default when the host supplies no
//! transport). Each attempt is a `transport::Connection` registered with the
//! loop's `mio::Poll`; its waker is a `Notifier`, so RPC threads that queue
//! streams wake the loop, which re-polls that one connection.

use crate::connector::{Connector, ConnectorCtx, TransportEvent};
use crate::subconn::{SubConn, SubConnId};
use crate::transport::{Connection, Progress, Target, TransportConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

struct Conn {
    sc: Arc<SubConn>,
    conn: Connection,
    token: mio::Token,
    /// The keepalive timer armed for this connection: (loop timer id, when).
    timer: Option<(u64, Instant)>,
}

pub struct ManagedConnector {
    config: TransportConfig,
    conns: HashMap<u64, Conn>,
    /// The connection each subchannel uses now (others may still be draining).
    active: HashMap<SubConnId, u64>,
    next_key: u64,
}

impl ManagedConnector {
    pub fn new(config: TransportConfig) -> ManagedConnector {
        ManagedConnector {
            config,
            conns: HashMap::new(),
            active: HashMap::new(),
            next_key: 1,
        }
    }

    /// The config for one address: a TLS server name left empty means "the
    /// address's own host".
    fn config_for(&self, addr: &str) -> TransportConfig {
        let mut cfg = self.config.clone();
        if let Some(tls) = cfg.tls.as_mut() {
            if tls.server_name.is_empty() {
                tls.server_name = host_of(addr).to_string();
            }
        }
        cfg
    }

    fn close(&mut self, key: u64, ctx: &mut ConnectorCtx<'_>) -> Option<Conn> {
        let mut c = self.conns.remove(&key)?;
        c.conn.close(ctx.registry());
        ctx.release_token(c.token);
        if let Some((id, _)) = c.timer.take() {
            ctx.cancel_timer(id);
        }
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
                    c.sc.set_transport(c.conn.send_handle().map(Arc::new));
                    ctx.report(sc, TransportEvent::Ready);
                }
            }
            Progress::Failed(e) => {
                self.close(key, ctx);
                if active {
                    ctx.report(sc, TransportEvent::Failed(e));
                }
            }
            Progress::Lost(e) => {
                self.close(key, ctx);
                if active {
                    ctx.report(sc, TransportEvent::Lost(e));
                }
            }
            Progress::GoAway { too_many_pings } => {
                if too_many_pings {
                    // gRFC A8: the server thinks we ping too often.
                    if let Some(ka) = self.config.keepalive.as_mut() {
                        ka.time = ka.time.saturating_mul(2);
                    }
                }
                // No new streams here; in-flight ones finish; the subchannel
                // goes IDLE and its policy decides whether to reconnect.
                if active {
                    self.active.remove(&sc);
                    c.sc.set_transport(None);
                    ctx.report(sc, TransportEvent::Lost("server sent GOAWAY".into()));
                }
            }
        }
        self.rearm(key, ctx);
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
        let key = self.next_key;
        self.next_key += 1;
        let token = ctx.token(key);
        let waker = Waker::from(Arc::new(ctx.notifier(key)));
        let config = self.config_for(sc.addr());
        match Connection::start(&target, &config, ctx.registry(), token, waker) {
            Ok(conn) => {
                self.conns.insert(
                    key,
                    Conn {
                        sc: sc.clone(),
                        conn,
                        token,
                        timer: None,
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

    /// Closes every connection of the subchannel at once, draining ones too.
    fn shutdown(&mut self, sc: &Arc<SubConn>, ctx: &mut ConnectorCtx<'_>) {
        let keys: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.sc.id() == sc.id())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.close(key, ctx);
        }
        self.active.remove(&sc.id());
        sc.set_transport(None);
    }

    fn io_event(&mut self, key: u64, _event: &mio::event::Event, ctx: &mut ConnectorCtx<'_>) {
        if let Some(c) = self.conns.get_mut(&key) {
            let p = c.conn.on_io();
            self.progress(key, p, ctx);
        }
    }

    fn notified(&mut self, key: u64, ctx: &mut ConnectorCtx<'_>) {
        if let Some(c) = self.conns.get_mut(&key) {
            let p = c.conn.on_wake();
            self.progress(key, p, ctx);
        }
    }

    fn timer(&mut self, key: u64, ctx: &mut ConnectorCtx<'_>) {
        let now = ctx.now();
        if let Some(c) = self.conns.get_mut(&key) {
            c.timer = None;
            let p = c.conn.on_timer(now);
            self.progress(key, p, ctx);
        }
    }
}

/// `ip:port`, `[v6]:port` or `unix:/path`.
fn parse_target(addr: &str) -> Result<Target, String> {
    if let Some(path) = addr.strip_prefix("unix:") {
        return Ok(Target::Unix(path.into()));
    }
    addr.parse::<SocketAddr>().map(Target::Tcp).map_err(|_| {
        format!("cannot connect to \"{addr}\": not an IP address with a port or a unix: path")
    })
}

fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr)
}
