//! WebSocket metering end to end (issue 20): messages and connection-minutes
//! taken on a data plane, through its usage batches and Raft, to the usage
//! routes and the export of another node; messages share the key's quota
//! with requests.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::dp::{eventually, http, start_dp, TestUpstream};
use common::{init_tracing, Admin, Cluster};
use serde_json::{json, Value};
use tollgate_data_plane::plans::{PlanDenied, PlanEnforcer};
use tollgate_data_plane::DataPlaneHandle;
use tollgate_model::docs::UsagePlan;

const WAIT: Duration = Duration::from_secs(20);

/// The key's plan as the data plane holds it, once the key is in force.
async fn plan_in_force(dp: &DataPlaneHandle, value: &str) -> Arc<UsagePlan> {
    let presented = http::HeaderValue::from_str(value).unwrap();
    let granted = || {
        dp.gateway
            .snapshot()
            .auth
            .keys
            .check(Some(&presented), "orders")
            .ok()
    };
    eventually("the key to be in force", WAIT, || async {
        granted().is_some()
    })
    .await;
    granted().unwrap().plan
}

/// `GET /v1/keys/{id}/usage` once `ready` holds for it.
async fn key_usage(admin: &Admin, key_id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/v1/keys/{key_id}/usage");
    eventually("the usage to be reported", WAIT, || async {
        let (s, v) = admin.get(&path).await;
        s == 200 && ready(&v)
    })
    .await;
    admin.get(&path).await.1
}

async fn export_csv(admin: &Admin) -> String {
    http()
        .get(format!("{}/v1/usage/export?format=csv", admin.base))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_minutes_are_metered_once_and_share_the_quota() {
    init_tracing();
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let admin = cluster.nodes[leader].client();
    let other = cluster.nodes[cluster.follower(leader)].client();
    let upstream = TestUpstream::start("up").await;
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    admin
        .must_put(
            "/v1/apis/orders",
            json!({"base_path": "/orders", "auth": {"api_key": true},
                   "upstream": {"targets": [{"url": upstream.url()}]},
                   "routes": [{"id": "all", "path": "/{rest+}"}]}),
        )
        .await;
    admin
        .must_put(
            "/v1/usage-plans/ws",
            json!({"apis": ["orders"], "quota": {"limit": 10, "period": "day"}}),
        )
        .await;
    let (key_id, value) = admin.issue_key("ws").await;
    let urls = cluster.nodes.iter().map(|n| n.grpc_url()).collect();
    let dp = start_dp(urls, None).await;
    let plan = plan_in_force(&dp, &value).await;
    let plans: Arc<PlanEnforcer> = dp.gateway.plans().unwrap().clone();
    let get = || {
        http()
            .get(format!("http://{}/orders/x", dp.proxy_addr))
            .header("x-api-key", &value)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);

    // Three messages (1 + 2 + 5 metered units) and a connection of 4 minutes.
    for units in [1, 2, 5] {
        plans
            .admit_message(&key_id, &plan, plan.throttle.as_ref(), units)
            .await
            .unwrap();
    }
    plans.meter_connection_minutes(&key_id, "ws", 4);
    plans.flush().await;

    let v = key_usage(&other, &key_id, |v| v["messages"]["ws"] == json!([8])).await;
    assert_eq!(v["connection_minutes"]["ws"], json!([4]), "{v}");
    assert_eq!(
        v["plans"]["ws"],
        json!([[4, 6]]),
        "the quota's used counts the request and the 3 messages: {v}"
    );
    let (s, v) = other
        .get(&format!("/v1/usage-plans/ws/usage?key_id={key_id}"))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"][&key_id], json!([[4, 6]]), "{v}");
    assert_eq!(v["messages"][&key_id], json!([8]), "{v}");
    assert_eq!(v["connection_minutes"][&key_id], json!([4]), "{v}");

    let (_, v) = other.get("/v1/usage/export?format=json").await;
    let row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key_id"] == key_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no row for the key: {v}"));
    assert_eq!(
        (
            &row["requests"],
            &row["messages"],
            &row["connection_minutes"]
        ),
        (&json!(1), &json!(8), &json!(4)),
        "requests apart from messages: {row}"
    );
    let csv = export_csv(&other).await;
    let today = row["date"].as_str().unwrap();
    assert!(
        csv.starts_with("tenant,key_id,plan_id,date,requests,messages,connection_minutes\n"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l == format!("acme,{key_id},ws,{today},1,8,4")),
        "{csv}"
    );

    // Messages use up the rest of the quota (6 units, fewer only if a
    // lease was lost to a timeout); then a request is refused.
    let mut admitted = 0;
    loop {
        match plans.admit_message(&key_id, &plan, None, 1).await {
            Ok(_) => admitted += 1,
            Err(PlanDenied::QuotaExceeded) => break,
            Err(e) => panic!("{e:?}"),
        }
        assert!(admitted <= 6, "more messages than the quota holds");
    }
    assert_eq!(get().await.unwrap().status(), 429);
    drop(plans);
    dp.shutdown().await;
    let used = 4 + admitted;
    let v = key_usage(&other, &key_id, |v| v["plans"]["ws"][0][0] == used).await;
    assert_eq!(v["plans"]["ws"], json!([[used, 10 - used]]), "{v}");
    assert_eq!(v["messages"]["ws"], json!([8 + admitted]), "{v}");
    upstream.stop.cancel();
}
