//! Usage plans on the data plane: throttling, quotas and metering.
//!
//! - **Throttle**: a GCRA bucket per (key, plan), decided locally with no
//!   network call. The bucket runs at `rate × share`, where `share` is this
//!   data plane's part of the key's recent demand across the cluster, as
//!   the control plane's leader computes it from every data plane's reports
//!   (`sync` loop, every 200 ms). A share is a grant that holds for
//!   `SHARE_GRANT_FOR` from the sync that asked for it; the leader never
//!   grants more than the others leave, so the shares in force sum to at
//!   most one (the reasoning is in the control plane's `demand`). Without a
//!   grant (a new key, or the control plane gone for 2 s) the share is
//!   `1 / N` (N: the data planes last known): never fail open.
//! - **Quota**: leases. A data plane serves a key's quota from a chunk it
//!   took from the control plane (a Raft write); when the chunk is used up
//!   it takes another. The control plane never grants more than is left, so
//!   the cluster never admits more than the limit; a data plane that dies
//!   loses its chunk (under-admits). Unused chunks go back on shutdown.
//! - **Metering**: every admitted request is counted per (key, plan, UTC
//!   day), in an atomic counter per (key, plan) that each report tick
//!   empties into the next batch. WebSocket messages (which take throttle
//!   and quota units as requests do) and connection-minutes go straight to
//!   the pending batch: fewer than requests, they can afford its lock.
//!   Batches are tagged (data plane, boot epoch, sequence), one in flight
//!   at a time, retried until acknowledged, so a batch is never counted
//!   twice and never skipped. Graceful shutdown flushes; a crash loses at
//!   most one report interval.
//! - **Memory**: a sweep each minute forgets the (key, plan) pairs no
//!   request used since the last one, once forgetting changes nothing
//!   (`evict_idle`); their unused quota units go back.

pub mod gcra;
pub mod link;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::FastHash;
use tokio_util::sync::CancellationToken;
use tollgate_model::docs::UsagePlan;
use tollgate_model::metering::{
    Demand, DemandReport, LeaseRequest, Release, UsageReport, SHARE_GRANT_FOR,
};
use tollgate_model::usage::{self, Day, UsageCounts, UsageItem};

use link::{ControlPlaneLink, LinkError};
use state::{KeyPlan, KeyPlanIds, KeyPlanState, Throttle};

const SYNC_EVERY: Duration = Duration::from_millis(200);
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Without a successful sync for this long, the cluster view is stale.
const SYNC_STALE: Duration = Duration::from_secs(1);
/// After a grant that shrank or was capped, sync again this soon (the
/// others' news reaches the leader meanwhile), at most `RESYNCS` times a
/// round.
const RESYNC_AFTER: Duration = Duration::from_millis(15);
const RESYNCS: usize = 3;
const LEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// After the control plane said a quota is used up, ask again after this.
const EXHAUSTED_RECHECK: Duration = Duration::from_secs(1);
/// How often pairs no request used since the last sweep are forgotten.
const IDLE_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Syncs in a row without demand after which a pair's demand is no longer
/// reported.
const IDLE_SYNCS_REPORTED: u32 = 10;

/// What the response should say about the throttle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    pub reset_s: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PlanDenied {
    Throttled { info: RateInfo, retry_after_s: u64 },
    QuotaExceeded,
}

struct QuotaSlot {
    /// The plan's quota when the slot was made: a changed quota starts a
    /// new slot (its leftover goes back), so a new limit applies at once.
    quota: tollgate_model::docs::Quota,
    period_start: Day,
    period_end: Day,
    left: AtomicI64,
    last_chunk: AtomicU64,
    refill: tokio::sync::Mutex<()>,
    /// Monotonic ms (since the enforcer's epoch) until which the quota is
    /// known to be used up.
    exhausted_until: AtomicU64,
}

impl QuotaSlot {
    /// Take one unit from the chunk in hand, if any is left.
    fn take_one(&self) -> bool {
        let mut left = self.left.load(Ordering::Acquire);
        while left > 0 {
            match self.left.compare_exchange_weak(
                left,
                left - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => left = actual,
            }
        }
        false
    }
}

