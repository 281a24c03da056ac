//! The documents of the admin API (contract §2). Serde names match the
//! contract's YAML/JSON exactly; unknown fields are rejected so a typo is a
//! 400, not a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::path::{self, PathTemplate};
use crate::validate::{self, Result, ValidationError};

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

// ---------------------------------------------------------------- Api

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub id: String,
    pub base_path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    #[serde(default)]
    pub auth: AuthPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// CIDR allow list; empty allows every address not denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_deny: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Forward header names that contain `_` (dropped by default, as nginx
    /// does: CGI, WSGI and PHP upstreams read `_` as `-`). Names that read
    /// as framing or as the gateway's own fields are dropped either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_underscore_headers: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub targets: Vec<Target>,
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    #[serde(default = "Upstream::default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "Upstream::default_retries")]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Consecutive failures that open the circuit breaker for a target.
    #[serde(default = "Upstream::default_breaker_failures")]
    pub circuit_breaker_failures: u32,
    /// An upstream that sends no bytes of a started response body for this
    /// long is cut off, and the client's connection closed.
    #[serde(default = "Upstream::default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

impl Upstream {
    fn default_timeout_ms() -> u64 {
        29_000
    }
    fn default_retries() -> u32 {
        1
    }
    fn default_breaker_failures() -> u32 {
        5
    }
    fn default_idle_timeout_ms() -> u64 {
        60_000
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub url: String,
    #[serde(default = "Target::default_weight")]
    pub weight: u32,
}

impl Target {
    fn default_weight() -> u32 {
        1
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "HealthCheck::default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "HealthCheck::default_threshold")]
    pub unhealthy_threshold: u32,
    #[serde(default = "HealthCheck::default_threshold")]
    pub healthy_threshold: u32,
}

impl HealthCheck {
    fn default_interval_ms() -> u64 {
        5_000
    }
    fn default_threshold() -> u32 {
        2
    }
}

/// Who may call a route. `{}` is open; `api_key` and `authorizer` may be
/// combined, and then both must pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicy {
    #[serde(default, skip_serializing_if = "is_default")]
    pub api_key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub allow_credentials: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub id: String,
    /// Empty means every method.
    #[serde(default)]
    pub methods: Vec<String>,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<Mock>,
    /// Invoke a function (the Lambda Invoke API) instead of an upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<Function>,
}

/// A function integration (contract §5.4): the gateway POSTs AWS's
/// proxy-integration event to `{url}/2015-03-31/functions/{name}/invocations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub name: String,
    /// `"1.0"` (REST-style event) or `"2.0"` (HTTP-API-style event).
    #[serde(default = "Function::default_payload")]
    pub payload: String,
    #[serde(default = "Function::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Sign the Invoke call (AWS Signature Version 4), for real AWS Lambda.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigv4: Option<SigV4>,
}

/// Where the data plane finds the credentials to sign with: the names of
/// environment variables (never the secrets themselves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigV4 {
    pub region: String,
    pub access_key_id_env: String,
    pub secret_access_key_env: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_env: Option<String>,
}

impl SigV4 {
    fn validate(&self) -> Result {
        let region_ok = !self.region.is_empty()
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(ValidationError::new("region", "must be an AWS region such as us-east-1"));
        }
        let envs = [
            ("access_key_id_env", Some(&self.access_key_id_env)),
            ("secret_access_key_env", Some(&self.secret_access_key_env)),
            ("session_token_env", self.session_token_env.as_ref()),
        ];
        for (field, name) in envs {
            let Some(name) = name else { continue };
            let ok = name.bytes().next().is_some_and(|b| !b.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(ValidationError::new(
                    field,
                    "must name an environment variable ([A-Za-z_][A-Za-z0-9_]*)",
                ));
            }
        }
        Ok(())
    }
}

impl Function {
    fn default_payload() -> String {
        "2.0".to_string()
    }
    fn default_timeout_ms() -> u64 {
        29_000
    }

    fn validate(&self) -> Result {
        if self.url.is_empty() {
            return Err(ValidationError::new("url", "required"));
        }
        validate::upstream_url("url", &self.url)?;
        if self.name.is_empty() {
            return Err(ValidationError::new("name", "required"));
        }
        let name_ok = self.name.len() <= 170
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b));
        if !name_ok {
            return Err(ValidationError::new(
                "name",
                "must be 1 to 170 of [A-Za-z0-9-_:.]",
            ));
        }
        if self.payload != "1.0" && self.payload != "2.0" {
            return Err(ValidationError::new(
                "payload",
                format!("{:?} must be \"1.0\" or \"2.0\"", self.payload),
            ));
        }
        if !(1..=900_000).contains(&self.timeout_ms) {
            return Err(ValidationError::new("timeout_ms", "must be 1 to 900000"));
        }
        if let Some(sig) = &self.sigv4 {
            sig.validate().map_err(|e| e.within("sigv4"))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default = "CacheConfig::default_ttl_s")]
    pub ttl_s: u64,
    #[serde(default)]
    pub key: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub shared: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub allow_client_invalidation: bool,
}

