//! publish / refresh / retire: readers never see a torn table or one older than
//! a generation they already observed, a stale cache catches up with the last
//! publish, and every table is dropped exactly once (loom also fails the model
//! on any leaked loom `Arc`, i.e. an epoch that was never freed).
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use switchyard::publish::{Cache, Slot};

/// A published table. `a` and `b` are written together from `version`; a
/// reader that saw them disagree would have seen a torn table.
struct Table {
    version: u64,
    a: u64,
    b: u64,
    drops: Arc<AtomicUsize>,
}

impl Table {
    fn new(version: u64, drops: &Arc<AtomicUsize>) -> Table {
        Table {
            version,
            a: version * 3 + 1,
            b: version * 3 + 1,
            drops: drops.clone(),
        }
    }

    fn check(&self) {
        assert_eq!(self.a, self.b, "torn table {}", self.version);
        assert_eq!(self.a, self.version * 3 + 1, "torn table {}", self.version);
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        self.check();
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Version k is published as generation k, so "not older than seen" is
/// `table.version >= generation observed before the read`.
fn read(cache: &mut Cache<Table>, last: &mut u64) {
    let seen = cache.slot().generation();
    let t = cache.current();
    t.check();
    assert!(
        t.version >= seen,
        "table {} older than seen generation {seen}",
        t.version
    );
    assert!(
        t.version >= *last,
        "went backwards: {} after {last}",
        t.version
    );
    *last = t.version;
    // The cache's own generation never claims more than the table it holds
    // (a reader waits on it: claiming more could sleep through a publish).
    assert!(cache.generation() <= *last);
}

#[test]
fn two_readers_two_publishes() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot::new(Table::new(0, &drops)));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let slot = slot.clone();
                thread::spawn(move || {
                    let mut cache = Cache::new(slot);
                    let mut last = 0;
                    read(&mut cache, &mut last);
                    read(&mut cache, &mut last);
                    // Hand the (possibly stale) cache back to the main thread.
                    (cache, last)
                })
            })
            .collect();
        // The main thread is the writer (the event loop).
        slot.publish(Table::new(1, &drops));
        slot.publish(Table::new(2, &drops));
        for r in readers {
            let (mut cache, mut last) = r.join().unwrap();
            // After the writer is done, a read must see the last version.
            read(&mut cache, &mut last);
            assert_eq!(last, 2);
        }
        // Tables 0 and 1 are gone once both caches moved past them.
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        drop(slot);
        assert_eq!(drops.load(Ordering::SeqCst), 3, "each table dropped once");
    });
}

#[test]
fn reader_dropped_mid_publish() {
    // A reader that reads once and drops its cache while the writer publishes:
    // whichever of them lets go of table 0 last frees it, exactly once.
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot::new(Table::new(0, &drops)));
        let s2 = slot.clone();
        let reader = thread::spawn(move || {
            let mut cache = Cache::new(s2);
            let mut last = 0;
            read(&mut cache, &mut last);
        });
        slot.publish(Table::new(1, &drops));
        reader.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(slot.load().version, 1);
        drop(slot);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    });
}
