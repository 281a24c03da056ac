//! API key values exist only in the 201 response: not in the Raft log, the
//! state machine, snapshots, or any log line.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use tollgate_control_plane::RaftTuning;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_values_never_reach_disk_or_logs() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();

    // Snapshot often, so snapshots are built and shipped with keys in them.
    let tuning = RaftTuning {
        snapshot_every: 5,
        keep_behind_snapshot: 0,
        ..tuning()
    };
    let mut c = Cluster::start_with(3, tuning).await;
    let a = c.nodes[1].client();
    a.must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    let mut values = Vec::new();
    for i in 0..10 {
        let (s, v) = a
            .post(
                "/v1/keys",
                json!({"tenant": "acme", "name": format!("k{i}")}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let value = v["value"].as_str().unwrap().to_string();
        assert!(value.starts_with("tg_"));
        values.push(value);
    }
    let imported = "imported-legacy-key-value-0123456789".to_string();
    assert_eq!(
        a.post("/v1/keys", json!({"tenant": "acme", "value": imported}))
            .await
            .0,
        201
    );
    values.push(imported);
    // Reads never show the value or the hash.
    let (_, listed) = a.get("/v1/keys").await;
    for v in &values {
        assert!(!listed.to_string().contains(v.as_str()));
    }
    assert!(!listed.to_string().contains("\"hash\""));
    // A late joiner gets them through a snapshot.
    c.add_node(Some(0)).await;
    c.wait_for_voters(4).await;
    let dirs: Vec<_> = c.nodes.iter().map(|n| n.dir.clone()).collect();
    for i in 0..c.nodes.len() {
        c.stop(i).await;
    }

    let mut files = Vec::new();
    for d in &dirs {
        files_under(d, &mut files);
    }
    assert!(!files.is_empty());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for v in &values {
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                "key value found in {}",
                f.display()
            );
        }
    }
    let captured = logs.0.lock().unwrap().clone();
    assert!(captured.len() > 1000, "logs were captured");
    let text = String::from_utf8_lossy(&captured);
    for v in &values {
        assert!(!text.contains(v.as_str()), "key value found in the logs");
    }
}
