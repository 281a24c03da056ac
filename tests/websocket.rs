//! WebSocket APIs (issue 20, contract §5.3) end to end: a 3-node control
//! plane, two data planes, real WebSocket clients (tokio-tungstenite) and
//! a real HTTP server standing in for the integrations, recording what it
//! receives. One cluster for the whole binary: each section below is a
//! step of one story.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::dp::{
    eventually, http, metrics_text, start_dp_named, start_dp_opts, wait_for_revision, DpOptions,
};
use common::{init_tracing, Cluster};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(15);

/// One call an integration received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// The integrations' server: records every call; `/connect` answers the
/// status in `connect_status`; `/messages` echoes `{"echo": body}`.
#[derive(Clone)]
struct Recorder {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Received>>>,
    connect_status: Arc<Mutex<u16>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Recorder {
            addr: l.local_addr().unwrap(),
            calls: Arc::default(),
            connect_status: Arc::new(Mutex::new(200)),
        };
        let rec = r.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = l.accept().await.unwrap();
                let rec = rec.clone();
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let rec = rec.clone();
                    async move { Ok::<_, Infallible>(rec.answer(req).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        r
    }

    async fn answer(&self, req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let path = parts.uri.path().to_string();
        self.calls.lock().unwrap().push(Received {
            path: parts.uri.to_string(),
            headers: parts.headers,
            body: body.clone(),
        });
        let (status, out) = match path.as_str() {
            "/connect" => (*self.connect_status.lock().unwrap(), Bytes::new()),
            "/messages" => {
                let text = String::from_utf8_lossy(&body).into_owned();
                (200, Bytes::from(json!({ "echo": text }).to_string()))
            }
            _ => (200, Bytes::from_static(b"ignored")),
        };
        http::Response::builder()
            .status(status)
            .body(Full::new(out))
            .unwrap()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The calls to `path` (query included) for connection `id`.
    fn calls_to(&self, path: &str, id: &str) -> Vec<Received> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path.starts_with(path) && c.header("x-tollgate-connection-id") == id)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, path: &str, id: &str) -> Received {
        eventually(&format!("a call to {path} for {id}"), WAIT, || async {
            !self.calls_to(path, id).is_empty()
        })
        .await;
        self.calls_to(path, id).remove(0)
    }
}

fn chat(recorder: &str, base_path: &str, websocket: Value) -> Value {
    json!({
        "protocol": "websocket",
        "base_path": base_path,
        "auth": {"api_key": true},
        "route_selection": "$request.body.action",
        "upstream": {"targets": [{"url": recorder}], "timeout_ms": 5000},
        "websocket": websocket,
        "routes": [
            {"id": "connect", "key": "$connect", "path": "/connect"},
            {"id": "disconnect", "key": "$disconnect", "path": "/disconnect"},
            {"id": "send", "key": "sendmessage", "path": "/messages", "response": true},
            {"id": "join", "key": "join", "path": "/join"},
            {"id": "leave", "key": "leave", "path": "/leave"},
            {"id": "default", "key": "$default", "mock": {"status": 200, "body": "{\"error\":\"unknown action\"}"}}
        ]
    })
}

/// A WebSocket client on `addr` at `path` with `key`: the client and its
/// connection id, or the HTTP status the upgrade was refused with.
async fn connect(addr: SocketAddr, path: &str, key: Option<&str>) -> Result<(Client, String), u16> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(k) = key {
        req.headers_mut().insert("x-api-key", k.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, res)) => {
            let id = res.headers()["x-tollgate-connection-id"]
                .to_str()
                .unwrap()
                .to_string();
            Ok((ws, id))
        }
        Err(tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("websocket connect failed: {e}"),
    }
}

/// The next data message (text or binary) or close frame, skipping pings.
async fn next(ws: &mut Client) -> Message {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("the connection is open")
            .expect("a good frame");
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            return m;
        }
    }
}