impl CacheConfig {
    pub const MAX_TTL_S: u64 = 3600;
    fn default_ttl_s() -> u64 {
        300
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mock {
    #[serde(default = "Mock::default_status")]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Mock {
    fn default_status() -> u16 {
        200
    }
}

impl Api {
    /// Checks that need nothing but the document itself.
    pub fn validate(&self) -> Result {
        validate::id("id", &self.id)?;
        path::base_path("base_path", &self.base_path)?;
        for (i, h) in self.hosts.iter().enumerate() {
            validate::host(&format!("hosts[{i}]"), h)?;
        }
        if let Some(up) = &self.upstream {
            up.validate().map_err(|e| e.within("upstream"))?;
        }
        self.auth.validate().map_err(|e| e.within("auth"))?;
        if let Some(cors) = &self.cors {
            cors.validate().map_err(|e| e.within("cors"))?;
        }
        for (list, name) in [(&self.ip_allow, "ip_allow"), (&self.ip_deny, "ip_deny")] {
            for (i, c) in list.iter().enumerate() {
                validate_cidr(&format!("{name}[{i}]"), c)?;
            }
        }
        let mut seen = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let within = format!("routes[{i}]");
            r.validate().map_err(|e| e.within(&within))?;
            if seen.contains(&&r.id) {
                return Err(ValidationError::new(
                    format!("{within}.id"),
                    format!("duplicate route id {:?}", r.id),
                ));
            }
            seen.push(&r.id);
            if r.mock.is_none() && r.function.is_none() && self.upstream.is_none() {
                return Err(ValidationError::new(
                    "upstream",
                    format!(
                        "required: route {:?} has no mock or function, so the API needs an upstream",
                        r.id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The authorizers this API refers to, for reference checks.
    pub fn authorizers(&self) -> impl Iterator<Item = (String, &str)> {
        let api = self
            .auth
            .authorizer
            .as_deref()
            .map(|a| ("auth.authorizer".to_string(), a));
        let routes = self.routes.iter().enumerate().filter_map(|(i, r)| {
            r.auth
                .as_ref()
                .and_then(|a| a.authorizer.as_deref())
                .map(|a| (format!("routes[{i}].auth.authorizer"), a))
        });
        api.into_iter().chain(routes)
    }

    /// Hosts this API answers; an empty list means any host, stored as "".
    pub fn host_keys(&self) -> Vec<&str> {
        if self.hosts.is_empty() {
            vec![""]
        } else {
            self.hosts.iter().map(String::as_str).collect()
        }
    }
}

fn validate_cidr(field: &str, value: &str) -> Result {
    let (addr, len) = value.split_once('/').unwrap_or((value, ""));
    let ip: std::net::IpAddr = addr.parse().map_err(|_| {
        ValidationError::new(field, format!("{value:?} is not an IP address or CIDR"))
    })?;
    if !len.is_empty() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => {
                return Err(ValidationError::new(
                    field,
                    format!("{value:?} has a bad prefix length"),
                ))
            }
        }
    }
    Ok(())
}

impl Upstream {
    fn validate(&self) -> Result {
        if self.targets.is_empty() {
            return Err(ValidationError::new(
                "targets",
                "at least one target is required",
            ));
        }
        for (i, t) in self.targets.iter().enumerate() {
            validate::upstream_url(&format!("targets[{i}].url"), &t.url)?;
            if t.weight == 0 || t.weight > 1000 {
                return Err(ValidationError::new(
                    format!("targets[{i}].weight"),
                    "must be 1 to 1000",
                ));
            }
        }
        if self.timeout_ms == 0 || self.timeout_ms > 300_000 {
            return Err(ValidationError::new("timeout_ms", "must be 1 to 300000"));
        }
        if self.idle_timeout_ms == 0 || self.idle_timeout_ms > 3_600_000 {
            return Err(ValidationError::new(
                "idle_timeout_ms",
                "must be 1 to 3600000",
            ));
        }
        if self.retries > 5 {
            return Err(ValidationError::new("retries", "must be 0 to 5"));
        }
        if let Some(hc) = &self.health_check {
            PathTemplate::parse("health_check.path", &hc.path)?;
            if hc.interval_ms < 100 {
                return Err(ValidationError::new(
                    "health_check.interval_ms",
                    "must be at least 100",
                ));
            }
        }
        Ok(())
    }
}

impl AuthPolicy {
    pub fn is_open(&self) -> bool {
        !self.api_key && self.authorizer.is_none()
    }

    fn validate(&self) -> Result {
        if let Some(a) = &self.authorizer {
            validate::id("authorizer", a)?;
        }
        if !self.scopes.is_empty() && self.authorizer.is_none() {
            return Err(ValidationError::new("scopes", "scopes need an authorizer"));
        }
        Ok(())
    }
}

impl Cors {
    fn validate(&self) -> Result {
        for (i, o) in self.allow_origins.iter().enumerate() {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(ValidationError::new(
                    format!("allow_origins[{i}]"),
                    format!("{o:?} must be \"*\" or an origin such as https://app.example"),
                ));
            }
        }
        for (i, m) in self.allow_methods.iter().enumerate() {
            validate::method(&format!("allow_methods[{i}]"), m)?;
        }
        if self.allow_credentials && self.allow_origins.iter().any(|o| o == "*") {
            return Err(ValidationError::new(
                "allow_credentials",
                "credentials need explicit origins, not \"*\"",
            ));
        }
        Ok(())
    }
}

impl Route {
    /// The auth policy that applies to this route of `api`: its own, else
    /// the API's.
    pub fn auth_policy<'a>(&'a self, api: &'a Api) -> &'a AuthPolicy {
        self.auth.as_ref().unwrap_or(&api.auth)
    }

    fn validate(&self) -> Result {
        validate::id("id", &self.id)?;
        for (i, m) in self.methods.iter().enumerate() {
            validate::method(&format!("methods[{i}]"), m)?;
        }
        let template = PathTemplate::parse("path", &self.path)?;
        if let Some(up) = &self.upstream_path {
            let rewrite = PathTemplate::parse("upstream_path", up)?;
            for name in rewrite.param_names() {
                if !template.param_names().any(|n| n == name) {
                    return Err(ValidationError::new(
                        "upstream_path",
                        format!("{{{name}}} is not a parameter of path {:?}", self.path),
                    ));
                }
            }
        }
        if let Some(c) = &self.cache {
            if c.ttl_s > CacheConfig::MAX_TTL_S {
                return Err(ValidationError::new("cache.ttl_s", "must be at most 3600"));
            }
            for (i, k) in c.key.iter().enumerate() {
                let ok = k.split_once(':').is_some_and(|(src, name)| {
                    matches!(src, "query" | "header") && !name.is_empty()
                });
                if !ok {
                    return Err(ValidationError::new(
                        format!("cache.key[{i}]"),
                        format!("{k:?} must be query:NAME or header:NAME"),
                    ));
                }
            }
        }
        if let Some(a) = &self.auth {
            a.validate().map_err(|e| e.within("auth"))?;
        }
        if let Some(m) = &self.mock {
            if !(100..=599).contains(&m.status) {
                return Err(ValidationError::new("mock.status", "must be 100 to 599"));
            }
        }
        if let Some(f) = &self.function {
            f.validate().map_err(|e| e.within("function"))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- Authorizer

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorizer {
    pub id: String,
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// An inline JWKS document: `{keys: [...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Shared secret for HS256/384/512; only inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub algorithms: Vec<String>,
    /// Claims passed upstream as headers: claim name -> header name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Forward the `Authorization` header upstream (off by default).
    #[serde(default, skip_serializing_if = "is_default")]
    pub forward_authorization: bool,
}

pub const JWT_ALGORITHMS: [&str; 12] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

impl Authorizer {
    pub fn validate(&self) -> Result {
        validate::id("id", &self.id)?;
        validate::non_empty("issuer", &self.issuer)?;
        if self.algorithms.is_empty() {
            return Err(ValidationError::new(
                "algorithms",
                "at least one algorithm is required",
            ));
        }
        let mut wants_hs = false;
        let mut wants_pk = false;
        for (i, a) in self.algorithms.iter().enumerate() {
            if !JWT_ALGORITHMS.contains(&a.as_str()) {
                return Err(ValidationError::new(
                    format!("algorithms[{i}]"),
                    format!(
                        "{a:?} is not allowed (one of {})",
                        JWT_ALGORITHMS.join(", ")
                    ),
                ));
            }
            if a.starts_with("HS") {
                wants_hs = true;
            } else {
                wants_pk = true;
            }
        }
        if wants_hs && self.secret.is_none() {
            return Err(ValidationError::new(
                "secret",
                "HS* algorithms need an inline secret",
            ));
        }
        if wants_hs && wants_pk {
            return Err(ValidationError::new(
                "algorithms",
                "HS* cannot be mixed with public-key algorithms in one authorizer",
            ));
        }
        if wants_pk && self.jwks.is_none() && self.jwks_uri.is_none() {
            return Err(ValidationError::new(
                "jwks_uri",
                "required: give jwks_uri or an inline jwks",
            ));
        }
        if let Some(uri) = &self.jwks_uri {
            validate::upstream_url("jwks_uri", uri)?;
        }
        if let Some(jwks) = &self.jwks {
            if !jwks.get("keys").is_some_and(serde_json::Value::is_array) {
                return Err(ValidationError::new(
                    "jwks.keys",
                    "must be an array of JWKs",
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- Tenant

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

impl Tenant {
    pub fn validate(&self) -> Result {
        validate::id("id", &self.id)
    }
}

// ---------------------------------------------------------------- UsagePlan

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsagePlan {
    pub id: String,
    pub apis: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// Requests per second.
    pub rate: f64,
    #[serde(default)]
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub limit: u64,
    pub period: QuotaPeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    Day,
    Week,
    Month,
}

impl UsagePlan {
    pub fn validate(&self) -> Result {
        validate::id("id", &self.id)?;
        for (i, a) in self.apis.iter().enumerate() {
            validate::id(&format!("apis[{i}]"), a)?;
        }
        if let Some(t) = &self.throttle {
            if !(t.rate.is_finite() && t.rate > 0.0 && t.rate <= 1_000_000.0) {
                return Err(ValidationError::new(
                    "throttle.rate",
                    "must be greater than 0 and at most 1000000",
                ));
            }
        }
        if let Some(q) = &self.quota {
            if q.limit == 0 {
                return Err(ValidationError::new("quota.limit", "must be at least 1"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- ApiKey

/// What the cluster stores about an API key. The value itself is never
/// here: only its keyed hash and a short display prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub name: String,
    /// First characters of the value, for operators to recognise a key.
    pub prefix: String,
    /// Hex HMAC-SHA256 of the value under the cluster's key-hash secret.
    pub hash: String,
    pub plans: Vec<String>,
    pub enabled: bool,
    /// Unix seconds.
    pub created_at: u64,
}

/// `POST /v1/keys` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueKeyRequest {
    pub tenant: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub plans: Vec<String>,
}

/// `PATCH /v1/keys/{id}` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub plans: Option<Vec<String>>,
    #[serde(default)]
    pub name: Option<String>,
}

impl IssueKeyRequest {
    pub fn validate(&self) -> Result {
        validate::id("tenant", &self.tenant)?;
        for (i, p) in self.plans.iter().enumerate() {
            validate::id(&format!("plans[{i}]"), p)?;
        }
        if let Some(v) = &self.value {
            crate::key::validate_import("value", v)?;
        }
        Ok(())
    }
}

/// Cluster-wide settings created when the cluster is bootstrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Secret for the keyed hash of API keys (hex). Data planes need it to
    /// hash the keys they are shown.
    pub key_hash_secret: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(json: serde_json::Value) -> Api {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn validation_names_the_field() {
        let a = api(serde_json::json!({"id":"orders","base_path":"/orders",
            "upstream":{"targets":[{"url":"ftp://x"}]}, "routes":[]}));
        assert_eq!(a.validate().unwrap_err().field, "upstream.targets[0].url");
        let a = api(serde_json::json!({"id":"orders","base_path":"/orders",
            "upstream":{"targets":[{"url":"http://x"}]},
            "routes":[{"id":"r","path":"/a/{rest+}/b"}]}));
        assert_eq!(a.validate().unwrap_err().field, "routes[0].path");
        let a = api(serde_json::json!({"id":"Orders!","base_path":"/orders","routes":[]}));
        assert_eq!(a.validate().unwrap_err().field, "id");
        let a = api(serde_json::json!({"id":"m","base_path":"/m",
            "routes":[{"id":"r","path":"/x","mock":{"status":200}}]}));
        a.validate().unwrap();
        for bad in [0, 3_600_001] {
            let a = api(serde_json::json!({"id":"i","base_path":"/i",
                "upstream":{"targets":[{"url":"http://x"}],"idle_timeout_ms":bad},"routes":[]}));
            assert_eq!(a.validate().unwrap_err().field, "upstream.idle_timeout_ms");
        }
    }

    #[test]
    fn edge_options_default_to_the_safe_side() {
        let a = api(serde_json::json!({"id":"e","base_path":"/e",
            "upstream":{"targets":[{"url":"http://x"}]},"routes":[]}));
        assert!(!a.allow_underscore_headers);
        assert_eq!(a.upstream.as_ref().unwrap().idle_timeout_ms, 60_000);
        // Off is not written back, so documents round-trip as they were.
        assert!(!serde_json::to_string(&a)
            .unwrap()
            .contains("allow_underscore"));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: std::result::Result<Api, _> =
            serde_json::from_value(serde_json::json!({"id":"a","base_path":"/","bogus":1}));
        assert!(r.unwrap_err().to_string().contains("bogus"));
    }
}
