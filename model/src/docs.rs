//! The documents of the admin API (contract §2). Serde names match the
//! contract's YAML/JSON exactly; unknown fields are rejected so a typo is a
//! 400, not a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::path::{self, PathTemplate};
use crate::validate::{self, Result, ValidationError};
use crate::websocket::{self, Protocol, WebSocketSettings};

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

// ---------------------------------------------------------------- Api

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub id: String,
    /// `websocket`: the base path upgrades, and messages are routed by
    /// `route_selection` to the routes' `key`s (contract §5.3).
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: Protocol,
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
    /// Answers instead of 502/503/504 when the upstream fails (connect
    /// error, 5xx, timeout, breaker open; after the retries), marked
    /// `x-tollgate-fallback: 1`. Same shape as a mock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Mock>,
    /// A WebSocket API's route selection expression
    /// (default `$request.body.action`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_selection: Option<String>,
    /// A WebSocket API's connection limits (AWS's defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocketSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicy {
    #[serde(default, skip_serializing_if = "is_default")]
    pub api_key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub id: String,
    /// Empty means every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The match template; on a WebSocket API, the path its integration
    /// POSTs to (`/` when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// A WebSocket API's route key: `$connect`, `$disconnect`, `$default`
    /// or a value of the route selection field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A WebSocket route whose integration's 2xx body goes back to the
    /// client as a message.
    #[serde(default, skip_serializing_if = "is_default")]
    pub response: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<Mock>,
    /// Answers instead of 502/503/504 when the upstream fails; the API's
    /// when the route has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Mock>,
    /// Invoke a function (the Lambda Invoke API) instead of an upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<Function>,
}

/// A function integration (contract §5.4): the gateway POSTs AWS's
/// proxy-integration event to `{url}/2015-03-31/functions/{name}/invocations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
            return Err(ValidationError::new(
                "region",
                "must be an AWS region such as us-east-1",
            ));
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// For this long past its TTL an entry is kept, and served (`x-cache:
    /// Stale`) when the upstream fails, before any fallback.
    #[serde(default, skip_serializing_if = "is_default")]
    pub stale_if_error_s: u64,
}

