//! The config a data plane holds: every resource at one revision, and the
//! deltas that move it forward. `im` maps share structure, so applying a
//! delta costs in proportion to the delta, and the previous snapshot stays
//! valid for readers until they drop it.

use serde::{Deserialize, Serialize};

use crate::docs::{Api, ApiKeyRecord, Authorizer, Settings, Tenant, UsagePlan};
use crate::stages::{Deployment, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Api,
    Authorizer,
    Tenant,
    UsagePlan,
    ApiKey,
    Settings,
    /// An API's response-cache flush epoch (`DELETE /v1/apis/{id}/cache`).
    /// Not a document operators write: the control plane keeps it, and data
    /// planes flush the API's cached responses when it changes.
    CacheFlush,
    /// A frozen copy of an API document (`POST /v1/apis/{id}/deployments`).
    Deployment,
    Stage,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 9] = [
        ResourceKind::Api,
        ResourceKind::Authorizer,
        ResourceKind::Tenant,
        ResourceKind::UsagePlan,
        ResourceKind::ApiKey,
        ResourceKind::Settings,
        ResourceKind::CacheFlush,
        ResourceKind::Deployment,
        ResourceKind::Stage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Api => "api",
            ResourceKind::Authorizer => "authorizer",
            ResourceKind::Tenant => "tenant",
            ResourceKind::UsagePlan => "usage_plan",
            ResourceKind::ApiKey => "api_key",
            ResourceKind::Settings => "settings",
            ResourceKind::CacheFlush => "cache_flush",
            ResourceKind::Deployment => "deployment",
            ResourceKind::Stage => "stage",
        }
    }

    /// The `kind:` names of declarative files.
    pub fn from_doc_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "Api" => ResourceKind::Api,
            "Authorizer" => ResourceKind::Authorizer,
            "Tenant" => ResourceKind::Tenant,
            "UsagePlan" => ResourceKind::UsagePlan,
            "Stage" => ResourceKind::Stage,
            "ApiKey" => ResourceKind::ApiKey,
            _ => return None,
        })
    }

    pub fn doc_kind(self) -> &'static str {
        match self {
            ResourceKind::Api => "Api",
            ResourceKind::Authorizer => "Authorizer",
            ResourceKind::Tenant => "Tenant",
            ResourceKind::UsagePlan => "UsagePlan",
            ResourceKind::ApiKey => "ApiKey",
            ResourceKind::Settings => "Settings",
            ResourceKind::CacheFlush => "CacheFlush",
            ResourceKind::Deployment => "Deployment",
            ResourceKind::Stage => "Stage",
        }
    }
}

// Most resources are APIs, and every one is moved into the replicated
// state once; boxing `Api` would add an allocation and an indirection
// for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "doc", rename_all = "snake_case")]
pub enum Resource {
    Api(Api),
    Authorizer(Authorizer),
    Tenant(Tenant),
    UsagePlan(UsagePlan),
    ApiKey(ApiKeyRecord),
    Settings(Settings),
    CacheFlush(CacheFlush),
    Deployment(Deployment),
    Stage(Stage),
}

/// The flush epoch of one API's response cache. `epoch` is the revision of
/// the last `DELETE /v1/apis/{id}/cache`; a data plane keys its cached
/// responses by it, so a new epoch (seen live or on reconnect) leaves every
/// older entry of the API unreachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFlush {
    pub api: String,
    pub epoch: u64,
}

