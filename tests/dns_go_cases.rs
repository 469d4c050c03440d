//! gRPC-Go's DNS resolver tests (internal/resolver/dns/dns_resolver_test.go)
//! ported onto switchyard's `dns` resolver, against a tiny DNS server on
//! 127.0.0.1 (UDP, answers programmed per test). Target parsing is not here
//! (target_go_tables.rs). A name that disappears (NXDOMAIN, no records)
//! is left out: we report an error and keep the last addresses, as C-core
//! does, where gRPC-Go pushes an empty update.

#[path = "common/dns_server.rs"]
mod dns_server;

use dns_server::Ans;
use hickory_proto::rr::RecordType;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};
use switchyard::resolver::testing::TestResolverClientConn;
use switchyard::resolver::{self, Resolver, ResolverOptions, Target};

/// What the fake server answers for one kind of question.
#[derive(Clone, Debug)]
enum Answer {
    NxDomain,
    ServFail,
    /// NOERROR with these records (none: NODATA).
    V4(Vec<Ipv4Addr>),
    V6(Vec<Ipv6Addr>),
    /// TXT records, each a list of strings.
    Txt(Vec<Vec<String>>),
}

impl From<Answer> for Ans {
    fn from(a: Answer) -> Ans {
        match a {
            Answer::NxDomain => Ans::NxDomain,
            Answer::ServFail => Ans::ServFail,
            Answer::V4(ips) => Ans::Ips(ips.into_iter().map(IpAddr::V4).collect()),
            Answer::V6(ips) => Ans::Ips(ips.into_iter().map(IpAddr::V6).collect()),
            Answer::Txt(recs) => Ans::Txt(recs),
        }
    }
}

/// The shared fake DNS server, answering the same for every name.
struct FakeDns(dns_server::FakeDns);

impl FakeDns {
    fn start(a: Answer, aaaa: Answer, txt: Answer) -> FakeDns {
        let dns = dns_server::FakeDns::start();
        dns.set_any_name(RecordType::A, a.into());
        dns.set_any_name(RecordType::AAAA, aaaa.into());
        dns.set_any_name(RecordType::TXT, txt.into());
        FakeDns(dns)
    }

    fn count(&self, kind: RecordType) -> usize {
        self.0.count(kind, None)
    }
}

impl std::ops::Deref for FakeDns {
    type Target = dns_server::FakeDns;

    fn deref(&self) -> &dns_server::FakeDns {
        &self.0
    }
}

/// One TXT record holding `s`, in strings of at most 255 bytes.
fn txt(s: &str) -> Answer {
    let chunks = s
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    Answer::Txt(vec![chunks])
}

/// Builds the registry's `dns` resolver for `dns://SERVER/name`.
fn build(
    dns: &FakeDns,
    name: &str,
    opts: ResolverOptions,
) -> (TestResolverClientConn, Box<dyn Resolver>) {
    let cc = TestResolverClientConn::with_options(opts);
    let target = Target::parse(&format!("dns://{}/{name}", dns.addr)).unwrap();
    let r = resolver::get("dns")
        .expect("dns registered")
        .build(&target, cc.client_conn())
        .unwrap();
    (cc, r)
}

fn txt_on(min: Duration) -> ResolverOptions {
    ResolverOptions {
        dns_service_config: true,
        min_resolution_interval: min,
        ..Default::default()
    }
}

fn addrs(state: &resolver::ResolverState) -> Vec<Vec<String>> {
    state
        .endpoints
        .iter()
        .map(|e| e.addresses.iter().map(|a| a.addr.clone()).collect())
        .collect()
}

const RR_SC: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
const PF_SC: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;

/// gRPC-Go's txtRecordGood, with the Go-only choice (clientLanguage GO)
/// swapped for this client's language: choices 1-3 never match (other
/// languages, 0 %, host "localhost"), choice 4 does.
fn txt_record_good() -> String {
    format!(
        r#"grpc_config=[
  {{"clientLanguage":["CPP","JAVA"],"serviceConfig":{PF_SC}}},
  {{"percentage":0,"serviceConfig":{PF_SC}}},
  {{"clientHostName":["localhost"],"serviceConfig":{PF_SC}}},
  {{"clientLanguage":["RUST"],"percentage":100,"serviceConfig":{RR_SC}}},
  {{"serviceConfig":{PF_SC}}}
]"#
    )
}

