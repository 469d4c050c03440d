//! The `dns` resolver against a real DNS server on loopback (dnsmasq,
//! started here on 127.0.0.1 with a free port, answering only from its own
//! hosts file and TXT records), and the `:authority` calls carry.
//!
//! DNS answers carry addresses, not ports, so backends that DNS tells apart
//! listen on one port of different loopback addresses (127.0.0.1-3: all on
//! `lo`, nothing leaves the machine).

use super::support::*;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard::resolver::ResolverOptions;
use switchyard::transport::{TlsSettings, TransportConfig};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestPki, TestServer};

/// A dnsmasq of our own: `--no-resolv --no-hosts`, authoritative for
/// `.test`, answering from `hosts` (reloaded on `set_hosts`, by SIGHUP) and
/// the TXT records it was started with; every query logged to a file.
pub struct Dnsmasq {
    child: Child,
    dir: PathBuf,
    port: u16,
}

const NOT_INSTALLED: &str = "dnsmasq is not installed: these tests run a real DNS server on \
     loopback. Install it with `apt-get install -y dnsmasq-base` (scripts/test.sh does)";

fn dnsmasq_binary() -> PathBuf {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{NOT_INSTALLED}"))
}

impl Dnsmasq {
    /// `txt`: (name, text) records, fixed for the server's life.
    pub fn start(hosts: &str, txt: &[(&str, &str)]) -> Dnsmasq {
        let bin = dnsmasq_binary();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sy-dnsmasq-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        // TXT records in a config file, quoted (their JSON has commas).
        let conf: String = txt
            .iter()
            .map(|(name, text)| format!("txt-record={name},\"{}\"\n", text.replace('"', "\\\"")))
            .collect();
        std::fs::write(dir.join("conf"), conf).unwrap();
        // A free port (UDP and TCP alike) can be taken between our probe
        // and dnsmasq's bind: a few tries.
        for _ in 0..5 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(&bin)
                .arg("--keep-in-foreground")
                .arg(format!("--conf-file={}", dir.join("conf").display()))
                .args(["--no-resolv", "--no-hosts", "--local=/test/"])
                .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", dir.join("hosts").display()))
                .arg("--pid-file=")
                .arg("--cache-size=0")
                .arg("--log-queries")
                .arg(format!("--log-facility={}", dir.join("log").display()))
                // As root it would switch to "nobody", who may not read our
                // files: stay who we are.
                .arg(format!("--user={}", whoami()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}. {NOT_INSTALLED}", bin.display()));
            // Ready once its TCP listener is up (it binds UDP first).
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Dnsmasq { child, dir, port };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken: another try
                }
                assert!(Instant::now() < deadline, "dnsmasq did not start listening");
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            eprintln!("dnsmasq exited at start: {err}");
        }
        panic!("dnsmasq could not be started on a free port");
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// New answers: rewrites the hosts file and has dnsmasq reload it.
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(self.dir.join("hosts"), hosts).unwrap();
        let before = self.reloads();
        // SAFETY: a signal to the child we started and still own.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP to dnsmasq");
        wait_until("dnsmasq reloaded its hosts", || self.reloads() > before);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn reloads(&self) -> usize {
        self.log().matches("read ").count()
    }

    /// How many `kind` questions for `name` it has been asked.
    pub fn queries(&self, kind: &str, name: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("query[{kind}] {name} ")))
            .count()
    }
}

