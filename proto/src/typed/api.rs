//! `Api` and its parts (contract §2, §5.3, §5.4).

use serde_json::Value;
use tollgate_model::docs as m;
use tollgate_model::websocket::WebSocketSettings;

use super::{enum_value, map, Doc, Result, ToDocument};
use crate::v1 as pb;

impl ToDocument for pb::Api {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("id", self.id)
            .enumeration::<pb::Protocol>("protocol", self.protocol)?
            .set("base_path", self.base_path)
            .set("hosts", self.hosts)
            .child("upstream", self.upstream)?
            .child("auth", self.auth)?
            .child("cors", self.cors)?
            .set("ip_allow", self.ip_allow)
            .set("ip_deny", self.ip_deny)
            .children("routes", self.routes)?
            .set("allow_underscore_headers", self.allow_underscore_headers)
            .child("fallback", self.fallback)?
            .opt("route_selection", self.route_selection)
            .child("websocket", self.websocket)?
            .done())
    }
}

impl From<&m::Api> for pb::Api {
    fn from(a: &m::Api) -> Self {
        Self {
            id: a.id.clone(),
            protocol: enum_value::<pb::Protocol>(a.protocol),
            base_path: a.base_path.clone(),
            hosts: a.hosts.clone(),
            upstream: a.upstream.as_ref().map(Into::into),
            auth: Some((&a.auth).into()),
            cors: a.cors.as_ref().map(Into::into),
            ip_allow: a.ip_allow.clone(),
            ip_deny: a.ip_deny.clone(),
            routes: a.routes.iter().map(Into::into).collect(),
            allow_underscore_headers: a.allow_underscore_headers,
            fallback: a.fallback.as_ref().map(Into::into),
            route_selection: a.route_selection.clone(),
            websocket: a.websocket.as_ref().map(Into::into),
            revision: 0,
        }
    }
}

impl ToDocument for pb::Upstream {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .children("targets", self.targets)?
            .enumeration::<pb::LoadBalancing>("load_balancing", self.load_balancing)?
            .opt("timeout_ms", self.timeout_ms)
            .opt("retries", self.retries)
            .child("health_check", self.health_check)?
            .opt("circuit_breaker_failures", self.circuit_breaker_failures)
            .opt("idle_timeout_ms", self.idle_timeout_ms)
            .done())
    }
}

impl From<&m::Upstream> for pb::Upstream {
    fn from(u: &m::Upstream) -> Self {
        Self {
            targets: u.targets.iter().map(Into::into).collect(),
            load_balancing: enum_value::<pb::LoadBalancing>(u.load_balancing),
            timeout_ms: Some(u.timeout_ms),
            retries: Some(u.retries),
            health_check: u.health_check.as_ref().map(Into::into),
            circuit_breaker_failures: Some(u.circuit_breaker_failures),
            idle_timeout_ms: Some(u.idle_timeout_ms),
        }
    }
}

impl ToDocument for pb::Target {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("url", self.url)
            .opt("weight", self.weight)
            .done())
    }
}

impl From<&m::Target> for pb::Target {
    fn from(t: &m::Target) -> Self {
        Self {
            url: t.url.clone(),
            weight: Some(t.weight),
        }
    }
}

impl ToDocument for pb::HealthCheck {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("path", self.path)
            .opt("interval_ms", self.interval_ms)
            .opt("unhealthy_threshold", self.unhealthy_threshold)
            .opt("healthy_threshold", self.healthy_threshold)
            .done())
    }
}

impl From<&m::HealthCheck> for pb::HealthCheck {
    fn from(h: &m::HealthCheck) -> Self {
        Self {
            path: h.path.clone(),
            interval_ms: Some(h.interval_ms),
            unhealthy_threshold: Some(h.unhealthy_threshold),
            healthy_threshold: Some(h.healthy_threshold),
        }
    }
}

impl ToDocument for pb::AuthPolicy {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("api_key", self.api_key)
            .opt("authorizer", self.authorizer)
            .set("scopes", self.scopes)
            .done())
    }
}

impl From<&m::AuthPolicy> for pb::AuthPolicy {
    fn from(a: &m::AuthPolicy) -> Self {
        Self {
            api_key: a.api_key,
            authorizer: a.authorizer.clone(),
            scopes: a.scopes.clone(),
        }
    }
}

