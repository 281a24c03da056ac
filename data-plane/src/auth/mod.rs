//! Authentication at the edge: API keys, JWT authorizers, CORS and IP
//! lists. Everything a request needs is in `AuthIndex`, part of the
//! snapshot in force, built from the previous index plus the config delta.
//!
//! Per request, after the route matched (contract §3):
//! 1. CORS preflight (`cors::answer_preflight`), answered by the gateway;
//! 2. IP allow/deny lists of the API (`AuthIndex::check_ip`), 403;
//! 3. the route's auth policy (`AuthIndex::authenticate`): the API key
//!    (403 when refused), then the JWT (401 when refused, 403 when a scope
//!    is missing) or the request authorizer (`request`: 401 when an
//!    identity source is missing, 403 when denied, 500 when it fails; its
//!    `usageIdentifierKey` then chooses the key whose plans apply);
//! 4. `prepare_upstream_headers` removes what the client may not say about
//!    itself (`x-tollgate-*`, mapped claim headers) and adds the identity.
//!
//! Why a request was refused is logged (by key id, never by value); the
//! response says only `Unauthorized` or `Forbidden`.

pub mod cors;
pub mod ip;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod request;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tollgate_model::docs::{Api, AuthorizerType, Route};
use tollgate_model::{ConfigDelta, Resource, ResourceKind};

use crate::error::ProxyError;
use crate::upstream::HttpClient;

pub use jwt::CompiledAuthorizer;
pub use keys::KeyIndex;

pub static X_TOLLGATE_TENANT: HeaderName = HeaderName::from_static("x-tollgate-tenant");
pub static X_TOLLGATE_KEY_ID: HeaderName = HeaderName::from_static("x-tollgate-key-id");
pub static X_TOLLGATE_SUBJECT: HeaderName = HeaderName::from_static("x-tollgate-subject");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Knobs of the JWKS fetcher, shared by every authorizer of a gateway and
/// read on each use, so they can change at run time (tests shorten the
/// cooldown).
pub struct AuthTuning {
    jwks_cooldown_ms: AtomicU64,
    jwks_timeout_ms: AtomicU64,
    jwks_max_age_ms: AtomicU64,
}

impl Default for AuthTuning {
    fn default() -> Self {
        Self {
            jwks_cooldown_ms: AtomicU64::new(10_000),
            jwks_timeout_ms: AtomicU64::new(1_500),
            jwks_max_age_ms: AtomicU64::new(300_000),
        }
    }
}

impl AuthTuning {
    /// The least time between two JWKS fetches of one authorizer (unknown
    /// `kid`s and refreshes alike). Default 10 s.
    pub fn jwks_cooldown(&self) -> Duration {
        Duration::from_millis(self.jwks_cooldown_ms.load(Ordering::Relaxed))
    }
    pub fn set_jwks_cooldown(&self, d: Duration) {
        self.jwks_cooldown_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }
    /// How long one JWKS fetch may take, body included. Default 1.5 s.
    pub fn jwks_timeout(&self) -> Duration {
        Duration::from_millis(self.jwks_timeout_ms.load(Ordering::Relaxed))
    }
    pub fn set_jwks_timeout(&self, d: Duration) {
        self.jwks_timeout_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }
    /// After this long, fetched keys are refreshed in the background (they
    /// stay in force meanwhile, and if the refresh fails). Default 5 min.
    pub fn jwks_max_age(&self) -> Duration {
        Duration::from_millis(self.jwks_max_age_ms.load(Ordering::Relaxed))
    }
    pub fn set_jwks_max_age(&self, d: Duration) {
        self.jwks_max_age_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }
}

/// What building an index needs from the gateway.
pub struct AuthContext<'a> {
    pub client: &'a HttpClient,
    pub tuning: &'a Arc<AuthTuning>,
}

/// Everything the auth phases read, for one config revision. Persistent
/// maps: a new index shares all but what the delta touched.
#[derive(Clone, Default)]
pub struct AuthIndex {
    pub keys: KeyIndex,
    authorizers: crate::ImMap<String, Arc<CompiledAuthorizer>>,
    request_authorizers: crate::ImMap<String, Arc<request::RequestAuthorizer>>,
    ip_rules: crate::ImMap<String, Arc<ip::IpRules>>,
}

