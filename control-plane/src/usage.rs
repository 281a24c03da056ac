//! Usage across the cluster, in the service layer's terms: metered batches
//! and quota leases go through Raft; usage reads and the export. The gRPC
//! door for data planes (`Usage`) is in `grpc`; throttle demand is shared
//! through `demand`.

use std::collections::BTreeMap;

use serde::Serialize;
use tollgate_model::metering::{Lease, LeaseRequest, Release, UsageReport};
use tollgate_model::usage::{self, Day};
use tollgate_model::{Resource, ResourceKind};

use crate::service::{ApiError, ControlPlane, Result};
use crate::state::Command;

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
    /// Apply a data plane's metered batch (once per reporter, epoch and
    /// seq). Returns the revision.
    pub async fn record_usage(&self, report: UsageReport) -> Result<u64> {
        let items = report.items.into_iter().filter(|i| i.count > 0).collect();
        let (revision, _) = self
            .write(Command::RecordUsage {
                reporter: report.data_plane,
                epoch: report.epoch,
                seq: report.seq,
                items,
            })
            .await?;
        Ok(revision)
    }

    /// Lease a chunk of a key's quota to a data plane.
    pub async fn lease_quota(&self, r: LeaseRequest) -> Result<Lease> {
        // Near the end of a quota, hand out small chunks so that what sits
        // unused on the data planes stays small: at most half of what is
        // left, split among the data planes present.
        let left = self.shared.read(|s| {
            s.quota(&r.key, &r.plan, r.day)
                .map(|(limit, leased, _)| limit.saturating_sub(leased))
        });
        let Some(left) = left else {
            return Err(ApiError::InvalidArgument(format!(
                "key {:?} has no quota under plan {:?}",
                r.key, r.plan
            )));
        };
        let present = self.demand.present().max(1) as u64;
        let cap = (left / (2 * present)).max(1);
        let (_, _, granted) = self
            .write_result(Command::LeaseQuota {
                key: r.key.clone(),
                plan: r.plan.clone(),
                day: r.day,
                want: r.want.min(cap),
            })
            .await?;
        let period = self.shared.read(|s| {
            match s
                .get(ResourceKind::UsagePlan, &r.plan)
                .map(|st| &st.resource)
            {
                Some(Resource::UsagePlan(p)) => p.quota.as_ref().map(|q| q.period),
                _ => None,
            }
        });
        let (period_start, period_end) = period.map_or((r.day, r.day + 1), |p| {
            (usage::period_start(p, r.day), usage::period_end(p, r.day))
        });
        Ok(Lease {
            granted,
            period_start,
            period_end,
        })
    }

    /// Take back a lease's unused units.
    pub async fn release_quota(&self, r: Release) -> Result<()> {
        self.write(Command::ReturnQuota {
            key: r.key,
            plan: r.plan,
            period: r.period_start,
            amount: r.amount,
        })
        .await?;
        Ok(())
    }

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
