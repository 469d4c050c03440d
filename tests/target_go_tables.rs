//! gRPC-Go's table-driven tests for target parsing, scheme
//! selection, default authority and the dns / unix / passthrough resolvers'
//! target validation (plus C-core's `ipv4:` / `ipv6:`), ported onto the
//! channel's public API.
//!
//! What a channel made of a target is observed through a policy of our own
//! that records, at its first update, the channel's target, its authority
//! (`ClientConn::authority`, the calls' `:authority`) and the addresses the
//! resolver gave. No connection is ever made (the policy creates no
//! subchannel), so addresses that nothing listens on are fine.
//!
//! Sources (grpc-go 4793ad04): `clientconn_parsed_target_test.go`,
//! `clientconn_authority_test.go`, `internal/resolver/dns/dns_resolver.go`
//! (+ `_test.go`), `internal/resolver/unix/unix.go`,
//! `internal/resolver/passthrough/passthrough.go`; grpc C-core
//! `src/core/resolver/sockaddr/sockaddr_resolver.cc`,
//! `src/core/lib/address_utils/parse_address.cc`.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::picker::QueuePicker;
use switchyard::{
    registry, Balancer, Builder, CallOptions, Channel, ChannelOptions, ClientConn, ClientConnState,
    Code, ConnectivityState, ExternalConnector, HostTransport, Runtime, SubConn, SubConnId,
    SubConnState, TransportConfig,
};

// ---------------------------------------------------------------------------
// The observing policy.

/// What a policy saw of its channel at its first update.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sighting {
    target: String,
    authority: Option<String>,
    addrs: Vec<String>,
}

type Sightings = Arc<Mutex<Vec<Sighting>>>;

struct Sees(&'static str, Sightings);

impl Builder for Sees {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(SeesPolicy(self.1.clone(), false))
    }
}

struct SeesPolicy(Sightings, bool);

impl Balancer for SeesPolicy {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        if !self.1 {
            self.1 = true;
            self.0.lock().unwrap().push(Sighting {
                target: cc.target().to_string(),
                authority: cc.authority().map(str::to_string),
                addrs: state.addresses.iter().map(|a| a.addr.clone()).collect(),
            });
        }
        cc.update_state(ConnectivityState::Connecting, Box::new(QueuePicker));
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

/// A recorder registered under a policy name of the test's own.
struct Observer {
    rt: Runtime,
    name: &'static str,
    seen: Sightings,
}

impl Observer {
    fn new(name: &'static str) -> Observer {
        let seen: Sightings = Arc::default();
        registry::register(Arc::new(Sees(name, seen.clone())));
        Observer {
            rt: Runtime::new().unwrap(),
            name,
            seen,
        }
    }