pub struct PlanEnforcer {
    node_id: String,
    /// Distinguishes this boot's usage batches from an earlier boot's.
    epoch: u64,
    link: ControlPlaneLink,
    started: Instant,
    /// Throttle, share, quota slot and metering counter per (key, plan).
    states: DashMap<KeyPlan, Arc<KeyPlanState>, FastHash>,
    /// Data planes in the cluster, as last heard.
    data_planes: AtomicU32,
    /// ms since `started` of the last successful sync (0: never).
    last_sync_ms: AtomicU64,
    /// Metered counts moved out of the per-(key, plan) counters, and
    /// WebSocket messages and minutes, waiting for the next batch.
    pending: Mutex<HashMap<(String, String, Day), UsageCounts, FastHash>>,
    /// (seq, batch) sent but not yet acknowledged.
    in_flight: tokio::sync::Mutex<(u64, Option<UsageReport>)>,
    /// Requests and WebSocket messages refused by the throttle or the
    /// quota (not billed).
    pub throttled: AtomicU64,
    pub over_quota: AtomicU64,
    stopped: AtomicBool,
}

impl PlanEnforcer {
    pub fn new(node_id: &str, link: ControlPlaneLink) -> Arc<Self> {
        Arc::new(Self {
            node_id: node_id.to_string(),
            epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            link,
            started: Instant::now(),
            states: DashMap::default(),
            data_planes: AtomicU32::new(1),
            last_sync_ms: AtomicU64::new(0),
            pending: Mutex::default(),
            in_flight: tokio::sync::Mutex::new((0, None)),
            throttled: AtomicU64::new(0),
            over_quota: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        })
    }

    /// Data planes in the cluster as last heard, and whether the last sync
    /// is recent enough to trust the shares.
    pub fn cluster_view(&self) -> (u32, bool) {
        self.cluster_view_at(self.now_ms())
    }

