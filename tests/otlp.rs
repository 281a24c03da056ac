//! OTLP export (issue 6): with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the
//! request's spans reach an OTLP receiver (a tonic server here) with the
//! caller's `traceparent` as the parent, and the upstream is sent the span
//! id of the gateway's `upstream` span.
//!
//! One test in its own process: it installs the global subscriber.

mod common;
mod observe;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dp::{dp_with_apis, http};
use observe::Origin;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use tollgate_data_plane::Limits;

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_under_the_callers_trace() {
    let receiver = Receiver::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    let r = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
            .await
            .unwrap();
    });
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::remove_var("OTEL_SDK_DISABLED");
    std::env::remove_var("OTEL_TRACES_EXPORTER");
    std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let telemetry = tollgate_data_plane::telemetry::init("text").unwrap();
    assert_eq!(telemetry.exporting_to(), Some(endpoint.as_str()));

    let origin = Origin::start().await;
    let api = json!({
        "id": "shop", "base_path": "/shop",
        "upstream": {"targets": [{"url": origin.url()}]},
        "routes": [{"id": "items", "path": "/items/{id}", "cache": {"ttl_s": 60}}]
    });
    let (_cp, dp) = dp_with_apis(&[api], Limits::default()).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let res = http()
        .get(format!("http://{}/shop/items/1", dp.proxy_addr))
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent = origin.seen()[0].traceparent.clone().unwrap();
    let upstream_parent = sent.split('-').nth(2).unwrap().to_string();

    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let spans = loop {
        telemetry.flush();
        let spans: Vec<Span> = receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .cloned()
            .collect();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        if ["request", "route", "auth", "plan", "cache", "upstream"]
            .iter()
            .all(|n| names.contains(n))
        {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spans so far: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
    let request = by_name("request");
    assert_eq!(
        hex(&request.parent_span_id),
        caller_span,
        "the caller's span is the parent"
    );
    for phase in ["route", "auth", "plan", "cache"] {
        assert_eq!(
            hex(&by_name(phase).parent_span_id),
            hex(&request.span_id),
            "{phase} is a child of the request span"
        );
    }
    // On a miss, the upstream fetch is the cache phase's work.
    let upstream = by_name("upstream");
    assert_eq!(
        hex(&upstream.parent_span_id),
        hex(&by_name("cache").span_id)
    );
    assert_eq!(
        hex(&upstream.span_id),
        upstream_parent,
        "the upstream's traceparent names the gateway's upstream span"
    );
    assert_eq!(&sent[3..35], trace);
    telemetry.shutdown();
}
