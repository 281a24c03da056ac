//! Deployments and stages (contract §5.5).
//!
//! A deployment is a frozen copy of an API document, made by one Raft write
//! and never changed; a stage serves one at its own base path and hosts,
//! with variables laid into the places an API may refer to them (target
//! URLs, `upstream_path`, mock bodies) as `${stageVariables.NAME}`. The
//! API's own path keeps serving the draft.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::docs::{Api, Throttle};
use crate::path;
use crate::validate::{self, Result, ValidationError};
use crate::variables::{references, REFERENCE};
pub use crate::variables::{refers_to_variables, with_placeholders};

/// An API document as it was when deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub id: String,
    pub api: String,
    /// The control plane's log index of the write that made it.
    pub revision: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub document: Api,
}

/// `POST /v1/apis/{id}/deployments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    #[serde(default)]
    pub description: String,
}

/// Where and how a deployment is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub id: String,
    pub api: String,
    pub deployment: String,
    pub base_path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// The throttle for keys whose plan sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
}

/// Part of a stage's traffic served by another deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub deployment: String,
    /// 0 to 100.
    pub percent: f64,
    /// Laid over the stage's variables on the canary's side.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub sticky: Sticky,
}

/// What keeps a caller on one side of a canary.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Sticky {
    /// The API key: one key sees one side.
    Key,
    /// The client address (the TCP peer).
    Ip,
    /// Each request on its own.
    #[default]
    None,
}

impl Stage {
    /// Checks that need nothing but the document itself.
    pub fn validate(&self) -> Result {
        validate::id("id", &self.id)?;
        validate::id("api", &self.api)?;
        validate::non_empty("deployment", &self.deployment)?;
        path::base_path("base_path", &self.base_path)?;
        for (i, h) in self.hosts.iter().enumerate() {
            validate::host(&format!("hosts[{i}]"), h)?;
        }
        variable_names("variables", &self.variables)?;
        if let Some(t) = &self.throttle {
            if !(t.rate > 0.0 && t.rate.is_finite()) {
                return Err(ValidationError::new("throttle.rate", "must be above 0"));
            }
        }
        if let Some(c) = &self.canary {
            validate::non_empty("canary.deployment", &c.deployment)?;
            if !(0.0..=100.0).contains(&c.percent) {
                return Err(ValidationError::new("canary.percent", "must be 0 to 100"));
            }
            variable_names("canary.variables", &c.variables)?;
        }
        Ok(())
    }

    /// Hosts this stage answers; an empty list means any host, stored as "".
    pub fn host_keys(&self) -> Vec<&str> {
        if self.hosts.is_empty() {
            vec![""]
        } else {
            self.hosts.iter().map(String::as_str).collect()
        }
    }

    /// The variables on the canary's side: the canary's over the stage's.
    pub fn canary_variables(&self) -> BTreeMap<String, String> {
        let mut vars = self.variables.clone();
        if let Some(c) = &self.canary {
            vars.extend(c.variables.clone());
        }
        vars
    }

    /// The document a side serves: `deployed` at this stage's path and
    /// hosts, with `vars` laid in. It keeps the API's id: plans that grant
    /// the API grant its stages, and usage is the API's.
    pub fn served(&self, deployed: &Api, vars: &BTreeMap<String, String>) -> Result<Api> {
        let mut api = with_variables(deployed, vars)?;
        api.base_path = self.base_path.clone();
        api.hosts = self.hosts.clone();
        api.validate()?;
        Ok(api)
    }
}

fn variable_names(field: &str, vars: &BTreeMap<String, String>) -> Result {
    for name in vars.keys() {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(ValidationError::new(
                format!("{field}.{name}"),
                "a variable name is 1 to 64 letters, digits or _",
            ));
        }
    }
    Ok(())
}

/// The places an API may refer to stage variables, by field.
fn variable_sites(api: &Api) -> Vec<(String, &str)> {
    let mut sites = Vec::new();
    if let Some(up) = &api.upstream {
        for (i, t) in up.targets.iter().enumerate() {
            sites.push((format!("upstream.targets[{i}].url"), t.url.as_str()));
        }
    }
    for (i, r) in api.routes.iter().enumerate() {
        if let Some(p) = &r.upstream_path {
            sites.push((format!("routes[{i}].upstream_path"), p.as_str()));
        }
        if let Some(m) = &r.mock {
            sites.push((format!("routes[{i}].mock.body"), m.body.as_str()));
        }
    }
    if let Some(f) = &api.fallback {
        sites.push(("fallback.body".into(), f.body.as_str()));
    }
    sites
}

/// The stage variables `api` uses.
pub fn variables_used(api: &Api) -> BTreeSet<String> {
    variable_sites(api)
        .into_iter()
        .filter_map(|(_, text)| references(text).ok())
        .flatten()
        .map(str::to_string)
        .collect()
}

/// Check the references in an API's variable sites: well formed, and
/// naming a valid variable.
pub fn check_references(api: &Api) -> Result {
    for (field, text) in variable_sites(api) {
        for name in references(text).map_err(|m| ValidationError::new(&field, m))? {
            variable_names(&field, &BTreeMap::from([(name.to_string(), String::new())])).map_err(
                |_| ValidationError::new(&field, format!("{name:?} is not a valid variable name")),
            )?;
        }
    }
    Ok(())
}