    fn cluster_view_at(&self, now_ms: u64) -> (u32, bool) {
        let last = self.last_sync_ms.load(Ordering::Acquire);
        let fresh = last > 0 && now_ms - last < SYNC_STALE.as_millis() as u64;
        (self.data_planes.load(Ordering::Acquire), fresh)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// The share of `key`'s rate under `plan` this data plane admits at now.
    pub fn share_in_force(&self, key: &str, plan: &str) -> f64 {
        self.share(&self.state(key, plan), self.now_ms())
    }

    /// This data plane's part of a key's rate: its grant while it holds,
    /// else `1 / N`.
    fn share(&self, state: &KeyPlanState, now_ms: u64) -> f64 {
        state
            .share(now_ms)
            .unwrap_or_else(|| 1.0 / f64::from(self.data_planes.load(Ordering::Acquire).max(1)))
    }

    /// The state of (key, plan), made on first use. The lookup borrows the
    /// ids; only a new pair allocates.
    fn state(&self, key: &str, plan: &str) -> Arc<KeyPlanState> {
        if let Some(s) = self.states.get(&(key, plan) as &dyn KeyPlanIds) {
            return s.clone();
        }
        let kp = KeyPlan {
            key: key.to_string(),
            plan: plan.to_string(),
        };
        self.states.entry(kp).or_default().clone()
    }

    /// Run the plan's checks for one request of `key`; on success the
    /// request is metered.
    pub async fn admit(&self, key: &str, plan: &UsagePlan) -> Result<Option<RateInfo>, PlanDenied> {
        self.admit_under(key, plan, plan.throttle.as_ref()).await
    }

    /// `admit` with `throttle` in place of the plan's (a stage's default
    /// for a plan that sets none).
    pub async fn admit_under(
        &self,
        key: &str,
        plan: &UsagePlan,
        throttle: Option<&tollgate_model::docs::Throttle>,
    ) -> Result<Option<RateInfo>, PlanDenied> {
        let state = self.state(key, &plan.id);
        let (info, today) = self.take_unit(&state, key, plan, throttle).await?;
        if let Some((day, count)) = state.metered.add(today) {
            self.add_pending(key, &plan.id, day, UsageCounts::requests(count));
        }
        Ok(info)
    }

    /// Run the plan's checks for one WebSocket message of `key`, in either
    /// direction: one unit of the throttle and the quota, as a request
    /// takes. On success the message is metered as `units` (its
    /// ceil(bytes / 32 KiB), at least 1).
    pub async fn admit_message(
        &self,
        key: &str,
        plan: &UsagePlan,
        throttle: Option<&tollgate_model::docs::Throttle>,
        units: u64,
    ) -> Result<Option<RateInfo>, PlanDenied> {
        let state = self.state(key, &plan.id);
        let (info, today) = self.take_unit(&state, key, plan, throttle).await?;
        let counts = UsageCounts {
            messages: units.max(1),
            message_count: 1,
            ..UsageCounts::default()
        };
        self.add_pending(key, &plan.id, today, counts);
        Ok(info)
    }

    /// Charge a closed WebSocket connection's minutes (ceil(seconds open /
    /// 60)) to today (UTC), reported in the next batch.
    pub fn meter_connection_minutes(&self, key: &str, plan: &str, minutes: u64) {
        if minutes > 0 {
            let counts = UsageCounts {
                connection_minutes: minutes,
                ..UsageCounts::default()
            };
            self.add_pending(key, plan, usage::today(), counts);
        }
    }

    /// Take one unit of `state`'s throttle and quota (what a request and a
    /// message each cost). Returns the throttle's state for the answer,
    /// and the UTC day the unit was taken on.
    async fn take_unit(
        &self,
        state: &KeyPlanState,
        key: &str,
        plan: &UsagePlan,
        throttle: Option<&tollgate_model::docs::Throttle>,
    ) -> Result<(Option<RateInfo>, Day), PlanDenied> {
        // Read first: a store on every request would pull the line away
        // from the other workers serving this key.
        if !state.used.load(Ordering::Relaxed) {
            state.used.store(true, Ordering::Relaxed);
        }
        let info = match throttle {
            Some(t) => Some(self.check_throttle(state, t)?),
            None => None,
        };
        let today = usage::today();
        if plan.quota.is_some() {
            if let Err(e) = self.take_quota(state, key, plan, today).await {
                self.over_quota.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok((info, today))
    }

    /// Take a unit of the GCRA bucket at `rate × share`.
    fn check_throttle(
        &self,
        state: &KeyPlanState,
        t: &tollgate_model::docs::Throttle,
    ) -> Result<RateInfo, PlanDenied> {
        // One clock read for the bucket and the share.
        let now = self.started.elapsed();
        let throttle = state.throttle.get_or_init(Throttle::default);
        throttle.demand.fetch_add(1, Ordering::Relaxed);
        let share = self
            .share(state, now.as_millis() as u64 + 1)
            .clamp(0.001, 1.0);
        let burst = (f64::from(t.burst) * share).max(1.0);
        let v = throttle.bucket_for(t.rate, t.burst).check(
            now.as_nanos() as u64,
            t.rate * share,
            burst,
        );
        let rate_info = RateInfo {
            limit: u64::from(t.burst.max(1)),
            remaining: v.remaining,
            reset_s: v.reset_ns.div_ceil(1_000_000_000),
        };
        if !v.allowed {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(PlanDenied::Throttled {
                info: rate_info,
                retry_after_s: v.retry_after_ns.div_ceil(1_000_000_000).max(1),
            });
        }
        Ok(rate_info)
    }

    fn add_pending(&self, key: &str, plan: &str, day: Day, counts: UsageCounts) {
        *self
            .pending
            .lock()
            .expect("meter lock")
            .entry((key.to_string(), plan.to_string(), day))
            .or_default() += counts;
    }

    /// Move every (key, plan)'s metered count into `pending`.
    fn sweep_metered(&self) {
        // Taken first, merged after: `pending`'s lock is never held while
        // the map's shards are.
        let taken: Vec<(KeyPlan, Day, u64)> = self
            .states
            .iter()
            .filter_map(|e| {
                let (day, count) = e.value().metered.take()?;
                Some((e.key().clone(), day, count))
            })
            .collect();
        if taken.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().expect("meter lock");
        for (KeyPlan { key, plan }, day, count) in taken {
            *pending.entry((key, plan, day)).or_default() += UsageCounts::requests(count);
        }
    }

    /// Take one unit of the plan's quota: from the chunk in hand, or from
    /// a new chunk leased for it.
    async fn take_quota(
        &self,
        state: &KeyPlanState,
        key: &str,
        plan: &UsagePlan,
        today: Day,
    ) -> Result<(), PlanDenied> {
        let slot = self.quota_slot(state, key, plan, today);
        if slot.take_one() {
            return Ok(());
        }
        // Boxed: the lease fetch is a large future, and every request's
        // future would otherwise be sized (and moved) for it; only a
        // request that finds the chunk empty makes it.
        Box::pin(self.refill_and_take(&slot, key, &plan.id, today)).await
    }

    /// The slot of the plan's quota for `today`'s period; a changed quota
    /// or a new period starts a new slot.
    fn quota_slot(
        &self,
        state: &KeyPlanState,
        key: &str,
        plan: &UsagePlan,
        today: Day,
    ) -> Arc<QuotaSlot> {
        let q = plan.quota.as_ref().expect("checked");
        match state.quota.load_full() {
            Some(s) if s.quota == *q && s.period_start <= today && today < s.period_end => s,
            old => {
                if let Some(old) = old.filter(|o| o.period_start <= today && today < o.period_end) {
                    self.give_back(key, &plan.id, &old);
                }
                let s = Arc::new(QuotaSlot {
                    quota: *q,
                    period_start: usage::period_start(q.period, today),
                    period_end: usage::period_end(q.period, today),
                    left: AtomicI64::new(0),
                    last_chunk: AtomicU64::new(0),
                    refill: tokio::sync::Mutex::new(()),
                    exhausted_until: AtomicU64::new(0),
                });
                state.quota.store(Some(s.clone()));
                s
            }
        }
    }

    /// Lease chunks for `slot` until a unit is taken or the quota is known
    /// to be used up.
    async fn refill_and_take(
        &self,
        slot: &QuotaSlot,
        key: &str,
        plan: &str,
        today: Day,
    ) -> Result<(), PlanDenied> {
        loop {
            if slot.take_one() {
                return Ok(());
            }
            if self.now_ms() < slot.exhausted_until.load(Ordering::Acquire) {
                return Err(PlanDenied::QuotaExceeded);
            }
            // One lease request at a time per key; the others wait for it.
            let _refilling = slot.refill.lock().await;
            if slot.left.load(Ordering::Acquire) > 0 {
                continue;
            }
            if self.now_ms() < slot.exhausted_until.load(Ordering::Acquire) {
                return Err(PlanDenied::QuotaExceeded);
            }
            let last = slot.last_chunk.load(Ordering::Relaxed);
            let want = (last * 2).clamp(10, 10_000);
            match self.lease(key, plan, today, want).await {
                Some(granted) if granted > 0 => {
                    slot.last_chunk.store(granted, Ordering::Relaxed);
                    slot.left.fetch_add(granted as i64, Ordering::AcqRel);
                }
                // Used up, or no control plane to ask: refuse (never fail open).
                _ => {
                    slot.exhausted_until.store(
                        self.now_ms() + EXHAUSTED_RECHECK.as_millis() as u64,
                        Ordering::Release,
                    );
                    return Err(PlanDenied::QuotaExceeded);
                }
            }
        }
    }

    /// Return a replaced slot's unused units in the background.
    fn give_back(&self, key: &str, plan: &str, slot: &QuotaSlot) {
        let left = slot.left.swap(0, Ordering::AcqRel);
        if left <= 0 {
            return;
        }
        self.link.release_in_background(Release {
            key: key.to_string(),
            plan: plan.to_string(),
            period_start: slot.period_start,
            amount: left as u64,
        });
    }

    async fn lease(&self, key: &str, plan: &str, day: Day, want: u64) -> Option<u64> {
        for _ in 0..2 {
            let req = LeaseRequest {
                data_plane: self.node_id.clone(),
                key: key.to_string(),
                plan: plan.to_string(),
                day,
                want,
            };
            match self.link.lease(req, LEASE_TIMEOUT).await {
                Ok(lease) => return Some(lease.granted),
                Err(LinkError::NoControlPlane) => return None,
                Err(LinkError::Refused(reason)) => {
                    tracing::warn!(key_id = %key, plan = %plan, reason = %reason, "quota lease refused");
                    return Some(0);
                }
                Err(LinkError::Failed(reason)) => {
                    tracing::debug!(reason = %reason, "quota lease failed; trying another node");
                    self.link.failed();
                }
            }
        }
        None
    }

    /// Share demand with the control plane and learn this data plane's
    /// share of each key's rate. A zero `window` only says what this data
    /// plane holds (the demand waits for the next sync). Returns whether to
    /// sync again soon: a grant came back smaller than the share held (the
    /// leader keeps the larger one reserved until it hears the smaller one
    /// is in force, so saying so frees it for those that want it), or
    /// capped (this data plane wants what others are giving up).
    async fn sync_once(&self, window: Duration) -> bool {
        let sent_ms = self.now_ms();
        let items: Vec<Demand> = self
            .states
            .iter()
            .filter_map(|e| {
                let t = e.value().throttle.get()?;
                if window.is_zero() {
                    return (t.idle_syncs.load(Ordering::Relaxed) <= IDLE_SYNCS_REPORTED).then(
                        || Demand {
                            key: e.key().key.clone(),
                            plan: e.key().plan.clone(),
                            requests: 0,
                            held: self.share(e.value(), sent_ms),
                        },
                    );
                }
                let n = t.demand.swap(0, Ordering::AcqRel);
                let idle = if n > 0 {
                    t.idle_syncs.store(0, Ordering::Relaxed);
                    0
                } else {
                    t.idle_syncs.fetch_add(1, Ordering::Relaxed) + 1
                };
                (idle <= IDLE_SYNCS_REPORTED).then(|| Demand {
                    key: e.key().key.clone(),
                    plan: e.key().plan.clone(),
                    requests: n,
                    held: self.share(e.value(), sent_ms),
                })
            })
            .collect();
        let report = DemandReport {
            data_plane: self.node_id.clone(),
            window,
            items,
        };
        match self.link.sync(report, Duration::from_millis(500)).await {
            Ok(r) => {
                self.data_planes
                    .store(r.data_planes.max(1), Ordering::Release);
                let until = sent_ms + SHARE_GRANT_FOR.as_millis() as u64;
                let mut again = false;
                for s in r.shares {
                    let state = self.state(&s.key, &s.plan);
                    let held = self.share(&state, sent_ms);
                    tracing::trace!(key = %s.key, plan = %s.plan, held, granted = s.share, capped = s.capped, "throttle share");
                    again |= s.capped || s.share < held - 1e-3;
                    state.set_share(s.share, until);
                }
                self.last_sync_ms.store(self.now_ms(), Ordering::Release);
                again
            }
            Err(LinkError::NoControlPlane) => false,
            Err(e) => {
                tracing::debug!(reason = %e, "usage sync failed");
                self.link.failed();
                false
            }
        }
    }

    /// Forget the (key, plan) pairs no request used since the last sweep,
    /// where forgetting changes nothing: no request holds the state,
    /// nothing metered is left to report, and a throttle's demand is no
    /// longer reported and its bucket is full again (a new state starts
    /// full). Unused quota units go back to the control plane. Without
    /// this the map would keep every key ever seen.
    fn evict_idle(&self) {
        let now_ns = self.started.elapsed().as_nanos() as u64;
        let mut returned = Vec::new();
        // `retain` holds each shard's write lock while it decides: no
        // request can take a state it is about to drop.
        self.states.retain(|pair, state| {
            let used = state.used.swap(false, Ordering::Relaxed);
            if used || Arc::strong_count(state) > 1 || !state.metered.is_empty() {
                return true;
            }
            if let Some(t) = state.throttle.get() {
                if t.idle_syncs.load(Ordering::Relaxed) <= IDLE_SYNCS_REPORTED
                    || !t.bucket.is_full(now_ns)
                {
                    return true;
                }
            }
            if let Some(slot) = state.quota.load_full() {
                returned.push((pair.clone(), slot));
            }
            false
        });
        for (KeyPlan { key, plan }, slot) in returned {
            self.give_back(&key, &plan, &slot);
        }
    }

    /// Send the batch in flight, or the next one. Returns true when nothing
    /// is left unreported.
    async fn report_once(&self) -> bool {
        let mut in_flight = self.in_flight.lock().await;
        // Every tick, so that the counters hold about one interval's counts.
        self.sweep_metered();
        if in_flight.1.is_none() {
            let pending = std::mem::take(&mut *self.pending.lock().expect("meter lock"));
            if pending.is_empty() {
                return true;
            }
            in_flight.0 += 1;
            in_flight.1 = Some(UsageReport {
                data_plane: self.node_id.clone(),
                epoch: self.epoch,
                seq: in_flight.0,
                items: pending
                    .into_iter()
                    .map(|((key, plan, day), counts)| UsageItem {
                        key,
                        plan,
                        day,
                        counts,
                    })
                    .collect(),
            });
        }
        let batch = in_flight.1.as_ref().expect("set above");
        match self.link.report(batch, Duration::from_secs(3)).await {
            Ok(()) => {
                in_flight.1 = None;
                self.sweep_metered();
                self.pending.lock().expect("meter lock").is_empty()
            }
            Err(LinkError::NoControlPlane) => false,
            Err(e) => {
                tracing::debug!(reason = %e, "usage report failed; will retry the same batch");
                self.link.failed();
                false
            }
        }
    }

    /// The sync and report loops, until `shutdown`; then flush usage and
    /// give unused quota back.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut sync = tokio::time::interval(SYNC_EVERY);
        let mut report = tokio::time::interval(REPORT_EVERY);
        let mut idle_sweep = tokio::time::interval(IDLE_SWEEP_EVERY);
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sync = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sync.tick() => {
                    let window = last_sync.elapsed();
                    last_sync = Instant::now();
                    let mut again = self.sync_once(window).await;
                    for _ in 0..RESYNCS {
                        if !again {
                            break;
                        }
                        tokio::time::sleep(RESYNC_AFTER).await;
                        again = self.sync_once(Duration::ZERO).await;
                    }
                }
                _ = report.tick() => { self.report_once().await; }
                _ = idle_sweep.tick() => self.evict_idle(),
            }
        }
        self.stopped.store(true, Ordering::Release);
        self.flush().await;
    }

