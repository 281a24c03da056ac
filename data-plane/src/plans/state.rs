//! What the enforcer keeps per (key, plan): the throttle, the share, the
//! quota slot and the metering counter, in one entry found with one lookup
//! by borrowed ids (no owned pair is built on the request path).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use arc_swap::ArcSwapOption;
use tollgate_model::usage::Day;

use super::gcra::Gcra;
use super::QuotaSlot;

/// A (key id, plan id) pair as the state map owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyPlan {
    pub key: String,
    pub plan: String,
}

/// The ids of a (key, plan) pair, owned or borrowed: the map is searched
/// through `dyn KeyPlanIds`, so a lookup takes `(&str, &str)`.
pub(super) trait KeyPlanIds {
    fn key(&self) -> &str;
    fn plan(&self) -> &str;
}

impl KeyPlanIds for KeyPlan {
    fn key(&self) -> &str {
        &self.key
    }

    fn plan(&self) -> &str {
        &self.plan
    }
}

impl KeyPlanIds for (&str, &str) {
    fn key(&self) -> &str {
        self.0
    }

    fn plan(&self) -> &str {
        self.1
    }
}

// The owned pair hashes and compares through the borrowed form, so the
// two always agree (as `Borrow` requires).
impl Hash for dyn KeyPlanIds + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.key().hash(h);
        self.plan().hash(h);
    }
}

impl PartialEq for dyn KeyPlanIds + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key() && self.plan() == other.plan()
    }
}

impl Eq for dyn KeyPlanIds + '_ {}

impl Hash for KeyPlan {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self as &dyn KeyPlanIds).hash(h);
    }
}

impl<'a> Borrow<dyn KeyPlanIds + 'a> for KeyPlan {
    fn borrow(&self) -> &(dyn KeyPlanIds + 'a) {
        self
    }
}

#[derive(Default)]
pub(super) struct Throttle {
    pub bucket: Gcra,
    /// The plan's throttle (rate bits, burst) the bucket has run under.
    terms: AtomicU64,
    terms_burst: AtomicU32,
    /// Requests seen (admitted or not) since the last sync.
    pub demand: AtomicU64,
    /// Syncs in a row that found no demand; the key is reported (as 0)
    /// for a while after its demand stops, so its share moves elsewhere.
    pub idle_syncs: AtomicU32,
}

impl Throttle {
    /// The bucket for the plan's `rate` and `burst`. A bucket filled under
    /// other terms starts full: its state, in the old rate's units, would
    /// hold a faster rate back for up to the old burst's length, and a
    /// plan change is to apply at once. (A share change is not a change of
    /// terms: the bucket carries on.)
    pub fn bucket_for(&self, rate: f64, burst: u32) -> &Gcra {
        let bits = rate.to_bits();
        if self.terms.load(Ordering::Acquire) != bits
            || self.terms_burst.load(Ordering::Acquire) != burst
        {
            self.terms.store(bits, Ordering::Release);
            self.terms_burst.store(burst, Ordering::Release);
            self.bucket.reset();
        }
        &self.bucket
    }
}

/// `share` before the control plane has given one.
const NO_SHARE: u64 = u64::MAX;

pub(super) struct KeyPlanState {
    /// Made on the first request under a plan with a throttle; from then
    /// on the pair's demand is reported in every sync.
    pub throttle: OnceLock<Throttle>,
    /// This data plane's part of the rate as the control plane last
    /// granted it (`f64` bits), or `NO_SHARE`, and until when it holds (ms
    /// on the enforcer's clock).
    share: AtomicU64,
    share_until_ms: AtomicU64,
    pub quota: ArcSwapOption<QuotaSlot>,
    pub metered: Metered,
    /// A request came since the last idle sweep.
    pub used: AtomicBool,
}

impl Default for KeyPlanState {
    fn default() -> Self {
        Self {
            throttle: OnceLock::new(),
            share: AtomicU64::new(NO_SHARE),
            share_until_ms: AtomicU64::new(0),
            quota: ArcSwapOption::empty(),
            metered: Metered::default(),
            used: AtomicBool::new(true),
        }
    }
}

impl KeyPlanState {
    /// The share granted, while it holds at `now_ms`.
    pub fn share(&self, now_ms: u64) -> Option<f64> {
        if self.share_until_ms.load(Ordering::Acquire) <= now_ms {
            return None;
        }
        let bits = self.share.load(Ordering::Relaxed);
        (bits != NO_SHARE).then(|| f64::from_bits(bits))
    }

    pub fn set_share(&self, share: f64, until_ms: u64) {
        self.share.store(share.to_bits(), Ordering::Relaxed);
        self.share_until_ms.store(until_ms, Ordering::Release);
    }
}

