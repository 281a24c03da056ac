//! A lock-free token bucket in its GCRA form: one atomic "theoretical
//! arrival time" per bucket, updated with compare-and-swap. No locks, no
//! allocation, no clock reads beyond the one passed in.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Gcra {
    /// Theoretical arrival time, ns on the caller's clock.
    tat: AtomicU64,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    /// Requests that could be admitted right now after this one.
    pub remaining: u64,
    /// Nanoseconds until the bucket is full again.
    pub reset_ns: u64,
    /// Nanoseconds until one more request would be admitted (0 if allowed).
    pub retry_after_ns: u64,
}

impl Gcra {
    /// Whether the bucket is full at `now_ns`: forgetting it then changes
    /// nothing, as a new bucket starts full.
    pub fn is_full(&self, now_ns: u64) -> bool {
        self.tat.load(Ordering::Acquire) <= now_ns
    }

    /// A full bucket again.
    pub fn reset(&self) {
        self.tat.store(0, Ordering::Release);
    }

    /// Admit one request at `now_ns` with `rate` per second and a bucket of
    /// `burst` requests. `rate` must be positive.
    pub fn check(&self, now_ns: u64, rate: f64, burst: f64) -> Verdict {
        let interval = (1e9 / rate).max(1.0) as u64;
        // A full bucket admits `burst` requests at once.
        let tolerance = (interval as f64 * burst.max(1.0)) as u64;
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let base = tat.max(now_ns);
            let next = base + interval;
            let ahead = next - now_ns;
            if ahead > tolerance {
                return Verdict {
                    allowed: false,
                    remaining: 0,
                    reset_ns: base - now_ns,
                    retry_after_ns: ahead - tolerance,
                };
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Verdict {
                        allowed: true,
                        remaining: (tolerance - ahead) / interval,
                        reset_ns: ahead,
                        retry_after_ns: 0,
                    }
                }
                Err(actual) => tat = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let g = Gcra::default();
        let t0 = 1_000_000_000_000;
        let admitted = (0..50).filter(|_| g.check(t0, 10.0, 20.0).allowed).count();
        assert_eq!(admitted, 20, "a full bucket admits the burst");
        let v = g.check(t0, 10.0, 20.0);
        assert!(!v.allowed && v.retry_after_ns > 0 && v.retry_after_ns <= 100_000_000);
        // One second later, ten more.
        let admitted = (0..50)
            .filter(|_| g.check(t0 + 1_000_000_000, 10.0, 20.0).allowed)
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn steady_rate_over_time() {
        let g = Gcra::default();
        let mut admitted = 0;
        // 1000 requests per second for 10 s against rate 100, burst 5.
        for i in 0..10_000u64 {
            if g.check(1_000_000_000 + i * 1_000_000, 100.0, 5.0).allowed {
                admitted += 1;
            }
        }
        assert!((1000..=1006).contains(&admitted), "{admitted}");
    }
}
