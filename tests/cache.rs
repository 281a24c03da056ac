//! The response cache (issue 6): hits within the TTL, expiry, what is never
//! stored, isolation between callers, flushes through the control plane
//! (including a data plane that was offline at the time), and concurrent
//! misses coalesced into one upstream request.

use crate::common;
use crate::observe;

use std::time::Duration;

use common::dp::{dp_with_apis, eventually, http, start_dp, wait_for_revision, MockControlPlane};
use common::{init_tracing, Cluster};
use observe::{Forwarder, Origin};
use serde_json::{json, Value};
use tollgate_data_plane::{DataPlaneHandle, Limits};

fn cached_api(origin: &Origin, cache: Value) -> Value {
    json!({
        "id": "shop",
        "base_path": "/shop",
        "upstream": {"targets": [{"url": origin.url()}]},
        "routes": [
            {"id": "cached", "path": "/c/{rest+}", "cache": cache},
            {"id": "plain", "path": "/p/{rest+}"}
        ]
    })
}

/// An origin, and a data plane (on a mock control plane) serving
/// `cached_api` with `cache` on its cached route.
async fn shop(cache: Value) -> (Origin, MockControlPlane, DataPlaneHandle) {
    init_tracing();
    let origin = Origin::start().await;
    let (cp, dp) = dp_with_apis(&[cached_api(&origin, cache)], Limits::default()).await;
    (origin, cp, dp)
}

/// (x-cache, Age, body) of a GET.
async fn get(
    dp: &DataPlaneHandle,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Option<u64>, String) {
    let mut req = http().get(format!("http://{}{path}", dp.proxy_addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let x_cache = res
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let age = res
        .headers()
        .get("age")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, x_cache, age, res.text().await.unwrap())
}

#[tokio::test]
async fn repeat_requests_within_the_ttl_reach_the_upstream_once() {
    let (origin, _cp, dp) = shop(json!({"ttl_s": 60})).await;

    let (status, x, age, first) = get(&dp, "/shop/c/items", &[]).await;
    assert_eq!((status, x.as_str(), age), (200, "Miss", None));
    for _ in 0..9 {
        let (status, x, age, body) = get(&dp, "/shop/c/items", &[]).await;
        assert_eq!((status, x.as_str()), (200, "Hit"));
        assert_eq!(age, Some(0));
        assert_eq!(body, first);
    }
    assert_eq!(
        origin.hits("/c/items"),
        1,
        "10 requests, one upstream request"
    );

    // Age grows on hits.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, x, age, _) = get(&dp, "/shop/c/items", &[]).await;
    assert_eq!(x, "Hit");
    assert!(age.unwrap() >= 1, "age {age:?}");

    // Another path is another entry; HEAD is cached apart from GET.
    assert_eq!(get(&dp, "/shop/c/other", &[]).await.1, "Miss");
    let head = http()
        .head(format!("http://{}/shop/c/items", dp.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["x-cache"], "Miss");
    let head = http()
        .head(format!("http://{}/shop/c/items", dp.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["x-cache"], "Hit");
    assert_eq!(origin.hits("/c/items"), 2);

    // Other methods bypass the cache; routes without `cache` carry no x-cache.
    for _ in 0..2 {
        let res = http()
            .post(format!("http://{}/shop/c/items", dp.proxy_addr))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "Bypass");
    }
    assert_eq!(origin.hits("/c/items"), 4);
    let (_, x, _, _) = get(&dp, "/shop/p/items", &[]).await;
    assert_eq!(x, "", "an uncached route has no x-cache");
    get(&dp, "/shop/p/items", &[]).await;
    assert_eq!(origin.hits("/p/items"), 2);
}

#[tokio::test]
async fn after_the_ttl_the_next_request_is_a_miss() {
    let (origin, _cp, dp) = shop(json!({"ttl_s": 1})).await;
    assert_eq!(get(&dp, "/shop/c/t", &[]).await.1, "Miss");
    assert_eq!(get(&dp, "/shop/c/t", &[]).await.1, "Hit");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, x, _, body) = get(&dp, "/shop/c/t", &[]).await;
    assert_eq!(x, "Miss");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["n"], 2);
    assert_eq!(get(&dp, "/shop/c/t", &[]).await.1, "Hit");
    assert_eq!(origin.hits("/c/t"), 2);

    // The upstream's max-age can shorten the route's TTL (60 s here).
    let (_origin, _cp, dp) = shop(json!({"ttl_s": 60})).await;
    assert_eq!(get(&dp, "/shop/c/maxage1", &[]).await.1, "Miss");
    assert_eq!(get(&dp, "/shop/c/maxage1", &[]).await.1, "Hit");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(get(&dp, "/shop/c/maxage1", &[]).await.1, "Miss");
}

