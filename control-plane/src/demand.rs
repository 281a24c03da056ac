//! Throttle demand shared across data planes: the leader's in-memory
//! `DemandTable` (recomputed every few hundred milliseconds, so it needs no
//! durability) turns each data plane's recent demand per key into its share
//! of the key's rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tollgate_model::metering::{DemandReport, DemandShares, Share};

/// A data plane counts as present for this long after its last sync.
const PRESENT_FOR: Duration = Duration::from_secs(2);
/// A data plane that has not synced for this long gets no assumed demand.
const QUIET_AFTER: Duration = Duration::from_millis(600);

/// Recent demand per (key, plan) per data plane, on the leader.
#[derive(Default)]
pub struct DemandTable {
    inner: Mutex<DemandInner>,
}

#[derive(Default)]
struct DemandInner {
    /// data plane -> last sync.
    seen: HashMap<String, Instant>,
    demand: HashMap<(String, String), KeyDemand>,
}

struct KeyDemand {
    /// When the key first showed up (since its last idle spell).
    since: Instant,
    /// data plane -> (requests per second, when reported).
    per_dp: HashMap<String, (f64, Instant)>,
}

impl DemandTable {
    /// Record a report and answer with the reporter's share of each key.
    ///
    /// A share follows the data plane's share of the key's recent demand,
    /// so together the data planes admit the plan's rate however the load
    /// is split. Shares are computed at different moments for different
    /// data planes, so a data plane that has not reported on a key since it
    /// appeared is assumed to want the average: otherwise, when load starts,
    /// the first to report would get the whole rate and the sum of shares
    /// would exceed one.
    pub fn sync(&self, r: &DemandReport) -> DemandShares {
        let now = Instant::now();
        let window = (r.window.as_millis().max(1) as f64) / 1000.0;
        let mut guard = self.inner.lock().expect("demand lock");
        let t = &mut *guard;
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
            // Smooth each data plane's rate a little: shares are ratios of
            // noisy 200 ms samples taken at different moments, and noise in
            // a ratio costs admitted requests.
            let sample = d.requests as f64 / window;
            let rate = match kd.per_dp.get(&r.data_plane) {
                Some((prev, at)) if now.duration_since(*at) < PRESENT_FOR => {
                    0.5 * prev + 0.5 * sample
                }
                _ => sample,
            };
            kd.per_dp.insert(r.data_plane.clone(), (rate, now));
            kd.per_dp
                .retain(|_, (_, at)| now.duration_since(*at) < QUIET_AFTER);
            let known: Vec<f64> = kd.per_dp.values().map(|(rate, _)| *rate).collect();
            let mean = known.iter().sum::<f64>() / known.len().max(1) as f64;
            // Present data planes that have not spoken about this key since
            // it appeared count at the mean; those that synced since without
            // mentioning it want nothing.
            let unknown = t
                .seen
                .iter()
                .filter(|(dp, at)| {
                    !kd.per_dp.contains_key(*dp)
                        && **at <= kd.since
                        // Syncs come every 200 ms: one silent for longer has
                        // probably stopped, and must not hold a share.
                        && now.duration_since(**at) < QUIET_AFTER
                })
                .count();
            let total: f64 = known.iter().sum::<f64>() + mean * unknown as f64;
            let mine = kd.per_dp.get(&r.data_plane).map_or(0.0, |(rate, _)| *rate);
            let share = if total > 0.0 {
                mine / total
            } else {
                1.0 / (kd.per_dp.len() + unknown).max(1) as f64
            };
            shares.push(Share {
                key: d.key.clone(),
                plan: d.plan.clone(),
                share,
            });
        }
        // Forget keys nobody has asked for in a while.
        if t.demand.len() > 10_000 {
            t.demand.retain(|_, kd| {
                kd.per_dp
                    .values()
                    .any(|(_, at)| now.duration_since(*at) < PRESENT_FOR)
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