/// `api` with every reference replaced by its variable's value; an
/// undefined variable is an error naming it.
pub fn with_variables(api: &Api, vars: &BTreeMap<String, String>) -> Result<Api> {
    let fill = |field: &str, text: &str| -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(REFERENCE) {
            out.push_str(&rest[..at]);
            let after = &rest[at + REFERENCE.len()..];
            let end = after
                .find('}')
                .ok_or_else(|| ValidationError::new(field, "a reference is not closed"))?;
            let name = &after[..end];
            let value = vars.get(name).ok_or_else(|| {
                ValidationError::new(
                    format!("variables.{name}"),
                    format!("required: {field} refers to it"),
                )
            })?;
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    };
    let mut api = api.clone();
    if let Some(up) = &mut api.upstream {
        for (i, t) in up.targets.iter_mut().enumerate() {
            t.url = fill(&format!("upstream.targets[{i}].url"), &t.url)?;
        }
    }
    for (i, r) in api.routes.iter_mut().enumerate() {
        if let Some(p) = &mut r.upstream_path {
            *p = fill(&format!("routes[{i}].upstream_path"), p)?;
        }
        if let Some(m) = &mut r.mock {
            m.body = fill(&format!("routes[{i}].mock.body"), &m.body)?;
        }
    }
    if let Some(f) = &mut api.fallback {
        f.body = fill("fallback.body", &f.body)?;
    }
    Ok(api)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api(doc: serde_json::Value) -> Api {
        serde_json::from_value(doc).unwrap()
    }

    fn stage(doc: serde_json::Value) -> Stage {
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn variables_are_found_and_laid_in() {
        let a = api(json!({"id": "orders", "base_path": "/orders",
            "upstream": {"targets": [{"url": "${stageVariables.backend}"}]},
            "routes": [{"id": "r", "path": "/x", "upstream_path": "/${stageVariables.version}/x"},
                       {"id": "m", "path": "/m", "mock": {"body": "env=${stageVariables.env}"}}]}));
        assert_eq!(
            variables_used(&a),
            BTreeSet::from(["backend".into(), "version".into(), "env".into()])
        );
        let vars = BTreeMap::from([
            ("backend".to_string(), "http://10.0.0.7:8000".to_string()),
            ("version".to_string(), "v2".to_string()),
            ("env".to_string(), "prod".to_string()),
        ]);
        let s = stage(
            json!({"id": "orders-prod", "api": "orders", "deployment": "dep-1",
                             "base_path": "/prod/orders"}),
        );
        let served = s.served(&a, &vars).unwrap();
        assert_eq!(served.id, "orders", "the API's id");
        assert_eq!(served.base_path, "/prod/orders");
        assert_eq!(
            served.upstream.unwrap().targets[0].url,
            "http://10.0.0.7:8000"
        );
        assert_eq!(served.routes[0].upstream_path.as_deref(), Some("/v2/x"));
        assert_eq!(served.routes[1].mock.as_ref().unwrap().body, "env=prod");
        // An undefined variable is named.
        let e = s.served(&a, &BTreeMap::new()).unwrap_err();
        assert!(e.field.starts_with("variables."), "{e}");
        // A value that makes the document invalid is refused too.
        let mut bad = vars.clone();
        bad.insert("backend".into(), "ftp://x".into());
        let e = s.served(&a, &bad).unwrap_err();
        assert_eq!(e.field, "upstream.targets[0].url", "{e}");
    }

    #[test]
    fn references_must_be_closed_and_named_well() {
        let a = api(json!({"id": "o", "base_path": "/o",
            "routes": [{"id": "m", "path": "/m", "mock": {"body": "${stageVariables.env"}}]}));
        assert_eq!(
            check_references(&a).unwrap_err().field,
            "routes[0].mock.body"
        );
        let a = api(json!({"id": "o", "base_path": "/o",
            "routes": [{"id": "m", "path": "/m", "mock": {"body": "${stageVariables.no-dash}"}}]}));
        assert_eq!(
            check_references(&a).unwrap_err().field,
            "routes[0].mock.body"
        );
    }

    #[test]
    fn bad_stages_name_the_field() {
        let base = json!({"id": "s", "api": "orders", "deployment": "dep-1", "base_path": "/s"});
        for (patch, field) in [
            (
                json!({"canary": {"deployment": "dep-2", "percent": 101}}),
                "canary.percent",
            ),
            (
                json!({"canary": {"deployment": "dep-2", "percent": -1}}),
                "canary.percent",
            ),
            (json!({"base_path": "nope"}), "base_path"),
            (json!({"variables": {"a-b": "x"}}), "variables.a-b"),
            (json!({"deployment": ""}), "deployment"),
        ] {
            let mut doc = base.clone();
            doc.as_object_mut()
                .unwrap()
                .extend(patch.as_object().unwrap().clone());
            assert_eq!(stage(doc).validate().unwrap_err().field, field);
        }
        // An unknown sticky mode does not parse.
        let mut doc = base.clone();
        doc["canary"] = json!({"deployment": "d", "percent": 5, "sticky": "cookie"});
        assert!(serde_json::from_value::<Stage>(doc).is_err());
    }
}
