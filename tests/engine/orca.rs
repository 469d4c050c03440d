//! weighted_round_robin's out-of-band load reports on a channel whose host
//! owns the transports: no stream can be opened there (the host feeds load
//! through `done`), and the channel serves as it would without them.

use crate::support::*;
use std::collections::HashMap;
use switchyard::ConnectivityState::*;
use switchyard::*;

const WRR_OOB: &str = r#"{"loadBalancingConfig":[{"weighted_round_robin":{
    "enableOobLoadReport":true,"oobReportingPeriod":"1s","blackoutPeriod":"0s"}}]}"#;

#[test]
fn oob_on_a_host_transport_channel_reports_nothing_and_still_serves() {
    let host = Host::new();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", Some(WRR_OOB), options(&host)).unwrap();
    ch.update_addresses(addrs(&["a:1", "b:1"])).unwrap();
    ch.sync().unwrap();
    report(&ch, &host, &["a:1", "b:1"], Ready);
    assert_eq!(ch.state(), Ready);
    let mut r = ch.reader();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        *seen.entry(pick_addr(&mut r)).or_default() += 1;
    }
    // No weights ever arrive: every endpoint weighs the same.
    assert_eq!((seen["a:1"], seen["b:1"]), (50, 50));
    // Leaving READY and coming back (stream stop, stream start) is as quiet.
    report(&ch, &host, &["a:1"], Idle);
    report(&ch, &host, &["a:1"], Connecting);
    report(&ch, &host, &["a:1"], Ready);
    assert_eq!(ch.state(), Ready);
    let snap = ch.snapshot().unwrap();
    assert!(snap.subchannels.iter().all(|s| s.state == Ready));
}
