//! JWT authorizers: a compiled `Authorizer` document, and token checks.
//!
//! - Algorithms: only the authorizer's allow-list. `none` does not even
//!   parse. HS* only with the inline secret (validation forbids mixing HS
//!   and public-key algorithms, and JWKS `oct` keys are never used), so an
//!   HS token at an RSA/EC authorizer is refused before any key is tried.
//! - Claims: `iss`, `aud` (any of the configured audiences; checked when
//!   audiences are configured), `exp` required, `exp` and `nbf` checked with
//!   60 s leeway.
//! - Tokens over 8 KiB are refused unread.
//! - Verified tokens are cached by SHA-256 of the token until their `exp`,
//!   so a client reusing a token costs a hash and a map lookup.

use std::fmt;
use std::sync::Arc;

use dashmap::DashMap;
use http::header::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tollgate_model::docs::Authorizer;

use super::jwks::{KeySet, RemoteJwks};
use super::AuthContext;

/// Tokens longer than this are refused.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp` and `nbf`, seconds.
pub const LEEWAY_S: u64 = 60;
/// Verified tokens remembered per authorizer.
const CACHE_MAX: usize = 10_000;

/// Headers the gateway sets itself, or that must not come from a claim.
const RESERVED_HEADERS: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "authorization",
    "x-tollgate-tenant",
    "x-tollgate-key-id",
    "x-tollgate-subject",
];

/// What a valid token says about its bearer.
#[derive(Debug)]
pub struct Verified {
    pub subject: Option<String>,
    /// From `scope` (space separated) and `scp` (array or string).
    pub scopes: Vec<String>,
    /// `claims_to_headers`, rendered.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub exp: u64,
    /// Every claim, as the token carries it (function events pass them on;
    /// the token's size is bounded, so this is too).
    pub claims: Map<String, Value>,
}

/// Why a token was refused. Only logs see it; the client gets 401.
#[derive(Debug)]
pub enum JwtRefusal {
    TooLarge(usize),
    Malformed(String),
    AlgorithmNotAllowed(Algorithm),
    /// A remote JWKS that could not be fetched yet.
    NoKeys,
    UnknownKid(Option<String>),
    BadSignature,
    Invalid(String),
}

impl fmt::Display for JwtRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtRefusal::TooLarge(n) => write!(f, "token of {n} bytes, over {MAX_TOKEN_BYTES}"),
            JwtRefusal::Malformed(e) => write!(f, "malformed token: {e}"),
            JwtRefusal::AlgorithmNotAllowed(a) => write!(f, "algorithm {a:?} not allowed"),
            JwtRefusal::NoKeys => f.write_str("no JWKS keys available"),
            JwtRefusal::UnknownKid(k) => write!(f, "no key for kid {k:?}"),
            JwtRefusal::BadSignature => f.write_str("bad signature"),
            JwtRefusal::Invalid(e) => write!(f, "invalid token: {e}"),
        }
    }
}

enum KeySource {
    /// HS* with the inline secret.
    Secret(DecodingKey),
    Inline(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
}

/// An authorizer ready to check tokens.
pub struct CompiledAuthorizer {
    pub doc: Authorizer,
    validations: Vec<(Algorithm, Validation)>,
    source: KeySource,
    claim_headers: Vec<(String, HeaderName)>,
    claim_header_names: Vec<HeaderName>,
    cache: VerifiedCache,
}

/// Verified tokens by the SHA-256 of the token, each until its `exp` (with
/// the leeway). Sharded, so request threads checking tokens do not queue on
/// one lock.
#[derive(Default)]
struct VerifiedCache(DashMap<[u8; 32], Arc<Verified>, crate::FastHash>);

impl VerifiedCache {
    fn get(&self, digest: &[u8; 32], now: u64) -> Option<Arc<Verified>> {
        let live = |v: &Arc<Verified>| v.exp + LEEWAY_S >= now;
        // The read guard is dropped before an expired entry is removed (a
        // shard's write lock under its own read guard would deadlock).
        let found = self.0.get(digest).map(|v| v.clone())?;
        if live(&found) {
            return Some(found);
        }
        self.0.remove_if(digest, |_, v| !live(v));
        None
    }

    /// Remember `v`; when full, the expired entries go first, and if that
    /// frees nothing, all of them.
    fn put(&self, digest: [u8; 32], v: Arc<Verified>, now: u64) {
        if self.0.len() >= CACHE_MAX {
            self.0.retain(|_, v| v.exp + LEEWAY_S >= now);
            if self.0.len() >= CACHE_MAX {
                self.0.clear();
            }
        }
        self.0.insert(digest, v);
    }
}

/// Select the pure-Rust crypto backend for the process, so a dependency
/// that enables another backend cannot make verification panic.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    });
}

