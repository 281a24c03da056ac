//! Usage across the cluster, in the service layer's terms: metered batches
//! and quota leases go through Raft; usage reads and the export. The gRPC
//! door for data planes (`Usage`) is in `grpc`; throttle demand is shared
//! through `demand`.

use std::collections::BTreeMap;

use serde::Serialize;
use tollgate_model::metering::{Lease, LeaseRequest, Release, UsageReport};
use tollgate_model::usage::{self, Day, UsageCounts};
use tollgate_model::{Resource, ResourceKind};

use crate::service::{ApiError, ControlPlane, Result};
use crate::state::{Command, State};

/// `[[used, remaining], …]` per day, `remaining` null without a quota;
/// `used` counts the quota's units (requests and messages together).
pub type DailyUsage = Vec<(u64, Option<u64>)>;

/// One day of a key's usage under a plan, and what was left of the quota
/// at the end of it (`None` without a quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayUsage {
    pub counts: UsageCounts,
    pub remaining: Option<u64>,
}

/// Usage per UTC day, by plan (of one key) or by key (of one plan): the
/// quota's `[used, remaining]`, and the WebSocket measures apart. Every
/// id is in all three maps, at zero where nothing was metered.
#[derive(Debug, Default, PartialEq)]
pub struct UsageByDay {
    pub quota: BTreeMap<String, DailyUsage>,
    /// Metered message units per day.
    pub messages: BTreeMap<String, Vec<u64>>,
    pub connection_minutes: BTreeMap<String, Vec<u64>>,
}

impl FromIterator<(String, Vec<DayUsage>)> for UsageByDay {
    fn from_iter<I: IntoIterator<Item = (String, Vec<DayUsage>)>>(it: I) -> Self {
        let mut out = Self::default();
        for (id, days) in it {
            let each = |f: fn(&DayUsage) -> u64| days.iter().map(f).collect();
            out.messages.insert(id.clone(), each(|d| d.counts.messages));
            out.connection_minutes
                .insert(id.clone(), each(|d| d.counts.connection_minutes));
            let quota = days
                .iter()
                .map(|d| (d.counts.quota_units(), d.remaining))
                .collect();
            out.quota.insert(id, quota);
        }
        out
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportRow {
    pub tenant: String,
    pub key_id: String,
    pub plan_id: String,
    pub date: String,
    /// Requests only: messages have their own column.
    pub requests: u64,
    /// Metered message units.
    pub messages: u64,
    pub connection_minutes: u64,
}

impl ExportRow {
    pub const CSV_HEADER: &'static str =
        "tenant,key_id,plan_id,date,requests,messages,connection_minutes\n";

    /// The row as a CSV line, columns as in `CSV_HEADER`. Ids and dates
    /// hold no commas or quotes, so nothing needs quoting.
    pub fn csv_line(&self) -> String {
        format!(
            "{},{},{},{},{},{},{}\n",
            self.tenant,
            self.key_id,
            self.plan_id,
            self.date,
            self.requests,
            self.messages,
            self.connection_minutes
        )
    }
}

/// Daily usage of one key under one plan over `[start, end)`, with what
/// was left of the quota at the end of each day.
fn daily(s: &State, key: &str, plan: &str, start: Day, end: Day) -> Vec<DayUsage> {
    let quota = match s.get(ResourceKind::UsagePlan, plan).map(|st| &st.resource) {
        Some(Resource::UsagePlan(p)) => p.quota,
        _ => None,
    };
    // Usage from the start of the first period, for running totals.
    let from = quota
        .as_ref()
        .map_or(start, |q| usage::period_start(q.period, start));
    let used: BTreeMap<Day, UsageCounts> = s
        .used(Some(plan), Some(key), from, end)
        .into_iter()
        .map(|i| (i.day, i.counts))
        .collect();
    (start..end)
        .map(|day| {
            let remaining = quota.as_ref().map(|q| {
                let p0 = usage::period_start(q.period, day);
                let so_far: u64 = used.range(p0..=day).map(|(_, c)| c.quota_units()).sum();
                let (limit, _, _) = s.quota(key, plan, day).unwrap_or((q.limit, 0, p0));
                limit.saturating_sub(so_far)
            });
            DayUsage {
                counts: used.get(&day).copied().unwrap_or_default(),
                remaining,
            }
        })
        .collect()
}

impl ControlPlane {
    /// Apply a data plane's metered batch (once per reporter, epoch and
    /// seq). Returns the revision.
    pub async fn record_usage(&self, report: UsageReport) -> Result<u64> {
        let items = report
            .items
            .into_iter()
            .filter(|i| !i.counts.is_zero())
            .collect();
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

    /// `GET /v1/usage-plans/{id}/usage`: every key on the plan (or one).
    pub async fn plan_usage(
        &self,
        plan: &str,
        start: Day,
        end: Day,
        key: Option<&str>,
    ) -> Result<UsageByDay> {
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
                    .map(|i| i.key),
            );
            ks
        });
        keys.sort();
        keys.dedup();
        if let Some(k) = key {
            keys.retain(|x| x == k);
        }
        // One read per key, as apply waits while a read holds the state.
        Ok(keys
            .into_iter()
            .map(|k| {
                let d = self.shared.read(|s| daily(s, &k, plan, start, end));
                (k, d)
            })
            .collect())
    }

