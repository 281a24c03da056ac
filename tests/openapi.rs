//! Issue 24, the admin API described: `GET /v1/openapi.json` documents every
//! route the router serves, real answers validate against it, and every
//! error has the one shape.

use crate::common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};
use tollgate_control_plane::rest;

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "PATCH", "DELETE"];

/// Every route the contract (§2, §5.2) names; each must be documented.
const CONTRACT: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/cluster"),
    ("POST", "/v1/cluster/members"),
    ("DELETE", "/v1/cluster/members/{id}"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("GET", "/v1/keys/{id}"),
    ("PATCH", "/v1/keys/{id}"),
    ("DELETE", "/v1/keys/{id}"),
    ("GET", "/v1/keys/{id}/usage"),
    ("POST", "/v1/keys/{id}/quota-adjustments"),
    ("GET", "/v1/usage-plans/{id}/usage"),
    ("GET", "/v1/usage/export"),
    ("GET", "/v1/tenants/{id}/invoice"),
    ("DELETE", "/v1/apis/{id}/cache"),
    ("GET", "/v1/snapshot"),
    ("POST", "/v1/snapshot"),
    ("POST", "/v1/connections/{id}"),
    ("GET", "/v1/connections/{id}"),
    ("DELETE", "/v1/connections/{id}"),
    ("POST", "/v1/apis/{id}/deployments"),
    ("GET", "/v1/apis/{id}/deployments"),
    ("GET", "/v1/apis/{id}/deployments/{deployment}"),
    ("DELETE", "/v1/apis/{id}/deployments/{deployment}"),
    ("POST", "/v1/stages/{id}/promote"),
    ("GET", "/v1/traffic"),
];

/// (method, path template) of every operation in a document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if METHODS.contains(&method.to_uppercase().as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn document() -> Value {
    serde_json::to_value(rest::document()).unwrap()
}

/// A concrete path for a template: each `{param}` as a value that names
/// nothing that exists (`{id}` of a member: a node id no cluster has).
fn concrete(template: &str) -> String {
    if template.starts_with("/v1/cluster/members/") {
        return "/v1/cluster/members/999".into();
    }
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let j = rest.find('}').unwrap();
        out.push_str(&rest[..i]);
        out.push_str("probe-none");
        rest = &rest[j + 1..];
    }
    out + rest
}

/// A raw call: status, content type, body as JSON (or the text as a string).
async fn raw(
    method: &str,
    url: &str,
    token: bool,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, String, Value) {
    let http = reqwest::Client::new();
    let mut req = http.request(method.parse().unwrap(), url);
    if token {
        req = req.bearer_auth(ADMIN_TOKEN);
    }
    if let Some((content_type, bytes)) = body {
        req = req.header("content-type", content_type).body(bytes);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, ctype, v)
}

/// The documented template `path` is an instance of (its query left
/// aside): the one whose literal segments match most.
fn template_of(doc: &Value, path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap();
    let segs: Vec<&str> = path.split('/').collect();
    let score = |t: &str| {
        let ts: Vec<&str> = t.split('/').collect();
        let fits = ts.len() == segs.len()
            && ts
                .iter()
                .zip(&segs)
                .all(|(t, s)| t.starts_with('{') || t == s);
        fits.then(|| ts.iter().filter(|t| !t.starts_with('{')).count())
    };
    let templates = doc["paths"].as_object().unwrap().keys();
    templates
        .filter_map(|t| score(t).map(|n| (n, t)))
        .max()
        .map(|(_, t)| t.clone())
}

/// Calls the admin API and checks every answer against the document,
/// remembering which operations it called.
struct Checker {
    doc: Value,
    base: String,
    /// The operations called, (method, template).
    called: BTreeSet<(String, String)>,
}

impl Checker {
    /// `method path` with a JSON body; the status must be `want`, and the
    /// answer must be what the document says of it. Returns the body.
    async fn call(&mut self, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
        let url = format!("{}{path}", self.base);
        let (status, ctype, v) = raw(method, &url, true, body).await;
        assert_eq!(status, want, "{method} {path}: {v}");
        let template = template_of(&self.doc, path)
            .unwrap_or_else(|| panic!("{method} {path}: no such path documented"));
        check(&self.doc, method, &template, status, &ctype, &v);
        self.called.insert((method.into(), template));
        v
    }
}

