//! least_request's in-flight counts (`balancer::in_flight`): readers claim
//! counter slots of their own from the channel and count their picks there
//! with a plain load and store; a dropped reader's slot goes to the next
//! reader to claim one; picks that may end on any thread count in the
//! shared slot with read-modify-writes. Whatever the interleaving, no two
//! live readers hold one slot, and no count is lost: a slot's next owner
//! sees what its last owner left (the claim's acquire, the release's
//! release), so the count is exactly the picks still in flight.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use switchyard::balancer::in_flight::{InFlight, ReaderSlots, Slot};

struct World {
    slots: ReaderSlots,
    count: InFlight,
}

fn world() -> Arc<World> {
    Arc::new(World {
        slots: ReaderSlots::default(),
        count: InFlight::default(),
    })
}

/// One reader's life: claims a slot, picks (one up) and finishes (one
/// down) `picks` times, and leaves `held` picks in flight, then goes.
/// (A reader is dropped only with nothing of its own in flight; `held`
/// stands for picks of the shared kind, which may outlive it.)
fn reader_life(w: &World, picks: usize, held: usize) {
    let slot = w.slots.claim();
    for _ in 0..picks {
        w.count.add(slot);
        w.count.sub(slot);
    }
    for _ in 0..held {
        w.count.add(Slot::SHARED);
    }
    w.slots.release(slot);
}

/// Two readers one after another on one thread (the second may get the
/// first's slot back, or a slot another thread's reader just gave back),
/// against a third on another thread: the count ends at the picks left in
/// flight.
#[test]
fn slots_pass_between_readers_without_losing_a_count() {
    loom::model(|| {
        let w = world();
        let other = {
            let w = w.clone();
            thread::spawn(move || reader_life(&w, 1, 0))
        };
        reader_life(&w, 1, 0);
        reader_life(&w, 1, 1);
        other.join().unwrap();
        assert_eq!(w.count.total(), 1, "a count was lost or left behind");
    });
}

/// Two readers holding slots at once get different ones, and a reader
/// holding a pick in its slot while another thread's reader takes the
/// same endpoint: both count (the total sees two once both are joined),
/// and the shared slot's picks ending on a third thread count too.
#[test]
fn live_readers_never_share_a_slot() {
    loom::model(|| {
        let w = world();
        let first = {
            let w = w.clone();
            thread::spawn(move || {
                let s = w.slots.claim();
                w.count.add(s);
                s
            })
        };
        let shared = {
            let w = w.clone();
            thread::spawn(move || {
                w.count.add(Slot::SHARED);
                w.count.sub(Slot::SHARED);
            })
        };
        let s = w.slots.claim();
        w.count.add(s);
        let t = first.join().unwrap();
        shared.join().unwrap();
        assert_ne!(s, t, "two live readers hold one slot");
        assert_ne!(s, Slot::SHARED);
        assert_eq!(w.count.total(), 2);
        w.count.sub(s);
        w.count.sub(t);
        w.slots.release(s);
        w.slots.release(t);
        assert_eq!(w.count.total(), 0);
    });
}
