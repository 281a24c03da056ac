//! The status port: `/healthz`, `/readyz` (ready once a config is held),
//! `/metrics` (Prometheus text) and `/config` (revision and counts, never a
//! secret).

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tollgate_model::ResourceKind;

use crate::config::Connection;
use crate::gateway::Gateway;
use crate::metrics::{escape, family};

#[derive(Clone)]
struct Status {
    gateway: Arc<Gateway>,
    connection: watch::Receiver<Connection>,
}

pub async fn run(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    connection: watch::Receiver<Connection>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .with_state(Status {
            gateway,
            connection,
        });
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
}

async fn readyz(State(s): State<Status>) -> impl IntoResponse {
    if s.gateway.snapshot().revision() > 0 {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no config yet")
    }
}

async fn config(State(s): State<Status>) -> impl IntoResponse {
    let snap = s.gateway.snapshot();
    let counts: serde_json::Map<String, serde_json::Value> = ResourceKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), snap.config.count(*k).into()))
        .collect();
    Json(serde_json::json!({
        "revision": snap.revision(),
        "age_s": age_s(snap.applied_at),
        "counts": counts,
        "control_plane": s.connection.borrow().endpoint,
    }))
}

fn age_s(t: SystemTime) -> f64 {
    t.elapsed().map_or(0.0, |d| d.as_secs_f64())
}

async fn metrics(State(s): State<Status>) -> impl IntoResponse {
    let snap = s.gateway.snapshot();
    let gw = &s.gateway;
    let mut out = String::with_capacity(16 * 1024);
    family(
        &mut out,
        "tollgate_config_revision",
        "gauge",
        "The config revision in force.",
    );
    let _ = writeln!(out, "tollgate_config_revision {}", snap.revision());
    family(
        &mut out,
        "tollgate_config_age_seconds",
        "gauge",
        "Seconds since the config in force was applied.",
    );
    let _ = writeln!(
        out,
        "tollgate_config_age_seconds {:.3}",
        age_s(snap.applied_at)
    );
    let connected = u8::from(s.connection.borrow().endpoint.is_some());
    family(
        &mut out,
        "tollgate_control_plane_connected",
        "gauge",
        "1 while the config stream to the control plane is up.",
    );
    let _ = writeln!(out, "tollgate_control_plane_connected {connected}");
    gw.metrics.render(&mut out);
    gw.connections.metrics.render(&mut out);
    snap.auth.render_metrics(&mut out);

    let (throttled, over_quota) = gw.plans().map_or((0, 0), |p| {
        (
            p.throttled.load(Ordering::Relaxed),
            p.over_quota.load(Ordering::Relaxed),
        )
    });
    family(
        &mut out,
        "tollgate_throttled_total",
        "counter",
        "Requests refused by a usage plan's throttle (429).",
    );
    let _ = writeln!(out, "tollgate_throttled_total {throttled}");
    family(
        &mut out,
        "tollgate_over_quota_total",
        "counter",
        "Requests refused because the quota was used up (429).",
    );
    let _ = writeln!(out, "tollgate_over_quota_total {over_quota}");

    let (entries, bytes) = gw.cache.usage();
    family(
        &mut out,
        "tollgate_cache_entries",
        "gauge",
        "Responses held by the cache.",
    );
    let _ = writeln!(out, "tollgate_cache_entries {entries}");
    family(
        &mut out,
        "tollgate_cache_bytes",
        "gauge",
        "Approximate bytes held by the cache.",
    );
    let _ = writeln!(out, "tollgate_cache_bytes {bytes}");

    let mut pools: Vec<(&str, &Arc<crate::upstream::UpstreamPool>)> = snap
        .config
        .of_kind(ResourceKind::Api)
        .filter_map(|r| {
            snap.routes
                .api(r.id())
                .and_then(|a| a.upstream.as_ref())
                .map(|p| (r.id(), p))
        })
        .collect();
    pools.sort_by_key(|(id, _)| *id);
    for (name, help, value) in [
        (
            "tollgate_upstream_healthy",
            "1 if the target passes its health checks.",
            (|p: &crate::upstream::UpstreamPool, i: usize| u64::from(p.targets[i].is_healthy()))
                as fn(&crate::upstream::UpstreamPool, usize) -> u64,
        ),
        (
            "tollgate_upstream_breaker_open",
            "1 while the target's circuit breaker is open.",
            |p, i| u64::from(p.breaker_open(i)),
        ),
        (
            "tollgate_upstream_in_flight",
            "Requests to the target under way.",
            |p, i| p.targets[i].in_flight() as u64,
        ),
    ] {
        family(&mut out, name, "gauge", help);
        for (api, pool) in &pools {
            for (i, t) in pool.targets.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{api=\"{}\",target=\"{}\"}} {}",
                    escape(api),
                    escape(&t.url),
                    value(pool, i)
                );
            }
        }
    }

    if let Some(log) = gw.access_log() {
        let (written, dropped) = log.counts();
        family(
            &mut out,
            "tollgate_access_log_lines_total",
            "counter",
            "Access log lines written, and dropped because the writer fell behind.",
        );
        let _ = writeln!(
            out,
            "tollgate_access_log_lines_total{{outcome=\"written\"}} {written}"
        );
        let _ = writeln!(
            out,
            "tollgate_access_log_lines_total{{outcome=\"dropped\"}} {dropped}"
        );
    }
    ([("content-type", "text/plain; version=0.0.4")], out)
}
