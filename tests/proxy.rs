//! The proxy on its own, fed by a mock control plane: NACKs, framing and
//! limits, timeouts, retries, the breaker, health checks, WebSocket, HTTP/2,
//! gRPC, TLS, headers and graceful shutdown.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::dp::{
    dp_with_apis, eventually, full_update, http, resource, start_echo, MockControlPlane, Reply,
    TestUpstream,
};
use common::init_tracing;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_data_plane::Limits;
use tollgate_proto::{ConfigUpdate, ResourceKind};

fn mock_api(id: &str, body: &str) -> serde_json::Value {
    json!({"id": id, "base_path": format!("/{id}"), "routes": [{"id": "r", "path": "/", "mock": {"body": body}}]})
}

fn upstream_api(id: &str, targets: &[String], extra: serde_json::Value) -> serde_json::Value {
    let mut up = json!({"targets": targets.iter().map(|t| json!({"url": t})).collect::<Vec<_>>()});
    for (k, v) in extra.as_object().unwrap() {
        up[k] = v.clone();
    }
    json!({"id": id, "base_path": format!("/{id}"), "upstream": up,
           "routes": [{"id": "all", "path": "/{rest+}"}, {"id": "root", "path": "/"},
                      {"id": "rw", "methods": ["GET"], "path": "/items/{id}", "upstream_path": "/v2/things/{id}"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_nacked_and_the_last_good_one_stays() {
    init_tracing();
    let (cp, dp) = dp_with_apis(&[mock_api("a", "one")], Limits::default()).await;
    let url = format!("http://{}/a", dp.proxy_addr);
    assert_eq!(
        http().get(&url).send().await.unwrap().text().await.unwrap(),
        "one"
    );

    // An API the data plane cannot validate (bad base path), an unknown
    // field (a newer control plane), a delta on the wrong base, and an
    // authorizer reference that does not resolve: each is NACKed.
    let bad_docs = [
        json!({"id":"a","base_path":"no-slash","routes":[]}),
        json!({"id":"a","base_path":"/a","routes":[],"surprise":true}),
        json!({"id":"a","base_path":"/a","auth":{"authorizer":"nope"},"routes":[{"id":"r","path":"/","mock":{}}]}),
    ];
    for (i, doc) in bad_docs.iter().enumerate() {
        let rev = 2 + i as u64;
        let reply = cp
            .push(ConfigUpdate {
                revision: rev,
                full: false,
                base_revision: 1,
                upserts: vec![resource(ResourceKind::Api, "a", doc.clone())],
                removals: vec![],
            })
            .await;
        assert!(
            matches!(&reply, Reply::Nack(r, _) if *r == rev),
            "{reply:?}"
        );
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(
            r.text().await.unwrap(),
            "one",
            "previous config must stay in force"
        );
    }
    let wrong_base = cp
        .push(ConfigUpdate {
            revision: 9,
            full: false,
            base_revision: 7,
            upserts: vec![resource(ResourceKind::Api, "a", mock_api("a", "two"))],
            removals: vec![],
        })
        .await;
    assert!(
        matches!(wrong_base, Reply::Nack(9, ref why) if why.contains("based on revision 7")),
        "{wrong_base:?}"
    );
    // Going backwards is refused too.
    assert!(matches!(
        cp.push(full_update(0, &[])).await,
        Reply::Nack(0, _)
    ));
    assert_eq!(dp.gateway.snapshot().revision(), 1);

    // A good delta on the held revision is applied.
    let good = cp
        .push(ConfigUpdate {
            revision: 10,
            full: false,
            base_revision: 1,
            upserts: vec![resource(ResourceKind::Api, "a", mock_api("a", "two"))],
            removals: vec![],
        })
        .await;
    assert_eq!(good, Reply::Ack(10));
    assert_eq!(
        http().get(&url).send().await.unwrap().text().await.unwrap(),
        "two"
    );
    cp.stop();
}

/// Send raw bytes; return the status line's code and whether the server
/// closed the connection afterwards.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_millis(400), s.read(&mut chunk)).await {
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_framing_and_limits_get_their_status_codes() {
    init_tracing();
    let limits = Limits {
        max_body_bytes: 1024,
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(700),
        ..Limits::default()
    };
    let (echo, _s) = start_echo().await;
    let (cp, dp) = dp_with_apis(
        &[upstream_api("e", &[format!("http://{echo}")], json!({}))],
        limits,
    )
    .await;
    let a = dp.proxy_addr;

    // Sanity: a well-formed request passes and the connection stays open.
    assert_eq!(
        raw(a, b"GET /e/x HTTP/1.1\r\nHost: h\r\n\r\n").await,
        (200, false)
    );
    let cases: &[(&str, &[u8], u16)] = &[
        ("CL and TE", b"POST /e/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE and CL", b"POST /e/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
        ("two lengths", b"POST /e/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
        ("two hosts", b"GET /e/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("bad header bytes", b"GET /e/x HTTP/1.1\r\nHost: h\r\nX-Bad: a\x01b\r\n\r\n", 400),
        ("bad header name", b"GET /e/x HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(raw(a, bytes).await, (*want, true), "{what}");
    }
    // Sizes.
    let long_uri = format!("GET /e/{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
    assert_eq!(raw(a, long_uri.as_bytes()).await.0, 414);
    let many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    assert_eq!(
        raw(
            a,
            format!("GET /e/x HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes()
        )
        .await
        .0,
        431
    );
    let big = format!(
        "GET /e/x HTTP/1.1\r\nHost: h\r\nx-big: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    assert_eq!(raw(a, big.as_bytes()).await.0, 431);
    let body = format!(
        "POST /e/x HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n{}",
        "z".repeat(2000)
    );
    assert_eq!(raw(a, body.as_bytes()).await.0, 413);
    let chunked = format!(
        "POST /e/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n",
        "z".repeat(2000)
    );
    assert_eq!(raw(a, chunked.as_bytes()).await.0, 413);
    let small = "POST /e/x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789";
    assert_eq!(raw(a, small.as_bytes()).await, (200, false));

    // A client that never finishes its headers is cut off.
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /e/x HTTP/1.1\r\nHost: h\r\n")
        .await
        .unwrap();
    let mut b = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await;
    assert!(
        matches!(n, Ok(Ok(_))),
        "slow headers: connection must end, got {n:?}"
    );

    // An idle keep-alive connection is closed.
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /e/x HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf).await.unwrap();
    let t = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(n.is_ok(), "idle connection was not closed");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "closed too early: {:?}",
        t.elapsed()
    );
    cp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_mocks_rewrites_and_headers() {
    init_tracing();
    let (echo, _s) = start_echo().await;
    let apis = [
        upstream_api("e", &[format!("http://{echo}/base")], json!({})),
        mock_api("m", "mocked"),
    ];
    let (cp, dp) = dp_with_apis(&apis, Limits::default()).await;
    let http = http();
    let base = format!("http://{}", dp.proxy_addr);

    let r = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.text().await.unwrap(), r#"{"message":"Not Found"}"#);
    let r = http.post(format!("{base}/e/items/7")).send().await.unwrap();
    assert_eq!(r.status(), 200, "POST falls through to the {{rest+}} route");
    let r = http.get(format!("{base}/m")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "mocked");
    let r = http.delete(format!("{base}/m")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "mock routes without methods take every method"
    );

    let r = http
        .get(format!("{base}/e/items/7?q=1"))
        .header("x-request-id", "req-123")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-api-key", "tg_secret")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic x")
        .header("upgrade", "h2c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["path"], "/base/v2/things/7",
        "upstream_path rewrite under the target's path"
    );
    assert_eq!(v["query"], "q=1");
    let h = &v["headers"];
    assert_eq!(h["x-request-id"], "req-123");
    // The gateway passes the trace on as its own child span: same trace id,
    // a new parent id.
    let traceparent = h["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{traceparent}"
    );
    assert!(!traceparent.contains("b7ad6b7169203331"), "{traceparent}");
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], dp.proxy_addr.to_string());
    for gone in [
        "x-api-key",
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "upgrade",
        "connection",
    ] {
        assert!(
            h.get(gone).is_none(),
            "{gone} must not reach the upstream: {h}"
        );
    }
    // Without a traceparent the gateway starts a trace.
    let v: serde_json::Value = http
        .get(format!("{base}/e/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = &v["headers"];
    assert!(h["traceparent"].as_str().unwrap().starts_with("00-"));
    assert!(!h["traceparent"].as_str().unwrap().contains(", "), "{h}");
    assert!(!h["x-request-id"].as_str().unwrap().contains(", "), "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    // `x-forwarded-proto` and `-host` from an earlier proxy are kept, once.
    let v: serde_json::Value = http
        .get(format!("{base}/e/x"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "api.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    assert_eq!(v["headers"]["x-forwarded-host"], "api.example");
    cp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_retries_and_the_circuit_breaker() {
    init_tracing();
    let (echo, _s) = start_echo().await;
    // A port with nothing listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let flaky = TestUpstream::start("flaky").await;
    let good = TestUpstream::start("good").await;
    flaky.status.store(503, Ordering::SeqCst);
    let apis = [
        upstream_api(
            "slow",
            &[format!("http://{echo}")],
            json!({"timeout_ms": 300}),
        ),
        upstream_api(
            "half-dead",
            &[dead.clone(), format!("http://{echo}")],
            json!({"retries": 1, "circuit_breaker_failures": 0}),
        ),
        upstream_api(
            "flaky",
            &[flaky.url(), good.url()],
            json!({"retries": 1, "circuit_breaker_failures": 0}),
        ),
        upstream_api(
            "broken",
            std::slice::from_ref(&dead),
            json!({"retries": 0, "circuit_breaker_failures": 3}),
        ),
    ];
    let (cp, dp) = dp_with_apis(&apis, Limits::default()).await;
    let http = http();
    let base = format!("http://{}", dp.proxy_addr);

    let t = std::time::Instant::now();
    let r = http
        .get(format!("{base}/slow/x?delay_ms=2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"message":"Endpoint Request Timed Out"}"#
    );
    assert!(t.elapsed() < Duration::from_millis(1500));

    // GET is retried on the other target after a connect error.
    for _ in 0..6 {
        assert_eq!(
            http.get(format!("{base}/half-dead/x"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    // POST is not retried: some land on the dead target and get 502.
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(
            http.post(format!("{base}/half-dead/x"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(codes.contains(&502) && codes.contains(&200), "{codes:?}");

    // A 503 from one target is retried on the other for GET, not for POST.
    for _ in 0..4 {
        let r = http.get(format!("{base}/flaky/x")).send().await.unwrap();
        assert_eq!(r.headers()["x-upstream"], "good");
    }
    let flaky_before = flaky.hits.load(Ordering::SeqCst);
    let mut saw_503 = false;
    for _ in 0..4 {
        let r = http.post(format!("{base}/flaky/x")).send().await.unwrap();
        saw_503 |= r.status() == 503;
    }
    assert!(saw_503, "POST must not be retried");
    assert!(flaky.hits.load(Ordering::SeqCst) > flaky_before);

    // The breaker opens after 3 consecutive failures: then no attempt is
    // made (503 No Healthy Upstream, immediately).
    for _ in 0..3 {
        assert_eq!(
            http.get(format!("{base}/broken/x"))
                .send()
                .await
                .unwrap()
                .status(),
            502
        );
    }
    let r = http.get(format!("{base}/broken/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"message":"No Healthy Upstream"}"#
    );
    cp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_targets_out_and_put_them_back() {
    init_tracing();
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let api = upstream_api(
        "hc",
        &[a.url(), b.url()],
        json!({"health_check": {"path": "/healthz", "interval_ms": 100, "unhealthy_threshold": 2, "healthy_threshold": 2}}),
    );
    let (cp, dp) = dp_with_apis(&[api], Limits::default()).await;
    let http = http();
    let url = format!("http://{}/hc/x", dp.proxy_addr);
    let served_by = |n: usize| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let mut names = Vec::new();
            for _ in 0..n {
                let r = http.get(&url).send().await.unwrap();
                names.push(r.headers()["x-upstream"].to_str().unwrap().to_string());
            }
            names
        }
    };
    let names = served_by(6).await;
    assert!(
        names.contains(&"a".to_string()) && names.contains(&"b".to_string()),
        "{names:?}"
    );

    b.healthy.store(false, Ordering::SeqCst);
    eventually("b to be taken out", Duration::from_secs(5), || async {
        served_by(6).await.iter().all(|n| n == "a")
    })
    .await;
    b.healthy.store(true, Ordering::SeqCst);
    eventually("b to be put back", Duration::from_secs(5), || async {
        served_by(6).await.iter().any(|n| n == "b")
    })
    .await;

    // least_request spreads over both too.
    let lr = upstream_api(
        "hc",
        &[a.url(), b.url()],
        json!({"load_balancing": "least_request"}),
    );
    assert_eq!(cp.push(full_update(2, &[lr])).await, Reply::Ack(2));
    let names = served_by(8).await;
    assert!(
        names.contains(&"a".to_string()) && names.contains(&"b".to_string()),
        "{names:?}"
    );
    cp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_passthrough() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    init_tracing();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() {
                        ws.send(Message::text(format!("echo: {}", m.to_text().unwrap())))
                            .await
                            .unwrap();
                    }
                }
            });
        }
    });
    let (cp, dp) = dp_with_apis(
        &[upstream_api(
            "ws",
            &[format!("http://{ws_addr}")],
            json!({}),
        )],
        Limits::default(),
    )
    .await;
    let (mut ws, res) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", dp.proxy_addr))
        .await
        .expect("upgrade through the proxy");
    assert_eq!(res.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("hi {i}"))).await.unwrap();
        let m = ws.next().await.unwrap().unwrap();
        assert_eq!(m.to_text().unwrap(), format!("echo: hi {i}"));
    }
    cp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_grpc_passthrough() {
    init_tracing();
    let (echo, _s) = start_echo().await;
    // The gRPC upstream: another mock control plane, reached through the proxy.
    let grpc_upstream = MockControlPlane::start().await;
    let apis = [
        upstream_api("e", &[format!("http://{echo}")], json!({})),
        json!({"id": "grpc", "base_path": "/", "upstream": {"targets": [{"url": grpc_upstream.url}]},
               "routes": [{"id": "svc", "path": "/tollgate.v1.Config/{method}"}]}),
    ];
    let (cp, dp) = dp_with_apis(&apis, Limits::default()).await;

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .get(format!("http://{}/e/x", dp.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);

    // A bidirectional gRPC stream through the proxy: a config watch.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", dp.proxy_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tollgate_proto::config_client::ConfigClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(tollgate_proto::WatchRequest {
        msg: Some(tollgate_proto::watch_request::Msg::Hello(
            tollgate_proto::Hello {
                node_id: "through-proxy".into(),
                addr: String::new(),
                revision: 0,
            },
        )),
    })
    .await
    .unwrap();
    let mut inbound = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("grpc call through the proxy")
        .into_inner();
    let pushed = tokio::spawn(async move {
        // The mock answers with whatever it gets back; we ACK by hand below.
        grpc_upstream.push(full_update(5, &[])).await
    });
    let update = inbound
        .message()
        .await
        .unwrap()
        .expect("an update through the proxy");
    assert_eq!(update.revision, 5);
    tx.send(tollgate_proto::WatchRequest {
        msg: Some(tollgate_proto::watch_request::Msg::Ack(
            tollgate_proto::Ack { revision: 5 },
        )),
    })
    .await
    .unwrap();
    assert_eq!(pushed.await.unwrap(), Reply::Ack(5));
    cp.stop();
}

fn self_signed() -> (rcgen::CertifiedKey, tempfile::TempDir) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
    (ck, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_with_alpn() {
    init_tracing();
    let (ck, dir) = self_signed();
    let tls = tollgate_data_plane::server::tls_config(
        &dir.path().join("cert.pem"),
        &dir.path().join("key.pem"),
    )
    .unwrap();
    let cp = MockControlPlane::start().await;
    let dp =
        common::dp::start_dp_with(vec![cp.url.clone()], None, Limits::default(), Some(tls)).await;
    assert_eq!(
        cp.push(full_update(1, &[mock_api("m", "secure")])).await,
        Reply::Ack(1)
    );
    let ca = reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap();
    let url = format!("https://localhost:{}/m", dp.proxy_addr.port());
    for h2 in [false, true] {
        let mut b = reqwest::Client::builder().add_root_certificate(ca.clone());
        b = if h2 { b } else { b.http1_only() };
        let r = b.build().unwrap().get(&url).send().await.unwrap();
        let want = if h2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(r.version(), want);
        assert_eq!(r.text().await.unwrap(), "secure");
    }
    // Bad certificate files are refused with a reason.
    std::fs::write(dir.path().join("bad.pem"), "not a pem").unwrap();
    let err = tollgate_data_plane::server::tls_config(
        &dir.path().join("bad.pem"),
        &dir.path().join("key.pem"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
    cp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_in_flight_requests() {
    init_tracing();
    let (echo, _s) = start_echo().await;
    let (cp, dp) = dp_with_apis(
        &[upstream_api("e", &[format!("http://{echo}")], json!({}))],
        Limits::default(),
    )
    .await;
    let addr = dp.proxy_addr;
    let in_flight = tokio::spawn(async move {
        http()
            .get(format!("http://{addr}/e/x?delay_ms=700"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    dp.shutdown().await;
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "shutdown did not wait for the request"
    );
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    cp.stop();
}
