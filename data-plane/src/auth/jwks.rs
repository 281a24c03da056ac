//! JSON Web Key Sets: parsed keys, and the fetcher for `jwks_uri`.
//!
//! A remote JWKS is fetched by the data plane (1.5 s timeout, body capped),
//! kept in memory and shared by every request. Fetches are single-flight:
//! concurrent requests that need one wait for the same fetch, which runs in
//! its own task, so a client that goes away does not cancel it. At most one
//! fetch starts per cooldown (10 s by default), whatever the reason: an
//! unknown `kid`, the first use, or a refresh of keys older than the max
//! age. So a flood of made-up `kid`s costs at most one fetch per cooldown.
//! A failed fetch leaves the keys in force untouched.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use futures::future::{BoxFuture, FutureExt, Shared};
use http::{header, Request, Uri};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::AuthTuning;
use crate::body;
use crate::upstream::HttpClient;

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One usable public key.
pub struct JwkKey {
    pub kid: Option<String>,
    /// The key's own `alg`, when it names one.
    pub alg: Option<Algorithm>,
    pub family: AlgorithmFamily,
    /// For EC keys: the curve's algorithm (P-256 → ES256, P-384 → ES384).
    pub curve_alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl JwkKey {
    /// May this key verify a token signed with `alg`?
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.family == alg.family()
            && self.alg.is_none_or(|a| a == alg)
            && self.curve_alg.is_none_or(|a| a == alg)
    }
}

/// The keys of one JWKS document.
#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<JwkKey>,
}

impl KeySet {
    /// Parse `{keys: [...]}`. Keys that cannot be used to verify signatures
    /// (symmetric `oct` keys, encryption keys, unknown types or curves) are
    /// skipped with a warning rather than failing the whole set.
    pub fn parse(doc: &serde_json::Value, source: &str) -> Result<KeySet, String> {
        let keys = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| "a JWKS must be an object with a \"keys\" array".to_string())?;
        let mut out = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            match parse_key(k) {
                Ok(key) => out.push(key),
                Err(why) => tracing::warn!(source, index = i, "skipping a JWK: {why}"),
            }
        }
        Ok(KeySet { keys: out })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Keys that may verify a token with this `kid` and `alg`. A token
    /// without `kid` may be verified by any key that fits its algorithm.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a JwkKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| kid.is_none_or(|id| k.kid.as_deref() == Some(id)) && k.fits(alg))
    }
}