impl AuthIndex {
    /// The index after `delta`, applied to the config this index was built
    /// for (a full delta replaces everything). Costs in proportion to the
    /// delta.
    pub fn with_changes(
        &self,
        delta: &ConfigDelta,
        ctx: &AuthContext<'_>,
    ) -> Result<AuthIndex, String> {
        let mut out = if delta.full {
            AuthIndex::default()
        } else {
            self.clone()
        };
        if !delta.full {
            for (kind, id) in &delta.removals {
                match kind {
                    ResourceKind::ApiKey => out.keys.remove_key(id),
                    ResourceKind::UsagePlan => out.keys.remove_plan(id),
                    ResourceKind::Settings => out.keys.set_secret(None),
                    ResourceKind::Authorizer => {
                        out.authorizers.remove(id);
                        out.request_authorizers.remove(id);
                    }
                    ResourceKind::Api => {
                        out.ip_rules.remove(id);
                    }
                    ResourceKind::Tenant
                    | ResourceKind::CacheFlush
                    | ResourceKind::Deployment
                    | ResourceKind::Stage => {}
                }
            }
        }
        for r in &delta.upserts {
            match r {
                Resource::ApiKey(k) => out.keys.upsert_key(k),
                Resource::UsagePlan(p) => out.keys.upsert_plan(p),
                Resource::Settings(s) => out.keys.set_secret(Some(&s.key_hash_secret)),
                Resource::Authorizer(a) if a.kind == AuthorizerType::Request => {
                    out.authorizers.remove(&a.id);
                    let previous = self.request_authorizers.get(&a.id);
                    if let Some(same) = previous.filter(|p| p.doc == *a) {
                        // Unchanged: kept with its answer cache.
                        out.request_authorizers.insert(a.id.clone(), same.clone());
                        continue;
                    }
                    let compiled = request::RequestAuthorizer::compile(
                        a,
                        previous.map(Arc::as_ref),
                        ctx.client,
                    )
                    .map_err(|e| format!("authorizer {:?}: {e}", a.id))?;
                    out.request_authorizers
                        .insert(a.id.clone(), Arc::new(compiled));
                }
                Resource::Authorizer(a) => {
                    out.request_authorizers.remove(&a.id);
                    let previous = self.authorizers.get(&a.id);
                    if let Some(same) = previous.filter(|p| p.doc == *a) {
                        // Unchanged (a full resync): keep it whole, with its
                        // verified-token cache.
                        out.authorizers.insert(a.id.clone(), same.clone());
                        continue;
                    }
                    // Changed: fetched keys are kept while the key source is
                    // the same.
                    let previous = previous.map(Arc::as_ref);
                    let compiled = CompiledAuthorizer::compile(a, previous, ctx)
                        .map_err(|e| format!("authorizer {:?}: {e}", a.id))?;
                    out.authorizers.insert(a.id.clone(), Arc::new(compiled));
                }
                Resource::Api(api) => {
                    let rules = ip::IpRules::compile(&api.ip_allow, &api.ip_deny)
                        .map_err(|e| format!("api {:?}: {e}", api.id))?;
                    match rules {
                        Some(r) => out.ip_rules.insert(api.id.clone(), Arc::new(r)),
                        None => out.ip_rules.remove(&api.id),
                    };
                }
                Resource::Tenant(_)
                | Resource::CacheFlush(_)
                | Resource::Deployment(_)
                | Resource::Stage(_) => {}
            }
        }
        Ok(out)
    }

    pub fn authorizer(&self, id: &str) -> Option<&Arc<CompiledAuthorizer>> {
        self.authorizers.get(id)
    }

    /// A request authorizer (`type: request`) by id.
    pub fn request_authorizer(&self, id: &str) -> Option<&Arc<request::RequestAuthorizer>> {
        self.request_authorizers.get(id)
    }

    /// The metric families of the request authorizers in force.
    pub fn render_metrics(&self, out: &mut String) {
        let all: Vec<&crate::metrics::AuthorizerMetrics> = self
            .request_authorizers
            .values()
            .map(|a| a.metrics.as_ref())
            .collect();
        crate::metrics::AuthorizerMetrics::render(out, all.into_iter());
    }

