//! Request authorizers (issue 21, contract §5.4): a real control-plane
//! node, a data plane, and a real authorizer service in the test that
//! records every call. One cluster for the whole binary: one test, in
//! sections.

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::dp::{eventually, http, start_dp, start_echo, wait_for_revision, TestUpstream};
use common::{init_tracing, Cluster};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The authorizer service: its answer depends on the first identity value
/// (the token), and every call is recorded.
#[derive(Clone, Default)]
struct Authz {
    calls: Arc<Mutex<Vec<Value>>>,
    /// The API key value `usageIdentifierKey` names, by token.
    keys: Arc<Mutex<Vec<(String, String)>>>,
}

impl Authz {
    fn calls_for(&self, token: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["identitySource"][0] == token)
            .count()
    }
    fn total(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    fn last_for(&self, token: &str) -> Value {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["identitySource"][0] == token)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

fn token_of(event: &Value) -> String {
    event["identitySource"][0]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn simple(State(s): State<Authz>, Json(event): Json<Value>) -> axum::response::Response {
    use axum::response::IntoResponse;
    s.calls.lock().unwrap().push(event.clone());
    let token = token_of(&event);
    if token.starts_with("slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if token.starts_with("burst") {
        // Long enough for the concurrent requests to pile up behind it.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if token.starts_with("broken") {
        return "not json".into_response();
    }
    if token.starts_with("error") {
        return (axum::http::StatusCode::BAD_GATEWAY, "{}").into_response();
    }
    let ok = !token.starts_with("deny");
    Json(json!({"isAuthorized": ok,
                "context": {"user": format!("u-{token}"), "Tier_Level": 3, "admin": false}}))
    .into_response()
}

async fn policy(State(s): State<Authz>, Json(event): Json<Value>) -> Json<Value> {
    s.calls.lock().unwrap().push(event.clone());
    let token = token_of(&event);
    let key = s
        .keys
        .lock()
        .unwrap()
        .iter()
        .find(|(t, _)| *t == token)
        .map(|(_, k)| k.clone());
    let arn = "arn:aws:execute-api:tollgate:000000000000:orders/$default";
    let statements = if token == "deny-post" {
        json!([{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": format!("{arn}/*")},
               {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": format!("{arn}/POST/*")}])
    } else {
        json!([{"Action": "execute-api:Invoke", "Effect": "Allow",
                "Resource": [format!("{arn}/GET/orders/policy/*")]}])
    };
    Json(json!({"principalId": format!("p-{token}"),
                "policyDocument": {"Version": "2012-10-17", "Statement": statements},
                "context": {"plan": "gold"},
                "usageIdentifierKey": key}))
}

async fn start_authz() -> (String, Authz) {
    let state = Authz::default();
    let app = Router::new()
        .route("/simple", post(simple))
        .route("/policy", post(policy))
        .with_state(state.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, state)
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    /// A header the echo upstream received.
    fn upstream(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
}

async fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = http().request(method.parse().unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    Answer {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        text: res.text().await.unwrap(),
    }
}

async fn with_token(url: &str, token: &str) -> Answer {
    call("GET", url, &[("authorization", token)]).await
}

fn assert_internal(a: &Answer, what: &str) {
    assert_eq!(a.status, 500, "{what}: {}", a.text);
    assert_eq!(
        a.json(),
        json!({"message": "Internal Server Error"}),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_authorizers_end_to_end() {
    init_tracing();
    let cluster = Cluster::start(1).await;
    let admin = cluster.nodes[0].client();
    let (authz_url, authz) = start_authz().await;
    let (echo, _echo_stop) = start_echo().await;
    let counted = TestUpstream::start("counted").await;
    // An endpoint nobody listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/authorize", l.local_addr().unwrap())
    };

    // ---------------------------------------------------- bad documents
    let good = json!({"type": "request", "endpoint": format!("{authz_url}/simple"),
                      "identity_sources": ["header:authorization"]});
    let with = |changes: Value| {
        let mut d = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            d[k] = v.clone();
        }
        d
    };
    for (changes, field) in [
        (json!({"endpoint": "ftp://authz/x"}), "endpoint"),
        (json!({"endpoint": null}), "endpoint"),
        (json!({"ttl_s": 3601}), "ttl_s"),
        (json!({"timeout_ms": 0}), "timeout_ms"),
        (
            json!({"identity_sources": ["cookie:session"]}),
            "identity_sources[0]",
        ),
        (json!({"identity_sources": []}), "identity_sources"),
        (json!({"response": "iam"}), "response"),
        (json!({"type": "lambda"}), "type"),
    ] {
        let (s, v) = admin
            .put("/v1/authorizers/bad", with(changes.clone()))
            .await;
        assert_eq!(s, 400, "{changes}: {v}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(field),
            "{changes}: {message:?} names {field}"
        );
    }

    // ---------------------------------------------------- the config
    let simple_url = format!("{authz_url}/simple");
    for (id, doc) in [
        ("simple", with(json!({"timeout_ms": 500}))),
        (
            "multi",
            with(json!({"identity_sources": ["header:authorization", "query:token", "path:id"]})),
        ),
        ("nocache", with(json!({"ttl_s": 0}))),
        ("down", with(json!({"endpoint": down}))),
        (
            "policy",
            with(json!({"endpoint": format!("{authz_url}/policy"), "response": "policy"})),
        ),
    ] {
        admin.must_put(&format!("/v1/authorizers/{id}"), doc).await;
    }
    let (s, v) = admin.get("/v1/authorizers/simple").await;
    assert_eq!(s, 200);
    assert_eq!(v["endpoint"], simple_url.as_str(), "{v}");
    assert_eq!(v["type"], "request", "{v}");
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    admin
        .must_put(
            "/v1/apis/orders",
            json!({"base_path": "/orders", "auth": {"authorizer": "simple"},
                   "upstream": {"targets": [{"url": format!("http://{echo}")}]},
                   "routes": [
                       {"id": "default", "path": "/simple/{rest+}"},
                       {"id": "items", "methods": ["GET"], "path": "/items/{id}",
                        "auth": {"authorizer": "multi"}},
                       {"id": "nocache", "path": "/nocache/{rest+}", "auth": {"authorizer": "nocache"}},
                       {"id": "both", "path": "/both/{rest+}",
                        "auth": {"api_key": true, "authorizer": "simple"}},
                       {"id": "policy", "path": "/policy/{rest+}", "auth": {"authorizer": "policy"}}]}),
        )
        .await;
    admin
        .must_put(
            "/v1/apis/counted",
            json!({"base_path": "/counted",
                   "upstream": {"targets": [{"url": counted.url()}]},
                   "routes": [
                       {"id": "open", "path": "/open"},
                       {"id": "down", "path": "/down/{rest+}", "auth": {"authorizer": "down"}},
                       {"id": "slow", "path": "/slow/{rest+}", "auth": {"authorizer": "simple"}}]}),
        )
        .await;
    admin
        .must_put(
            "/v1/usage-plans/gold",
            json!({"apis": ["orders"], "throttle": {"rate": 1, "burst": 3},
                   "quota": {"limit": 1000, "period": "day"}}),
        )
        .await;
    admin
        .must_put("/v1/usage-plans/elsewhere", json!({"apis": ["counted"]}))
        .await;
    let (key_id, key) = admin.issue_key("gold").await;
    let (_, other_key) = admin.issue_key("elsewhere").await;
    let dp = start_dp(vec![cluster.nodes[0].grpc_url()], None).await;
    let base = format!("http://{}", dp.proxy_addr);
    eventually(
        "the config on the data plane",
        Duration::from_secs(15),
        || async {
            call("GET", &format!("{base}/counted/open"), &[])
                .await
                .status
                == 200
                && dp
                    .gateway
                    .snapshot()
                    .auth
                    .request_authorizer("policy")
                    .is_some()
        },
    )
    .await;
    wait_for_revision(&dp, dp.gateway.snapshot().revision()).await;

    // ---------------------------------------------------- allow, context
    let a = call(
        "GET",
        &format!("{base}/orders/simple/a?x=1"),
        &[
            ("authorization", "allow-1"),
            ("x-tollgate-authorizer-user", "evil"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.upstream("x-tollgate-authorizer-user").as_deref(),
        Some("u-allow-1")
    );
    assert_eq!(
        a.upstream("x-tollgate-authorizer-tier-level").as_deref(),
        Some("3")
    );
    assert_eq!(
        a.upstream("x-tollgate-authorizer-admin").as_deref(),
        Some("false")
    );
    assert_eq!(
        a.upstream("x-tollgate-subject"),
        None,
        "simple answers name no one"
    );
    assert_eq!(authz.calls_for("allow-1"), 1);

    // ---------------------------------------------------- the event
    let a = call(
        "GET",
        &format!("{base}/orders/items/42?token=abc&x=1&x=2"),
        &[
            ("authorization", "allow-ev"),
            ("user-agent", "ua/1"),
            ("cookie", "a=1; b=2"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let e = authz.last_for("allow-ev");
    let request_id = a.headers["x-request-id"].to_str().unwrap();
    assert_eq!(e["version"], "2.0");
    assert_eq!(e["type"], "REQUEST");
    assert_eq!(
        e["routeArn"],
        "arn:aws:execute-api:tollgate:000000000000:orders/$default/GET/orders/items/42"
    );
    assert_eq!(e["identitySource"], json!(["allow-ev", "abc", "42"]));
    assert_eq!(e["routeKey"], "GET /orders/items/{id}");
    assert_eq!(e["rawPath"], "/orders/items/42");
    assert_eq!(e["rawQueryString"], "token=abc&x=1&x=2");
    assert_eq!(e["headers"]["authorization"], "allow-ev");
    assert_eq!(e["headers"]["user-agent"], "ua/1");
    assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(
        e["queryStringParameters"],
        json!({"token": "abc", "x": "1,2"})
    );
    assert_eq!(e["pathParameters"], json!({"id": "42"}));
    let rc = &e["requestContext"];
    assert_eq!(rc["requestId"], request_id);
    assert_eq!(rc["apiId"], "orders");
    assert_eq!(rc["stage"], "$default");
    assert_eq!(rc["routeKey"], "GET /orders/items/{id}");
    assert_eq!(rc["http"]["method"], "GET");
    assert_eq!(rc["http"]["path"], "/orders/items/42");
    assert_eq!(rc["http"]["protocol"], "HTTP/1.1");
    assert_eq!(rc["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["http"]["userAgent"], "ua/1");
    assert!(
        rc["timeEpoch"].as_u64().unwrap() > 1_700_000_000_000,
        "{rc}"
    );
    assert!(rc["time"].as_str().unwrap().ends_with(" +0000"), "{rc}");

    // ---------------------------------------------------- missing source
    let before = authz.total();
    let a = call(
        "GET",
        &format!("{base}/orders/items/42"),
        &[("authorization", "allow-ev")],
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(a.json(), json!({"message": "Unauthorized"}));
    let a = call("GET", &format!("{base}/orders/simple/a"), &[]).await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(
        authz.total(),
        before,
        "no call without every identity source"
    );

    // ---------------------------------------------------- deny, cached
    for _ in 0..3 {
        let a = with_token(&format!("{base}/orders/simple/a"), "deny-1").await;
        assert_eq!(a.status, 403, "{}", a.text);
        assert_eq!(a.json(), json!({"message": "Forbidden"}));
    }
    assert_eq!(authz.calls_for("deny-1"), 1, "a deny is cached");

    // ---------------------------------------------------- one call per token
    let url = format!("{base}/orders/simple/burst");
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { with_token(&url, "burst-1").await.status })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.unwrap(), 200);
    }
    assert_eq!(
        authz.calls_for("burst-1"),
        1,
        "200 requests, one token: one call"
    );
    for _ in 0..20 {
        assert_eq!(with_token(&url, "burst-1").await.status, 200);
    }
    assert_eq!(authz.calls_for("burst-1"), 1);
    assert_eq!(with_token(&url, "burst-2").await.status, 200);
    assert_eq!(authz.calls_for("burst-2"), 1, "another token, its own call");

    // ---------------------------------------------------- ttl_s 0
    for _ in 0..3 {
        assert_eq!(
            with_token(&format!("{base}/orders/nocache/x"), "allow-nc")
                .await
                .status,
            200
        );
    }
    assert_eq!(authz.calls_for("allow-nc"), 3, "ttl_s 0 calls every time");

    // ---------------------------------------------------- failures: 500, never cached
    let hits = counted.hits.load(Ordering::SeqCst);
    for _ in 0..2 {
        let a = with_token(&format!("{base}/counted/down/x"), "allow-1").await;
        assert_internal(&a, "endpoint down");
    }
    let a = with_token(&format!("{base}/counted/slow/x"), "slow-1").await;
    assert_internal(&a, "endpoint slower than timeout_ms");
    assert_eq!(
        counted.hits.load(Ordering::SeqCst),
        hits,
        "the upstream is never called"
    );
    for token in ["broken-1", "error-1"] {
        for _ in 0..2 {
            let a = with_token(&format!("{base}/orders/simple/x"), token).await;
            assert_internal(&a, token);
        }
        assert_eq!(
            authz.calls_for(token),
            2,
            "{token}: failures are not cached"
        );
    }

    // ---------------------------------------------------- key and authorizer
    let url = format!("{base}/orders/both/x");
    assert_eq!(with_token(&url, "allow-1").await.status, 403, "no key");
    let a = call(
        "GET",
        &url,
        &[("authorization", "deny-1"), ("x-api-key", &key)],
    )
    .await;
    assert_eq!(a.status, 403);
    let a = call(
        "GET",
        &url,
        &[("authorization", "allow-1"), ("x-api-key", &key)],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.upstream("x-tollgate-key-id").as_deref(),
        Some(key_id.as_str())
    );
    assert_eq!(
        a.upstream("x-tollgate-authorizer-user").as_deref(),
        Some("u-allow-1")
    );
    // That request drew on the key's plan: wait for it to be counted, so
    // the policy section below starts from a known figure.
    let used = || async {
        let (s, v) = admin.get(&format!("/v1/keys/{key_id}/usage")).await;
        assert_eq!(s, 200, "{v}");
        v["plans"]["gold"]
            .as_array()
            .map(|days| days.iter().map(|d| d[0].as_u64().unwrap_or(0)).sum::<u64>())
            .unwrap_or(0)
    };
    eventually(
        "the key request counted",
        Duration::from_secs(10),
        || async { used().await == 1 },
    )
    .await;

    // ---------------------------------------------------- policy answers
    authz.keys.lock().unwrap().extend([
        ("with-key".to_string(), key.clone()),
        ("other-key".to_string(), other_key.clone()),
        (
            "unknown-key".to_string(),
            "tg_this_key_is_not_known_at_all".to_string(),
        ),
    ]);
    let a = with_token(&format!("{base}/orders/policy/x"), "plain").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.upstream("x-tollgate-subject").as_deref(), Some("p-plain"));
    assert_eq!(
        a.upstream("x-tollgate-authorizer-plan").as_deref(),
        Some("gold")
    );
    // The cached policy is judged against each request's routeArn.
    let a = call(
        "POST",
        &format!("{base}/orders/policy/x"),
        &[("authorization", "plain")],
    )
    .await;
    assert_eq!(a.status, 403, "POST is not in the Allow");
    let a = call(
        "GET",
        &format!("{base}/orders/policy/x"),
        &[("authorization", "deny-post")],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = call(
        "POST",
        &format!("{base}/orders/policy/x"),
        &[("authorization", "deny-post")],
    )
    .await;
    assert_eq!(a.status, 403, "an explicit Deny wins");
    assert_eq!(authz.calls_for("plain"), 1);
    assert_eq!(authz.calls_for("deny-post"), 1);
    // usageIdentifierKey: unknown, or not granting this API, is 403.
    for token in ["unknown-key", "other-key"] {
        let a = with_token(&format!("{base}/orders/policy/x"), token).await;
        assert_eq!(a.status, 403, "{token}: {}", a.text);
    }
    // The named key's plan applies: its throttle (burst 3) and its usage.
    let mut ok = 0u64;
    let mut throttled = 0;
    for _ in 0..6 {
        let a = with_token(&format!("{base}/orders/policy/x"), "with-key").await;
        match a.status {
            200 => {
                ok += 1;
                assert_eq!(
                    a.upstream("x-tollgate-key-id").as_deref(),
                    Some(key_id.as_str())
                );
                assert!(a.headers.contains_key("ratelimit-limit"));
            }
            429 => throttled += 1,
            s => panic!("unexpected {s}: {}", a.text),
        }
    }
    assert!(throttled >= 1, "the key's throttle applies ({ok} passed)");
    assert_eq!(authz.calls_for("with-key"), 1);
    eventually(
        "usage counted for the key",
        Duration::from_secs(10),
        || async { used().await == 1 + ok },
    )
    .await;

    // ---------------------------------------------------- metrics
    let snapshot = dp.gateway.snapshot();
    // The simple authorizer guards every route but these.
    let simple_calls = authz
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|e| {
            let arn = e["routeArn"].as_str().unwrap_or("");
            !["/items/", "/nocache/", "/policy/"]
                .iter()
                .any(|r| arn.contains(r))
        })
        .count() as u64;
    let m = &snapshot.auth.request_authorizer("simple").unwrap().metrics;
    assert_eq!(m.calls(), simple_calls);
    let mut out = String::new();
    snapshot.auth.render_metrics(&mut out);
    for line in [
        "tollgate_authorizer_calls_total{authorizer=\"nocache\"} 3",
        "tollgate_authorizer_errors_total{authorizer=\"down\"} 2",
        "tollgate_authorizer_denies_total{authorizer=\"simple\"} ",
        "tollgate_authorizer_cache_hits_total{authorizer=\"simple\"} ",
        "tollgate_authorizer_duration_seconds_count{authorizer=\"simple\"} ",
    ] {
        assert!(out.contains(line), "{line} in\n{out}");
    }
    let status = common::dp::metrics_text(&dp).await;
    assert!(status.contains("tollgate_authorizer_calls_total{authorizer=\"simple\"}"));
}