/// Admitted requests not yet moved to the enforcer's pending batch, and
/// the UTC day they were admitted on, in one atomic word (day in the high
/// 32 bits, count in the low 32) so that a count can never be taken out
/// under the wrong day. Every unit added leaves exactly once, through
/// `add` (a new day, or a full counter) or `take`.
#[derive(Default)]
pub(super) struct Metered(AtomicU64);

const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

fn pack(day: Day, count: u64) -> u64 {
    (u64::from(day) << COUNT_BITS) | count
}

fn unpack(word: u64) -> (Day, u64) {
    ((word >> COUNT_BITS) as Day, word & COUNT_MASK)
}

impl Metered {
    /// Count one request on `today`. Returns what the counter held for an
    /// earlier day (or, full, for today) when it had to start over: the
    /// caller moves that to the pending batch.
    pub fn add(&self, today: Day) -> Option<(Day, u64)> {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            let (day, count) = unpack(word);
            let (next, moved) = if day == today && count < COUNT_MASK {
                (word + 1, None)
            } else {
                (pack(today, 1), (count > 0).then_some((day, count)))
            };
            match self
                .0
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return moved,
                Err(actual) => word = actual,
            }
        }
    }

    /// Nothing counted since the last `take`.
    pub fn is_empty(&self) -> bool {
        unpack(self.0.load(Ordering::Acquire)).1 == 0
    }

    /// Take everything counted so far, with its day.
    pub fn take(&self) -> Option<(Day, u64)> {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            let (day, count) = unpack(word);
            if count == 0 {
                return None;
            }
            match self.0.compare_exchange_weak(
                word,
                pack(day, 0),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((day, count)),
                Err(actual) => word = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dashmap::DashMap;

    #[test]
    fn borrowed_ids_find_the_owned_pair() {
        let map: DashMap<KeyPlan, u32, crate::FastHash> = DashMap::default();
        map.insert(
            KeyPlan {
                key: "k1".into(),
                plan: "gold".into(),
            },
            7,
        );
        let found = |k: &str, p: &str| map.get(&(k, p) as &dyn KeyPlanIds).map(|v| *v);
        assert_eq!(found("k1", "gold"), Some(7));
        assert_eq!(found("k1", "silver"), None);
        // The boundary between the two ids counts.
        assert_eq!(found("k1g", "old"), None);
        assert_eq!(found("k", "1gold"), None);
    }

    #[test]
    fn new_throttle_terms_apply_at_once() {
        let t = Throttle::default();
        let s = 1_000_000_000;
        // 1 request/s, burst 2: the third request at t=10 s is refused.
        let admitted = (0..3)
            .filter(|_| t.bucket_for(1.0, 2).check(10 * s, 1.0, 2.0).allowed)
            .count();
        assert_eq!(admitted, 2);
        // The plan now allows 1000/s: a burst of 1000 is admitted at once,
        // not after the old rate's lead has run out.
        let admitted = (0..1000)
            .filter(|_| {
                t.bucket_for(1000.0, 1000)
                    .check(10 * s, 1000.0, 1000.0)
                    .allowed
            })
            .count();
        assert_eq!(admitted, 1000);
        // Same terms (a new share only): the bucket carries on, empty.
        assert!(
            !t.bucket_for(1000.0, 1000)
                .check(10 * s, 500.0, 500.0)
                .allowed
        );
    }

    #[test]
    fn metering_keeps_each_count_on_its_day() {
        let m = Metered::default();
        assert_eq!(m.take(), None);
        for _ in 0..3 {
            assert_eq!(m.add(100), None);
        }
        assert_eq!(m.take(), Some((100, 3)));
        assert_eq!(m.take(), None);
        m.add(100);
        // The first request of a new day hands back the old day's count.
        assert_eq!(m.add(101), Some((100, 1)));
        m.add(101);
        assert_eq!(m.take(), Some((101, 2)));
        // A full counter starts over instead of wrapping.
        m.0.store(pack(101, COUNT_MASK), Ordering::Relaxed);
        assert_eq!(m.add(101), Some((101, COUNT_MASK)));
        assert_eq!(m.take(), Some((101, 1)));
    }

    #[test]
    fn concurrent_counts_are_all_taken_once() {
        let m = std::sync::Arc::new(Metered::default());
        let taken = std::sync::Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (m, taken) = (m.clone(), taken.clone());
                std::thread::spawn(move || {
                    for i in 0..50_000u32 {
                        if let Some((_, n)) = m.add(7) {
                            taken.fetch_add(n, Ordering::Relaxed);
                        }
                        if i % 1000 == 0 {
                            if let Some((_, n)) = m.take() {
                                taken.fetch_add(n, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let rest = m.take().map_or(0, |(_, n)| n);
        assert_eq!(taken.load(Ordering::Relaxed) + rest, 200_000);
    }
}
