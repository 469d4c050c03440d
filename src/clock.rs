//! The loop's clock and random source, injectable so tests run in milliseconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time as the event loop sees it (timers, backoff, connect deadlines).
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Instant;
    /// A manual clock only moves when told; the loop then sleeps until woken.
    fn is_manual(&self) -> bool {
        false
    }
    /// Registers a loop to wake whenever a manual clock moves.
    fn subscribe(&self, _wake: Arc<dyn Fn() + Send + Sync>) {}
}

#[derive(Debug, Default, Clone, Copy)]
/// The real clock, `Instant::now()`: the default.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock tests move by hand; every `advance` wakes the loops that use it.
pub struct ManualClock {
    inner: Mutex<(Instant, Vec<Wake>)>,
}

type Wake = Arc<dyn Fn() + Send + Sync>;

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock stopped at the current instant.
    pub fn new() -> ManualClock {
        ManualClock {
            inner: Mutex::new((Instant::now(), Vec::new())),
        }
    }

    /// Moves the clock forward by `by` and wakes every loop using it.
    pub fn advance(&self, by: Duration) {
        let wakers = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.0 += by;
            g.1.clone()
        };
        for w in wakers {
            w();
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }
    fn is_manual(&self) -> bool {
        true
    }
    fn subscribe(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .push(wake);
    }
}

/// SplitMix64: the loop's random source (jitter, shuffles, reader seeds).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from the time and the address of a stack value.
    pub fn from_entropy() -> Rng {
        use std::hash::{BuildHasher, Hasher};
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        // The OS's randomness, as std keys its hash maps with: differs from
        // process to process even where addresses do not (no ASLR).
        let os = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Rng(t ^ os ^ (&local as *const u8 as u64).rotate_left(32))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
