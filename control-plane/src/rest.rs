//! The admin REST API (contract §2), over the same service layer as gRPC.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tollgate_model::key::constant_time_eq;
use tollgate_model::ResourceKind;

use crate::grpc::view;
use crate::raft::Node;
use crate::service::{parse_json, ApiError, ControlPlane};

#[derive(Clone)]
struct AppState {
    cp: Arc<ControlPlane>,
    admin_token: Arc<str>,
    requests: Arc<AdminRequests>,
}

/// Admin requests by method, matched route template (never the raw path)
/// and status. The admin API is not a hot path: a mutex is fine here.
#[derive(Default)]
struct AdminRequests {
    counts: std::sync::Mutex<std::collections::BTreeMap<(String, String, u16), u64>>,
}

/// The one place an `ApiError` becomes an HTTP response.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        (status, Json(body)).into_response()
    }
}

type Reply = Result<Response, ApiError>;

fn ok(status: StatusCode, body: serde_json::Value) -> Reply {
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize, Default)]
struct ReadOpts {
    #[serde(default)]
    stale: bool,
    #[serde(default)]
    tenant: Option<String>,
}

pub fn router(cp: Arc<ControlPlane>, admin_token: &str) -> Router {
    let state = AppState {
        cp,
        admin_token: admin_token.into(),
        requests: Arc::new(AdminRequests::default()),
    };
    let mut v1 = Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/members", post(add_member))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route("/v1/keys", post(issue_key).get(list_keys))
        .route(
            "/v1/keys/{id}",
            get(get_key).patch(patch_key).delete(delete_key),
        )
        .route("/v1/keys/{id}/usage", get(key_usage))
        .route("/v1/keys/{id}/quota-adjustments", post(adjust_quota))
        .route("/v1/usage-plans/{id}/usage", get(plan_usage))
        .route("/v1/apis/{id}/cache", delete(flush_cache))
        .route(
            "/v1/apis/{id}/deployments",
            post(deploy).get(list_deployments),
        )
        .route(
            "/v1/apis/{id}/deployments/{deployment}",
            get(get_deployment).delete(delete_deployment),
        )
        .route("/v1/stages/{id}/promote", post(promote))
        .route("/v1/usage/export", get(usage_export))
        .route("/v1/snapshot", get(export_backup).post(import_backup))
        .route(
            "/v1/connections/{id}",
            post(push_to_connection)
                .get(get_connection)
                .delete(close_connection)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::connections::MAX_BODY_BYTES,
                )),
        );
    for (path, kind) in [
        ("apis", ResourceKind::Api),
        ("authorizers", ResourceKind::Authorizer),
        ("tenants", ResourceKind::Tenant),
        ("usage-plans", ResourceKind::UsagePlan),
        ("stages", ResourceKind::Stage),
    ] {
        v1 = v1
            .route(
                &format!("/v1/{path}"),
                get(move |s: State<AppState>, q: Query<ReadOpts>| list_docs(s, q, kind)),
            )
            .route(
                &format!("/v1/{path}/{{id}}"),
                get(
                    move |s: State<AppState>, p: Path<String>, q: Query<ReadOpts>| {
                        get_doc(s, p, q, kind)
                    },
                )
                .put(move |s: State<AppState>, p: Path<String>, b: Bytes| put_doc(s, p, b, kind))
                .delete(move |s: State<AppState>, p: Path<String>| delete_doc(s, p, kind)),
            );
    }
    let v1 = v1
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_admin_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(v1)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A span per admin request, and the request counted by route template.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let span = tracing::debug_span!("admin", method = %method, route = %route, status = tracing::field::Empty);
    let res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    span.record("status", status);
    *s.requests
        .counts
        .lock()
        .expect("admin metrics lock")
        .entry((method, route, status))
        .or_default() += 1;
    res
}

async fn require_admin_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if constant_time_eq(t, &s.admin_token) => next.run(req).await,
        _ => ApiError::Unauthenticated.into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.cp.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
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

