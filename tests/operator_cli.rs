//! The operator commands of contract §5.1 against a real cluster and data
//! plane: `apply` (with `--dry-run` and `--prune`), `diff` and its exit
//! statuses, `get`, `usage`, and `dump` restoring what was deleted since,
//! key records included (the old key's value works again).

use crate::common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::dp::{eventually, http, start_dp, wait_for_revision};
use common::{init_tracing, Cluster};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

fn tollgate(server: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .args(["--server", server])
        .env("TOLLGATE_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

const FILE: &str = r#"
kind: Tenant
id: acme
name: Acme
---
kind: Api
id: orders
base_path: /orders
auth: {api_key: true}
routes: [{id: all, path: "/{rest+}", mock: {body: "orders"}}]
---
kind: Api
id: extra
base_path: /extra
routes: [{id: all, path: "/", mock: {body: "extra"}}]
---
kind: UsagePlan
id: gold
apis: [orders]
quota: {limit: 100, period: day}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_round_trip() {
    init_tracing();
    let c = Cluster::start(1).await;
    let server = c.nodes[0].admin_url();
    let admin = c.nodes[0].client();
    let dp = start_dp(vec![c.nodes[0].grpc_url()], None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "all.yaml", FILE);

    // ---- diff before anything exists: changes, exit 1; a dry run writes nothing
    let out = tollgate(&server, &["diff", "-f", &file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("+base_path: /orders"), "{}", text(&out));
    let out = tollgate(&server, &["apply", "-f", &file, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("api/orders would be created (dry run)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        admin.get("/v1/apis/orders").await.0,
        404,
        "a dry run changes nothing"
    );

    // ---- apply, then diff says nothing and exits 0; get shows it
    let out = tollgate(&server, &["apply", "-f", &file]);
    assert!(out.status.success(), "{}", text(&out));
    let out = tollgate(&server, &["diff", "-f", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let out = tollgate(&server, &["get", "apis", "-o", "json"]);
    let apis: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(apis.as_array().map(Vec::len), Some(2), "{apis}");
    let out = tollgate(&server, &["get", "apis", "orders", "-o", "table"]);
    assert!(
        text(&out).starts_with("ID") && text(&out).contains("/orders"),
        "{}",
        text(&out)
    );

    // ---- a changed file: diff shows the line; --prune deletes what it does not name
    let smaller = FILE
        .replace("body: \"orders\"", "body: \"orders v2\"")
        .replace(
            "---\nkind: Api\nid: extra\nbase_path: /extra\nroutes: [{id: all, path: \"/\", mock: {body: \"extra\"}}]\n",
            "",
        );
    let smaller = write(dir.path(), "smaller.yaml", &smaller);
    let out = tollgate(&server, &["diff", "-f", &smaller, "--prune"]);
    assert_eq!(out.status.code(), Some(1));
    let diff = text(&out);
    let line = |sign: &str, rest: &str| {
        diff.lines()
            .any(|l| l.starts_with(sign) && l.trim_start_matches(sign).trim() == rest)
    };
    assert!(
        line("+", "body: orders v2") && line("-", "body: orders"),
        "{diff}"
    );
    assert!(line("-", "base_path: /extra"), "{diff}");
    let out = tollgate(&server, &["apply", "-f", &smaller, "--prune", "--dry-run"]);
    assert!(
        text(&out).contains("api/extra would be deleted"),
        "{}",
        text(&out)
    );
    assert_eq!(admin.get("/v1/apis/extra").await.0, 200);
    let out = tollgate(&server, &["apply", "-f", &smaller, "--prune"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("api/extra deleted"), "{}", text(&out));
    assert_eq!(admin.get("/v1/apis/extra").await.0, 404);
    assert_eq!(
        admin.get("/v1/tenants/acme").await.0,
        200,
        "named documents stay"
    );

    // ---- a key, some traffic, and `usage`
    let (key_id, key) = admin.issue_key("gold").await;
    let rev = admin.get("/v1/cluster").await.1["applied_index"]
        .as_u64()
        .unwrap();
    wait_for_revision(&dp, rev).await;
    let url = format!("http://{}/orders/x", dp.proxy_addr);
    let call = |key: String| {
        let url = url.clone();
        async move {
            http()
                .get(&url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..3 {
        assert_eq!(call(key.clone()).await, 200);
    }
    dp.gateway.plans().unwrap().flush().await;
    eventually("usage on the table", WAIT, || async {
        let out = tollgate(&server, &["usage", "--key", &key_id]);
        let t = text(&out);
        out.status.success()
            && t.lines()
                .any(|l| l.contains("gold") && l.contains(" 3 ") && l.contains("97"))
    })
    .await;
    let out = tollgate(&server, &["usage", "--plan", "gold", "-o", "json"]);
    let u: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u["plan_id"], "gold", "{u}");

    // ---- dump, delete an API, a plan and the key; apply the dump
    let dump = dir.path().join("dump.yaml");
    let out = tollgate(&server, &["dump", "--file", &dump.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out));
    let dumped = std::fs::read_to_string(&dump).unwrap();
    assert!(
        dumped.contains("kind: ApiKey") && dumped.contains("hash:"),
        "{dumped}"
    );
    assert!(!dumped.contains(&key), "a dump never holds a key's value");
    // The documents the dump must bring back, as `tollgate get` shows them.
    let documents = || -> Vec<Value> {
        [
            ("apis", "orders"),
            ("usage-plans", "gold"),
            ("keys", key_id.as_str()),
        ]
        .iter()
        .map(|(kind, id)| tollgate(&server, &["get", kind, id, "-o", "json"]))
        .map(|o| serde_json::from_slice(&o.stdout).unwrap())
        .collect()
    };
    let before = documents();
    for (kind, id) in [
        ("keys", key_id.as_str()),
        ("usage-plans", "gold"),
        ("apis", "orders"),
    ] {
        let out = tollgate(&server, &["delete", kind, id]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(call(key.clone()).await, 404, "the API is gone");
    let out = tollgate(&server, &["apply", "-f", &dump.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out));
    let after = documents();
    assert_eq!(
        before, after,
        "the dump restores the documents as they were"
    );
    let out = tollgate(&server, &["apply", "-f", &dump.to_string_lossy()]);
    assert!(
        text(&out).lines().all(|l| l.ends_with("unchanged")),
        "re-applying a dump changes nothing: {}",
        text(&out)
    );
    let rev = admin.get("/v1/cluster").await.1["applied_index"]
        .as_u64()
        .unwrap();
    wait_for_revision(&dp, rev).await;
    assert_eq!(
        call(key.clone()).await,
        200,
        "the old key's value works again"
    );

    // ---- exit statuses: 1 for a failure, 2 for bad usage and for diff's trouble
    let bad = write(
        dir.path(),
        "bad.yaml",
        "kind: Api\nid: bad\nbase_path: nope\n",
    );
    let out = tollgate(&server, &["apply", "-f", &bad]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "one line: {}",
        text(&out)
    );
    let out = tollgate(&server, &["diff", "-f", "/no/such/file"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = tollgate(&server, &["usage"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--plan or --key is required: {}",
        text(&out)
    );
}
