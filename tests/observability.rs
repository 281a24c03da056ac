//! Metrics, access logs and trace context (issue 6): the status port's and
//! the admin port's metrics scraped and parsed, the access log read back
//! from a file, `traceparent` checked at the upstream, and no OTLP exporter
//! without `OTEL_EXPORTER_OTLP_ENDPOINT`.

use crate::common;
use crate::observe;

use std::io::BufRead;
use std::time::Duration;

use common::dp::{
    eventually, http, resource, start_dp, wait_for_revision, MockControlPlane, Reply,
};
use common::{init_tracing, Cluster};
use observe::{metric, scrape, start_dp_logged, Origin};
use serde_json::{json, Value};
use tollgate_data_plane::{AccessLogTarget, DataPlaneHandle};
use tollgate_model::key;
use tollgate_proto::{ConfigUpdate, ResourceKind as K};

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Keys {
    alice_id: &'static str,
    alice: String,
    carol: String,
}

/// A mock control plane serving: `open` (a cached and a plain route),
/// `keyed` (API keys, plan `basic`) and `limited` (API keys, plan `tight`
/// with a throttle of one request per 10 s).
async fn setup(
    origin: &Origin,
    access_log: AccessLogTarget,
) -> (MockControlPlane, DataPlaneHandle, Keys) {
    let alice = key::generate();
    let carol = key::generate();
    let record = |id: &str, value: &str, plan: &str| {
        resource(
            K::ApiKey,
            id,
            json!({"id": id, "tenant": "acme", "name": id, "prefix": key::display_prefix(value),
                   "hash": key::hash(SECRET, value), "plans": [plan], "enabled": true,
                   "created_at": 0}),
        )
    };
    let api = |doc: Value| resource(K::Api, doc["id"].as_str().unwrap(), doc.clone());
    let upstream = json!({"targets": [{"url": origin.url()}]});
    let update = ConfigUpdate {
        revision: 1,
        full: true,
        base_revision: 0,
        upserts: vec![
            resource(K::Settings, "cluster", json!({"key_hash_secret": SECRET})),
            api(
                json!({"id": "open", "base_path": "/open", "upstream": upstream,
                       "routes": [{"id": "cached", "path": "/c/{rest+}", "cache": {"ttl_s": 60}},
                                  {"id": "plain", "path": "/p/{rest+}"}]}),
            ),
            api(
                json!({"id": "keyed", "base_path": "/keyed", "upstream": upstream,
                       "auth": {"api_key": true}, "routes": [{"id": "all", "path": "/{rest+}"}]}),
            ),
            api(
                json!({"id": "limited", "base_path": "/limited", "upstream": upstream,
                       "auth": {"api_key": true}, "routes": [{"id": "all", "path": "/{rest+}"}]}),
            ),
            resource(
                K::UsagePlan,
                "basic",
                json!({"id": "basic", "apis": ["keyed"]}),
            ),
            resource(
                K::UsagePlan,
                "tight",
                json!({"id": "tight", "apis": ["limited"],
                                                  "throttle": {"rate": 0.1, "burst": 1}}),
            ),
            record("key_alice", &alice, "basic"),
            record("key_carol", &carol, "tight"),
        ],
        removals: vec![],
    };
    let cp = MockControlPlane::start().await;
    let dp = start_dp_logged(vec![cp.url.clone()], access_log).await;
    assert_eq!(cp.push(update).await, Reply::Ack(1));
    (
        cp,
        dp,
        Keys {
            alice_id: "key_alice",
            alice,
            carol,
        },
    )
}