async fn next_text(ws: &mut Client) -> String {
    match next(ws).await {
        Message::Text(t) => t.as_str().to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn next_json(ws: &mut Client) -> Value {
    serde_json::from_str(&next_text(ws).await).unwrap()
}

/// The close code the gateway closes `ws` with.
async fn close_code(ws: &mut Client) -> u16 {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

async fn send_json(ws: &mut Client, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// A raw request to the proxy: the status line's code.
async fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    head[9..12].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_apis_route_push_meter_and_close() {
    init_tracing();
    let c = Cluster::start(3).await;
    let admin = c.nodes[0].client();
    let rec = Recorder::start().await;
    // A streams from node 0 (then node 1), B from node 1.
    let logs = tempfile::tempdir().unwrap();
    let log_file = logs.path().join("access.log");
    let dp_a = start_dp_opts(
        vec![c.nodes[0].grpc_url(), c.nodes[1].grpc_url()],
        DpOptions {
            node_id: Some("dp-a"),
            access_log: Some(tollgate_data_plane::AccessLogTarget::File(log_file.clone())),
            ..DpOptions::default()
        },
    )
    .await;
    let dp_b = start_dp_named(vec![c.nodes[1].grpc_url()], "dp-b").await;

    // ---- documents: bad ones get a 400 naming the field
    let mut twice = chat(&rec.url(), "/chat", json!({}));
    twice["routes"][1]["key"] = json!("$connect");
    let (s, v) = admin.put("/v1/apis/chat", twice).await;
    assert_refused(s, &v, "routes[1].key");
    let mut dup = chat(&rec.url(), "/chat", json!({}));
    dup["routes"][4]["key"] = json!("join");
    let (s, v) = admin.put("/v1/apis/chat", dup).await;
    assert_refused(s, &v, "routes[4].key");
    let http_with_key =
        json!({"base_path": "/h", "routes": [{"id": "r", "path": "/", "key": "x", "mock": {}}]});
    let (s, v) = admin.put("/v1/apis/h", http_with_key).await;
    assert_refused(s, &v, "routes[0].key");
    let (s, v) = admin
        .put(
            "/v1/apis/chat",
            chat(&rec.url(), "/chat", json!({"max_frame_bytes": 0})),
        )
        .await;
    assert_refused(s, &v, "websocket.max_frame_bytes");

    // ---- the API, a plan without limits, one with a throttle, one with a quota
    admin
        .must_put("/v1/apis/chat", chat(&rec.url(), "/chat", json!({})))
        .await;
    admin
        .must_put(
            "/v1/apis/idle",
            chat(&rec.url(), "/idle", json!({"idle_timeout_s": 1})),
        )
        .await;
    let mut open_api = chat(&rec.url(), "/temp", json!({}));
    open_api["auth"] = json!({});
    admin.must_put("/v1/apis/temp", open_api).await;
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    admin
        .must_put("/v1/usage-plans/open", json!({"apis": ["chat", "idle"]}))
        .await;
    admin
        .must_put(
            "/v1/usage-plans/slow",
            json!({"apis": ["chat"], "throttle": {"rate": 0.5, "burst": 3}}),
        )
        .await;
    let rev = admin
        .must_put(
            "/v1/usage-plans/small",
            json!({"apis": ["chat"], "quota": {"limit": 4, "period": "day"}}),
        )
        .await;
    let (key_id, key) = admin.issue_key("open").await;
    let (_, slow_key) = admin.issue_key("slow").await;
    let (_, small_key) = admin.issue_key("small").await;
    let (usage_key_id, usage_key) = admin.issue_key("open").await;
    wait_for_revision(&dp_a, rev).await;
    wait_for_revision(&dp_b, rev).await;
    let a = dp_a.proxy_addr;

    // ---- the upgrade: handshake fields, auth, $connect
    let plain = "GET /chat HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(raw_status(a, plain).await, 426);
    let no_key = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(raw_status(a, no_key).await, 400);
    assert_eq!(connect(a, "/chat", None).await.err(), Some(403));
    *rec.connect_status.lock().unwrap() = 401;
    assert_eq!(connect(a, "/chat", Some(&key)).await.err(), Some(401));
    *rec.connect_status.lock().unwrap() = 200;
    let (mut ws, id) = connect(a, "/chat?room=1", Some(&key)).await.unwrap();
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{id}"
    );
    let connected = rec.wait_for("/connect", &id).await;
    assert_eq!(connected.path, "/connect?room=1");
    assert_eq!(connected.header("x-tollgate-event-type"), "CONNECT");
    assert_eq!(connected.header("x-tollgate-route-key"), "$connect");
    assert_eq!(connected.header("x-tollgate-key-id"), key_id);
    assert_eq!(connected.header("x-tollgate-tenant"), "acme");
    assert!(
        connected.headers.get("x-api-key").is_none(),
        "the key never reaches an integration"
    );
    assert!(connected.headers.get("sec-websocket-key").is_none());
    assert!(connected.body.is_empty());

    // ---- routing: three named routes, $default, route responses
    send_json(&mut ws, json!({"action": "sendmessage", "text": "hi"})).await;
    let echo = next_json(&mut ws).await;
    assert_eq!(
        echo["echo"],
        json!({"action": "sendmessage", "text": "hi"}).to_string()
    );
    let sent = rec.wait_for("/messages", &id).await;
    assert_eq!(sent.header("x-tollgate-event-type"), "MESSAGE");
    assert_eq!(sent.header("x-tollgate-route-key"), "sendmessage");
    assert_eq!(sent.header("x-tollgate-key-id"), key_id);
    assert_eq!(sent.header("content-type"), "application/json");
    for route in ["join", "leave"] {
        send_json(&mut ws, json!({"action": route})).await;
        let got = rec.wait_for(&format!("/{route}"), &id).await;
        assert_eq!(got.header("x-tollgate-route-key"), route);
        assert_eq!(got.body, json!({"action": route}).to_string().as_bytes());
    }
    send_json(&mut ws, json!({"action": "nope"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"error": "unknown action"}));
    ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"error": "unknown action"}));
    ws.send(Message::binary(vec![0xff, 0x00])).await.unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"error": "unknown action"}));

    // ---- the connections API on a node A does not stream from
    let other = c.nodes[2].client();
    assert_eq!(
        push_to(&other.base, &id, "hello from the backend").await,
        204
    );
    assert_eq!(next_text(&mut ws).await, "hello from the backend");
    let (s, info) = other.get(&format!("/v1/connections/{id}")).await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["api"], "chat");
    assert_eq!(info["key_id"], key_id.as_str());
    assert_eq!(info["tenant"], "acme");
    assert_eq!(info["source_ip"], "127.0.0.1");
    assert!(
        info["connected_at"].as_str().unwrap().ends_with('Z'),
        "{info}"
    );

    // ---- a config change leaves open connections open
    let mut changed = chat(&rec.url(), "/chat", json!({}));
    changed["routes"][4]["path"] = json!("/leave-v2");
    let rev = admin.must_put("/v1/apis/chat", changed).await;
    wait_for_revision(&dp_a, rev).await;
    send_json(&mut ws, json!({"action": "leave"})).await;
    rec.wait_for("/leave-v2", &id).await;
    assert_eq!(push_to(&other.base, &id, "still here").await, 204);
    assert_eq!(next_text(&mut ws).await, "still here");

    // ---- DELETE closes with 1000 and runs $disconnect; 410 afterwards
    let (s, _) = other.delete(&format!("/v1/connections/{id}")).await;
    assert_eq!(s, 204);
    assert_eq!(close_code(&mut ws).await, 1000);
    let gone = rec.wait_for("/disconnect", &id).await;
    assert_eq!(gone.header("x-tollgate-event-type"), "DISCONNECT");
    assert_eq!(gone.header("x-tollgate-close-code"), "1000");
    for node in &c.nodes {
        let (s, v) = node.client().get(&format!("/v1/connections/{id}")).await;
        assert_eq!((s, v["error"]["code"].as_str()), (410, Some("gone")), "{v}");
    }
    assert_eq!(push_to(&other.base, &id, "too late").await, 410);

    // ---- limits: a frame over 32 KiB or a message over 128 KiB closes
    // with 1009; bad UTF-8 with 1007
    let (mut ws, _) = connect(a, "/chat", Some(&key)).await.unwrap();
    ws.send(Message::binary(vec![7u8; 33 * 1024]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);
    let (mut ws, _) = connect(a, "/chat", Some(&key)).await.unwrap();
    let frames = 129 / 32 + 1;
    for i in 0..frames {
        let op = if i == 0 { Data::Binary } else { Data::Continue };
        let frame = Frame::message(vec![7u8; 32 * 1024], OpCode::Data(op), i == frames - 1);
        if ws.send(Message::Frame(frame)).await.is_err() {
            break; // closed under the sender
        }
    }
    assert_eq!(close_code(&mut ws).await, 1009);
    let (mut ws, _) = connect(a, "/chat", Some(&key)).await.unwrap();
    let bad = Frame::message(vec![0xc3, 0x28], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1007);

    // ---- the idle timeout closes with 1001
    let (mut ws, idle_id) = connect(a, "/idle", Some(&key)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1001);
    let gone = rec.wait_for("/disconnect", &idle_id).await;
    assert_eq!(gone.header("x-tollgate-close-code"), "1001");

    // ---- throttle: over the rate, an error message, and the connection stays
    let (mut ws, slow_id) = connect(a, "/chat", Some(&slow_key)).await.unwrap();
    let mut refused = 0;
    for _ in 0..6 {
        send_json(&mut ws, json!({"action": "nope"})).await;
        let answer = next_json(&mut ws).await;
        if answer["message"] == "Too Many Requests" {
            assert_eq!(answer["connectionId"], slow_id.as_str());
            refused += 1;
        }
    }
    assert!(
        refused >= 1,
        "a burst of 3 at 0.5/s refuses some of 6 messages"
    );
    // A push over the throttle is not delivered: its caller gets 429.
    let mut delivered = 0;
    let mut throttled = false;
    for _ in 0..5 {
        match push_to(&c.nodes[1].admin_url(), &slow_id, "over").await {
            204 => delivered += 1,
            429 => throttled = true,
            other => panic!("push answered {other}"),
        }
    }
    assert!(throttled, "pushes over the throttle get 429");
    for _ in 0..delivered {
        assert_eq!(next_text(&mut ws).await, "over");
    }
    ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    assert!(matches!(
        tokio::time::timeout(WAIT, ws.next()).await.unwrap(),
        Some(Ok(Message::Pong(_)))
    ));
    ws.close(None).await.unwrap();

    // ---- quota: 4 units a day; the upgrade took one
    let (mut ws, _) = connect(a, "/chat", Some(&small_key)).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..5 {
        send_json(&mut ws, json!({"action": "join"})).await;
    }
    send_json(&mut ws, json!({"action": "nope"})).await;
    while answers.len() < 3 {
        answers.push(next_json(&mut ws).await);
    }
    assert!(
        answers.iter().all(|a| a["message"] == "Limit Exceeded"),
        "{answers:?}"
    );
    ws.close(None).await.unwrap();
    assert_eq!(connect(a, "/chat", Some(&small_key)).await.err(), Some(429));

    // ---- metering: messages in 32 KiB units, connection-minutes
    let (mut ws, usage_id) = connect(a, "/chat", Some(&usage_key)).await.unwrap();
    for _ in 0..3 {
        send_json(&mut ws, json!({"action": "join"})).await;
    }
    // 40 KiB (2 units) in two frames: a frame may carry 32 KiB.
    let big = json!({"action": "join", "pad": "x".repeat(40 * 1024)}).to_string();
    let (first, rest) = big.as_bytes().split_at(30 * 1024);
    let first = Frame::message(first.to_vec(), OpCode::Data(Data::Text), false);
    let rest = Frame::message(rest.to_vec(), OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(first)).await.unwrap();
    ws.send(Message::Frame(rest)).await.unwrap();
    eventually("the joins", WAIT, || async {
        rec.calls_to("/join", &usage_id).len() == 4
    })
    .await;
    assert_eq!(push_to(&other.base, &usage_id, "one").await, 204); // 1 unit
    next_text(&mut ws).await;
    let bye = tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Away,
        reason: "bye".into(),
    };
    ws.close(Some(bye)).await.unwrap();
    let gone = rec.wait_for("/disconnect", &usage_id).await;
    assert_eq!(gone.header("x-tollgate-close-code"), "1001");
    assert_eq!(gone.header("x-tollgate-close-reason"), "bye");
    dp_a.gateway.plans().unwrap().flush().await;
    let reader = c.nodes[1].client();
    eventually("metered messages", WAIT, || async {
        let (_, u) = reader.get(&format!("/v1/keys/{usage_key_id}/usage")).await;
        let day = |m: &str| u[m]["open"].as_array().and_then(|d| d.last().cloned());
        day("messages") == Some(json!(6)) && day("connection_minutes") == Some(json!(1))
    })
    .await;

    // ---- metrics
    eventually("no connection open", WAIT, || async {
        metrics_text(&dp_a)
            .await
            .contains("tollgate_websocket_connections{api=\"chat\"} 0")
    })
    .await;
    let text = metrics_text(&dp_a).await;
    for line in [
        "tollgate_websocket_closes_total{api=\"chat\",code=\"1009\"} 2",
        "tollgate_websocket_closes_total{api=\"chat\",code=\"1007\"} 1",
        "tollgate_websocket_closes_total{api=\"chat\",code=\"1000\"} 1",
        "tollgate_websocket_closes_total{api=\"idle\",code=\"1001\"} 1",
        "tollgate_websocket_push_seconds_count{api=\"chat\"} 3",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(text.contains("tollgate_websocket_messages_total{api=\"chat\",direction=\"in\"}"));

    // ---- removing the API closes its connections with 1001
    let (mut ws, temp_id) = connect(a, "/temp", None).await.unwrap();
    let (s, _) = admin.delete("/v1/apis/temp").await;
    assert!(s == 200 || s == 204, "{s}");
    assert_eq!(close_code(&mut ws).await, 1001);
    let gone = rec.wait_for("/disconnect", &temp_id).await;
    assert_eq!(gone.header("x-tollgate-close-code"), "1001");

    // ---- an access-log line when a connection opens and when it closes
    eventually("connect and disconnect lines", WAIT, || async {
        let text = std::fs::read_to_string(&log_file).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &Value| l["connection_id"] == usage_id.as_str())
            .collect();
        lines.len() == 2
            && lines[0]["event"] == "connect"
            && lines[1]["event"] == "disconnect"
            && lines[1]["close_code"] == 1001
            && lines[1]["key_id"] == usage_key_id.as_str()
    })
    .await;

    // ---- A stays reachable once it streams from another node
    let (mut ws, moved_id) = connect(a, "/chat", Some(&key)).await.unwrap();
    let mut c = c;
    c.stop(0).await;
    eventually("a push through the node A moved to", WAIT, || async {
        push_to(&c.nodes[2].admin_url(), &moved_id, "moved").await == 204
    })
    .await;
    assert_eq!(next_text(&mut ws).await, "moved");

    // ---- SIGTERM on B: $disconnect completes, then 1001
    let (mut ws, b_id) = connect(dp_b.proxy_addr, "/chat", Some(&key)).await.unwrap();
    let closing = tokio::spawn(dp_b.shutdown());
    assert_eq!(close_code(&mut ws).await, 1001);
    assert_eq!(
        rec.calls_to("/disconnect", &b_id).len(),
        1,
        "$disconnect ran before the close frame"
    );
    tokio::time::timeout(WAIT, closing).await.unwrap().unwrap();
    drop(dp_a);
}

/// A 400 whose message names `field` first.
fn assert_refused(status: u16, v: &Value, field: &str) {
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("{field}:")),
        "{message:?} should name {field}"
    );
}

async fn push_to(base: &str, id: &str, body: &'static str) -> u16 {
    http()
        .post(format!(
            "{}/v1/connections/{id}",
            base.trim_end_matches('/')
        ))
        .bearer_auth(common::ADMIN_TOKEN)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