fn same_json(a: &str, b: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(a).unwrap()
        == serde_json::from_str::<serde_json::Value>(b).unwrap()
}

/// TestDNSResolver_Basic (default_port, specified_port; SRV is off by
/// default in Go and absent here): one endpoint per address, the port
/// given or 443, the first matching TXT choice.
#[test]
fn go_basic_addresses_and_txt_choice() {
    let dns = FakeDns::start(
        Answer::V4(vec![[1, 2, 3, 4].into(), [5, 6, 7, 8].into()]),
        Answer::V4(vec![]),
        txt(&txt_record_good()),
    );
    for (name, port) in [("foo.bar.test", 443), ("foo.bar.test:1234", 1234)] {
        let (cc, mut r) = build(&dns, name, txt_on(Duration::from_secs(30)));
        assert!(cc.wait_for_pushes(1, Duration::from_secs(10)), "{name}");
        assert!(cc.errors().is_empty(), "{:?}", cc.errors());
        let u = &cc.updates()[0];
        let mut got = addrs(u);
        got.sort();
        assert_eq!(
            got,
            vec![
                vec![format!("1.2.3.4:{port}")],
                vec![format!("5.6.7.8:{port}")]
            ]
        );
        let sc = u.service_config.as_deref().expect("a service config");
        assert!(same_json(sc, RR_SC), "{sc}");
        r.close();
    }
}

/// IPv6 answers are bracketed with the port (Go's formatIP).
#[test]
fn go_aaaa_answers_are_bracketed() {
    let v6: Ipv6Addr = "2607:f8b0:400a:801::1001".parse().unwrap();
    let dns = FakeDns::start(Answer::V4(vec![]), Answer::V6(vec![v6]), Answer::NxDomain);
    let (cc, mut r) = build(&dns, "v6.test:1234", txt_on(Duration::from_secs(30)));
    assert!(cc.wait_for_pushes(1, Duration::from_secs(10)));
    assert_eq!(
        addrs(&cc.updates()[0]),
        vec![vec!["[2607:f8b0:400a:801::1001]:1234".to_string()]]
    );
    r.close();
}

/// TestReportError: a failing lookup (SERVFAIL: temporary) is reported,
/// and retried with backoff without being asked.
#[test]
fn go_report_error_then_retry_with_backoff() {
    let dns = FakeDns::start(Answer::ServFail, Answer::ServFail, Answer::NxDomain);
    let (cc, mut r) = build(&dns, "notfound.test", txt_on(Duration::from_secs(30)));
    assert!(cc.wait_for_pushes(1, Duration::from_secs(10)));
    assert_eq!(cc.errors().len(), 1);
    // Backoff 1 s ± 20 %: a second error without resolve_now.
    let t = Instant::now();
    assert!(cc.wait_for_pushes(2, Duration::from_secs(5)));
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(cc.errors().len(), 2);
    r.close();
}

/// TestTXTError (GRPC_GO_IGNORE_TXT_ERRORS default true): a failing TXT
/// lookup gives an update with no service config.
#[test]
fn go_txt_error_is_ignored() {
    let dns = FakeDns::start(
        Answer::V4(vec![[1, 2, 3, 4].into()]),
        Answer::V4(vec![]),
        Answer::ServFail,
    );
    let (cc, mut r) = build(&dns, "ipv4.single.test", txt_on(Duration::from_secs(30)));
    assert!(cc.wait_for_pushes(1, Duration::from_secs(10)));
    assert!(cc.errors().is_empty());
    assert_eq!(cc.updates()[0].service_config, None);
    r.close();
}

/// TestDisableServiceConfig: disabled in the build options, no TXT lookup
/// and no config.
#[test]
fn go_disable_service_config() {
    let dns = FakeDns::start(
        Answer::V4(vec![[1, 2, 3, 4].into()]),
        Answer::V4(vec![]),
        txt(&txt_record_good()),
    );
    let mut opts = txt_on(Duration::from_secs(30));
    opts.disable_service_config = true;
    let (cc, mut r) = build(&dns, "foo.bar.test", opts);
    assert!(cc.wait_for_pushes(1, Duration::from_secs(10)));
    assert_eq!(cc.updates()[0].service_config, None);
    assert_eq!(dns.count(RecordType::TXT), 0);
    r.close();
}