async fn send(
    dp: &DataPlaneHandle,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = http().request(
        method.parse().unwrap(),
        format!("http://{}{path}", dp.proxy_addr),
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if method == "POST" {
        req = req.body("hello");
    }
    let res = req.send().await.unwrap();
    res
}

#[tokio::test]
async fn status_port_metrics_count_requests_cache_results_and_refusals() {
    init_tracing();
    let origin = Origin::start().await;
    let (_cp, dp, keys) = setup(&origin, AccessLogTarget::Off).await;

    for _ in 0..3 {
        assert_eq!(send(&dp, "GET", "/open/c/a", &[]).await.status(), 200);
    }
    assert_eq!(send(&dp, "POST", "/open/c/a", &[]).await.status(), 200);
    for _ in 0..2 {
        send(&dp, "GET", "/open/p/x", &[])
            .await
            .text()
            .await
            .unwrap();
    }
    assert_eq!(send(&dp, "GET", "/nothing/here", &[]).await.status(), 404);
    for _ in 0..2 {
        assert_eq!(send(&dp, "GET", "/keyed/x", &[]).await.status(), 403);
    }
    assert_eq!(
        send(&dp, "GET", "/keyed/x", &[("x-api-key", &keys.alice)])
            .await
            .status(),
        200
    );
    let statuses: Vec<u16> = futures::future::join_all((0..3).map(|_| async {
        send(&dp, "GET", "/limited/x", &[("x-api-key", &keys.carol)])
            .await
            .status()
            .as_u16()
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );

    let text = reqwest::get(format!("http://{}/metrics", dp.status_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = observe::parse_metrics(&text);
    let cached = [("api", "open"), ("route", "cached")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut l = cached.to_vec();
        l.extend_from_slice(extra);
        l
    };
    let get = |name: &str, labels: &[(&str, &str)]| metric(&m, name, labels);

    assert_eq!(
        get(
            "tollgate_requests_total",
            &with(&[("method", "GET"), ("status_class", "2xx")])
        ),
        3.0
    );
    assert_eq!(
        get(
            "tollgate_requests_total",
            &with(&[("method", "POST"), ("status_class", "2xx")])
        ),
        1.0
    );
    assert_eq!(
        get(
            "tollgate_cache_requests_total",
            &with(&[("result", "miss")])
        ),
        1.0
    );
    assert_eq!(
        get("tollgate_cache_requests_total", &with(&[("result", "hit")])),
        2.0
    );
    assert_eq!(
        get(
            "tollgate_cache_requests_total",
            &with(&[("result", "bypass")])
        ),
        1.0
    );
    assert_eq!(get("tollgate_request_duration_seconds_count", &cached), 4.0);
    assert_eq!(
        get(
            "tollgate_request_duration_seconds_bucket",
            &with(&[("le", "+Inf")])
        ),
        4.0
    );
    assert!(get("tollgate_request_duration_seconds_sum", &cached) > 0.0);
    assert_eq!(
        get("tollgate_upstream_duration_seconds_count", &cached),
        2.0,
        "a miss and a bypass"
    );
    assert_eq!(
        get("tollgate_request_bytes_total", &cached),
        5.0,
        "the POST body"
    );
    assert!(get("tollgate_response_bytes_total", &cached) > 0.0);
    assert_eq!(
        get(
            "tollgate_requests_total",
            &[("api", "open"), ("route", "plain"), ("method", "GET")]
        ),
        2.0
    );
    assert_eq!(
        get(
            "tollgate_requests_total",
            &[("api", ""), ("route", ""), ("status_class", "4xx")]
        ),
        1.0,
        "the unmatched request"
    );
    assert_eq!(
        get(
            "tollgate_auth_failures_total",
            &[("api", "keyed"), ("reason", "forbidden")]
        ),
        2.0
    );
    assert_eq!(
        get(
            "tollgate_requests_total",
            &[("api", "keyed"), ("status_class", "2xx")]
        ),
        1.0
    );
    assert_eq!(get("tollgate_throttled_total", &[]), 2.0);
    assert_eq!(get("tollgate_over_quota_total", &[]), 0.0);
    assert_eq!(
        get(
            "tollgate_requests_total",
            &[("api", "limited"), ("status_class", "4xx")]
        ),
        2.0
    );
    let target = origin.url();
    assert_eq!(
        get(
            "tollgate_upstream_healthy",
            &[("api", "open"), ("target", &target)]
        ),
        1.0
    );
    assert_eq!(
        get(
            "tollgate_upstream_breaker_open",
            &[("api", "open"), ("target", &target)]
        ),
        0.0
    );
    assert_eq!(get("tollgate_config_revision", &[]), 1.0);
    assert!(m
        .iter()
        .any(|s| s.name == "tollgate_config_age_seconds" && s.value >= 0.0));
    assert_eq!(get("tollgate_control_plane_connected", &[]), 1.0);

    // Bounded labels: never a raw path, a key id or a key.
    for s in &m {
        for (k, v) in &s.labels {
            assert!(
                matches!(
                    k.as_str(),
                    "api"
                        | "route"
                        | "method"
                        | "status_class"
                        | "le"
                        | "result"
                        | "reason"
                        | "target"
                        | "outcome"
                ),
                "unexpected label {k} in {s:?}"
            );
            assert!(
                !v.contains("/c/a") && !v.contains("/nothing") && !v.contains("key_"),
                "{s:?}"
            );
        }
    }
    assert!(!text.contains(&keys.alice) && !text.contains(keys.alice_id));

    // Counters move: one more hit.
    send(&dp, "GET", "/open/c/a", &[]).await;
    let m = scrape(&format!("http://{}/metrics", dp.status_addr)).await;
    assert_eq!(
        metric(
            &m,
            "tollgate_cache_requests_total",
            &with(&[("result", "hit")])
        ),
        3.0
    );
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_access_log_has_one_line_per_request_and_no_secret() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let origin = Origin::start().await;
    let (_cp, dp, keys) = setup(&origin, AccessLogTarget::File(log.clone())).await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let miss = send(
        &dp,
        "GET",
        "/open/c/a?token=SECRET_QUERY",
        &[("traceparent", &tp)],
    )
    .await;
    let miss_id = miss.headers()["x-request-id"].to_str().unwrap().to_string();
    send(
        &dp,
        "GET",
        "/open/c/a?token=SECRET_QUERY",
        &[("x-request-id", "my-request-1")],
    )
    .await;
    send(&dp, "GET", "/keyed/orders", &[("x-api-key", &keys.alice)]).await;
    send(
        &dp,
        "GET",
        "/keyed/orders",
        &[("x-api-key", "tg_wrong_secret_value")],
    )
    .await;
    send(&dp, "GET", "/nothing", &[]).await;
    send(&dp, "POST", "/open/p/x", &[]).await;
    let sent = 6;

    eventually("every line written", Duration::from_secs(5), || {
        let n = lines(&log).len();
        async move { n >= sent }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let raw = std::fs::read_to_string(&log).unwrap();
    let lines = lines(&log);
    assert_eq!(lines.len(), sent, "one line per request:\n{raw}");
    for secret in [
        keys.alice.as_str(),
        "SECRET_QUERY",
        "tg_wrong_secret_value",
        SECRET,
    ] {
        assert!(!raw.contains(secret), "{secret} in the access log:\n{raw}");
    }
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for e in &entries {
        for field in [
            "time",
            "request_id",
            "trace_id",
            "api",
            "route",
            "method",
            "path",
            "status",
            "key_id",
            "subject",
            "tenant",
            "upstream",
            "latency_ms",
            "upstream_latency_ms",
            "bytes_in",
            "bytes_out",
            "cache",
            "reason",
        ] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
        assert!(e["latency_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(e["trace_id"].as_str().unwrap().len(), 32);
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
    }
    let e = &entries[0];
    assert_eq!(e["request_id"], miss_id.as_str());
    assert_eq!(e["trace_id"], trace, "the caller's trace");
    assert_eq!(
        (e["api"].as_str(), e["route"].as_str()),
        (Some("open"), Some("cached"))
    );
    assert_eq!(e["path"], "/open/c/a", "no query string");
    assert_eq!(
        (e["method"].as_str(), e["status"].as_u64()),
        (Some("GET"), Some(200))
    );
    assert_eq!(e["cache"], "Miss");
    assert_eq!(e["upstream"], origin.url().as_str());
    assert!(e["upstream_latency_ms"].as_f64().unwrap() > 0.0);
    assert!(e["bytes_out"].as_u64().unwrap() > 0);
    assert!(e["reason"].is_null() && e["key_id"].is_null());

    let e = &entries[1];
    assert_eq!(e["request_id"], "my-request-1");
    assert_eq!(e["cache"], "Hit");
    assert!(e["upstream"].is_null() && e["upstream_latency_ms"].is_null());

    let e = &entries[2];
    assert_eq!(
        (e["key_id"].as_str(), e["tenant"].as_str()),
        (Some(keys.alice_id), Some("acme"))
    );
    assert_eq!(e["status"], 200);
    assert!(e["cache"].is_null());

    let e = &entries[3];
    assert_eq!(
        (e["status"].as_u64(), e["reason"].as_str()),
        (Some(403), Some("forbidden"))
    );
    assert!(e["key_id"].is_null() && e["upstream"].is_null());

    let e = &entries[4];
    assert_eq!(
        (e["status"].as_u64(), e["reason"].as_str()),
        (Some(404), Some("no_route"))
    );
    assert!(e["api"].is_null());

    let e = &entries[5];
    assert_eq!(
        (e["method"].as_str(), e["bytes_in"].as_u64()),
        (Some("POST"), Some(5))
    );

    // The log's trace id is the one the upstream was sent, with or without
    // a caller's traceparent.
    let seen = origin.seen();
    let keyed = seen.iter().find(|s| s.path == "/orders").unwrap();
    let upstream_trace = &keyed.traceparent.as_ref().unwrap()[3..35];
    assert_eq!(entries[2]["trace_id"], upstream_trace);
    dp.shutdown().await;
}

#[tokio::test]
async fn the_upstream_gets_a_child_span_of_the_callers_trace() {
    init_tracing();
    let origin = Origin::start().await;
    let (_cp, dp, _) = setup(&origin, AccessLogTarget::Off).await;
    let parent = "00f067aa0ba902b7";
    for flags in ["01", "00"] {
        let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{parent}-{flags}");
        send(
            &dp,
            "GET",
            &format!("/open/p/trace-{flags}"),
            &[("traceparent", &tp), ("tracestate", "k=v")],
        )
        .await;
        let seen = origin.seen();
        let got = seen
            .iter()
            .find(|s| s.path == format!("/p/trace-{flags}"))
            .and_then(|s| s.traceparent.clone())
            .unwrap();
        let parts: Vec<&str> = got.split('-').collect();
        assert_eq!(parts.len(), 4, "{got}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
        assert_eq!(parts[2].len(), 16);
        assert_ne!(
            parts[2], parent,
            "a new span: the gateway's, a child of the caller's"
        );
        assert_ne!(parts[2], "0000000000000000");
        assert_eq!(parts[3], flags, "sampling decision kept");
    }
    // No or a malformed traceparent: a new trace.
    for tp in [None, Some("00-zz-00f067aa0ba902b7-01")] {
        let mut h = vec![];
        if let Some(tp) = tp {
            h.push(("traceparent", tp));
        }
        let path = format!("/open/p/fresh-{}", tp.is_some());
        send(&dp, "GET", &path, &h).await;
        let seen = origin.seen();
        let got = seen
            .iter()
            .find(|s| s.path == path.trim_start_matches("/open"))
            .and_then(|s| s.traceparent.clone())
            .unwrap();
        let parts: Vec<&str> = got.split('-').collect();
        assert_eq!(
            (parts.len(), parts[1].len(), parts[2].len()),
            (4, 32, 16),
            "{got}"
        );
        assert_ne!(parts[1], "00000000000000000000000000000000");
    }
}

#[tokio::test]
async fn admin_port_metrics_show_raft_data_planes_admin_requests_and_usage() {
    init_tracing();
    let cluster = Cluster::start(1).await;
    let admin = cluster.nodes[0].client();
    let origin = Origin::start().await;
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    admin
        .must_put(
            "/v1/apis/orders",
            json!({"base_path": "/orders", "auth": {"api_key": true},
                   "upstream": {"targets": [{"url": origin.url()}]},
                   "routes": [{"id": "all", "path": "/{rest+}", "cache": {"ttl_s": 60}}]}),
        )
        .await;
    admin.get("/v1/apis/orders").await;
    admin.get("/v1/apis/orders").await;
    assert_eq!(admin.get("/v1/apis/missing").await.0, 404);
    let rev = admin
        .must_put("/v1/usage-plans/basic", json!({"apis": ["orders"]}))
        .await;
    let (s, v) = admin
        .post("/v1/keys", json!({"tenant": "acme", "plans": ["basic"]}))
        .await;
    assert_eq!(s, 201, "{v}");
    let value = v["value"].as_str().unwrap().to_string();
    let (s, _) = admin.delete("/v1/apis/orders/cache").await;
    assert_eq!(s, 200);

    let dp = start_dp(vec![cluster.nodes[0].grpc_url()], None).await;
    wait_for_revision(&dp, rev + 1).await;
    for _ in 0..3 {
        let res = http()
            .get(format!("http://{}/orders/x", dp.proxy_addr))
            .header("x-api-key", &value)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    let url = format!("{}/metrics", cluster.nodes[0].admin_url());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(&url).await;
        if metric(&m, "tollgate_usage_batches_applied_total", &[]) >= 1.0
            && m.iter()
                .any(|s| s.name == "tollgate_data_plane_revision_lag" && s.value == 0.0)
        {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no usage batch or a lag: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let get = |name: &str, labels: &[(&str, &str)]| metric(&m, name, labels);
    assert!(get("tollgate_raft_term", &[]) >= 1.0);
    assert_eq!(get("tollgate_raft_is_leader", &[]), 1.0);
    assert_eq!(get("tollgate_raft_leader_id", &[]), 1.0);
    let applied = get("tollgate_raft_applied_index", &[]);
    assert!(applied >= rev as f64);
    assert!(get("tollgate_raft_commit_index", &[]) >= applied);
    assert!(get("tollgate_raft_last_log_index", &[]) >= applied);
    assert!(get("tollgate_raft_log_entries", &[]) >= 1.0);
    assert_eq!(get("tollgate_data_planes_connected", &[]), 1.0);
    let admin_req = |method: &str, route: &str, status: &str| {
        get(
            "tollgate_admin_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(admin_req("PUT", "/v1/apis/{id}", "200"), 1.0);
    assert_eq!(admin_req("GET", "/v1/apis/{id}", "200"), 2.0);
    assert_eq!(admin_req("GET", "/v1/apis/{id}", "404"), 1.0);
    assert_eq!(admin_req("POST", "/v1/keys", "201"), 1.0);
    assert_eq!(admin_req("DELETE", "/v1/apis/{id}/cache", "200"), 1.0);
    for s in &m {
        if let Some(route) = s.labels.get("route") {
            assert!(
                !route.contains("orders") && !route.contains("missing"),
                "raw path in {s:?}"
            );
        }
    }
    dp.shutdown().await;
}

/// Run `tollgate echo` with `env`, and return what it printed until it
/// said it is listening.
fn echo_output(env: &[(&str, &str)], args: &[&str]) -> Vec<String> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args)
        .args(["echo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        let done = line.contains("listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("listening on")),
        "{lines:?}"
    );
    lines
}

#[test]
fn no_exporter_without_otel_exporter_otlp_endpoint() {
    use tollgate_data_plane::telemetry::otlp_endpoint;
    assert_eq!(otlp_endpoint(|_| None), None);
    let lines = echo_output(&[], &[]);
    assert!(!lines.iter().any(|l| l.contains("OTLP")), "{lines:?}");

    // With the variable set, the exporter is there (it says so), and
    // `--log-format json` makes that a JSON line.
    let lines = echo_output(
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")],
        &["--log-format", "json"],
    );
    let line = lines
        .iter()
        .find(|l| l.contains("OTLP"))
        .unwrap_or_else(|| panic!("no exporter line in {lines:?}"));
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["fields"]["endpoint"], "http://127.0.0.1:9");
}
