//! Picks on several threads, finished on others (done, given back to the
//! reader, dropped, or through `RawPick` words as the C ABI carries them),
//! while the loop publishes pickers as subchannels flap and addresses churn.
//! What ThreadSanitizer and Miri's race detector watch in
//! scripts/sanitizers.sh; natively, that each user datum is released exactly
//! once, after everything that could return it let go.

use crate::support::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use switchyard::ConnectivityState::*;
use switchyard::*;

const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// A pick finished on another thread.
enum Far {
    Pick(Pick),
    Raw(RawPick),
}

#[test]
fn picks_finished_anywhere_race_publishes_and_release_user_data_once() {
    // Pickers run until the flapping ends, each loop bounded all the same.
    let (threads, max_picks, flips) = if cfg!(miri) {
        (2, 200, 12)
    } else {
        (3, 1_000_000, 300)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = (0..6).map(|i| format!("s{i}:1")).collect();
    let released = Arc::new(AtomicUsize::new(0));
    let data: Vec<Arc<Tracked>> = names.iter().map(|n| Tracked::new(n, &released)).collect();
    let list = |n: usize| -> Vec<Address> {
        (0..n)
            .map(|i| Address::new(names[i].as_str()).with_user_data(data[i].clone()))
            .collect()
    };
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let ch = Arc::new(Channel::new(&rt, "", Some(RR), options(&host)).unwrap());
    ch.update_addresses(list(names.len())).unwrap();
    ch.sync().unwrap();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    report(&ch, &host, &all, Ready);

    let (tx, rx) = mpsc::channel::<Far>();
    let finisher = std::thread::spawn(move || {
        for far in rx {
            match far {
                Far::Pick(p) => drop(p),
                // SAFETY: words from `into_raw`, turned back once.
                Far::Raw(raw) => unsafe { Pick::from_raw(raw) }.done(&DoneInfo::default()),
            }
        }
    });
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let ch = ch.clone();
            let tx = tx.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut r = ch.reader();
                for i in 0..max_picks {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(p) = r.try_pick(&PickInfo::default()) else {
                        std::thread::yield_now();
                        continue;
                    };
                    match (i + t) % 4 {
                        0 => p.done(&DoneInfo::default()),
                        1 => r.finish(p, &DoneInfo::default()),
                        2 => tx.send(Far::Pick(p)).unwrap(),
                        _ => tx.send(Far::Raw(p.into_raw())).unwrap(),
                    }
                }
            })
        })
        .collect();
    drop(tx);

    let first = ch.picker_generation();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut up = vec![true; names.len()];
    for f in 0..flips {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if f % 10 == 9 {
            // Churn: the last address leaves, or comes back (as a new
            // subchannel): not READY either way.
            let n = names.len() - usize::from(f % 20 == 9);
            ch.update_addresses(list(n)).unwrap();
            up[names.len() - 1] = false;
        } else {
            // A READY subchannel's connection drops (it reconnects), a
            // connecting one becomes READY. Refused for the address that
            // just left: nothing to check there.
            let i = (rng % names.len() as u64) as usize;
            let state = if up[i] { Idle } else { Ready };
            up[i] = !up[i];
            let _ = ch.report_subconn_state(host.id(&names[i]), state, "flap");
        }
        if f % 3 == 2 {
            // Let the loop publish before the next flaps pile up.
            ch.sync().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    finisher.join().unwrap();
    ch.sync().unwrap();
    assert!(
        ch.picker_generation() - first >= flips / 10,
        "pickers were published while the readers picked"
    );
    ch.close();
    drop(ch);
    drop(rt);
    drop(data);
    assert_eq!(
        released.load(Ordering::SeqCst),
        names.len(),
        "each user datum released exactly once"
    );
}
