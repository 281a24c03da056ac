//! Data planes against a real Raft control plane: propagation, surviving
//! the loss of every control-plane node, failover between nodes, and hot
//! reload under load.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dp::{eventually, http, start_dp, start_dp_named, start_echo, wait_for_revision};
use common::{api_doc, init_tracing, Cluster};
use serde_json::json;

fn grpc_urls(c: &Cluster) -> Vec<String> {
    c.nodes.iter().map(|n| n.grpc_url()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_route_answers_on_every_data_plane() {
    init_tracing();
    let c = Cluster::start(3).await;
    let (echo, _stop) = start_echo().await;
    let leader = c.leader().await;
    let follower = c.follower(leader);
    // One data plane per control-plane node, so followers serve streams too.
    let mut dps = Vec::new();
    for n in &c.nodes {
        dps.push(start_dp(vec![n.grpc_url()], None).await);
    }
    let admin = c.nodes[follower].client();
    let http = http();
    let started = Instant::now();
    let rev = admin
        .must_put(
            "/v1/apis/orders",
            api_doc("orders", "/orders", &format!("http://{echo}")),
        )
        .await;
    let mut seen = Vec::new();
    for dp in &dps {
        let url = format!("http://{}/orders/1", dp.proxy_addr);
        eventually(
            "the route on a data plane",
            Duration::from_secs(10),
            || async { matches!(http.get(&url).send().await, Ok(r) if r.status() == 200) },
        )
        .await;
        seen.push(started.elapsed());
    }
    println!(
        "admin write (rev {rev}) to 200 on all 3 data planes: {:?}",
        seen.last().unwrap()
    );

    // The echo upstream saw the forwarded path.
    let body: serde_json::Value = http
        .get(format!("http://{}/orders/a/b?x=1", dps[0].proxy_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["path"], "/a/b");
    assert_eq!(body["query"], "x=1");

    // Every data plane is listed with its revision.
    let dps_ref = &dps;
    eventually(
        "GET /v1/cluster to list the data planes",
        Duration::from_secs(5),
        || async {
            let (_, v) = c.nodes[leader].client().get("/v1/cluster").await;
            let list = v["data_planes"].as_array().cloned().unwrap_or_default();
            list.len() == dps_ref.len()
                && list.iter().all(|d| {
                    d["connected"] == true
                        && d["revision"].as_u64() >= Some(rev)
                        && d["last_seen"].is_string()
                })
        },
    )
    .await;

    // Removing the API removes the route everywhere.
    let (s, _) = admin.delete("/v1/apis/orders").await;
    assert_eq!(s, 200);
    for dp in &dps {
        let url = format!("http://{}/orders/1", dp.proxy_addr);
        eventually("the route to go away", Duration::from_secs(10), || async {
            matches!(http.get(&url).send().await, Ok(r) if r.status() == 404)
        })
        .await;
    }
}

/// Requests in a loop until `stop`; counts failures (anything but 200).
fn traffic(
    url: String,
    stop: Arc<AtomicBool>,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (o, f) = (ok.clone(), failed.clone());
    let task = tokio::spawn(async move {
        let http = http();
        while !stop.load(Ordering::Relaxed) {
            match http.get(&url).send().await {
                Ok(r) if r.status() == 200 => o.fetch_add(1, Ordering::Relaxed),
                Ok(r) => {
                    eprintln!("failed request: {}", r.status());
                    f.fetch_add(1, Ordering::Relaxed)
                }
                Err(e) => {
                    eprintln!("failed request: {e}");
                    f.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    });
    (task, ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_planes_keep_serving_with_every_control_plane_node_down() {
    init_tracing();
    let mut c = Cluster::start(3).await;
    let (echo, _stop) = start_echo().await;
    let state = tempfile::tempdir().unwrap();
    let dp = start_dp(grpc_urls(&c), Some(state.path())).await;
    let rev = c.nodes[0]
        .client()
        .must_put(
            "/v1/apis/orders",
            api_doc("orders", "/orders", &format!("http://{echo}")),
        )
        .await;
    wait_for_revision(&dp, rev).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (task, ok, failed) = traffic(format!("http://{}/orders/x", dp.proxy_addr), stop.clone());
    for i in 0..3 {
        c.stop(i).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed while the control plane died"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too little traffic: {}",
        ok.load(Ordering::Relaxed)
    );
    assert!(dp.connection.borrow().endpoint.is_none());

    // A restarted data plane serves from its state dir with no control plane.
    dp.shutdown().await;
    let dp = start_dp(grpc_urls(&c), Some(state.path())).await;
    assert_eq!(dp.gateway.snapshot().revision(), rev);
    let r = http()
        .get(format!("http://{}/orders/y", dp.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ready = http()
        .get(format!("http://{}/readyz", dp.status_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // A corrupt state file is refused: the data plane starts empty (and
    // says why in the log) rather than serving garbage.
    dp.shutdown().await;
    let path = state.path().join("config.snapshot");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let dp = start_dp(grpc_urls(&c), Some(state.path())).await;
    assert_eq!(dp.gateway.snapshot().revision(), 0);
    let ready = http()
        .get(format!("http://{}/readyz", dp.status_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    // When the control plane comes back, the data plane catches up.
    for i in 0..3 {
        c.restart(i).await;
    }
    wait_for_revision(&dp, rev).await;
    let r = http()
        .get(format!("http://{}/orders/z", dp.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_data_plane_fails_over_and_misses_no_change() {
    init_tracing();
    let mut c = Cluster::start(3).await;
    let dp = start_dp(grpc_urls(&c), None).await;
    let admin0 = c.nodes[0].client();
    let rev = admin0
        .must_put("/v1/apis/a0", json!({"id":"a0","base_path":"/a0","routes":[{"id":"r","path":"/","mock":{"body":"a0"}}]}))
        .await;
    wait_for_revision(&dp, rev).await;
    let streaming_from = dp.connection.borrow().endpoint.clone().expect("connected");
    let victim = c
        .nodes
        .iter()
        .position(|n| n.grpc_url() == streaming_from)
        .unwrap();
    c.stop(victim).await;
    // Writes while the data plane is moving to another node (through the
    // leader, which may be newly elected).
    let admin = c.nodes[c.leader().await].client();
    let mut last = 0;
    for i in 1..=5 {
        let id = format!("a{i}");
        last = admin
            .must_put(
                &format!("/v1/apis/{id}"),
                json!({"id": id, "base_path": format!("/{id}"), "routes":[{"id":"r","path":"/","mock":{"body": id}}]}),
            )
            .await;
    }
    wait_for_revision(&dp, last).await;
    let now_from = dp.connection.borrow().endpoint.clone();
    assert!(now_from.is_some() && now_from != Some(streaming_from));
    let http = http();
    for i in 0..=5 {
        let r = http
            .get(format!("http://{}/a{i}", dp.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a{i}");
        assert_eq!(r.text().await.unwrap(), format!("a{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_reload_under_load_fails_no_request() {
    init_tracing();
    let c = Cluster::start(1).await;
    let (echo, _stop) = start_echo().await;
    let dp = start_dp(grpc_urls(&c), None).await;
    let admin = c.nodes[0].client();
    let upstream = format!("http://{echo}");
    let rev = admin
        .must_put("/v1/apis/live", api_doc("live", "/live", &upstream))
        .await;
    wait_for_revision(&dp, rev).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(traffic(
            format!("http://{}/live/x", dp.proxy_addr),
            stop.clone(),
        ));
    }
    // Rewrite the served API (same route, new timeout), and add and remove
    // others, as fast as the control plane commits.
    let mut last = rev;
    for i in 0..40u64 {
        let mut doc = api_doc("live", "/live", &upstream);
        doc["upstream"]["timeout_ms"] = json!(10_000 + i);
        last = admin.must_put("/v1/apis/live", doc).await;
        let other = format!("other-{}", i % 5);
        admin
            .must_put(
                &format!("/v1/apis/{other}"),
                api_doc(&other, &format!("/{other}"), &upstream),
            )
            .await;
        if i % 3 == 0 {
            last = admin.delete(&format!("/v1/apis/{other}")).await.1["revision"]
                .as_u64()
                .unwrap();
        }
    }
    wait_for_revision(&dp, last).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for (task, o, f) in clients {
        task.await.unwrap();
        ok += o.load(Ordering::Relaxed);
        failed += f.load(Ordering::Relaxed);
    }
    println!("hot reload: {ok} requests, {failed} failed, over 80 config writes");
    assert_eq!(failed, 0);
    assert!(ok > 100, "too little traffic: {ok}");
}

/// Two streams under one data-plane id (a data plane reconnecting before
/// its old stream is seen to end looks the same): when one ends, the id is
/// still listed as connected while the other streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_plane_stays_listed_as_connected_while_any_stream_under_its_id_is_open() {
    init_tracing();
    let c = Cluster::start(1).await;
    let admin = c.nodes[0].client();
    let rev = admin
        .must_put(
            "/v1/apis/twin",
            api_doc("twin", "/twin", "http://127.0.0.1:9"),
        )
        .await;
    let first = start_dp_named(grpc_urls(&c), "twin").await;
    wait_for_revision(&first, rev).await;
    let second = start_dp_named(grpc_urls(&c), "twin").await;
    wait_for_revision(&second, rev).await;
    let second_addr = second.proxy_addr.to_string();
    first.shutdown().await;

    let listed = || async {
        let (_, v) = admin.get("/v1/cluster").await;
        v["data_planes"].as_array().cloned().unwrap_or_default()
    };
    // Give the first stream's end time to reach the control plane.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let list = listed().await;
        assert_eq!(list.len(), 1, "one id, one entry: {list:?}");
        assert_eq!(
            list[0]["connected"], true,
            "the second stream is open: {list:?}"
        );
        assert_eq!(list[0]["addr"], second_addr.as_str());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Once no stream under the id is left, it shows as disconnected.
    second.shutdown().await;
    eventually(
        "the id to show as disconnected",
        Duration::from_secs(10),
        || async {
            listed()
                .await
                .first()
                .is_some_and(|d| d["connected"] == false)
        },
    )
    .await;
}
