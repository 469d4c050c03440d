//! The in-process tokio backends as a `Fleet`.

pub use crate::common::*;
use switchyard::transport::health_proto::{NOT_SERVING, SERVING};
use switchyard_testserver::{Listen, ServerOptions, ServerTls, TestPki, TestServer};

pub fn start_servers(n: usize) -> Vec<TestServer> {
    start_servers_with(n, ServerOptions::default())
}

pub fn start_servers_with(n: usize, opts: ServerOptions) -> Vec<TestServer> {
    (0..n)
        .map(|_| {
            TestServer::start(Listen::Tcp("127.0.0.1:0".parse().unwrap()), opts.clone()).unwrap()
        })
        .collect()
}

pub fn target(servers: &[TestServer]) -> String {
    let list: Vec<String> = servers.iter().map(|s| s.addr().to_string()).collect();
    format!("ipv4:{}", list.join(","))
}

/// In-process backends; a stopped one is `None` until restarted on its port.
pub struct InProcess {
    addrs: Vec<std::net::SocketAddr>,
    servers: Vec<Option<TestServer>>,
    opts: ServerOptions,
}

impl InProcess {
    pub fn start(n: usize) -> InProcess {
        InProcess::start_with(n, ServerOptions::default())
    }

    pub fn start_with(n: usize, opts: ServerOptions) -> InProcess {
        let servers = start_servers_with(n, opts.clone());
        InProcess {
            addrs: servers.iter().map(TestServer::addr).collect(),
            servers: servers.into_iter().map(Some).collect(),
            opts,
        }
    }

    fn server(&self, i: usize) -> &TestServer {
        self.servers[i].as_ref().expect("backend is running")
    }
}

impl Fleet for InProcess {
    fn addrs(&self) -> Vec<std::net::SocketAddr> {
        self.addrs.clone()
    }

    fn set_serving(&mut self, i: usize, serving: bool) {
        self.server(i)
            .set_serving("", if serving { SERVING } else { NOT_SERVING });
    }

    fn stop(&mut self, i: usize) {
        if let Some(s) = self.servers[i].take() {
            s.stop();
        }
    }

    fn restart(&mut self, i: usize) {
        let server = TestServer::start(Listen::Tcp(self.addrs[i]), self.opts.clone());
        self.servers[i] = Some(server.unwrap());
    }
}

pub fn server_tls(pki: &TestPki) -> ServerTls {
    pki.server_tls(&[b"h2"])
}

/// Request metadata from `(key, value)` pairs.
pub fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A channel to `servers` with `config`, its first call served.
pub fn ready_channel(
    rt: &switchyard::Runtime,
    servers: &[TestServer],
    config: &str,
) -> switchyard::Channel {
    let ch = channel(rt, &target(servers), Some(config), plaintext());
    echo(&mut ch.reader(), true).expect("the channel serves");
    ch
}

/// Requests `servers` received, all methods.
pub fn requests(servers: &[TestServer]) -> u64 {
    servers.iter().map(TestServer::requests).sum()
}

/// One `/echo.Echo/Unary` call of "ping", started (its completion waited
/// for, bounded) or blocking.
pub fn echo_call(
    ch: &switchyard::Channel,
    started: bool,
    options: &switchyard::CallOptions<'_>,
) -> Result<switchyard::UnaryResponse, switchyard::Status> {
    if !started {
        return ch.reader().unary("/echo.Echo/Unary", b"ping", options);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    ch.unary_start("/echo.Echo/Unary", b"ping", options, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("the started call completes")
}
