//! API keys: the index of key records by keyed hash, the plans that grant
//! APIs, and the check a presented `x-api-key` goes through.
//!
//! The data plane never sees a key value from the control plane: records
//! carry the HMAC of the value under the cluster's secret. A presented
//! value is shape-checked (a typo fails its checksum before any lookup),
//! hashed with the same secret, looked up by hash (as bytes: records' hex
//! is decoded when they are indexed), and the stored hash is compared in
//! constant time.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use tollgate_model::docs::{ApiKeyRecord, UsagePlan};
use tollgate_model::key::{self, KeyDigest, ShapeError};

#[derive(Clone, Default)]
pub struct KeyIndex {
    /// Keyed hash → record.
    by_hash: crate::ImMap<KeyDigest, Arc<IndexedKey>>,
    /// Key id → its hash, to drop the old entry on update or removal.
    hash_of: crate::ImMap<String, KeyDigest>,
    /// Usage plans by id: the APIs they grant, and what the plan phase
    /// applies.
    plans: crate::ImMap<String, Arc<UsagePlan>>,
    hasher: Option<key::KeyHasher>,
}

/// A key as the request path uses it: its record, and the identity
/// headers for the upstream, made once per config change rather than on
/// every request.
#[derive(Debug)]
pub struct IndexedKey {
    pub rec: ApiKeyRecord,
    /// `rec.hash` decoded.
    digest: KeyDigest,
    /// `x-tollgate-tenant` and `x-tollgate-key-id` (`None` if a value is
    /// not a valid header value).
    pub tenant_header: Option<HeaderValue>,
    pub id_header: Option<HeaderValue>,
}

impl IndexedKey {
    fn new(rec: ApiKeyRecord, digest: KeyDigest) -> Self {
        Self {
            digest,
            tenant_header: HeaderValue::from_str(&rec.tenant).ok(),
            id_header: HeaderValue::from_str(&rec.id).ok(),
            rec,
        }
    }
}

#[cfg(test)]
impl IndexedKey {
    /// A key as if indexed, for tests elsewhere in the crate.
    pub(crate) fn for_tests(id: &str, tenant: &str) -> Arc<Self> {
        let rec = ApiKeyRecord {
            id: id.into(),
            tenant: tenant.into(),
            name: String::new(),
            prefix: String::new(),
            hash: String::new(),
            plans: Vec::new(),
            enabled: true,
            created_at: 0,
        };
        Arc::new(Self::new(rec, [0; 32]))
    }
}

impl std::ops::Deref for IndexedKey {
    type Target = ApiKeyRecord;

    fn deref(&self) -> &ApiKeyRecord {
        &self.rec
    }
}

/// A key that passed the check, and the first of its usage plans that
/// grants the API (the one the plan phase applies).
#[derive(Debug)]
pub struct Granted {
    pub key: Arc<IndexedKey>,
    pub plan: Arc<UsagePlan>,
}

/// Why a key was refused. Only logs see it; the client gets 403.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyRefusal {
    Missing,
    Malformed(ShapeError),
    /// The config has no key-hash secret (no `Settings` yet).
    NoSecret,
    /// No record has this hash: never issued, or revoked (deleted).
    Unknown,
    Disabled {
        key_id: String,
    },
    NotGranted {
        key_id: String,
    },
}

impl fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRefusal::Missing => f.write_str("no x-api-key header"),
            KeyRefusal::Malformed(e) => write!(f, "malformed key ({e})"),
            KeyRefusal::NoSecret => f.write_str("no key-hash secret in the config"),
            KeyRefusal::Unknown => f.write_str("unknown or revoked key"),
            KeyRefusal::Disabled { .. } => f.write_str("key disabled"),
            KeyRefusal::NotGranted { .. } => {
                f.write_str("none of the key's usage plans grants this API")
            }
        }
    }
}

impl KeyRefusal {
    /// Log the refusal: by key id when the key is known, never by value.
    pub fn log(&self, api: &str, route: &str) {
        match self {
            KeyRefusal::Disabled { key_id } | KeyRefusal::NotGranted { key_id } => {
                tracing::info!(api, route, key_id = %key_id, reason = %self, "API key refused")
            }
            KeyRefusal::NoSecret => {
                tracing::warn!(api, route, reason = %self, "API key refused")
            }
            _ => tracing::debug!(api, route, reason = %self, "API key refused"),
        }
    }
}

impl KeyIndex {
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn set_secret(&mut self, secret: Option<&str>) {
        self.hasher = secret.map(key::KeyHasher::new);
    }

    pub fn upsert_key(&mut self, rec: &ApiKeyRecord) {
        self.remove_key(&rec.id);
        // A hash not in the form the control plane writes could match no
        // presented key: such a record is not indexed.
        let Some(digest) = key::parse_hash(&rec.hash) else {
            tracing::warn!(key_id = %rec.id, "API key record has a malformed hash; ignored");
            return;
        };
        self.hash_of.insert(rec.id.clone(), digest);
        self.by_hash
            .insert(digest, Arc::new(IndexedKey::new(rec.clone(), digest)));
    }

    pub fn remove_key(&mut self, id: &str) {
        if let Some(hash) = self.hash_of.remove(id) {
            // Only if that hash still belongs to this key.
            if self.by_hash.get(&hash).is_some_and(|r| r.id == id) {
                self.by_hash.remove(&hash);
            }
        }
    }

    pub fn upsert_plan(&mut self, plan: &UsagePlan) {
        self.plans.insert(plan.id.clone(), Arc::new(plan.clone()));
    }

    pub fn remove_plan(&mut self, id: &str) {
        self.plans.remove(id);
    }

