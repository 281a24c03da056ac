//! The admin REST API (contract §2), over the same service layer as gRPC.
//!
//! Every route is declared once, by its handler's `#[utoipa::path]`, and
//! `routes!` turns that one declaration into both the router's route and
//! the OpenAPI document's operation (`GET /v1/openapi.json`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_model::key::constant_time_eq;
use tollgate_model::ResourceKind;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::grpc::view;
use crate::openapi as doc;
use crate::raft::Node;
use crate::service::{parse_json, ApiError, ControlPlane};

mod metrics;
mod usage;

#[derive(Clone)]
struct AppState {
    cp: Arc<ControlPlane>,
    admin_token: Arc<str>,
    requests: Arc<AdminRequests>,
    /// The OpenAPI document, serialized once.
    openapi: Arc<str>,
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
        (status, Json(self.body())).into_response()
    }
}

type Reply = Result<Response, ApiError>;

fn ok(status: StatusCode, body: impl Serialize) -> Reply {
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReadOpts {
    /// Read this node's copy without asking the leader (may be behind).
    #[serde(default)]
    stale: bool,
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct KeyFilter {
    /// Read this node's copy without asking the leader (may be behind).
    #[serde(default)]
    stale: bool,
    /// Only this tenant's keys.
    #[serde(default)]
    tenant: Option<String>,
}

/// The id in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by `Path<String>`; this documents it
struct Id {
    id: String,
}

/// A deployment's place in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by `Path<(String, String)>`; this documents it
struct DeploymentPath {
    /// The API's id.
    id: String,
    deployment: String,
}

/// A list's answer; its schema is the kind's `…List` in `openapi`.
#[derive(Serialize)]
struct Items {
    items: Vec<serde_json::Value>,
}

/// The admin port's router: the routes of `public_routes` and
/// `admin_routes` (the latter behind the admin token), and for anything
/// else an error in the error shape.
pub fn router(cp: Arc<ControlPlane>, admin_token: &str) -> Router {
    let openapi = serde_json::to_string(&document()).expect("the OpenAPI document serializes");
    let state = AppState {
        cp,
        admin_token: admin_token.into(),
        requests: Arc::new(AdminRequests::default()),
        openapi: openapi.into(),
    };
    let admin = admin_routes().layer(middleware::from_fn_with_state(
        state.clone(),
        require_admin_token,
    ));
    let (routes, _) = public_routes().merge(admin).split_for_parts();
    routes
        // The web console: files, not JSON API, so outside the OpenAPI
        // document; it calls the routes above with the admin token.
        .merge(crate::console::router())
        .fallback(no_route)
        .method_not_allowed_fallback(|method: http::Method, uri: http::Uri| async move {
            ApiError::MethodNotAllowed(format!(
                "{method} {}: method not allowed (the Allow header lists those it takes)",
                uri.path()
            ))
        })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// The OpenAPI document of every route `router` serves, from the same
/// declarations.
pub fn document() -> utoipa::openapi::OpenApi {
    let routes = OpenApiRouter::with_openapi(doc::Base::openapi())
        .merge(public_routes())
        .merge(admin_routes());
    doc::finish(routes.into_openapi())
}

/// Every (method, path) the router serves, from the route table that
/// builds it (methods upper case, paths as templates: `/v1/apis/{id}`).
pub fn routes() -> Vec<(String, String)> {
    let doc = public_routes().merge(admin_routes()).into_openapi();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
            ("TRACE", &item.trace),
        ];
        for (method, op) in ops {
            if op.is_some() {
                out.push((method.to_string(), path.clone()));
            }
        }
    }
    out
}

/// The routes that need no token. Each `routes!` holds the handlers of one
/// path (it routes them all to each path it names).
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi_json))
}

/// The routes behind the admin token, one path per `routes!`.
fn admin_routes() -> OpenApiRouter<AppState> {
    let (schemas, paths, methods) = routes!(push_to_connection, get_connection, close_connection);
    let connections = (
        schemas,
        paths,
        methods.layer(DefaultBodyLimit::max(crate::connections::MAX_BODY_BYTES)),
    );
    let routes = OpenApiRouter::new()
        .routes(routes!(cluster))
        .routes(routes!(add_member))
        .routes(routes!(remove_member))
        .routes(routes!(issue_key, list_keys))
        .routes(routes!(get_key, put_key, patch_key, delete_key))
        .routes(routes!(usage::key_usage))
        .routes(routes!(usage::adjust_quota))
        .routes(routes!(usage::plan_usage))
        .routes(routes!(flush_cache))
        .routes(routes!(deploy, list_deployments))
        .routes(routes!(get_deployment, delete_deployment))
        .routes(routes!(promote))
        .routes(routes!(usage::usage_export))
        .routes(routes!(usage::traffic))
        .routes(routes!(usage::tenant_invoice))
        .routes(routes!(export_backup, import_backup))
        .routes(connections);
    let routes = apis::routes(routes);
    let routes = authorizers::routes(routes);
    let routes = tenants::routes(routes);
    let routes = usage_plans::routes(routes);
    stages::routes(routes)
}

