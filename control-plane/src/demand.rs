//! Throttle demand shared across data planes: the leader's in-memory
//! `DemandTable` (recomputed on every sync, so it needs no durability)
//! turns each data plane's recent demand per key into its share of the
//! key's rate.
//!
//! **Why shares are grants with a cap.** Each data plane admits at
//! `rate × share` with the share it was last given, so the cluster admits
//! `rate × Σ shares`: the throttle is exact exactly when the shares in force
//! sum to one. Shares are handed out one data plane at a time, at its own
//! sync, so a share computed from demand alone sums with shares computed
//! earlier from older demand. When load starts after an idle spell the
//! first data plane to report sees the others at zero and takes the whole
//! rate (the shares in force summed to 1.8, then 1.14: +3–4 % over a 10 s
//! run), and a data plane whose answer was slow dropped out of the others'
//! sums while it kept its share (up to +10 % on a busy host).
//!
//! So a share is a *grant* the leader remembers: it holds for `GRANT_FOR`
//! from the sync that asked for it (the data plane counts from when it sent
//! the sync, so it stops using a grant before the leader forgets it), and a
//! data plane is granted at most `1 − Σ` of the grants the others hold now.
//! The shares in force then never sum above one, whatever the timing; the
//! demand-proportional target only says how the one is split. A data plane
//! whose grant lapsed (no answer for `GRANT_FOR`) falls back to `1 / N`,
//! which the leader does not reserve: while one is cut off the cluster may
//! admit up to `1 + 1/N` times the rate, which is the price of never failing
//! closed on a healthy data plane.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tollgate_model::metering::{DemandReport, DemandShares, Share, SHARE_GRANT_FOR as GRANT_FOR};

/// A data plane counts as present for this long after its last sync.
const PRESENT_FOR: Duration = Duration::from_secs(2);
/// A data plane's demand is current for this long after it reported it;
/// syncs come every 200 ms.
const QUIET_AFTER: Duration = Duration::from_millis(600);
/// A grant may exceed the demand-proportional target by this factor, so
/// that share nobody holds (a neighbour's demand fell) is taken up at the
/// next sync instead of lying idle for a round.
const HEADROOM: f64 = 1.25;
/// How long a table that starts (a new leader, or one that heard no sync
/// for `PRESENT_FOR`) grants no data plane more than it holds: a sync
/// round and then some, until every data plane has said what it holds.
const LEARN_FOR: Duration = Duration::from_millis(500);
/// Demand (requests per second, all data planes together) below which a
/// key counts as idle, and is split evenly.
const IDLE_BELOW: f64 = 1.0;
/// A grant this far below the data plane's part of the demand is
/// `capped`: it may ask again as soon as the others have given up theirs.
const CAPPED_BY: f64 = 0.01;
/// The least a data plane is granted while the cap allows: one with no
/// recent demand can still admit its first requests.
const FLOOR: f64 = 0.01;

/// Recent demand per (key, plan) per data plane, on the leader.
#[derive(Default)]
pub struct DemandTable {
    inner: Mutex<DemandInner>,
}

#[derive(Default)]
struct DemandInner {
    /// data plane -> last sync.
    seen: HashMap<String, Instant>,
    /// The last sync of any data plane, and until when the table is still
    /// learning what the data planes hold (see `sync_at`).
    last_sync: Option<Instant>,
    learning_until: Option<Instant>,
    demand: HashMap<(String, String), KeyDemand>,
}

struct KeyDemand {
    /// When the key first showed up (since its last idle spell).
    since: Instant,
    per_dp: HashMap<String, DpDemand>,
}

struct DpDemand {
    /// Smoothed requests per second.
    rate: f64,
    /// When the data plane last reported the key, and was granted `granted`.
    at: Instant,
    granted: f64,
    /// What it said it was admitting under then: until the grant's answer
    /// reaches it (a slow answer can take hundreds of ms), it still uses
    /// this one.
    held: f64,
}