fn check(doc: &Value, method: &str, template: &str, status: u16, ctype: &str, v: &Value) {
    let op = &doc["paths"][template][method.to_lowercase()];
    assert!(op.is_object(), "{method} {template} is not documented");
    let responses = &op["responses"];
    let response = responses
        .get(status.to_string())
        .or_else(|| responses.get("default").filter(|_| status >= 400))
        .unwrap_or_else(|| panic!("{method} {template}: {status} is not documented: {v}"));
    let Some(content) = response.get("content") else {
        assert_eq!(
            v,
            &json!(""),
            "{method} {template} {status}: an undocumented body"
        );
        return;
    };
    let media = ctype.split(';').next().unwrap().trim();
    let (_, media_doc) = content
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.split(';').next().unwrap().trim() == media)
        .unwrap_or_else(|| panic!("{method} {template} {status}: {ctype:?} is not documented"));
    if media == "application/json" {
        if let Err(e) = validate(doc, &media_doc["schema"], v) {
            panic!("{method} {template} {status}: {e}\n{v:#}");
        }
    }
}

/// `instance` against `schema`, its `#/components/schemas/...` references
/// resolved in the document's components.
fn validate(doc: &Value, schema: &Value, instance: &Value) -> Result<(), String> {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::draft202012::new(&root).map_err(|e| e.to_string())?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_1_and_every_operation_has_its_schemas() {
    let doc = document();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(schemas.contains_key(name), "{r} resolves to nothing");
    }
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let what = format!("{method} {path}");
        assert!(
            ids.insert(op["operationId"].as_str().unwrap().to_string()),
            "{what}: operationId used twice"
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: no success answer"
        );
        for (status, r) in responses {
            if status == "204" {
                assert!(r.get("content").is_none(), "{what}: a 204 with content");
                continue;
            }
            let content = r["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{what} {status}: no content"));
            assert!(!content.is_empty(), "{what} {status}: no content");
            for (media, m) in content {
                assert!(
                    m["schema"].is_object(),
                    "{what} {status} {media}: no schema"
                );
            }
        }
        if path.starts_with("/v1/") {
            assert_eq!(
                responses["default"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{what}: errors not in the error shape"
            );
            let open = path == "/v1/openapi.json";
            assert_eq!(op["security"] == json!([{}]), open, "{what}: admin token");
        }
        // Every path parameter is described.
        let params: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            assert!(
                params.contains(seg.trim_matches(['{', '}'])),
                "{what}: {seg} undocumented"
            );
        }
        if ["PUT", "POST", "PATCH"].contains(&method.as_str()) && !path.ends_with("/promote") {
            assert!(
                op["requestBody"]["content"].is_object(),
                "{what}: no request body"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_served_is_documented_and_every_documented_one_served() {
    init_tracing();
    let c = Cluster::start(1).await;
    let base = c.nodes[0].admin_url();
    // Served without a token, and the very document the code builds.
    let (status, ctype, served) = raw("GET", &format!("{base}/v1/openapi.json"), false, None).await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    assert_eq!(served, document());
    let documented = operations(&served);
    let table: BTreeSet<(String, String)> = rest::routes().into_iter().collect();
    assert_eq!(
        documented, table,
        "the router's routes and the document differ"
    );
    for (m, p) in CONTRACT {
        assert!(
            documented.contains(&(m.to_string(), p.to_string())),
            "{m} {p} undocumented"
        );
    }
    // Each documented path answers each documented method (not with the
    // unknown route's 404 nor a 405), and every other method with a 405:
    // a method served but not documented fails here.
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for template in paths {
        let path = concrete(template);
        for method in METHODS {
            let body = matches!(method, "PUT" | "POST" | "PATCH")
                .then(|| ("application/json", b"{}".to_vec()));
            let (status, ctype, v) = raw(method, &format!("{base}{path}"), true, body).await;
            let what = format!("{method} {path}");
            if documented.contains(&(method.to_string(), template.clone())) {
                assert_ne!(status, 405, "{what}: documented but not served: {v}");
                assert!(
                    !(status == 404 && v["error"]["message"] == "no such route"),
                    "{what}: documented but not served"
                );
                check(&served, method, template, status, &ctype, &v);
            } else {
                assert_eq!(status, 405, "{what}: served but not documented: {v}");
                assert_eq!(v["error"]["code"], "method_not_allowed", "{what}: {v}");
            }
        }
    }
}

/// Documents of every kind, a key, two deployments and a stage whose
/// canary is promoted. Returns the key's path and the deployments' ids.
async fn write_documents(k: &mut Checker) -> (String, String, String) {
    let api = json!({"base_path": "/orders", "hosts": ["api.example"],
        "upstream": {"targets": [{"url": "http://127.0.0.1:9", "weight": 2}],
            "load_balancing": "least_request", "health_check": {"path": "/healthz"}},
        "auth": {"api_key": true}, "ip_deny": ["10.0.0.0/8"],
        "cors": {"allow_origins": ["https://app.example"], "allow_methods": ["GET"]},
        "fallback": {"status": 503, "body": "later"},
        "routes": [
            {"id": "get", "methods": ["GET"], "path": "/items/{id}",
             "upstream_path": "/v1/items/{id}", "cache": {"ttl_s": 60, "key": ["query:page"]}},
            {"id": "mock", "path": "/ping", "auth": {},
             "mock": {"body": "{}", "headers": {"content-type": "application/json"}}}]});
    let chat = json!({"protocol": "websocket", "base_path": "/chat",
        "upstream": {"targets": [{"url": "http://127.0.0.1:9"}]},
        "websocket": {"idle_timeout_s": 60},
        "routes": [{"id": "send", "key": "sendmessage", "path": "/messages", "response": true},
                   {"id": "default", "key": "$default", "mock": {"body": "{}"}}]});
    let jwt = json!({"issuer": "https://issuer.example", "audiences": ["orders"],
        "algorithms": ["HS256"], "secret": "s3cret", "claims_to_headers": {"sub": "x-sub"}});
    let custom = json!({"type": "request", "endpoint": "http://127.0.0.1:9/authorize",
        "identity_sources": ["header:authorization"], "ttl_s": 0});
    let gold = json!({"apis": ["orders"], "throttle": {"rate": 10, "burst": 20},
        "quota": {"limit": 1000, "period": "day"},
        "price": {"currency": "USD", "monthly_fee": "9.99", "per_million_requests": "3.50"}});
    let acme = json!({"id": "acme", "name": "Acme", "kind": "Tenant"});
    for (path, doc) in [
        ("/v1/tenants/acme", acme),
        ("/v1/apis/orders", api),
        ("/v1/apis/chat", chat),
        ("/v1/authorizers/jwt", jwt),
        ("/v1/authorizers/custom", custom),
        ("/v1/usage-plans/gold", gold),
    ] {
        k.call("PUT", path, Some(doc), 200).await;
    }
    let issued = json!({"tenant": "acme", "plans": ["gold"]});
    let issued = k.call("POST", "/v1/keys", Some(issued), 201).await;
    let key = format!("/v1/keys/{}", issued["id"].as_str().unwrap());
    k.call("PATCH", &key, Some(json!({"name": "renamed"})), 200)
        .await;
    let more = json!({"plan": "gold", "amount": 5});
    k.call("POST", &format!("{key}/quota-adjustments"), Some(more), 201)
        .await;
    let deploy = "/v1/apis/orders/deployments";
    let d1 = k
        .call("POST", deploy, Some(json!({"description": "first"})), 201)
        .await;
    let d2 = k.call("POST", deploy, Some(json!({})), 201).await;
    let (d1, d2) = (d1["id"].as_str().unwrap(), d2["id"].as_str().unwrap());
    let stage = json!({"api": "orders", "deployment": d1, "base_path": "/prod",
        "variables": {"v": "1"}, "canary": {"deployment": d2, "percent": 10, "sticky": "key"}});
    k.call("PUT", "/v1/stages/prod", Some(stage), 200).await;
    k.call("POST", "/v1/stages/prod/promote", None, 200).await;
    k.call("POST", "/v1/stages/prod/promote", None, 409).await;
    k.call("DELETE", "/v1/apis/orders/cache", None, 200).await;
    (key, d1.to_string(), d2.to_string())
}

/// Real documents of every kind, and keys, usage, deployments and a stage
/// with a canary: every GET route's answer, writes, and errors validate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_validate_against_the_document() {
    init_tracing();
    let c = Cluster::start(1).await;
    let mut k = Checker {
        doc: document(),
        base: c.nodes[0].admin_url(),
        called: BTreeSet::new(),
    };
    let (key, d1, d2) = write_documents(&mut k).await;
    let days = "start=2024-01-01&end=2024-01-03";
    // This month's invoice has gold's fee: the key holds it.
    let month = &tollgate_model::usage::format_day(tollgate_model::usage::today())[..7];
    let reads = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
        "/v1/cluster",
        "/v1/apis",
        "/v1/apis/orders",
        "/v1/apis/chat?stale=true",
        "/v1/authorizers",
        "/v1/authorizers/custom",
        "/v1/tenants",
        "/v1/tenants/acme",
        "/v1/usage-plans",
        "/v1/usage-plans/gold",
        "/v1/stages",
        "/v1/stages/prod",
        "/v1/apis/orders/deployments",
        &format!("/v1/apis/orders/deployments/{d1}"),
        "/v1/keys?tenant=acme",
        &key,
        &format!("{key}/usage?{days}"),
        &format!("/v1/usage-plans/gold/usage?{days}&key_id=x"),
        &format!("/v1/usage/export?{days}"),
        &format!("/v1/usage/export?{days}&format=csv"),
        &format!("/v1/tenants/acme/invoice?month={month}"),
        "/v1/traffic?window=5m",
    ];
    for path in reads {
        k.call("GET", path, None, 200).await;
    }
    // The connections API without a connection: 410 in the error shape.
    k.call("GET", "/v1/connections/nobody", None, 410).await;
    // Restore what was exported.
    let backup = k.call("GET", "/v1/snapshot", None, 200).await;
    k.call("POST", "/v1/snapshot", Some(backup), 200).await;
    // The promoted canary's deployment is in use until its stage goes.
    let d2 = format!("/v1/apis/orders/deployments/{d2}");
    k.call("DELETE", &d2, None, 409).await;
    k.call("DELETE", "/v1/stages/prod", None, 200).await;
    k.call("DELETE", &d2, None, 200).await;
    k.call("DELETE", &key, None, 200).await;
    k.call("DELETE", "/v1/authorizers/jwt", None, 200).await;
    // Errors, each as its operation documents it.
    k.call("GET", "/v1/apis/nope", None, 404).await;
    k.call(
        "PUT",
        "/v1/apis/bad",
        Some(json!({"base_path": "nope"})),
        400,
    )
    .await;
    k.call("DELETE", "/v1/usage-plans/nope", None, 404).await;
    k.call("GET", "/v1/tenants/acme/invoice?month=2024-13", None, 400)
        .await;
    k.call("GET", "/v1/tenants/nope/invoice?month=2024-01", None, 404)
        .await;
    k.call("GET", "/v1/traffic?window=1h", None, 400).await;
    k.call("DELETE", "/v1/cluster/members/42", None, 404).await;
    k.call("POST", "/v1/cluster/members", Some(json!({"id": 2})), 400)
        .await;
    let short = json!({"tenant": "acme", "plans": ["gold"], "value": "short"});
    k.call("POST", "/v1/keys", Some(short), 400).await;

    let gets = |ops: &BTreeSet<(String, String)>| -> BTreeSet<String> {
        ops.iter()
            .filter(|(m, _)| m == "GET")
            .map(|(_, p)| p.clone())
            .collect()
    };
    assert_eq!(
        gets(&operations(&k.doc)),
        gets(&k.called),
        "GET routes never called"
    );
}

