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

/// What applying one document did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

fn strip(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("kind");
        o.remove("revision");
    }
    v
}

/// Apply every document through the admin API at `server`, idempotently.
/// Returns one line per document, e.g. `api/orders configured`.
pub async fn apply(
    server: &str,
    admin_token: &str,
    docs: &[Document],
) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::new();
    let mut lines = Vec::new();
    for d in docs {
        let url = format!(
            "{}/v1/{}/{}",
            server.trim_end_matches('/'),
            rest_collection(d.kind),
            d.id
        );
        let current = client.get(&url).bearer_auth(admin_token).send().await?;
        let existing = match current.status().as_u16() {
            200 => Some(current.json::<serde_json::Value>().await?),
            404 => None,
            code => anyhow::bail!(
                "{} {}: GET answered {code}: {}",
                d.kind.as_str(),
                d.id,
                current.text().await?
            ),
        };
        let outcome = if existing.is_none() {
            Outcome::Created
        } else {
            Outcome::Configured
        };
        let desired = strip(d.body.clone());
        // Compare against what the server would store: normalise through a
        // PUT-free round trip by comparing after parsing both as documents.
        let unchanged = existing.as_ref().is_some_and(|e| {
            let parsed =
                crate::service::parse_document(d.kind, &d.id, desired.to_string().as_bytes());
            matches!(parsed, Ok(r) if r.doc_json() == strip(e.clone()))
        });
        if unchanged {
            lines.push(format!("{}/{} unchanged", d.kind.as_str(), d.id));
            continue;
        }
        let resp = client
            .put(&url)
            .bearer_auth(admin_token)
            .json(&desired)
            .send()
            .await?;
        if !resp.status().is_success() {
            anyhow::bail!("{} {}: {}", d.kind.as_str(), d.id, resp.text().await?);
        }
        let v: serde_json::Value = resp.json().await?;
        let word = if outcome == Outcome::Created {
            "created"
        } else {
            "configured"
        };
        lines.push(format!(
            "{}/{} {word} (revision {})",
            d.kind.as_str(),
            d.id,
            v["revision"]
        ));
    }
    Ok(lines)
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

/// Every declarative document the cluster holds, as YAML documents that
/// `apply` takes back unchanged. Deployments are made by `deploy`, not
/// written, so a dumped stage names deployments that must exist where it
/// is applied; keys are not documents (their records are the API's).
pub async fn dump(server: &str, admin_token: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    let mut out = String::new();
    for kind in DECLARATIVE_KINDS {
        let url = format!(
            "{}/v1/{}",
            server.trim_end_matches('/'),
            rest_collection(kind)
        );
        let res = client.get(&url).bearer_auth(admin_token).send().await?;
        anyhow::ensure!(res.status().is_success(), "GET {url}: {}", res.status());
        let list: serde_json::Value = res.json().await?;
        for item in list["items"].as_array().into_iter().flatten() {
            out.push_str(&to_yaml(kind, item)?);
        }
    }
    Ok(out)
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
