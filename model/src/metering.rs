//! What data planes and the control plane say to each other about usage
//! plans: metered usage, quota leases, and throttle demand and shares.
//!
//! These are the domain's words for the `Usage` gRPC service. The wire
//! messages (`tollgate-proto`) are converted to and from these in one place,
//! `tollgate_proto::usage`, and only the gRPC edges (the control plane's
//! tonic service and the data plane's link to it) call those conversions.

use std::time::Duration;

use crate::usage::{Day, UsageItem};

/// A batch of metered usage from one data plane. The control plane applies
/// it once per (data plane, epoch, seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub data_plane: String,
    /// Distinguishes boots of one data plane (its start time in ns).
    pub epoch: u64,
    /// Increases by one per batch within an epoch.
    pub seq: u64,
    pub items: Vec<UsageItem>,
}

/// A data plane asks for up to `want` units of a key's quota for the period
/// holding `day`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub data_plane: String,
    pub key: String,
    pub plan: String,
    pub day: Day,
    pub want: u64,
}

/// Units of quota granted, and the period `[period_start, period_end)` they
/// belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub granted: u64,
    pub period_start: Day,
    pub period_end: Day,
}

/// Unused units of a lease going back to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub key: String,
    pub plan: String,
    pub period_start: Day,
    pub amount: u64,
}

/// Requests seen (admitted or not) for one (key, plan) in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub key: String,
    pub plan: String,
    pub requests: u64,
    /// The share the data plane was admitting under when it reported
    /// (its last grant, or `1 / N` without one), so the leader reserves
    /// it until the data plane has its next grant in hand.
    pub held: f64,
}

/// How long a share holds. The leader reserves a grant this long from the
/// sync that asked for it; a data plane uses it this long from when it
/// sent that sync (earlier), so it stops first, and then falls back to
/// `1 / N`.
pub const SHARE_GRANT_FOR: Duration = Duration::from_secs(2);

/// One data plane's recent demand per (key, plan).
#[derive(Debug, Clone, PartialEq)]
pub struct DemandReport {
    pub data_plane: String,
    /// How long the demand was counted for.
    pub window: Duration,
    pub items: Vec<Demand>,
}

/// A data plane's part of a (key, plan)'s rate, in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub key: String,
    pub plan: String,
    pub share: f64,
    /// Granted less than its part of the demand (others still hold what
    /// it wants): the data plane asks again soon instead of a round later.
    pub capped: bool,
}

/// The answer to a `DemandReport`.
#[derive(Debug, Clone, PartialEq)]
pub struct DemandShares {
    /// Data planes heard from recently, across the cluster.
    pub data_planes: u32,
    pub shares: Vec<Share>,
}