    /// Report everything metered and return unused quota (graceful stop).
    pub async fn flush(&self) {
        for _ in 0..5 {
            if self.report_once().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let slots: Vec<(KeyPlan, Arc<QuotaSlot>)> = self
            .states
            .iter()
            .filter_map(|e| Some((e.key().clone(), e.value().quota.load_full()?)))
            .collect();
        for (KeyPlan { key, plan }, slot) in slots {
            let left = slot.left.swap(0, Ordering::AcqRel);
            if left <= 0 {
                continue;
            }
            let _ = self
                .link
                .release(Release {
                    key,
                    plan,
                    period_start: slot.period_start,
                    amount: left as u64,
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(id: &str, throttle: Option<(f64, u32)>) -> UsagePlan {
        UsagePlan {
            id: id.to_string(),
            apis: vec!["api".to_string()],
            throttle: throttle.map(|(rate, burst)| tollgate_model::docs::Throttle { rate, burst }),
            quota: None,
            price: None,
        }
    }

    fn known(e: &PlanEnforcer, key: &str, plan: &str) -> bool {
        e.states.contains_key(&(key, plan) as &dyn KeyPlanIds)
    }

    #[tokio::test]
    async fn idle_pairs_are_forgotten_once_forgetting_changes_nothing() {
        // No control plane: syncs and reports fail, which these checks do
        // not need.
        let e = PlanEnforcer::new("dp-1", ControlPlaneLink::new(Vec::new(), "token", None));
        let free = plan("free", None);
        // One request empties this bucket for 1,000 s.
        let slow = plan("slow", Some((0.001, 1)));
        // This one is full again 1 ms after a request.
        let fast = plan("fast", Some((1000.0, 10)));
        e.admit("metered", &free).await.unwrap();
        e.admit("slow", &slow).await.unwrap();
        e.admit("fast", &fast).await.unwrap();
        let held = e.state("held", "free");

        e.evict_idle();
        assert_eq!(e.states.len(), 4, "each was used since the last sweep");
        e.evict_idle();
        assert!(
            known(&e, "metered", "free"),
            "its count is not reported yet"
        );

        e.sweep_metered();
        // One sync takes the demand; then enough without any that it is
        // no longer reported.
        for _ in 0..IDLE_SYNCS_REPORTED + 2 {
            e.sync_once(SYNC_EVERY).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        e.evict_idle();
        assert!(!known(&e, "metered", "free"));
        let today = usage::today();
        let pending = e.pending.lock().unwrap().clone();
        assert_eq!(
            pending.get(&("metered".to_string(), "free".to_string(), today)),
            Some(&UsageCounts::requests(1)),
            "the count went to the next batch before the pair was forgotten"
        );
        assert!(known(&e, "slow", "slow"), "its bucket is not full again");
        assert!(!known(&e, "fast", "fast"), "its bucket is full again");
        assert!(known(&e, "held", "free"), "a request holds it");
        drop(held);
        e.evict_idle();
        assert!(!known(&e, "held", "free"));

        // A pair used again starts over, counted as before.
        e.admit("metered", &free).await.unwrap();
        e.evict_idle();
        assert!(known(&e, "metered", "free"), "used since the last sweep");
    }

    #[tokio::test]
    async fn messages_take_the_units_requests_take() {
        let e = PlanEnforcer::new("dp-1", ControlPlaneLink::new(Vec::new(), "token", None));
        // Burst 3 that refills in 1,000 s: a request and two messages
        // empty the one bucket.
        let ws = plan("ws", Some((0.001, 3)));
        let t = ws.throttle.as_ref();
        e.admit("k", &ws).await.unwrap();
        e.admit_message("k", &ws, t, 1).await.unwrap();
        e.admit_message("k", &ws, t, 1).await.unwrap();
        assert!(matches!(
            e.admit_message("k", &ws, t, 1).await,
            Err(PlanDenied::Throttled { .. })
        ));
        assert!(matches!(
            e.admit("k", &ws).await,
            Err(PlanDenied::Throttled { .. })
        ));

        // Three units of quota in hand and no control plane to lease more.
        let quota = UsagePlan {
            quota: Some(tollgate_model::docs::Quota {
                limit: 100,
                period: tollgate_model::docs::QuotaPeriod::Day,
            }),
            ..plan("metered", None)
        };
        let today = usage::today();
        let slot = e.quota_slot(&e.state("k", "metered"), "k", &quota, today);
        slot.left.store(3, Ordering::Release);
        e.admit("k", &quota).await.unwrap();
        e.admit_message("k", &quota, None, 2).await.unwrap();
        e.admit_message("k", &quota, None, 1).await.unwrap();
        assert_eq!(
            e.admit_message("k", &quota, None, 1).await,
            Err(PlanDenied::QuotaExceeded)
        );
        assert_eq!(e.admit("k", &quota).await, Err(PlanDenied::QuotaExceeded));
        assert_eq!(e.throttled.load(Ordering::Relaxed), 2);
        assert_eq!(e.over_quota.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn messages_and_minutes_ride_in_the_batch() {
        let e = PlanEnforcer::new("dp-1", ControlPlaneLink::new(Vec::new(), "token", None));
        let p = plan("ws", None);
        e.admit("k", &p).await.unwrap();
        e.admit_message("k", &p, None, 3).await.unwrap();
        // A message is never metered as less than one unit.
        e.admit_message("k", &p, None, 0).await.unwrap();
        e.meter_connection_minutes("k", "ws", 4);
        e.meter_connection_minutes("k", "ws", 0);
        e.meter_connection_minutes("other", "ws", 2);
        // No control plane: the batch is made, and stays in flight.
        assert!(!e.report_once().await);
        let today = usage::today();
        let mut items = e.in_flight.lock().await.1.clone().unwrap().items;
        items.sort_by(|a, b| a.key.cmp(&b.key));
        let item = |key: &str, counts| UsageItem {
            key: key.into(),
            plan: "ws".into(),
            day: today,
            counts,
        };
        assert_eq!(
            items,
            vec![
                item(
                    "k",
                    UsageCounts {
                        requests: 1,
                        messages: 4,
                        message_count: 2,
                        connection_minutes: 4,
                    }
                ),
                item(
                    "other",
                    UsageCounts {
                        connection_minutes: 2,
                        ..UsageCounts::default()
                    }
                ),
            ]
        );
        // What comes while a batch is in flight waits for the next one.
        e.meter_connection_minutes("k", "ws", 1);
        assert!(!e.report_once().await);
        assert_eq!(e.in_flight.lock().await.1.as_ref().unwrap().items.len(), 2);
        let pending = e.pending.lock().unwrap().clone();
        assert_eq!(
            pending.get(&("k".to_string(), "ws".to_string(), today)),
            Some(&UsageCounts {
                connection_minutes: 1,
                ..UsageCounts::default()
            })
        );
    }

    #[tokio::test]
    async fn a_throttle_still_reported_keeps_its_pair() {
        let e = PlanEnforcer::new("dp-1", ControlPlaneLink::new(Vec::new(), "token", None));
        let fast = plan("fast", Some((1000.0, 10)));
        e.admit("k", &fast).await.unwrap();
        e.sweep_metered();
        tokio::time::sleep(Duration::from_millis(5)).await;
        e.evict_idle();
        e.evict_idle();
        assert!(
            known(&e, "k", "fast"),
            "its zero demand is still reported, so its share can move elsewhere"
        );
    }
}
