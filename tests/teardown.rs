//! Its own test binary, so no other test's threads muddy the count: dropping
//! the runtime closes what is left and leaves no thread and no user data behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use switchyard::*;

struct Tracked(Arc<AtomicUsize>);
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Host(Mutex<Vec<SubConnId>>);
impl HostTransport for Host {
    fn connect(&self, _: &Arc<SubConn>) {}
    fn shutdown(&self, sc: &Arc<SubConn>) {
        self.0.lock().unwrap().push(sc.id());
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn runtime_teardown_leaves_nothing_behind() {
    let before = threads();
    let released = Arc::new(AtomicUsize::new(0));
    let host = Arc::new(Host::default());
    let rt = Runtime::new().unwrap();
    let opts = || ChannelOptions {
        connector: Some(Box::new(ExternalConnector::new(host.clone()))),
        ..Default::default()
    };
    let ch = Channel::new(
        &rt,
        "",
        Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
        opts(),
    )
    .unwrap();
    let closed_early = Channel::new(&rt, "", None, opts()).unwrap();
    let list: Vec<Address> = (0..50)
        .map(|i| {
            Address::new(format!("n{i}:1")).with_user_data(Arc::new(Tracked(released.clone())))
        })
        .collect();
    ch.update_addresses(list).unwrap();
    closed_early
        .update_addresses(vec![Address::new("x:1")])
        .unwrap();
    ch.sync().unwrap();
    for i in 0..50 {
        ch.report_subconn_state(SubConnId(i + 1), ConnectivityState::Ready, "")
            .unwrap();
    }
    ch.sync().unwrap();
    let mut r = ch.reader();
    let pick = r.try_pick(&PickInfo::default()).unwrap();
    closed_early.close();
    assert_eq!(threads(), before + 1, "one loop thread");

    drop(rt);
    // Joined, but the kernel may list an exited thread under
    // /proc/self/task for a moment after its joiner wakes (the tid is
    // cleared before the task is reaped): a bounded wait, not a sleep.
    let gone_by = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while threads() > before && std::time::Instant::now() < gone_by {
        std::thread::yield_now();
    }
    assert_eq!(threads(), before, "the loop thread is gone");
    assert_eq!(ch.state(), ConnectivityState::Shutdown);
    assert_eq!(
        ch.update_addresses(vec![]),
        Err(Error::Closed).or(Err(Error::RuntimeGone))
    );
    assert_eq!(
        host.0.lock().unwrap().len(),
        51,
        "every subchannel shut down once"
    );
    assert_eq!(
        r.try_pick(&PickInfo::default()).unwrap_err(),
        PickError::Closed
    );
    // An unfinished pick keeps the picker it came from, and so its addresses.
    assert_eq!(released.load(Ordering::SeqCst), 0);
    drop(pick);
    drop(r);
    drop(ch);
    assert_eq!(released.load(Ordering::SeqCst), 50);
}
