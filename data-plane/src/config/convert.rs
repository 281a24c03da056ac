//! Prost types stay at the edge: `ConfigUpdate` becomes a `ConfigDelta`
//! here, or a typed error that the client turns into a NACK. (Both types
//! live in other crates, so these are functions rather than `TryFrom`.)

use tollgate_model::{ConfigDelta, Resource, ResourceKind};
use tollgate_proto as pb;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{what}: unknown resource kind {value}")]
    UnknownKind { what: String, value: i32 },
    #[error("{kind} {id:?}: {source}")]
    BadDocument {
        kind: &'static str,
        id: String,
        source: serde_json::Error,
    },
    #[error("{kind} {id:?}: the document says id {inner:?}")]
    IdMismatch {
        kind: &'static str,
        id: String,
        inner: String,
    },
    #[error(
        "a delta must name its base revision and move forward (base {base}, revision {revision})"
    )]
    BadRevisions { base: u64, revision: u64 },
}

fn kind(what: impl FnOnce() -> String, value: i32) -> Result<ResourceKind, ConvertError> {
    use pb::ResourceKind as P;
    match P::try_from(value) {
        Ok(P::Api) => Ok(ResourceKind::Api),
        Ok(P::Authorizer) => Ok(ResourceKind::Authorizer),
        Ok(P::Tenant) => Ok(ResourceKind::Tenant),
        Ok(P::UsagePlan) => Ok(ResourceKind::UsagePlan),
        Ok(P::ApiKey) => Ok(ResourceKind::ApiKey),
        Ok(P::Settings) => Ok(ResourceKind::Settings),
        Ok(P::CacheFlush) => Ok(ResourceKind::CacheFlush),
        Ok(P::Deployment) => Ok(ResourceKind::Deployment),
        Ok(P::Stage) => Ok(ResourceKind::Stage),
        Ok(P::Unspecified) | Err(_) => Err(ConvertError::UnknownKind {
            what: what(),
            value,
        }),
    }
}

pub fn resource(r: pb::Resource) -> Result<Resource, ConvertError> {
    {
        let k = kind(|| format!("resource {:?}", r.id), r.kind)?;
        let doc =
            Resource::from_doc_json(k, &r.json).map_err(|source| ConvertError::BadDocument {
                kind: k.as_str(),
                id: r.id.clone(),
                source,
            })?;
        if doc.id() != r.id {
            return Err(ConvertError::IdMismatch {
                kind: k.as_str(),
                id: r.id,
                inner: doc.id().to_string(),
            });
        }
        Ok(doc)
    }
}

pub fn delta(u: pb::ConfigUpdate) -> Result<ConfigDelta, ConvertError> {
    {
        if !u.full && u.base_revision >= u.revision {
            return Err(ConvertError::BadRevisions {
                base: u.base_revision,
                revision: u.revision,
            });
        }
        let upserts = u
            .upserts
            .into_iter()
            .map(resource)
            .collect::<Result<_, _>>()?;
        let removals = u
            .removals
            .into_iter()
            .map(|r| Ok((kind(|| format!("removal {:?}", r.id), r.kind)?, r.id)))
            .collect::<Result<_, ConvertError>>()?;
        Ok(ConfigDelta {
            revision: u.revision,
            full: u.full,
            base_revision: u.base_revision,
            upserts,
            removals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_json(id: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"{id}","base_path":"/{id}","routes":[{{"id":"r","path":"/","mock":{{}}}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn converts_a_full_update() {
        let u = pb::ConfigUpdate {
            revision: 7,
            full: true,
            base_revision: 0,
            upserts: vec![pb::Resource {
                kind: pb::ResourceKind::Api as i32,
                id: "a".into(),
                json: api_json("a"),
            }],
            removals: vec![],
        };
        let d = delta(u).unwrap();
        assert_eq!(d.revision, 7);
        assert_eq!(d.upserts[0].id(), "a");
    }

    #[test]
    fn refuses_unknown_kinds_fields_and_mismatched_ids() {
        let mut r = pb::Resource {
            kind: 99,
            id: "a".into(),
            json: api_json("a"),
        };
        assert!(matches!(
            resource(r.clone()),
            Err(ConvertError::UnknownKind { .. })
        ));
        r.kind = pb::ResourceKind::Api as i32;
        r.id = "b".into();
        assert!(matches!(
            resource(r.clone()),
            Err(ConvertError::IdMismatch { .. })
        ));
        r.json = br#"{"id":"b","base_path":"/b","surprise":1}"#.to_vec();
        let err = resource(r).unwrap_err().to_string();
        assert!(err.contains("surprise"), "{err}");
    }

    #[test]
    fn refuses_a_delta_that_does_not_move_forward() {
        let u = pb::ConfigUpdate {
            revision: 5,
            full: false,
            base_revision: 5,
            ..Default::default()
        };
        assert!(matches!(delta(u), Err(ConvertError::BadRevisions { .. })));
    }
}
