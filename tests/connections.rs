//! The connections API's delivery path (contract §5.2) on a real cluster:
//! every node answers for every connection id, through the data plane's
//! `Connections.Open` stream or a peer's `Cluster.Deliver`. Here without
//! WebSocket clients: ids that name no open connection, malformed ids, ids
//! of data planes that do not exist, the admin token, the body limit, and
//! the stream following Watch to another node.

use crate::common;

use std::time::Duration;

use common::dp::{eventually, start_dp_named};
use common::{Cluster, ADMIN_TOKEN};
use serde_json::Value;
use tollgate_model::connection_id::new_id;

/// `method` on `/v1/connections/{id}` of `base` with a raw body:
/// (status, JSON body or `Null`).
async fn call(
    base: &str,
    token: Option<&str>,
    method: &str,
    id: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(
            method.parse().unwrap(),
            format!("{base}/v1/connections/{id}"),
        )
        .timeout(Duration::from_secs(20))
        .header("content-type", "application/octet-stream")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every op on every node answers 410 `gone` for `id`.
async fn gone_everywhere(cluster: &Cluster, id: &str, what: &str) {
    for node in cluster.running() {
        let base = node.admin_url();
        for method in ["POST", "GET", "DELETE"] {
            let (s, v) = call(&base, Some(ADMIN_TOKEN), method, id, b"{\"hi\":1}".to_vec()).await;
            assert_eq!(s, 410, "{what}: {method} on node {}: {v}", node.id);
            assert_eq!(v["error"]["code"], "gone", "{what}: {v}");
            assert!(v["error"]["message"].is_string(), "{v}");
        }
    }
}

/// The index of the node holding `dp`'s connections stream, once one does.
async fn holder(cluster: &Cluster, dp: &str) -> usize {
    let holds = |c: &Cluster| {
        c.nodes.iter().position(|n| {
            n.handle
                .as_ref()
                .is_some_and(|h| h.control.connections.holds(dp))
        })
    };
    eventually(
        "a node holding the data plane's stream",
        Duration::from_secs(15),
        || {
            let found = holds(cluster).is_some();
            async move { found }
        },
    )
    .await;
    holds(cluster).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_answers_for_every_connection_id() {
    common::init_tracing();
    let mut cluster = Cluster::start(3).await;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.grpc_url()).collect();
    let dp = start_dp_named(urls, "dp-ws-1").await;
    let first = holder(&cluster, "dp-ws-1").await;

    // Names the data plane, which holds no such connection: it says so,
    // whichever node is asked (the holder itself, or a peer through it).
    gone_everywhere(&cluster, &new_id("dp-ws-1"), "not open").await;
    gone_everywhere(&cluster, "not-a-connection", "malformed").await;
    gone_everywhere(
        &cluster,
        "has.a.dot.and.is.long.enough.to.parse",
        "malformed",
    )
    .await;
    gone_everywhere(&cluster, &new_id("dp-that-never-was"), "no such data plane").await;

    // The admin token, as on every /v1 route.
    let base = cluster.nodes[0].admin_url();
    let id = new_id("dp-ws-1");
    for method in ["POST", "GET", "DELETE"] {
        for token in [None, Some("wrong")] {
            let (s, v) = call(&base, token, method, &id, Vec::new()).await;
            assert_eq!(s, 401, "{method} with {token:?}: {v}");
            assert_eq!(v["error"]["code"], "unauthenticated");
        }
    }

    // Past the body limit: 413 in the error shape.
    let (s, v) = call(
        &base,
        Some(ADMIN_TOKEN),
        "POST",
        &id,
        vec![b'x'; 129 * 1024],
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");

    // Latency is on /metrics, by op.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for op in ["push", "get", "close"] {
        let line = format!("tollgate_connections_api_duration_seconds_count{{op=\"{op}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
            .parse()
            .unwrap();
        assert!(n >= 4, "{op}: {n}");
    }

    // The stream follows Watch: with its node gone, the data plane's
    // stream moves to another, and the rest still answer through it.
    cluster.stop(first).await;
    let second = holder(&cluster, "dp-ws-1").await;
    assert_ne!(second, first);
    gone_everywhere(&cluster, &new_id("dp-ws-1"), "not open, after a move").await;
    dp.shutdown().await;
}
