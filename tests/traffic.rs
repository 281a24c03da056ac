//! Issue 23, live traffic (contract §5.2 `GET /v1/traffic`): what every
//! data plane answered, summed by the cluster, on whichever node is asked,
//! also one no data plane reports to.
//!
//! Counted per API: every answer of a route of the API, refusals (401,
//! 403, 429) and the API's own 404s (a route answering 404) included. A
//! request matching no route of any API (an unknown path, even under an
//! API's base path) has no route to count against and is in no API's
//! figures, as in the data plane's `/metrics` (`api=""`).

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::dp::{http, start_dp_named, wait_for_revision};
use common::{init_tracing, Cluster};
use serde_json::{json, Value};
use tollgate_data_plane::DataPlaneHandle;

/// What a client saw, per API: (requests, 4xx, 5xx).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Tally {
    requests: u64,
    errors_4xx: u64,
    errors_5xx: u64,
}

#[derive(Default)]
struct Seen {
    by_api: BTreeMap<&'static str, Tally>,
    statuses: Vec<u16>,
}

impl Seen {
    /// Send `GET path` (with `key` as `x-api-key`) to `dp`; count the answer
    /// for `api` when there is one.
    async fn get(
        &mut self,
        dp: &DataPlaneHandle,
        api: Option<&'static str>,
        path: &str,
        key: Option<&str>,
    ) -> u16 {
        let mut req = http().get(format!("http://{}{path}", dp.proxy_addr));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let status = req.send().await.expect("the data plane answers").status();
        let s = status.as_u16();
        self.statuses.push(s);
        if let Some(api) = api {
            let t = self.by_api.entry(api).or_default();
            t.requests += 1;
            t.errors_4xx += u64::from(status.is_client_error());
            t.errors_5xx += u64::from(status.is_server_error());
        }
        s
    }
}

fn tally_of(v: &Value) -> Tally {
    Tally {
        requests: v["requests"].as_u64().unwrap(),
        errors_4xx: v["errors_4xx"].as_u64().unwrap(),
        errors_5xx: v["errors_5xx"].as_u64().unwrap(),
    }
}

/// The cluster's documents: `shop` (routes answering 200, 404 and 503),
/// `badge` (a JWT authorizer), `locked` (an API key on a throttled plan),
/// `walled` (denies loopback).
/// Returns the revision holding them all and a key of the plan.
async fn configure(cluster: &Cluster) -> (u64, String) {
    let admin = cluster.nodes[cluster.leader().await].client();
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    admin
        .must_put(
            "/v1/apis/shop",
            json!({"base_path": "/shop", "routes": [
                {"id": "ok", "path": "/ok", "mock": {"status": 200, "body": "ok"}},
                {"id": "missing", "path": "/missing", "mock": {"status": 404, "body": "no"}},
                {"id": "boom", "path": "/boom", "mock": {"status": 503, "body": "down"}}]}),
        )
        .await;
    admin
        .must_put(
            "/v1/apis/locked",
            json!({"base_path": "/locked", "auth": {"api_key": true},
                   "routes": [{"id": "all", "path": "/{rest+}", "mock": {"body": "in"}}]}),
        )
        .await;
    admin
        .must_put(
            "/v1/authorizers/idp",
            json!({"issuer": "https://idp.test", "algorithms": ["HS256"], "secret": "traffic-secret"}),
        )
        .await;
    admin
        .must_put(
            "/v1/apis/badge",
            json!({"base_path": "/badge", "auth": {"authorizer": "idp"},
                   "routes": [{"id": "all", "path": "/{rest+}", "mock": {"body": "in"}}]}),
        )
        .await;
    admin
        .must_put(
            "/v1/usage-plans/tiny",
            json!({"apis": ["locked"], "throttle": {"rate": 1, "burst": 1}}),
        )
        .await;
    let (_, key) = admin.issue_key("tiny").await;
    // Written last, so its revision holds everything above.
    let rev = admin
        .must_put(
            "/v1/apis/walled",
            json!({"base_path": "/walled", "ip_deny": ["127.0.0.0/8"],
                   "routes": [{"id": "all", "path": "/{rest+}", "mock": {"body": "in"}}]}),
        )
        .await;
    (rev, key)
}

