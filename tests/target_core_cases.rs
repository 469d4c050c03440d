//! gRPC C-core's target-parsing and address-resolver tests, ported onto
//! `Channel::new`: test/core/util/uri_test.cc (URIParserTest),
//! test/core/resolver/sockaddr_resolver_test.cc (SockaddrResolverTest),
//! test/core/resolver/dns_resolver_test.cc (DnsResolverTest),
//! test/core/address_utils/parse_address_test.cc (ParseAddressTest),
//! test/core/client_channel/resolvers/unix_resolver_test.cc (older tree),
//! with src/core/resolver/sockaddr/sockaddr_resolver.cc (ParseUri) and
//! src/core/lib/address_utils/parse_address.cc as the reference.
//!
//! A channel is observed as in target_go_tables.rs: a policy of ours records
//! the addresses of its first update and creates no subchannel, so nothing
//! connects. C-core's 10.x / 8.8.8.8 / www.google.com addresses are
//! replaced by 127.0.0.x (same shape); rows target_go_tables.rs already
//! checks are not repeated unless they are C-core's own test rows.
//!
//! Found here and fixed (src/resolver/target.rs): an `ipv4:` / `ipv6:`
//! address without a port took 443 (C-core refuses it); their paths were
//! not %-decoded; IPv6 zones (`[fe80::1%25lo]:1`) were refused; a Unix
//! path or abstract name longer than a socket address holds was taken
//! (C-core refuses it at once, gRPC-Go at every dial). Where switchyard
//! follows gRPC-Go instead, the test says so.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::picker::QueuePicker;
use switchyard::{
    registry, Balancer, Builder, Channel, ChannelOptions, ClientConn, ClientConnState,
    ConnectivityState, Runtime, SubConnId, SubConnState, TransportConfig,
};

type Seen = Arc<Mutex<Vec<Vec<String>>>>;

struct Sees(&'static str, Seen);

impl Builder for Sees {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(SeesPolicy(self.1.clone(), false))
    }
}

struct SeesPolicy(Seen, bool);

impl Balancer for SeesPolicy {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        if !self.1 {
            self.1 = true;
            self.0
                .lock()
                .unwrap()
                .push(state.addresses.iter().map(|a| a.addr.clone()).collect());
        }
        cc.update_state(ConnectivityState::Connecting, Box::new(QueuePicker));
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

struct Observer {
    rt: Runtime,
    name: &'static str,
    seen: Seen,
}

impl Observer {
    fn new(name: &'static str) -> Observer {
        let seen: Seen = Arc::default();
        registry::register(Arc::new(Sees(name, seen.clone())));
        Observer {
            rt: Runtime::new().unwrap(),
            name,
            seen,
        }
    }

    fn create(&self, target: &str) -> Result<Channel, String> {
        let config = format!(r#"{{"loadBalancingConfig":[{{"{}":{{}}}}]}}"#, self.name);
        let opts = ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        };
        Channel::new(&self.rt, target, Some(&config), opts).map_err(|e| format!("refused: {e}"))
    }