fn parse_key(v: &serde_json::Value) -> Result<JwkKey, String> {
    let jwk: Jwk = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use: enc)".into());
    }
    let (family, curve_alg) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (AlgorithmFamily::Rsa, None),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => (AlgorithmFamily::Ec, Some(Algorithm::ES256)),
            EllipticCurve::P384 => (AlgorithmFamily::Ec, Some(Algorithm::ES384)),
            ref c => return Err(format!("unsupported curve {c:?}")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => (AlgorithmFamily::Ed, None),
            ref c => return Err(format!("unsupported curve {c:?}")),
        },
        // HS* only with the authorizer's inline secret, never from a JWKS.
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric (oct) key".into()),
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(ka) => Some(
            Algorithm::from_str(&format!("{ka:?}"))
                .map_err(|_| format!("alg {ka:?} is not a signature algorithm"))?,
        ),
    };
    if alg.is_some_and(|a| a.family() != family) {
        return Err(format!("alg {alg:?} does not fit the key type"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(JwkKey {
        kid: jwk.common.key_id.clone(),
        alg,
        family,
        curve_alg,
        key,
    })
}

#[derive(Default)]
struct FetchState {
    inflight: Option<Shared<BoxFuture<'static, ()>>>,
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
}

/// A JWKS behind a URL.
pub struct RemoteJwks {
    pub uri: Uri,
    client: HttpClient,
    tuning: Arc<AuthTuning>,
    keys: ArcSwapOption<KeySet>,
    state: Mutex<FetchState>,
    fetches: AtomicU64,
}

impl RemoteJwks {
    pub fn new(uri: Uri, client: HttpClient, tuning: Arc<AuthTuning>) -> Arc<Self> {
        Arc::new(Self {
            uri,
            client,
            tuning,
            keys: ArcSwapOption::empty(),
            state: Mutex::new(FetchState::default()),
            fetches: AtomicU64::new(0),
        })
    }

    /// Fetches started so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The keys in force, if any were ever fetched.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Start a fetch in the background if the cooldown allows (no-op
    /// outside a Tokio runtime). Used when a config brings the authorizer,
    /// so the first request finds keys.
    pub fn prefetch(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(self.start_fetch());
        }
    }

    /// The keys to verify with: those in force, or, when there are none
    /// yet, the result of a fetch (shared, within the cooldown). Keys past
    /// their max age are refreshed in the background.
    pub async fn keys(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        if let Some(k) = self.current() {
            let stale = {
                let st = self.state.lock().expect("jwks state");
                st.last_success
                    .is_none_or(|t| t.elapsed() >= self.tuning.jwks_max_age())
            };
            if stale {
                drop(self.start_fetch());
            }
            return Some(k);
        }
        self.refetch().await
    }

    /// A token named a `kid` that is not in force: fetch again if the
    /// cooldown allows, or join the fetch under way, and return the keys
    /// in force afterwards.
    pub async fn refetch(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        if let Some(f) = self.start_fetch() {
            f.await;
        }
        self.current()
    }

    /// The fetch under way, or a new one if the cooldown has passed.
    fn start_fetch(self: &Arc<Self>) -> Option<Shared<BoxFuture<'static, ()>>> {
        let mut st = self.state.lock().expect("jwks state");
        if let Some(f) = &st.inflight {
            return Some(f.clone());
        }
        if st
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.tuning.jwks_cooldown())
        {
            return None;
        }
        st.last_attempt = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        let fut = async move {
            let result = this.fetch().await;
            let mut st = this.state.lock().expect("jwks state");
            match result {
                Ok(set) => {
                    tracing::debug!(uri = %this.uri, keys = set.keys.len(), "JWKS fetched");
                    this.keys.store(Some(Arc::new(set)));
                    st.last_success = Some(Instant::now());
                }
                Err(why) => {
                    tracing::warn!(uri = %this.uri, "JWKS fetch failed, keeping the keys in force: {why}")
                }
            }
            st.inflight = None;
        }
        .boxed()
        .shared();
        st.inflight = Some(fut.clone());
        // Its own task: it completes even if every waiter goes away.
        tokio::spawn(fut.clone());
        Some(fut)
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let timeout = self.tuning.jwks_timeout();
        let get = async {
            let req = Request::get(self.uri.clone())
                .header(header::ACCEPT, "application/json")
                .body(body::empty())
                .map_err(|e| e.to_string())?;
            let doc = super::fetch_json(&self.client, req, MAX_JWKS_BYTES).await?;
            KeySet::parse(&doc, &self.uri.to_string())
        };
        match tokio::time::timeout(timeout, get).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_keys_are_skipped_and_candidates_fit_kid_and_alg() {
        let n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "r2", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": "AQAB"},
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "bad-alg", "alg": "ES256", "n": n, "e": "AQAB"},
            {"kty": "unknown"}
        ]});
        let set = KeySet::parse(&doc, "test").unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["r1", "r2"]);
        let ids = |kid, alg| {
            set.candidates(kid, alg)
                .map(|k| k.kid.as_deref().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(Some("r1"), Algorithm::RS256), ["r1"]);
        // r1 is pinned to RS256; r2 says nothing, so PS256 may use it.
        assert!(ids(Some("r1"), Algorithm::PS256).is_empty());
        assert_eq!(ids(None, Algorithm::PS256), ["r2"]);
        assert_eq!(ids(None, Algorithm::RS256), ["r1", "r2"]);
        assert!(ids(Some("r1"), Algorithm::ES256).is_empty());
        assert!(ids(Some("sym"), Algorithm::HS256).is_empty());
        assert!(KeySet::parse(&serde_json::json!({"nokeys": []}), "test").is_err());
    }
}
