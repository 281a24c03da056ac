//! The `tollgate` binary: `control-plane` as a real process (SIGKILLed and
//! restarted), and `apply -f` applying a multi-document file idempotently.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

fn free_addr() -> String {
    // Ask the OS for an ephemeral port, then release it for the child.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(dir: &std::path::Path, grpc: &str, admin: &str, bootstrap: bool) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args([
        "control-plane",
        "--node-id",
        "1",
        "--grpc-addr",
        grpc,
        "--admin-addr",
        admin,
    ])
    .arg("--data-dir")
    .arg(dir)
    .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    .env("TOLLGATE_CLUSTER_TOKEN", CLUSTER_TOKEN)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if bootstrap {
        cmd.arg("--bootstrap");
    }
    Proc {
        child: cmd.spawn().expect("spawn tollgate"),
    }
}

async fn wait_ready(admin: &Admin) {
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{}/readyz", admin.base)).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_node_keeps_acknowledged_writes_and_apply_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, admin_addr) = (free_addr(), free_addr());
    let admin = Admin::new(&format!("http://{admin_addr}"));

    let mut node = spawn_node(dir.path(), &grpc, &admin_addr, true);
    wait_ready(&admin).await;
    let mut revisions = Vec::new();
    for i in 0..25 {
        revisions.push(
            admin
                .must_put(&format!("/v1/tenants/t{i}"), json!({"name": "x"}))
                .await,
        );
    }
    node.child.kill().unwrap(); // SIGKILL: no chance to flush anything more.
    node.child.wait().unwrap();
    drop(node);

    // Restart with neither --bootstrap nor --join: it resumes from its dir.
    let _node = spawn_node(dir.path(), &grpc, &admin_addr, false);
    wait_ready(&admin).await;
    for (i, rev) in revisions.iter().enumerate() {
        let (s, v) = admin.get(&format!("/v1/tenants/t{i}")).await;
        assert_eq!(s, 200, "acknowledged write t{i} lost");
        assert_eq!(v["revision"].as_u64(), Some(*rev));
    }

    // apply -f: created, then unchanged on a second run.
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "kind: UsagePlan\nid: gold\napis: [orders]\n---\nkind: Api\nid: orders\nbase_path: /orders\n\
         upstream: {targets: [{url: \"http://127.0.0.1:9\"}]}\nroutes: [{id: all, path: \"/{rest+}\"}]\n---\n\
         kind: Tenant\nid: acme\nname: Acme\n",
    )
    .unwrap();
    let apply = || {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["apply", "-f"])
            .arg(&file)
            .args(["--server", &admin.base])
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap()
    };
    let run = || {
        let out = apply();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert!(first.contains("api/orders created"), "{first}");
    assert!(first.contains("usage_plan/gold created"), "{first}");
    let second = run();
    assert_eq!(second.matches("unchanged").count(), 3, "{second}");

    // A bad file is refused with the field named, and nothing changes.
    std::fs::write(&file, "kind: Api\nid: broken\nbase_path: nope\n").unwrap();
    let out = apply();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("base_path"));
    assert_eq!(admin.get("/v1/apis/broken").await.0, 404);
}

/// The newcomer's command: `tollgate dev --config examples/quickstart.yaml`
/// (on ephemeral ports) serves the quickstart's mock route and proxies to
/// the echo upstream it starts itself; SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_the_quickstart() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let echo = free_addr();
    // Point the quickstart's echo target (where `dev` starts its echo by
    // default) at our ephemeral one.
    let original = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/quickstart.yaml"
    ))
    .unwrap();
    let target = original
        .split("url: \"http://")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the quickstart routes to an echo target");
    let quickstart = original.replace(target, &echo);
    let config = dir.path().join("quickstart.yaml");
    std::fs::write(&config, quickstart).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--status-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--echo-addr",
            &echo,
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("proxy on"))
    })
    .await
    .unwrap()
    .expect("dev prints where the proxy listens");
    let _guard = Proc { child };
    let proxy = line
        .split("proxy on ")
        .nth(1)
        .and_then(|s| s.split([',', ' ']).next())
        .unwrap()
        .to_string();
    let http = common::dp::http();
    common::dp::eventually("the quickstart routes", Duration::from_secs(15), || async {
        matches!(http.get(format!("{proxy}/hello/")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    let hello = http
        .get(format!("{proxy}/hello/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(hello, r#"{"hello":"world"}"#);
    let echoed: serde_json::Value = http
        .get(format!("{proxy}/echo/a/b"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["path"], "/a/b");
    // The quickstart's cached route: a miss, then hits.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = http
            .get(format!("{proxy}/echo/cached"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        seen.push(r.headers()["x-cache"].to_str().unwrap().to_string());
    }
    assert_eq!(seen, ["Miss", "Hit"]);
}