    /// The API's IP allow and deny lists (403).
    pub fn check_ip(&self, api: &str, ip: IpAddr) -> Result<(), ProxyError> {
        match self.ip_rules.get(api) {
            Some(rules) if !rules.admits(ip) => {
                tracing::debug!(api, %ip, "client address refused by the API's IP lists");
                Err(ProxyError::Forbidden)
            }
            _ => Ok(()),
        }
    }

    /// Apply the route's auth policy (the API's, unless the route has its
    /// own) to a request's headers.
    pub async fn authenticate(
        &self,
        facts: &request::RequestFacts<'_>,
    ) -> Result<Identity, ProxyError> {
        let (api, route, headers) = (facts.api, facts.route, facts.headers);
        let policy = route.auth_policy(api);
        let mut identity = self.authenticate_key(api, route, headers)?;
        if let Some(authorizer_id) = &policy.authorizer {
            if let Some(authorizer) = self.request_authorizers.get(authorizer_id) {
                self.authorize_request(authorizer, facts, &mut identity)
                    .await?;
                return Ok(identity);
            }
            let Some(authorizer) = self.authorizers.get(authorizer_id) else {
                tracing::error!(api = %api.id, authorizer = %authorizer_id, "the route's authorizer is not in the config");
                return Err(ProxyError::Unauthorized);
            };
            let token = bearer_token(headers);
            let verified = match token {
                None => {
                    tracing::debug!(api = %api.id, route = %route.id, authorizer = %authorizer_id, "JWT refused: no bearer token");
                    return Err(ProxyError::Unauthorized);
                }
                Some(t) => authorizer.verify(t).await.map_err(|refusal| {
                    tracing::debug!(api = %api.id, route = %route.id, authorizer = %authorizer_id, reason = %refusal, "JWT refused");
                    ProxyError::Unauthorized
                })?,
            };
            if let Some(missing) = policy
                .scopes
                .iter()
                .find(|s| !verified.scopes.iter().any(|have| have == *s))
            {
                tracing::info!(api = %api.id, route = %route.id, authorizer = %authorizer_id,
                    subject = verified.subject.as_deref().unwrap_or(""), scope = %missing,
                    "JWT refused: a required scope is missing");
                return Err(ProxyError::Forbidden);
            }
            identity.subject = verified.subject.clone();
            identity.jwt = Some(JwtIdentity {
                verified,
                authorizer: authorizer.clone(),
            });
        }
        Ok(identity)
    }

    /// A request authorizer's verdict on the request; with a grant, the
    /// principal, the context, and the key `usageIdentifierKey` names.
    async fn authorize_request(
        &self,
        authorizer: &request::RequestAuthorizer,
        facts: &request::RequestFacts<'_>,
        identity: &mut Identity,
    ) -> Result<(), ProxyError> {
        let (api, route) = (&facts.api.id, &facts.route.id);
        let id = &authorizer.doc.id;
        let grant = authorizer.authorize(facts).await.map_err(|refusal| {
            match refusal {
                request::Refusal::MissingSource(_) => {
                    tracing::debug!(%api, %route, authorizer = %id, reason = %refusal, "request refused");
                    ProxyError::Unauthorized
                }
                request::Refusal::Denied => {
                    tracing::debug!(%api, %route, authorizer = %id, "request denied by the authorizer");
                    ProxyError::Forbidden
                }
                request::Refusal::Failed(_) => {
                    tracing::warn!(%api, %route, authorizer = %id, reason = %refusal, "request authorizer failed; refused");
                    ProxyError::AuthorizerFailed
                }
            }
        })?;
        if let Some(value) = &grant.usage_key {
            let presented = HeaderValue::from_str(value).ok();
            match self.keys.check(presented.as_ref(), api) {
                Ok(granted) => {
                    identity.key = Some(granted.key);
                    identity.plan = Some(granted.plan);
                }
                Err(refusal) => {
                    refusal.log(api, route);
                    return Err(ProxyError::Forbidden);
                }
            }
        }
        identity.subject = grant.principal.clone();
        identity.request = Some(grant);
        Ok(())
    }

