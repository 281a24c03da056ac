//! `tollgate get KIND [ID]` and `tollgate delete KIND ID` (contract §5.1):
//! documents as a table on a terminal, else as YAML that `apply -f -`
//! takes back unchanged; `-o json|yaml|table` chooses.

use std::io::IsTerminal;

use reqwest::Method;
use serde_json::Value;
use tollgate_control_plane::declarative::{declared, rest_collection, to_yaml};
use tollgate_model::ResourceKind;

use super::output::columns;
use super::secrets::AdminApi;

#[derive(clap::Args)]
pub struct GetArgs {
    /// apis, authorizers, tenants, usage-plans, keys or stages (singular too).
    #[arg(value_parser = kind)]
    kind: ResourceKind,
    /// One document; all of the kind without it.
    id: Option<String>,
    /// Output: table (the default on a terminal), yaml (else) or json.
    #[arg(short = 'o', long = "output", value_parser = ["table", "yaml", "json"])]
    output: Option<String>,
    #[command(flatten)]
    admin: AdminApi,
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    #[arg(value_parser = kind)]
    kind: ResourceKind,
    id: String,
    #[command(flatten)]
    admin: AdminApi,
}

/// A KIND argument, plural or singular.
fn kind(s: &str) -> Result<ResourceKind, String> {
    Ok(match s.trim_end_matches('s') {
        "api" => ResourceKind::Api,
        "authorizer" => ResourceKind::Authorizer,
        "tenant" => ResourceKind::Tenant,
        "usage-plan" => ResourceKind::UsagePlan,
        "key" => ResourceKind::ApiKey,
        "stage" => ResourceKind::Stage,
        _ => {
            return Err(format!(
                "{s:?}: one of apis, authorizers, tenants, usage-plans, keys, stages"
            ))
        }
    })
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let admin = args.admin.client()?;
    let collection = rest_collection(args.kind);
    let docs: Vec<Value> = match &args.id {
        Some(id) => vec![
            admin
                .send(Method::GET, &format!("{collection}/{id}"), None)
                .await?,
        ],
        None => {
            let list = admin.send(Method::GET, collection, None).await?;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    let output = args
        .output
        .as_deref()
        .unwrap_or(if std::io::stdout().is_terminal() {
            "table"
        } else {
            "yaml"
        });
    match output {
        "json" => {
            let docs: Vec<Value> = docs.iter().map(|d| declared(args.kind, d)).collect();
            let out = match (&args.id, docs.as_slice()) {
                (Some(_), [one]) => serde_json::to_string_pretty(one)?,
                _ => serde_json::to_string_pretty(&docs)?,
            };
            println!("{out}");
        }
        "yaml" => {
            for d in &docs {
                print!("{}", to_yaml(args.kind, d)?);
            }
        }
        _ => print!("{}", table(args.kind, &docs)),
    }
    Ok(())
}

/// The id and what tells documents of the kind apart, in columns as wide
/// as their widest cell.
fn table(kind: ResourceKind, docs: &[Value]) -> String {
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or(x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let fields: &[&str] = match kind {
        ResourceKind::Api => &["base_path", "hosts"],
        ResourceKind::Authorizer => &["type", "issuer", "endpoint"],
        ResourceKind::Tenant => &["name"],
        ResourceKind::UsagePlan => &["apis"],
        ResourceKind::ApiKey => &["tenant", "plans", "enabled"],
        ResourceKind::Stage => &["api", "deployment", "base_path"],
        _ => &[],
    };
    let mut rows = vec![std::iter::once("ID".to_string())
        .chain(fields.iter().map(|f| f.to_ascii_uppercase()))
        .collect::<Vec<_>>()];
    for d in docs {
        rows.push(
            std::iter::once(text(&d["id"]))
                .chain(fields.iter().map(|f| text(&d[*f])))
                .collect(),
        );
    }
    columns(&rows)
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let path = format!("{}/{}", rest_collection(args.kind), args.id);
    args.admin
        .client()?
        .send(Method::DELETE, &path, None)
        .await?;
    println!("{}/{} deleted", args.kind.as_str(), args.id);
    Ok(())
}
