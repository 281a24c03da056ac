//! Issue "Control plane": a real 3-node cluster on ephemeral ports.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tollgate_control_plane::RaftTuning;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_forms_and_every_node_reads_every_write() {
    init_tracing();
    let c = Cluster::start(3).await;
    // A write on each node...
    for (i, n) in c.nodes.iter().enumerate() {
        let rev = n
            .client()
            .must_put(
                &format!("/v1/tenants/t{i}"),
                json!({"name": format!("T{i}")}),
            )
            .await;
        assert!(rev > 0);
    }
    // ...is readable (linearizably) on every node.
    for n in &c.nodes {
        for i in 0..3 {
            let (s, v) = n.client().get(&format!("/v1/tenants/t{i}")).await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["name"], format!("T{i}"));
        }
    }
    let (s, info) = c.nodes[2].client().get("/v1/cluster").await;
    assert_eq!(s, 200);
    let members = info["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["voter"] == true), "{info}");
    assert!(info["leader_id"].as_u64().is_some());
    assert!(info["applied_index"].as_u64().unwrap() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_loss_elects_a_new_leader_and_loses_nothing() {
    init_tracing();
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let n = &c.nodes[i % 3];
        n.client()
            .must_put(&format!("/v1/tenants/before-{i}"), json!({"name": "t"}))
            .await;
        acked.push(format!("before-{i}"));
    }
    c.stop(leader).await;
    let killed_at = Instant::now();
    let survivor = c.follower(leader);
    // Writes resume on a surviving node.
    let client = c.nodes[survivor].client();
    let mut resumed = None;
    while killed_at.elapsed() < Duration::from_secs(10) {
        let (s, _) = client
            .put("/v1/tenants/after-0", json!({"name": "t"}))
            .await;
        if s == 200 {
            resumed = Some(killed_at.elapsed());
            break;
        }
    }
    let resumed = resumed.expect("writes resumed");
    println!("failover: writes resumed {resumed:?} after the leader stopped");
    assert!(
        resumed < Duration::from_secs(3),
        "writes resumed only after {resumed:?}"
    );
    acked.push("after-0".into());
    for i in 1..10 {
        c.nodes[survivor]
            .client()
            .must_put(&format!("/v1/tenants/after-{i}"), json!({"name": "t"}))
            .await;
        acked.push(format!("after-{i}"));
    }
    for n in c.running() {
        for id in &acked {
            let (s, _) = n.client().get(&format!("/v1/tenants/{id}")).await;
            assert_eq!(s, 200, "{id} missing on node {}", n.id);
        }
    }
    // The old leader restarts from its dir and catches up.
    c.restart(leader).await;
    let target = c.nodes[survivor].handle().control.shared.applied();
    let h = c.nodes[leader].handle();
    let mut rx = h.control.shared.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|a| *a >= target))
        .await
        .expect("restarted node caught up")
        .unwrap();
    for id in &acked {
        let (s, _) = c.nodes[leader]
            .client()
            .get(&format!("/v1/tenants/{id}?stale=true"))
            .await;
        assert_eq!(s, 200, "{id} missing on the restarted node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_restart_keeps_every_entity_at_its_revision() {
    init_tracing();
    let mut c = Cluster::start(3).await;
    let a = c.nodes[0].client();
    a.must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    a.must_put(
        "/v1/apis/orders",
        api_doc("orders", "/orders", "http://127.0.0.1:1"),
    )
    .await;
    a.must_put(
        "/v1/usage-plans/gold",
        json!({"apis": ["orders"], "throttle": {"rate": 10, "burst": 5}}),
    )
    .await;
    let (s, key) = a
        .post("/v1/keys", json!({"tenant": "acme", "plans": ["gold"]}))
        .await;
    assert_eq!(s, 201, "{key}");
    let mut before = Vec::new();
    for path in ["/v1/tenants", "/v1/apis", "/v1/usage-plans", "/v1/keys"] {
        before.push(a.get(path).await.1);
    }
    for i in 0..3 {
        c.stop(i).await;
    }
    for i in 0..3 {
        c.restart(i).await;
    }
    c.leader().await;
    let b = c.nodes[1].client();
    for (i, path) in ["/v1/tenants", "/v1/apis", "/v1/usage-plans", "/v1/keys"]
        .iter()
        .enumerate()
    {
        let (s, after) = b.get(path).await;
        assert_eq!(s, 200);
        assert_eq!(after, before[i], "{path} changed across a full restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_joiner_gets_a_snapshot_after_the_log_was_purged() {
    init_tracing();
    let tuning = RaftTuning {
        snapshot_every: 20,
        keep_behind_snapshot: 0,
        ..tuning()
    };
    let mut c = Cluster::start_with(1, tuning).await;
    let a = c.nodes[0].client();
    for i in 0..60 {
        a.must_put(&format!("/v1/tenants/t{i}"), json!({"name": "t"}))
            .await;
    }
    // Wait until the leader has purged the start of its log.
    let leader = c.nodes[0].handle().control.raft.clone();
    let mut m = leader.metrics();
    tokio::time::timeout(
        Duration::from_secs(10),
        m.wait_for(|m| m.purged.is_some_and(|p| p.index >= 20)),
    )
    .await
    .expect("log purged")
    .unwrap();
    let j = c.add_node(Some(0)).await;
    c.wait_for_voters(2).await;
    let joined = c.nodes[j].handle().control.raft.metrics().borrow().clone();
    assert!(
        joined.snapshot.is_some(),
        "the late joiner installed a snapshot"
    );
    for i in 0..60 {
        let (s, _) = c.nodes[j]
            .client()
            .get(&format!("/v1/tenants/t{i}?stale=true"))
            .await;
        assert_eq!(s, 200, "t{i} missing on the late joiner");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_writes_succeed_and_no_quorum_fails_fast() {
    init_tracing();
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let f = c.follower(leader);
    let rev = c.nodes[f]
        .client()
        .must_put("/v1/tenants/via-follower", json!({"name": "t"}))
        .await;
    let (s, v) = c.nodes[leader]
        .client()
        .get("/v1/tenants/via-follower")
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["revision"].as_u64(), Some(rev));
    // Lose the quorum: keep one node only.
    let keep = f;
    for i in 0..3 {
        if i != keep {
            c.stop(i).await;
        }
    }
    let started = Instant::now();
    let (s, v) = c.nodes[keep]
        .client()
        .put("/v1/tenants/no-quorum", json!({"name": "t"}))
        .await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the write hung for {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_documents_are_refused_and_change_nothing() {
    init_tracing();
    let c = Cluster::start(1).await;
    let a = c.nodes[0].client();
    a.must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    a.must_put(
        "/v1/apis/orders",
        api_doc("orders", "/orders", "http://127.0.0.1:1"),
    )
    .await;
    a.must_put("/v1/usage-plans/gold", json!({"apis": ["orders"]}))
        .await;
    let applied = || c.nodes[0].handle().control.shared.read(|s| s.all().count());
    let count = applied();

    let mut bad_path = api_doc("bad", "/bad", "http://127.0.0.1:1");
    bad_path["routes"][0]["path"] = json!("/a/{rest+}/b");
    let cases = vec![
        ("/v1/tenants/Bad_Id", json!({"name": "t"}), 400, "id"),
        ("/v1/apis/bad", bad_path, 400, "routes[0].path"),
        (
            "/v1/apis/bad2",
            json!({"id": "bad2", "base_path": "/x", "bogus": 1}),
            400,
            "bogus",
        ),
        (
            "/v1/apis/bad3",
            json!({"base_path": "/x", "routes": [{"id": "r", "path": "/"}]}),
            400,
            "upstream",
        ),
        (
            "/v1/usage-plans/p",
            json!({"apis": ["missing"]}),
            400,
            "apis[0]",
        ),
        (
            "/v1/apis/dup",
            api_doc("dup", "/orders", "http://127.0.0.1:1"),
            409,
            "base_path",
        ),
        (
            "/v1/apis/orders",
            api_doc("other-id", "/orders", "http://127.0.0.1:1"),
            400,
            "id",
        ),
    ];
    for (path, body, status, needle) in cases {
        let (s, v) = a.put(path, body).await;
        assert_eq!(s, status, "{path}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{path}: message {msg:?} should name {needle:?}"
        );
        assert_eq!(
            v["error"]["code"],
            if status == 400 {
                "invalid_argument"
            } else {
                "conflict"
            }
        );
    }
    let key_cases = vec![
        (
            json!({"tenant": "nobody", "plans": ["gold"]}),
            400,
            "tenant",
        ),
        (
            json!({"tenant": "acme", "plans": ["missing"]}),
            400,
            "plans[0]",
        ),
        (json!({"tenant": "acme", "value": "short"}), 400, "value"),
    ];
    for (body, status, needle) in key_cases {
        let (s, v) = a.post("/v1/keys", body).await;
        assert_eq!(s, status, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    // Deleting something still referenced is a conflict.
    let (s, v) = a.delete("/v1/apis/orders").await;
    assert_eq!(s, 409, "{v}");
    let (s, key) = a
        .post("/v1/keys", json!({"tenant": "acme", "plans": ["gold"]}))
        .await;
    assert_eq!(s, 201);
    let (s, _) = a.delete("/v1/tenants/acme").await;
    assert_eq!(s, 409);
    let (s, _) = a.delete("/v1/usage-plans/gold").await;
    assert_eq!(s, 409);
    let (s, _) = a.delete("/v1/tenants/nobody").await;
    assert_eq!(s, 404);
    // Only the key was added.
    assert_eq!(
        applied(),
        count + 2,
        "settings and the key are the only new documents"
    );
    for path in [
        "/v1/apis/bad",
        "/v1/apis/bad2",
        "/v1/apis/dup",
        "/v1/usage-plans/p",
        "/v1/tenants/Bad_Id",
    ] {
        assert_eq!(a.get(path).await.0, 404, "{path} was written");
    }
    // An imported key value works once; a second import of it conflicts.
    let body = json!({"tenant": "acme", "value": "legacy-key-value-0123456789"});
    assert_eq!(a.post("/v1/keys", body.clone()).await.0, 201);
    assert_eq!(a.post("/v1/keys", body).await.0, 409);
    // PATCH and revoke.
    let id = key["id"].as_str().unwrap();
    let (s, v) = a
        .call(
            "PATCH",
            &format!("/v1/keys/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["enabled"], false);
    assert!(v.get("value").is_none() && v.get("hash").is_none());
    assert_eq!(a.delete(&format!("/v1/keys/{id}")).await.0, 200);
    assert_eq!(a.get(&format!("/v1/keys/{id}")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_api_requires_the_token() {
    init_tracing();
    let c = Cluster::start(1).await;
    let base = c.nodes[0].admin_url();
    for client in [
        Admin::new(&base).with_token(None),
        Admin::new(&base).with_token(Some("wrong")),
    ] {
        for path in ["/v1/cluster", "/v1/apis", "/v1/nonexistent"] {
            let (s, v) = client.get(path).await;
            assert_eq!(s, 401, "{path}");
            assert_eq!(v["error"]["code"], "unauthenticated");
        }
        assert_eq!(
            client.put("/v1/tenants/x", json!({"name": "t"})).await.0,
            401
        );
    }
    assert_eq!(
        Admin::new(&base).with_token(None).get("/healthz").await.0,
        200
    );
    // The internal gRPC port refuses calls without the cluster token.
    let mut raw = tollgate_proto::cluster_client::ClusterClient::connect(c.nodes[0].grpc_url())
        .await
        .unwrap();
    let err = raw
        .read_index(tollgate_proto::ReadIndexRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_grpc_shares_the_service_layer_and_members_can_be_removed() {
    use tollgate_proto::admin_client::AdminClient;
    init_tracing();
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let f = c.follower(leader);
    // Admin gRPC on a follower, with the admin token.
    let channel = c.nodes[f].grpc_channel().await;
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {ADMIN_TOKEN}").parse().unwrap();
    let mut admin =
        AdminClient::with_interceptor(channel.clone(), move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", token.clone());
            Ok(r)
        });
    let put = admin
        .put(tollgate_proto::PutRequest {
            kind: "tenant".into(),
            id: "grpc-tenant".into(),
            json: br#"{"name":"via gRPC"}"#.to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(put.revision > 0);
    let (s, v) = c.nodes[leader]
        .client()
        .get("/v1/tenants/grpc-tenant")
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["revision"].as_u64(), Some(put.revision));
    // The same validation answers through gRPC.
    let err = admin
        .put(tollgate_proto::PutRequest {
            kind: "tenant".into(),
            id: "Bad Id".into(),
            json: br#"{"name":"x"}"#.to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("id"));
    // Without the admin token: refused.
    let mut anonymous = AdminClient::new(channel);
    let err = anonymous
        .get(tollgate_proto::GetRequest {
            kind: "tenant".into(),
            id: "grpc-tenant".into(),
            stale: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Remove a follower from the cluster through the leader.
    let victim = c.nodes[f].id;
    let (s, v) = c.nodes[leader]
        .client()
        .delete(&format!("/v1/cluster/members/{victim}"))
        .await;
    assert_eq!(s, 200, "{v}");
    c.stop(f).await;
    let (_, info) = c.nodes[leader].client().get("/v1/cluster").await;
    let ids: Vec<u64> = info["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert!(!ids.contains(&victim), "{info}");
    // Two voters remain, and writes still commit.
    c.nodes[leader]
        .client()
        .must_put("/v1/tenants/after-removal", json!({"name": "t"}))
        .await;
    let (s, _) = c.nodes[leader]
        .client()
        .delete("/v1/cluster/members/99")
        .await;
    assert_eq!(s, 404);
}

/// Whether `node` takes a cluster call that presents `token`.
async fn takes_cluster_token(node: &NodeSlot, token: &str) -> bool {
    let channel = node.grpc_channel().await;
    let mut client = tollgate_proto::cluster_client::ClusterClient::with_interceptor(
        channel,
        tollgate_proto::auth::BearerToken::new(token),
    );
    // Only the verdict on the token matters here, not the answer.
    !matches!(
        client.read_index(tollgate_proto::ReadIndexRequest {}).await,
        Err(e) if e.code() == tonic::Code::Unauthenticated
    )
}

/// The cluster token rotated one node at a time, as docs/operations.md
/// describes: first every node accepts the new token, then each presents
/// it, then the old one is dropped. Writes go on and every restarted node
/// catches up at each step (Raft's calls cross nodes holding different
/// tokens), a data plane on the old token streams until the last step, and
/// at the end the old token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_token_rotates_one_node_at_a_time() {
    init_tracing();
    const NEW: &str = "rotated-cluster-token";
    let mut c = Cluster::start(3).await;
    let urls: Vec<String> = c.nodes.iter().map(NodeSlot::grpc_url).collect();
    let old_dp = dp::start_dp_with_token(urls.clone(), CLUSTER_TOKEN).await;
    let steps = [
        (CLUSTER_TOKEN, Some(NEW)),
        (NEW, Some(CLUSTER_TOKEN)),
        (NEW, None),
    ];
    let mut written = Vec::new();
    let mut revision = 0;
    for (step, (presented, accepted)) in steps.into_iter().enumerate() {
        for i in 0..3 {
            c.stop(i).await;
            c.nodes[i].tokens = ClusterTokens {
                presented: presented.into(),
                accepted: accepted.into_iter().map(String::from).collect(),
            };
            c.restart(i).await;
            // A write goes through (through another node; a new leader may
            // be being elected).
            let id = format!("rotation-{step}-{i}");
            let via = c.nodes[(i + 1) % 3].client();
            let started = Instant::now();
            loop {
                let (s, v) = via
                    .put(&format!("/v1/tenants/{id}"), json!({"name": "t"}))
                    .await;
                if s == 200 {
                    revision = v["revision"].as_u64().expect("revision");
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "step {step}, node {i}: writes stopped: {s} {v}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            written.push(id);
            // The restarted node catches up with it.
            let h = c.nodes[i].handle();
            let leader = c.leader().await;
            let target = c.nodes[leader].handle().control.shared.applied();
            let mut rx = h.control.shared.subscribe();
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|a| *a >= target))
                .await
                .unwrap_or_else(|_| panic!("step {step}: node {i} did not catch up"))
                .unwrap();
        }
        if step == 1 {
            // Every node still accepts the old token: its data plane has
            // every write so far.
            dp::wait_for_revision(&old_dp, revision).await;
        }
    }
    for n in &c.nodes {
        for id in &written {
            let (s, _) = n.client().get(&format!("/v1/tenants/{id}")).await;
            assert_eq!(s, 200, "{id} missing on node {}", n.id);
        }
        assert!(
            !takes_cluster_token(n, CLUSTER_TOKEN).await,
            "node {} still takes the old token",
            n.id
        );
        assert!(takes_cluster_token(n, NEW).await);
    }
    let new_dp = dp::start_dp_with_token(urls, NEW).await;
    dp::wait_for_revision(&new_dp, revision).await;
    old_dp.shutdown().await;
    new_dp.shutdown().await;
}

/// `POST /v1/keys` with `Idempotency-Key` (contract §5.2): a retry, on any
/// node, answers 409 with the first key's id and no value, and issues no
/// second key; the first key's value works as issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_issue_retried_with_its_idempotency_key_issues_nothing_more() {
    init_tracing();
    let c = Cluster::start(3).await;
    let a = c.nodes[0].client();
    a.must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    a.must_put("/v1/usage-plans/p", json!({"apis": []})).await;
    let issue = |node: usize, idempotency_key: &'static str| {
        let base = c.nodes[node].admin_url();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/v1/keys"))
                .bearer_auth(common::ADMIN_TOKEN)
                .header("idempotency-key", idempotency_key)
                .json(&json!({"tenant": "acme", "plans": ["p"]}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, first) = issue(0, "order-42").await;
    assert_eq!(s, 201, "{first}");
    let id = first["id"].as_str().unwrap();
    for node in 0..3 {
        let (s, again) = issue(node, "order-42").await;
        assert_eq!(s, 409, "{again}");
        assert_eq!(again["error"]["code"], "conflict");
        assert_eq!(again["key_id"], id, "{again}");
        assert!(
            again.get("value").is_none()
                && !again.to_string().contains(first["value"].as_str().unwrap())
        );
    }
    let (s, other) = issue(1, "order-43").await;
    assert_eq!(s, 201, "{other}");
    let (_, keys) = c.nodes[2].client().get("/v1/keys").await;
    assert_eq!(keys["items"].as_array().map(Vec::len), Some(2), "{keys}");
    let (s, bad) = issue(2, "").await;
    assert_eq!(s, 400, "{bad}");
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Idempotency-Key"));
}
