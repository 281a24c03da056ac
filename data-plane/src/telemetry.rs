//! Logs and traces for the `tollgate` binary.
//!
//! - Logs: human-readable lines by default, JSON with `--log-format json`,
//!   filtered by `RUST_LOG` (default `info,openraft=warn`).
//! - Traces: `tracing` spans for each request phase (`request` → `route`,
//!   `auth`, `plan`, `cache`, `upstream`) and for admin and Raft operations,
//!   at debug level, so the log filter does not create them by default.
//!   They are exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; otherwise no exporter
//!   exists and the spans cost next to nothing. `OTEL_SDK_DISABLED=true` or
//!   `OTEL_TRACES_EXPORTER=none` turn the export off.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The OTLP endpoint to export traces to, from the environment `get`
/// reads; `None`: no exporter.
pub fn otlp_endpoint(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |k: &str| {
        get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The OTLP endpoint from this process's environment.
pub fn otlp_endpoint_from_env() -> Option<String> {
    otlp_endpoint(|k| std::env::var(k).ok())
}

/// What `init` set up; keep it for the life of the process and `shutdown`
/// it at the end so the last spans are sent.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    endpoint: Option<String>,
}

impl Telemetry {
    /// Where traces are exported, if anywhere.
    pub fn exporting_to(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Send the spans ended so far.
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }

    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            let _ = p.shutdown_with_timeout(Duration::from_secs(5));
        }
    }
}

/// An OTLP/gRPC trace pipeline to `endpoint`. Call inside a Tokio runtime
/// (the gRPC client lives there).
pub fn otlp_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "tollgate".into());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// The spans that are exported: Tollgate's own (debug and up), and
/// warnings from elsewhere as span events.
fn exported() -> Targets {
    Targets::new()
        .with_target("tollgate", Level::DEBUG)
        .with_target("tollgate_data_plane", Level::DEBUG)
        .with_target("tollgate_control_plane", Level::DEBUG)
        .with_default(Level::WARN)
}

/// Install the global subscriber: logs as `format` says (`text` or `json`),
/// and the OTLP exporter if the environment asks for one.
pub fn init(format: &str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=warn".into());
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = if format == "json" {
        tracing_subscriber::fmt::layer()
            .json()
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_filter(filter).boxed()
    };
    let endpoint = otlp_endpoint_from_env();
    let provider = endpoint.as_deref().map(otlp_provider).transpose()?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("tollgate"))
            .with_filter(exported())
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    if let Some(e) = &endpoint {
        tracing::info!(endpoint = %e, "exporting traces over OTLP/gRPC");
    }
    Ok(Telemetry { provider, endpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_endpoint_no_exporter() {
        assert_eq!(otlp_endpoint(|_| None), None);
        assert_eq!(otlp_endpoint(|_| Some("  ".into())), None);
        let env =
            |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://c:4317".to_string());
        assert_eq!(otlp_endpoint(env).as_deref(), Some("http://c:4317"));
        let off = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4317".to_string()),
            "OTEL_SDK_DISABLED" => Some("true".to_string()),
            _ => None,
        };
        assert_eq!(otlp_endpoint(off), None);
    }
}
