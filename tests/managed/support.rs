use std::time::{Duration, Instant};
use switchyard::transport::testserver::{Listen, ServerOptions, ServerTls, TestServer};
use switchyard::*;

pub const RR: Option<&str> = Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#);

pub fn start_servers(n: usize) -> Vec<TestServer> {
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

pub fn target(servers: &[TestServer]) -> String {
    let list: Vec<String> = servers.iter().map(|s| s.addr().to_string()).collect();
    format!("ipv4:{}", list.join(","))
}

pub fn plaintext() -> ChannelOptions {
    ChannelOptions {
        transport: Some(TransportConfig::default()),
        ..Default::default()
    }
}

pub fn plaintext_fast_backoff() -> ChannelOptions {
    let mut o = plaintext();
    o.backoff.initial = Duration::from_millis(50);
    o.backoff.max = Duration::from_millis(200);
    o
}

pub fn channel(rt: &Runtime, target: &str, config: Option<&str>, opts: ChannelOptions) -> Channel {
    Channel::new(rt, target, config, opts).unwrap()
}

/// One echo RPC; returns the port of the backend that served it.
pub fn echo(r: &mut Reader, wait_for_ready: bool) -> Result<u16, Status> {
    let opts = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        wait_for_ready,
        ..Default::default()
    };
    let resp = r.unary("/echo.Echo/Unary", b"ping", &opts)?;
    let text = String::from_utf8(resp.message).unwrap();
    let port = text
        .strip_prefix("ping|port=")
        .unwrap_or_else(|| panic!("bad echo {text:?}"));
    Ok(port.parse().unwrap())
}

/// Waits (bounded) until the channel is in `state`.
pub fn wait_state(ch: &Channel, state: ConnectivityState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ch.state() != state {
        assert!(
            Instant::now() < deadline,
            "channel never reached {state}, is {}",
            ch.state()
        );
        ch.wait_for_state_change(
            ch.state(),
            Some(Instant::now() + Duration::from_millis(100)),
        );
    }
}

/// Sends RPCs until every backend has answered, so the picker holds them all.
pub fn warm_up(r: &mut Reader, backends: usize) {
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < backends {
        assert!(Instant::now() < deadline, "only {seen:?} answered");
        seen.insert(echo(r, true).unwrap());
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A throwaway CA and a "localhost" server certificate it signed.
pub struct TestPki {
    pub ca_pem: Vec<u8>,
    server_cert: Vec<u8>,
    server_key: Vec<u8>,
}

impl TestPki {
    pub fn new() -> TestPki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("switchyard test CA {}", free_port()),
        );
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        TestPki {
            ca_pem: ca.pem().into_bytes(),
            server_cert: cert.pem().into_bytes(),
            server_key: key.serialize_pem().into_bytes(),
        }
    }

    pub fn server_tls(&self) -> ServerTls {
        ServerTls {
            cert_chain_pem: self.server_cert.clone(),
            key_pem: self.server_key.clone(),
            alpn: vec![b"h2".to_vec()],
        }
    }
}
