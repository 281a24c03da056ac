//! Usage across the cluster: metered batches and quota leases go through
//! Raft; throttle demand is shared through the leader's in-memory
//! `DemandTable` (it is recomputed every few hundred milliseconds, so it
//! needs no durability).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tollgate_model::usage::{self, Day, UsageItem};
use tollgate_model::{Resource, ResourceKind};
use tollgate_proto::usage_client::UsageClient;
use tollgate_proto::{
    DemandReport, DemandShares, LeaseReply, LeaseRequest, ReleaseReply, ReleaseRequest, Share,
    UsageAck, UsageBatch,
};
use tonic::{Request, Response, Status};

use crate::service::{ApiError, ControlPlane, Result};
use crate::state::Command;

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
        let window = (r.window_ms.max(1) as f64) / 1000.0;
        let mut guard = self.inner.lock().expect("demand lock");
        let t = &mut *guard;
        t.seen.insert(r.data_plane.clone(), now);
        t.seen.retain(|_, at| now.duration_since(*at) < PRESENT_FOR);
        let present = t.seen.len().max(1);
        let mut shares = Vec::with_capacity(r.items.len());
        for d in &r.items {
            let k = (d.key_id.clone(), d.plan_id.clone());
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
                key_id: d.key_id.clone(),
                plan_id: d.plan_id.clone(),
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

pub struct UsageService {
    pub cp: Arc<ControlPlane>,
}

fn status(e: ApiError) -> Status {
    e.into()
}

#[tonic::async_trait]
impl tollgate_proto::usage_server::Usage for UsageService {
    async fn report(
        &self,
        req: Request<UsageBatch>,
    ) -> std::result::Result<Response<UsageAck>, Status> {
        let b = req.into_inner();
        let items = b
            .items
            .into_iter()
            .filter(|i| i.count > 0)
            .map(|i| UsageItem {
                key: i.key_id,
                plan: i.plan_id,
                day: i.day,
                count: i.count,
            })
            .collect();
        let (revision, _) = self
            .cp
            .write(Command::RecordUsage {
                reporter: b.data_plane,
                epoch: b.epoch,
                seq: b.seq,
                items,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(UsageAck { revision }))
    }

    async fn lease(
        &self,
        req: Request<LeaseRequest>,
    ) -> std::result::Result<Response<LeaseReply>, Status> {
        let r = req.into_inner();
        // Near the end of a quota, hand out small chunks so that what sits
        // unused on the data planes stays small: at most half of what is
        // left, split among the data planes present.
        let left = self.cp.shared.read(|s| {
            s.quota(&r.key_id, &r.plan_id, r.day)
                .map(|(limit, leased, _)| limit.saturating_sub(leased))
        });
        let Some(left) = left else {
            return Err(Status::invalid_argument(format!(
                "key {:?} has no quota under plan {:?}",
                r.key_id, r.plan_id
            )));
        };
        let present = self.cp.demand.present().max(1) as u64;
        let cap = (left / (2 * present)).max(1);
        let (_, _, granted) = self
            .cp
            .write_result(Command::LeaseQuota {
                key: r.key_id.clone(),
                plan: r.plan_id.clone(),
                day: r.day,
                want: r.want.min(cap),
            })
            .await
            .map_err(status)?;
        let period = self.cp.shared.read(|s| {
            match s
                .get(ResourceKind::UsagePlan, &r.plan_id)
                .map(|st| &st.resource)
            {
                Some(Resource::UsagePlan(p)) => p.quota.as_ref().map(|q| q.period),
                _ => None,
            }
        });
        let (start, end) = period.map_or((r.day, r.day + 1), |p| {
            (usage::period_start(p, r.day), usage::period_end(p, r.day))
        });
        Ok(Response::new(LeaseReply {
            granted,
            period_start: start,
            period_end: end,
        }))
    }

    async fn release(
        &self,
        req: Request<ReleaseRequest>,
    ) -> std::result::Result<Response<ReleaseReply>, Status> {
        let r = req.into_inner();
        self.cp
            .write(Command::ReturnQuota {
                key: r.key_id,
                plan: r.plan_id,
                period: r.period_start,
                amount: r.amount,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(ReleaseReply {}))
    }

    async fn sync(
        &self,
        req: Request<DemandReport>,
    ) -> std::result::Result<Response<DemandShares>, Status> {
        let report = req.into_inner();
        if self.cp.raft.current_leader().await == Some(self.cp.id) {
            return Ok(Response::new(self.cp.demand.sync(&report)));
        }
        let leader = self.cp.leader_node().await.map_err(status)?;
        let mut client = UsageClient::new(self.cp.channels.get(&leader.grpc_addr));
        let mut fwd = Request::new(report);
        fwd.set_timeout(Duration::from_millis(500));
        client.sync(fwd).await
    }
}

/// `[[used, remaining], …]` per day, `remaining` null without a quota.
pub type DailyUsage = Vec<(u64, Option<u64>)>;

#[derive(Debug, Serialize)]
pub struct ExportRow {
    pub tenant: String,
    pub key_id: String,
    pub plan_id: String,
    pub date: String,
    pub requests: u64,
}

impl ControlPlane {
    /// Daily usage of one key under one plan over `[start, end)`, with what
    /// was left of the quota at the end of each day.
    fn daily(&self, key: &str, plan: &str, start: Day, end: Day) -> DailyUsage {
        self.shared.read(|s| {
            let quota = match s.get(ResourceKind::UsagePlan, plan).map(|st| &st.resource) {
                Some(Resource::UsagePlan(p)) => p.quota,
                _ => None,
            };
            // Usage from the start of the first period, for running totals.
            let from = quota
                .as_ref()
                .map_or(start, |q| usage::period_start(q.period, start));
            let used: BTreeMap<Day, u64> = s
                .used(Some(plan), Some(key), from, end)
                .into_iter()
                .map(|(_, _, d, n)| (d, n))
                .collect();
            (start..end)
                .map(|day| {
                    let today = used.get(&day).copied().unwrap_or(0);
                    let remaining = quota.as_ref().map(|q| {
                        let p0 = usage::period_start(q.period, day);
                        let so_far: u64 = used.range(p0..=day).map(|(_, n)| n).sum();
                        let (limit, _, _) = s.quota(key, plan, day).unwrap_or((q.limit, 0, p0));
                        limit.saturating_sub(so_far)
                    });
                    (today, remaining)
                })
                .collect()
        })
    }

    /// `GET /v1/usage-plans/{id}/usage`: every key on the plan (or one).
    pub async fn plan_usage(
        &self,
        plan: &str,
        start: Day,
        end: Day,
        key: Option<&str>,
    ) -> Result<BTreeMap<String, DailyUsage>> {
        self.read_barrier(false).await?;
        if self
            .shared
            .read(|s| s.get(ResourceKind::UsagePlan, plan).is_none())
        {
            return Err(ApiError::not_found(ResourceKind::UsagePlan, plan));
        }
        let mut keys: Vec<String> = self.shared.read(|s| {
            let mut ks: Vec<String> = s
                .list(ResourceKind::ApiKey)
                .filter_map(|st| match &st.resource {
                    Resource::ApiKey(k) if k.plans.iter().any(|p| p == plan) => Some(k.id.clone()),
                    _ => None,
                })
                .collect();
            // Keys moved off the plan still show the usage they had on it.
            ks.extend(
                s.used(Some(plan), None, start, end)
                    .into_iter()
                    .map(|(k, ..)| k),
            );
            ks
        });
        keys.sort();
        keys.dedup();
        if let Some(k) = key {
            keys.retain(|x| x == k);
        }
        Ok(keys
            .into_iter()
            .map(|k| {
                let d = self.daily(&k, plan, start, end);
                (k, d)
            })
            .collect())
    }

    /// `GET /v1/keys/{id}/usage`: the key under each of its plans.
    pub async fn key_usage(
        &self,
        key: &str,
        start: Day,
        end: Day,
    ) -> Result<BTreeMap<String, DailyUsage>> {
        self.read_barrier(false).await?;
        let plans = self.shared.read(|s| {
            let Some(Resource::ApiKey(k)) = s.get(ResourceKind::ApiKey, key).map(|st| &st.resource)
            else {
                return None;
            };
            let mut ps = k.plans.clone();
            ps.extend(
                s.used(None, Some(key), start, end)
                    .into_iter()
                    .map(|(_, p, ..)| p),
            );
            ps.sort();
            ps.dedup();
            Some(ps)
        });
        let plans = plans.ok_or_else(|| ApiError::not_found(ResourceKind::ApiKey, key))?;
        Ok(plans
            .into_iter()
            .map(|p| {
                let d = self.daily(key, &p, start, end);
                (p, d)
            })
            .collect())
    }

    /// `GET /v1/usage/export`: one row per tenant, key, plan and day.
    pub async fn usage_export(&self, start: Day, end: Day) -> Result<Vec<ExportRow>> {
        self.read_barrier(false).await?;
        Ok(self.shared.read(|s| {
            s.used(None, None, start, end)
                .into_iter()
                .map(|(key, plan, day, n)| ExportRow {
                    tenant: match s.get(ResourceKind::ApiKey, &key).map(|st| &st.resource) {
                        Some(Resource::ApiKey(k)) => k.tenant.clone(),
                        _ => String::new(),
                    },
                    key_id: key,
                    plan_id: plan,
                    date: usage::format_day(day),
                    requests: n,
                })
                .collect()
        }))
    }

    /// `POST /v1/keys/{id}/quota-adjustments`.
    pub async fn adjust_quota(&self, key: &str, plan: &str, amount: u64) -> Result<(u64, Day)> {
        let day = usage::today();
        let (rev, _, _) = self
            .write_result(Command::AdjustQuota {
                key: key.into(),
                plan: plan.into(),
                day,
                amount,
            })
            .await?;
        let period = self
            .shared
            .read(|s| s.quota(key, plan, day).map_or(day, |(_, _, p)| p));
        Ok((rev, period))
    }
}