/// Answers in the error shape whatever a layer below answered with
/// (extractor rejections and body limits come as text), so every 4xx and
/// 5xx has the one shape whoever produced it.
async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if res.status().as_u16() < 400 || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_string()
    } else {
        text
    };
    ApiError::from_status(parts.status.as_u16(), message).into_response()
}

/// The four routes of one kind of document (`GET /v1/{kind}`,
/// `PUT/GET/DELETE /v1/{kind}/{id}`) in a module of their own, a function
/// each, so that each has its `#[utoipa::path]`.
macro_rules! document_routes {
    ($module:ident, $kind:expr, $list_path:tt, $item_path:tt,
     $record:ident, $list:ident, $body:ident) => {
        mod $module {
            use super::*;

            pub(super) fn routes(r: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
                r.routes(routes!(list)).routes(routes!(get, put, delete))
            }

            #[utoipa::path(get, path = $list_path, tag = stringify!($module),
                operation_id = concat!("list_", stringify!($module)),
                params(ReadOpts),
                responses((status = 200, description = "Every document of the kind", body = doc::$list)))]
            async fn list(s: State<AppState>, q: Query<ReadOpts>) -> Reply {
                list_docs(s, q, $kind).await
            }

            #[utoipa::path(get, path = $item_path, tag = stringify!($module),
                operation_id = concat!("get_", stringify!($module)),
                params(Id, ReadOpts),
                responses((status = 200, description = "The document", body = doc::$record)))]
            async fn get(s: State<AppState>, p: Path<String>, q: Query<ReadOpts>) -> Reply {
                get_doc(s, p, q, $kind).await
            }

            #[utoipa::path(put, path = $item_path, tag = stringify!($module),
                operation_id = concat!("put_", stringify!($module)),
                params(Id), request_body = doc::$body,
                responses((status = 200, description = "Created or replaced", body = doc::$record)))]
            async fn put(s: State<AppState>, p: Path<String>, b: Bytes) -> Reply {
                put_doc(s, p, b, $kind).await
            }

            #[utoipa::path(delete, path = $item_path, tag = stringify!($module),
                operation_id = concat!("delete_", stringify!($module)),
                params(Id),
                responses((status = 200, description = "Deleted", body = doc::Deleted)))]
            async fn delete(s: State<AppState>, p: Path<String>) -> Reply {
                delete_doc(s, p, $kind).await
            }
        }
    };
}

document_routes!(
    apis,
    ResourceKind::Api,
    "/v1/apis",
    "/v1/apis/{id}",
    ApiRecord,
    ApiList,
    ApiBody
);
document_routes!(
    authorizers,
    ResourceKind::Authorizer,
    "/v1/authorizers",
    "/v1/authorizers/{id}",
    AuthorizerRecord,
    AuthorizerList,
    AuthorizerBody
);
document_routes!(
    tenants,
    ResourceKind::Tenant,
    "/v1/tenants",
    "/v1/tenants/{id}",
    TenantRecord,
    TenantList,
    TenantBody
);
document_routes!(
    usage_plans,
    ResourceKind::UsagePlan,
    "/v1/usage-plans",
    "/v1/usage-plans/{id}",
    UsagePlanRecord,
    UsagePlanList,
    UsagePlanBody
);
document_routes!(
    stages,
    ResourceKind::Stage,
    "/v1/stages",
    "/v1/stages/{id}",
    StageRecord,
    StageList,
    StageBody
);

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
    if has_admin_token(&s, &headers) {
        next.run(req).await
    } else {
        ApiError::Unauthenticated.into_response()
    }
}

fn has_admin_token(s: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t, &s.admin_token))
}