impl KeyDemand {
    /// `dp`'s part of the demand, and the share it asks for: that part with
    /// headroom (an even split while there is no demand at all). Present data planes
    /// that have not spoken about this key since it appeared count at the
    /// mean (otherwise, when load starts, the first to report would be the
    /// only one with demand); those that synced since without mentioning it
    /// want nothing.
    fn wanted(&self, dp: &str, seen: &HashMap<String, Instant>, now: Instant) -> (f64, f64) {
        let current = |d: &&DpDemand| now.duration_since(d.at) < QUIET_AFTER;
        let known: Vec<f64> = self
            .per_dp
            .values()
            .filter(current)
            .map(|d| d.rate)
            .collect();
        let mean = known.iter().sum::<f64>() / known.len().max(1) as f64;
        let unknown = seen
            .iter()
            .filter(|(other, at)| {
                !self.per_dp.contains_key(*other)
                    && **at <= self.since
                    && now.duration_since(**at) < QUIET_AFTER
            })
            .count();
        let total = known.iter().sum::<f64>() + mean * unknown as f64;
        let mine = self.per_dp.get(dp).map_or(0.0, |d| d.rate);
        // Below a request a second the rates are the tail of smoothing
        // after the demand stopped: their ratios are noise.
        if total >= IDLE_BELOW {
            (mine / total, (mine / total * HEADROOM).max(FLOOR))
        } else {
            let even = 1.0 / (known.len() + unknown).max(1) as f64;
            (even, even)
        }
    }

    /// What the other data planes may be admitting under now: the grant
    /// on its way to each, or the share it held, whichever is larger.
    fn held_by_others(&self, dp: &str, now: Instant) -> f64 {
        self.per_dp
            .iter()
            .filter(|(other, d)| *other != dp && now.duration_since(d.at) < GRANT_FOR)
            .map(|(_, d)| d.granted.max(d.held))
            .sum()
    }
}

impl DemandTable {
    /// Record a report and answer with the reporter's share of each key.
    pub fn sync(&self, r: &DemandReport) -> DemandShares {
        self.sync_at(r, Instant::now())
    }

    fn sync_at(&self, r: &DemandReport, now: Instant) -> DemandShares {
        let window = (r.window.as_millis().max(1) as f64) / 1000.0;
        let mut guard = self.inner.lock().expect("demand lock");
        let t = &mut *guard;
        // A table that starts knows nothing of the grants an earlier
        // leader made; until each data plane has reported what it holds,
        // none may grow (shrinking is always safe).
        if t.last_sync
            .is_none_or(|at| now.duration_since(at) >= PRESENT_FOR)
        {
            t.learning_until = Some(now + LEARN_FOR);
        }
        t.last_sync = Some(now);
        let learning = t.learning_until.is_some_and(|until| now < until);
        t.seen.insert(r.data_plane.clone(), now);
        t.seen.retain(|_, at| now.duration_since(*at) < PRESENT_FOR);
        let present = t.seen.len().max(1);
        let mut shares = Vec::with_capacity(r.items.len());
        for d in &r.items {
            let k = (d.key.clone(), d.plan.clone());
            let kd = t.demand.entry(k).or_insert_with(|| KeyDemand {
                since: now,
                per_dp: HashMap::new(),
            });
            kd.per_dp
                .retain(|_, d| now.duration_since(d.at) < GRANT_FOR);
            // Smooth each data plane's rate a little: shares are ratios of
            // noisy 200 ms samples taken at different moments.
            let sample = d.requests as f64 / window;
            let rate = match kd.per_dp.get(&r.data_plane) {
                // A report with no window only says what is held.
                Some(prev) if r.window.is_zero() => prev.rate,
                Some(prev) => 0.5 * prev.rate + 0.5 * sample,
                None if r.window.is_zero() => 0.0,
                None => sample,
            };
            let mine = kd.per_dp.entry(r.data_plane.clone()).or_insert(DpDemand {
                rate,
                at: now,
                granted: 0.0,
                held: 0.0,
            });
            (mine.rate, mine.at, mine.held) = (rate, now, d.held.clamp(0.0, 1.0));
            let mut cap = (1.0 - kd.held_by_others(&r.data_plane, now)).max(0.0);
            if learning {
                cap = cap.min(d.held.max(FLOOR));
            }
            let (part, wanted) = kd.wanted(&r.data_plane, &t.seen, now);
            let share = wanted.min(cap);
            if let Some(mine) = kd.per_dp.get_mut(&r.data_plane) {
                mine.granted = share;
            }
            shares.push(Share {
                key: d.key.clone(),
                plan: d.plan.clone(),
                share,
                capped: part > cap + CAPPED_BY,
            });
        }
        // Forget keys nobody has asked for in a while.
        if t.demand.len() > 10_000 {
            t.demand.retain(|_, kd| {
                kd.per_dp
                    .values()
                    .any(|d| now.duration_since(d.at) < PRESENT_FOR)
            });
        }
        DemandShares {
            data_planes: present as u32,
            shares,
        }
    }