fn whoami() -> String {
    // SAFETY: geteuid has no preconditions; getpwuid's result is read at
    // once, before any other call that could reuse its buffer.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return "root".into();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Backends on `port` of 127.0.0.`last` for each of `lasts`.
fn backends_on(lasts: &[u8]) -> (u16, Vec<TestServer>) {
    for _ in 0..10 {
        let first = TestServer::start(
            Listen::Tcp(SocketAddr::from(([127, 0, 0, lasts[0]], 0))),
            ServerOptions::default(),
        )
        .unwrap();
        let port = first.port();
        let rest: Result<Vec<TestServer>, _> = lasts[1..]
            .iter()
            .map(|l| {
                TestServer::start(
                    Listen::Tcp(SocketAddr::from(([127, 0, 0, *l], port))),
                    ServerOptions::default(),
                )
            })
            .collect();
        if let Ok(rest) = rest {
            return (port, std::iter::once(first).chain(rest).collect());
        }
    }
    panic!("no port free on every loopback address");
}

fn hosts(lasts: &[u8]) -> String {
    lasts
        .iter()
        .map(|l| format!("127.0.0.{l} svc.test\n"))
        .collect()
}

fn dns_options(min_interval: Duration, service_config: bool) -> ChannelOptions {
    ChannelOptions {
        resolver: ResolverOptions {
            dns_service_config: service_config,
            min_resolution_interval: min_interval,
            ..Default::default()
        },
        ..plaintext_fast_backoff()
    }
}

/// `n` wait-for-ready calls; how many each backend served of them.
fn served(r: &mut Reader, servers: &[TestServer], n: usize) -> Vec<u64> {
    let before: Vec<u64> = servers.iter().map(TestServer::requests).collect();
    for _ in 0..n {
        echo(r, true).unwrap();
    }
    servers
        .iter()
        .zip(before)
        .map(|(s, b)| s.requests() - b)
        .collect()
}

/// Calls until each of `want` has served one (bounded).
fn warm(r: &mut Reader, servers: &[TestServer], want: &[usize]) {
    let before: Vec<u64> = servers.iter().map(TestServer::requests).collect();
    wait_until("every backend serves", || {
        echo(r, true).unwrap();
        want.iter().all(|&i| servers[i].requests() > before[i])
    });
}

const RR: Option<&str> = Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#);

#[test]
fn backends_come_and_go_by_dns_alone() {
    let (port, servers) = backends_on(&[1, 2, 3]);
    let dns = Dnsmasq::start(&hosts(&[1, 2]), &[]);
    let rt = Runtime::new().unwrap();
    let target = format!("dns://{}/svc.test:{port}", dns.server());
    let ch = channel(
        &rt,
        &target,
        RR,
        dns_options(Duration::from_millis(100), false),
    );
    let mut r = ch.reader();
    warm(&mut r, &servers, &[0, 1]);
    assert_eq!(served(&mut r, &servers, 40), vec![20, 20, 0]);

    // DNS now says 1 and 3. Nothing fails: the channel hears of it when it
    // next re-resolves, which a lost connection asks for (backend 1 says
    // GOAWAY, as a server being redeployed does).
    dns.set_hosts(&hosts(&[1, 3]));
    servers[0].goaway();
    wait_until("backend 3 serves", || served(&mut r, &servers, 4)[2] > 0);
    // Backend 2, still up, was dropped by DNS alone: no more calls.
    wait_until("backend 2 is out", || served(&mut r, &servers, 2)[1] == 0);
    wait_until("round robin over what DNS says", || {
        served(&mut r, &servers, 40) == vec![20, 0, 20]
    });
    assert!(dns.queries("A", "svc.test") >= 2, "{}", dns.log());
}

#[test]
fn re_resolution_waits_for_the_minimum_interval() {
    let (port, servers) = backends_on(&[1, 2]);
    let dns = Dnsmasq::start(&hosts(&[1]), &[]);
    let rt = Runtime::new().unwrap();
    let target = format!("dns://{}/svc.test:{port}", dns.server());
    // gRPC's 30 s: far longer than this test.
    let ch = channel(
        &rt,
        &target,
        RR,
        dns_options(Duration::from_secs(30), false),
    );
    let mut r = ch.reader();
    warm(&mut r, &servers, &[0]);
    assert_eq!(dns.queries("A", "svc.test"), 1);
    dns.set_hosts(&hosts(&[1, 2]));
    // Connection losses ask for re-resolution again and again; within the
    // interval none is made, and calls keep going to what DNS said first.
    for _ in 0..5 {
        servers[0].goaway();
        wait_until("reconnected", || echo(&mut r, true).is_ok());
    }
    assert_eq!(served(&mut r, &servers, 10), vec![10, 0]);
    ch.sync().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(dns.queries("A", "svc.test"), 1, "{}", dns.log());
}

#[test]
fn txt_service_config_is_used_only_when_asked_for() {
    let (port, servers) = backends_on(&[1, 2]);
    let txt = r#"grpc_config=[{"clientLanguage":["go"],"serviceConfig":{}},{"serviceConfig":{"loadBalancingConfig":[{"round_robin":{}}]}}]"#;
    let dns = Dnsmasq::start(&hosts(&[1, 2]), &[("_grpc_config.svc.test", txt)]);
    let rt = Runtime::new().unwrap();
    let target = format!("dns://{}/svc.test:{port}", dns.server());

    // Off by default: pick_first, one backend serves everything.
    let plain = channel(
        &rt,
        &target,
        None,
        dns_options(Duration::from_secs(30), false),
    );
    let mut r = plain.reader();
    let split = served(&mut r, &servers, 20);
    assert!(split == vec![20, 0] || split == vec![0, 20], "{split:?}");
    assert_eq!(dns.queries("TXT", "_grpc_config.svc.test"), 0);
    assert_eq!(plain.snapshot().unwrap().policy, "pick_first");

    // Asked for, but service configs from the resolver disabled: none is
    // looked up.
    let mut opts = dns_options(Duration::from_secs(30), true);
    opts.resolver.disable_service_config = true;
    let disabled = channel(&rt, &target, None, opts);
    let split = served(&mut disabled.reader(), &servers, 20);
    assert!(split == vec![20, 0] || split == vec![0, 20], "{split:?}");
    assert_eq!(dns.queries("TXT", "_grpc_config.svc.test"), 0);

    // Asked for: the second choice (the first is for Go) says round_robin.
    let txt_ch = channel(
        &rt,
        &target,
        None,
        dns_options(Duration::from_secs(30), true),
    );
    let mut r = txt_ch.reader();
    wait_until("round_robin from TXT", || {
        txt_ch.snapshot().unwrap().policy == "round_robin"
    });
    warm(&mut r, &servers, &[0, 1]);
    assert_eq!(served(&mut r, &servers, 20), vec![10, 10]);
    assert_eq!(dns.queries("TXT", "_grpc_config.svc.test"), 1);
}

/// A TXT record that is no valid list of choices is an invalid service
/// config (A2, as gRPC-Go has it), not "no config": with no good one before
/// it the channel fails saying why (and would keep a good one it had).
#[test]
fn a_malformed_txt_service_config_is_an_invalid_config() {
    let (port, _servers) = backends_on(&[1]);
    let txt = r#"grpc_config={"loadBalancingConfig":[{"round_robin":{}}]}"#;
    let dns = Dnsmasq::start(&hosts(&[1]), &[("_grpc_config.svc.test", txt)]);
    let rt = Runtime::new().unwrap();
    let target = format!("dns://{}/svc.test:{port}", dns.server());
    let ch = channel(
        &rt,
        &target,
        None,
        dns_options(Duration::from_secs(30), true),
    );
    ch.connect().unwrap();
    wait_state(&ch, ConnectivityState::TransientFailure);
    let e = pick_error(&ch);
    assert!(e.contains("not a list of choices"), "{e}");
    // The rejected update is looked up again with the channel's backoff
    // (this test's: 50 ms, growing), not after the 30 s minimum interval,
    // as gRPC-Go's DNS resolver retries a state its channel called bad.
    wait_until("the rejected TXT config is looked up again", || {
        dns.queries("TXT", "_grpc_config.svc.test") >= 3
    });
}

#[test]
fn a_dns_server_that_does_not_know_the_name_fails_the_channel_saying_so() {
    let dns = Dnsmasq::start("", &[]);
    let rt = Runtime::new().unwrap();
    let target = format!("dns://{}/nowhere.test:1", dns.server());
    let ch = channel(
        &rt,
        &target,
        None,
        dns_options(Duration::from_secs(30), false),
    );
    ch.connect().unwrap();
    wait_state(&ch, ConnectivityState::TransientFailure);
    let e = pick_error(&ch);
    assert!(
        e.contains("nowhere.test") && e.contains("no addresses"),
        "{e}"
    );
}

#[test]
fn calls_carry_the_targets_authority_or_the_one_given() {
    let server = &start_servers(1)[0];
    let port = server.port();
    let rt = Runtime::new().unwrap();
    let seen = |target: &str, opts: ChannelOptions| {
        let ch = channel(&rt, target, None, opts);
        echo(&mut ch.reader(), true).unwrap();
        server.last_authority().unwrap()
    };
    // An address target: the address, as written.
    let ipv4 = format!("ipv4:127.0.0.1:{port}");
    assert_eq!(seen(&ipv4, plaintext()), format!("127.0.0.1:{port}"));
    // A DNS name: the name, not the address it resolved to.
    let dns = Dnsmasq::start("127.0.0.1 svc.test\n", &[]);
    let by_name = format!("dns://{}/svc.test:{port}", dns.server());
    assert_eq!(seen(&by_name, plaintext()), format!("svc.test:{port}"));
    // Given per channel: that one.
    let given = ChannelOptions {
        authority: Some("api.example.com".into()),
        ..plaintext()
    };
    assert_eq!(seen(&by_name, given), "api.example.com");
    // A bad one is refused at creation.
    let bad = ChannelOptions {
        authority: Some("not an authority".into()),
        ..plaintext()
    };
    let e = Channel::new(&rt, &ipv4, None, bad).err().unwrap();
    assert!(e.to_string().contains("not a valid :authority"), "{e}");
}

#[test]
fn tls_verifies_the_authoritys_host_unless_told_a_server_name() {
    let pki = TestPki::new();
    let server = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions {
            tls: Some(server_tls(&pki)),
            ..Default::default()
        },
    )
    .unwrap();
    let dns = Dnsmasq::start("127.0.0.1 localhost.test\n", &[]);
    let rt = Runtime::new().unwrap();
    let target = format!("dns://{}/localhost.test:{}", dns.server(), server.port());
    let tls = |authority: Option<&str>, server_name: &str| ChannelOptions {
        transport: Some(TransportConfig::tls(TlsSettings {
            server_name: server_name.into(),
            roots_pem: Some(pki.ca_pem.clone()),
            client_cert: None,
        })),
        authority: authority.map(str::to_string),
        ..Default::default()
    };
    // The certificate is for "localhost": the target's host is not it...
    let ch = channel(&rt, &target, None, tls(None, ""));
    ch.connect().unwrap();
    wait_state(&ch, ConnectivityState::TransientFailure);
    assert!(
        pick_error(&ch).contains("certificate"),
        "{}",
        pick_error(&ch)
    );
    // ...an authority of "localhost" is, and TLS follows it...
    let ch = channel(&rt, &target, None, tls(Some("localhost:8443"), ""));
    echo(&mut ch.reader(), true).unwrap();
    assert_eq!(server.last_authority().as_deref(), Some("localhost:8443"));
    // ...unless the TLS settings name the server themselves.
    let ch = channel(&rt, &target, None, tls(Some("other.test"), "localhost"));
    echo(&mut ch.reader(), true).unwrap();
    assert_eq!(server.last_authority().as_deref(), Some("other.test"));
    // With no authority given, a TLS name given is the authority too
    // (gRPC-Go's: credentials' ServerName before the target's host).
    let ch = channel(&rt, &target, None, tls(None, "localhost"));
    echo(&mut ch.reader(), true).unwrap();
    assert_eq!(server.last_authority().as_deref(), Some("localhost"));
}

