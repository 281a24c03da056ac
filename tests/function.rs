//! Function integrations (issue 21, contract §5.4): routes that invoke a
//! function through the Lambda Invoke API instead of an upstream.
//!
//! The function server here speaks the Invoke API
//! (`POST /2015-03-31/functions/{name}/invocations`) and runs handlers that
//! read the event the way handlers written for AWS do (payload format 1.0
//! and 2.0), so the events must be shaped as AWS shapes them. One real
//! control-plane node and one data plane serve every case.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use common::dp::{eventually, http, start_dp};
use common::{init_tracing, Cluster};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Every event the function server received: (function name, event).
type Events = Arc<Mutex<Vec<(String, Value)>>>;

/// A Lambda Invoke API look-alike running the handlers below.
async fn start_function_server() -> (SocketAddr, Events) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let events: Events = Arc::default();
    let ev = events.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = l.accept().await.unwrap();
            let ev = ev.clone();
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let ev = ev.clone();
                async move { Ok::<_, Infallible>(invoke(req, ev).await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, events)
}

fn answer(
    status: u16,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Response<Full<Bytes>> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

async fn invoke(req: http::Request<Incoming>, events: Events) -> http::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let name = path
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|p| p.strip_suffix("/invocations"))
        .map(str::to_string);
    let (Some(name), true) = (name, req.method() == http::Method::POST) else {
        return answer(404, &[], "{\"Type\":\"User\",\"message\":\"unknown path\"}");
    };
    let header = |n: &str| {
        req.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let signature = json!({"authorization": header("authorization"), "date": header("x-amz-date"),
                           "token": header("x-amz-security-token")});
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let event: Value = serde_json::from_slice(&body).expect("the event is JSON");
    events.lock().unwrap().push((name.clone(), event.clone()));
    let json = |v: Value| answer(200, &[("content-type", "application/json")], v.to_string());
    match name.as_str() {
        "echo2" => json(handler_v2(&event)),
        "echo1" => json(handler_v1(&event)),
        "binary" => json(binary_handler(&event)),
        "bare" => json(json!({"hello": "world", "n": 1})),
        "signed" => json(signature),
        "boom" => answer(
            200,
            &[("x-amz-function-error", "Unhandled")],
            json!({"errorMessage": "boom", "errorType": "Error"}).to_string(),
        ),
        "garbage" => answer(200, &[], "this is not json{"),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            json(json!({"statusCode": 200, "body": "late"}))
        }
        _ => answer(
            404,
            &[("x-amzn-errortype", "ResourceNotFoundException")],
            "{\"Type\":\"User\",\"message\":\"Function not found\"}",
        ),
    }
}

/// The request body as a handler gets it: decoded when `isBase64Encoded`.
fn event_body(event: &Value) -> Vec<u8> {
    let body = event["body"].as_str().unwrap_or("");
    if event["isBase64Encoded"].as_bool().unwrap() {
        B64.decode(body).unwrap()
    } else {
        body.as_bytes().to_vec()
    }
}

/// A payload 2.0 handler (HTTP API): what it read, and cookies to set.
fn handler_v2(event: &Value) -> Value {
    assert_eq!(event["version"], "2.0");
    let ctx = &event["requestContext"];
    let summary = json!({
        "method": ctx["http"]["method"],
        "rawPath": event["rawPath"],
        "httpPath": ctx["http"]["path"],
        "rawQueryString": event["rawQueryString"],
        "routeKey": event["routeKey"],
        "id": event["pathParameters"]["id"],
        "tags": event["queryStringParameters"]["tag"],
        "q": event["queryStringParameters"]["q"],
        "cookies": event["cookies"],
        "custom": event["headers"]["x-custom"],
        "multi": event["headers"]["x-multi"],
        "requestId": ctx["requestId"],
        "stage": ctx["stage"],
        "sourceIp": ctx["http"]["sourceIp"],
        "userAgent": ctx["http"]["userAgent"],
        "keyId": event["headers"]["x-tollgate-key-id"],
        "tenant": event["headers"]["x-tollgate-tenant"],
        "apiKey": event["headers"]["x-api-key"],
        "body": String::from_utf8(event_body(event)).unwrap(),
    });
    json!({
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-fn": "echo2", "content-length": "1"},
        "cookies": ["session=abc; Path=/; HttpOnly", "theme=dark"],
        "body": summary.to_string(),
        "isBase64Encoded": false,
    })
}

