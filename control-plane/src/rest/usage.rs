//! The admin API's usage, live-traffic, quota and billing routes: thin
//! handlers over `ControlPlane`, registered in `rest::admin_routes`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{ok, AppState, Id, Reply};
use crate::openapi as doc;
use crate::service::{parse_json, ApiError};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UsageQuery {
    /// The first UTC day, `YYYY-MM-DD` (default today).
    start: Option<String>,
    /// The last UTC day, inclusive (default today; at most 366 days on).
    end: Option<String>,
    /// A plan's usage: only this key's.
    key_id: Option<String>,
    /// The export: `json` (default) or `csv`.
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

#[utoipa::path(get, path = "/v1/usage-plans/{id}/usage", tag = "usage",
    params(Id, UsageQuery),
    responses((status = 200, description = "Usage by key and UTC day", body = doc::PlanUsage)))]
pub(super) async fn plan_usage(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Reply {
    let (from, to, start, end) = usage_range(&q)?;
    let u = s.cp.plan_usage(&id, from, to, q.key_id.as_deref()).await?;
    ok(
        StatusCode::OK,
        doc::PlanUsage {
            plan_id: id,
            start,
            end,
            items: u.quota,
            messages: u.messages,
            connection_minutes: u.connection_minutes,
        },
    )
}

#[utoipa::path(get, path = "/v1/keys/{id}/usage", tag = "usage",
    params(Id, UsageQuery),
    responses((status = 200, description = "Usage by plan and UTC day", body = doc::KeyUsage)))]
pub(super) async fn key_usage(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Reply {
    let (from, to, start, end) = usage_range(&q)?;
    let u = s.cp.key_usage(&id, from, to).await?;
    ok(
        StatusCode::OK,
        doc::KeyUsage {
            key_id: id,
            start,
            end,
            plans: u.quota,
            messages: u.messages,
            connection_minutes: u.connection_minutes,
        },
    )
}

#[utoipa::path(get, path = "/v1/usage/export", tag = "usage",
    params(UsageQuery),
    responses((status = 200, description = "One row per tenant, key, plan and day",
        content((doc::UsageExport = "application/json"), (String = "text/csv")))))]
pub(super) async fn usage_export(State(s): State<AppState>, Query(q): Query<UsageQuery>) -> Reply {
    let (from, to, _, _) = usage_range(&q)?;
    let rows = s.cp.usage_export(from, to).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => ok(StatusCode::OK, doc::UsageExport { rows }),
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TrafficQuery {
    /// How far back: `1m` to `15m` (or `60s` to `900s`) in 10 s steps; default `15m`.
    window: Option<String>,
}

#[utoipa::path(get, path = "/v1/traffic", tag = "usage",
    params(TrafficQuery),
    responses((status = 200, description = "What every data plane answered in the window, per API, summed by the cluster",
        body = crate::traffic::TrafficView)))]
pub(super) async fn traffic(State(s): State<AppState>, Query(q): Query<TrafficQuery>) -> Reply {
    let window_s = crate::traffic::parse_window(q.window.as_deref())?;
    ok(StatusCode::OK, s.cp.traffic(window_s).await)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Adjustment {
    plan: String,
    amount: u64,
}

#[utoipa::path(post, path = "/v1/keys/{id}/quota-adjustments", tag = "usage",
    params(Id), request_body = Adjustment,
    responses((status = 201, description = "More quota for this period", body = doc::QuotaAdjusted)))]
pub(super) async fn adjust_quota(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    let a: Adjustment = parse_json(&body)?;
    if a.amount == 0 {
        return Err(ApiError::InvalidArgument(
            "amount: must be at least 1".into(),
        ));
    }
    let (revision, period) = s.cp.adjust_quota(&id, &a.plan, a.amount).await?;
    ok(
        StatusCode::CREATED,
        doc::QuotaAdjusted {
            key_id: id,
            plan: a.plan,
            amount: a.amount,
            period_start: tollgate_model::usage::format_day(period),
            revision,
        },
    )
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct InvoiceQuery {
    /// The UTC month, `YYYY-MM`.
    month: Option<String>,
}

#[utoipa::path(get, path = "/v1/tenants/{id}/invoice", tag = "billing",
    params(Id, InvoiceQuery),
    responses((status = 200, description = "The tenant's invoice for the month (contract §5.6)",
        body = crate::invoice::Invoice)))]
pub(super) async fn tenant_invoice(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<InvoiceQuery>,
) -> Reply {
    ok(StatusCode::OK, s.cp.invoice(&id, q.month.as_deref()).await?)
}
