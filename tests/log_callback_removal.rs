//! `trace::set_callback` called from inside the log callback (removing or
//! replacing it) still waits for every *other* thread inside the previous
//! callback, so its captured state may be freed once it returns, as the
//! C header promises for `sy_log_set_callback`. In a process of its own:
//! the log route is process-wide.

use log::{Level, LevelFilter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use switchyard::trace;

/// Waits (bounded) for `flag`.
fn wait_for(flag: &AtomicBool) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while !flag.load(Ordering::Acquire) {
        if Instant::now() > end {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

#[test]
fn removing_the_callback_from_inside_it_waits_for_the_other_threads_in_it() {
    let b_inside = Arc::new(AtomicBool::new(false));
    let removing = Arc::new(AtomicBool::new(false));
    let b_left = Arc::new(AtomicBool::new(false));
    // What thread A saw when its removal returned: had B left?
    let b_had_left = Arc::new(AtomicBool::new(false));
    let a_removed = Arc::new(AtomicBool::new(false));
    let cb = {
        let (b_inside, removing, b_left) = (b_inside.clone(), removing.clone(), b_left.clone());
        let (b_had_left, a_removed) = (b_had_left.clone(), a_removed.clone());
        Arc::new(move |_: Level, _: &str, message: &str| match message {
            "b" => {
                b_inside.store(true, Ordering::Release);
                // Still inside while A removes the callback (bounded).
                wait_for(&removing);
                thread::sleep(Duration::from_millis(100));
                b_left.store(true, Ordering::Release);
            }
            "a" => {
                assert!(wait_for(&b_inside), "B never entered the callback");
                removing.store(true, Ordering::Release);
                trace::set_callback(None, LevelFilter::Off).unwrap();
                b_had_left.store(b_left.load(Ordering::Acquire), Ordering::Release);
                a_removed.store(true, Ordering::Release);
            }
            _ => {}
        })
    };
    trace::set_callback(Some(cb), LevelFilter::Trace).unwrap();
    let b = thread::spawn(|| log::error!(target: "switchyard::test", "b"));
    let a = thread::spawn(|| log::error!(target: "switchyard::test", "a"));
    a.join().unwrap();
    b.join().unwrap();
    assert!(a_removed.load(Ordering::Acquire), "A's removal never ran");
    assert!(
        b_had_left.load(Ordering::Acquire),
        "set_callback returned inside a callback while another thread was still in it"
    );
}