#[tokio::test]
async fn no_store_private_set_cookie_and_big_responses_are_never_stored() {
    let (origin, _cp, dp) = shop(json!({"ttl_s": 60})).await;
    for path in [
        "/c/nostore",
        "/c/private",
        "/c/cookie",
        "/c/status/500",
        "/c/big",
    ] {
        for i in 0..3 {
            let (status, x, age, body) = get(&dp, &format!("/shop{path}"), &[]).await;
            assert_eq!(x, "Miss", "{path} #{i}");
            assert_eq!(age, None);
            if path == "/c/big" {
                assert_eq!(body.len(), 2 * 1024 * 1024, "the whole body passes through");
            } else if path == "/c/status/500" {
                assert_eq!(status, 500);
            } else {
                assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["n"], i + 1);
            }
        }
        assert_eq!(origin.hits(path), 3, "{path} is never stored");
    }
    // A 404 is stored.
    assert_eq!(get(&dp, "/shop/c/status/404", &[]).await.1, "Miss");
    let (status, x, _, _) = get(&dp, "/shop/c/status/404", &[]).await;
    assert_eq!((status, x.as_str()), (404, "Hit"));
    assert_eq!(origin.hits("/c/status/404"), 1);
}

#[tokio::test]
async fn the_key_holds_listed_query_parameters_and_headers_only() {
    let (origin, _cp, dp) =
        shop(json!({"ttl_s": 60, "key": ["query:page", "header:accept-language"]})).await;
    assert_eq!(get(&dp, "/shop/c/q?page=1&utm=a", &[]).await.1, "Miss");
    assert_eq!(
        get(&dp, "/shop/c/q?utm=b&page=1", &[]).await.1,
        "Hit",
        "unlisted parameters are not in the key"
    );
    assert_eq!(get(&dp, "/shop/c/q?page=2", &[]).await.1, "Miss");
    assert_eq!(
        get(&dp, "/shop/c/q?page=1", &[("accept-language", "fr")])
            .await
            .1,
        "Miss"
    );
    assert_eq!(
        get(&dp, "/shop/c/q?page=1", &[("accept-language", "fr")])
            .await
            .1,
        "Hit"
    );
    assert_eq!(origin.hits("/c/q"), 3);
}

