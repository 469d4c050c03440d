//! Connection backoff, exactly as gRPC's connection-backoff spec: attempts are
//! spaced by a backoff measured from each attempt's *start*, growing ×1.6 with
//! ±20 % jitter up to 120 s; every attempt gets at least the min connect timeout.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
/// Connection backoff settings (gRPC's connection-backoff spec). The
/// default is gRPC's: 1 s, ×1.6, ±20 % jitter, at most 120 s, at least 20 s
/// per attempt. Set per channel with `ChannelOptions::backoff`.
pub struct BackoffConfig {
    /// The backoff after the first failed attempt.
    pub initial: Duration,
    /// How much each further backoff grows (before jitter).
    pub multiplier: f64,
    /// Random spread applied to each backoff: ±this fraction.
    pub jitter: f64,
    /// The largest backoff.
    pub max: Duration,
    /// The least time any one connection attempt is given.
    pub min_connect_timeout: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
            min_connect_timeout: Duration::from_secs(20),
        }
    }
}

/// A random source for jitter: uniform in [0, 1). Injectable for tests.
pub(crate) trait Jitter {
    fn uniform(&mut self) -> f64;
}

impl<F: FnMut() -> f64> Jitter for F {
    fn uniform(&mut self) -> f64 {
        self()
    }
}

/// Longer than any process runs: durations past it are taken as it, so
/// that settings no backoff means ("never time out": `u64::MAX` ms) cannot
/// overflow `Instant` arithmetic.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d` × `factor`, saturating: a factor that is negative or NaN gives 0,
/// a product past [`FOREVER`] gives `FOREVER`.
fn scaled(d: Duration, factor: f64) -> Duration {
    let secs = d.as_secs_f64() * factor;
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).map_or(FOREVER, |d| d.min(FOREVER))
    }
}

/// `now` + `d`, with `d` capped at [`FOREVER`].
fn later(now: Instant, d: Duration) -> Instant {
    now + d.min(FOREVER)
}

/// Per-subchannel backoff state.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    /// Pre-jitter backoff for the next interval.
    current: Duration,
    /// When the next attempt may start (set when an attempt starts; `None`
    /// before the first attempt since the last reset).
    next_attempt: Option<Instant>,
    /// The backoff the last attempt drew (jitter applied).
    interval: Duration,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            current: config.initial,
            next_attempt: None,
            interval: config.initial,
        }
    }

    /// An attempt starts at `now`: returns its connect deadline and records when
    /// the next attempt may start.
    pub fn start_attempt(&mut self, now: Instant, jitter: &mut dyn Jitter) -> Instant {
        let interval = if self.next_attempt.is_none() {
            // The very first interval carries no jitter (spec pseudo-code).
            self.current
        } else {
            self.current = scaled(self.current, self.config.multiplier).min(self.config.max);
            let spread = self.config.jitter * (2.0 * jitter.uniform() - 1.0);
            scaled(self.current, 1.0 + spread)
        };
        let next = later(now, interval);
        self.next_attempt = Some(next);
        self.interval = interval;
        next.max(later(now, self.config.min_connect_timeout))
    }

    /// When the next attempt may start: the failed attempt's start plus its
    /// backoff (possibly already past, when the attempt took longer).
    pub fn next_attempt(&self) -> Option<Instant> {
        self.next_attempt
    }

    /// The backoff the last attempt drew: how long after a failure to try
    /// again where the wait counts from the failure, not from the attempt's
    /// start (a stream that may run a long while before it fails).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A connection succeeded (the server's SETTINGS arrived): start over.
    pub fn reset(&mut self) {
        self.current = self.config.initial;
        self.next_attempt = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings no backoff means (a "forever" of u64::MAX ms, a negative or
    /// NaN factor) neither panic nor overflow: they saturate.
    #[test]
    fn absurd_settings_saturate() {
        let now = Instant::now();
        let huge = Duration::from_millis(u64::MAX);
        for config in [
            BackoffConfig {
                initial: huge,
                max: huge,
                min_connect_timeout: huge,
                ..BackoffConfig::default()
            },
            BackoffConfig {
                multiplier: f64::NAN,
                jitter: f64::INFINITY,
                ..BackoffConfig::default()
            },
            BackoffConfig {
                multiplier: -3.0,
                jitter: -7.0,
                ..BackoffConfig::default()
            },
            BackoffConfig {
                multiplier: 1e300,
                max: huge,
                ..BackoffConfig::default()
            },
        ] {
            let mut b = Backoff::new(config);
            for _ in 0..5 {
                let deadline = b.start_attempt(now, &mut || 0.9);
                assert!(deadline >= now);
                assert!(b.next_attempt().unwrap() >= now);
            }
        }
    }

    fn schedule(jitter_value: f64, attempts: usize) -> Vec<Duration> {
        let mut b = Backoff::new(BackoffConfig::default());
        let t0 = Instant::now();
        let mut j = move || jitter_value;
        (0..attempts)
            .map(|_| {
                b.start_attempt(t0, &mut j);
                b.next_attempt().unwrap() - t0
            })
            .collect()
    }

    #[test]
    fn nominal_sequence_without_jitter() {
        // uniform() = 0.5 means zero jitter.
        let got: Vec<f64> = schedule(0.5, 13).iter().map(|d| d.as_secs_f64()).collect();
        let want = [
            1.0,
            1.6,
            2.56,
            4.096,
            6.5536,
            10.48576,
            16.777216,
            26.8435456,
            42.94967296,
            68.719476736,
            109.9511627776,
            120.0,
            120.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn jitter_is_plus_minus_twenty_percent_and_first_is_exact() {
        let low = schedule(0.0, 3);
        let high = schedule(0.999_999_999, 3);
        assert_eq!(low[0], Duration::from_secs(1));
        assert_eq!(high[0], Duration::from_secs(1));
        assert!((low[1].as_secs_f64() - 1.6 * 0.8).abs() < 1e-6);
        assert!((high[1].as_secs_f64() - 1.6 * 1.2).abs() < 1e-6);
        // Jitter does not compound: the base keeps growing by exactly 1.6.
        assert!((low[2].as_secs_f64() - 2.56 * 0.8).abs() < 1e-6);
        let capped = schedule(0.999_999_999, 20);
        assert!((capped[19].as_secs_f64() - 144.0).abs() < 1e-6);
    }

    #[test]
    fn connect_deadline_is_at_least_min_connect_timeout() {
        let mut b = Backoff::new(BackoffConfig::default());
        let t0 = Instant::now();
        let mut j = || 0.5;
        assert_eq!(b.start_attempt(t0, &mut j) - t0, Duration::from_secs(20));
        for _ in 0..8 {
            b.start_attempt(t0, &mut j);
        }
        // 1.6^8 ≈ 42.9 s > 20 s: the backoff itself is the deadline.
        let d = b.start_attempt(t0, &mut j) - t0;
        assert!((d.as_secs_f64() - 68.719476736).abs() < 1e-6);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(BackoffConfig::default());
        let t0 = Instant::now();
        let mut j = || 0.5;
        for _ in 0..5 {
            b.start_attempt(t0, &mut j);
        }
        b.reset();
        b.start_attempt(t0, &mut j);
        assert_eq!(b.next_attempt().unwrap() - t0, Duration::from_secs(1));
    }
}
