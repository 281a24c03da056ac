//! Live traffic (contract §5.2, `GET /v1/traffic`): what data planes
//! answered, per API and route, in 10 s windows aligned to Unix time.
//!
//! Both halves use these: the data plane counts into the latency buckets
//! and the control plane merges them, so the bounds must be the same on
//! both sides, and are defined once, here. The wire messages are converted
//! to and from these in `tollgate_proto::traffic`.

/// A window's length: windows start at Unix time multiples of it.
pub const WINDOW_S: u64 = 10;
/// How much the control plane keeps (in memory only).
pub const KEPT_S: u64 = 15 * 60;

/// Upper bounds of the latency buckets, in microseconds; one more bucket
/// takes everything above. Steps of about 1.5× keep an interpolated p99
/// within a few tens of percent of the truth at any scale.
pub const LATENCY_BOUNDS_US: [u64; 24] = [
    250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 50_000, 75_000,
    100_000, 150_000, 200_000, 300_000, 500_000, 750_000, 1_000_000, 2_000_000, 5_000_000,
    10_000_000, 30_000_000,
];
/// Buckets in a histogram: one per bound, then the one above them all.
pub const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// The bucket an answer taking `us` microseconds falls in.
pub fn bucket_of(us: u64) -> usize {
    LATENCY_BOUNDS_US.partition_point(|&b| b < us)
}

/// The start of the window holding Unix second `unix_s`.
pub fn window_of(unix_s: u64) -> u64 {
    unix_s - unix_s % WINDOW_S
}

/// What was answered in one window (of one route, API or data plane).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    /// Answers per latency bucket (`LATENCY_BOUNDS_US`), not cumulative.
    pub latency: [u64; BUCKETS],
}

impl Counts {
    /// Add another's answers to these (different answers: other routes,
    /// data planes or windows).
    pub fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.errors_4xx += o.errors_4xx;
        self.errors_5xx += o.errors_5xx;
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
    }

    /// Two copies of one cumulative count (a resent report, or one held by
    /// two nodes after the data plane moved): each field only grows, so the
    /// larger is the later, and taking it never counts an answer twice.
    pub fn newest(&mut self, o: &Counts) {
        self.requests = self.requests.max(o.requests);
        self.errors_4xx = self.errors_4xx.max(o.errors_4xx);
        self.errors_5xx = self.errors_5xx.max(o.errors_5xx);
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a = (*a).max(*b);
        }
    }

    pub fn p99_ms(&self) -> Option<f64> {
        self.quantile_ms(0.99)
    }

    /// The `q` quantile of the latency in milliseconds, interpolated
    /// linearly within its bucket (as Prometheus's `histogram_quantile`);
    /// the top bucket answers its lower bound. `None` with no answers.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n: u64 = self.latency.iter().sum();
        if n == 0 {
            return None;
        }
        // The rank of the answer at the quantile, 1-based.
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut below = 0;
        for (i, &c) in self.latency.iter().enumerate() {
            if below + c >= rank {
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_US[i - 1] };
                let Some(&upper) = LATENCY_BOUNDS_US.get(i) else {
                    return Some(lower as f64 / 1e3);
                };
                let part = (rank - below) as f64 / c as f64;
                return Some((lower as f64 + (upper - lower) as f64 * part) / 1e3);
            }
            below += c;
        }
        None
    }
}

/// One route's answers in the window starting at `t` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteWindow {
    pub t: u64,
    pub api: String,
    /// Empty where a node has summed an API's routes.
    pub route: String,
    pub counts: Counts,
}

/// A data plane's latest windows, each cumulative for its window, so a
/// resent report replaces rather than adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficReport {
    pub data_plane: String,
    /// Distinguishes boots of one data plane (its start time in ns): two
    /// boots' counts of one window are different answers.
    pub epoch: u64,
    pub items: Vec<RouteWindow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(us: &[u64]) -> Counts {
        let mut c = Counts::default();
        for &u in us {
            c.requests += 1;
            c.latency[bucket_of(u)] += 1;
        }
        c
    }

    #[test]
    fn buckets_take_their_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(250), 0);
        assert_eq!(bucket_of(251), 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(window_of(1_700_000_009), 1_700_000_000);
    }

    #[test]
    fn p99_interpolates_within_its_bucket() {
        assert_eq!(Counts::default().p99_ms(), None);
        // 100 answers in (1, 2] ms: the 99th is 99 % of the way up.
        let c = with(&[1_500; 100]);
        assert!((c.p99_ms().unwrap() - 1.99).abs() < 1e-9, "{c:?}");
        // 98 fast and 2 slow: the 99th answer is a slow one.
        let mut v = vec![100; 98];
        v.extend([40_000, 40_000]);
        let p = with(&v).p99_ms().unwrap();
        assert!((30.0..=50.0).contains(&p), "{p}");
        // Above every bound: the last bound.
        assert_eq!(with(&[60_000_000]).p99_ms(), Some(30_000.0));
        // One answer is its own p99.
        assert!(with(&[400]).p99_ms().unwrap() <= 0.5);
    }

    #[test]
    fn merged_histograms_give_the_p99_of_all_answers() {
        let (fast, slow) = (with(&[100; 990]), with(&[400_000; 10]));
        let mut all = fast.clone();
        all.add(&slow);
        assert_eq!(all.requests, 1000);
        // Rank 990 is the last fast answer: within the first bucket.
        assert!(all.p99_ms().unwrap() <= 0.25);
        all.add(&with(&[400_000]));
        assert!(all.p99_ms().unwrap() > 300.0);
    }

    #[test]
    fn newest_keeps_the_larger_copy_of_a_cumulative_count() {
        let (early, late) = (with(&[100; 3]), with(&[100; 5]));
        let mut c = late.clone();
        c.newest(&early);
        assert_eq!(c, late);
        let mut c = early;
        c.newest(&late);
        assert_eq!(c, late);
    }
}
