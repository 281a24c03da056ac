//! Fallback answers and stale-if-error (issue 21, contract §5.4): when the
//! upstream fails (unreachable, 5xx, slower than `timeout_ms`, breaker
//! open), a route's or API's `fallback` answers instead, marked
//! `x-tollgate-fallback: 1`; a cached route with `cache.stale_if_error_s`
//! serves its stale entry first (`x-cache: Stale`). A real data plane on a
//! mock control plane, a real origin, and a forwarder that can be cut.

use crate::common;
use crate::observe;

use std::net::SocketAddr;
use std::time::Duration;

use common::dp::{dp_with_apis, eventually, http};
use common::init_tracing;
use observe::{metric, scrape, Forwarder, Origin};
use serde_json::{json, Value};
use tollgate_data_plane::{DataPlaneHandle, Limits};

/// (status, x-tollgate-fallback, x-cache, content-type, body) of a GET.
async fn get(dp: &DataPlaneHandle, path: &str) -> (u16, String, String, String, String) {
    let res = http()
        .get(format!("http://{}{path}", dp.proxy_addr))
        .send()
        .await
        .unwrap();
    let h = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (fallback, cache, ct) = (h("x-tollgate-fallback"), h("x-cache"), h("content-type"));
    (
        res.status().as_u16(),
        fallback,
        cache,
        ct,
        res.text().await.unwrap(),
    )
}