    /// The part of `authenticate` that needs no waiting: the API key, if
    /// the policy asks for one. All of it for a policy without a JWT
    /// authorizer.
    pub fn authenticate_key(
        &self,
        api: &Api,
        route: &Route,
        headers: &HeaderMap,
    ) -> Result<Identity, ProxyError> {
        let policy = route.auth_policy(api);
        let mut identity = Identity::default();
        if !policy.api_key {
            return Ok(identity);
        }
        match self.keys.check(headers.get(&X_API_KEY), &api.id) {
            Ok(granted) => {
                identity.key = Some(granted.key);
                identity.plan = Some(granted.plan);
                Ok(identity)
            }
            Err(refusal) => {
                refusal.log(&api.id, &route.id);
                Err(ProxyError::Forbidden)
            }
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Who the caller turned out to be.
#[derive(Default)]
pub struct Identity {
    /// The JWT's `sub`.
    pub subject: Option<String>,
    pub jwt: Option<JwtIdentity>,
    /// The API key the caller presented, as indexed.
    pub key: Option<Arc<keys::IndexedKey>>,
    /// The first of the key's usage plans that grants the API: the plan
    /// phase applies it.
    pub plan: Option<Arc<tollgate_model::docs::UsagePlan>>,
    /// What a request authorizer allowed the caller with (its `context`,
    /// `principalId`).
    pub request: Option<Arc<request::RequestGrant>>,
}

impl Identity {
    /// The id of the caller's API key.
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.id.as_str())
    }

    /// The tenant of the caller's API key.
    pub fn tenant(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.tenant.as_str())
    }
}

pub struct JwtIdentity {
    pub verified: Arc<jwt::Verified>,
    pub authorizer: Arc<CompiledAuthorizer>,
}

/// The request headers as the upstream should see them: no client-supplied
/// `x-tollgate-*` (or mapped claim) headers, no `x-api-key`, no
/// `Authorization` after a JWT check unless the authorizer forwards it, and
/// the caller's identity.
pub fn prepare_upstream_headers(headers: &mut HeaderMap, identity: &Identity) {
    // One pass over the names: most requests have neither, and a `remove`
    // hashes its name even when it finds nothing.
    let unwanted: Vec<HeaderName> = headers
        .keys()
        .filter(|k| *k == X_API_KEY || k.as_str().starts_with("x-tollgate-"))
        .cloned()
        .collect();
    for k in unwanted {
        headers.remove(k);
    }
    let put = |headers: &mut HeaderMap, name: &HeaderName, value: &Option<String>| {
        if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name.clone(), v);
        }
    };
    // Made when the key was indexed: no parsing or copying here.
    if let Some(key) = &identity.key {
        for (name, value) in [
            (&X_TOLLGATE_TENANT, &key.tenant_header),
            (&X_TOLLGATE_KEY_ID, &key.id_header),
        ] {
            if let Some(v) = value {
                headers.insert(name.clone(), v.clone());
            }
        }
    }
    put(headers, &X_TOLLGATE_SUBJECT, &identity.subject);
    if let Some(grant) = &identity.request {
        for (name, value) in &grant.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    if let Some(jwt) = &identity.jwt {
        if !jwt.authorizer.forward_authorization() {
            headers.remove(header::AUTHORIZATION);
        }
        for name in jwt.authorizer.claim_header_names() {
            headers.remove(name);
        }
        for (name, value) in &jwt.verified.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Send `req` and read a JSON answer of at most `limit` bytes: the one way
/// authentication talks to an endpoint (JWKS, request authorizers). Any
/// status but 2xx, an oversized or non-JSON body is an error (the callers
/// fail closed on it).
pub(crate) async fn fetch_json(
    client: &crate::upstream::HttpClient,
    req: http::Request<crate::body::ProxyBody>,
    limit: usize,
) -> Result<serde_json::Value, String> {
    use http_body_util::BodyExt as _;
    let res = client
        .request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("status {}", res.status()));
    }
    let bytes = http_body_util::Limited::new(res.into_body(), limit)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}