    fn config(&self) -> String {
        format!(r#"{{"loadBalancingConfig":[{{"{}":{{}}}}]}}"#, self.name)
    }

    fn create(&self, target: &str, opts: ChannelOptions) -> Result<Channel, String> {
        Channel::new(&self.rt, target, Some(&self.config()), opts)
            .map_err(|e| format!("Channel::new failed: {e}"))
    }

    /// The channel made of `target`: what its policy saw, or why there was
    /// nothing to see (creation refused, or the resolver failed).
    fn see_with(&self, target: &str, opts: ChannelOptions) -> Result<Sighting, String> {
        let before = self.seen.lock().unwrap().len();
        let ch = self.create(target, opts)?;
        ch.connect().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            ch.sync().unwrap();
            if let Some(s) = self.seen.lock().unwrap().get(before) {
                return Ok(s.clone());
            }
            if ch.state() == ConnectivityState::TransientFailure {
                return Err(format!("channel failed: {}", rpc_error(&ch).1));
            }
            if Instant::now() > deadline {
                return Err(format!("nothing seen, channel {}", ch.state()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn see(&self, target: &str) -> Result<Sighting, String> {
        self.see_with(target, insecure())
    }
}

fn insecure() -> ChannelOptions {
    ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    }
}

/// A fail-fast RPC's code and message.
fn rpc_error(ch: &Channel) -> (Code, String) {
    let opts = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(3)),
        wait_for_ready: Some(false),
        ..Default::default()
    };
    match ch.reader().unary("/tables.Target/Unary", b"x", &opts) {
        Ok(_) => panic!("the RPC succeeded"),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

/// Collects every row's mismatch, then fails once listing them all.
#[derive(Default)]
struct Rows(Vec<String>);

impl Rows {
    fn check(&mut self, ok: bool, row: String) {
        if !ok {
            self.0.push(row);
        }
    }
    fn finish(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} row(s) differ from gRPC:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------
// DNS resolver: TestIPResolver / TestResolverBuild (internal/resolver/dns).

/// TestIPResolver's rows without named ports or zones: an IP literal is its
/// own address, 443 when no port is given. (Agrees today.)
#[test]
fn dns_ip_literal_rows_resolve_to_themselves() {
    let o = Observer::new("target_tables_ip_rows");
    let mut rows = Rows::default();
    for (endpoint, want) in [
        ("127.0.0.1", "127.0.0.1:443"),
        ("127.0.0.1:12345", "127.0.0.1:12345"),
        ("::1", "[::1]:443"),
        ("[::1]", "[::1]:443"),
        ("[::1]:12345", "[::1]:12345"),
        (
            "2001:db8:85a3::8a2e:370:7334",
            "[2001:db8:85a3::8a2e:370:7334]:443",
        ),
        (
            "[2001:db8:85a3::8a2e:370:7334]",
            "[2001:db8:85a3::8a2e:370:7334]:443",
        ),
        (
            "[2001:db8:85a3::8a2e:370:7334]:12345",
            "[2001:db8:85a3::8a2e:370:7334]:12345",
        ),
        ("::", "[::]:443"),
        ("[2001:db8:a0b:12f0::1]:21", "[2001:db8:a0b:12f0::1]:21"),
    ] {
        for target in [format!("dns:///{endpoint}"), endpoint.to_string()] {
            let got = o.see(&target).map(|s| s.addrs);
            rows.check(
                got.as_ref().is_ok_and(|a| a == &[want]),
                format!("{target:?}: want [{want:?}], got {got:?}"),
            );
        }
    }
    rows.finish("IP literal targets");
}

/// grpc-go `internal/resolver/dns/dns_resolver.go` `parseTarget` takes the
/// port as a string and never checks it is a number (`net.SplitHostPort`
/// then `ip + ":" + port`); the dialer resolves a service name ("http" ->
/// 80). `dns_resolver_test.go` TestResolverBuild builds "golang.org:http"
/// ("url with port") and "[2001:db8::1]:http" ("ipv6 address with non
/// integer port") without error, and TestIPResolver ("abbreviated ipv6
/// address") expects the address "[2001:db8::1]:http". C-core's resolvers
/// do the same (getaddrinfo with the port as a service name; default port
/// "https"). Here a named port refuses the channel ("not a number").
#[test]
fn dns_named_ports_are_accepted() {
    let o = Observer::new("target_tables_named_ports");
    let mut rows = Rows::default();
    for (target, want) in [
        (
            "dns:///[2001:db8::1]:http",
            ["[2001:db8::1]:http", "[2001:db8::1]:80"],
        ),
        ("dns:///127.0.0.1:http", ["127.0.0.1:http", "127.0.0.1:80"]),
        ("127.0.0.1:https", ["127.0.0.1:https", "127.0.0.1:443"]),
        ("[::1]:http", ["[::1]:http", "[::1]:80"]),
    ] {
        let got = o.see(target).map(|s| s.addrs);
        rows.check(
            got.as_ref()
                .is_ok_and(|a| a.len() == 1 && want.contains(&a[0].as_str())),
            format!("{target:?}: want one of {want:?}, got {got:?}"),
        );
    }
    // A host name with a named port is a channel too (the lookup is later).
    let got = o.create("dns:///localhost:http", insecure()).map(drop);
    rows.check(
        got.is_ok(),
        format!("\"dns:///localhost:http\": want a channel, got {got:?}"),
    );
    rows.finish("named ports");
}

/// TestResolverBuild's error rows (agree today: refused, here at creation).
#[test]
fn dns_build_error_rows_are_refused() {
    let o = Observer::new("target_tables_build_errors");
    let mut rows = Rows::default();
    for endpoint in ["[2001:db8::1]:", ":", "", "[2001:db8:a0b:12f0::1"] {
        let target = format!("dns:///{endpoint}");
        let got = o.see(&target);
        rows.check(
            got.is_err(),
            format!("{target:?}: want an error, got {got:?}"),
        );
    }
    rows.finish("DNS build errors");
}

// ---------------------------------------------------------------------------
// DNS resolver: TestCustomAuthority (the DNS server in the authority).

/// A DNS server on 127.0.0.1 that answers every A query with `ip` and
/// every other query with no records.
struct FakeDns {
    port: u16,
    stop: Arc<AtomicBool>,
    queries: Arc<Mutex<Vec<String>>>,
}

impl FakeDns {
    fn start(ip: [u8; 4]) -> FakeDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, q) = (stop.clone(), queries.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((name, reply)) = answer(&buf[..n], ip) {
                    q.lock().unwrap().push(name);
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        FakeDns {
            port,
            stop,
            queries,
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The reply to one query: its question echoed, one A record for A queries.
fn answer(q: &[u8], ip: [u8; 4]) -> Option<(String, Vec<u8>)> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_string());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = q.get(12..i + 4)?;
    let a = qtype == 1;
    let mut r = Vec::new();
    r.extend_from_slice(&q[0..2]);
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, a as u8, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if a {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&ip);
    }
    Some((labels.join("."), r))
}

/// grpc-go `dns_resolver.go` `newNetResolver` reads the authority with
/// `parseTarget(authority, "53")`, so an authority with no host means
/// localhost: TestCustomAuthority "no host port and non-default port"
/// (`:123` -> the resolver dials "localhost:123"). Here `dns://:PORT/...`
/// refuses the channel ("must be an IP address"). (Host names in the
/// authority, "dnsserver.com" -> "dnsserver.com:53", are refused by a
/// documented choice and not probed.)
#[test]
fn dns_authority_without_a_host_is_localhost() {
    let dns = FakeDns::start([127, 0, 0, 9]);
    let o = Observer::new("target_tables_dns_authority");
    let target = format!("dns://:{}/probe-target.test:4321", dns.port);
    let got = o.see(&target).map(|s| s.addrs);
    assert_eq!(
        got,
        Ok(vec!["127.0.0.9:4321".to_string()]),
        "{target:?} should ask the DNS server on localhost:{} (queries it saw: {:?})",
        dns.port,
        dns.queries.lock().unwrap()
    );
}

/// TestCustomAuthority's rows that agree today: an IP server, 53 when no
/// port; and the error rows refused.
#[test]
fn dns_authority_ip_rows() {
    let dns = FakeDns::start([127, 0, 0, 8]);
    let o = Observer::new("target_tables_dns_authority_ip");
    let target = format!("dns://127.0.0.1:{}/probe-target.test", dns.port);
    assert_eq!(
        o.see(&target).map(|s| s.addrs),
        Ok(vec!["127.0.0.8:443".to_string()]),
        "{target}"
    );
    let mut rows = Rows::default();
    for authority in [":", "[::1]:", "dnsserver.com:"] {
        let target = format!("dns://{authority}/foo.bar.com");
        let got = o.see(&target);
        rows.check(
            got.is_err(),
            format!("{target:?}: want an error, got {got:?}"),
        );
    }
    rows.finish("DNS authority errors");
}

// ---------------------------------------------------------------------------
// Default authority: TestClientConnAuthority (clientconn_authority_test.go)
// and clientconn.go initAuthority / encodeAuthority.

/// TestClientConnAuthority's rows without credentials (agree today), plus
/// the forms the brief names: IPv6 literals in brackets, DNS authorities.
#[test]
fn default_authority_rows() {
    // The name resolves through a DNS server of ours (the authority is
    // the endpoint's whatever server is asked).
    let dns = FakeDns::start([127, 0, 0, 7]);
    let named = format!("dns://127.0.0.1:{}/Non-Existent.Server:8080", dns.port);
    let o = Observer::new("target_tables_authority");
    let mut rows = Rows::default();
    for (target, want) in [
        (named.as_str(), "Non-Existent.Server:8080"),
        ("unix:sock.sock", "localhost"),
        ("unix:/sock.sock", "localhost"),
        ("unix:///sock.sock", "localhost"),
        ("unix-abstract:probe-target", "localhost"),
        ("localhost:50051", "localhost:50051"),
        (":50051", "localhost:50051"),
        ("dns:///:50051", "localhost:50051"),
        ("dns:///[::1]:50051", "[::1]:50051"),
        ("[::1]:50051", "[::1]:50051"),
        ("dns:///[::1]", "[::1]"),
        ("dns://127.0.0.1:53/127.0.0.1:50051", "127.0.0.1:50051"),
        ("dns:///127.0.0.1", "127.0.0.1"),
        ("passthrough:///127.0.0.1:50051", "127.0.0.1:50051"),
        ("passthrough://ignored/127.0.0.1:50051", "127.0.0.1:50051"),
        ("ipv4:127.0.0.1:50051", "127.0.0.1:50051"),
        ("ipv6:[::1]:50051", "[::1]:50051"),
        // url.Parse drops the query from the path (Endpoint()).
        ("dns:///127.0.0.1:50051?x=1", "127.0.0.1:50051"),
    ] {
        let got = o.see(target).map(|s| (s.target, s.authority));
        rows.check(
            got.as_ref()
                .is_ok_and(|(t, a)| t == target && a.as_deref() == Some(want)),
            format!("{target:?}: want (target as written, {want:?}), got {got:?}"),
        );
    }
    // WithAuthority wins over the target's.
    let got = o
        .see_with(
            &named,
            ChannelOptions {
                authority: Some("authority-override".into()),
                ..insecure()
            },
        )
        .map(|s| s.authority);
    rows.check(
        got.as_ref()
            .is_ok_and(|a| a.as_deref() == Some("authority-override")),
        format!("WithAuthority: got {got:?}"),
    );
    rows.finish("default authority");
}

// ---------------------------------------------------------------------------
// Target parsing and scheme selection: clientconn_parsed_target_test.go.

/// Where the success rows resolve to (the ones that make a channel here):
/// unix-abstract's name as written up to the fragment, passthrough's
/// endpoint as the address. (Agrees today.)
#[test]
fn parsed_target_success_rows_resolve_as_go() {
    let o = Observer::new("target_tables_parsed_resolve");
    let mut rows = Rows::default();
    for (target, want) in [
        // url.Parse cuts the fragment at '#': Path "/ a///://::!@".
        (
            "unix-abstract:/ a///://::!@#$%25^&*()b",
            "unix-abstract:/ a///://::!@",
        ),
        (
            "unix-abstract:passthrough:abc",
            "unix-abstract:passthrough:abc",
        ),
        ("unix:///a/b/c", "unix:/a/b/c"),
        ("unix:/a/b/c", "unix:/a/b/c"),
        ("unix:a/b/c", "unix:a/b/c"),
        ("UNIX:a/b/c", "unix:a/b/c"),
    ] {
        let got = o.see(target).map(|s| s.addrs);
        rows.check(
            got.as_ref().is_ok_and(|a| a == &[want]),
            format!("{target:?}: want [{want:?}], got {got:?}"),
        );
    }
    rows.finish("resolved success rows");
}

// ---------------------------------------------------------------------------
// C-core's ipv4: / ipv6: (sockaddr_resolver.cc, parse_address.cc).

/// Rows that agree today: lists, empty items skipped, authority refused,
/// brackets for an IPv6 address with a port.
#[test]
fn sockaddr_rows() {
    let o = Observer::new("target_tables_sockaddr");
    let mut rows = Rows::default();
    for (target, want) in [
        (
            "ipv4:127.0.0.1:1,127.0.0.2:2",
            Some(vec!["127.0.0.1:1", "127.0.0.2:2"]),
        ),
        (
            "ipv4:127.0.0.1:1,,127.0.0.2:2,",
            Some(vec!["127.0.0.1:1", "127.0.0.2:2"]),
        ),
        ("ipv4:///127.0.0.1:5", Some(vec!["127.0.0.1:5"])),
        ("ipv6:[::1]:5", Some(vec!["[::1]:5"])),
        ("ipv6:[::1]:5,[::2]:6", Some(vec!["[::1]:5", "[::2]:6"])),
        ("ipv4://host/127.0.0.1:1", None),
        ("ipv4:127.0.0.1:70000", None),
        ("ipv4:localhost:1", None),
        ("ipv6:127.0.0.1:1", None),
        ("ipv4:", None),
    ] {
        let got = o.see(target).map(|s| s.addrs);
        let ok = match &want {
            Some(w) => got.as_ref().is_ok_and(|a| a == w),
            None => got.is_err(),
        };
        rows.check(ok, format!("{target:?}: want {want:?}, got {got:?}"));
    }
    rows.finish("ipv4/ipv6 rows");
}

/// TestParsedTarget_WithCustomDialer (NewClient + WithContextDialer): with a
/// connector of the host's, the address handed over is the resolver's
/// (passthrough ignores its authority; a dns IP literal ignores the DNS
/// server). (Agrees today; unix paths are handed over as "unix:/a/b/c"
/// where Go's dialer gets "unix:///a/b/c": the library's own address
/// format, not compared.)
#[test]
fn custom_connector_rows_get_the_resolved_address() {
    struct Host;
    impl HostTransport for Host {
        fn connect(&self, _: &Arc<SubConn>) {}
        fn shutdown(&self, _: &Arc<SubConn>) {}
    }
    let o = Observer::new("target_tables_custom_dialer");
    let mut rows = Rows::default();
    for (target, want) in [
        ("dns:///127.0.0.1:50051", "127.0.0.1:50051"),
        ("dns://authority/127.0.0.1:50051", "127.0.0.1:50051"),
        ("passthrough://a.server.com/google.com", "google.com"),
        (
            "passthrough:///Non-Existent.Server:8080",
            "Non-Existent.Server:8080",
        ),
    ] {
        let opts = ChannelOptions {
            connector: Some(Box::new(ExternalConnector::new(Arc::new(Host)))),
            ..Default::default()
        };
        let got = o.see_with(target, opts).map(|s| s.addrs);
        rows.check(
            got.as_ref().is_ok_and(|a| a == &[want]),
            format!("{target:?}: want [{want:?}], got {got:?}"),
        );
    }
    rows.finish("custom dialer rows");
}
