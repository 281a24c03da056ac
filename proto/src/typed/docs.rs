//! `Authorizer`, `Tenant`, `UsagePlan`, `Stage` and the key issue request.

use serde_json::Value;
use tollgate_model::docs as m;
use tollgate_model::stages::{Canary, Stage};
use tollgate_model::ValidationError;

use super::{enum_value, map, Doc, Result, ToDocument};
use crate::v1 as pb;

impl ToDocument for pb::Authorizer {
    fn to_document(self) -> Result<Value> {
        // JSON text on the wire, since a JWKS has no fixed shape.
        let jwks = self
            .jwks
            .map(|text| serde_json::from_str::<Value>(&text))
            .transpose()
            .map_err(|e| ValidationError::new("jwks", format!("not JSON: {e}")))?;
        Ok(Doc::new()
            .set("id", self.id)
            .enumeration::<pb::AuthorizerType>("type", self.r#type)?
            .set("issuer", self.issuer)
            .set("audiences", self.audiences)
            .opt("jwks_uri", self.jwks_uri)
            .opt("jwks", jwks)
            .opt("secret", self.secret)
            .set("algorithms", self.algorithms)
            .set("claims_to_headers", map(self.claims_to_headers))
            .set("forward_authorization", self.forward_authorization)
            .opt("endpoint", self.endpoint)
            .set("identity_sources", self.identity_sources)
            .opt("ttl_s", self.ttl_s)
            .opt("timeout_ms", self.timeout_ms)
            .enumeration::<pb::AuthorizerResponse>("response", self.response)?
            .done())
    }
}

impl From<&m::Authorizer> for pb::Authorizer {
    fn from(a: &m::Authorizer) -> Self {
        Self {
            id: a.id.clone(),
            r#type: enum_value::<pb::AuthorizerType>(a.kind),
            issuer: a.issuer.clone(),
            audiences: a.audiences.clone(),
            jwks_uri: a.jwks_uri.clone(),
            jwks: a.jwks.as_ref().map(Value::to_string),
            secret: a.secret.clone(),
            algorithms: a.algorithms.clone(),
            claims_to_headers: a.claims_to_headers.clone(),
            forward_authorization: a.forward_authorization,
            endpoint: a.endpoint.clone(),
            identity_sources: a.identity_sources.clone(),
            ttl_s: a.ttl_s,
            timeout_ms: a.timeout_ms,
            response: enum_value::<pb::AuthorizerResponse>(a.response),
            revision: 0,
        }
    }
}

impl ToDocument for pb::Tenant {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new().set("id", self.id).set("name", self.name).done())
    }
}

impl From<&m::Tenant> for pb::Tenant {
    fn from(t: &m::Tenant) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            revision: 0,
        }
    }
}

impl ToDocument for pb::UsagePlan {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("id", self.id)
            .set("apis", self.apis)
            .child("throttle", self.throttle)?
            .child("quota", self.quota)?
            .child("price", self.price)?
            .done())
    }
}

impl From<&m::UsagePlan> for pb::UsagePlan {
    fn from(p: &m::UsagePlan) -> Self {
        Self {
            id: p.id.clone(),
            apis: p.apis.clone(),
            throttle: p.throttle.as_ref().map(Into::into),
            quota: p.quota.as_ref().map(Into::into),
            revision: 0,
            price: p.price.as_ref().map(Into::into),
        }
    }
}

impl ToDocument for pb::Price {
    fn to_document(self) -> Result<Value> {
        // An amount left empty is unset: the document's "0" applies.
        let amount = |s: String| Some(s).filter(|s| !s.is_empty());
        Ok(Doc::new()
            .set("currency", self.currency)
            .opt("monthly_fee", amount(self.monthly_fee))
            .opt("per_million_requests", amount(self.per_million_requests))
            .opt("per_million_messages", amount(self.per_million_messages))
            .opt(
                "per_million_connection_minutes",
                amount(self.per_million_connection_minutes),
            )
            .done())
    }
}

impl From<&tollgate_model::billing::Price> for pb::Price {
    fn from(p: &tollgate_model::billing::Price) -> Self {
        Self {
            currency: p.currency.clone(),
            monthly_fee: p.monthly_fee.clone(),
            per_million_requests: p.per_million_requests.clone(),
            per_million_messages: p.per_million_messages.clone(),
            per_million_connection_minutes: p.per_million_connection_minutes.clone(),
        }
    }
}

impl ToDocument for pb::Throttle {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("rate", self.rate)
            .set("burst", self.burst)
            .done())
    }
}

impl From<&m::Throttle> for pb::Throttle {
    fn from(t: &m::Throttle) -> Self {
        Self {
            rate: t.rate,
            burst: t.burst,
        }
    }
}

impl ToDocument for pb::Quota {
    fn to_document(self) -> Result<Value> {
        // Unset period is left out, so the document says it is missing.
        Ok(Doc::new()
            .set("limit", self.limit)
            .enumeration::<pb::QuotaPeriod>("period", self.period)?
            .done())
    }
}

impl From<&m::Quota> for pb::Quota {
    fn from(q: &m::Quota) -> Self {
        Self {
            limit: q.limit,
            period: enum_value::<pb::QuotaPeriod>(q.period),
        }
    }
}

impl ToDocument for pb::Stage {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("id", self.id)
            .set("api", self.api)
            .set("deployment", self.deployment)
            .set("base_path", self.base_path)
            .set("hosts", self.hosts)
            .set("variables", map(self.variables))
            .child("canary", self.canary)?
            .child("throttle", self.throttle)?
            .done())
    }
}

impl From<&Stage> for pb::Stage {
    fn from(s: &Stage) -> Self {
        Self {
            id: s.id.clone(),
            api: s.api.clone(),
            deployment: s.deployment.clone(),
            base_path: s.base_path.clone(),
            hosts: s.hosts.clone(),
            variables: s.variables.clone(),
            canary: s.canary.as_ref().map(Into::into),
            throttle: s.throttle.as_ref().map(Into::into),
            revision: 0,
        }
    }
}

impl ToDocument for pb::Canary {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("deployment", self.deployment)
            .set("percent", self.percent)
            .set("variables", map(self.variables))
            .enumeration::<pb::Sticky>("sticky", self.sticky)?
            .done())
    }
}

impl From<&Canary> for pb::Canary {
    fn from(c: &Canary) -> Self {
        Self {
            deployment: c.deployment.clone(),
            percent: c.percent,
            variables: c.variables.clone(),
            sticky: enum_value::<pb::Sticky>(c.sticky),
        }
    }
}

/// The `POST /v1/keys` body (the idempotency key is its header there).
impl ToDocument for pb::IssueKeyRequest {
    fn to_document(self) -> Result<Value> {
        Ok(Doc::new()
            .set("tenant", self.tenant)
            .set("name", self.name)
            .opt("value", self.value)
            .set("plans", self.plans)
            .done())
    }
}
