//! `retryPolicy`, `hedgingPolicy` and `retryThrottling` (gRFC A6), parsed
//! and validated with A6's bounds, and the channel's retry tokens. The
//! library's own unary calls retry by `retryPolicy`, hedge by
//! `hedgingPolicy`, both within `retryThrottling` (`crate::call`). All are
//! exposed for hosts that send calls themselves.

use super::json::{self, Path};
use crate::balancer::json::config_field;
use crate::status::Code;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// gRPC caps `maxAttempts` at 5 (larger values are treated as 5).
pub const MAX_ATTEMPTS_CAP: u32 = 5;

/// A method's `retryPolicy` (gRFC A6).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 2 to 5 (larger values in the
    /// config are capped at 5).
    pub max_attempts: u32,
    /// The first retry's delay is this (> 0) times a random factor in
    /// `[0.8, 1.2]` (A6's jitter).
    pub initial_backoff: Duration,
    /// The largest delay before jitter (> 0).
    pub max_backoff: Duration,
    /// Each delay is the last one times this (> 0).
    pub backoff_multiplier: f64,
    /// The statuses that make an attempt retryable (non-empty).
    pub retryable_status_codes: Vec<Code>,
}

/// A method's `hedgingPolicy` (gRFC A6).
#[derive(Clone, Debug, PartialEq)]
pub struct HedgingPolicy {
    /// Attempts in all: 2 to 5 (capped at 5).
    pub max_attempts: u32,
    /// Delay between hedged attempts (0 when absent: all at once).
    pub hedging_delay: Duration,
    /// Statuses that do not cancel the other hedged attempts.
    pub non_fatal_status_codes: Vec<Code>,
}

/// The service config's `retryThrottling` (gRFC A6): retries and hedges
/// are allowed only while the channel's token count is above half of
/// `max_tokens`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryThrottling {
    /// In (0, 1000].
    pub max_tokens: u32,
    /// Tokens a success adds back, > 0, three decimals kept.
    pub token_ratio: f64,
}

fn max_attempts(obj: &Map<String, Value>, at: &Path) -> Result<u32, String> {
    let at = at.field("maxAttempts");
    let v = config_field(obj, "maxAttempts").ok_or_else(|| at.err("is required"))?;
    // Any integer: above the cap is the cap, not an error (A6; gRPC-Go
    // reads it into an int and caps it).
    let n = json::uint(v, &at, u64::MAX)?;
    if n < 2 {
        return Err(at.err(format!("{n} must be at least 2")));
    }
    Ok(n.min(u64::from(MAX_ATTEMPTS_CAP)) as u32)
}

fn positive_duration(obj: &Map<String, Value>, name: &str, at: &Path) -> Result<Duration, String> {
    let at = at.field(name);
    let v = config_field(obj, name).ok_or_else(|| at.err("is required"))?;
    let d = json::duration(v, &at)?;
    if d.is_zero() {
        return Err(at.err(format!("{} must be greater than 0", json::shown(v))));
    }
    Ok(d)
}

/// A status code as proto3 JSON spells an enum: its name (any case) or
/// its number.
pub(super) fn status_code(v: &Value, at: &Path) -> Result<Code, String> {
    let code = match v {
        Value::String(s) => (0..=16)
            .filter_map(Code::from_u32)
            .find(|c| c.name().eq_ignore_ascii_case(s)),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .and_then(Code::from_u32),
        _ => None,
    };
    code.ok_or_else(|| at.err(format!("{} is not a status code", json::shown(v))))
}

fn status_codes(v: &Value, at: &Path) -> Result<Vec<Code>, String> {
    let list = json::array(v, at)?;
    let mut codes = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let code = status_code(c, &at.index(i))?;
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Ok(codes)
}

impl RetryPolicy {
    pub(super) fn parse(v: &Value, at: &Path) -> Result<RetryPolicy, String> {
        let obj = json::object(v, at)?;
        let max_attempts = max_attempts(obj, at)?;
        let initial_backoff = positive_duration(obj, "initialBackoff", at)?;
        let max_backoff = positive_duration(obj, "maxBackoff", at)?;
        let m_at = at.field("backoffMultiplier");
        let m = config_field(obj, "backoffMultiplier").ok_or_else(|| m_at.err("is required"))?;
        let backoff_multiplier = json::number(m, &m_at)?;
        if backoff_multiplier <= 0.0 {
            return Err(m_at.err(format!("{} must be greater than 0", json::shown(m))));
        }
        let c_at = at.field("retryableStatusCodes");
        let codes =
            config_field(obj, "retryableStatusCodes").ok_or_else(|| c_at.err("is required"))?;
        let retryable_status_codes = status_codes(codes, &c_at)?;
        if retryable_status_codes.is_empty() {
            return Err(c_at.err("must not be empty"));
        }
        Ok(RetryPolicy {
            max_attempts,
            initial_backoff,
            max_backoff,
            backoff_multiplier,
            retryable_status_codes,
        })
    }
}