impl Resource {
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::Api(_) => ResourceKind::Api,
            Resource::Authorizer(_) => ResourceKind::Authorizer,
            Resource::Tenant(_) => ResourceKind::Tenant,
            Resource::UsagePlan(_) => ResourceKind::UsagePlan,
            Resource::ApiKey(_) => ResourceKind::ApiKey,
            Resource::Settings(_) => ResourceKind::Settings,
            Resource::CacheFlush(_) => ResourceKind::CacheFlush,
            Resource::Deployment(_) => ResourceKind::Deployment,
            Resource::Stage(_) => ResourceKind::Stage,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Resource::Api(a) => &a.id,
            Resource::Authorizer(a) => &a.id,
            Resource::Tenant(t) => &t.id,
            Resource::UsagePlan(p) => &p.id,
            Resource::ApiKey(k) => &k.id,
            Resource::Settings(_) => "cluster",
            Resource::CacheFlush(f) => &f.api,
            Resource::Deployment(d) => &d.id,
            Resource::Stage(s) => &s.id,
        }
    }

    pub fn key(&self) -> ResourceRef {
        (self.kind(), self.id().to_string())
    }

    /// The document as JSON without the enum wrapper.
    pub fn doc_json(&self) -> serde_json::Value {
        let v = match self {
            Resource::Api(a) => serde_json::to_value(a),
            Resource::Authorizer(a) => serde_json::to_value(a),
            Resource::Tenant(t) => serde_json::to_value(t),
            Resource::UsagePlan(p) => serde_json::to_value(p),
            Resource::ApiKey(k) => serde_json::to_value(k),
            Resource::Settings(s) => serde_json::to_value(s),
            Resource::CacheFlush(f) => serde_json::to_value(f),
            Resource::Deployment(d) => serde_json::to_value(d),
            Resource::Stage(s) => serde_json::to_value(s),
        };
        v.expect("documents serialize")
    }

    /// The checks a document must pass on its own, whoever receives it: the
    /// admin API before a write, a data plane before it applies a config.
    pub fn validate(&self) -> crate::validate::Result {
        match self {
            Resource::Api(a) => a
                .validate()
                .and_then(|()| crate::stages::check_references(a)),
            Resource::Authorizer(a) => a.validate(),
            Resource::Tenant(t) => t.validate(),
            Resource::UsagePlan(p) => p.validate(),
            // Records the cluster made, or restored: the admin API checks
            // a record it is given (`ApiKeyRecord::validate`); a data plane
            // does not refuse a config for an older record's form.
            Resource::ApiKey(_) | Resource::Settings(_) => Ok(()),
            Resource::CacheFlush(f) => crate::validate::id("api", &f.api),
            Resource::Deployment(d) => d.document.validate().map_err(|e| e.within("document")),
            Resource::Stage(s) => s.validate(),
        }
    }

    /// Parse a bare document of a known kind.
    pub fn from_doc_json(kind: ResourceKind, json: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            ResourceKind::Api => Resource::Api(serde_json::from_slice(json)?),
            ResourceKind::Authorizer => Resource::Authorizer(serde_json::from_slice(json)?),
            ResourceKind::Tenant => Resource::Tenant(serde_json::from_slice(json)?),
            ResourceKind::UsagePlan => Resource::UsagePlan(serde_json::from_slice(json)?),
            ResourceKind::ApiKey => Resource::ApiKey(serde_json::from_slice(json)?),
            ResourceKind::Settings => Resource::Settings(serde_json::from_slice(json)?),
            ResourceKind::CacheFlush => Resource::CacheFlush(serde_json::from_slice(json)?),
            ResourceKind::Deployment => Resource::Deployment(serde_json::from_slice(json)?),
            ResourceKind::Stage => Resource::Stage(serde_json::from_slice(json)?),
        })
    }
}

pub type ResourceRef = (ResourceKind, String);

/// A change from `base_revision` to `revision`, or a whole config if `full`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigDelta {
    pub revision: u64,
    pub full: bool,
    pub base_revision: u64,
    pub upserts: Vec<Resource>,
    pub removals: Vec<ResourceRef>,
}

/// Every resource a data plane holds, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigSet {
    pub revision: u64,
    pub resources: im::OrdMap<ResourceRef, Resource>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("revision {got} is older than the held revision {held}")]
    Stale { held: u64, got: u64 },
    #[error("delta is based on revision {base}, but revision {held} is held")]
    BaseMismatch { held: u64, base: u64 },
}

impl ConfigSet {
    /// The config after `delta`, leaving `self` untouched. Refuses to go
    /// backwards or to apply a delta meant for another base.
    pub fn apply(&self, delta: &ConfigDelta) -> Result<ConfigSet, DeltaError> {
        if delta.revision < self.revision {
            return Err(DeltaError::Stale {
                held: self.revision,
                got: delta.revision,
            });
        }
        let mut resources = if delta.full {
            im::OrdMap::new()
        } else {
            if delta.base_revision != self.revision {
                return Err(DeltaError::BaseMismatch {
                    held: self.revision,
                    base: delta.base_revision,
                });
            }
            self.resources.clone()
        };
        for r in &delta.removals {
            resources.remove(r);
        }
        for r in &delta.upserts {
            resources.insert(r.key(), r.clone());
        }
        Ok(ConfigSet {
            revision: delta.revision,
            resources,
        })
    }

    pub fn get(&self, kind: ResourceKind, id: &str) -> Option<&Resource> {
        self.resources.get(&(kind, id.to_string()))
    }

    pub fn of_kind(&self, kind: ResourceKind) -> impl Iterator<Item = &Resource> {
        self.resources
            .range((kind, String::new())..)
            .take_while(move |((k, _), _)| *k == kind)
            .map(|(_, r)| r)
    }

    pub fn count(&self, kind: ResourceKind) -> usize {
        self.of_kind(kind).count()
    }

    pub fn settings(&self) -> Option<&Settings> {
        match self.get(ResourceKind::Settings, "cluster") {
            Some(Resource::Settings(s)) => Some(s),
            _ => None,
        }
    }
}