    /// The addresses the channel made of `target` gave its policy, or why
    /// there were none (creation refused, or the channel failed).
    fn see(&self, target: &str) -> Result<Vec<String>, String> {
        let before = self.seen.lock().unwrap().len();
        let ch = self.create(target)?;
        ch.connect().map_err(|e| format!("connect: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            ch.sync().unwrap();
            if let Some(s) = self.seen.lock().unwrap().get(before) {
                return Ok(s.clone());
            }
            if ch.state() == ConnectivityState::TransientFailure {
                return Err("channel in TRANSIENT_FAILURE".into());
            }
            if Instant::now() > deadline {
                return Err(format!("nothing seen, channel {}", ch.state()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Collects every row's mismatch, then fails once listing them all.
#[derive(Default)]
struct Rows(Vec<String>);

impl Rows {
    fn want(&mut self, target: &str, got: Result<Vec<String>, String>, want: Option<&[&str]>) {
        let ok = match want {
            Some(w) => got.as_ref().is_ok_and(|a| a == w),
            None => got.is_err(),
        };
        if !ok {
            let w = match want {
                Some(w) => format!("{w:?}"),
                None => "an error".into(),
            };
            self.0.push(format!("{target:?}: want {w}, got {got:?}"));
        }
    }
    fn finish(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} row(s) differ from what is wanted:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------
// SockaddrResolverTest.MainTest / ParseAddressTest.MainTest

/// C-core's rows that agree: lists, bad ports, names, stray '[', authority.
#[test]
fn sockaddr_main_test_rows() {
    let o = Observer::new("core_targets_sockaddr_main");
    let mut rows = Rows::default();
    let ok: &[(&str, &[&str])] = &[
        ("ipv4:127.0.0.1:1234", &["127.0.0.1:1234"]),
        (
            "ipv4:127.0.0.3:1234,127.0.0.1:4321",
            &["127.0.0.3:1234", "127.0.0.1:4321"],
        ),
        ("ipv6:[::]:1234", &["[::]:1234"]),
        ("ipv6:[2001:db8::1]:12345", &["[2001:db8::1]:12345"]),
        (
            "unix:///tmp/sockaddr_resolver_test",
            &["unix:/tmp/sockaddr_resolver_test"],
        ),
        ("unix:/path/name", &["unix:/path/name"]),
        (
            "unix-abstract:sockaddr_resolver_test",
            &["unix-abstract:sockaddr_resolver_test"],
        ),
        ("unix-abstract:foobar", &["unix-abstract:foobar"]),
        // unix_resolver_test.cc
        ("unix:path", &["unix:path"]),
        ("unix:/path", &["unix:/path"]),
        ("unix:///path", &["unix:/path"]),
    ];
    for (t, w) in ok {
        rows.want(t, o.see(t), Some(w));
    }
    for t in [
        "ipv4:127.0.0.1:123456",
        "ipv4:www.google.com",
        "ipv4:[",
        "ipv4://127.0.0.1/127.0.0.1:8888",
        "ipv6:[",
        "ipv6:[::]:123456",
        "ipv6:www.google.com",
        "ipv6:WWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWW45%25v6:45%25x$1*",
        "unix://path",
    ] {
        rows.want(t, o.see(t), None);
    }
    rows.finish("sockaddr rows");
}

/// sockaddr_resolver_test.cc `test_fails(ipv4, "ipv4:10.2.1.1")` and
/// `test_fails(ipv6, "ipv6:[::]")`: parse_address.cc
/// grpc_parse_ipv4_hostport / grpc_parse_ipv6_hostport refuse an address
/// without a port ("no port given for ipv4 scheme"), and ParseUri fails the
/// whole list when one item fails. Here a missing port means 443.
#[test]
fn sockaddr_address_without_port_is_refused() {
    let o = Observer::new("core_targets_sockaddr_noport");
    let mut rows = Rows::default();
    for t in [
        "ipv4:127.0.0.1",
        "ipv6:[::]",
        "ipv6:::1",
        "ipv4:127.0.0.1:1,127.0.0.2",
        "ipv6:[::1]:1,[::2]",
    ] {
        rows.want(t, o.see(t), None);
    }
    rows.finish("addresses without a port");
}

/// uri_test.cc IPV6StringsAreParsedCorrectly ("ipv6:[2001:db8::1%252]:12345"
/// has the path "[2001:db8::1%2]:12345") with parse_address_test.cc
/// (`test_grpc_parse_ipv6(..., 12345, /*scope_id=*/2)`) and
/// parse_address_with_named_scope_id_test.cc (a zone given as an interface
/// name, `if_nametoindex`): RFC 6874 zone ids are accepted. Here every row
/// is refused ("is not an IPv6 address"): the opaque path is not
/// percent-decoded and the zone is not parsed.
#[test]
fn ipv6_zone_ids_are_accepted() {
    let lo = std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "1".into());
    let o = Observer::new("core_targets_ipv6_zone");
    let mut rows = Rows::default();
    // The numeric zone as written; a named one as its index (C-core keeps
    // sin6_scope_id; "%lo" is accepted too).
    let lo_forms = [
        format!("[fe80::1234%{lo}]:12345"),
        "[fe80::1234%lo]:12345".to_string(),
    ];
    let t = "ipv6:[2001:db8::1%252]:12345";
    rows.want(t, o.see(t), Some(&["[2001:db8::1%2]:12345"]));
    for t in ["ipv6:[fe80::1234%25lo]:12345", "ipv6:[fe80::1234%lo]:12345"] {
        let got = o.see(t);
        if !got
            .as_ref()
            .is_ok_and(|a| a.len() == 1 && lo_forms.contains(&a[0]))
        {
            rows.0
                .push(format!("{t:?}: want one of {lo_forms:?}, got {got:?}"));
        }
    }
    rows.finish("IPv6 zone ids");
}

/// C-core's URI::Parse percent-decodes the path whatever its form
/// (uri_test.cc UncommonValidExamplesAreParsedCorrectly: "/whatz%25it" ->
/// "/whatz%it"; EncodedNullsInURIStringAreSupported: "unix-abstract:%00x" ->
/// "\0x"), and the sockaddr resolvers read that decoded path: so do
/// switchyard's ipv4: and ipv6: (C-core's own schemes).
#[test]
fn opaque_ip_paths_are_percent_decoded() {
    let o = Observer::new("core_targets_opaque_decode");
    let mut rows = Rows::default();
    for (t, w) in [
        ("ipv4:127.0.0.1%3A1234", "127.0.0.1:1234"),
        ("ipv4:127.0.0.1:1234%2C127.0.0.2:1", "127.0.0.1:1234"),
        ("ipv6:%5B::1%5D:1234", "[::1]:1234"),
    ] {
        let got = o.see(t);
        if t.contains("%2C") {
            // A decoded ',' splits the list in C-core (ParseUri splits the
            // decoded path).
            rows.want(t, got, Some(&["127.0.0.1:1234", "127.0.0.2:1"]));
        } else {
            rows.want(t, got, Some(&[w]));
        }
    }
    rows.finish("percent-decoded opaque paths");
}

/// Where gRPC implementations disagree about `unix:` / `unix-abstract:`
/// and switchyard takes gRPC-Go's side (pinned): an opaque `unix:` path is
/// kept as written (gRPC-Go's URL.Opaque; C-core %-decodes it: "unix:rel
/// x"); a path or name is one address, commas and all (gRPC-Go's unix
/// resolver; C-core's ParseUri splits every sockaddr scheme's path at
/// ','); and an abstract name with a NUL byte is refused (C-core copies the
/// bytes, uri_test.cc EncodedNullsInURIStringAreSupported), because
/// addresses travel through C strings in switchyard's C ABI.
#[test]
fn unix_targets_read_as_grpc_go_reads_them() {
    let o = Observer::new("core_targets_unix_go");
    let mut rows = Rows::default();
    rows.want(
        "unix:rel%20x",
        o.see("unix:rel%20x"),
        Some(&["unix:rel%20x"]),
    );
    rows.want(
        "unix:/tmp/a.sock,/tmp/b.sock",
        o.see("unix:/tmp/a.sock,/tmp/b.sock"),
        Some(&["unix:/tmp/a.sock,/tmp/b.sock"]),
    );
    rows.want(
        "unix-abstract:a,b",
        o.see("unix-abstract:a,b"),
        Some(&["unix-abstract:a,b"]),
    );
    rows.want("unix-abstract:/%00x", o.see("unix-abstract:/%00x"), None);
    rows.finish("unix targets as gRPC-Go reads them");
}

/// parse_address.cc UnixSockaddrPopulate / UnixAbstractSockaddrPopulate:
/// "Path name should not have more than 107 characters" (sun_path is 108
/// bytes): the resolver is not created and the channel fails. gRPC-Go takes
/// the path and fails at dial. Here, as in C-core, the target is refused.
#[test]
fn unix_paths_longer_than_sun_path_are_refused() {
    let o = Observer::new("core_targets_unix_len");
    let long = "a".repeat(200);
    let mut rows = Rows::default();
    for t in [format!("unix:/tmp/{long}"), format!("unix-abstract:{long}")] {
        rows.want(&t, o.see(&t), None);
    }
    // 107 bytes fit.
    let fits = format!("/tmp/{}", "b".repeat(102));
    let t = format!("unix:{fits}");
    rows.want(&t, o.see(&t), Some(&[format!("unix:{fits}").as_str()]));
    rows.finish("unix path length");
}

// ---------------------------------------------------------------------------
// DnsResolverTest.MainTest and uri_test.cc rows that reach a resolver.

/// dns_resolver_test.cc: "dns:10.2.1.1", "dns:10.2.1.1:1234",
/// "dns:www.google.com", "dns:///www.google.com" build a resolver; with
/// c-ares (C-core's default) "dns://8.8.8.8/8.8.8.8:8888" does too (the
/// native resolver refuses an authority). Names are only created (no
/// lookup); IP literals are resolved (never looked up).
#[test]
fn dns_main_test_rows() {
    let o = Observer::new("core_targets_dns_main");
    let mut rows = Rows::default();
    for (t, w) in [
        ("dns:127.0.0.1", "127.0.0.1:443"),
        ("dns:127.0.0.1:1234", "127.0.0.1:1234"),
        ("dns://127.0.0.1/127.0.0.2:8888", "127.0.0.2:8888"),
        // uri_test.cc: the fragment and query are no part of the path.
        ("dns:127.0.0.1:5#fragment-all-the-things", "127.0.0.1:5"),
        ("dns:///127.0.0.1:5?mi_casa=su_casa", "127.0.0.1:5"),
        ("ipv4:127.0.0.1:5?legit#twice", "127.0.0.1:5"),
    ] {
        rows.want(t, o.see(t), Some(&[w]));
    }
    for t in ["dns:www.google.com", "dns:///www.google.com"] {
        if let Err(e) = o.create(t) {
            rows.0.push(format!("{t:?}: want a channel, got {e}"));
        }
    }
    rows.finish("dns rows");
}