impl HedgingPolicy {
    pub(super) fn parse(v: &Value, at: &Path) -> Result<HedgingPolicy, String> {
        let obj = json::object(v, at)?;
        let max_attempts = max_attempts(obj, at)?;
        let hedging_delay = match config_field(obj, "hedgingDelay") {
            Some(d) => json::duration(d, &at.field("hedgingDelay"))?,
            None => Duration::ZERO,
        };
        let non_fatal_status_codes = match config_field(obj, "nonFatalStatusCodes") {
            Some(c) => status_codes(c, &at.field("nonFatalStatusCodes"))?,
            None => Vec::new(),
        };
        Ok(HedgingPolicy {
            max_attempts,
            hedging_delay,
            non_fatal_status_codes,
        })
    }
}

impl RetryThrottling {
    pub(super) fn parse(v: &Value, at: &Path) -> Result<RetryThrottling, String> {
        let obj = json::object(v, at)?;
        let t_at = at.field("maxTokens");
        let t = config_field(obj, "maxTokens").ok_or_else(|| t_at.err("is required"))?;
        let max_tokens = json::uint(t, &t_at, 1000)? as u32;
        if max_tokens == 0 {
            return Err(t_at.err("must be greater than 0"));
        }
        let r_at = at.field("tokenRatio");
        let r = config_field(obj, "tokenRatio").ok_or_else(|| r_at.err("is required"))?;
        let ratio = json::number(r, &r_at)?;
        // A6: three decimals are kept (the rest cut off, as C-core cuts the
        // decimal digits). Via nano-units: 1.001 * 1000 is 1000.999... in
        // binary, which cut off directly would lose the 0.001; rounded
        // any coarser, 0.0009995 would become 0.001 instead of 0.
        let token_ratio = ((ratio * 1e9).round() as i64 / 1_000_000) as f64 / 1000.0;
        if token_ratio <= 0.0 {
            return Err(r_at.err(format!("{} must be greater than 0", json::shown(r))));
        }
        Ok(RetryThrottling {
            max_tokens,
            token_ratio,
        })
    }
}

/// A channel's retry tokens under `retryThrottling` (gRFC A6), shared by
/// every call of one service config: a call that ends OK adds `tokenRatio`
/// (up to `maxTokens`), an attempt that fails with a status its retry
/// policy names takes one away; a call may retry only while more than half
/// of `maxTokens` is left. Kept in thousandths of a token (`tokenRatio`
/// has three decimals), in one atomic word the calls update with a CAS.
#[derive(Debug)]
pub(crate) struct RetryTokens {
    milli: AtomicU32,
    max: u32,
    ratio: u32,
}

impl RetryTokens {
    pub(crate) fn new(t: &RetryThrottling) -> RetryTokens {
        // Both bounded by the parser: maxTokens ≤ 1000, so ≤ 1,000,000.
        let max = t.max_tokens.saturating_mul(1000);
        let ratio = (t.token_ratio * 1000.0).round().clamp(0.0, f64::from(max)) as u32;
        RetryTokens {
            milli: AtomicU32::new(max),
            max,
            ratio,
        }
    }

    /// A call ended OK.
    pub(crate) fn succeeded(&self) {
        let _ = self
            .milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t < self.max).then(|| t.saturating_add(self.ratio).min(self.max))
            });
    }

    /// An attempt failed in a way its retry policy counts: one token less.
    /// Returns whether retries are still allowed (more than half of
    /// `maxTokens` left, as gRPC-Go's throttler decides after the decrement).
    pub(crate) fn failed(&self) -> bool {
        let before = self
            .milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(1000))
            })
            .unwrap_or_else(|t| t);
        let after = before.saturating_sub(1000);
        u64::from(after) * 2 > u64::from(self.max)
    }

    /// Retries and hedges may go: more than half of `maxTokens` left.
    pub(crate) fn allow(&self) -> bool {
        u64::from(self.milli.load(Ordering::Relaxed)) * 2 > u64::from(self.max)
    }

    /// Tokens left, in thousandths (tests).
    #[cfg(test)]
    pub(crate) fn milli(&self) -> u32 {
        self.milli.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::{RetryThrottling, RetryTokens};

    #[test]
    fn tokens_allow_retries_only_above_half_of_max() {
        let t = RetryTokens::new(&RetryThrottling {
            max_tokens: 10,
            token_ratio: 0.5,
        });
        // 10 -> 9, 8, 7, 6: still above 5.
        for _ in 0..4 {
            assert!(t.failed());
        }
        // 5 is not above half.
        assert!(!t.failed());
        assert_eq!(t.milli(), 5000);
        // Never below 0.
        for _ in 0..10 {
            assert!(!t.failed());
        }
        assert_eq!(t.milli(), 0);
        // Successes add the ratio back: 12 of them make 6.
        for _ in 0..12 {
            t.succeeded();
        }
        assert_eq!(t.milli(), 6000);
        // 6 -> 5: not above half again.
        assert!(!t.failed());
        // Never above max.
        for _ in 0..100 {
            t.succeeded();
        }
        assert_eq!(t.milli(), 10_000);
    }

    #[test]
    fn a_ratio_keeps_its_three_decimals() {
        let t = RetryTokens::new(&RetryThrottling {
            max_tokens: 3,
            token_ratio: 0.001,
        });
        assert!(t.failed());
        t.succeeded();
        assert_eq!(t.milli(), 2001);
    }
}
