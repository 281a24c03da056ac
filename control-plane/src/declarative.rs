//! Declarative files for `tollgate apply` and `tollgate dev --config`:
//! several YAML (or JSON) documents, each with a `kind:` field, applied in
//! dependency order through the admin REST API.

use tollgate_model::ResourceKind;

#[derive(Debug, Clone)]
pub struct Document {
    pub kind: ResourceKind,
    pub id: String,
    pub body: serde_json::Value,
}

/// Parse every document in `text`, sorted so that what others refer to
/// comes first (tenants and authorizers, then APIs, then plans).
pub fn parse(text: &str) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value: serde_json::Value = serde::Deserialize::deserialize(de)
            .map_err(|e| anyhow::anyhow!("document {}: {e}", i + 1))?;
        if value.is_null() {
            continue;
        }
        let kind_name = value.get("kind").and_then(|k| k.as_str()).ok_or_else(|| {
            anyhow::anyhow!(
                "document {}: kind: required (Api, Authorizer, Tenant or UsagePlan)",
                i + 1
            )
        })?;
        let kind = ResourceKind::from_doc_kind(kind_name).ok_or_else(|| {
            anyhow::anyhow!("document {}: kind: unknown kind {kind_name:?}", i + 1)
        })?;
        let id = value
            .get("id")
            .and_then(|k| k.as_str())
            .ok_or_else(|| anyhow::anyhow!("document {}: id: required", i + 1))?
            .to_string();
        docs.push(Document {
            kind,
            id,
            body: value,
        });
    }
    docs.sort_by_key(|d| match d.kind {
        ResourceKind::Tenant | ResourceKind::Authorizer => 0,
        ResourceKind::Api => 1,
        // Key records name tenants and plans.
        ResourceKind::ApiKey => 3,
        _ => 2,
    });
    Ok(docs)
}

pub fn rest_collection(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Api => "apis",
        ResourceKind::Authorizer => "authorizers",
        ResourceKind::Tenant => "tenants",
        ResourceKind::UsagePlan => "usage-plans",
        ResourceKind::ApiKey => "keys",
        ResourceKind::Settings => "settings",
        ResourceKind::CacheFlush => "cache-flushes",
        ResourceKind::Deployment => "deployments",
        ResourceKind::Stage => "stages",
    }
}

/// What applying a file would do to one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Unchanged,
    /// `--prune`: of a kind the file holds, and not named in it.
    Delete,
}

/// One document's planned change: what the cluster holds and what the
/// file wants, both as the server would store them (defaults filled in,
/// `kind:` and revision left out), so that they compare and diff alike.
#[derive(Debug, Clone)]
pub struct Planned {
    pub kind: ResourceKind,
    pub id: String,
    pub action: Action,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    /// The file's document as written, for the PUT.
    body: Option<serde_json::Value>,
}

fn strip(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("kind");
        o.remove("revision");
    }
    v
}

fn document_url(server: &str, kind: ResourceKind, id: &str) -> String {
    format!(
        "{}/v1/{}/{id}",
        server.trim_end_matches('/'),
        rest_collection(kind)
    )
}

/// The cluster's copy of (kind, id), if it has one.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    admin_token: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let res = client.get(url).bearer_auth(admin_token).send().await?;
    match res.status().as_u16() {
        200 => Ok(Some(strip(res.json().await?))),
        404 => Ok(None),
        code => anyhow::bail!("GET {url} answered {code}: {}", res.text().await?),
    }
}

/// `doc` as the admin API shows it: a key record without its hash (reads
/// never show one), so a dumped key compares equal to the key it came
/// from. A key whose hash alone changed is not a change (a new value
/// is a new key, with a new id).
fn shown(kind: ResourceKind, doc: &serde_json::Value) -> serde_json::Value {
    let mut doc = doc.clone();
    if let (ResourceKind::ApiKey, Some(o)) = (kind, doc.as_object_mut()) {
        o.remove("hash");
    }
    doc
}

/// Every document of `kind` the cluster holds, as stored.
async fn list(
    client: &reqwest::Client,
    server: &str,
    admin_token: &str,
    kind: ResourceKind,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let url = format!(
        "{}/v1/{}",
        server.trim_end_matches('/'),
        rest_collection(kind)
    );
    let res = client.get(&url).bearer_auth(admin_token).send().await?;
    anyhow::ensure!(res.status().is_success(), "GET {url}: {}", res.status());
    let list: serde_json::Value = res.json().await?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .cloned()
        .map(strip)
        .collect())
}

/// What applying `docs` would change, in the order it would change it:
/// the file's documents (creates and updates, dependencies first), then,
/// with `prune`, deletions of documents of the file's kinds that it does
/// not name (never keys), dependents first. Nothing is written.
pub async fn plan(
    server: &str,
    admin_token: &str,
    docs: &[Document],
    prune: bool,
) -> anyhow::Result<Vec<Planned>> {
    let client = reqwest::Client::new();
    let mut planned = Vec::new();
    for d in docs {
        let before = fetch(&client, &document_url(server, d.kind, &d.id), admin_token).await?;
        let desired = strip(d.body.clone());
        // As the server would store it; a document it would refuse is
        // compared as written (the PUT will say what is wrong).
        let after = crate::service::parse_document(d.kind, &d.id, desired.to_string().as_bytes())
            .map_or_else(|_| desired.clone(), |r| r.doc_json());
        let action = match &before {
            None => Action::Create,
            Some(b) if *b == shown(d.kind, &after) => Action::Unchanged,
            Some(_) => Action::Update,
        };
        planned.push(Planned {
            kind: d.kind,
            id: d.id.clone(),
            action,
            before,
            after: Some(after),
            body: Some(desired),
        });
    }
    if prune {
        planned.extend(prunable(&client, server, admin_token, docs).await?);
    }
    Ok(planned)
}