/// Two targets gRPC users write for a local server: `passthrough:///
/// localhost:PORT` (gRPC-Go's dialer looks the name up; the library's
/// connections look it up by DNS first) and `:PORT` (localhost's port, its
/// authority "localhost:PORT").
#[test]
fn passthrough_names_and_bare_ports_reach_localhost() {
    let server = &start_servers(1)[0];
    let port = server.port();
    let rt = Runtime::new().unwrap();
    for (target, authority) in [
        (
            format!("passthrough:///localhost:{port}"),
            format!("localhost:{port}"),
        ),
        (format!(":{port}"), format!("localhost:{port}")),
        (
            format!("passthrough:///127.0.0.1:{port}"),
            format!("127.0.0.1:{port}"),
        ),
    ] {
        let ch = channel(&rt, &target, None, plaintext());
        assert_eq!(echo(&mut ch.reader(), true).unwrap(), port, "{target}");
        assert_eq!(server.last_authority().unwrap(), authority, "{target}");
    }
}

/// A name with both an A and an AAAA record: both are backends, in RFC
/// 6724's order as gRPC's DNS resolvers give them (C-core's
/// `address_sorting`, Go's `sortByRFC6724`): `::1` (precedence 50) before
/// `127.0.0.1` (35), so pick_first, trying them in order, uses `::1`. Only
/// where this host has IPv6 loopback.
#[test]
fn a_and_aaaa_answers_are_both_backends_in_rfc6724_order() {
    let Ok(v6) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    drop(v6);
    let (port, servers) = (0..10)
        .find_map(|_| {
            let v4 = TestServer::start(
                Listen::Tcp("127.0.0.1:0".parse().unwrap()),
                ServerOptions::default(),
            )
            .ok()?;
            let port = v4.port();
            let v6 = TestServer::start(
                Listen::Tcp(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))),
                ServerOptions::default(),
            )
            .ok()?;
            Some((port, vec![v4, v6]))
        })
        .expect("a port free on 127.0.0.1 and ::1");
    let dns = Dnsmasq::start("127.0.0.1 svc.test\n::1 svc.test\n", &[]);
    let rt = Runtime::new().unwrap();
    let target = format!("dns://{}/svc.test:{port}", dns.server());

    let pf = channel(
        &rt,
        &target,
        None,
        dns_options(Duration::from_secs(30), false),
    );
    assert_eq!(served(&mut pf.reader(), &servers, 10), vec![0, 10]);

    let rr = channel(
        &rt,
        &target,
        RR,
        dns_options(Duration::from_secs(30), false),
    );
    let mut r = rr.reader();
    warm(&mut r, &servers, &[0, 1]);
    assert_eq!(served(&mut r, &servers, 20), vec![10, 10]);
    assert_eq!(dns.queries("AAAA", "svc.test"), 2, "{}", dns.log());
}