async fn cluster(State(s): State<AppState>) -> Reply {
    let info = s.cp.cluster_info().await;
    ok(
        StatusCode::OK,
        serde_json::to_value(info).map_err(|e| ApiError::Internal(e.to_string()))?,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberRequest {
    id: u64,
    grpc_addr: String,
    admin_addr: String,
}

async fn add_member(State(s): State<AppState>, body: Bytes) -> Reply {
    let m: MemberRequest = parse_json(&body)?;
    for (field, v) in [("grpc_addr", &m.grpc_addr), ("admin_addr", &m.admin_addr)] {
        tollgate_model::validate::upstream_url(field, v)?;
    }
    s.cp.add_member(
        m.id,
        Node {
            grpc_addr: m.grpc_addr,
            admin_addr: m.admin_addr,
        },
    )
    .await?;
    ok(StatusCode::OK, json!({"id": m.id, "voter": true}))
}

async fn remove_member(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::InvalidArgument(format!("id: {id:?} is not a node id")))?;
    s.cp.remove_member(id).await?;
    ok(StatusCode::OK, json!({"removed": id}))
}

async fn list_docs(
    State(s): State<AppState>,
    Query(q): Query<ReadOpts>,
    kind: ResourceKind,
) -> Reply {
    let items: Vec<_> =
        s.cp.list(kind, q.stale)
            .await?
            .iter()
            .map(|(r, d)| view(*r, d))
            .collect();
    ok(StatusCode::OK, json!({ "items": items }))
}

async fn get_doc(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReadOpts>,
    kind: ResourceKind,
) -> Reply {
    let (rev, doc) = s.cp.get(kind, &id, q.stale).await?;
    ok(StatusCode::OK, view(rev, &doc))
}

async fn put_doc(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
    kind: ResourceKind,
) -> Reply {
    let (rev, doc) = s.cp.put(kind, &id, &body).await?;
    ok(StatusCode::OK, view(rev, &doc))
}

async fn delete_doc(
    State(s): State<AppState>,
    Path(id): Path<String>,
    kind: ResourceKind,
) -> Reply {
    let rev = s.cp.delete(kind, &id).await?;
    ok(StatusCode::OK, json!({"id": id, "revision": rev}))
}

async fn deploy(State(s): State<AppState>, Path(api): Path<String>, body: Bytes) -> Reply {
    let (rev, d) = s.cp.deploy(&api, &body).await?;
    ok(StatusCode::CREATED, view(rev, &d))
}

async fn list_deployments(
    State(s): State<AppState>,
    Path(api): Path<String>,
    Query(q): Query<ReadOpts>,
) -> Reply {
    // An API's deployments; 404 for an API that does not exist.
    s.cp.get(ResourceKind::Api, &api, q.stale).await?;
    let items: Vec<_> =
        s.cp.list(ResourceKind::Deployment, q.stale)
            .await?
            .iter()
            .filter(|(_, r)| matches!(r, tollgate_model::Resource::Deployment(d) if d.api == api))
            .map(|(rev, r)| view(*rev, r))
            .collect();
    ok(StatusCode::OK, json!({ "items": items }))
}

async fn get_deployment(
    State(s): State<AppState>,
    Path((api, id)): Path<(String, String)>,
) -> Reply {
    let (rev, d) = s.cp.deployment(&api, &id).await?;
    ok(StatusCode::OK, view(rev, &d))
}

async fn delete_deployment(
    State(s): State<AppState>,
    Path((api, id)): Path<(String, String)>,
) -> Reply {
    s.cp.deployment(&api, &id).await?;
    let rev = s.cp.delete(ResourceKind::Deployment, &id).await?;
    ok(StatusCode::OK, json!({"id": id, "revision": rev}))
}

async fn promote(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    let (rev, stage) = s.cp.promote(&id).await?;
    ok(StatusCode::OK, view(rev, &stage))
}

async fn flush_cache(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    let revision = s.cp.flush_cache(&id).await?;
    ok(
        StatusCode::OK,
        json!({"api": id, "flushed": true, "epoch": revision, "revision": revision}),
    )
}

async fn issue_key(State(s): State<AppState>, body: Bytes) -> Reply {
    let (rev, issued) = s.cp.issue_key(&body).await?;
    let mut v = serde_json::to_value(issued).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["revision"] = rev.into();
    ok(StatusCode::CREATED, v)
}

async fn list_keys(State(s): State<AppState>, Query(q): Query<ReadOpts>) -> Reply {
    let items: Vec<_> =
        s.cp.list(ResourceKind::ApiKey, q.stale)
            .await?
            .iter()
            .filter(|(_, r)| match (r, &q.tenant) {
                (tollgate_model::Resource::ApiKey(k), Some(t)) => &k.tenant == t,
                _ => true,
            })
            .map(|(rev, r)| view(*rev, r))
            .collect();
    ok(StatusCode::OK, json!({ "items": items }))
}

async fn get_key(s: State<AppState>, p: Path<String>, q: Query<ReadOpts>) -> Reply {
    get_doc(s, p, q, ResourceKind::ApiKey).await
}

async fn patch_key(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> Reply {
    let (rev, key) = s.cp.patch_key(&id, &body).await?;
    let mut v = serde_json::to_value(key).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["revision"] = rev.into();
    ok(StatusCode::OK, v)
}

async fn delete_key(s: State<AppState>, p: Path<String>) -> Reply {
    delete_doc(s, p, ResourceKind::ApiKey).await
}

// ---------------------------------------------------------------- usage

#[derive(Deserialize)]
struct UsageQuery {
    start: Option<String>,
    end: Option<String>,
    key_id: Option<String>,
    format: Option<String>,
}

/// `start`/`end` as inclusive `YYYY-MM-DD` dates; both default to today.
/// Returns the half-open day range and the dates as given.
fn usage_range(q: &UsageQuery) -> Result<(u32, u32, String, String), ApiError> {
    use tollgate_model::usage;
    let today = usage::format_day(usage::today());
    let start = q.start.clone().unwrap_or_else(|| today.clone());
    let end = q.end.clone().unwrap_or(today);
    let parse = |field: &str, v: &str| {
        usage::parse_day(v).ok_or_else(|| {
            ApiError::InvalidArgument(format!("{field}: {v:?} is not a date (YYYY-MM-DD)"))
        })
    };
    let (s, e) = (parse("start", &start)?, parse("end", &end)?);
    if e < s {
        return Err(ApiError::InvalidArgument(
            "end: must not be before start".into(),
        ));
    }
    if e - s > 366 {
        return Err(ApiError::InvalidArgument(
            "end: at most 366 days per query".into(),
        ));
    }
    Ok((s, e + 1, start, end))
}

async fn plan_usage(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Reply {
    let (from, to, start, end) = usage_range(&q)?;
    let u = s.cp.plan_usage(&id, from, to, q.key_id.as_deref()).await?;
    ok(
        StatusCode::OK,
        json!({"plan_id": id, "start": start, "end": end, "items": u.quota,
               "messages": u.messages, "connection_minutes": u.connection_minutes}),
    )
}

async fn key_usage(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Reply {
    let (from, to, start, end) = usage_range(&q)?;
    let u = s.cp.key_usage(&id, from, to).await?;
    ok(
        StatusCode::OK,
        json!({"key_id": id, "start": start, "end": end, "plans": u.quota,
               "messages": u.messages, "connection_minutes": u.connection_minutes}),
    )
}

async fn usage_export(State(s): State<AppState>, Query(q): Query<UsageQuery>) -> Reply {
    let (from, to, _, _) = usage_range(&q)?;
    let rows = s.cp.usage_export(from, to).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => ok(StatusCode::OK, json!({"rows": rows})),
        "csv" => {
            let mut out = String::from(crate::usage::ExportRow::CSV_HEADER);
            for r in rows {
                out.push_str(&r.csv_line());
            }
            Ok(([("content-type", "text/csv")], out).into_response())
        }
        other => Err(ApiError::InvalidArgument(format!(
            "format: {other:?} is not csv or json"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Adjustment {
    plan: String,
    amount: u64,
}

async fn adjust_quota(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> Reply {
    let a: Adjustment = parse_json(&body)?;
    if a.amount == 0 {
        return Err(ApiError::InvalidArgument(
            "amount: must be at least 1".into(),
        ));
    }
    let (revision, period) = s.cp.adjust_quota(&id, &a.plan, a.amount).await?;
    ok(
        StatusCode::CREATED,
        json!({"key_id": id, "plan": a.plan, "amount": a.amount,
               "period_start": tollgate_model::usage::format_day(period), "revision": revision}),
    )
}

// ---------------------------------------------------------------- backup

async fn export_backup(State(s): State<AppState>) -> Reply {
    let b = s.cp.export_backup().await?;
    Ok(Json(b).into_response())
}

async fn import_backup(State(s): State<AppState>, body: Bytes) -> Reply {
    let revision = s.cp.import_backup(&body).await?;
    ok(
        StatusCode::OK,
        json!({"restored": true, "revision": revision}),
    )
}

// ---------------------------------------------------------------- connections

/// `POST /v1/connections/{id}`: the raw body, any content type, to the
/// WebSocket client as one message.
async fn push_to_connection(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Reply {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "body: at most {} bytes",
                crate::connections::MAX_BODY_BYTES
            ))
        } else {
            ApiError::InvalidArgument(format!("body: {}", e.body_text()))
        }
    })?;
    s.cp.connection_call(crate::connections::Op::Push, &id, body.to_vec())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_connection(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    match s
        .cp
        .connection_call(crate::connections::Op::Get, &id, Vec::new())
        .await?
    {
        crate::connections::Answer::Info(info) => ok(StatusCode::OK, info),
        crate::connections::Answer::Done => Err(ApiError::Internal(
            "the data plane sent no connection info".into(),
        )),
    }
}

async fn close_connection(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    s.cp.connection_call(crate::connections::Op::Close, &id, Vec::new())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