/// No route has the path: under `/v1` only the admin learns that (as for
/// every other `/v1` answer), anyone else is refused first.
async fn no_route(State(s): State<AppState>, headers: HeaderMap, uri: http::Uri) -> ApiError {
    if uri.path().starts_with("/v1/") && !has_admin_token(&s, &headers) {
        ApiError::Unauthenticated
    } else {
        ApiError::NotFound("no such route".into())
    }
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = String,
        content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "A leader is known and this node has applied its log",
            body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready", body = ErrorBody)))]
async fn readyz(State(s): State<AppState>) -> Reply {
    if s.cp.is_ready() {
        Ok((StatusCode::OK, "ready").into_response())
    } else {
        Err(ApiError::Unavailable("not ready".into()))
    }
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "This document: OpenAPI 3.1", body = serde_json::Value)))]
async fn openapi_json(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.to_string(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, description = "This node's view of the cluster, and every data plane",
        body = crate::service::ClusterInfo)))]
async fn cluster(State(s): State<AppState>) -> Reply {
    ok(StatusCode::OK, s.cp.cluster_info().await)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MemberRequest {
    id: u64,
    grpc_addr: String,
    admin_addr: String,
}

#[utoipa::path(post, path = "/v1/cluster/members", tag = "cluster",
    request_body = MemberRequest,
    responses((status = 200, description = "Added as a learner, then made a voter",
        body = doc::MemberAdded)))]
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
    ok(
        StatusCode::OK,
        doc::MemberAdded {
            id: m.id,
            voter: true,
        },
    )
}

#[utoipa::path(delete, path = "/v1/cluster/members/{id}", tag = "cluster",
    params(("id" = u64, Path, description = "The node's id")),
    responses((status = 200, description = "Removed", body = doc::MemberRemoved)))]
async fn remove_member(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::InvalidArgument(format!("id: {id:?} is not a node id")))?;
    s.cp.remove_member(id).await?;
    ok(StatusCode::OK, doc::MemberRemoved { removed: id })
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
    ok(StatusCode::OK, Items { items })
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
    let revision = s.cp.delete(kind, &id).await?;
    ok(StatusCode::OK, doc::Deleted { id, revision })
}

#[utoipa::path(post, path = "/v1/apis/{id}/deployments", tag = "deployments",
    params(Id), request_body = tollgate_model::stages::DeployRequest,
    responses((status = 201, description = "A frozen copy of the API document as it is now",
        body = doc::DeploymentRecord)))]
async fn deploy(State(s): State<AppState>, Path(api): Path<String>, body: Bytes) -> Reply {
    let (rev, d) = s.cp.deploy(&api, &body).await?;
    ok(StatusCode::CREATED, view(rev, &d))
}

#[utoipa::path(get, path = "/v1/apis/{id}/deployments", tag = "deployments",
    params(Id, ReadOpts),
    responses((status = 200, description = "The API's deployments", body = doc::DeploymentList)))]
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
    ok(StatusCode::OK, Items { items })
}

#[utoipa::path(get, path = "/v1/apis/{id}/deployments/{deployment}", tag = "deployments",
    params(DeploymentPath),
    responses((status = 200, description = "The deployment, its frozen document included",
        body = doc::DeploymentRecord)))]
async fn get_deployment(
    State(s): State<AppState>,
    Path((api, id)): Path<(String, String)>,
) -> Reply {
    let (rev, d) = s.cp.deployment(&api, &id).await?;
    ok(StatusCode::OK, view(rev, &d))
}

#[utoipa::path(delete, path = "/v1/apis/{id}/deployments/{deployment}", tag = "deployments",
    params(DeploymentPath),
    responses(
        (status = 200, description = "Deleted", body = doc::Deleted),
        (status = 409, description = "A stage or a canary uses it", body = ErrorBody)))]
async fn delete_deployment(
    State(s): State<AppState>,
    Path((api, id)): Path<(String, String)>,
) -> Reply {
    s.cp.deployment(&api, &id).await?;
    let revision = s.cp.delete(ResourceKind::Deployment, &id).await?;
    ok(StatusCode::OK, doc::Deleted { id, revision })
}

#[utoipa::path(post, path = "/v1/stages/{id}/promote", tag = "stages",
    params(Id),
    responses(
        (status = 200, description = "The canary's deployment and variables are the stage's",
            body = doc::StageRecord),
        (status = 409, description = "The stage has no canary", body = ErrorBody)))]
async fn promote(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    let (rev, stage) = s.cp.promote(&id).await?;
    ok(StatusCode::OK, view(rev, &stage))
}

#[utoipa::path(delete, path = "/v1/apis/{id}/cache", tag = "apis",
    params(Id),
    responses((status = 200, description = "Every data plane flushes the API's response cache",
        body = doc::CacheFlushed)))]