    pub fn present(&self) -> usize {
        let now = Instant::now();
        let t = self.inner.lock().expect("demand lock");
        t.seen
            .values()
            .filter(|at| now.duration_since(**at) < PRESENT_FOR)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use tollgate_model::metering::Demand;

    /// Data planes under closed-loop load, simulated on a virtual clock in
    /// 5 ms steps: each syncs every 200 ms (one sync in flight at a time),
    /// its answer takes `slow_ms` with probability `slow` (else 2 ms), and
    /// it admits at `rate × share in force`, where the share in force is its
    /// grant until `SHARE_GRANT_FOR` after it sent the sync, else `1 / N`.
    struct Sim {
        weights: Vec<f64>,
        /// Per-window noise on each data plane's demand (± fraction).
        noise: f64,
        slow: f64,
        slow_ms: std::ops::Range<u64>,
        seed: u64,
    }

    struct Outcome {
        /// Admitted over `rate × loaded time`.
        admitted: f64,
        /// The largest sum of shares in force seen.
        max_sum: f64,
        /// The shares in force at the end.
        shares: Vec<f64>,
    }

    impl Sim {
        fn new(weights: &[f64]) -> Self {
            Self {
                weights: weights.to_vec(),
                noise: 0.0,
                slow: 0.0,
                slow_ms: 300..900,
                seed: 1,
            }
        }

        fn run(&self) -> Outcome {
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
            let table = DemandTable::default();
            let t0 = Instant::now();
            let n = self.weights.len();
            let even = 1.0 / n as f64;
            let step = Duration::from_millis(5);
            let mut share = vec![even; n];
            let mut valid_until = vec![Duration::ZERO; n];
            // (answer arrives, sync sent, the grant)
            let mut pending: Vec<Option<(Duration, Duration, Share)>> = vec![None; n];
            let mut counted = vec![0.0; n];
            let mut next_sync: Vec<Duration> = (0..n)
                .map(|i| Duration::from_millis(3 + 200 * i as u64 / n as u64))
                .collect();
            let mut last_sync = vec![Duration::ZERO; n];
            // Held-only syncs left this round (after a grant that shrank or
            // was capped), and whether the next sync is one.
            let mut resyncs = vec![0; n];
            let mut confirm_at: Vec<Option<Duration>> = vec![None; n];
            let (mut admitted, mut max_sum) = (0.0, 0.0_f64);
            // Idle for 3 s (the key known, no demand), then 10 s of load.
            let load_from = Duration::from_secs(3);
            let end = load_from + Duration::from_secs(10);
            let mut t = Duration::ZERO;
            while t < end {
                t += step;
                let in_force: Vec<f64> = (0..n)
                    .map(|i| if t < valid_until[i] { share[i] } else { even })
                    .collect();
                max_sum = max_sum.max(in_force.iter().sum());
                for i in 0..n {
                    if let Some((at, sent, granted)) = pending[i].take_if(|(at, ..)| t >= *at) {
                        let held = if t < valid_until[i] { share[i] } else { even };
                        if (granted.capped || granted.share < held - 1e-3) && resyncs[i] > 0 {
                            resyncs[i] -= 1;
                            confirm_at[i] = Some(t + Duration::from_millis(15));
                        }
                        (share[i], valid_until[i]) = (granted.share, sent + GRANT_FOR);
                        let _ = at;
                    }
                    if t > load_from {
                        let noise = 1.0 + rng.gen_range(-self.noise..=self.noise);
                        counted[i] += self.weights[i] * 2000.0 * noise * step.as_secs_f64();
                        admitted += 200.0 * in_force[i] * step.as_secs_f64();
                    }
                    let confirming = confirm_at[i].is_some_and(|at| t >= at);
                    if (confirming || t >= next_sync[i]) && pending[i].is_none() {
                        let latency = if rng.gen_bool(self.slow) {
                            Duration::from_millis(rng.gen_range(self.slow_ms.clone()))
                        } else {
                            Duration::from_millis(2)
                        };
                        confirm_at[i] = None;
                        let report = DemandReport {
                            data_plane: format!("dp{i}"),
                            window: if confirming {
                                Duration::ZERO
                            } else {
                                t - last_sync[i]
                            },
                            items: vec![Demand {
                                key: "k".into(),
                                plan: "p".into(),
                                requests: if confirming { 0 } else { counted[i] as u64 },
                                held: if t < valid_until[i] { share[i] } else { even },
                            }],
                        };
                        if !confirming {
                            (counted[i], last_sync[i]) = (0.0, t);
                        }
                        // The request reaches the leader at once; the answer is what is slow
                        // (the longest the old share stays in use after a new grant).
                        let granted = table
                            .sync_at(&report, t0 + t + Duration::from_millis(1))
                            .shares
                            .remove(0);
                        pending[i] = Some((t + latency, t, granted));
                        if !confirming {
                            next_sync[i] = (t + Duration::from_millis(200)).max(t + latency);
                            resyncs[i] = 3;
                        }
                    }
                }
            }
            Outcome {
                admitted: admitted / 2000.0,
                max_sum,
                shares: (0..n)
                    .map(|i| if t < valid_until[i] { share[i] } else { even })
                    .collect(),
            }
        }
    }

    #[test]
    fn shares_in_force_never_sum_above_one() {
        for weights in [
            vec![1.0; 3],
            vec![9.0, 1.0, 1.0],
            vec![9.0, 1.0, 1.0, 1.0, 1.0],
        ] {
            for seed in 0..8 {
                let sim = Sim {
                    noise: 0.5,
                    slow: 0.2,
                    seed,
                    ..Sim::new(&weights)
                };
                let out = sim.run();
                assert!(
                    out.max_sum <= 1.0 + 1e-9,
                    "{weights:?} seed {seed}: shares summed to {}",
                    out.max_sum
                );
                assert!(
                    out.admitted <= 1.0 + 1e-9,
                    "{weights:?} seed {seed}: admitted {}",
                    out.admitted
                );
                // Slow answers cost a little, never much.
                assert!(
                    out.admitted >= 0.94,
                    "{weights:?} seed {seed}: admitted {}",
                    out.admitted
                );
            }
        }
    }

    #[test]
    fn a_new_leader_grows_no_share_until_it_knows_what_the_others_hold() {
        // The old leader granted a 0.9 and b 0.1; a new leader's first
        // sync is from b, whose demand now dwarfs a's.
        let table = DemandTable::default();
        let t0 = Instant::now();
        let b = table.sync_at(&report("b", 1000, 0.1), t0).shares[0].share;
        assert!(b <= 0.1 + 1e-9, "{b}");
        let a = table
            .sync_at(&report("a", 10, 0.9), t0 + Duration::from_millis(50))
            .shares[0]
            .share;
        assert!(a + b <= 1.0 + 1e-9);
        // Past learning, and once a says it holds its new (smaller) grant,
        // b grows into what a gave up.
        let at = t0 + LEARN_FOR + Duration::from_millis(10);
        let a = table.sync_at(&report("a", 10, a), at).shares[0].share;
        let grown = table
            .sync_at(&report("b", 1000, b), at + Duration::from_millis(10))
            .shares[0]
            .share;
        assert!(grown > b && grown + a <= 1.0 + 1e-9, "{grown} + {a}");
    }

    #[test]
    fn load_starting_after_an_idle_spell_is_admitted_at_the_rate() {
        // Before grants, the first data plane to report after an idle
        // spell took the whole rate: +3–4 % over 10 s. Now the skewed case
        // waits a round for the small ones to give up their even split.
        for (weights, least) in [(vec![1.0; 3], 0.999), (vec![9.0, 1.0, 1.0], 0.99)] {
            let out = Sim {
                noise: 0.3,
                ..Sim::new(&weights)
            }
            .run();
            assert!(
                (least..=1.0 + 1e-9).contains(&out.admitted),
                "{weights:?}: admitted {} of the rate",
                out.admitted
            );
        }
    }

    #[test]
    fn shares_follow_demand() {
        let out = Sim::new(&[9.0, 1.0, 1.0]).run();
        let (big, small) = (out.shares[0], out.shares[1]);
        assert!((0.75..=0.85).contains(&big), "{:?}", out.shares);
        assert!((0.07..=0.13).contains(&small), "{:?}", out.shares);
        assert!(out.shares.iter().sum::<f64>() <= 1.0 + 1e-9);
    }

    fn report(dp: &str, requests: u64, held: f64) -> DemandReport {
        DemandReport {
            data_plane: dp.into(),
            window: Duration::from_millis(200),
            items: vec![Demand {
                key: "k".into(),
                plan: "p".into(),
                requests,
                held,
            }],
        }
    }

    #[test]
    fn a_lapsed_grant_is_no_longer_reserved() {
        let table = DemandTable::default();
        let t0 = Instant::now();
        let share = |dp, requests, held, at| {
            table.sync_at(&report(dp, requests, held), t0 + at).shares[0].share
        };
        // Two data planes with equal demand hold half each.
        let mut at = Duration::ZERO;
        for _ in 0..5 {
            share("a", 100, 0.5, at);
            share("b", 100, 0.5, at);
            at += Duration::from_millis(200);
        }
        // a goes silent. Until its grant lapses, what it holds is reserved
        // however much b wants; then b may take everything.
        let (mut held, lapse) = (0.5, at + GRANT_FOR);
        while at < lapse + Duration::from_millis(400) {
            held = share("b", 1000, held, at);
            if at + Duration::from_millis(200) < lapse {
                assert!(held <= 0.5 + 1e-9, "at {at:?}: {held}");
            }
            at += Duration::from_millis(200);
        }
        assert!(held > 0.99, "{held}");
    }

    #[test]
    fn a_shrinking_grant_stays_reserved_until_its_holder_has_it() {
        let table = DemandTable::default();
        let t0 = Instant::now();
        let share = |dp, requests, held, ms| {
            table
                .sync_at(&report(dp, requests, held), t0 + Duration::from_millis(ms))
                .shares[0]
                .share
        };
        // Past the table's first half second, when no one may grow.
        for ms in (0..=LEARN_FOR.as_millis() as u64).step_by(200) {
            share("a", 100, 0.5, ms);
            share("b", 100, 0.5, ms);
        }
        let ms = LEARN_FOR.as_millis() as u64 + 200;
        // a's demand is falling: it is granted less, but it said it held
        // 0.5, which it keeps using until that answer reaches it.
        let a = share("a", 0, 0.5, ms);
        assert!(a < 0.5, "{a}");
        let b = share("b", 1000, 0.5, ms + 10);
        assert!(b <= 0.5 + 1e-9, "b took a share a may still be using: {b}");
        // a's next sync says it holds the smaller grant: b may grow.
        share("a", 0, a, ms + 200);
        let grown = share("b", 1000, b, ms + 210);
        assert!(grown > 0.5 + 0.01, "{grown}");
    }
}