    /// The first of `plans` that grants `api`.
    pub fn granting_plan(&self, plans: &[String], api: &str) -> Option<&Arc<UsagePlan>> {
        plans.iter().find_map(|p| {
            self.plans
                .get(p)
                .filter(|plan| plan.apis.iter().any(|a| a == api))
        })
    }

    /// Check the value of an `x-api-key` header for `api`.
    pub fn check(&self, presented: Option<&HeaderValue>, api: &str) -> Result<Granted, KeyRefusal> {
        let value = presented.ok_or(KeyRefusal::Missing)?;
        let value = value
            .to_str()
            .map_err(|_| KeyRefusal::Malformed(ShapeError::Shape))?;
        key::check_shape(value).map_err(KeyRefusal::Malformed)?;
        let hasher = self.hasher.as_ref().ok_or(KeyRefusal::NoSecret)?;
        let digest = hasher.digest(value);
        // The map lookup is on the output of a keyed HMAC, which tells an
        // attacker nothing about stored values; the final compare is
        // constant-time all the same.
        let rec = self
            .by_hash
            .get(&digest)
            .filter(|r| key::digests_equal(&r.digest, &digest))
            .ok_or(KeyRefusal::Unknown)?;
        if !rec.enabled {
            return Err(KeyRefusal::Disabled {
                key_id: rec.id.clone(),
            });
        }
        let Some(plan) = self.granting_plan(&rec.plans, api) else {
            return Err(KeyRefusal::NotGranted {
                key_id: rec.id.clone(),
            });
        };
        Ok(Granted {
            key: rec.clone(),
            plan: plan.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, secret: &str, value: &str, plans: &[&str], enabled: bool) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.into(),
            tenant: "acme".into(),
            name: String::new(),
            prefix: key::display_prefix(value),
            hash: key::hash(secret, value),
            plans: plans.iter().map(|p| p.to_string()).collect(),
            enabled,
            created_at: 0,
        }
    }

    fn hv(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let secret = key::new_secret();
        let (good, off, other) = (key::generate(), key::generate(), key::generate());
        let mut idx = KeyIndex::default();
        let v = hv(&good);
        assert_eq!(
            idx.check(Some(&v), "orders").unwrap_err(),
            KeyRefusal::NoSecret
        );
        idx.set_secret(Some(&secret));
        idx.upsert_plan(&UsagePlan {
            id: "gold".into(),
            apis: vec!["orders".into()],
            throttle: None,
            quota: None,
            price: None,
        });
        idx.upsert_key(&record("k1", &secret, &good, &["gold"], true));
        idx.upsert_key(&record("k2", &secret, &off, &["gold"], false));
        idx.upsert_key(&record("k3", &secret, &other, &["silver"], true));
        assert_eq!(idx.check(Some(&v), "orders").unwrap().key.id, "k1");
        assert_eq!(idx.check(None, "orders").unwrap_err(), KeyRefusal::Missing);
        let mut typo = good.clone().into_bytes();
        typo[5] = if typo[5] == b'a' { b'b' } else { b'a' };
        let typo = hv(std::str::from_utf8(&typo).unwrap());
        assert_eq!(
            idx.check(Some(&typo), "orders").unwrap_err(),
            KeyRefusal::Malformed(ShapeError::Checksum)
        );
        let bytes = HeaderValue::from_bytes(b"tg_\xff\xfe").unwrap();
        assert!(matches!(
            idx.check(Some(&bytes), "orders").unwrap_err(),
            KeyRefusal::Malformed(_)
        ));
        assert_eq!(
            idx.check(Some(&hv(&key::generate())), "orders")
                .unwrap_err(),
            KeyRefusal::Unknown
        );
        assert_eq!(
            idx.check(Some(&hv(&off)), "orders").unwrap_err(),
            KeyRefusal::Disabled {
                key_id: "k2".into()
            }
        );
        assert_eq!(
            idx.check(Some(&hv(&other)), "orders").unwrap_err(),
            KeyRefusal::NotGranted {
                key_id: "k3".into()
            }
        );
        assert_eq!(
            idx.check(Some(&v), "billing").unwrap_err(),
            KeyRefusal::NotGranted {
                key_id: "k1".into()
            }
        );

        // Changes: a new hash for k1 drops the old one; removal drops it all;
        // the old index is untouched.
        let before = idx.clone();
        let rotated = key::generate();
        idx.upsert_key(&record("k1", &secret, &rotated, &["gold"], true));
        assert_eq!(
            idx.check(Some(&v), "orders").unwrap_err(),
            KeyRefusal::Unknown
        );
        assert!(idx.check(Some(&hv(&rotated)), "orders").is_ok());
        idx.remove_key("k1");
        assert_eq!(
            idx.check(Some(&hv(&rotated)), "orders").unwrap_err(),
            KeyRefusal::Unknown
        );
        idx.remove_plan("gold");
        assert!(matches!(
            idx.check(Some(&hv(&off)), "orders").unwrap_err(),
            KeyRefusal::Disabled { .. }
        ));
        assert_eq!(idx.len(), 2);
        assert_eq!(before.check(Some(&v), "orders").unwrap().key.id, "k1");

        // A stored hash in another form than the control plane's is not
        // indexed (it could match no presented key).
        let fresh = key::generate();
        let mut upper = record("k4", &secret, &fresh, &["gold"], true);
        upper.hash = upper.hash.to_uppercase();
        idx.upsert_key(&upper);
        assert_eq!(idx.len(), 2);
        assert_eq!(
            idx.check(Some(&hv(&fresh)), "orders").unwrap_err(),
            KeyRefusal::Unknown
        );
    }
}