/// TestRateLimitedResolve / TestMinResolutionInterval: after a success,
/// a burst of resolve_now makes one lookup, at the minimum interval.
#[test]
fn go_rate_limited_resolve() {
    let dns = FakeDns::start(
        Answer::V4(vec![[1, 2, 3, 4].into()]),
        Answer::V4(vec![]),
        Answer::NxDomain,
    );
    let (cc, mut r) = build(&dns, "foo.bar.test", txt_on(Duration::from_millis(700)));
    assert!(cc.wait_for_pushes(1, Duration::from_secs(10)));
    for _ in 0..=100 {
        r.resolve_now();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(dns.count(RecordType::A), 1, "within the interval");
    assert!(cc.wait_for_pushes(2, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(dns.count(RecordType::A), 2, "one lookup for the burst");
    for _ in 0..1000 {
        r.resolve_now();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(dns.count(RecordType::A), 2);
    assert!(cc.wait_for_pushes(3, Duration::from_secs(5)));
    r.close();
}

/// A TXT record present but without `grpc_config=`: no config (Go logs
/// and returns nil).
#[test]
fn go_txt_without_the_attribute_is_no_config() {
    let dns = FakeDns::start(
        Answer::V4(vec![[1, 2, 3, 4].into()]),
        Answer::V4(vec![]),
        txt("v=spf1 -all"),
    );
    let (cc, mut r) = build(&dns, "foo.bar.test", txt_on(Duration::from_secs(30)));
    assert!(cc.wait_for_pushes(1, Duration::from_secs(10)));
    assert_eq!(cc.updates()[0].service_config, None);
    r.close();
}

/// One TXT record split into several strings (each ≤ 255 bytes) is joined.
#[test]
fn go_txt_strings_are_joined() {
    let whole = format!(r#"grpc_config=[{{"serviceConfig":{RR_SC}}}]"#);
    let (a, b) = whole.split_at(20);
    let dns = FakeDns::start(
        Answer::V4(vec![[1, 2, 3, 4].into()]),
        Answer::V4(vec![]),
        Answer::Txt(vec![vec![a.to_string(), b.to_string()]]),
    );
    let (cc, mut r) = build(&dns, "foo.bar.test", txt_on(Duration::from_secs(30)));
    assert!(cc.wait_for_pushes(1, Duration::from_secs(10)));
    assert!(same_json(
        cc.updates()[0].service_config.as_deref().unwrap(),
        RR_SC
    ));
    r.close();
}

/// A2 canarying with two percentage choices: gRPC-Go draws a fresh number
/// for each choice it tests (`chosenByPercentage`: `rand.IntN(100)+1 <=
/// *a`, called per choice in `canaryingSC`), and so does C-core
/// (`ChooseServiceConfig`: `rand() % 100` inside the loop). So for
/// `[{50 %: A}, {50 %: B}, {C}]` a client gets A half the time and B a
/// quarter of the time. One number drawn per lookup for every choice makes
/// B unreachable: whoever misses A's 50 % misses B's too.
#[test]
fn go_each_percentage_choice_draws_its_own_number() {
    let sc = |name: &str| format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]}}"#);
    let record = format!(
        r#"grpc_config=[{{"percentage":50,"serviceConfig":{}}},{{"percentage":50,"serviceConfig":{}}},{{"serviceConfig":{}}}]"#,
        sc("pick_first"),
        sc("round_robin"),
        sc("least_request_experimental")
    );
    let dns = FakeDns::start(
        Answer::V4(vec![[1, 2, 3, 4].into()]),
        Answer::V4(vec![]),
        txt(&record),
    );
    let (cc, mut r) = build(&dns, "canary.test", txt_on(Duration::ZERO));
    const LOOKUPS: usize = 40;
    for n in 1..=LOOKUPS {
        assert!(cc.wait_for_pushes(n, Duration::from_secs(10)), "lookup {n}");
        if n < LOOKUPS {
            r.resolve_now();
        }
    }
    r.close();
    let mut counts = [0usize; 3];
    for u in cc.updates() {
        let c = u.service_config.unwrap();
        let i = ["pick_first", "round_robin", "least_request"]
            .iter()
            .position(|n| c.contains(n))
            .unwrap();
        counts[i] += 1;
    }
    // Go/C-core: expected 20 / 10 / 10; none for B has odds 0.75^40 ≈ 1e-5.
    assert!(
        counts[1] > 0,
        "the second 50 % choice was never chosen in {LOOKUPS} lookups: \
         [A, B, C] = {counts:?}"
    );
}