/// A port nothing listens on.
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn api(id: &str, target: &str, extra: Value) -> Value {
    let mut doc = json!({
        "id": id,
        "base_path": format!("/{id}"),
        "upstream": {"targets": [{"url": target}], "retries": 0, "timeout_ms": 100},
        "fallback": {"status": 200, "body": "{\"from\":\"api\"}"},
        "routes": [
            {"id": "any", "path": "/{rest+}"},
            {"id": "own", "path": "/own/{rest+}",
             "fallback": {"status": 503, "body": "busy", "headers": {"content-type": "text/plain", "retry-after": "5"}}},
            {"id": "bare", "path": "/bare/{rest+}"}
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_answer_for_a_failed_upstream_and_only_then() {
    init_tracing();
    let origin = Origin::start().await;
    let down = closed_port().await;
    let apis = [
        api("live", &origin.url(), json!({})),
        api("down", &down, json!({})),
        // One failure opens the breaker: then no target is left (503).
        api(
            "breaker",
            &down,
            json!({"upstream": {"targets": [{"url": down}], "retries": 0,
                   "timeout_ms": 100, "circuit_breaker_failures": 1}}),
        ),
        // No fallback anywhere: the gateway's own 502.
        json!({"id": "plain", "base_path": "/plain",
               "upstream": {"targets": [{"url": down}], "retries": 0},
               "routes": [{"id": "any", "path": "/{rest+}"}]}),
    ];
    let (_cp, dp) = dp_with_apis(&apis, Limits::default()).await;

    // A healthy upstream answers itself, 4xx included: no fallback.
    let (status, fb, _, _, body) = get(&dp, "/live/items").await;
    assert_eq!((status, fb.as_str()), (200, ""));
    assert!(body.contains("\"path\""), "{body}");
    let (status, fb, ..) = get(&dp, "/live/status/404").await;
    assert_eq!((status, fb.as_str()), (404, ""));

    // 5xx from the upstream, an upstream slower than timeout_ms, and an
    // unreachable one: the API's fallback, JSON unless it says otherwise.
    for path in ["/live/status/500", "/live/slow", "/down/x"] {
        let (status, fb, _, ct, body) = get(&dp, path).await;
        assert_eq!(
            (status, fb.as_str(), ct.as_str(), body.as_str()),
            (200, "1", "application/json", "{\"from\":\"api\"}"),
            "{path}"
        );
    }
    // The route's own fallback wins over the API's, with its headers.
    let (status, fb, _, ct, body) = get(&dp, "/down/own/x").await;
    assert_eq!(
        (status, fb.as_str(), ct.as_str(), body.as_str()),
        (503, "1", "text/plain", "busy")
    );

    // Breaker: the first request fails (fallback), the breaker opens, and
    // the next finds no target (503 without a fallback; here, the fallback).
    for _ in 0..3 {
        let (status, fb, ..) = get(&dp, "/breaker/x").await;
        assert_eq!((status, fb.as_str()), (200, "1"));
    }

    // Without a fallback the contract's errors stand.
    let (status, fb, _, _, body) = get(&dp, "/plain/x").await;
    assert_eq!((status, fb.as_str()), (502, ""));
    assert!(body.contains("Bad Gateway"), "{body}");

    // Counted per route.
    let m = scrape(&format!("http://{}/metrics", dp.status_addr)).await;
    assert_eq!(
        metric(
            &m,
            "tollgate_fallbacks_total",
            &[("api", "live"), ("route", "any")]
        ),
        2.0
    );
    assert_eq!(
        metric(&m, "tollgate_fallbacks_total", &[("api", "down")]),
        2.0
    );
    assert_eq!(
        metric(&m, "tollgate_fallbacks_total", &[("api", "breaker")]),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_served_when_the_upstream_fails_then_the_fallback() {
    init_tracing();
    let origin = Origin::start().await;
    let origin_addr: SocketAddr = origin.url().trim_start_matches("http://").parse().unwrap();
    let link = Forwarder::start("127.0.0.1:0", origin_addr).await;
    let doc = json!({
        "id": "shop",
        "base_path": "/shop",
        "upstream": {"targets": [{"url": link.url()}], "retries": 0, "timeout_ms": 500},
        "fallback": {"status": 200, "body": "{\"fallback\":true}"},
        "routes": [
            {"id": "stale", "path": "/s/{rest+}", "cache": {"ttl_s": 1, "stale_if_error_s": 600}},
            {"id": "nostale", "path": "/n/{rest+}", "cache": {"ttl_s": 1}}
        ]
    });
    let (_cp, dp) = dp_with_apis(&[doc], Limits::default()).await;

    let (status, _, x_cache, _, first) = get(&dp, "/shop/s/items").await;
    assert_eq!((status, x_cache.as_str()), (200, "Miss"));
    let (status, _, x_cache, _, _) = get(&dp, "/shop/n/items").await;
    assert_eq!((status, x_cache.as_str()), (200, "Miss"));

    // Past the TTL with the upstream alive: fetched anew (Miss), not stale.
    eventually(
        "a refetch after the TTL",
        Duration::from_secs(10),
        || async { get(&dp, "/shop/s/items").await.2 == "Miss" },
    )
    .await;
    let before = origin.hits("/s/items");
    assert!(before >= 2, "the entry was refetched");

    // The upstream goes away: within the TTL a hit, past it the stale entry.
    link.cut();
    // (No sleep: each request is a real round trip; the bound only
    // catches a hang.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stale = loop {
        let r = get(&dp, "/shop/s/items").await;
        assert_eq!(r.0, 200, "{r:?}");
        if r.2 == "Stale" {
            break r;
        }
        assert_eq!(r.2, "Hit", "{r:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "no stale entry served"
        );
    };
    let (_, fb, _, _, body) = stale;
    assert_eq!(fb, "", "a stale entry is not a fallback");
    assert!(body.contains("\"path\""), "the stored answer: {body}");
    assert_ne!(body, "", "{first}");

    // A route without stale_if_error: past the TTL, the fallback.
    eventually("the fallback", Duration::from_secs(10), || async {
        let r = get(&dp, "/shop/n/items").await;
        r.1 == "1" && r.4 == "{\"fallback\":true}"
    })
    .await;
    let m = scrape(&format!("http://{}/metrics", dp.status_addr)).await;
    assert!(
        metric(
            &m,
            "tollgate_cache_requests_total",
            &[("route", "stale"), ("result", "stale")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn fallback_and_stale_documents_are_validated() {
    let bad = |doc: Value| {
        let api: tollgate_model::docs::Api = serde_json::from_value(doc).unwrap();
        api.validate().unwrap_err().field
    };
    let base = || {
        json!({"id": "v", "base_path": "/v", "upstream": {"targets": [{"url": "http://x"}]},
               "routes": [{"id": "r", "path": "/r"}]})
    };
    let mut doc = base();
    doc["fallback"] = json!({"status": 700});
    assert_eq!(bad(doc), "fallback.status");
    let mut doc = base();
    doc["routes"][0]["fallback"] = json!({"headers": {"bad name": "x"}});
    assert_eq!(bad(doc), "routes[0].fallback.headers.bad name");
    let mut doc = base();
    doc["routes"][0]["cache"] = json!({"ttl_s": 10, "stale_if_error_s": 86401});
    assert_eq!(bad(doc), "routes[0].cache.stale_if_error_s");
}