const J: &str = "application/json";

/// (method, path, body with its content type, status, code, a part of the
/// message).
type ErrorCase = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static [u8])>,
    u16,
    &'static str,
    &'static str,
);

/// What an extractor, a body limit or the router rejects, and how.
const ERRORS: &[ErrorCase] = &[
    (
        "GET",
        "/v1/keys/k/usage?start=null&start=null",
        None,
        400,
        "invalid_argument",
        "start",
    ),
    (
        "GET",
        "/v1/usage/export?start=null&start=null",
        None,
        400,
        "invalid_argument",
        "start",
    ),
    (
        "GET",
        "/v1/apis?stale=maybe",
        None,
        400,
        "invalid_argument",
        "stale",
    ),
    (
        "PUT",
        "/v1/apis/x",
        Some((J, b"{not json")),
        400,
        "invalid_argument",
        "line 1 column 2",
    ),
    (
        "PUT",
        "/v1/tenants/x",
        Some(("text/plain", b"name=x")),
        400,
        "invalid_argument",
        "body",
    ),
    (
        "PUT",
        "/v1/tenants/x",
        Some((J, b"{}")),
        400,
        "invalid_argument",
        "name",
    ),
    (
        "PUT",
        "/v1/tenants/x",
        Some((J, br#"{"name": 7}"#)),
        400,
        "invalid_argument",
        "name",
    ),
    (
        "DELETE",
        "/v1/cluster/members/abc",
        None,
        400,
        "invalid_argument",
        "id",
    ),
    ("GET", "/v1/apis/%FF", None, 400, "invalid_argument", ""),
    (
        "GET",
        "/v1/no-such-thing",
        None,
        404,
        "not_found",
        "no such route",
    ),
    ("GET", "/nowhere", None, 404, "not_found", "no such route"),
    (
        "PATCH",
        "/v1/apis",
        Some((J, b"{}")),
        405,
        "method_not_allowed",
        "PATCH /v1/apis",
    ),
    (
        "DELETE",
        "/v1/cluster",
        None,
        405,
        "method_not_allowed",
        "DELETE /v1/cluster",
    ),
    (
        "POST",
        "/v1/connections/nobody",
        Some(("text/plain", b"hi")),
        410,
        "gone",
        "",
    ),
];

/// One rejected request: its status, the error shape, the contract's
/// code, and what the document says of that operation's errors.
async fn expect_error(doc: &Value, base: &str, case: ErrorCase, body: Option<(&str, Vec<u8>)>) {
    let (method, path, _, status, code, needle) = case;
    let (got, ctype, v) = raw(method, &format!("{base}{path}"), true, body).await;
    let what = format!("{method} {path}");
    assert_eq!(got, status, "{what}: {v}");
    assert_eq!(ctype, "application/json", "{what}");
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    let message = v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(
        message.contains(needle),
        "{what}: {message:?} does not name {needle:?}"
    );
    let documented =
        template_of(doc, path).filter(|t| doc["paths"][t].get(method.to_lowercase()).is_some());
    match documented {
        Some(t) => check(doc, method, &t, got, &ctype, &v),
        None => validate(doc, &json!({"$ref": "#/components/schemas/ErrorBody"}), &v).unwrap(),
    }
}

/// Whatever rejects a request (an extractor, a body limit, the router),
/// the answer is `{"error": {"code", "message"}}` with the contract's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_json_shape() {
    init_tracing();
    let c = Cluster::start(1).await;
    let base = c.nodes[0].admin_url();
    let doc = document();
    let admin = c.nodes[0].client();
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    for &case in ERRORS {
        let body = case.2.map(|(t, b)| (t, b.to_vec()));
        expect_error(&doc, &base, case, body).await;
    }
    let big = ("PUT", "/v1/apis/x", None, 413, "payload_too_large", "");
    expect_error(&doc, &base, big, Some((J, vec![b'x'; 3 << 20]))).await;
    // A 405 still says what the path takes; no token is a 401 in the shape.
    let resp = reqwest::Client::new()
        .delete(format!("{base}/v1/cluster"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "GET,HEAD");
    for path in ["/v1/cluster", "/v1/no-such-thing"] {
        // Under /v1, only the admin learns that a route does not exist.
        let (s, _, v) = raw("GET", &format!("{base}{path}"), false, None).await;
        assert_eq!(
            (s, &v["error"]["code"]),
            (401, &json!("unauthenticated")),
            "{v}"
        );
        validate(&doc, &json!({"$ref": "#/components/schemas/ErrorBody"}), &v).unwrap();
    }
    // The tenant without a name was not written.
    assert_eq!(admin.get("/v1/tenants/x").await.0, 404);
}
