//! The `Usage` service's messages to and from `tollgate_model::metering`,
//! in one place, both directions. Only the gRPC edges use these: the
//! control plane's tonic service and the data plane's link to it; what is
//! behind them speaks the domain types.
//!
//! They live here rather than at those edges because both sides of each
//! `From` are foreign there (the orphan rule), and both edges need them.

use std::time::Duration;

use tollgate_model::metering::{
    Demand, DemandReport, DemandShares, Lease, LeaseRequest, Release, Share, UsageReport,
};
use tollgate_model::usage::{UsageCounts, UsageItem};

use crate::v1 as pb;

impl From<pb::UsageCount> for UsageItem {
    fn from(c: pb::UsageCount) -> Self {
        Self {
            key: c.key_id,
            plan: c.plan_id,
            day: c.day,
            counts: UsageCounts {
                requests: c.count,
                messages: c.messages,
                message_count: c.message_count,
                connection_minutes: c.connection_minutes,
            },
        }
    }
}

impl From<UsageItem> for pb::UsageCount {
    fn from(i: UsageItem) -> Self {
        Self {
            key_id: i.key,
            plan_id: i.plan,
            day: i.day,
            count: i.counts.requests,
            messages: i.counts.messages,
            message_count: i.counts.message_count,
            connection_minutes: i.counts.connection_minutes,
        }
    }
}

impl From<pb::UsageBatch> for UsageReport {
    fn from(b: pb::UsageBatch) -> Self {
        Self {
            data_plane: b.data_plane,
            epoch: b.epoch,
            seq: b.seq,
            items: b.items.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<UsageReport> for pb::UsageBatch {
    fn from(r: UsageReport) -> Self {
        Self {
            data_plane: r.data_plane,
            epoch: r.epoch,
            seq: r.seq,
            items: r.items.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::LeaseRequest> for LeaseRequest {
    fn from(r: pb::LeaseRequest) -> Self {
        Self {
            data_plane: r.data_plane,
            key: r.key_id,
            plan: r.plan_id,
            day: r.day,
            want: r.want,
        }
    }
}

impl From<LeaseRequest> for pb::LeaseRequest {
    fn from(r: LeaseRequest) -> Self {
        Self {
            data_plane: r.data_plane,
            key_id: r.key,
            plan_id: r.plan,
            day: r.day,
            want: r.want,
        }
    }
}

impl From<pb::LeaseReply> for Lease {
    fn from(r: pb::LeaseReply) -> Self {
        Self {
            granted: r.granted,
            period_start: r.period_start,
            period_end: r.period_end,
        }
    }
}

impl From<Lease> for pb::LeaseReply {
    fn from(l: Lease) -> Self {
        Self {
            granted: l.granted,
            period_start: l.period_start,
            period_end: l.period_end,
        }
    }
}

impl From<pb::ReleaseRequest> for Release {
    fn from(r: pb::ReleaseRequest) -> Self {
        Self {
            key: r.key_id,
            plan: r.plan_id,
            period_start: r.period_start,
            amount: r.amount,
        }
    }
}

impl From<Release> for pb::ReleaseRequest {
    fn from(r: Release) -> Self {
        Self {
            key_id: r.key,
            plan_id: r.plan,
            period_start: r.period_start,
            amount: r.amount,
        }
    }
}

impl From<pb::Demand> for Demand {
    fn from(d: pb::Demand) -> Self {
        Self {
            key: d.key_id,
            plan: d.plan_id,
            requests: d.requests,
            held: d.held,
        }
    }
}

impl From<Demand> for pb::Demand {
    fn from(d: Demand) -> Self {
        Self {
            key_id: d.key,
            plan_id: d.plan,
            requests: d.requests,
            held: d.held,
        }
    }
}

impl From<pb::DemandReport> for DemandReport {
    fn from(r: pb::DemandReport) -> Self {
        Self {
            data_plane: r.data_plane,
            window: Duration::from_millis(r.window_ms),
            items: r.items.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<DemandReport> for pb::DemandReport {
    fn from(r: DemandReport) -> Self {
        Self {
            data_plane: r.data_plane,
            window_ms: r.window.as_millis() as u64,
            items: r.items.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::Share> for Share {
    fn from(s: pb::Share) -> Self {
        Self {
            key: s.key_id,
            plan: s.plan_id,
            share: s.share,
            capped: s.capped,
        }
    }
}

impl From<Share> for pb::Share {
    fn from(s: Share) -> Self {
        Self {
            key_id: s.key,
            plan_id: s.plan,
            share: s.share,
            capped: s.capped,
        }
    }
}

impl From<pb::DemandShares> for DemandShares {
    fn from(s: pb::DemandShares) -> Self {
        Self {
            data_planes: s.data_planes,
            shares: s.shares.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<DemandShares> for pb::DemandShares {
    fn from(s: DemandShares) -> Self {
        Self {
            data_planes: s.data_planes,
            shares: s.shares.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let report = DemandReport {
            data_plane: "dp-1".into(),
            window: Duration::from_millis(200),
            items: vec![Demand {
                key: "k".into(),
                plan: "p".into(),
                requests: 7,
                held: 0.25,
            }],
        };
        let wire = pb::DemandReport::from(report.clone());
        assert_eq!(wire.window_ms, 200);
        assert_eq!(wire.items[0].key_id, "k");
        assert_eq!(DemandReport::from(wire), report);

        let batch = UsageReport {
            data_plane: "dp-1".into(),
            epoch: 3,
            seq: 9,
            items: vec![UsageItem {
                key: "k".into(),
                plan: "p".into(),
                day: 20_000,
                counts: UsageCounts {
                    requests: 5,
                    messages: 7,
                    message_count: 3,
                    connection_minutes: 2,
                },
            }],
        };
        assert_eq!(
            UsageReport::from(pb::UsageBatch::from(batch.clone())),
            batch
        );

        let lease = Lease {
            granted: 10,
            period_start: 1,
            period_end: 2,
        };
        assert_eq!(Lease::from(pb::LeaseReply::from(lease)), lease);
    }
}