async fn flush_cache(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    let revision = s.cp.flush_cache(&id).await?;
    ok(
        StatusCode::OK,
        doc::CacheFlushed {
            api: id,
            flushed: true,
            epoch: revision,
            revision,
        },
    )
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "The same value within 24 h answers 409 with the key it issued")),
    request_body = tollgate_model::IssueKeyRequest,
    responses(
        (status = 201, description = "Issued: `value` is in this answer only",
            body = doc::IssuedKeyRecord),
        (status = 409, description = "The Idempotency-Key was used: `key_id` names its key",
            body = ErrorBody)))]
async fn issue_key(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Reply {
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::InvalidArgument("Idempotency-Key: must be visible ASCII".into())
            })
        })
        .transpose()?;
    let (rev, issued) = s.cp.issue_key(&body, idempotency_key).await?;
    let mut v = serde_json::to_value(issued).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["revision"] = rev.into();
    ok(StatusCode::CREATED, v)
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    params(KeyFilter),
    responses((status = 200, description = "Keys (never their values)", body = doc::KeyList)))]
async fn list_keys(State(s): State<AppState>, Query(q): Query<KeyFilter>) -> Reply {
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
    ok(StatusCode::OK, Items { items })
}

#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys",
    params(Id, ReadOpts),
    responses((status = 200, description = "The key (never its value)", body = doc::KeyRecord)))]
async fn get_key(s: State<AppState>, p: Path<String>, q: Query<ReadOpts>) -> Reply {
    get_doc(s, p, q, ResourceKind::ApiKey).await
}

#[utoipa::path(put, path = "/v1/keys/{id}", tag = "keys",
    params(Id), request_body = tollgate_model::ApiKeyRecord,
    responses((status = 200, description = "The key record restored (as `tollgate dump` carries it: its hash, never a value)", body = doc::KeyRecord)))]
async fn put_key(s: State<AppState>, p: Path<String>, b: Bytes) -> Reply {
    put_doc(s, p, b, ResourceKind::ApiKey).await
}

#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys",
    params(Id), request_body = tollgate_model::KeyPatch,
    responses((status = 200, description = "Changed", body = doc::KeyRecord)))]
async fn patch_key(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> Reply {
    let (rev, key) = s.cp.patch_key(&id, &body).await?;
    let mut v = serde_json::to_value(key).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["revision"] = rev.into();
    ok(StatusCode::OK, v)
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(Id),
    responses((status = 200, description = "Revoked", body = doc::Deleted)))]
async fn delete_key(s: State<AppState>, p: Path<String>) -> Reply {
    delete_doc(s, p, ResourceKind::ApiKey).await
}

// ---------------------------------------------------------------- backup

#[utoipa::path(get, path = "/v1/snapshot", tag = "snapshot",
    responses((status = 200, description = "The whole store (key hashes, never key values)",
        body = crate::backup::Backup)))]
async fn export_backup(State(s): State<AppState>) -> Reply {
    let b = s.cp.export_backup().await?;
    Ok(Json(b).into_response())
}

#[utoipa::path(post, path = "/v1/snapshot", tag = "snapshot",
    request_body = crate::backup::Backup,
    responses((status = 200, description = "The cluster's state is the backup's", body = doc::Restored)))]
async fn import_backup(State(s): State<AppState>, body: Bytes) -> Reply {
    let revision = s.cp.import_backup(&body).await?;
    ok(
        StatusCode::OK,
        doc::Restored {
            restored: true,
            revision,
        },
    )
}

// ---------------------------------------------------------------- connections

/// `POST /v1/connections/{id}`: the raw body, any content type, to the
/// WebSocket client as one message.
#[utoipa::path(post, path = "/v1/connections/{id}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    request_body(content = String, content_type = "*/*",
        description = "Sent as one message: text if UTF-8, else binary"),
    responses(
        (status = 204, description = "Sent"),
        (status = 410, description = "The connection is closed or unknown", body = ErrorBody),
        (status = 413, description = "Over 128 KiB", body = ErrorBody),
        (status = 429, description = "Over the key's throttle or quota", body = ErrorBody)))]
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

#[utoipa::path(get, path = "/v1/connections/{id}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "The connection",
            body = tollgate_model::websocket::ConnectionInfo),
        (status = 410, description = "The connection is closed or unknown", body = ErrorBody)))]
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

#[utoipa::path(delete, path = "/v1/connections/{id}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 204, description = "Closed (1000; `$disconnect` runs)"),
        (status = 410, description = "The connection is closed or unknown", body = ErrorBody)))]
async fn close_connection(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    s.cp.connection_call(crate::connections::Op::Close, &id, Vec::new())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
