//! gRPC-Go's table-driven service-config and LB-policy-config parse tests,
//! ported row by row onto switchyard's parsers (`ServiceConfig::parse` and
//! each registered builder's `parse_config`).
//!
//! Sources (grpc-go @ 4793ad04): `service_config_test.go` (TestParse*),
//! `service_config.go` (`parseServiceConfig`, `convertRetryPolicy`),
//! `codes/codes.go` (`Code.UnmarshalJSON`), `internal/serviceconfig/
//! duration_test.go`, `balancer/ringhash/config_test.go`,
//! `balancer/leastrequest/leastrequest_test.go` (TestParseConfig),
//! `internal/xds/balancer/outlierdetection/balancer_ext_test.go`
//! (TestParseConfig), `balancer/pickfirst/pickfirst_ext_test.go`
//! (TestPickFirst_ParseConfig_*), `balancer/weightedroundrobin/balancer.go`
//! (`ParseConfig`).
//!
//! Rows where gRPC-Go and C-core (or the gRFCs) disagree and switchyard
//! follows the latter are left out: status-code names in any case (the
//! specs digest), `maxAttempts` beyond int64 capped to 5, an unnamed
//! `methodConfig` entry validated (C-core).

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use switchyard::policy::least_request::LeastRequestConfig;
use switchyard::policy::outlier_detection::{
    FailurePercentageEjection, OutlierDetectionConfig, SuccessRateEjection,
};
use switchyard::policy::weighted_round_robin::WrrConfig;
use switchyard::service_config::ServiceConfig;
use switchyard::{Balancer, Builder, Code, LbConfig};

fn parse(js: &str) -> Result<ServiceConfig, String> {
    ServiceConfig::parse(Some(js))
}

fn ok(js: &str) -> ServiceConfig {
    match parse(js) {
        Ok(c) => c,
        Err(e) => panic!("gRPC-Go accepts {js}\nswitchyard rejects it: {e}"),
    }
}

fn rejected(js: &str) {
    if let Ok(c) = parse(js) {
        panic!("gRPC-Go rejects {js}\nswitchyard accepts it: {c:?}");
    }
}

fn policy_parse(name: &str, cfg: Value) -> Result<Option<LbConfig>, String> {
    switchyard::registry::get(name)
        .unwrap_or_else(|| panic!("{name} is registered"))
        .parse_config(&cfg)
}

fn mc(js: &str, path: &str) -> switchyard::MethodConfig {
    let c = ok(js);
    let m = c
        .methods
        .lookup(path)
        .unwrap_or_else(|| panic!("{path} in {js}"));
    (**m).clone()
}

const FOO_BAR: &str = r#"[{"service":"foo","method":"Bar"}]"#;