/// A payload 1.0 handler (REST API).
fn handler_v1(event: &Value) -> Value {
    assert_eq!(event["version"], "1.0");
    let ctx = &event["requestContext"];
    let summary = json!({
        "httpMethod": event["httpMethod"],
        "path": event["path"],
        "resource": event["resource"],
        "id": event["pathParameters"]["id"],
        "tag": event["queryStringParameters"]["tag"],
        "tags": event["multiValueQueryStringParameters"]["tag"],
        "custom": event["headers"]["x-custom"],
        "multi": event["multiValueHeaders"]["x-multi"],
        "cookie": event["headers"]["cookie"],
        "stageVariables": event["stageVariables"],
        "requestId": ctx["requestId"],
        "resourcePath": ctx["resourcePath"],
        "apiKeyId": ctx["identity"]["apiKeyId"],
        "sourceIp": ctx["identity"]["sourceIp"],
        "body": String::from_utf8(event_body(event)).unwrap(),
    });
    json!({
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {"x-multi-out": ["a", "b"]},
        "body": summary.to_string(),
        "isBase64Encoded": false,
    })
}

/// Answers with the request body's bytes reversed, in base64.
fn binary_handler(event: &Value) -> Value {
    let mut bytes = event_body(event);
    bytes.reverse();
    json!({
        "statusCode": 200,
        "headers": {"content-type": "application/octet-stream", "content-length": "3"},
        "body": B64.encode(bytes),
        "isBase64Encoded": true,
    })
}

fn function(url: &str, name: &str, payload: &str) -> Value {
    json!({"url": url, "name": name, "payload": payload})
}