/// Known answers of every kind through `dp`.
async fn drive(seen: &mut Seen, dp: &DataPlaneHandle, key: &str) {
    for _ in 0..6 {
        assert_eq!(seen.get(dp, Some("shop"), "/shop/ok", None).await, 200);
    }
    for _ in 0..3 {
        assert_eq!(seen.get(dp, Some("shop"), "/shop/missing", None).await, 404);
    }
    for _ in 0..2 {
        assert_eq!(seen.get(dp, Some("shop"), "/shop/boom", None).await, 503);
        // No token for a JWT authorizer; no API key; a denied address.
        assert_eq!(seen.get(dp, Some("badge"), "/badge/x", None).await, 401);
        assert_eq!(seen.get(dp, Some("locked"), "/locked/x", None).await, 403);
        assert_eq!(seen.get(dp, Some("walled"), "/walled/x", None).await, 403);
    }
    // Back to back over a rate of 1/s and a burst of 1: 429s come soon.
    let mut limited = 0;
    for _ in 0..50 {
        if seen.get(dp, Some("locked"), "/locked/x", Some(key)).await == 429 {
            limited += 1;
            if limited == 2 {
                break;
            }
        }
    }
    assert_eq!(
        limited, 2,
        "no 429 in 50 requests at 1/s: {:?}",
        seen.statuses
    );
    // Matching no route: counted for no API.
    assert_eq!(seen.get(dp, None, "/shop/elsewhere", None).await, 404);
    assert_eq!(seen.get(dp, None, "/nowhere", None).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_answers_with_what_every_data_plane_answered() {
    init_tracing();
    let cluster = Cluster::start(3).await;
    cluster.wait_for_voters(3).await;
    let (rev, key) = configure(&cluster).await;
    // Each data plane streams from, and reports to, a node of its own;
    // node 2 hears from none.
    let dp1 = start_dp_named(vec![cluster.nodes[0].grpc_url()], "dp-one").await;
    let dp2 = start_dp_named(vec![cluster.nodes[1].grpc_url()], "dp-two").await;
    wait_for_revision(&dp1, rev).await;
    wait_for_revision(&dp2, rev).await;

    let mut seen = Seen::default();
    drive(&mut seen, &dp1, &key).await;
    drive(&mut seen, &dp2, &key).await;
    drive(&mut seen, &dp1, &key).await;
    for s in [200, 401, 403, 404, 429, 503] {
        assert!(seen.statuses.contains(&s), "no {s}: {:?}", seen.statuses);
    }
    let want = seen.by_api.clone();

    // On the node no data plane reports to, and on one that one does.
    for node in [2, 0] {
        let admin = cluster.nodes[node].client();
        let deadline = Instant::now() + Duration::from_secs(30);
        let v = loop {
            let (s, v) = admin.get("/v1/traffic?window=5m").await;
            assert_eq!(s, 200, "{v}");
            let got: BTreeMap<&str, Tally> = v["apis"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, a)| (k.as_str(), tally_of(a)))
                .collect();
            if got == want {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "node {node}: {got:?}, the clients saw {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        check_series(&v, 300);
        conforms(&v);
    }
    // Node 2's figures came from its peers: it holds none itself.
    let held = |i: usize| cluster.nodes[i].handle().control.traffic.held(0);
    assert!(held(2).is_empty());
    let names = |i: usize| -> Vec<String> { held(i).into_iter().map(|r| r.data_plane).collect() };
    assert_eq!(names(0), ["dp-one"]);
    assert_eq!(names(1), ["dp-two"]);

    dp1.shutdown().await;
    dp2.shutdown().await;
}

/// The answer's shape: one step per 10 s of the window, consecutive and
/// aligned, adding up to each API's totals; `p99_ms` null exactly where
/// nothing was answered.
fn check_series(v: &Value, window_s: u64) {
    assert_eq!(
        (v["window_s"].as_u64(), v["step_s"].as_u64()),
        (Some(window_s), Some(10)),
        "{v}"
    );
    for (api, a) in v["apis"].as_object().unwrap() {
        let series = a["series"].as_array().unwrap();
        assert_eq!(series.len() as u64, window_s / 10, "{api}");
        let mut sum = Tally::default();
        for (i, step) in series.iter().enumerate() {
            let t = step["t"].as_u64().unwrap();
            assert_eq!(t % 10, 0, "{api}: {step}");
            if i > 0 {
                assert_eq!(t, series[i - 1]["t"].as_u64().unwrap() + 10, "{api}");
            }
            let s = tally_of(step);
            assert_eq!(step["p99_ms"].is_null(), s.requests == 0, "{api}: {step}");
            sum.requests += s.requests;
            sum.errors_4xx += s.errors_4xx;
            sum.errors_5xx += s.errors_5xx;
        }
        assert_eq!(sum, tally_of(a), "{api}: the series does not add up");
        assert!(a["p99_ms"].as_f64().is_some_and(|p| p >= 0.0), "{api}: {a}");
    }
    // The last step holds now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for a in v["apis"].as_object().unwrap().values() {
        let last = a["series"].as_array().unwrap().last().unwrap()["t"]
            .as_u64()
            .unwrap();
        assert!(last <= now && now < last + 60, "{last} vs {now}");
    }
}

/// The answer validates against its schema in `GET /v1/openapi.json`
/// (with data in it, which `tests/openapi.rs`'s empty cluster has not).
fn conforms(v: &Value) {
    let doc = serde_json::to_value(tollgate_control_plane::rest::document()).unwrap();
    let schema = &doc["paths"]["/v1/traffic"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    let root = json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"], "allOf": [schema]});
    let validator = jsonschema::draft202012::new(&root).unwrap();
    let errors: Vec<String> = validator.iter_errors(v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_outside_one_to_fifteen_minutes_is_refused() {
    init_tracing();
    let cluster = Cluster::start(1).await;
    let admin = cluster.nodes[0].client();
    for bad in ["1h", "30s", "16m", "abc", "5", "-1m", "65s"] {
        let (s, v) = admin.get(&format!("/v1/traffic?window={bad}")).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{bad}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("window: "), "{bad}: {msg}");
    }
    // No data plane, no traffic: an empty answer, the whole 15 minutes
    // by default.
    let (s, v) = admin.get("/v1/traffic").await;
    assert_eq!(
        (s, &v),
        (200, &json!({"window_s": 900, "step_s": 10, "apis": {}}))
    );
    let (s, v) = admin.get("/v1/traffic?window=900s").await;
    assert_eq!((s, v["window_s"].as_u64()), (200, Some(900)));
    // The admin token is needed, as on every other /v1 route.
    let (s, _) = admin.clone().with_token(None).get("/v1/traffic").await;
    assert_eq!(s, 401);
}