#[tokio::test]
async fn client_max_age_0_refreshes_only_where_the_route_allows_it() {
    init_tracing();
    let origin = Origin::start().await;
    let api = json!({
        "id": "shop",
        "base_path": "/shop",
        "upstream": {"targets": [{"url": origin.url()}]},
        "routes": [
            {"id": "fixed", "path": "/fixed/{rest+}", "cache": {"ttl_s": 60}},
            {"id": "open", "path": "/open/{rest+}", "cache": {"ttl_s": 60, "allow_client_invalidation": true}}
        ]
    });
    let (_cp, dp) = dp_with_apis(&[api], Limits::default()).await;
    let refresh = [("cache-control", "max-age=0")];

    assert_eq!(get(&dp, "/shop/fixed/a", &[]).await.1, "Miss");
    assert_eq!(
        get(&dp, "/shop/fixed/a", &refresh).await.1,
        "Hit",
        "the route does not allow it"
    );
    assert_eq!(origin.hits("/fixed/a"), 1);

    assert_eq!(get(&dp, "/shop/open/a", &[]).await.1, "Miss");
    let (_, x, _, body) = get(&dp, "/shop/open/a", &refresh).await;
    assert_eq!(x, "Miss");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["n"], 2);
    let (_, x, _, body) = get(&dp, "/shop/open/a", &[]).await;
    assert_eq!(x, "Hit");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["n"],
        2,
        "the refreshed entry"
    );
    assert_eq!(origin.hits("/open/a"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let (origin, _cp, dp) = shop(json!({"ttl_s": 60})).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(200)
        .build()
        .unwrap();
    let url = format!("http://{}/shop/c/slow", dp.proxy_addr);
    let calls = (0..100).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let res = client.get(&url).send().await.unwrap();
            let x = res.headers()["x-cache"].to_str().unwrap().to_string();
            (res.status().as_u16(), x, res.text().await.unwrap())
        })
    });
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        origin.hits("/c/slow"),
        1,
        "100 concurrent misses, one upstream request"
    );
    assert!(results
        .iter()
        .all(|(s, _, b)| *s == 200 && *b == results[0].2));
    let misses = results.iter().filter(|(_, x, _)| x == "Miss").count();
    let hits = results.iter().filter(|(_, x, _)| x == "Hit").count();
    assert_eq!((misses, hits), (1, 99));

    // A response that may not be stored is not shared either: every
    // concurrent caller gets its own.
    let url = format!("http://{}/shop/c/slow/nostore", dp.proxy_addr);
    let calls = (0..10).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(&url).send().await.unwrap().text().await.unwrap() })
    });
    let bodies: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(origin.hits("/c/slow/nostore"), 10);
    let mut ns: Vec<u64> = bodies
        .iter()
        .map(|b| {
            serde_json::from_str::<Value>(b).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ns.sort();
    assert_eq!(ns, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn callers_with_different_keys_never_see_each_others_entries() {
    init_tracing();
    let cluster = Cluster::start(1).await;
    let admin = cluster.nodes[0].client();
    let origin = Origin::start().await;
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    admin
        .must_put(
            "/v1/apis/me",
            json!({
                "base_path": "/me",
                "auth": {"api_key": true},
                "upstream": {"targets": [{"url": origin.url()}]},
                "routes": [
                    {"id": "profile", "path": "/profile", "cache": {"ttl_s": 60}},
                    {"id": "catalog", "path": "/catalog", "cache": {"ttl_s": 60, "shared": true}}
                ]
            }),
        )
        .await;
    let rev = admin
        .must_put("/v1/usage-plans/basic", json!({"apis": ["me"]}))
        .await;
    let (alice_id, alice) = admin.issue_key("basic").await;
    let (bob_id, bob) = admin.issue_key("basic").await;
    let dp = start_dp(vec![cluster.nodes[0].grpc_url()], None).await;
    wait_for_revision(&dp, rev + 2).await;

    let key_in = |body: &str| serde_json::from_str::<Value>(body).unwrap()["key"].clone();
    let (s, x, _, body) = get(&dp, "/me/profile", &[("x-api-key", &alice)]).await;
    assert_eq!((s, x.as_str()), (200, "Miss"));
    assert_eq!(key_in(&body), alice_id.as_str());
    for _ in 0..2 {
        let (_, x, _, body) = get(&dp, "/me/profile", &[("x-api-key", &alice)]).await;
        assert_eq!(x, "Hit");
        assert_eq!(key_in(&body), alice_id.as_str());
    }
    let (_, x, _, body) = get(&dp, "/me/profile", &[("x-api-key", &bob)]).await;
    assert_eq!(x, "Miss", "bob does not get alice's entry");
    assert_eq!(key_in(&body), bob_id.as_str());
    let (_, x, _, body) = get(&dp, "/me/profile", &[("x-api-key", &bob)]).await;
    assert_eq!(x, "Hit");
    assert_eq!(key_in(&body), bob_id.as_str());
    assert_eq!(origin.hits("/profile"), 2);

    // Authentication runs before the cache: no key, no entry.
    let (s, x, _, _) = get(&dp, "/me/profile", &[]).await;
    assert_eq!((s, x.as_str()), (403, ""));
    let (s, _, _, _) = get(&dp, "/me/profile", &[("x-api-key", "tg_not_a_key")]).await;
    assert_eq!(s, 403);
    assert_eq!(origin.hits("/profile"), 2);

    // `shared: true`: one entry for every caller.
    assert_eq!(
        get(&dp, "/me/catalog", &[("x-api-key", &alice)]).await.1,
        "Miss"
    );
    assert_eq!(
        get(&dp, "/me/catalog", &[("x-api-key", &bob)]).await.1,
        "Hit"
    );
    assert_eq!(origin.hits("/catalog"), 1);

    // Hits are billed: alice made 3 + 1 requests, bob 2 + 1.
    let billed = |v: &Value, key: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["key_id"] == key)
            .map(|r| r["requests"].as_u64().unwrap())
            .sum::<u64>()
    };
    eventually("hits to be billed", Duration::from_secs(10), || {
        let admin = admin.clone();
        let (a, b) = (alice_id.clone(), bob_id.clone());
        async move {
            let (_, v) = admin.get("/v1/usage/export?format=json").await;
            billed(&v, &a) == 4 && billed(&v, &b) == 3
        }
    })
    .await;
    dp.shutdown().await;
}

#[tokio::test]
async fn a_flush_reaches_every_data_plane_including_one_offline_at_the_time() {
    init_tracing();
    let cluster = Cluster::start(1).await;
    let admin = cluster.nodes[0].client();
    let origin = Origin::start().await;
    let rev = admin
        .must_put("/v1/apis/shop", cached_api(&origin, json!({"ttl_s": 600})))
        .await;
    let grpc: std::net::SocketAddr = cluster.nodes[0].grpc.parse().unwrap();
    // dp1 talks to the control plane directly; dp2 through a link the test
    // can cut.
    let link = Forwarder::start("127.0.0.1:0", grpc).await;
    let link_addr = link.addr;
    let dp1 = start_dp(vec![cluster.nodes[0].grpc_url()], None).await;
    let dp2 = start_dp(vec![link.url()], None).await;
    wait_for_revision(&dp1, rev).await;
    wait_for_revision(&dp2, rev).await;

    for dp in [&dp1, &dp2] {
        assert_eq!(get(dp, "/shop/c/x", &[]).await.1, "Miss");
        assert_eq!(get(dp, "/shop/c/x", &[]).await.1, "Hit");
    }
    assert_eq!(origin.hits("/c/x"), 2);

    // dp2 goes offline; the flush happens while it is.
    link.cut();
    eventually("dp2 to notice", Duration::from_secs(10), || {
        let c = dp2.connection.borrow().endpoint.is_none();
        async move { c }
    })
    .await;
    let (s, v) = admin.delete("/v1/apis/shop/cache").await;
    assert_eq!(s, 200, "{v}");
    let flushed_at = v["revision"].as_u64().unwrap();
    assert_eq!(v["epoch"].as_u64(), Some(flushed_at));

    wait_for_revision(&dp1, flushed_at).await;
    assert_eq!(get(&dp1, "/shop/c/x", &[]).await.1, "Miss", "dp1 flushed");
    assert_eq!(get(&dp1, "/shop/c/x", &[]).await.1, "Hit");
    assert!(dp2.gateway.snapshot().revision() < flushed_at);
    assert_eq!(
        get(&dp2, "/shop/c/x", &[]).await.1,
        "Hit",
        "dp2 has not heard yet"
    );
    assert_eq!(origin.hits("/c/x"), 3);

    // Back online: dp2 catches up and flushes.
    let _link = Forwarder::start(&link_addr.to_string(), grpc).await;
    wait_for_revision(&dp2, flushed_at).await;
    assert_eq!(
        get(&dp2, "/shop/c/x", &[]).await.1,
        "Miss",
        "dp2 flushed on reconnect"
    );
    assert_eq!(get(&dp2, "/shop/c/x", &[]).await.1, "Hit");
    assert_eq!(origin.hits("/c/x"), 4);

    // The flush epoch is not part of the API document, and lists and
    // gets are unchanged by it.
    let (_, list) = admin.get("/v1/apis").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, doc) = admin.get("/v1/apis/shop").await;
    assert!(
        doc.get("epoch").is_none() && doc.get("api").is_none(),
        "{doc}"
    );
    assert_eq!(admin.delete("/v1/apis/nope/cache").await.0, 404);

    // A second flush is a new epoch.
    let (_, v) = admin.delete("/v1/apis/shop/cache").await;
    let again = v["revision"].as_u64().unwrap();
    assert!(again > flushed_at);
    wait_for_revision(&dp1, again).await;
    assert_eq!(get(&dp1, "/shop/c/x", &[]).await.1, "Miss");

    // Deleting the API takes its flush epoch with it.
    let (s, _) = admin.delete("/v1/apis/shop").await;
    assert_eq!(s, 200);
    let rev = admin
        .must_put("/v1/apis/shop", cached_api(&origin, json!({"ttl_s": 600})))
        .await;
    wait_for_revision(&dp1, rev).await;
    assert_eq!(dp1.gateway.snapshot().cache_epoch("shop"), 0);
    assert_eq!(get(&dp1, "/shop/c/x", &[]).await.1, "Miss");
    dp1.shutdown().await;
    dp2.shutdown().await;
}