fn functions_api(fn_url: &str) -> Value {
    json!({
        "id": "fns",
        "base_path": "/fns",
        "auth": {"api_key": true},
        "routes": [
            {"id": "v2", "methods": ["GET", "POST"], "path": "/v2/items/{id}",
             "function": function(fn_url, "echo2", "2.0")},
            {"id": "v1", "path": "/v1/items/{id}", "function": function(fn_url, "echo1", "1.0")},
            {"id": "bin", "path": "/bin", "function": function(fn_url, "binary", "2.0")},
            {"id": "bare", "path": "/bare", "function": function(fn_url, "bare", "2.0")},
            {"id": "bare1", "path": "/bare1", "function": function(fn_url, "bare", "1.0")},
            {"id": "boom", "path": "/boom", "function": function(fn_url, "boom", "2.0")},
            {"id": "garbage", "path": "/garbage", "function": function(fn_url, "garbage", "2.0")},
            {"id": "missing", "path": "/missing", "function": function(fn_url, "nope", "2.0")},
            {"id": "slow", "path": "/slow",
             "function": {"url": fn_url, "name": "slow", "timeout_ms": 300}},
            {"id": "signed", "path": "/signed",
             "function": {"url": fn_url, "name": "signed", "sigv4": {"region": "eu-west-1",
                 "access_key_id_env": "TOLLGATE_FN_TEST_AK", "secret_access_key_env": "TOLLGATE_FN_TEST_SK",
                 "session_token_env": "TOLLGATE_FN_TEST_TOKEN"}}},
            {"id": "unsigned", "path": "/unsigned",
             "function": {"url": fn_url, "name": "signed", "sigv4": {"region": "eu-west-1",
                 "access_key_id_env": "TOLLGATE_FN_TEST_UNSET", "secret_access_key_env": "TOLLGATE_FN_TEST_SK"}}},
            {"id": "mock", "path": "/mock", "mock": {"body": "mocked"}}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn function_routes_invoke_the_lambda_api() {
    init_tracing();
    let (fn_addr, events) = start_function_server().await;
    let fn_url = format!("http://{fn_addr}");
    let c = Cluster::start(1).await;
    let admin = c.nodes[0].client();

    // ---- invalid documents: 400 naming the field
    let bad = |f: Value| {
        json!({"id": "bad", "base_path": "/bad",
               "routes": [{"id": "r", "path": "/", "function": f}]})
    };
    for (f, field) in [
        (json!({"name": "x"}), "routes[0].function.url"),
        (
            json!({"url": "ftp://x", "name": "x"}),
            "routes[0].function.url",
        ),
        (
            json!({"url": "lambda:9001", "name": "x"}),
            "routes[0].function.url",
        ),
        (json!({"url": fn_url}), "routes[0].function.name"),
        (
            json!({"url": fn_url, "name": ""}),
            "routes[0].function.name",
        ),
        (
            json!({"url": fn_url, "name": "x", "payload": "3.0"}),
            "routes[0].function.payload",
        ),
        (
            json!({"url": fn_url, "name": "x", "payload": "1"}),
            "routes[0].function.payload",
        ),
        (
            json!({"url": fn_url, "name": "x", "timeout_ms": 0}),
            "routes[0].function.timeout_ms",
        ),
    ] {
        let (s, v) = admin.put("/v1/apis/bad", bad(f.clone())).await;
        assert_eq!(s, 400, "{f}: {v}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{f}: {msg:?} should name {field}");
    }
    // A route with neither mock, function nor upstream still needs one.
    let (s, v) = admin
        .put(
            "/v1/apis/bad",
            json!({"id": "bad", "base_path": "/bad", "routes": [{"id": "r", "path": "/"}]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("upstream"));

    // ---- an API of functions and a mock: no upstream at all
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    admin.must_put("/v1/apis/fns", functions_api(&fn_url)).await;
    admin
        .must_put("/v1/usage-plans/gold", json!({"apis": ["fns"]}))
        .await;
    let (key_id, key) = admin.issue_key("gold").await;
    let dp = start_dp(vec![c.nodes[0].grpc_url()], None).await;
    let base = format!("http://{}/fns", dp.proxy_addr);
    let http = http();
    eventually("the key to work", Duration::from_secs(15), || async {
        let r = http
            .get(format!("{base}/mock"))
            .header("x-api-key", &key)
            .send()
            .await;
        r.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    let last_event = |name: &str| {
        events
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.clone())
            .expect("an event")
    };

    // ---- payload 2.0: path parameters, repeated query keys, cookies
    let res = http
        .post(format!("{base}/v2/items/a%20b?tag=x&tag=y&q=hello+world"))
        .header("x-api-key", &key)
        .header("x-request-id", "req-fn-2")
        .header("x-custom", "yes")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("cookie", "a=1; b=2")
        .header("user-agent", "fn-test/1")
        .header("content-type", "application/json")
        .body("{\"order\":7}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-fn"], "echo2");
    assert_eq!(res.headers()["x-request-id"], "req-fn-2");
    let set_cookies: Vec<_> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(set_cookies, ["session=abc; Path=/; HttpOnly", "theme=dark"]);
    let len: usize = res.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let got: Value = res.json().await.unwrap();
    assert_eq!(
        len,
        got.to_string().len(),
        "length of the decoded body, not the function's"
    );
    assert_eq!(got["method"], "POST");
    assert_eq!(got["rawPath"], "/fns/v2/items/a%20b");
    assert_eq!(got["httpPath"], "/fns/v2/items/a b");
    assert_eq!(got["rawQueryString"], "tag=x&tag=y&q=hello+world");
    assert_eq!(got["routeKey"], "POST /fns/v2/items/{id}");
    assert_eq!(got["id"], "a b");
    assert_eq!(got["tags"], "x,y");
    assert_eq!(got["q"], "hello world");
    assert_eq!(got["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(got["custom"], "yes");
    assert_eq!(got["multi"], "one,two");
    assert_eq!(got["requestId"], "req-fn-2");
    assert_eq!(got["stage"], "$default");
    assert_eq!(got["sourceIp"], "127.0.0.1");
    assert_eq!(got["userAgent"], "fn-test/1");
    assert_eq!(got["keyId"], key_id.as_str());
    assert_eq!(got["tenant"], "acme");
    assert_eq!(
        got["apiKey"],
        Value::Null,
        "the key value never reaches the function"
    );
    assert_eq!(got["body"], "{\"order\":7}");
    let e = last_event("echo2");
    assert_eq!(e["isBase64Encoded"], false);
    assert_eq!(
        e["headers"].get("cookie"),
        None,
        "2.0 carries cookies in `cookies`"
    );
    assert_eq!(e["requestContext"]["accountId"], "000000000000");
    assert_eq!(e["requestContext"]["apiId"], "fns");
    assert_eq!(e["requestContext"]["identity"]["apiKeyId"], key_id.as_str());
    assert!(e["requestContext"]["timeEpoch"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(e["requestContext"]["time"]
        .as_str()
        .unwrap()
        .ends_with(" +0000"));

    // ---- payload 1.0
    let res = http
        .get(format!("{base}/v1/items/42?tag=x&tag=y"))
        .header("x-api-key", &key)
        .header("x-request-id", "req-fn-1")
        .header("x-custom", "yes")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("cookie", "a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let multi_out: Vec<_> = res.headers().get_all("x-multi-out").iter().collect();
    assert_eq!(multi_out, ["a", "b"]);
    let got: Value = res.json().await.unwrap();
    assert_eq!(got["httpMethod"], "GET");
    assert_eq!(got["path"], "/fns/v1/items/42");
    assert_eq!(got["resource"], "/fns/v1/items/{id}");
    assert_eq!(got["resourcePath"], "/fns/v1/items/{id}");
    assert_eq!(got["id"], "42");
    assert_eq!(got["tag"], "y", "1.0 single-value parameters keep the last");
    assert_eq!(got["tags"], json!(["x", "y"]));
    assert_eq!(got["custom"], "yes");
    assert_eq!(got["multi"], json!(["one", "two"]));
    assert_eq!(got["cookie"], "a=1");
    assert_eq!(got["stageVariables"], Value::Null);
    assert_eq!(got["requestId"], "req-fn-1");
    assert_eq!(got["apiKeyId"], key_id.as_str());
    assert_eq!(got["sourceIp"], "127.0.0.1");
    assert_eq!(got["body"], "");
    let e = last_event("echo1");
    assert_eq!(e["body"], Value::Null);
    assert_eq!(e["isBase64Encoded"], false);

    // ---- a binary body round trip in base64
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, 0x80]).collect();
    let res = http
        .post(format!("{base}/bin"))
        .header("x-api-key", &key)
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        res.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    let e = last_event("binary");
    assert_eq!(e["isBase64Encoded"], true);
    assert_eq!(e["body"], B64.encode(&bytes));
    let mut reversed = bytes.clone();
    reversed.reverse();
    assert_eq!(res.bytes().await.unwrap().as_ref(), reversed.as_slice());

    // ---- 2.0: a bare JSON value is a 200 JSON body; 1.0 needs statusCode
    let res = http
        .get(format!("{base}/bare"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"hello": "world", "n": 1})
    );
    let status = |path: &'static str| {
        let req = http.get(format!("{base}{path}")).header("x-api-key", &key);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/bare1").await, 502);

    // ---- failures: function error, unreadable result, Invoke 404 → 502;
    // no answer within timeout_ms → 504
    assert_eq!(status("/boom").await, 502);
    assert_eq!(status("/garbage").await, 502);
    assert_eq!(status("/missing").await, 502);
    let t = Instant::now();
    assert_eq!(status("/slow").await, 504);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // ---- SigV4: credentials from the environment variables the route names
    std::env::set_var("TOLLGATE_FN_TEST_AK", "AKIDTEST");
    std::env::set_var("TOLLGATE_FN_TEST_SK", "secret");
    std::env::set_var("TOLLGATE_FN_TEST_TOKEN", "session-token");
    let res = http
        .get(format!("{base}/signed"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sig: Value = res.json().await.unwrap();
    let date = sig["date"].as_str().expect("x-amz-date");
    assert_eq!(date.len(), 16, "{date}");
    let auth = sig["authorization"].as_str().expect("authorization");
    let prefix = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDTEST/{}/eu-west-1/lambda/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-invocation-type;x-amz-security-token, Signature=",
        &date[..8]
    );
    assert!(auth.starts_with(&prefix), "{auth}");
    assert_eq!(auth.len(), prefix.len() + 64, "{auth}");
    assert_eq!(sig["token"], "session-token");
    assert_eq!(
        status("/unsigned").await,
        502,
        "credentials missing: no unsigned call"
    );

    // ---- auth still applies before any invocation
    let before = events.lock().unwrap().len();
    let res = http.get(format!("{base}/v2/items/1")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        events.lock().unwrap().len(),
        before,
        "no invocation without a key"
    );

    // ---- metrics: invocations, errors, latency per route
    let metrics = common::dp::metrics_text(&dp).await;
    for line in [
        "tollgate_function_invocations_total{api=\"fns\",route=\"v2\"} 1",
        "tollgate_function_errors_total{api=\"fns\",route=\"boom\"} 1",
        "tollgate_function_errors_total{api=\"fns\",route=\"slow\"} 1",
        "tollgate_function_duration_seconds_count{api=\"fns\",route=\"v1\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert!(!metrics.contains("tollgate_function_errors_total{api=\"fns\",route=\"v2\"}"));

    // ---- a JWT's claims reach the function: 1.0 with their JSON types,
    // 2.0 as text (numbers as digits, arrays as `[a b]`), as AWS passes them
    admin
        .must_put(
            "/v1/authorizers/idp",
            json!({"issuer": "https://idp.test", "algorithms": ["HS256"], "secret": "fn-test-secret"}),
        )
        .await;
    admin
        .must_put(
            "/v1/apis/fns-jwt",
            json!({"base_path": "/fns-jwt", "auth": {"authorizer": "idp"},
                   "routes": [
                       {"id": "v2", "path": "/v2", "function": function(&fn_url, "echo2", "2.0")},
                       {"id": "v1", "path": "/v1", "function": function(&fn_url, "echo1", "1.0")}]}),
        )
        .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": "https://idp.test", "sub": "user-7", "exp": exp, "iat": 1516239022,
                "scope": "orders:read orders:write", "version": "42",
                "roles": ["user", "editor"], "address": {"city": "Seattle"}}),
        &jsonwebtoken::EncodingKey::from_secret(b"fn-test-secret"),
    )
    .unwrap();
    let jwt_base = format!("http://{}/fns-jwt", dp.proxy_addr);
    eventually("the JWT API to serve", Duration::from_secs(15), || async {
        let r = http
            .get(format!("{jwt_base}/v2"))
            .bearer_auth(&token)
            .send()
            .await;
        // The echo handlers answer 201.
        r.map(|r| r.status().is_success()).unwrap_or(false)
    })
    .await;
    let claims = &last_event("echo2")["requestContext"]["authorizer"]["jwt"];
    assert_eq!(claims["claims"]["sub"], "user-7", "{claims}");
    assert_eq!(claims["claims"]["iat"], "1516239022", "{claims}");
    assert_eq!(claims["claims"]["exp"], exp.to_string(), "{claims}");
    assert_eq!(claims["claims"]["version"], "42", "{claims}");
    assert_eq!(claims["claims"]["roles"], "[user editor]", "{claims}");
    assert_eq!(
        claims["claims"]["address"], r#"{"city":"Seattle"}"#,
        "{claims}"
    );
    assert_eq!(claims["claims"]["iss"], "https://idp.test", "{claims}");
    assert_eq!(
        claims["scopes"],
        json!(["orders:read", "orders:write"]),
        "{claims}"
    );
    let res = http
        .get(format!("{jwt_base}/v1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let authorizer = &last_event("echo1")["requestContext"]["authorizer"];
    assert_eq!(authorizer["claims"]["iat"], 1516239022, "{authorizer}");
    assert_eq!(authorizer["claims"]["version"], "42", "{authorizer}");
    assert_eq!(
        authorizer["claims"]["roles"],
        json!(["user", "editor"]),
        "{authorizer}"
    );
    assert_eq!(
        authorizer["claims"]["address"]["city"], "Seattle",
        "{authorizer}"
    );
    assert_eq!(authorizer["principalId"], "user-7", "{authorizer}");
    // A bad token never reaches the function.
    let before = events.lock().unwrap().len();
    let res = http
        .get(format!("{jwt_base}/v2"))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(events.lock().unwrap().len(), before);
}