impl ToDocument for pb::Cors {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("allow_origins", self.allow_origins)
            .set("allow_methods", self.allow_methods)
            .set("allow_headers", self.allow_headers)
            .set("expose_headers", self.expose_headers)
            .set("allow_credentials", self.allow_credentials)
            .opt("max_age_s", self.max_age_s)
            .done())
    }
}

impl From<&m::Cors> for pb::Cors {
    fn from(c: &m::Cors) -> Self {
        Self {
            allow_origins: c.allow_origins.clone(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            allow_credentials: c.allow_credentials,
            max_age_s: c.max_age_s,
        }
    }
}

impl ToDocument for pb::Route {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("id", self.id)
            .set("methods", self.methods)
            .set("path", self.path)
            .opt("key", self.key)
            .set("response", self.response)
            .opt("upstream_path", self.upstream_path)
            .child("cache", self.cache)?
            .child("auth", self.auth)?
            .child("mock", self.mock)?
            .child("fallback", self.fallback)?
            .child("function", self.function)?
            .done())
    }
}

impl From<&m::Route> for pb::Route {
    fn from(r: &m::Route) -> Self {
        Self {
            id: r.id.clone(),
            methods: r.methods.clone(),
            path: r.path.clone(),
            key: r.key.clone(),
            response: r.response,
            upstream_path: r.upstream_path.clone(),
            cache: r.cache.as_ref().map(Into::into),
            auth: r.auth.as_ref().map(Into::into),
            mock: r.mock.as_ref().map(Into::into),
            fallback: r.fallback.as_ref().map(Into::into),
            function: r.function.as_ref().map(Into::into),
        }
    }
}

impl ToDocument for pb::Function {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("url", self.url)
            .set("name", self.name)
            .opt("payload", self.payload)
            .opt("timeout_ms", self.timeout_ms)
            .child("sigv4", self.sigv4)?
            .done())
    }
}

impl From<&m::Function> for pb::Function {
    fn from(f: &m::Function) -> Self {
        Self {
            url: f.url.clone(),
            name: f.name.clone(),
            payload: Some(f.payload.clone()),
            timeout_ms: Some(f.timeout_ms),
            sigv4: f.sigv4.as_ref().map(Into::into),
        }
    }
}

impl ToDocument for pb::SigV4 {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("region", self.region)
            .set("access_key_id_env", self.access_key_id_env)
            .set("secret_access_key_env", self.secret_access_key_env)
            .opt("session_token_env", self.session_token_env)
            .done())
    }
}

impl From<&m::SigV4> for pb::SigV4 {
    fn from(s: &m::SigV4) -> Self {
        Self {
            region: s.region.clone(),
            access_key_id_env: s.access_key_id_env.clone(),
            secret_access_key_env: s.secret_access_key_env.clone(),
            session_token_env: s.session_token_env.clone(),
        }
    }
}

impl ToDocument for pb::CacheConfig {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .opt("ttl_s", self.ttl_s)
            .set("key", self.key)
            .set("shared", self.shared)
            .set("allow_client_invalidation", self.allow_client_invalidation)
            .set("stale_if_error_s", self.stale_if_error_s)
            .done())
    }
}

impl From<&m::CacheConfig> for pb::CacheConfig {
    fn from(c: &m::CacheConfig) -> Self {
        Self {
            ttl_s: Some(c.ttl_s),
            key: c.key.clone(),
            shared: c.shared,
            allow_client_invalidation: c.allow_client_invalidation,
            stale_if_error_s: c.stale_if_error_s,
        }
    }
}

impl ToDocument for pb::Mock {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .opt("status", self.status)
            .set("body", self.body)
            .set("headers", map(self.headers))
            .done())
    }
}

impl From<&m::Mock> for pb::Mock {
    fn from(k: &m::Mock) -> Self {
        Self {
            status: Some(k.status.into()),
            body: k.body.clone(),
            headers: k.headers.clone(),
        }
    }
}

impl ToDocument for pb::WebSocketSettings {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .opt("idle_timeout_s", self.idle_timeout_s)
            .opt("max_duration_s", self.max_duration_s)
            .opt("max_message_bytes", self.max_message_bytes)
            .opt("max_frame_bytes", self.max_frame_bytes)
            .done())
    }
}

impl From<&WebSocketSettings> for pb::WebSocketSettings {
    fn from(w: &WebSocketSettings) -> Self {
        Self {
            idle_timeout_s: Some(w.idle_timeout_s),
            max_duration_s: Some(w.max_duration_s),
            max_message_bytes: Some(w.max_message_bytes),
            max_frame_bytes: Some(w.max_frame_bytes),
        }
    }
}
