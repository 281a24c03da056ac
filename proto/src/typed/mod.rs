//! The `TypedAdmin` service's documents to and from `tollgate_model`.
//!
//! Model → message is a plain `From`. Message → model is a `TryFrom` that
//! goes through the document's JSON form: an unset `optional` field is left
//! out, so serde's defaults and names (the REST API's) stay the only ones,
//! and a bad value is named by its path (`routes[0].mock.status`) as the
//! JSON door names it. Enum values are named `PREFIX_` + the JSON name in
//! upper case (`LOAD_BALANCING_LEAST_REQUEST` is `least_request`), one rule
//! for both directions.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tollgate_model::ValidationError;

use crate::v1 as pb;

mod api;
mod docs;

type Result<T> = std::result::Result<T, ValidationError>;

/// A message that has a JSON document form (the REST API's body).
pub trait ToDocument {
    fn to_document(self) -> Result<Value>;
}

/// The model document a top-level message stands for.
fn decode<T: DeserializeOwned>(doc: Value) -> Result<T> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "document".into() } else { path };
        ValidationError::new(field, e.into_inner().to_string())
    })
}

/// `TryFrom` through the document, for each top-level message.
macro_rules! through_document {
    ($($pb:ident => $model:ty),* $(,)?) => {$(
        impl TryFrom<pb::$pb> for $model {
            type Error = ValidationError;
            fn try_from(p: pb::$pb) -> Result<Self> {
                decode(p.to_document()?)
            }
        }
    )*};
}

through_document!(
    Api => tollgate_model::Api,
    Authorizer => tollgate_model::Authorizer,
    Tenant => tollgate_model::Tenant,
    UsagePlan => tollgate_model::UsagePlan,
    Stage => tollgate_model::stages::Stage,
    IssueKeyRequest => tollgate_model::IssueKeyRequest,
);

/// A `map<string, string>` field as a JSON object.
fn map(m: std::collections::BTreeMap<String, String>) -> Value {
    m.into_iter().collect()
}

/// A JSON object built field by field from a message.
struct Doc(Map<String, Value>);

impl Doc {
    fn new() -> Self {
        Self(Map::new())
    }

    fn set(mut self, name: &str, v: impl Into<Value>) -> Self {
        self.0.insert(name.into(), v.into());
        self
    }

    /// Unset is left out: the document's default applies.
    fn opt<V: Into<Value>>(self, name: &str, v: Option<V>) -> Self {
        match v {
            Some(v) => self.set(name, v),
            None => self,
        }
    }

    fn child<M: ToDocument>(self, name: &str, m: Option<M>) -> Result<Self> {
        let v = m.map(ToDocument::to_document).transpose();
        Ok(self.opt(name, v.map_err(|e| e.within(name))?))
    }

    fn children<M: ToDocument>(self, name: &str, ms: Vec<M>) -> Result<Self> {
        let items = ms
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.to_document()
                    .map_err(|e| e.within(format!("{name}[{i}]")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.set(name, items))
    }

    /// An enum field: 0 (unset) is left out, an unknown value refused.
    fn enumeration<E: Named>(self, name: &str, raw: i32) -> Result<Self> {
        if raw == 0 {
            return Ok(self);
        }
        let json = E::name_of(raw)
            .and_then(|n| n.strip_prefix(E::PREFIX))
            .ok_or_else(|| ValidationError::new(name, format!("{raw} is not a known value")))?;
        Ok(self.set(name, json.to_ascii_lowercase()))
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

/// A proto enum named by the rule above.
trait Named {
    const PREFIX: &'static str;
    fn name_of(raw: i32) -> Option<&'static str>;
    fn raw_of(name: &str) -> Option<i32>;
}

macro_rules! named {
    ($($ty:ident $prefix:literal),* $(,)?) => {$(
        impl Named for pb::$ty {
            const PREFIX: &'static str = $prefix;
            fn name_of(raw: i32) -> Option<&'static str> {
                Self::try_from(raw).ok().map(|e| e.as_str_name())
            }
            fn raw_of(name: &str) -> Option<i32> {
                Self::from_str_name(name).map(|e| e as i32)
            }
        }
    )*};
}

named!(
    Protocol "PROTOCOL_",
    LoadBalancing "LOAD_BALANCING_",
    AuthorizerType "AUTHORIZER_TYPE_",
    AuthorizerResponse "AUTHORIZER_RESPONSE_",
    QuotaPeriod "QUOTA_PERIOD_",
    Sticky "STICKY_",
);

/// A model enum as the proto value of the same name; 0 (unset, so the
/// default) for a value the proto lacks, which the enum test rules out.
fn enum_value<E: Named>(v: impl Serialize) -> i32 {
    serde_json::to_value(v)
        .ok()
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|json| E::raw_of(&format!("{}{}", E::PREFIX, json.to_ascii_uppercase())))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