    /// `GET /v1/keys/{id}/usage`: the key under each of its plans.
    pub async fn key_usage(&self, key: &str, start: Day, end: Day) -> Result<UsageByDay> {
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
                    .map(|i| i.plan),
            );
            ps.sort();
            ps.dedup();
            Some(ps)
        });
        let plans = plans.ok_or_else(|| ApiError::not_found(ResourceKind::ApiKey, key))?;
        Ok(plans
            .into_iter()
            .map(|p| {
                let d = self.shared.read(|s| daily(s, key, &p, start, end));
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
                .map(|i| ExportRow {
                    tenant: match s.get(ResourceKind::ApiKey, &i.key).map(|st| &st.resource) {
                        Some(Resource::ApiKey(k)) => k.tenant.clone(),
                        _ => String::new(),
                    },
                    key_id: i.key,
                    plan_id: i.plan,
                    date: usage::format_day(i.day),
                    requests: i.counts.requests,
                    messages: i.counts.messages,
                    connection_minutes: i.counts.connection_minutes,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_model::docs::{Quota, QuotaPeriod};
    use tollgate_model::usage::UsageItem;
    use tollgate_model::UsagePlan;

    #[test]
    fn quota_used_counts_requests_and_messages() {
        let mut s = State::default();
        let plan = UsagePlan {
            id: "gold".into(),
            apis: Vec::new(),
            throttle: None,
            quota: Some(Quota {
                limit: 10,
                period: QuotaPeriod::Week,
            }),
            price: None,
        };
        s.apply(1, Command::Put(Resource::UsagePlan(plan)))
            .0
            .unwrap();
        // 1970-01-12 (day 11) is a Monday: days 11 and 12 share a period.
        let items = vec![UsageItem {
            key: "k1".into(),
            plan: "gold".into(),
            day: 11,
            counts: UsageCounts {
                requests: 1,
                messages: 8,
                message_count: 3,
                connection_minutes: 4,
            },
        }];
        let cmd = Command::RecordUsage {
            reporter: "dp-1".into(),
            epoch: 1,
            seq: 1,
            items,
        };
        s.apply(2, cmd).0.unwrap();
        let days = daily(&s, "k1", "gold", 11, 13);
        assert_eq!(days[0].remaining, Some(6));
        assert_eq!(days[1].remaining, Some(6), "the week's units stay used");
        let table: UsageByDay = [("gold".to_string(), days)].into_iter().collect();
        assert_eq!(table.quota["gold"], vec![(4, Some(6)), (0, Some(6))]);
        assert_eq!(table.messages["gold"], vec![8, 0]);
        assert_eq!(table.connection_minutes["gold"], vec![4, 0]);

        let row = ExportRow {
            tenant: "acme".into(),
            key_id: "k1".into(),
            plan_id: "gold".into(),
            date: usage::format_day(11),
            requests: 1,
            messages: 8,
            connection_minutes: 4,
        };
        assert_eq!(row.csv_line(), "acme,k1,gold,1970-01-12,1,8,4\n");
    }
}
