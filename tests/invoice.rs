//! Invoices (contract §5.6): a tenant with two plans and a mid-month price
//! change gets the hand-computed amount to the cent, the same on every
//! node and after a restart. The test drives the clock: the price change's
//! day through the control plane's test-only price day, the usage days by
//! restoring a backup with chosen counters.

use crate::common;

use common::{init_tracing, Cluster};
use serde_json::{json, Value};
use tollgate_control_plane::state::set_price_day_for_tests;
use tollgate_model::usage::parse_day;

fn day(d: &str) -> u32 {
    parse_day(d).unwrap()
}

fn price(fee: &str, requests: &str, messages: &str) -> Value {
    json!({"currency": "USD", "monthly_fee": fee, "per_million_requests": requests,
           "per_million_messages": messages, "per_million_connection_minutes": "0"})
}

fn used(kind: &str, key: &str, plan: &str, date: &str, n: u64) -> Value {
    json!([{kind: {"key": key, "plan": plan, "day": day(date)}}, n])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invoice_splits_at_a_price_change_and_is_the_same_everywhere() {
    init_tracing();
    let mut c = Cluster::start(3).await;
    let admin = c.nodes[0].client();
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;

    // Amounts are strings: a number is refused, naming the field.
    let (s, v) = admin
        .put(
            "/v1/usage-plans/gold",
            json!({"apis": [], "price": {"currency": "USD", "per_million_requests": 3.5}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("price.per_million_requests"), "{v}");
    let (s, v) = admin
        .put(
            "/v1/usage-plans/gold",
            json!({"apis": [], "price": {"currency": "usd"}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("price.currency"), "{v}");

    let price_clock = common::price_clock().await;
    set_price_day_for_tests(Some(day("2026-02-20")));
    for (plan, p) in [
        ("gold", price("10", "3.50", "1.00")),
        ("silver", price("0", "0.125", "2")),
    ] {
        admin
            .must_put(
                &format!("/v1/usage-plans/{plan}"),
                json!({"apis": [], "price": p}),
            )
            .await;
    }
    let (k1, _) = admin.issue_key("gold").await;
    let (k2, _) = admin.issue_key("silver").await;
    // The change applies from March 16th, through another node.
    set_price_day_for_tests(Some(day("2026-03-16")));
    c.nodes[1]
        .client()
        .must_put(
            "/v1/usage-plans/gold",
            json!({"apis": [], "price": price("99", "4.00", "1.00")}),
        )
        .await;
    set_price_day_for_tests(None);
    drop(price_clock);

    // Usage on chosen days: the cluster's own backup plus counters.
    let (s, mut backup) = admin.get("/v1/snapshot").await;
    assert_eq!(s, 200, "{backup}");
    let counters = backup["counters"].as_array_mut().unwrap();
    counters.extend([
        used("Used", &k1, "gold", "2026-03-05", 1_000_000),
        used("Used", &k1, "gold", "2026-03-20", 333_333),
        used("Used", &k1, "gold", "2026-04-01", 7), // another month
        used("Used", &k2, "silver", "2026-03-10", 2_000_000),
        used("Messages", &k2, "silver", "2026-03-10", 500_000),
    ]);
    let (s, v) = admin.post("/v1/snapshot", backup).await;
    assert_eq!(s, 200, "{v}");

    let path = "/v1/tenants/acme/invoice?month=2026-03";
    let (s, inv) = admin.get(path).await;
    assert_eq!(s, 200, "{inv}");
    let lines: Vec<String> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {} {} {} {}..{}",
                l["plan"].as_str().unwrap(),
                l["key_id"]
                    .as_str()
                    .map_or("-", |k| if k == k1 { "k1" } else { "k2" }),
                l["item"].as_str().unwrap(),
                l["quantity"],
                l["unit_price"].as_str().unwrap(),
                l["amount"].as_str().unwrap(),
                l["from"].as_str().unwrap(),
                l["to"].as_str().unwrap(),
            )
        })
        .collect();
    // By hand: 1,000,000 × 3.50 = 3.50; 333,333 × 4.00 = 1.333332 → 1.33;
    // 2,000,000 × 0.125 = 0.25; 500,000 × 2 = 1.00; gold's fee of March
    // 1st, 10.00; silver's fee is 0: no line. 16.08 in all.
    let mut expected = vec![
        "gold k1 requests 1000000 3.50 3.50 2026-03-01..2026-03-15",
        "gold k1 requests 333333 4.00 1.33 2026-03-16..2026-03-31",
        "silver k2 requests 2000000 0.125 0.25 2026-03-01..2026-03-31",
        "silver k2 messages 500000 2 1.00 2026-03-01..2026-03-31",
        "gold - monthly_fee 1 10 10.00 2026-03-01..2026-03-31",
    ];
    // Lines go by key id (random here), then plan, item and period.
    let mut sorted = lines.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "{inv}");
    assert_eq!(inv["currency"], "USD");
    assert_eq!(inv["total"], "16.08");
    assert_eq!(inv["rounding"], "half_up");
    assert_eq!(inv["tenant"], "acme");
    assert_eq!(inv["month"], "2026-03");

    // The same on every node, and after a node restarts.
    for n in &c.nodes {
        assert_eq!(n.client().get(path).await, (200, inv.clone()));
    }
    c.stop(2).await;
    c.restart(2).await;
    assert_eq!(c.nodes[2].client().get(path).await, (200, inv.clone()));

    let (s, v) = admin.get("/v1/tenants/acme/invoice?month=2026-13").await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("month: "), "{v}");
    let (s, _) = admin.get("/v1/tenants/acme/invoice").await;
    assert_eq!(s, 400);
    let (s, _) = admin.get("/v1/tenants/nobody/invoice?month=2026-03").await;
    assert_eq!(s, 404);
}
