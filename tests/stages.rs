//! Deployments and stages (issue 22, contract §5.5) on a real one-node
//! control plane: deployments freeze the API, stages name deployments of
//! their API and define every variable they use, paths clash in both
//! directions, a deployment in use cannot go, promote swaps in one write.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::dp::{eventually, http, start_dp, TestUpstream};
use common::{init_tracing, Cluster};
use serde_json::{json, Value};

fn orders(backend: &str) -> Value {
    json!({"base_path": "/orders",
           "upstream": {"targets": [{"url": backend}]},
           "routes": [{"id": "all", "path": "/{rest+}"},
                      {"id": "version", "path": "/version", "mock": {"body": "v=${stageVariables.version}"}}]})
}

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_and_stages_keep_their_rules() {
    init_tracing();
    let c = Cluster::start(1).await;
    let admin = c.nodes[0].client();
    admin
        .must_put("/v1/apis/orders", orders("${stageVariables.backend}"))
        .await;
    admin
        .must_put(
            "/v1/apis/other",
            json!({"base_path": "/other", "routes": [{"id": "m", "path": "/", "mock": {"body": "x"}}]}),
        )
        .await;

    // ---- deployments: frozen copies, listed per API
    let (s, v1) = admin
        .post(
            "/v1/apis/orders/deployments",
            json!({"description": "first"}),
        )
        .await;
    assert_eq!(s, 201, "{v1}");
    let dep1 = v1["id"].as_str().unwrap().to_string();
    assert_eq!(v1["api"], "orders");
    assert_eq!(v1["description"], "first");
    assert!(v1["created_at"].as_str().unwrap().ends_with('Z'), "{v1}");
    assert_eq!(v1["document"]["base_path"], "/orders");
    let (s, _) = admin.post("/v1/apis/nope/deployments", json!({})).await;
    assert_eq!(s, 404);
    let (s, other_dep) = admin.post("/v1/apis/other/deployments", json!({})).await;
    assert_eq!(s, 201);
    let other_dep = other_dep["id"].as_str().unwrap().to_string();
    // The draft changes; the deployment does not.
    let mut changed = orders("${stageVariables.backend}");
    changed["routes"][0]["path"] = json!("/v2/{rest+}");
    admin.must_put("/v1/apis/orders", changed).await;
    let (s, v2) = admin.post("/v1/apis/orders/deployments", json!({})).await;
    assert_eq!(s, 201);
    let dep2 = v2["id"].as_str().unwrap().to_string();
    let (s, got) = admin
        .get(&format!("/v1/apis/orders/deployments/{dep1}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(got["document"]["routes"][0]["path"], "/{rest+}");
    let (s, list) = admin.get("/v1/apis/orders/deployments").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&dep1.as_str()) && ids.contains(&dep2.as_str()));
    // Another API's deployment is not found under this one.
    let (s, _) = admin
        .get(&format!("/v1/apis/orders/deployments/{other_dep}"))
        .await;
    assert_eq!(s, 404);

    // ---- stages: bad input is a 400 naming the field, and changes nothing
    let stage = |deployment: &str, base: &str| {
        json!({"api": "orders", "deployment": deployment, "base_path": base,
               "variables": {"backend": "http://127.0.0.1:9", "version": "1"}})
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"api": "nope", "deployment": dep1, "base_path": "/prod"}),
            "api",
        ),
        (stage("dep-999999", "/prod"), "deployment"),
        (stage(&other_dep, "/prod"), "deployment"),
        (
            json!({"api": "orders", "deployment": dep1, "base_path": "/prod", "variables": {"version": "1"}}),
            "variables.backend",
        ),
        (
            json!({"api": "orders", "deployment": dep1, "base_path": "/prod",
                "variables": {"backend": "ftp://x", "version": "1"}}),
            "upstream.targets[0].url",
        ),
        (
            {
                let mut s = stage(&dep1, "/prod");
                s["canary"] = json!({"deployment": dep2, "percent": 150});
                s
            },
            "canary.percent",
        ),
        (
            {
                let mut s = stage(&dep1, "/prod");
                s["canary"] = json!({"deployment": dep2, "percent": 10, "sticky": "cookie"});
                s
            },
            "sticky",
        ),
        (
            {
                let mut s = stage(&dep1, "/prod");
                s["canary"] = json!({"deployment": other_dep, "percent": 10});
                s
            },
            "canary.deployment",
        ),
    ];
    for (doc, field) in cases {
        let (s, v) = admin.put("/v1/stages/prod", doc.clone()).await;
        assert_eq!(s, 400, "{doc}: {v}");
        assert!(
            message(&v).contains(field),
            "{doc}: {v} should name {field}"
        );
    }
    let (s, _) = admin.get("/v1/stages/prod").await;
    assert_eq!(s, 404, "a refused stage leaves nothing behind");

    // ---- a good stage; paths clash in both directions
    let (s, v) = admin
        .put("/v1/stages/prod", stage(&dep1, "/prod/orders"))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin.put("/v1/stages/clash", stage(&dep1, "/orders")).await;
    assert_eq!(s, 409, "a stage at an API's path: {v}");
    let (s, v) = admin
        .put("/v1/stages/clash", stage(&dep1, "/prod/orders"))
        .await;
    assert_eq!(s, 409, "a stage at another stage's path: {v}");
    let (s, v) = admin
        .put(
            "/v1/apis/squatter",
            json!({"base_path": "/prod/orders", "routes": [{"id": "m", "path": "/", "mock": {"body": "x"}}]}),
        )
        .await;
    assert_eq!(s, 409, "an API at a stage's path: {v}");

    // ---- in use: neither the deployment nor the API may go
    let (s, v) = admin
        .delete(&format!("/v1/apis/orders/deployments/{dep1}"))
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = admin.delete("/v1/apis/orders").await;
    assert_eq!(s, 409, "{v}");
    assert!(message(&v).contains("stage"), "{v}");

    // ---- canary and promote
    let (s, v) = admin.post("/v1/stages/prod/promote", json!({})).await;
    assert_eq!(s, 409, "no canary to promote: {v}");
    let mut with_canary = stage(&dep1, "/prod/orders");
    with_canary["canary"] =
        json!({"deployment": dep2, "percent": 10, "variables": {"version": "2"}, "sticky": "key"});
    let (s, v) = admin.put("/v1/stages/prod", with_canary).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin
        .delete(&format!("/v1/apis/orders/deployments/{dep2}"))
        .await;
    assert_eq!(s, 409, "the canary uses it: {v}");
    let (s, v) = admin.post("/v1/stages/prod/promote", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deployment"], dep2.as_str());
    assert_eq!(v["variables"]["version"], "2");
    assert!(v.get("canary").is_none(), "{v}");
    // dep1 is free now.
    let (s, v) = admin
        .delete(&format!("/v1/apis/orders/deployments/{dep1}"))
        .await;
    assert_eq!(s, 200, "{v}");

    // ---- `tollgate deploy`, as a CI pipeline calls it
    let deploy = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("deploy")
            .args(args)
            .args(["--server", &c.nodes[0].admin_url()])
            .env("TOLLGATE_ADMIN_TOKEN", common::ADMIN_TOKEN)
            .output()
            .unwrap()
    };
    let out = deploy(&["orders", "--stage", "prod", "--canary", "20"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, st) = admin.get("/v1/stages/prod").await;
    assert_eq!(st["canary"]["percent"], 20.0, "{st}");
    assert_eq!(
        st["deployment"],
        dep2.as_str(),
        "the stage itself is unchanged"
    );
    let canary_dep = st["canary"]["deployment"].as_str().unwrap().to_string();
    assert_ne!(canary_dep, dep2);
    let out = deploy(&["orders", "--stage", "prod"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, st) = admin.get("/v1/stages/prod").await;
    assert_ne!(st["deployment"], dep2.as_str(), "{st}");
    // Refusals: exit status 1 with the server's reason; bad usage: 2.
    let out = deploy(&["nope", "--stage", "prod"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = deploy(&["orders", "--canary", "120"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `tollgate apply` takes stages like any document.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stage.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: Stage\nid: beta\napi: orders\ndeployment: {dep2}\nbase_path: /beta/orders\n\
             variables: {{backend: \"http://127.0.0.1:9\", version: \"b\"}}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["apply", "-f"])
        .arg(&file)
        .args(["--server", &c.nodes[0].admin_url()])
        .env("TOLLGATE_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("stage/beta created"),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, v) = admin.get("/v1/stages/beta").await;
    assert_eq!(
        (s, v["variables"]["version"].as_str()),
        (200, Some("b")),
        "{v}"
    );
    admin.delete("/v1/stages/beta").await;
    // `tollgate dump` lists the stage with the rest, and applying the
    // dump back changes nothing.
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .args(["--server", &c.nodes[0].admin_url()])
            .env("TOLLGATE_ADMIN_TOKEN", common::ADMIN_TOKEN)
            .output()
            .unwrap()
    };
    let out = run(&["dump"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumped = String::from_utf8(out.stdout).unwrap();
    assert!(
        dumped.contains("kind: Stage") && dumped.contains("id: prod"),
        "{dumped}"
    );
    assert!(
        dumped.contains("kind: Api") && !dumped.contains("revision"),
        "{dumped}"
    );
    let file = dir.path().join("dump.yaml");
    let out = run(&["dump", "--file", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), dumped);
    let out = run(&["apply", "-f", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.lines().count() >= 3 && said.lines().all(|l| l.ends_with("unchanged")),
        "{said}"
    );
    // `tollgate get` and `delete`: a table, YAML that `apply -f -` takes
    // back unchanged, JSON; one-line errors with exit status 1.
    let out = run(&["get", "stages", "-o", "table"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.starts_with("ID") && table.contains("prod") && table.contains("/prod/orders"),
        "{table}"
    );
    let out = run(&["get", "stage", "prod", "-o", "yaml"]);
    let yaml = out.stdout.clone();
    assert!(String::from_utf8_lossy(&yaml).contains("kind: Stage"));
    let mut apply = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["apply", "-f", "-", "--server", &c.nodes[0].admin_url()])
        .env("TOLLGATE_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        apply.stdin.take().unwrap().write_all(&yaml).unwrap();
    }
    let applied = apply.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&applied.stdout).trim(),
        "stage/prod unchanged"
    );
    let out = run(&["get", "apis", "orders", "-o", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc["kind"].as_str(), doc["base_path"].as_str()),
        (Some("Api"), Some("/orders"))
    );
    let out = run(&["get", "stages", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && err.lines().count() == 1, "{err}");
    assert_eq!(run(&["get", "widgets"]).status.code(), Some(2));
    admin
        .put(
            "/v1/stages/gone",
            json!({"api": "orders", "deployment": dep2, "base_path": "/gone",
        "variables": {"backend": "http://127.0.0.1:9", "version": "1"}}),
        )
        .await;
    let out = run(&["delete", "stage", "gone"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(admin.get("/v1/stages/gone").await.0, 404);
    // `tollgate keys issue` prints the id and the value once; `revoke`.
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    admin
        .must_put("/v1/usage-plans/gold", json!({"apis": ["orders"]}))
        .await;
    let out = run(&[
        "keys", "issue", "--tenant", "acme", "--plan", "gold", "--name", "ci",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let id = said
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_string();
    assert!(
        said.lines()
            .any(|l| l.strip_prefix("value: ").is_some_and(|v| v.len() > 20)),
        "{said}"
    );
    let (s, k) = admin.get(&format!("/v1/keys/{id}")).await;
    assert_eq!((s, k["plans"][0].as_str()), (200, Some("gold")), "{k}");
    assert!(k.get("value").is_none(), "the value is never stored: {k}");
    let out = run(&["keys", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(admin.get(&format!("/v1/keys/{id}")).await.0, 404);
    assert_eq!(run(&["keys", "revoke", &id]).status.code(), Some(1));
    admin.delete("/v1/usage-plans/gold").await;
    // `tollgate cluster status`: the one node, leading, and no lag.
    let out = run(&["cluster", "status"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && said.contains("leader 1") && said.contains("leader  "),
        "{said}"
    );
    let out = run(&["cluster", "status", "-o", "json"]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["leader_id"], 1, "{info}");
    // Back to what the rest of this test expects.
    let (s, v) = admin
        .put("/v1/stages/prod", {
            let mut d = stage(&dep2, "/prod/orders");
            d["variables"]["version"] = json!("2");
            d
        })
        .await;
    assert_eq!(s, 200, "{v}");

    // ---- removing the stage frees the API; its deployments go with it
    let (s, _) = admin.delete("/v1/stages/prod").await;
    assert_eq!(s, 200);
    let (s, v) = admin.delete("/v1/apis/orders").await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = admin
        .get(&format!("/v1/apis/orders/deployments/{dep2}"))
        .await;
    assert_eq!(s, 404);
}

/// What answered a request: (status, x-tollgate-deployment, x-upstream, body).
async fn call(http: &reqwest::Client, url: &str, key: &str) -> (u16, String, String, String) {
    let r = http.get(url).header("x-api-key", key).send().await.unwrap();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (deployment, upstream) = (header("x-tollgate-deployment"), header("x-upstream"));
    (
        r.status().as_u16(),
        deployment,
        upstream,
        r.text().await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stages_serve_deployments_and_canaries_split() {
    init_tracing();
    let c = Cluster::start(1).await;
    let admin = c.nodes[0].client();
    let (blue, green) = (
        TestUpstream::start("blue").await,
        TestUpstream::start("green").await,
    );
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    let mut doc = orders("${stageVariables.backend}");
    doc["auth"] = json!({"api_key": true});
    admin.must_put("/v1/apis/orders", doc.clone()).await;
    admin
        .must_put("/v1/usage-plans/gold", json!({"apis": ["orders"]}))
        .await;
    let (_, v1) = admin.post("/v1/apis/orders/deployments", json!({})).await;
    let dep1 = v1["id"].as_str().unwrap().to_string();
    // The draft moves on: v2 serves everything under /v2 only.
    doc["routes"][0]["path"] = json!("/v2/{rest+}");
    admin.must_put("/v1/apis/orders", doc).await;
    let (_, v2) = admin.post("/v1/apis/orders/deployments", json!({})).await;
    let dep2 = v2["id"].as_str().unwrap().to_string();
    let prod = |deployment: &str, canary: Option<Value>| {
        let mut s = json!({"api": "orders", "deployment": deployment, "base_path": "/prod/orders",
                           "variables": {"backend": blue.url(), "version": "1"}});
        if let Some(c) = canary {
            s["canary"] = c;
        }
        s
    };
    admin.must_put("/v1/stages/prod", prod(&dep1, None)).await;
    let (_, key) = admin.issue_key("gold").await;
    let state = tempfile::tempdir().unwrap();
    let dps = [
        start_dp(vec![c.nodes[0].grpc_url()], Some(state.path())).await,
        start_dp(vec![c.nodes[0].grpc_url()], None).await,
    ];
    let http = http();
    let url = |i: usize, path: &str| format!("http://{}{path}", dps[i].proxy_addr);
    for i in 0..2 {
        eventually("the stage to serve", Duration::from_secs(15), || async {
            call(&http, &url(i, "/prod/orders/x"), &key).await.0 == 200
        })
        .await;
    }

    // ---- the stage serves v1 (its variables in the target URL), the API's
    // own path the draft; a variable on the draft's path is a 500
    let (s, d, up, _) = call(&http, &url(0, "/prod/orders/x"), &key).await;
    assert_eq!((s, d.as_str(), up.as_str()), (200, dep1.as_str(), "blue"));
    let (s, d, _, body) = call(&http, &url(0, "/prod/orders/version"), &key).await;
    assert_eq!((s, d.as_str(), body.as_str()), (200, dep1.as_str(), "v=1"));
    let (s, d, _, _) = call(&http, &url(0, "/prod/orders/v2/x"), &key).await;
    assert_eq!(
        (s, d.as_str()),
        (200, dep1.as_str()),
        "v1 serves every path"
    );
    let (s, d, _, _) = call(&http, &url(0, "/orders/v2/x"), &key).await;
    assert_eq!((s, d.as_str()), (500, ""), "the draft has no variables");
    let (s, _, _, _) = call(&http, &url(0, "/orders/x"), &key).await;
    assert_eq!(s, 404, "the draft serves /v2 only");
    // A gateway-made error on the stage carries the deployment too.
    let r = http.get(url(0, "/prod/orders/x")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers().get("x-tollgate-deployment").is_none(),
        "no side before authentication"
    );

    // ---- a 10 % canary on v2 (its own backend), split per request
    let canary = json!({"deployment": dep2, "percent": 10, "sticky": "none",
                        "variables": {"backend": green.url(), "version": "2"}});
    admin
        .must_put("/v1/stages/prod", prod(&dep1, Some(canary)))
        .await;
    for i in 0..2 {
        eventually("the canary to serve", Duration::from_secs(15), || async {
            let mut seen = false;
            for _ in 0..100 {
                if call(&http, &url(i, "/prod/orders/version"), &key).await.1 == dep2 {
                    seen = true;
                    break;
                }
            }
            seen
        })
        .await;
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let total = 10_000;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (http, key, dep2) = (http.clone(), key.clone(), dep2.clone());
            let (dp0, dp1) = (
                url(0, "/prod/orders/version"),
                url(1, "/prod/orders/version"),
            );
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..total / 16 {
                    let u = if (i + t) % 2 == 0 { &dp0 } else { &dp1 };
                    let (s, d, _, body) = call(&http, u, &key).await;
                    assert_eq!(s, 200);
                    // Each side's variables: v1 says 1, v2 says 2.
                    assert_eq!(body, if d == dep2 { "v=2" } else { "v=1" });
                    mine.push(d);
                }
                mine
            })
        })
        .collect();
    for t in tasks {
        for d in t.await.unwrap() {
            *counts.entry(d).or_default() += 1;
        }
    }
    let n: usize = counts.values().sum();
    let share = counts.get(&dep2).copied().unwrap_or(0) as f64 / n as f64 * 100.0;
    assert!(
        (8.5..=11.5).contains(&share),
        "canary share {share:.2} % of {n}: {counts:?}"
    );

    // ---- sticky: key — each key sees one deployment only
    let sticky = json!({"deployment": dep2, "percent": 50, "sticky": "key",
                        "variables": {"backend": green.url(), "version": "2"}});
    admin
        .must_put("/v1/stages/prod", prod(&dep1, Some(sticky)))
        .await;
    let mut keys = Vec::new();
    for _ in 0..12 {
        keys.push(admin.issue_key("gold").await.1);
    }
    let mut sides = BTreeSet::new();
    for k in &keys {
        // Until both data planes have the key (and the sticky canary).
        for i in 0..2 {
            eventually(
                "the key on every data plane",
                Duration::from_secs(15),
                || async { call(&http, &url(i, "/prod/orders/version"), k).await.0 == 200 },
            )
            .await;
        }
    }
    eventually(
        "the sticky canary in force",
        Duration::from_secs(15),
        || async {
            let mut all_same = true;
            for k in &keys {
                let mut seen = BTreeSet::new();
                for i in 0..8 {
                    seen.insert(call(&http, &url(i % 2, "/prod/orders/version"), k).await.1);
                }
                all_same &= seen.len() == 1;
            }
            all_same
        },
    )
    .await;
    for k in &keys {
        sides.insert(call(&http, &url(0, "/prod/orders/version"), k).await.1);
    }
    assert_eq!(
        sides.len(),
        2,
        "12 keys at 50 % all landed on one side: {sides:?}"
    );

    // ---- promote: everything on v2, on both data planes
    let (s, v) = admin.post("/v1/stages/prod/promote", json!({})).await;
    assert_eq!(s, 200, "{v}");
    for i in 0..2 {
        eventually("v2 everywhere", Duration::from_secs(10), || async {
            let mut all = true;
            for _ in 0..20 {
                let (_, d, up, _) = call(&http, &url(i, "/prod/orders/v2/x"), &key).await;
                all &= d == dep2 && up == "green";
            }
            all
        })
        .await;
    }
    let (s, _, _, _) = call(&http, &url(0, "/prod/orders/x"), &key).await;
    assert_eq!(s, 404, "v2's routes");

    // ---- roll back: a PUT of the stage with the older deployment
    admin.must_put("/v1/stages/prod", prod(&dep1, None)).await;
    for i in 0..2 {
        eventually("v1 again", Duration::from_secs(10), || async {
            let (s, d, up, _) = call(&http, &url(i, "/prod/orders/x"), &key).await;
            s == 200 && d == dep1 && up == "blue"
        })
        .await;
    }

    // ---- metrics carry the deployment, so the two sides compare; they
    // outlive config changes that leave the stage as it is
    let label =
        format!("tollgate_requests_total{{api=\"orders\",deployment=\"{dep1}\",route=\"all\"");
    assert!(
        common::dp::metrics_text(&dps[0]).await.contains(&label),
        "{label}"
    );
    admin
        .must_put(
            "/v1/apis/unrelated",
            json!({"base_path": "/unrelated", "routes": [{"id": "m", "path": "/", "mock": {"body": "x"}}]}),
        )
        .await;
    eventually("the unrelated API", Duration::from_secs(10), || async {
        call(&http, &url(0, "/unrelated"), &key).await.0 == 200
    })
    .await;
    assert!(
        common::dp::metrics_text(&dps[0]).await.contains(&label),
        "{label} after a change"
    );

    // ---- a stage applies its deployment's IP lists, not the draft's
    let (_, draft) = admin.get("/v1/apis/orders").await;
    let mut denying = draft.clone();
    denying["ip_deny"] = json!(["127.0.0.0/8"]);
    denying.as_object_mut().unwrap().remove("revision");
    admin.must_put("/v1/apis/orders", denying).await;
    let (_, v3) = admin.post("/v1/apis/orders/deployments", json!({})).await;
    let dep3 = v3["id"].as_str().unwrap().to_string();
    let mut open = draft.clone();
    open.as_object_mut().unwrap().remove("revision");
    admin.must_put("/v1/apis/orders", open).await;
    admin.must_put("/v1/stages/prod", prod(&dep3, None)).await;
    eventually(
        "the deployment's deny list",
        Duration::from_secs(10),
        || async {
            // dep3 is of the v2 draft: its routes are under /v2.
            call(&http, &url(0, "/prod/orders/v2/x"), &key).await.0 == 403
        },
    )
    .await;
    let (s, _, _, _) = call(&http, &url(0, "/orders/v2/x"), &key).await;
    assert_eq!(
        s, 500,
        "the draft admits the address (and has no variables)"
    );
    // On a canary's side, the canary deployment's lists.
    let all_canary = json!({"deployment": dep3, "percent": 100, "sticky": "none"});
    admin
        .must_put("/v1/stages/prod", prod(&dep1, Some(all_canary)))
        .await;
    eventually(
        "the canary's deny list",
        Duration::from_secs(10),
        || async { call(&http, &url(0, "/prod/orders/v2/x"), &key).await.0 == 403 },
    )
    .await;
    admin.must_put("/v1/stages/prod", prod(&dep1, None)).await;
    eventually(
        "the stage's own lists again",
        Duration::from_secs(10),
        || async { call(&http, &url(0, "/prod/orders/v2/x"), &key).await.0 == 200 },
    )
    .await;

    // ---- the stage's throttle stands in for a plan without one
    let mut throttled = prod(&dep1, None);
    throttled["throttle"] = json!({"rate": 1, "burst": 2});
    admin.must_put("/v1/stages/prod", throttled).await;
    eventually("the stage throttle", Duration::from_secs(10), || async {
        let mut limited = false;
        for _ in 0..10 {
            limited |= call(&http, &url(0, "/prod/orders/x"), &key).await.0 == 429;
        }
        limited
    })
    .await;
    admin.must_put("/v1/stages/prod", prod(&dep1, None)).await;

    // ---- a data plane restarted from its state dir serves the stage with
    // the control plane down
    let rev = admin.get("/v1/stages/prod").await.1["revision"]
        .as_u64()
        .unwrap();
    common::dp::wait_for_revision(&dps[0], rev).await;
    let [dp0, dp1] = dps;
    dp0.shutdown().await;
    dp1.shutdown().await;
    drop(c);
    let restarted = start_dp(vec!["http://127.0.0.1:9".into()], Some(state.path())).await;
    let u = format!("http://{}/prod/orders/x", restarted.proxy_addr);
    eventually(
        "the stage from the state dir",
        Duration::from_secs(10),
        || async {
            let (s, d, up, _) = call(&http, &u, &key).await;
            s == 200 && d == dep1 && up == "blue"
        },
    )
    .await;
}
