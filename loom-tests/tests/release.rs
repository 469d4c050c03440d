//! retire / release: a table lent to picks (`Hold`s, possibly finished on other
//! threads) is dropped exactly once, and never while a hold on it is alive,
//! whether the reader refreshes past it, drops its cache, or both. User data
//! the tables share (a subchannel's `Arc`) is released once, after the last
//! table referring to it.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use switchyard::publish::{Cache, Hold, Slot};

/// Per-version bookkeeping kept *outside* the table, so it can be checked
/// without touching a table that might already be freed.
struct Version {
    dropped: AtomicBool,
    drops: AtomicUsize,
}

/// A subchannel's user data: released when its last table goes.
struct User {
    released: Arc<AtomicUsize>,
}

impl Drop for User {
    fn drop(&mut self) {
        self.released.fetch_add(1, Ordering::SeqCst);
    }
}

struct Table {
    version: u64,
    user: Arc<User>,
    book: Arc<Version>,
}

impl Drop for Table {
    fn drop(&mut self) {
        self.book.dropped.store(true, Ordering::SeqCst);
        self.book.drops.fetch_add(1, Ordering::SeqCst);
    }
}

struct World {
    slot: Arc<Slot<Table>>,
    books: Vec<Arc<Version>>,
    user: Arc<User>,
    released: Arc<AtomicUsize>,
}

impl World {
    fn new() -> World {
        let released = Arc::new(AtomicUsize::new(0));
        let user = Arc::new(User {
            released: released.clone(),
        });
        let books: Vec<_> = (0..2)
            .map(|_| {
                Arc::new(Version {
                    dropped: AtomicBool::new(false),
                    drops: AtomicUsize::new(0),
                })
            })
            .collect();
        let slot = Arc::new(Slot::new(Table {
            version: 0,
            user: user.clone(),
            book: books[0].clone(),
        }));
        World {
            slot,
            books,
            user,
            released,
        }
    }

    /// Table 1 refers to the same user data as table 0 (a subchannel that
    /// stays in the new picker).
    fn table1(&self) -> Table {
        Table {
            version: 1,
            user: self.user.clone(),
            book: self.books[1].clone(),
        }
    }

    /// Drops the world's own references, then checks every table and the user
    /// data went exactly once.
    fn finish(self) {
        let World {
            slot,
            books,
            user,
            released,
        } = self;
        drop(user);
        drop(slot);
        for (v, b) in books.iter().enumerate() {
            assert_eq!(b.drops.load(Ordering::SeqCst), 1, "table {v} drops");
        }
        assert_eq!(released.load(Ordering::SeqCst), 1, "user data releases");
    }
}

/// What a pick does with its hold on whichever thread ends the RPC: use the
/// table, check it is still alive, then let go.
fn use_and_release(hold: Hold<Table>, books: &[Arc<Version>]) {
    let t = hold.table();
    let v = t.version as usize;
    assert!(
        !books[v].dropped.load(Ordering::SeqCst),
        "table {v} dropped while a hold on it was alive"
    );
    assert_eq!(t.user.released.load(Ordering::SeqCst), 0);
    drop(hold);
}

#[test]
fn hold_finished_on_another_thread_while_reader_refreshes() {
    loom::model(|| {
        let w = World::new();
        let mut cache = Cache::new(w.slot.clone());
        assert_eq!(cache.current().version, 0);
        let mine = cache.hold();
        let theirs = cache.hold();
        let books = w.books.clone();
        let rpc = thread::spawn(move || use_and_release(theirs, &books));
        let slot = w.slot.clone();
        let t1 = w.table1();
        let writer = thread::spawn(move || slot.publish(t1));
        // The reader keeps picking: it may or may not see table 1 yet.
        let v = cache.current().version as usize;
        let again = cache.hold();
        use_and_release(mine, &w.books);
        // Drop the cache while `again` is still out.
        drop(cache);
        use_and_release(again, &w.books);
        let _ = v;
        rpc.join().unwrap();
        writer.join().unwrap();
        w.finish();
    });
}

#[test]
fn cache_dropped_while_holds_are_out_on_two_threads() {
    loom::model(|| {
        let w = World::new();
        let mut cache = Cache::new(w.slot.clone());
        let _ = cache.current();
        let rpcs: Vec<_> = (0..2)
            .map(|_| {
                let hold = cache.hold();
                let books = w.books.clone();
                thread::spawn(move || use_and_release(hold, &books))
            })
            .collect();
        // The reader moves on (the writer is this thread), then goes away,
        // while both picks are still in flight.
        w.slot.publish(w.table1());
        assert_eq!(cache.current().version, 1);
        drop(cache);
        assert!(!w.books[1].dropped.load(Ordering::SeqCst));
        for r in rpcs {
            r.join().unwrap();
        }
        w.finish();
    });
}

/// A pick finished through its own reader gives its hold back without an
/// atomic (`Cache::give_back`), interleaved with a hold finished elsewhere
/// and a publish: still exactly one drop per table, none while held.
#[test]
fn holds_given_back_to_the_reader_mix_with_remote_releases() {
    loom::model(|| {
        let w = World::new();
        let mut cache = Cache::new(w.slot.clone());
        let _ = cache.current();
        let local = cache.hold();
        let remote = cache.hold();
        let books = w.books.clone();
        let rpc = thread::spawn(move || use_and_release(remote, &books));
        let slot = w.slot.clone();
        let t1 = w.table1();
        let writer = thread::spawn(move || slot.publish(t1));
        // Finished on the reader's thread before it looks again: taken back.
        assert!(cache.give_back(local).is_ok());
        let v = cache.current().version as usize;
        let late = cache.hold();
        writer.join().unwrap();
        // Looking again may retire the hold's table: it must then go back the
        // slow way, and the table must stay alive until it does.
        let _ = cache.current();
        match cache.give_back(late) {
            Ok(()) => assert_eq!(v, 1),
            Err(late) => use_and_release(late, &w.books),
        }
        drop(cache);
        rpc.join().unwrap();
        w.finish();
    });
}
