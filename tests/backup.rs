//! Backup and restore: `GET /v1/snapshot` from one cluster restores into a
//! fresh cluster with every entity in place, keys still valid (the key-hash
//! secret travels with the backup) and usage counters kept.

use crate::common;

use std::time::Duration;

use common::dp::{eventually, http, start_dp, start_echo};
use common::{init_tracing, Cluster, ADMIN_TOKEN};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restores_into_a_fresh_cluster() {
    init_tracing();
    let a = Cluster::start(1).await;
    let (echo, _stop) = start_echo().await;
    let admin = a.nodes[0].client();
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    admin
        .must_put(
            "/v1/authorizers/jwt",
            json!({"issuer": "https://issuer.test", "algorithms": ["HS256"], "secret": "s3cret"}),
        )
        .await;
    admin
        .must_put(
            "/v1/apis/orders",
            json!({"base_path": "/orders", "auth": {"api_key": true},
                   "upstream": {"targets": [{"url": format!("http://{echo}")}]},
                   "routes": [{"id": "all", "path": "/{rest+}"}]}),
        )
        .await;
    admin
        .must_put(
            "/v1/usage-plans/gold",
            json!({"apis": ["orders"], "quota": {"limit": 500, "period": "month"}}),
        )
        .await;
    let (s, key) = admin
        .post("/v1/keys", json!({"tenant": "acme", "plans": ["gold"]}))
        .await;
    assert_eq!(s, 201);
    let (key_id, value) = (
        key["id"].as_str().unwrap().to_string(),
        key["value"].as_str().unwrap().to_string(),
    );
    // Some metered usage.
    let dp = start_dp(vec![a.nodes[0].grpc_url()], None).await;
    let url = format!("http://{}/orders/x", dp.proxy_addr);
    let http = http();
    eventually("the key in force", Duration::from_secs(10), || async {
        matches!(http.get(&url).header("x-api-key", &value).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    for _ in 0..4 {
        assert_eq!(
            http.get(&url)
                .header("x-api-key", &value)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    dp.shutdown().await; // flushes usage
    let (_, before) = admin.get(&format!("/v1/keys/{key_id}/usage")).await;
    assert_eq!(before["plans"]["gold"][0][0], 5);

    let (s, backup) = admin.get("/v1/snapshot").await;
    assert_eq!(s, 200, "{backup}");
    assert!(
        !backup.to_string().contains(&value),
        "a backup never holds a key value"
    );

    // A fresh cluster.
    let b = Cluster::start(3).await;
    let admin_b = b.nodes[b.leader().await].client();
    let (s, _) = admin_b.get("/v1/apis/orders").await;
    assert_eq!(s, 404);
    // Bad input changes nothing.
    let (s, v) = admin_b
        .post(
            "/v1/snapshot",
            json!({"format": "other", "revision": 1, "docs": [], "counters": []}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = admin_b.post("/v1/snapshot", backup.clone()).await;
    assert_eq!(s, 200, "{v}");
    for path in [
        "/v1/tenants/acme",
        "/v1/authorizers/jwt",
        "/v1/apis/orders",
        "/v1/usage-plans/gold",
        &format!("/v1/keys/{key_id}"),
    ] {
        let (s1, mut v1) = admin.get(path).await;
        let (s2, mut v2) = admin_b.get(path).await;
        assert_eq!((s1, s2), (200, 200), "{path}");
        v1.as_object_mut().unwrap().remove("revision");
        v2.as_object_mut().unwrap().remove("revision");
        assert_eq!(v1, v2, "{path}");
    }
    let (_, after) = admin_b.get(&format!("/v1/keys/{key_id}/usage")).await;
    assert_eq!(
        after["plans"], before["plans"],
        "usage survives the restore"
    );
    // The old key value works against the restored cluster.
    let dp = start_dp(b.nodes.iter().map(|n| n.grpc_url()).collect(), None).await;
    let url = format!("http://{}/orders/x", dp.proxy_addr);
    eventually("the restored key to work", Duration::from_secs(10), || async {
        matches!(http.get(&url).header("x-api-key", &value).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    // Without the admin token: 401.
    let r = reqwest::Client::new()
        .get(format!("{}/v1/snapshot", admin_b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let _ = ADMIN_TOKEN;
}