fn now_s() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl CompiledAuthorizer {
    /// Compile `doc`. A remote JWKS of `previous` is kept (with its keys and
    /// cooldown) while `jwks_uri` is unchanged.
    pub fn compile(
        doc: &Authorizer,
        previous: Option<&CompiledAuthorizer>,
        ctx: &AuthContext<'_>,
    ) -> Result<Self, String> {
        install_crypto();
        let mut validations = Vec::with_capacity(doc.algorithms.len());
        for name in &doc.algorithms {
            let alg: Algorithm = name
                .parse()
                .map_err(|_| format!("algorithm {name:?} is not supported"))?;
            let mut v = Validation::new(alg);
            v.leeway = LEEWAY_S;
            v.validate_exp = true;
            v.validate_nbf = true;
            v.set_issuer(&[&doc.issuer]);
            let mut required = vec!["exp", "iss"];
            if doc.audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&doc.audiences);
                required.push("aud");
            }
            v.set_required_spec_claims(&required);
            validations.push((alg, v));
        }
        let hs = validations
            .iter()
            .any(|(a, _)| a.family() == jsonwebtoken::AlgorithmFamily::Hmac);
        let source = if hs {
            let secret = doc
                .secret
                .as_deref()
                .ok_or("HS* algorithms need an inline secret")?;
            KeySource::Secret(DecodingKey::from_secret(secret.as_bytes()))
        } else if let Some(jwks) = &doc.jwks {
            KeySource::Inline(Arc::new(KeySet::parse(
                jwks,
                &format!("authorizer {}", doc.id),
            )?))
        } else if let Some(uri) = &doc.jwks_uri {
            let uri: http::Uri = uri.parse().map_err(|e| format!("jwks_uri: {e}"))?;
            let kept = previous.and_then(|p| match &p.source {
                KeySource::Remote(r) if r.uri == uri => Some(r.clone()),
                _ => None,
            });
            KeySource::Remote(kept.unwrap_or_else(|| {
                let r = RemoteJwks::new(uri, ctx.client.clone(), ctx.tuning.clone());
                r.prefetch();
                r
            }))
        } else {
            return Err("neither jwks nor jwks_uri".into());
        };
        let mut claim_headers = Vec::new();
        for (claim, header) in &doc.claims_to_headers {
            match HeaderName::try_from(header.as_str()) {
                Ok(h) if !RESERVED_HEADERS.contains(&h.as_str()) => {
                    claim_headers.push((claim.clone(), h))
                }
                _ => tracing::warn!(authorizer = %doc.id, claim, header,
                    "claims_to_headers: not a header the gateway may set; ignored"),
            }
        }
        let claim_header_names = claim_headers.iter().map(|(_, h)| h.clone()).collect();
        Ok(Self {
            doc: doc.clone(),
            validations,
            source,
            claim_headers,
            claim_header_names,
            cache: VerifiedCache::default(),
        })
    }

    pub fn forward_authorization(&self) -> bool {
        self.doc.forward_authorization
    }

    /// Headers filled from claims; the client's own values are dropped.
    pub fn claim_header_names(&self) -> &[HeaderName] {
        &self.claim_header_names
    }

    /// JWKS fetches so far (0 unless the keys come from `jwks_uri`).
    pub fn jwks_fetches(&self) -> u64 {
        match &self.source {
            KeySource::Remote(r) => r.fetches(),
            _ => 0,
        }
    }

    /// Check a bearer token.
    pub async fn verify(&self, token: &str) -> Result<Arc<Verified>, JwtRefusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtRefusal::TooLarge(token.len()));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now_s();
        if let Some(v) = self.cache.get(&digest, now) {
            return Ok(v);
        }
        let header = decode_header(token).map_err(|e| JwtRefusal::Malformed(e.to_string()))?;
        let alg = header.alg;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(JwtRefusal::AlgorithmNotAllowed(alg));
        };
        let kid = header.kid.as_deref();
        let claims = match &self.source {
            KeySource::Secret(key) => check(token, key, validation)?,
            KeySource::Inline(set) => with_set(set, token, kid, alg, validation)?,
            KeySource::Remote(remote) => {
                let set = remote.keys().await.ok_or(JwtRefusal::NoKeys)?;
                match with_set(&set, token, kid, alg, validation) {
                    // A kid not (yet) in force: maybe the keys rotated.
                    Err(JwtRefusal::UnknownKid(_)) => {
                        let set = remote.refetch().await.ok_or(JwtRefusal::NoKeys)?;
                        with_set(&set, token, kid, alg, validation)?
                    }
                    other => other?,
                }
            }
        };
        let verified = Arc::new(self.render(&claims));
        self.cache.put(digest, verified.clone(), now);
        Ok(verified)
    }

    fn render(&self, claims: &Map<String, Value>) -> Verified {
        let subject = claims.get("sub").and_then(claim_text);
        let mut scopes: Vec<String> = Vec::new();
        for name in ["scope", "scp"] {
            match claims.get(name) {
                Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_string)),
                Some(Value::Array(a)) => {
                    scopes.extend(a.iter().filter_map(|v| v.as_str().map(str::to_string)))
                }
                _ => {}
            }
        }
        let headers = self
            .claim_headers
            .iter()
            .filter_map(|(claim, name)| {
                let text = claims.get(claim).and_then(claim_text)?;
                Some((name.clone(), HeaderValue::from_str(&text).ok()?))
            })
            .collect();
        let exp = claims
            .get("exp")
            .and_then(|e| e.as_u64().or_else(|| e.as_f64().map(|f| f as u64)))
            .unwrap_or(0);
        Verified {
            subject,
            scopes,
            headers,
            exp,
            claims: claims.clone(),
        }
    }
}

