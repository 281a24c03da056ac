//! `GET /metrics`: this node's Raft, data-plane and admin-request figures
//! in the Prometheus text format, plus the connections registry's.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::AppState;

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String,
        content_type = "text/plain; version=0.0.4")))]
pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    use std::fmt::Write;
    let m = s.cp.raft.metrics().borrow().clone();
    let applied = crate::raft::applied_index(&m);
    let is_leader = m.current_leader == Some(s.cp.id);
    let commit = crate::raft::commit_index(&m, s.cp.id);
    let dps = s.cp.data_planes.local();
    let connected = dps.iter().filter(|d| d.connected).count();
    let usage_batches: u64 = s.cp.shared.read(|st| {
        st.counters()
            .filter_map(|(c, v)| matches!(c, crate::state::Counter::ReportSeq { .. }).then_some(*v))
            .sum()
    });
    let mut out = String::with_capacity(4096);
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "tollgate_raft_term",
        "The Raft term this node is in.",
        m.current_term,
    );
    gauge(
        "tollgate_raft_is_leader",
        "1 on the leader.",
        u64::from(is_leader),
    );
    gauge(
        "tollgate_raft_leader_id",
        "The leader's node id (0: none known).",
        m.current_leader.unwrap_or(0),
    );
    gauge(
        "tollgate_raft_last_log_index",
        "The last index in this node's log.",
        m.last_log_index.unwrap_or(0),
    );
    gauge(
        "tollgate_raft_commit_index",
        "The commit index (the leader's quorum index; a follower's applied index).",
        commit,
    );
    gauge(
        "tollgate_raft_applied_index",
        "The last index this node applied.",
        applied,
    );
    gauge(
        "tollgate_raft_log_entries",
        "Entries in this node's log (after compaction).",
        s.cp.log_store.len() as u64,
    );
    gauge(
        "tollgate_data_planes_connected",
        "Data planes streaming config from this node.",
        connected as u64,
    );
    let _ = writeln!(
        out,
        "# HELP tollgate_data_plane_revision_lag Revisions a data plane streaming from this node is behind this node's applied index.\n\
         # TYPE tollgate_data_plane_revision_lag gauge"
    );
    let mut dps = dps;
    dps.sort_by(|a, b| a.id.cmp(&b.id));
    for d in dps.iter().filter(|d| d.connected) {
        let _ = writeln!(
            out,
            "tollgate_data_plane_revision_lag{{data_plane=\"{}\"}} {}",
            label(&d.id),
            applied.saturating_sub(d.revision)
        );
    }
    let _ = writeln!(
        out,
        "# HELP tollgate_usage_batches_applied_total Usage batches from data planes applied to the cluster's state (retries not counted).\n\
         # TYPE tollgate_usage_batches_applied_total counter\n\
         tollgate_usage_batches_applied_total {usage_batches}"
    );
    let _ = writeln!(
        out,
        "# HELP tollgate_admin_requests_total Admin API requests by method, route template and status.\n\
         # TYPE tollgate_admin_requests_total counter"
    );
    for ((method, route, status), n) in s.requests.counts.lock().expect("admin metrics lock").iter()
    {
        let _ = writeln!(
            out,
            "tollgate_admin_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
            label(route)
        );
    }
    s.cp.connections.write_metrics(&mut out);
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// A label value, escaped for the Prometheus text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
