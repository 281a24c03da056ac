//! The live-traffic messages (`Usage.Traffic`, `Cluster.Traffic`) to and
//! from `tollgate_model::traffic`, both directions, in one place (the
//! orphan rule puts them here, as `usage`'s).

use tollgate_model::traffic::{Counts, RouteWindow, TrafficReport, BUCKETS};

use crate::v1 as pb;

impl From<pb::TrafficCounts> for Counts {
    fn from(c: pb::TrafficCounts) -> Self {
        let mut latency = [0; BUCKETS];
        // A sender with other bounds would mislabel every bucket: its
        // latencies are left out, its counts kept.
        if c.latency.len() == BUCKETS {
            latency.copy_from_slice(&c.latency);
        }
        Self {
            requests: c.requests,
            errors_4xx: c.errors_4xx,
            errors_5xx: c.errors_5xx,
            latency,
        }
    }
}

impl From<&Counts> for pb::TrafficCounts {
    fn from(c: &Counts) -> Self {
        Self {
            requests: c.requests,
            errors_4xx: c.errors_4xx,
            errors_5xx: c.errors_5xx,
            latency: c.latency.to_vec(),
        }
    }
}

impl From<pb::RouteTraffic> for RouteWindow {
    fn from(r: pb::RouteTraffic) -> Self {
        Self {
            t: r.t,
            api: r.api,
            route: r.route,
            counts: r.counts.map(Into::into).unwrap_or_default(),
        }
    }
}

impl From<&RouteWindow> for pb::RouteTraffic {
    fn from(r: &RouteWindow) -> Self {
        Self {
            t: r.t,
            api: r.api.clone(),
            route: r.route.clone(),
            counts: Some((&r.counts).into()),
        }
    }
}

impl From<pb::TrafficReport> for TrafficReport {
    fn from(r: pb::TrafficReport) -> Self {
        Self {
            data_plane: r.data_plane,
            epoch: r.epoch,
            items: r.items.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<&TrafficReport> for pb::TrafficReport {
    fn from(r: &TrafficReport) -> Self {
        Self {
            data_plane: r.data_plane.clone(),
            epoch: r.epoch,
            items: r.items.iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_the_wire() {
        let mut counts = Counts {
            requests: 3,
            errors_4xx: 1,
            errors_5xx: 1,
            ..Counts::default()
        };
        counts.latency[2] = 3;
        let r = TrafficReport {
            data_plane: "dp-1".into(),
            epoch: 7,
            items: vec![RouteWindow {
                t: 1_700_000_000,
                api: "orders".into(),
                route: "all".into(),
                counts,
            }],
        };
        assert_eq!(TrafficReport::from(pb::TrafficReport::from(&r)), r);
    }
}