/// A claim as header text: strings as they are, arrays of strings joined
/// with commas, anything else as compact JSON.
fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.iter().all(Value::is_string) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}

fn check(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, JwtRefusal> {
    decode::<Map<String, Value>>(token, key, validation)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => JwtRefusal::BadSignature,
            ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                JwtRefusal::Malformed(e.to_string())
            }
            _ => JwtRefusal::Invalid(e.to_string()),
        })
}

/// Try the keys that fit the token's `kid` and `alg`; the first that
/// verifies the signature decides.
fn with_set(
    set: &KeySet,
    token: &str,
    kid: Option<&str>,
    alg: Algorithm,
    validation: &Validation,
) -> Result<Map<String, Value>, JwtRefusal> {
    let mut last = None;
    for key in set.candidates(kid, alg) {
        match check(token, &key.key, validation) {
            Err(JwtRefusal::BadSignature) => last = Some(JwtRefusal::BadSignature),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| JwtRefusal::UnknownKid(kid.map(str::to_string))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(exp: u64) -> Arc<Verified> {
        Arc::new(Verified {
            subject: None,
            scopes: Vec::new(),
            headers: Vec::new(),
            exp,
            claims: Map::new(),
        })
    }

    #[test]
    fn a_cached_token_is_used_until_its_exp_and_the_leeway() {
        let cache = VerifiedCache::default();
        cache.put([1; 32], verified(1_000), 900);
        assert!(cache.get(&[1; 32], 1_000 + LEEWAY_S).is_some());
        assert!(cache.get(&[2; 32], 900).is_none());
        // Past the leeway: refused, and forgotten.
        assert!(cache.get(&[1; 32], 1_001 + LEEWAY_S).is_none());
        assert_eq!(cache.0.len(), 0);
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first_then_everything() {
        let cache = VerifiedCache::default();
        for i in 0..CACHE_MAX {
            let exp = if i == 0 { 10_000 } else { 100 };
            cache.put(
                (i as u64).to_le_bytes().repeat(4).try_into().unwrap(),
                verified(exp),
                50,
            );
        }
        let now = 100 + LEEWAY_S + 1;
        cache.put([0xff; 32], verified(10_000), now);
        // The one live token stayed, the expired went.
        assert_eq!(cache.0.len(), 2);
        assert!(cache
            .get(&0u64.to_le_bytes().repeat(4).try_into().unwrap(), now)
            .is_some());
        // Full of live tokens: cleared, then the new one kept.
        for i in 0..CACHE_MAX as u64 {
            cache.put(
                (i + 1).to_be_bytes().repeat(4).try_into().unwrap(),
                verified(10_000),
                now,
            );
        }
        assert!(cache.0.len() <= CACHE_MAX);
        assert!(cache
            .get(
                &(CACHE_MAX as u64)
                    .to_be_bytes()
                    .repeat(4)
                    .try_into()
                    .unwrap(),
                now
            )
            .is_some());
    }
}
