//! The status port: `/healthz`, `/readyz` (ready once a config is held),
//! `/metrics` (Prometheus text) and `/config` (revision and counts, never a
//! secret).

use std::fmt::Write;
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
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE tollgate_config_revision gauge");
    let _ = writeln!(out, "tollgate_config_revision {}", snap.revision());
    let _ = writeln!(out, "# TYPE tollgate_config_age_seconds gauge");
    let _ = writeln!(
        out,
        "tollgate_config_age_seconds {:.3}",
        age_s(snap.applied_at)
    );
    let connected = u8::from(s.connection.borrow().endpoint.is_some());
    let _ = writeln!(out, "# TYPE tollgate_control_plane_connected gauge");
    let _ = writeln!(out, "tollgate_control_plane_connected {connected}");
    s.gateway.stats.render(&mut out);
    ([("content-type", "text/plain; version=0.0.4")], out)
}