impl CacheConfig {
    pub const MAX_TTL_S: u64 = 3600;
    pub const MAX_STALE_IF_ERROR_S: u64 = 86_400;
    fn default_ttl_s() -> u64 {
        300
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

    /// A status the gateway can send, and header fields that are valid.
    fn validate(&self) -> Result {
        if !(100..=599).contains(&self.status) {
            return Err(ValidationError::new("status", "must be 100 to 599"));
        }
        for name in self.headers.keys() {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(ValidationError::new(
                    format!("headers.{name}"),
                    "is not a valid header name",
                ));
            }
        }
        Ok(())
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
        if let Some(f) = &self.fallback {
            f.validate().map_err(|e| e.within("fallback"))?;
        }
        for (list, name) in [(&self.ip_allow, "ip_allow"), (&self.ip_deny, "ip_deny")] {
            for (i, c) in list.iter().enumerate() {
                validate_cidr(&format!("{name}[{i}]"), c)?;
            }
        }
        self.validate_protocol()?;
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

    /// The WebSocket fields: only on `protocol: websocket`, and there each
    /// route has one key, no key twice.
    fn validate_protocol(&self) -> Result {
        if self.protocol == Protocol::Http {
            let stray = [
                ("route_selection", self.route_selection.is_some()),
                ("websocket", self.websocket.is_some()),
            ];
            if let Some((field, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(ValidationError::new(*field, "only for protocol: websocket"));
            }
            for (i, r) in self.routes.iter().enumerate() {
                if r.key.is_some() || r.response {
                    let field = if r.key.is_some() { "key" } else { "response" };
                    return Err(ValidationError::new(
                        format!("routes[{i}].{field}"),
                        "only for protocol: websocket",
                    ));
                }
            }
            return Ok(());
        }
        let expression = self
            .route_selection
            .as_deref()
            .unwrap_or(websocket::DEFAULT_ROUTE_SELECTION);
        websocket::selection_path("route_selection", expression)?;
        if let Some(w) = &self.websocket {
            w.validate().map_err(|e| e.within("websocket"))?;
        }
        let mut keys = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let field = |f: &str| format!("routes[{i}].{f}");
            let key = r.key.as_deref().ok_or_else(|| {
                ValidationError::new(field("key"), "required on a websocket API's route")
            })?;
            websocket::validate_route_key(&field("key"), key)?;
            if keys.contains(&key) {
                return Err(ValidationError::new(
                    field("key"),
                    format!("duplicate route key {key:?}"),
                ));
            }
            keys.push(key);
            let unsupported = [
                ("methods", !r.methods.is_empty()),
                ("cache", r.cache.is_some()),
                ("function", r.function.is_some()),
                ("fallback", r.fallback.is_some()),
                ("upstream_path", r.upstream_path.is_some()),
                ("auth", r.auth.is_some()),
            ];
            if let Some((f, _)) = unsupported.iter().find(|(_, set)| *set) {
                return Err(ValidationError::new(
                    field(f),
                    "not supported on a websocket API's route",
                ));
            }
            if r.response && [websocket::CONNECT, websocket::DISCONNECT].contains(&key) {
                return Err(ValidationError::new(
                    field("response"),
                    "$connect and $disconnect have no route response",
                ));
            }
            if !r.path.is_empty() && r.path.contains('{') {
                return Err(ValidationError::new(
                    field("path"),
                    "a websocket integration path has no parameters",
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
            // A URL made of stage variables is checked once a stage fills it.
            if !crate::variables::refers_to_variables(&t.url) {
                validate::upstream_url(&format!("targets[{i}].url"), &t.url)?;
            }
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
        let path = match self.path.as_str() {
            "" if self.key.is_some() => "/",
            p => p,
        };
        let template = PathTemplate::parse("path", path)?;
        if let Some(up) = &self.upstream_path {
            let rewrite =
                PathTemplate::parse("upstream_path", &crate::variables::with_placeholders(up))?;
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
        if let Some(c) = &self.cache {
            if c.stale_if_error_s > CacheConfig::MAX_STALE_IF_ERROR_S {
                return Err(ValidationError::new(
                    "cache.stale_if_error_s",
                    "must be at most 86400",
                ));
            }
        }
        if let Some(m) = &self.mock {
            m.validate().map_err(|e| e.within("mock"))?;
        }
        if let Some(f) = &self.function {
            f.validate().map_err(|e| e.within("function"))?;
        }
        if let Some(f) = &self.fallback {
            f.validate().map_err(|e| e.within("fallback"))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- Authorizer

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorizer {
    pub id: String,
    /// `jwt` (the default) or `request` (contract §5.4).
    #[serde(default, rename = "type", skip_serializing_if = "is_default")]
    pub kind: AuthorizerType,
    /// JWT: the required `iss`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// Claims passed upstream as headers: claim name -> header name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Forward the `Authorization` header upstream (off by default).
    #[serde(default, skip_serializing_if = "is_default")]
    pub forward_authorization: bool,
    /// Request authorizer: where the 2.0 REQUEST event is POSTed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Request authorizer: `header:NAME`, `query:NAME`, `path:NAME`; all
    /// must be present, else 401 without a call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_sources: Vec<String>,
    /// Request authorizer: how long answers (allow and deny) are cached,
    /// 0..=3600 (default 300; 0 = no cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// Request authorizer: how long a call may take (default 3000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Request authorizer: the answer's shape.
    #[serde(default, skip_serializing_if = "is_default")]
    pub response: AuthorizerResponse,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerType {
    #[default]
    Jwt,
    Request,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerResponse {
    /// `{isAuthorized, context}`.
    #[default]
    Simple,
    /// `{principalId, policyDocument, context, usageIdentifierKey}`.
    Policy,
}

/// Where a request authorizer reads one identity value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource<'a> {
    Header(&'a str),
    Query(&'a str),
    Path(&'a str),
}

impl<'a> IdentitySource<'a> {
    /// `header:NAME`, `query:NAME` or `path:NAME` (NAME not empty).
    pub fn parse(s: &'a str) -> Option<Self> {
        let (kind, name) = s.split_once(':')?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return None;
        }
        match kind {
            "header" => Some(Self::Header(name)),
            "query" => Some(Self::Query(name)),
            "path" => Some(Self::Path(name)),
            _ => None,
        }
    }
}

pub const JWT_ALGORITHMS: [&str; 12] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

impl Authorizer {
    pub const DEFAULT_TTL_S: u64 = 300;
    pub const MAX_TTL_S: u64 = 3600;
    pub const DEFAULT_TIMEOUT_MS: u64 = 3000;

    /// A request authorizer's cache time (default 300 s).
    pub fn ttl_s(&self) -> u64 {
        self.ttl_s.unwrap_or(Self::DEFAULT_TTL_S)
    }

    /// A request authorizer's call timeout (default 3 s).
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(Self::DEFAULT_TIMEOUT_MS)
    }

    pub fn validate(&self) -> Result {
        validate::id("id", &self.id)?;
        match self.kind {
            AuthorizerType::Jwt => self.validate_jwt(),
            AuthorizerType::Request => self.validate_request(),
        }
    }

    fn validate_request(&self) -> Result {
        let jwt_only = [
            ("issuer", !self.issuer.is_empty()),
            ("audiences", !self.audiences.is_empty()),
            ("jwks_uri", self.jwks_uri.is_some()),
            ("jwks", self.jwks.is_some()),
            ("secret", self.secret.is_some()),
            ("algorithms", !self.algorithms.is_empty()),
            ("claims_to_headers", !self.claims_to_headers.is_empty()),
        ];
        if let Some((field, _)) = jwt_only.iter().find(|(_, set)| *set) {
            return Err(ValidationError::new(
                *field,
                "only for JWT authorizers (type: jwt)",
            ));
        }
        let Some(endpoint) = &self.endpoint else {
            return Err(ValidationError::new(
                "endpoint",
                "required for a request authorizer",
            ));
        };
        validate::upstream_url("endpoint", endpoint)?;
        if self.identity_sources.is_empty() {
            return Err(ValidationError::new(
                "identity_sources",
                "at least one identity source is required",
            ));
        }
        for (i, s) in self.identity_sources.iter().enumerate() {
            if IdentitySource::parse(s).is_none() {
                return Err(ValidationError::new(
                    format!("identity_sources[{i}]"),
                    format!("{s:?} must be header:NAME, query:NAME or path:NAME"),
                ));
            }
        }
        if self.ttl_s() > Self::MAX_TTL_S {
            return Err(ValidationError::new("ttl_s", "must be 0 to 3600"));
        }
        if !(1..=300_000).contains(&self.timeout_ms()) {
            return Err(ValidationError::new("timeout_ms", "must be 1 to 300000"));
        }
        Ok(())
    }

    fn validate_jwt(&self) -> Result {
        let request_only = [
            ("endpoint", self.endpoint.is_some()),
            ("identity_sources", !self.identity_sources.is_empty()),
            ("ttl_s", self.ttl_s.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("response", self.response != AuthorizerResponse::Simple),
        ];
        if let Some((field, _)) = request_only.iter().find(|(_, set)| *set) {
            return Err(ValidationError::new(
                *field,
                "only for request authorizers (type: request)",
            ));
        }
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: String,
    /// Required: a tenant is who keys and plans are issued to, and this is
    /// how operators tell them apart.
    pub name: String,
}

impl Tenant {
    pub fn validate(&self) -> Result {
        validate::id("id", &self.id)
    }
}

// ---------------------------------------------------------------- UsagePlan

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsagePlan {
    pub id: String,
    pub apis: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// What the plan costs (contract §5.6); a change applies from the UTC
    /// day it is written, and invoices split at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<crate::billing::Price>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// Requests per second.
    pub rate: f64,
    #[serde(default)]
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub limit: u64,
    pub period: QuotaPeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
        if let Some(p) = &self.price {
            p.validate().map_err(|e| e.within("price"))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- ApiKey

/// What the cluster stores about an API key. The value itself is never
/// here: only its keyed hash and a short display prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
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

impl ApiKeyRecord {
    /// A record as `tollgate dump` carries it and `PUT /v1/keys/{id}`
    /// restores it: the hash is the one a cluster with the same key-hash
    /// secret computed, so only its form can be checked here.
    pub fn validate(&self) -> Result {
        validate::id("id", &self.id)?;
        validate::id("tenant", &self.tenant)?;
        for (i, p) in self.plans.iter().enumerate() {
            validate::id(&format!("plans[{i}]"), p)?;
        }
        let hex = self.hash.len() == 64
            && self
                .hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(ValidationError::new(
                "hash",
                "must be 64 lower-case hex digits (HMAC-SHA256)",
            ));
        }
        if self.prefix.is_empty() || self.prefix.len() > 32 {
            return Err(ValidationError::new("prefix", "must be 1 to 32 characters"));
        }
        if self.name.len() > 128 {
            return Err(ValidationError::new(
                "name",
                "must be at most 128 characters",
            ));
        }
        Ok(())
    }
}

/// `POST /v1/keys` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
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

#[cfg(test)]
mod request_authorizer_tests {
    use super::*;

    fn doc(changes: serde_json::Value) -> Authorizer {
        let mut base = serde_json::json!({"id": "custom", "type": "request",
            "endpoint": "http://authz:9000/authorize",
            "identity_sources": ["header:authorization", "query:token", "path:id"]});
        for (k, v) in changes.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn field(changes: serde_json::Value) -> String {
        doc(changes).validate().unwrap_err().field
    }

    #[test]
    fn defaults_and_a_valid_document() {
        let a = doc(serde_json::json!({}));
        a.validate().unwrap();
        assert_eq!(a.kind, AuthorizerType::Request);
        assert_eq!((a.ttl_s(), a.timeout_ms()), (300, 3000));
        assert_eq!(a.response, AuthorizerResponse::Simple);
        let p = doc(serde_json::json!({"response": "policy", "ttl_s": 0}));
        p.validate().unwrap();
        assert_eq!(p.response, AuthorizerResponse::Policy);
        doc(serde_json::json!({"ttl_s": 3600, "endpoint": "https://a.example/x"}))
            .validate()
            .unwrap();
        // Round trip: defaults are not written back.
        let text = serde_json::to_string(&a).unwrap();
        assert!(
            !text.contains("ttl_s") && !text.contains("issuer"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Authorizer>(&text).unwrap(), a);
    }

    #[test]
    fn each_error_names_its_field() {
        use serde_json::json;
        assert_eq!(field(json!({"endpoint": "ftp://authz/x"})), "endpoint");
        assert_eq!(field(json!({"endpoint": "authz:9000"})), "endpoint");
        assert_eq!(field(json!({"endpoint": null})), "endpoint");
        assert_eq!(field(json!({"ttl_s": 3601})), "ttl_s");
        assert_eq!(field(json!({"timeout_ms": 0})), "timeout_ms");
        assert_eq!(field(json!({"identity_sources": []})), "identity_sources");
        for bad in ["cookie:x", "header:", "authorization", "query: t"] {
            assert_eq!(
                field(json!({"identity_sources": ["header:a", bad]})),
                "identity_sources[1]",
                "{bad}"
            );
        }
        assert_eq!(field(json!({"issuer": "https://i"})), "issuer");
        assert_eq!(field(json!({"algorithms": ["RS256"]})), "algorithms");
        // An unknown type or response does not parse (400 naming it).
        for (k, v) in [("type", "lambda"), ("response", "iam")] {
            let mut d = serde_json::to_value(doc(json!({}))).unwrap();
            d[k] = v.into();
            let e = serde_json::from_value::<Authorizer>(d).unwrap_err();
            assert!(e.to_string().contains(v), "{e}");
        }
        // JWT authorizers refuse the request authorizer's fields.
        let jwt: Authorizer = serde_json::from_value(json!({"id": "j", "issuer": "https://i",
            "algorithms": ["HS256"], "secret": "s", "ttl_s": 5}))
        .unwrap();
        assert_eq!(jwt.validate().unwrap_err().field, "ttl_s");
        let jwt: Authorizer =
            serde_json::from_value(json!({"id": "j", "algorithms": ["HS256"], "secret": "s"}))
                .unwrap();
        assert_eq!(jwt.validate().unwrap_err().field, "issuer");
    }

    #[test]
    fn identity_sources_parse() {
        assert_eq!(
            IdentitySource::parse("header:Authorization"),
            Some(IdentitySource::Header("Authorization"))
        );
        assert_eq!(
            IdentitySource::parse("query:t"),
            Some(IdentitySource::Query("t"))
        );
        assert_eq!(
            IdentitySource::parse("path:id"),
            Some(IdentitySource::Path("id"))
        );
        assert_eq!(IdentitySource::parse("body:x"), None);
    }
}