fn one_method(body: &str) -> String {
    format!(r#"{{"methodConfig":[{{"name":{FOO_BAR},{body}}}]}}"#)
}

// ---------------------------------------------------------------------------
// service_config_test.go
// ---------------------------------------------------------------------------

/// TestParseLBConfig: a registered policy's own parser gets its entry.
#[test]
fn go_parse_lb_config_custom_policy() {
    struct Pbb;
    #[derive(Debug, PartialEq)]
    struct PbbData {
        foo: String,
    }
    impl Builder for Pbb {
        fn name(&self) -> &str {
            "pbb"
        }
        fn build(&self) -> Box<dyn Balancer> {
            switchyard::registry::get("round_robin").unwrap().build()
        }
        fn parse_config(&self, c: &Value) -> Result<Option<LbConfig>, String> {
            let foo = c
                .get("foo")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Ok(Some(Arc::new(PbbData { foo })))
        }
    }
    switchyard::registry::register(Arc::new(Pbb));
    let c = ok(r#"{"loadBalancingConfig": [{"pbb": { "foo": "hi" } }]}"#);
    assert_eq!(c.policy.name(), "pbb");
    let d = c.policy_config.as_ref().unwrap().downcast_ref::<PbbData>();
    assert_eq!(d, Some(&PbbData { foo: "hi".into() }));
}

/// TestParseNoLBConfigSupported.
#[test]
fn go_parse_no_lb_config_supported() {
    rejected(r#"{"loadBalancingConfig": [{"not_a_balancer1": {} }, {"not_a_balancer2": {}}]}"#);
    rejected(r#"{"loadBalancingConfig": []}"#);
}

/// TestParseLoadBalancer.
#[test]
fn go_parse_load_balancer() {
    let js = format!(
        r#"{{"loadBalancingPolicy":"round_robin","methodConfig":[{{"name":{FOO_BAR},"waitForReady":true}}]}}"#
    );
    let c = ok(&js);
    assert_eq!(c.policy.name(), "round_robin");
    assert_eq!(
        c.methods.lookup("/foo/Bar").unwrap().wait_for_ready,
        Some(true)
    );
    rejected(&format!(
        r#"{{"loadBalancingPolicy":1,"methodConfig":[{{"name":{FOO_BAR},"waitForReady":false}}]}}"#
    ));
}

/// TestParseWaitForReady.
#[test]
fn go_parse_wait_for_ready() {
    assert_eq!(
        mc(&one_method(r#""waitForReady":true"#), "/foo/Bar").wait_for_ready,
        Some(true)
    );
    assert_eq!(
        mc(&one_method(r#""waitForReady":false"#), "/foo/Bar").wait_for_ready,
        Some(false)
    );
    // Invalid JSON ("fall") in the first of two entries.
    rejected(&format!(
        r#"{{"methodConfig":[{{"name":{FOO_BAR},"waitForReady":fall}},{{"name":{FOO_BAR},"waitForReady":true}}]}}"#
    ));
    // Not a bool: encoding/json refuses a string for *bool.
    rejected(&one_method(r#""waitForReady":"true""#));
}

/// TestParseTimeOut.
#[test]
fn go_parse_timeout() {
    assert_eq!(
        mc(&one_method(r#""timeout":"1s""#), "/foo/Bar").timeout,
        Some(Duration::from_secs(1))
    );
    rejected(&one_method(r#""timeout":"3c""#));
    rejected(&format!(
        r#"{{"methodConfig":[{{"name":{FOO_BAR},"timeout":"3c"}},{{"name":{FOO_BAR},"timeout":"1s"}}]}}"#
    ));
}

/// TestParseMsgSize.
#[test]
fn go_parse_msg_size() {
    let m = mc(
        &one_method(r#""maxRequestMessageBytes":1024,"maxResponseMessageBytes":2048"#),
        "/foo/Bar",
    );
    assert_eq!(m.max_request_message_bytes, Some(1024));
    assert_eq!(m.max_response_message_bytes, Some(2048));
    // The same name twice (the first entry's values as strings).
    rejected(&format!(
        r#"{{"methodConfig":[{{"name":{FOO_BAR},"maxRequestMessageBytes":"1024","maxResponseMessageBytes":"2048"}},
            {{"name":{FOO_BAR},"maxRequestMessageBytes":1024,"maxResponseMessageBytes":2048}}]}}"#
    ));
}

/// TestParseDefaultMethodConfig.
#[test]
fn go_parse_default_method_config() {
    for name in [r#"[{}]"#, r#"[{"service": null}]"#, r#"[{"service": ""}]"#] {
        let js = format!(r#"{{"methodConfig":[{{"name":{name},"waitForReady":true}}]}}"#);
        let c = ok(&js);
        for path in ["/any.Service/Method", "/x/y"] {
            assert_eq!(
                c.methods.lookup(path).map(|m| m.wait_for_ready),
                Some(Some(true)),
                "{js} {path}"
            );
        }
    }
    rejected(r#"{"methodConfig":[{"name":[{"method":"Bar"}],"waitForReady":true}]}"#);
    rejected(r#"{"methodConfig":[{"name":[{"service":"","method":"Bar"}],"waitForReady":true}]}"#);
}

/// TestParseMethodConfigDuplicatedName.
#[test]
fn go_parse_method_config_duplicated_name() {
    rejected(
        r#"{"methodConfig":[{"name":[{"service":"foo"},{"service":"foo"}],"waitForReady":true}]}"#,
    );
}

fn retry_sc(policy: &str) -> String {
    format!(r#"{{"methodConfig":[{{"name":[{{"service":"foo"}}],"retryPolicy":{policy}}}]}}"#)
}

/// TestParseRetryPolicy.
#[test]
fn go_parse_retry_policy() {
    let c = ok(&retry_sc(
        r#"{"maxAttempts":2,"initialBackoff":"2s","maxBackoff":"10s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
    ));
    let r = c
        .methods
        .lookup("/foo/Any")
        .unwrap()
        .retry_policy
        .clone()
        .unwrap();
    assert_eq!(r.max_attempts, 2);
    assert_eq!(r.initial_backoff, Duration::from_secs(2));
    assert_eq!(r.max_backoff, Duration::from_secs(10));
    assert_eq!(r.backoff_multiplier, 2.0);
    assert_eq!(r.retryable_status_codes, vec![Code::Unavailable]);
    for (name, policy) in [
        (
            "negative maxAttempts",
            r#"{"maxAttempts":-1,"initialBackoff":"2s","maxBackoff":"10s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
        ),
        (
            "missing maxAttempts",
            r#"{"initialBackoff":"2s","maxBackoff":"10s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
        ),
        (
            "zero initialBackoff",
            r#"{"maxAttempts":2,"initialBackoff":"0s","maxBackoff":"10s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
        ),
        (
            "zero maxBackoff",
            r#"{"maxAttempts":2,"initialBackoff":"2s","maxBackoff":"0s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
        ),
        (
            "zero backoffMultiplier",
            r#"{"maxAttempts":2,"initialBackoff":"2s","maxBackoff":"10s","backoffMultiplier":0,"retryableStatusCodes":["UNAVAILABLE"]}"#,
        ),
        (
            "no retryable codes",
            r#"{"maxAttempts":2,"initialBackoff":"2s","maxBackoff":"10s","backoffMultiplier":2,"retryableStatusCodes":[]}"#,
        ),
        // isValidRetryPolicy: MaxAttempts > 1.
        (
            "maxAttempts 1",
            r#"{"maxAttempts":1,"initialBackoff":"2s","maxBackoff":"10s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
        ),
        (
            "negative initialBackoff",
            r#"{"maxAttempts":2,"initialBackoff":"-1s","maxBackoff":"10s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
        ),
        (
            "negative multiplier",
            r#"{"maxAttempts":2,"initialBackoff":"1s","maxBackoff":"10s","backoffMultiplier":-2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
        ),
        (
            "code 17",
            r#"{"maxAttempts":2,"initialBackoff":"1s","maxBackoff":"10s","backoffMultiplier":2,"retryableStatusCodes":[17]}"#,
        ),
        (
            "unknown code name",
            r#"{"maxAttempts":2,"initialBackoff":"1s","maxBackoff":"10s","backoffMultiplier":2,"retryableStatusCodes":["NOPE"]}"#,
        ),
        (
            "code as quoted number",
            r#"{"maxAttempts":2,"initialBackoff":"1s","maxBackoff":"10s","backoffMultiplier":2,"retryableStatusCodes":["14"]}"#,
        ),
    ] {
        let js = retry_sc(policy);
        assert!(parse(&js).is_err(), "{name}: gRPC-Go rejects {js}");
    }
    // maxAttempts above 5 is 5 (defaultMaxCallAttempts); a number code is read
    // (codes.Code.UnmarshalJSON: ParseUint first).
    let c = ok(&retry_sc(
        r#"{"maxAttempts":10000000000,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":1,"retryableStatusCodes":[14,"CANCELLED"]}"#,
    ));
    let r = c
        .methods
        .lookup("/foo/x")
        .unwrap()
        .retry_policy
        .clone()
        .unwrap();
    assert_eq!(r.max_attempts, 5);
    assert!(r.retryable_status_codes.contains(&Code::Unavailable));
    assert!(r.retryable_status_codes.contains(&Code::Cancelled));
}

/// retryThrottling (parseServiceConfig: maxTokens in (0, 1000], tokenRatio > 0).
#[test]
fn go_parse_retry_throttling() {
    let c = ok(r#"{"retryThrottling":{"maxTokens":10,"tokenRatio":0.1}}"#);
    let t = c.retry_throttling.unwrap();
    assert_eq!(t.max_tokens, 10);
    assert_eq!(t.token_ratio, 0.1);
    ok(r#"{"retryThrottling":{"maxTokens":1000,"tokenRatio":1}}"#);
    for bad in [
        r#"{"maxTokens":0,"tokenRatio":0.1}"#,
        r#"{"maxTokens":-1,"tokenRatio":0.1}"#,
        r#"{"maxTokens":1001,"tokenRatio":0.1}"#,
        r#"{"maxTokens":10,"tokenRatio":0}"#,
        r#"{"maxTokens":10,"tokenRatio":-0.5}"#,
        r#"{"tokenRatio":0.5}"#,
        r#"{"maxTokens":10}"#,
    ] {
        rejected(&format!(r#"{{"retryThrottling":{bad}}}"#));
    }
}

/// healthCheckConfig: `{"serviceName": "x"}` turns it on with that name.
#[test]
fn go_parse_health_check_config() {
    let c = ok(r#"{"healthCheckConfig":{"serviceName":"foo"}}"#);
    assert_eq!(c.health_check_service.as_deref(), Some("foo"));
    let c = ok(r#"{"healthCheckConfig":{"serviceName":""}}"#);
    assert_eq!(c.health_check_service.as_deref(), Some(""));
    assert_eq!(ok("{}").health_check_service, None);
    rejected(r#"{"healthCheckConfig":{"serviceName":1}}"#);
    rejected(r#"{"healthCheckConfig":"foo"}"#);
}

/// `loadBalancingConfig` entry shape (gracefulswitch.ParseConfig /
/// BalancerConfig.UnmarshalJSON).
#[test]
fn go_parse_lb_config_entries() {
    // Exactly one key per entry.
    rejected(r#"{"loadBalancingConfig":[{"round_robin":{},"pick_first":{}}]}"#);
    rejected(r#"{"loadBalancingConfig":[{}]}"#);
    // First registered wins; its config must parse (no fall-through).
    assert_eq!(
        ok(r#"{"loadBalancingConfig":[{"nope":{}},{"round_robin":{}},{"pick_first":{}}]}"#)
            .policy
            .name(),
        "round_robin"
    );
    rejected(
        r#"{"loadBalancingConfig":[{"least_request_experimental":{"choiceCount":1}},{"round_robin":{}}]}"#,
    );
    // loadBalancingConfig beats loadBalancingPolicy.
    assert_eq!(
        ok(r#"{"loadBalancingPolicy":"round_robin","loadBalancingConfig":[{"pick_first":{}}]}"#)
            .policy
            .name(),
        "pick_first"
    );
    // Names are case-sensitive (envconfig.CaseSensitiveBalancerRegistries = true).
    rejected(r#"{"loadBalancingConfig":[{"ROUND_ROBIN":{}}]}"#);
}

/// Method names: {"service":"a","method":"b/c"} and {"service":"a/b",
/// "method":"c"} both generate "/a/b/c" (jsonName.generatePath): duplicate.
#[test]
fn go_parse_method_name_paths() {
    rejected(
        r#"{"methodConfig":[{"name":[{"service":"a","method":"b/c"}]},{"name":[{"service":"a/b","method":"c"}]}]}"#,
    );
    rejected(r#"{"methodConfig":[{"name":[{}]},{"name":[{"service":""}]}]}"#);
    rejected(r#"{"methodConfig":[{"name":{"service":"a"}}]}"#);
    rejected(r#"{"methodConfig":[{"name":[{"service":1}]}]}"#);
    // A service's entry and one of its methods are two names.
    let c = ok(
        r#"{"methodConfig":[{"name":[{"service":"a"}],"timeout":"1s"},{"name":[{"service":"a","method":"m"}],"timeout":"2s"}]}"#,
    );
    assert_eq!(
        c.methods.lookup("/a/m").unwrap().timeout,
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        c.methods.lookup("/a/n").unwrap().timeout,
        Some(Duration::from_secs(1))
    );
    assert!(c.methods.lookup("/b/m").is_none());
}

// ---------------------------------------------------------------------------
// internal/serviceconfig/duration_test.go, through methodConfig.timeout
// ---------------------------------------------------------------------------

fn timeout(d: &str) -> Result<Option<Duration>, String> {
    let js = format!(r#"{{"methodConfig":[{{"name":[{{}}],"timeout":{d}}}]}}"#);
    parse(&js).map(|c| c.methods.lookup("/a/b").and_then(|m| m.timeout))
}

#[test]
fn go_duration_rows() {
    let cases: &[(&str, Duration)] = &[
        (r#""1s""#, Duration::from_secs(1)),
        (r#"".050s""#, Duration::from_millis(50)),
        (r#""9223372036s""#, Duration::from_secs(9_223_372_036)),
        (r#""1.s""#, Duration::from_secs(1)),
        (r#""+1s""#, Duration::from_secs(1)),
        (r#""0.000000001s""#, Duration::from_nanos(1)),
        (r#""-0s""#, Duration::ZERO),
    ];
    for (d, want) in cases {
        assert_eq!(timeout(d), Ok(Some(*want)), "{d}");
    }
    // Accepted by Go (saturated to MaxInt64 ns); switchyard keeps it longer.
    for d in [r#""9223372037s""#, r#""315576000000s""#] {
        assert!(timeout(d).is_ok(), "{d}: {:?}", timeout(d));
    }
    for bad in [
        "123",
        r#""5m""#,
        r#""5.3.2s""#,
        r#""x.3s""#,
        r#""3.xs""#,
        r#""3.1234567890s""#,
        r#"".s""#,
        r#""s""#,
        r#""315576000001s""#,
        r#""-315576000001s""#,
        r#""1e3s""#,
        r#""1""#,
        r#""1 s""#,
        r#"" 1s""#,
        r#""""#,
    ] {
        assert!(
            timeout(bad).is_err(),
            "gRPC-Go rejects {bad}: {:?}",
            timeout(bad)
        );
    }
}

// ---------------------------------------------------------------------------
// Policy configs
// ---------------------------------------------------------------------------

/// balancer/ringhash/config_test.go TestParseConfig (default cap 4096,
/// requestHashHeader on). Values are not visible outside the crate: accept
/// / reject only.
#[test]
fn go_ringhash_parse_config() {
    let okay = [
        json!({"minRingSize": 1, "maxRingSize": 2}),
        json!({"maxRingSize": 2000}),
        json!({"minRingSize": 2000}),
        json!({"minRingSize": 1, "maxRingSize": 6000}),
        json!({"minRingSize": 5000, "maxRingSize": 6000}),
        json!({"minRingSize": 10000, "maxRingSize": 10000}),
        json!({"minRingSize": 8388608, "maxRingSize": 8388608}),
        json!({"minRingSize": 0, "maxRingSize": 0}),
        json!({"requestHashHeader": "x-foo"}),
        json!({"requestHashHeader": "x-FOO"}),
        json!({"requestHashHeader": ""}),
        json!({"requestHashHeader": ":path"}),
        json!({}),
    ];
    for name in ["ring_hash_experimental", "ring_hash"] {
        for c in &okay {
            assert!(policy_parse(name, c.clone()).is_ok(), "{name} {c}");
        }
    }
    for bad in [
        json!({"minRingSize": 10, "maxRingSize": 2}),
        json!({"minRingSize": 6000, "maxRingSize": 5000}),
        json!({"minRingSize": 8388610, "maxRingSize": 10}),
        json!({"minRingSize": 10, "maxRingSize": 8388610}),
        json!({"minRingSize": 2000, "maxRingSize": 1000}),
        json!({"minRingSize": -1}),
        json!({"requestHashHeader": "!invalid"}),
        json!({"requestHashHeader": "header-with-bin"}),
        json!({"requestHashHeader": "X-Foo-Bin"}),
        json!({"requestHashHeader": 7}),
    ] {
        assert!(
            policy_parse("ring_hash_experimental", bad.clone()).is_err(),
            "gRPC-Go rejects {bad}"
        );
    }
}

fn choice_count(cfg: Value) -> Result<u32, String> {
    let c = policy_parse("least_request_experimental", cfg)?.unwrap();
    Ok(c.downcast_ref::<LeastRequestConfig>().unwrap().choice_count)
}

/// balancer/leastrequest TestParseConfig.
#[test]
fn go_least_request_parse_config() {
    assert_eq!(choice_count(json!({})), Ok(2));
    assert_eq!(choice_count(json!({"choiceCount": 3})), Ok(3));
    assert_eq!(choice_count(json!({"choiceCount": 11})), Ok(10));
    assert!(choice_count(json!({"choiceCount": 1})).is_err());
    assert!(choice_count(json!({"choiceCount": 0})).is_err());
    assert!(choice_count(json!({"choiceCount": -1})).is_err());
    assert!(choice_count(json!({"choiceCount": 4294967296u64})).is_err());
    // Through a service config too.
    rejected(r#"{"loadBalancingConfig":[{"least_request_experimental":{"choiceCount":1}}]}"#);
}

fn od(cfg: Value) -> Result<OutlierDetectionConfig, String> {
    let c = policy_parse("outlier_detection_experimental", cfg)?.unwrap();
    Ok(c.downcast_ref::<OutlierDetectionConfig>().unwrap().clone())
}

const CHILD: &str = r#"[{"round_robin":{}}]"#;

fn od_with_child(body: &str) -> Value {
    let sep = if body.is_empty() { "" } else { "," };
    serde_json::from_str(&format!(r#"{{{body}{sep}"childPolicy":{CHILD}}}"#)).unwrap()
}

/// internal/xds/balancer/outlierdetection TestParseConfig.
#[test]
fn go_outlier_detection_parse_config() {
    let d = od(od_with_child("")).unwrap();
    assert_eq!(d.interval, Duration::from_secs(10));
    assert_eq!(d.base_ejection_time, Duration::from_secs(30));
    assert_eq!(d.max_ejection_time, Duration::from_secs(300));
    assert_eq!(d.max_ejection_percent, 10);
    assert!(d.success_rate_ejection.is_none());
    assert!(d.failure_percentage_ejection.is_none());
    assert_eq!(d.child_policy.name(), "round_robin");

    let t = od(od_with_child(
        r#""interval":"15s","maxEjectionTime":"350s""#,
    ))
    .unwrap();
    assert_eq!(t.interval, Duration::from_secs(15));
    assert_eq!(t.base_ejection_time, Duration::from_secs(30));
    assert_eq!(t.max_ejection_time, Duration::from_secs(350));

    let s = od(od_with_child(r#""successRateEjection":{}"#)).unwrap();
    assert_eq!(
        s.success_rate_ejection,
        Some(SuccessRateEjection {
            stdev_factor: 1900,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 100
        })
    );
    let s = od(od_with_child(
        r#""successRateEjection":{"stdevFactor":1000,"minimumHosts":5}"#,
    ))
    .unwrap();
    assert_eq!(
        s.success_rate_ejection,
        Some(SuccessRateEjection {
            stdev_factor: 1000,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 100
        })
    );
    let s = od(od_with_child(
        r#""successRateEjection":{"stdevFactor":1000,"enforcementPercentage":50,"minimumHosts":5,"requestVolume":50}"#,
    ))
    .unwrap();
    assert_eq!(
        s.success_rate_ejection,
        Some(SuccessRateEjection {
            stdev_factor: 1000,
            enforcement_percentage: 50,
            minimum_hosts: 5,
            request_volume: 50
        })
    );
    // FailurePercentage_Defaults: gRPC-Go's enforcementPercentage default is
    // 0; switchyard documents 100 (proto, C-core) as its choice, so only
    // the other fields are compared here.
    let f = od(od_with_child(r#""failurePercentageEjection":{}"#)).unwrap();
    let f = f.failure_percentage_ejection.unwrap();
    assert_eq!(
        (f.threshold, f.minimum_hosts, f.request_volume),
        (85, 5, 50)
    );
    let f = od(od_with_child(
        r#""failurePercentageEjection":{"threshold":80,"enforcementPercentage":100,"minimumHosts":10,"requestVolume":40}"#,
    ))
    .unwrap();
    assert_eq!(
        f.failure_percentage_ejection,
        Some(FailurePercentageEjection {
            threshold: 80,
            enforcement_percentage: 100,
            minimum_hosts: 10,
            request_volume: 40
        })
    );
    // AllFields_Zero: zeros are not replaced by defaults.
    let z = od(od_with_child(
        r#""interval":"0s","baseEjectionTime":"0s","maxEjectionTime":"0s","maxEjectionPercent":0,
           "successRateEjection":{"stdevFactor":0,"enforcementPercentage":0,"minimumHosts":0,"requestVolume":0},
           "failurePercentageEjection":{"threshold":0,"enforcementPercentage":0,"minimumHosts":0,"requestVolume":0}"#,
    ))
    .unwrap();
    assert_eq!(z.interval, Duration::ZERO);
    assert_eq!(z.base_ejection_time, Duration::ZERO);
    assert_eq!(z.max_ejection_time, Duration::ZERO);
    assert_eq!(z.max_ejection_percent, 0);
    assert_eq!(
        z.success_rate_ejection,
        Some(SuccessRateEjection {
            stdev_factor: 0,
            enforcement_percentage: 0,
            minimum_hosts: 0,
            request_volume: 0
        })
    );
    assert_eq!(
        z.failure_percentage_ejection,
        Some(FailurePercentageEjection {
            threshold: 0,
            enforcement_percentage: 0,
            minimum_hosts: 0,
            request_volume: 0
        })
    );
    // Error rows (with and without a child, as gRPC-Go's rows have none).
    for bad in [
        r#""interval":"-10s""#,
        r#""baseEjectionTime":"-10s""#,
        r#""maxEjectionTime":"-10s""#,
        r#""maxEjectionPercent":150"#,
        r#""successRateEjection":{"enforcementPercentage":150}"#,
        r#""failurePercentageEjection":{"threshold":150}"#,
        r#""failurePercentageEjection":{"enforcementPercentage":150}"#,
    ] {
        assert!(od(od_with_child(bad)).is_err(), "{bad}");
        let alone: Value = serde_json::from_str(&format!("{{{bad}}}")).unwrap();
        assert!(od(alone).is_err(), "{bad}");
    }
    // ChildPolicy_NotSupported / ChildPolicy_ParseError.
    assert!(od(json!({"childPolicy": [{"doesNotExistBalancer": {"cluster": "x"}}]})).is_err());
    assert!(
        od(json!({"childPolicy": [{"least_request_experimental": {"choiceCount": 1}}]})).is_err()
    );
}

/// pickfirst_ext_test.go TestPickFirst_ParseConfig_{Success,Failure}.
#[test]
fn go_pick_first_parse_config() {
    for c in [
        r#"{"loadBalancingConfig": [{"pick_first":{ "shuffleAddressList": true }}]}"#,
        r#"{"loadBalancingConfig": [{"pick_first":{ "shuffleAddressList": false }}]}"#,
        r#"{"loadBalancingConfig": [{"pick_first":{}}]}"#,
        r#"{"loadBalancingConfig": [{"pick_first":{"unknown": 1}}]}"#,
    ] {
        assert_eq!(ok(c).policy.name(), "pick_first");
    }
    rejected(r#"{"loadBalancingConfig": [{"pick_first":{ "shuffleAddressList": 666 }}]}"#);
    rejected(r#"{"loadBalancingConfig": [{"pick_first":{ "shuffleAddressList": "true" }}]}"#);
}

fn wrr(cfg: Value) -> Result<WrrConfig, String> {
    let c = policy_parse("weighted_round_robin", cfg)?.unwrap();
    Ok(c.downcast_ref::<WrrConfig>().unwrap().clone())
}

/// weightedroundrobin ParseConfig: A58 defaults, OOB period zeroed when
/// OOB is off, weightUpdatePeriod floored at 100ms, penalty >= 0.
#[test]
fn go_wrr_parse_config() {
    let d = wrr(json!({})).unwrap();
    assert!(!d.enable_oob_load_report);
    assert_eq!(d.oob_reporting_period, Duration::ZERO);
    assert_eq!(d.blackout_period, Duration::from_secs(10));
    assert_eq!(d.weight_expiration_period, Duration::from_secs(180));
    assert_eq!(d.weight_update_period, Duration::from_secs(1));
    assert_eq!(d.error_utilization_penalty, 1.0);
    let o = wrr(json!({"enableOobLoadReport": true})).unwrap();
    assert_eq!(o.oob_reporting_period, Duration::from_secs(10));
    let o = wrr(json!({"enableOobLoadReport": false, "oobReportingPeriod": "5s"})).unwrap();
    assert_eq!(o.oob_reporting_period, Duration::ZERO);
    let o = wrr(json!({"enableOobLoadReport": true, "oobReportingPeriod": "5s"})).unwrap();
    assert_eq!(o.oob_reporting_period, Duration::from_secs(5));
    for (p, want) in [("0s", 100), ("0.05s", 100), ("0.1s", 100), ("0.5s", 500)] {
        let c = wrr(json!({ "weightUpdatePeriod": p })).unwrap();
        assert_eq!(c.weight_update_period, Duration::from_millis(want), "{p}");
    }
    assert_eq!(
        wrr(json!({"blackoutPeriod": "0s"}))
            .unwrap()
            .blackout_period,
        Duration::ZERO
    );
    assert_eq!(
        wrr(json!({"errorUtilizationPenalty": 0}))
            .unwrap()
            .error_utilization_penalty,
        0.0
    );
    assert!(wrr(json!({"errorUtilizationPenalty": -0.1})).is_err());
    assert!(wrr(json!({"enableOobLoadReport": "yes"})).is_err());
    assert!(wrr(json!({"blackoutPeriod": "10"})).is_err());
    assert!(wrr(json!({"weightExpirationPeriod": 10})).is_err());
}

// ---------------------------------------------------------------------------
// Differences
// ---------------------------------------------------------------------------