/// Documents of the file's kinds the file does not name, dependents
/// first (stages, plans, APIs, then authorizers and tenants).
async fn prunable(
    client: &reqwest::Client,
    server: &str,
    admin_token: &str,
    docs: &[Document],
) -> anyhow::Result<Vec<Planned>> {
    let mut out = Vec::new();
    for kind in DECLARATIVE_KINDS.iter().rev() {
        if !docs.iter().any(|d| d.kind == *kind) {
            continue;
        }
        for existing in list(client, server, admin_token, *kind).await? {
            let id = existing["id"].as_str().unwrap_or_default().to_string();
            if !docs.iter().any(|d| d.kind == *kind && d.id == id) {
                out.push(Planned {
                    kind: *kind,
                    id,
                    action: Action::Delete,
                    before: Some(existing),
                    after: None,
                    body: None,
                });
            }
        }
    }
    Ok(out)
}

/// Carry out a plan through the admin API; one line per document, e.g.
/// `api/orders configured (revision 12)`. Stops at the first refusal.
pub async fn execute(
    server: &str,
    admin_token: &str,
    planned: &[Planned],
) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::new();
    let mut lines = Vec::new();
    for p in planned {
        let name = format!("{}/{}", p.kind.as_str(), p.id);
        let url = document_url(server, p.kind, &p.id);
        let (res, word) = match (p.action, &p.body) {
            (Action::Unchanged, _) => {
                lines.push(format!("{name} unchanged"));
                continue;
            }
            (Action::Delete, _) => (client.delete(&url), "deleted"),
            (Action::Create, Some(b)) => (client.put(&url).json(b), "created"),
            (_, b) => (client.put(&url).json(b), "configured"),
        };
        let res = res.bearer_auth(admin_token).send().await?;
        if !res.status().is_success() {
            anyhow::bail!("{} {}: {}", p.kind.as_str(), p.id, res.text().await?);
        }
        let v: serde_json::Value = res.json().await.unwrap_or_default();
        lines.push(format!("{name} {word} (revision {})", v["revision"]));
    }
    Ok(lines)
}

/// Apply every document through the admin API at `server`, idempotently.
/// Returns one line per document, e.g. `api/orders configured`.
pub async fn apply(
    server: &str,
    admin_token: &str,
    docs: &[Document],
) -> anyhow::Result<Vec<String>> {
    execute(
        server,
        admin_token,
        &plan(server, admin_token, docs, false).await?,
    )
    .await
}

/// The kinds a declarative file holds, in the order a dump lists them
/// (what others refer to first).
pub const DECLARATIVE_KINDS: [ResourceKind; 5] = [
    ResourceKind::Tenant,
    ResourceKind::Authorizer,
    ResourceKind::Api,
    ResourceKind::UsagePlan,
    ResourceKind::Stage,
];

/// Every declarative document the cluster holds, and every key record
/// (hash, prefix, tenant, plans, state; never a value), as YAML documents
/// that `apply` takes back unchanged; keys restore into a cluster with
/// the same key-hash secret. Deployments are made by `deploy`, not
/// written, so a dumped stage names deployments that must exist where it
/// is applied.
pub async fn dump(server: &str, admin_token: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    let mut out = String::new();
    for kind in DECLARATIVE_KINDS {
        for item in list(&client, server, admin_token, kind).await? {
            out.push_str(&to_yaml(kind, &item)?);
        }
    }
    for record in key_records(&client, server, admin_token).await? {
        out.push_str(&to_yaml(ResourceKind::ApiKey, &record)?);
    }
    Ok(out)
}

/// Every key record with its hash (never a value): reads never show a
/// hash, the backup does, so the records come from `GET /v1/snapshot`.
async fn key_records(
    client: &reqwest::Client,
    server: &str,
    admin_token: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let url = format!("{}/v1/snapshot", server.trim_end_matches('/'));
    let res = client.get(&url).bearer_auth(admin_token).send().await?;
    anyhow::ensure!(res.status().is_success(), "GET {url}: {}", res.status());
    let backup: crate::backup::Backup = res.json().await?;
    Ok(backup
        .docs
        .iter()
        .filter(|r| r.kind() == ResourceKind::ApiKey)
        .map(|r| r.doc_json())
        .collect())
}

/// A document as the admin API answers it, as one YAML document `apply`
/// takes: `kind:` first, the revision dropped.
pub fn to_yaml(kind: ResourceKind, doc: &serde_json::Value) -> anyhow::Result<String> {
    Ok(format!(
        "---\n{}",
        serde_norway::to_string(&declared(kind, doc))?
    ))
}

/// `doc` with its `kind:` and without its revision.
pub fn declared(kind: ResourceKind, doc: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), kind.doc_kind().into());
    if let serde_json::Value::Object(fields) = strip(doc.clone()) {
        out.extend(fields);
    }
    serde_json::Value::Object(out)
}
