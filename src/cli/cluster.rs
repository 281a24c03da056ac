//! `tollgate cluster status` (contract §5.1): the members, the leader and
//! term, the answering node's applied index, and the data planes it knows
//! with how far each lags behind it.

use reqwest::Method;
use serde_json::Value;

use super::output::columns;
use super::secrets::AdminApi;

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, applied index; data planes and their lag.
    Status {
        /// Output: table, or json (the admin API's answer).
        #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
        output: String,
        #[command(flatten)]
        admin: AdminApi,
    },
}

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Status { output, admin } = cmd;
    let info = admin.client()?.send(Method::GET, "cluster", None).await?;
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    print!("{}", status_text(&info));
    Ok(())
}

fn status_text(info: &Value) -> String {
    let n = |v: &Value| v.as_u64().map_or("-".to_string(), |x| x.to_string());
    let (leader, applied) = (
        info["leader_id"].as_u64(),
        info["applied_index"].as_u64().unwrap_or(0),
    );
    let mut out = format!(
        "answered by node {}; leader {}; term {}; commit {}; applied {}\n\n",
        n(&info["node_id"]),
        n(&info["leader_id"]),
        n(&info["term"]),
        n(&info["commit_index"]),
        applied
    );
    let mut members = vec![["ID", "ROLE", "ADMIN", "GRPC"].map(String::from).to_vec()];
    for m in info["members"].as_array().into_iter().flatten() {
        let role = match (m["id"].as_u64() == leader, m["voter"].as_bool()) {
            (true, _) => "leader",
            (false, Some(true)) => "follower",
            _ => "learner",
        };
        members.push(vec![
            n(&m["id"]),
            role.into(),
            m["admin_addr"].as_str().unwrap_or_default().into(),
            m["grpc_addr"].as_str().unwrap_or_default().into(),
        ]);
    }
    out.push_str(&columns(&members));
    let mut dps = vec![[
        "DATA PLANE",
        "ADDRESS",
        "REVISION",
        "LAG",
        "CONNECTED",
        "LAST SEEN",
    ]
    .map(String::from)
    .to_vec()];
    for d in info["data_planes"].as_array().into_iter().flatten() {
        let revision = d["revision"].as_u64().unwrap_or(0);
        dps.push(vec![
            d["id"].as_str().unwrap_or_default().into(),
            d["addr"].as_str().unwrap_or_default().into(),
            revision.to_string(),
            applied.saturating_sub(revision).to_string(),
            d["connected"].to_string(),
            d["last_seen"].as_str().unwrap_or_default().into(),
        ]);
    }
    out.push('\n');
    out.push_str(&columns(&dps));
    out
}
