//! Authentication at the edge (issue 4): API keys, JWT authorizers with
//! JWKS, identity headers, per-route policies, CORS and IP lists.
//!
//! Tokens are signed with keys the tests generate (RSA with the `rsa`
//! crate, P-256 and Ed25519 with rcgen), and JWKS documents are served by a
//! real HTTP listener that counts its fetches.

use crate::common;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use common::dp::{
    eventually, http, resource, start_dp, start_dp_with, start_echo, MockControlPlane, Reply,
    TestUpstream,
};
use common::{init_tracing, Cluster};
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate_data_plane::{DataPlaneHandle, Limits};
use tollgate_model::key;
use tollgate_proto::{ConfigUpdate, ResourceKind as K, ResourceRef};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "orders-api";

// ------------------------------------------------------------ keys, tokens

/// An RSA signing key and its public JWK.
struct RsaKey {
    private: rsa::RsaPrivateKey,
    encoding: EncodingKey,
}

impl RsaKey {
    fn generate() -> RsaKey {
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        RsaKey {
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            private,
        }
    }

    fn jwk(&self, kid: &str) -> Value {
        let public = self.private.to_public_key();
        json!({"kty": "RSA", "kid": kid, "use": "sig",
               "n": B64.encode(public.n().to_bytes_be()),
               "e": B64.encode(public.e().to_bytes_be())})
    }

    fn public_pem(&self) -> String {
        self.private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }
}

/// Two RSA keys, made once per test binary (generation is slow unoptimised).
static KEY_A: LazyLock<RsaKey> = LazyLock::new(RsaKey::generate);
static KEY_B: LazyLock<RsaKey> = LazyLock::new(RsaKey::generate);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass every check; `jti` makes each token distinct (the
/// data plane caches verified tokens by hash).
fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "exp": now() + 300,
           "iat": now(), "jti": rand::random::<u64>().to_string()})
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn sign(claims: &Value, alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn rs256(claims: &Value, kid: &str, key: &RsaKey) -> String {
    sign(claims, Algorithm::RS256, Some(kid), &key.encoding)
}

/// `token` with its header replaced by one naming `kid` (the signature no
/// longer matches, which does not matter for a kid nobody knows).
fn with_kid(token: &str, kid: &str) -> String {
    let (_, rest) = token.split_once('.').unwrap();
    let h = B64.encode(json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string());
    format!("{h}.{rest}")
}

/// A token with `alg: none` and no signature.
fn unsigned(claims: &Value) -> String {
    let h = B64.encode(json!({"alg": "none", "typ": "JWT", "kid": "a"}).to_string());
    let c = B64.encode(claims.to_string());
    format!("{h}.{c}.")
}

// ------------------------------------------------------------ JWKS server

/// A JWKS endpoint on 127.0.0.1 that counts fetches. `mode`: 0 answers,
/// 1 hangs (never answers), 2 answers 500.
struct JwksServer {
    addr: SocketAddr,
    doc: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    mode: Arc<AtomicU8>,
    stop: CancellationToken,
}

impl JwksServer {
    async fn start(doc: Value) -> JwksServer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(AtomicUsize::new(0));
        let mode = Arc::new(AtomicU8::new(0));
        let stop = CancellationToken::new();
        let (d, h, m, st) = (doc.clone(), hits.clone(), mode.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = st.cancelled() => return,
                    r = l.accept() => r.unwrap().0,
                };
                let (d, h, m) = (d.clone(), h.clone(), m.clone());
                let svc = hyper::service::service_fn(move |_req: http::Request<Incoming>| {
                    let (d, h, m) = (d.clone(), h.clone(), m.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        match m.load(Ordering::SeqCst) {
                            1 => futures::future::pending::<()>().await,
                            2 => {
                                return Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .status(500)
                                        .body(Full::new(Bytes::from("down")))
                                        .unwrap(),
                                )
                            }
                            _ => {}
                        }
                        let body = d.lock().unwrap().to_string();
                        Ok(http::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap())
                    }
                });
                let st = st.clone();
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    tokio::select! { _ = conn => {}, _ = st.cancelled() => {} }
                });
            }
        });
        JwksServer {
            addr,
            doc,
            hits,
            mode,
            stop,
        }
    }

    fn uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn set(&self, doc: Value) {
        *self.doc.lock().unwrap() = doc;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

// ------------------------------------------------------------ config

fn update(revision: u64, base: u64, upserts: Vec<tollgate_proto::Resource>) -> ConfigUpdate {
    ConfigUpdate {
        revision,
        full: base == 0,
        base_revision: base,
        upserts,
        removals: vec![],
    }
}

fn api(doc: Value) -> tollgate_proto::Resource {
    let id = doc["id"].as_str().unwrap().to_string();
    resource(K::Api, &id, doc)
}

fn authorizer(doc: Value) -> tollgate_proto::Resource {
    let id = doc["id"].as_str().unwrap().to_string();
    resource(K::Authorizer, &id, doc)
}

fn plan(id: &str, apis: &[&str]) -> tollgate_proto::Resource {
    resource(K::UsagePlan, id, json!({"id": id, "apis": apis}))
}

fn settings(secret: &str) -> tollgate_proto::Resource {
    resource(K::Settings, "cluster", json!({"key_hash_secret": secret}))
}

/// A key record as the control plane would stream it: hash only.
fn key_record(
    id: &str,
    secret: &str,
    value: &str,
    plans: &[&str],
    enabled: bool,
) -> tollgate_proto::Resource {
    resource(
        K::ApiKey,
        id,
        json!({"id": id, "tenant": "acme", "name": id, "prefix": key::display_prefix(value),
               "hash": key::hash(secret, value), "plans": plans, "enabled": enabled,
               "created_at": 0}),
    )
}

/// A data plane fed by a mock control plane holding `upserts` at revision 1.
async fn dp_with(upserts: Vec<tollgate_proto::Resource>) -> (MockControlPlane, DataPlaneHandle) {
    let cp = MockControlPlane::start().await;
    let dp = start_dp_with(vec![cp.url.clone()], None, Limits::default(), None).await;
    assert_eq!(cp.push(update(1, 0, upserts)).await, Reply::Ack(1));
    (cp, dp)
}

fn jwt_authorizer(id: &str, jwks: Value) -> Value {
    let mut doc = json!({"id": id, "issuer": ISSUER, "audiences": [AUDIENCE, "other-api"],
                         "algorithms": ["RS256"],
                         "claims_to_headers": {"email": "x-user-email", "groups": "x-user-groups"}});
    match jwks {
        Value::String(uri) => doc["jwks_uri"] = uri.into(),
        inline => doc["jwks"] = inline,
    }
    doc
}

// ------------------------------------------------------------ requests

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    /// A header the echo upstream received.
    fn upstream(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
}

async fn call(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = client.request(method.parse().unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    Answer {
        status,
        headers,
        text,
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    call(&http(), "GET", url, headers).await
}

async fn bearer(url: &str, token: &str) -> Answer {
    get(url, &[("authorization", &format!("Bearer {token}"))]).await
}

fn assert_forbidden(a: &Answer, what: &str) {
    assert_eq!(a.status, 403, "{what}: {}", a.text);
    assert_eq!(a.json(), json!({"message": "Forbidden"}), "{what}");
}

fn assert_unauthorized(a: &Answer, what: &str) {
    assert_eq!(a.status, 401, "{what}: {}", a.text);
    assert_eq!(a.json(), json!({"message": "Unauthorized"}), "{what}");
    assert_eq!(
        a.headers["www-authenticate"], "Bearer error=\"invalid_token\"",
        "{what}"
    );
}

// ------------------------------------------------------------ API keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_valid_missing_malformed_unknown_revoked_not_granted() {
    init_tracing();
    let (echo, _stop) = start_echo().await;
    let secret = key::new_secret();
    let good = key::generate();
    let revoked = key::generate();
    let disabled = key::generate();
    let silver = key::generate();
    // An imported (non-generated) key works as well.
    let imported = "legacy-key-0123456789-abcdef";
    let orders = json!({"id": "orders", "base_path": "/orders",
        "upstream": {"targets": [{"url": format!("http://{echo}")}]},
        "auth": {"api_key": true},
        "routes": [{"id": "all", "path": "/{rest+}"},
                   {"id": "open", "path": "/public", "auth": {}}]});
    let (cp, dp) = dp_with(vec![
        settings(&secret),
        plan("gold", &["orders"]),
        plan("silver", &["billing"]),
        api(orders),
        key_record("key-good", &secret, &good, &["gold"], true),
        key_record("key-revoked", &secret, &revoked, &["gold"], true),
        key_record("key-disabled", &secret, &disabled, &["gold"], false),
        key_record("key-silver", &secret, &silver, &["silver"], true),
        key_record("key-imported", &secret, imported, &["silver", "gold"], true),
    ])
    .await;
    let url = format!("http://{}/orders/items/1", dp.proxy_addr);

    // Valid: 200, and the upstream learns who called, never the key.
    let ok = get(
        &url,
        &[
            ("x-api-key", &good),
            // Spoofing attempts: replaced or removed by the gateway.
            ("x-tollgate-tenant", "evil"),
            ("x-tollgate-subject", "root"),
            ("x-tollgate-anything", "x"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.upstream("x-tollgate-tenant").as_deref(), Some("acme"));
    assert_eq!(
        ok.upstream("x-tollgate-key-id").as_deref(),
        Some("key-good")
    );
    assert_eq!(ok.upstream("x-tollgate-subject"), None);
    assert_eq!(ok.upstream("x-tollgate-anything"), None);
    assert_eq!(ok.upstream("x-api-key"), None);
    assert!(
        !ok.text.contains(&good) && !ok.text.contains(&good[3..20]),
        "the key value reached the upstream: {}",
        ok.text
    );
    let imp = get(&url, &[("x-api-key", imported)]).await;
    assert_eq!(imp.status, 200);
    assert_eq!(
        imp.upstream("x-tollgate-key-id").as_deref(),
        Some("key-imported")
    );

    // Missing, malformed (bad checksum), unknown: 403 each.
    assert_forbidden(&get(&url, &[]).await, "missing key");
    let mut typo = good.clone().into_bytes();
    typo[10] = if typo[10] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    assert_eq!(key::check_shape(&typo), Err(key::ShapeError::Checksum));
    assert_forbidden(&get(&url, &[("x-api-key", &typo)]).await, "bad checksum");
    assert_forbidden(&get(&url, &[("x-api-key", "short")]).await, "bad shape");
    assert_forbidden(
        &get(&url, &[("x-api-key", &key::generate())]).await,
        "unknown key",
    );
    // Disabled, and not granted (its plan grants another API): 403.
    assert_forbidden(
        &get(&url, &[("x-api-key", &disabled)]).await,
        "disabled key",
    );
    assert_forbidden(&get(&url, &[("x-api-key", &silver)]).await, "not granted");

    // Revoked: works, then a delta removes its record, then 403.
    assert_eq!(get(&url, &[("x-api-key", &revoked)]).await.status, 200);
    let reply = cp
        .push(ConfigUpdate {
            revision: 2,
            full: false,
            base_revision: 1,
            upserts: vec![],
            removals: vec![ResourceRef {
                kind: K::ApiKey as i32,
                id: "key-revoked".into(),
            }],
        })
        .await;
    assert_eq!(reply, Reply::Ack(2));
    assert_forbidden(&get(&url, &[("x-api-key", &revoked)]).await, "revoked key");
    // Re-enabling the disabled key and granting silver's key this API
    // (upserts) take effect as well.
    let reply = cp
        .push(update(
            3,
            2,
            vec![
                key_record("key-disabled", &secret, &disabled, &["gold"], true),
                plan("silver", &["billing", "orders"]),
            ],
        ))
        .await;
    assert_eq!(reply, Reply::Ack(3));
    assert_eq!(get(&url, &[("x-api-key", &disabled)]).await.status, 200);
    assert_eq!(get(&url, &[("x-api-key", &silver)]).await.status, 200);
    assert_eq!(get(&url, &[("x-api-key", &good)]).await.status, 200);

    // A route with its own open policy needs no key, and still gets no
    // spoofed identity.
    let open = get(
        &format!("http://{}/orders/public", dp.proxy_addr),
        &[("x-tollgate-tenant", "evil"), ("x-tollgate-key-id", "k")],
    )
    .await;
    assert_eq!(open.status, 200);
    assert_eq!(open.upstream("x-tollgate-tenant"), None);
    assert_eq!(open.upstream("x-tollgate-key-id"), None);
    cp.stop();
}

/// A real control plane: keys issued over the admin API; disabling one and
/// revoking another are seen by two data planes within 1 s of the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_reaches_two_data_planes_within_a_second() {
    init_tracing();
    let c = Cluster::start(1).await;
    let (echo, _stop) = start_echo().await;
    let admin = c.nodes[0].client();
    admin
        .must_put("/v1/tenants/acme", json!({"name": "Acme"}))
        .await;
    admin
        .must_put(
            "/v1/apis/orders",
            json!({"id": "orders", "base_path": "/orders",
                   "upstream": {"targets": [{"url": format!("http://{echo}")}]},
                   "auth": {"api_key": true},
                   "routes": [{"id": "all", "path": "/{rest+}"}]}),
        )
        .await;
    admin
        .must_put("/v1/usage-plans/gold", json!({"apis": ["orders"]}))
        .await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (s, v) = admin
            .post("/v1/keys", json!({"tenant": "acme", "plans": ["gold"]}))
            .await;
        assert_eq!(s, 201, "{v}");
        keys.push((
            v["id"].as_str().unwrap().to_string(),
            v["value"].as_str().unwrap().to_string(),
        ));
    }
    let dps = [
        start_dp(vec![c.nodes[0].grpc_url()], None).await,
        start_dp(vec![c.nodes[0].grpc_url()], None).await,
    ];
    let http = http();
    let status = |dp: &DataPlaneHandle, value: &str| {
        let req = http
            .get(format!("http://{}/orders/x", dp.proxy_addr))
            .header("x-api-key", value);
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    for dp in &dps {
        for (_, value) in &keys {
            eventually("the key to work", Duration::from_secs(10), || async {
                status(dp, value).await == 200
            })
            .await;
        }
    }
    // The identity reaches the upstream through a real control plane too.
    let a = get(
        &format!("http://{}/orders/x", dps[0].proxy_addr),
        &[("x-api-key", &keys[0].1)],
    )
    .await;
    assert_eq!(
        a.upstream("x-tollgate-key-id").as_deref(),
        Some(keys[0].0.as_str())
    );
    assert_eq!(a.upstream("x-tollgate-tenant").as_deref(), Some("acme"));
    assert!(!a.text.contains(&keys[0].1));

    // Disable the first key (PATCH), delete the second (revoke).
    for (i, (id, value)) in keys.iter().enumerate() {
        let started = Instant::now();
        let (s, v) = if i == 0 {
            admin
                .call(
                    "PATCH",
                    &format!("/v1/keys/{id}"),
                    Some(json!({"enabled": false})),
                )
                .await
        } else {
            admin.delete(&format!("/v1/keys/{id}")).await
        };
        assert_eq!(s, 200, "{v}");
        let mut seen = Vec::new();
        for dp in &dps {
            while status(dp, value).await != 403 {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "key {id} still accepted 1 s after the write"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen.push(started.elapsed());
        }
        println!(
            "{} key {id}: 403 on both data planes after {:?}",
            if i == 0 { "disabled" } else { "revoked" },
            seen
        );
        assert!(seen.iter().all(|d| *d < Duration::from_secs(1)));
    }
}

// ------------------------------------------------------------ JWT

/// Every bad token is a 401; a good one without the route's scope is 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_failures_are_401_and_a_missing_scope_is_403() {
    init_tracing();
    let (echo, _stop) = start_echo().await;
    let jwks = JwksServer::start(json!({"keys": [KEY_A.jwk("a")]})).await;
    let mut fwd = jwt_authorizer("idp-fwd", json!({"keys": [KEY_A.jwk("a")]}));
    fwd["forward_authorization"] = true.into();
    let up = json!({"targets": [{"url": format!("http://{echo}")}]});
    let (cp, dp) = dp_with(vec![
        authorizer(jwt_authorizer("idp", jwks.uri().into())),
        authorizer(fwd),
        api(
            json!({"id": "orders", "base_path": "/orders", "upstream": up,
            "auth": {"authorizer": "idp"},
            "routes": [{"id": "all", "path": "/{rest+}"},
                       {"id": "admin", "path": "/admin",
                        "auth": {"authorizer": "idp", "scopes": ["orders:admin"]}}]}),
        ),
        api(json!({"id": "fwd", "base_path": "/fwd", "upstream": up,
            "auth": {"authorizer": "idp-fwd"}, "routes": [{"id": "all", "path": "/{rest+}"}]})),
    ])
    .await;
    let url = format!("http://{}/orders/items/1", dp.proxy_addr);
    let admin_url = format!("http://{}/orders/admin", dp.proxy_addr);

    // A valid token: 200; subject and mapped claims go upstream, the
    // Authorization header does not, nor client-made identity headers.
    let token = rs256(
        &with(
            claims(),
            json!({"email": "u1@example.test", "groups": ["a", "b"]}),
        ),
        "a",
        &KEY_A,
    );
    let ok = get(
        &url,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-tollgate-subject", "root"),
            ("x-tollgate-tenant", "evil"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.upstream("x-tollgate-subject").as_deref(), Some("user-1"));
    assert_eq!(
        ok.upstream("x-user-email").as_deref(),
        Some("u1@example.test")
    );
    assert_eq!(ok.upstream("x-user-groups").as_deref(), Some("a,b"));
    assert_eq!(ok.upstream("x-tollgate-tenant"), None);
    assert_eq!(ok.upstream("authorization"), None);
    assert!(!ok.text.contains(&token));
    // A token without the claim: the client's own x-user-email is dropped.
    let spoof = get(
        &url,
        &[
            (
                "authorization",
                &format!("Bearer {}", rs256(&claims(), "a", &KEY_A)),
            ),
            ("x-user-email", "ceo@example.test"),
        ],
    )
    .await;
    assert_eq!(spoof.status, 200);
    assert_eq!(spoof.upstream("x-user-email"), None);
    // An authorizer with forward_authorization passes the header on.
    let token2 = rs256(&claims(), "a", &KEY_A);
    let f = bearer(&format!("http://{}/fwd/x", dp.proxy_addr), &token2).await;
    assert_eq!(f.status, 200, "{}", f.text);
    assert_eq!(
        f.upstream("authorization"),
        Some(format!("Bearer {token2}"))
    );
    // Leeway: expired 30 s ago, or valid from 30 s on, still passes.
    let leeway = [
        with(claims(), json!({"exp": now() - 30})),
        with(claims(), json!({"nbf": now() + 30})),
    ];
    for c in &leeway {
        assert_eq!(
            bearer(&url, &rs256(c, "a", &KEY_A)).await.status,
            200,
            "{c}"
        );
    }
    // `aud` as a list: any configured audience will do.
    let aud_list = with(claims(), json!({"aud": ["someone-else", "other-api"]}));
    assert_eq!(
        bearer(&url, &rs256(&aud_list, "a", &KEY_A)).await.status,
        200
    );

    // The failures, each a 401.
    let hs_confusion = sign(
        &claims(),
        Algorithm::HS256,
        Some("a"),
        &EncodingKey::from_secret(KEY_A.public_pem().as_bytes()),
    );
    let mut mangled = rs256(&claims(), "a", &KEY_A);
    let last = mangled.pop().unwrap();
    mangled.push(if last == 'A' { 'B' } else { 'A' });
    let expired = rs256(&with(claims(), json!({"exp": now() - 120})), "a", &KEY_A);
    // A token of about `bytes` bytes, validly signed.
    let sized = |bytes: usize| {
        let mut pad = bytes * 3 / 4 - 400;
        loop {
            let t = rs256(
                &with(claims(), json!({"pad": "x".repeat(pad)})),
                "a",
                &KEY_A,
            );
            if t.len() >= bytes {
                return t;
            }
            pad += (bytes - t.len()) * 3 / 4 + 1;
        }
    };
    let huge = sized(9 * 1024);
    assert!(
        (9 * 1024..9 * 1024 + 64).contains(&huge.len()),
        "{}",
        huge.len()
    );
    // Just under the limit is fine.
    let big = sized(8 * 1024 - 100);
    assert!(big.len() <= 8 * 1024);
    assert_eq!(bearer(&url, &big).await.status, 200);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("alg: none", Some(unsigned(&claims()))),
        ("HS256 signed with the RSA public key", Some(hs_confusion)),
        // B's signature under A's kid.
        ("signed by another key", Some(rs256(&claims(), "a", &KEY_B))),
        ("mangled signature", Some(mangled)),
        ("expired", Some(expired.clone())),
        (
            "nbf in the future",
            Some(rs256(
                &with(claims(), json!({"nbf": now() + 120})),
                "a",
                &KEY_A,
            )),
        ),
        (
            "wrong iss",
            Some(rs256(
                &with(claims(), json!({"iss": "https://evil.test"})),
                "a",
                &KEY_A,
            )),
        ),
        (
            "no iss",
            Some(rs256(&with(claims(), json!({"iss": null})), "a", &KEY_A)),
        ),
        (
            "wrong aud",
            Some(rs256(
                &with(claims(), json!({"aud": "billing-api"})),
                "a",
                &KEY_A,
            )),
        ),
        (
            "missing exp",
            Some(rs256(&with(claims(), json!({"exp": null})), "a", &KEY_A)),
        ),
        ("kid not in the JWKS", Some(rs256(&claims(), "b", &KEY_B))),
        ("a 9 KiB token", Some(huge)),
        ("not a JWT", Some("not.a.jwt".into())),
    ];
    for (what, token) in &cases {
        let a = match token {
            None => get(&url, &[]).await,
            Some(t) => bearer(&url, t).await,
        };
        assert_unauthorized(&a, what);
    }
    // A non-Bearer scheme is no token either.
    let basic = get(&url, &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_unauthorized(&basic, "Basic auth");

    // Scopes: missing → 403; in `scope` or `scp` → 200.
    let no_scope = rs256(
        &with(claims(), json!({"scope": "orders:read"})),
        "a",
        &KEY_A,
    );
    assert_forbidden(&bearer(&admin_url, &no_scope).await, "missing scope");
    let scope = rs256(
        &with(claims(), json!({"scope": "orders:read orders:admin"})),
        "a",
        &KEY_A,
    );
    assert_eq!(bearer(&admin_url, &scope).await.status, 200);
    let scp = rs256(
        &with(claims(), json!({"scp": ["orders:admin"]})),
        "a",
        &KEY_A,
    );
    assert_eq!(bearer(&admin_url, &scp).await.status, 200);
    // An invalid token on a scoped route is still 401, not 403.
    assert_unauthorized(&bearer(&admin_url, &expired).await, "expired on admin");
    cp.stop();
}

/// Public-key algorithms other than RS256 (PS256, ES256, EdDSA) from an
/// inline JWKS, HS256 with an inline secret, and rotating an inline JWKS
/// through a config update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_algorithms_and_inline_jwks_rotation() {
    init_tracing();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let point = ec.public_key_raw();
    assert_eq!(point.len(), 65);
    let ec_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "ec",
                        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])});
    let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed",
                        "x": B64.encode(ed.public_key_raw())});
    let ec_key = EncodingKey::from_ec_der(&ec.serialize_der());
    let ed_key = EncodingKey::from_ed_der(&ed.serialize_der());
    let pk = |id: &str, algs: Value, keys: Value| {
        json!({"id": id, "issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": algs,
               "jwks": {"keys": keys}})
    };
    let route_api = |id: &str, authorizer: &str| {
        api(
            json!({"id": id, "base_path": format!("/{id}"), "auth": {"authorizer": authorizer},
                   "routes": [{"id": "r", "path": "/", "mock": {"body": id}}]}),
        )
    };
    let (cp, dp) = dp_with(vec![
        authorizer(pk(
            "pk",
            json!(["PS256", "ES256", "EdDSA"]),
            json!([KEY_A.jwk("rsa"), ec_jwk, ed_jwk]),
        )),
        authorizer(
            json!({"id": "hs", "issuer": ISSUER, "audiences": [AUDIENCE],
                          "algorithms": ["HS256"], "secret": "a-shared-secret-of-some-length"}),
        ),
        route_api("pk", "pk"),
        route_api("hs", "hs"),
    ])
    .await;
    let pk_url = format!("http://{}/pk", dp.proxy_addr);
    let hs_url = format!("http://{}/hs", dp.proxy_addr);
    let ok = [
        sign(&claims(), Algorithm::PS256, Some("rsa"), &KEY_A.encoding),
        sign(&claims(), Algorithm::ES256, Some("ec"), &ec_key),
        sign(&claims(), Algorithm::EdDSA, Some("ed"), &ed_key),
        // Without a kid, any key that fits the algorithm is tried.
        sign(&claims(), Algorithm::ES256, None, &ec_key),
    ];
    for t in &ok {
        let a = bearer(&pk_url, t).await;
        assert_eq!((a.status, a.text.as_str()), (200, "pk"), "{t}");
    }
    // Not on the allow-list: RS256 with a listed RSA key, ES256 under the
    // Ed25519 key's kid, HS256 at a public-key authorizer.
    let refused = [
        sign(&claims(), Algorithm::RS256, Some("rsa"), &KEY_A.encoding),
        sign(&claims(), Algorithm::ES256, Some("ed"), &ec_key),
        sign(
            &claims(),
            Algorithm::HS256,
            Some("rsa"),
            &EncodingKey::from_secret(b"a-shared-secret-of-some-length"),
        ),
    ];
    for t in &refused {
        assert_unauthorized(&bearer(&pk_url, t).await, "algorithm refused");
    }
    let hs = EncodingKey::from_secret(b"a-shared-secret-of-some-length");
    assert_eq!(
        bearer(&hs_url, &sign(&claims(), Algorithm::HS256, None, &hs))
            .await
            .status,
        200
    );
    let wrong = EncodingKey::from_secret(b"another-secret");
    assert_unauthorized(
        &bearer(&hs_url, &sign(&claims(), Algorithm::HS256, None, &wrong)).await,
        "HS256 with the wrong secret",
    );
    assert_unauthorized(
        &bearer(
            &hs_url,
            &sign(&claims(), Algorithm::RS256, Some("rsa"), &KEY_A.encoding),
        )
        .await,
        "RS256 at an HS authorizer",
    );

    // Rotate the inline JWKS: B replaces A's RSA key, without a restart.
    let rotated = pk("pk", json!(["PS256"]), json!([KEY_B.jwk("rsa-2")]));
    assert_eq!(
        cp.push(update(2, 1, vec![authorizer(rotated)])).await,
        Reply::Ack(2)
    );
    let new = sign(&claims(), Algorithm::PS256, Some("rsa-2"), &KEY_B.encoding);
    assert_eq!(bearer(&pk_url, &new).await.status, 200);
    let old = sign(&claims(), Algorithm::PS256, Some("rsa"), &KEY_A.encoding);
    assert_unauthorized(&bearer(&pk_url, &old).await, "retired inline key");
    cp.stop();
}

// ------------------------------------------------------------ JWKS

fn orders_with(authorizer_id: &str) -> tollgate_proto::Resource {
    api(
        json!({"id": "orders", "base_path": "/orders", "auth": {"authorizer": authorizer_id},
               "routes": [{"id": "r", "path": "/{rest+}", "mock": {"body": "ok"}}]}),
    )
}

/// The JWKS behind `jwks_uri` rotates: the new key works without a restart
/// (an unknown kid triggers a refetch), and the retired one stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_needs_no_restart() {
    init_tracing();
    let jwks = JwksServer::start(json!({"keys": [KEY_A.jwk("a")]})).await;
    let (cp, dp) = dp_with(vec![
        authorizer(jwt_authorizer("idp", jwks.uri().into())),
        orders_with("idp"),
    ])
    .await;
    dp.gateway
        .auth_tuning
        .set_jwks_cooldown(Duration::from_millis(300));
    let url = format!("http://{}/orders/x", dp.proxy_addr);
    assert_eq!(
        bearer(&url, &rs256(&claims(), "a", &KEY_A)).await.status,
        200
    );
    assert_eq!(jwks.hits(), 1, "one fetch for the first keys");

    // Publish B only. A token signed by B names kid "b", unknown so far.
    jwks.set(json!({"keys": [KEY_B.jwk("b")]}));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let b = bearer(&url, &rs256(&claims(), "b", &KEY_B)).await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(jwks.hits(), 2);
    // More B tokens: no more fetches.
    for _ in 0..10 {
        assert_eq!(
            bearer(&url, &rs256(&claims(), "b", &KEY_B)).await.status,
            200
        );
    }
    assert_eq!(jwks.hits(), 2);
    // A's key is gone from the set in force.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_unauthorized(
        &bearer(&url, &rs256(&claims(), "a", &KEY_A)).await,
        "retired key",
    );
    let snapshot = dp.gateway.snapshot();
    assert_eq!(
        snapshot.auth.authorizer("idp").unwrap().jwks_fetches() as usize,
        jwks.hits()
    );
    cp.stop();
}

/// 1,000 tokens with made-up kids, 50 at a time: each is 401 and together
/// they cause at most a handful of JWKS fetches (one per cooldown, 10 s by
/// default, 1 s here). Concurrent requests share one fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_causes_a_handful_of_fetches() {
    init_tracing();
    let jwks = JwksServer::start(json!({"keys": [KEY_A.jwk("a")]})).await;
    let (cp, dp) = dp_with(vec![
        authorizer(jwt_authorizer("idp", jwks.uri().into())),
        orders_with("idp"),
    ])
    .await;
    let url = format!("http://{}/orders/x", dp.proxy_addr);
    // Keys in force first; then let a (shortened) cooldown pass, so the
    // flood's first unknown kid may fetch again, once.
    assert_eq!(
        bearer(&url, &rs256(&claims(), "a", &KEY_A)).await.status,
        200
    );
    assert_eq!(jwks.hits(), 1);
    let cooldown = Duration::from_secs(1);
    dp.gateway.auth_tuning.set_jwks_cooldown(cooldown);
    tokio::time::sleep(cooldown + Duration::from_millis(100)).await;
    let http = http();
    let signed = rs256(&claims(), "a", &KEY_A);
    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..1000)
        .map(|_| {
            let kid = format!("kid-{:016x}", rand::random::<u64>());
            let token = with_kid(&signed, &kid);
            let req = http
                .get(&url)
                .header("authorization", format!("Bearer {token}"));
            async move { req.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let took = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    println!(
        "1000 unknown-kid requests in {took:?}: {} JWKS fetches",
        jwks.hits()
    );
    // The initial fetch, one refetch, and one per further cooldown.
    let allowed = 2 + took.as_secs() as usize;
    assert!(
        jwks.hits() >= 2,
        "an unknown kid after the cooldown refetches"
    );
    assert!(
        jwks.hits() <= allowed,
        "{} JWKS fetches for a flood of made-up kids (at most {allowed})",
        jwks.hits()
    );
    // The real key still works, from the keys in force.
    assert_eq!(
        bearer(&url, &rs256(&claims(), "a", &KEY_A)).await.status,
        200
    );
    cp.stop();
}

/// The JWKS endpoint hangs, then fails, then goes away: the keys fetched
/// before stay in force, and a request never waits longer than the fetch
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_endpoint_that_is_down_leaves_the_cached_keys_in_force() {
    init_tracing();
    let jwks = JwksServer::start(json!({"keys": [KEY_A.jwk("a")]})).await;
    let (cp, dp) = dp_with(vec![
        authorizer(jwt_authorizer("idp", jwks.uri().into())),
        orders_with("idp"),
    ])
    .await;
    let tuning = &dp.gateway.auth_tuning;
    tuning.set_jwks_cooldown(Duration::from_millis(200));
    let url = format!("http://{}/orders/x", dp.proxy_addr);
    assert_eq!(
        bearer(&url, &rs256(&claims(), "a", &KEY_A)).await.status,
        200
    );
    let fetched = jwks.hits();

    // 1. The endpoint hangs. An unknown kid waits for the refetch, which
    //    gives up after the 1.5 s timeout; known kids do not wait at all.
    jwks.mode.store(1, Ordering::SeqCst);
    let unknown = rs256(&claims(), "new", &KEY_B);
    let known = rs256(&claims(), "a", &KEY_A);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let slow = tokio::spawn({
        let url = url.clone();
        async move {
            let t = Instant::now();
            let status = bearer(&url, &unknown).await.status;
            (status, t.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t_known = Instant::now();
    assert_eq!(bearer(&url, &known).await.status, 200);
    assert!(
        t_known.elapsed() < Duration::from_millis(500),
        "a known kid waited for the JWKS fetch"
    );
    assert!(
        !slow.is_finished(),
        "the unknown kid did not wait for the fetch"
    );
    let (status, waited) = slow.await.unwrap();
    assert_eq!(status, 401);
    assert!(
        waited >= Duration::from_millis(1_400) && waited < Duration::from_millis(3_000),
        "the unknown kid waited {waited:?} (fetch timeout 1.5 s)"
    );
    assert_eq!(jwks.hits(), fetched + 1);

    // 2. The endpoint answers 500; refreshes of stale keys fail too.
    jwks.mode.store(2, Ordering::SeqCst);
    tuning.set_jwks_max_age(Duration::from_millis(1));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_unauthorized(
        &bearer(&url, &rs256(&claims(), "new", &KEY_B)).await,
        "unknown kid while the JWKS endpoint fails",
    );
    for _ in 0..5 {
        assert_eq!(
            bearer(&url, &rs256(&claims(), "a", &KEY_A)).await.status,
            200
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // 3. The endpoint is gone (connection refused).
    jwks.stop.cancel();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_unauthorized(
        &bearer(&url, &rs256(&claims(), "new", &KEY_B)).await,
        "unknown kid while the JWKS endpoint is down",
    );
    assert_eq!(
        bearer(&url, &rs256(&claims(), "a", &KEY_A)).await.status,
        200
    );
    assert!(jwks.hits() > fetched + 2, "the failing endpoint was tried");
    cp.stop();
}

// ------------------------------------------------------------ policies

/// API default with route overrides: api_key and JWT both, either one, or
/// none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_per_route_none_key_jwt_or_both() {
    init_tracing();
    let (echo, _stop) = start_echo().await;
    let secret = key::new_secret();
    let value = key::generate();
    let (cp, dp) = dp_with(vec![
        settings(&secret),
        plan("gold", &["shop"]),
        key_record("key-1", &secret, &value, &["gold"], true),
        authorizer(jwt_authorizer("idp", json!({"keys": [KEY_A.jwk("a")]}))),
        api(json!({"id": "shop", "base_path": "/shop",
            "upstream": {"targets": [{"url": format!("http://{echo}")}]},
            "auth": {"api_key": true, "authorizer": "idp"},
            "routes": [{"id": "both", "path": "/both"},
                       {"id": "open", "path": "/open", "auth": {}},
                       {"id": "key", "path": "/key", "auth": {"api_key": true}},
                       {"id": "jwt", "path": "/jwt", "auth": {"authorizer": "idp"}}]})),
    ])
    .await;
    let url = |p: &str| format!("http://{}/shop/{p}", dp.proxy_addr);
    let token = rs256(&claims(), "a", &KEY_A);
    let auth = format!("Bearer {token}");
    let key = ("x-api-key", value.as_str());
    let jwt = ("authorization", auth.as_str());

    let both = get(&url("both"), &[key, jwt]).await;
    assert_eq!(both.status, 200, "{}", both.text);
    assert_eq!(both.upstream("x-tollgate-tenant").as_deref(), Some("acme"));
    assert_eq!(both.upstream("x-tollgate-key-id").as_deref(), Some("key-1"));
    assert_eq!(
        both.upstream("x-tollgate-subject").as_deref(),
        Some("user-1")
    );
    assert_eq!(both.upstream("authorization"), None);
    assert_eq!(both.upstream("x-api-key"), None);
    assert_unauthorized(&get(&url("both"), &[key]).await, "key without JWT");
    assert_forbidden(&get(&url("both"), &[jwt]).await, "JWT without key");
    assert_forbidden(&get(&url("both"), &[]).await, "neither");

    assert_eq!(get(&url("open"), &[]).await.status, 200);
    // An open route leaves Authorization for the upstream's own use.
    let open = get(&url("open"), &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(
        open.upstream("authorization").as_deref(),
        Some("Basic dXNlcjpwYXNz")
    );
    let k = get(&url("key"), &[key]).await;
    assert_eq!(k.status, 200);
    assert_eq!(k.upstream("x-tollgate-subject"), None);
    assert_forbidden(&get(&url("key"), &[jwt]).await, "key route with a JWT only");
    let j = get(&url("jwt"), &[jwt]).await;
    assert_eq!(j.status, 200);
    assert_eq!(j.upstream("x-tollgate-key-id"), None);
    assert_eq!(j.upstream("x-tollgate-subject").as_deref(), Some("user-1"));
    assert_unauthorized(&get(&url("jwt"), &[key]).await, "JWT route with a key only");
    cp.stop();
}

// ------------------------------------------------------------ CORS, IP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_actual_responses() {
    init_tracing();
    let upstream = TestUpstream::start("up").await;
    let secret = key::new_secret();
    let value = key::generate();
    let (cp, dp) = dp_with(vec![
        settings(&secret),
        plan("gold", &["web"]),
        key_record("key-1", &secret, &value, &["gold"], true),
        api(json!({"id": "web", "base_path": "/web",
            "upstream": {"targets": [{"url": upstream.url()}]},
            "auth": {"api_key": true},
            "cors": {"allow_origins": ["https://app.example"], "allow_methods": ["GET", "POST"],
                     "allow_headers": ["content-type", "x-api-key"],
                     "expose_headers": ["x-request-id"], "allow_credentials": true,
                     "max_age_s": 600},
            "routes": [{"id": "items", "methods": ["GET", "POST"], "path": "/items"}]})),
        api(json!({"id": "pub", "base_path": "/pub",
            "upstream": {"targets": [{"url": upstream.url()}]},
            "cors": {"allow_origins": ["*"]},
            "routes": [{"id": "all", "path": "/{rest+}"}]})),
    ])
    .await;
    let http = http();
    let items = format!("http://{}/web/items", dp.proxy_addr);
    let preflight = |origin: &'static str, method: &'static str, url: String| {
        let http = http.clone();
        async move {
            call(
                &http,
                "OPTIONS",
                &url,
                &[
                    ("origin", origin),
                    ("access-control-request-method", method),
                    ("access-control-request-headers", "content-type,x-api-key"),
                ],
            )
            .await
        }
    };

    // Allowed origin: 204 from the gateway (no key needed, upstream not hit).
    let p = preflight("https://app.example", "POST", items.clone()).await;
    assert_eq!(p.status, 204, "{}", p.text);
    let h = &p.headers;
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(h["access-control-allow-headers"], "content-type, x-api-key");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    assert!(h.contains_key("x-request-id"));
    // Refused origin: 403, no CORS headers.
    let p = preflight("https://evil.example", "POST", items.clone()).await;
    assert_eq!(p.status, 403);
    assert!(!p.headers.contains_key("access-control-allow-origin"));
    // A lookalike origin is not an exact match.
    let p = preflight("https://app.example.evil", "GET", items.clone()).await;
    assert_eq!(p.status, 403);
    // A method the route does not have: not a preflight the API answers.
    let p = preflight("https://app.example", "DELETE", items.clone()).await;
    assert_eq!(p.status, 405);
    assert!(!p.headers.contains_key("access-control-allow-origin"));
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        0,
        "preflights stay at the edge"
    );

    // Actual responses: allowed origin gets the headers, on a 200 and on the
    // gateway's own 403; a refused origin gets none.
    let key = ("x-api-key", value.as_str());
    let a = call(
        &http,
        "GET",
        &items,
        &[key, ("origin", "https://app.example")],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(a.headers["access-control-allow-credentials"], "true");
    assert_eq!(a.headers["access-control-expose-headers"], "x-request-id");
    assert!(a.headers["vary"].to_str().unwrap().contains("Origin"));
    let denied = call(&http, "GET", &items, &[("origin", "https://app.example")]).await;
    assert_forbidden(&denied, "no key");
    assert_eq!(
        denied.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let evil = call(
        &http,
        "GET",
        &items,
        &[key, ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(evil.status, 200);
    assert!(!evil.headers.contains_key("access-control-allow-origin"));
    assert!(!evil
        .headers
        .contains_key("access-control-allow-credentials"));
    assert!(evil.headers["vary"].to_str().unwrap().contains("Origin"));
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2);

    // `*`: any origin, never with credentials.
    let p = preflight(
        "https://anyone.example",
        "PUT",
        format!("http://{}/pub/x", dp.proxy_addr),
    )
    .await;
    assert_eq!(p.status, 204);
    assert_eq!(p.headers["access-control-allow-origin"], "*");
    assert_eq!(p.headers["access-control-allow-methods"], "PUT");
    assert!(!p.headers.contains_key("access-control-allow-credentials"));
    let a = call(
        &http,
        "GET",
        &format!("http://{}/pub/x", dp.proxy_addr),
        &[("origin", "https://anyone.example")],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["access-control-allow-origin"], "*");
    assert!(!a.headers.contains_key("access-control-allow-credentials"));
    cp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_allow_and_deny_lists() {
    init_tracing();
    let mock = |id: &str, allow: &[&str], deny: &[&str]| {
        api(
            json!({"id": id, "base_path": format!("/{id}"), "ip_allow": allow, "ip_deny": deny,
                   "routes": [{"id": "r", "path": "/", "mock": {"body": id}}]}),
        )
    };
    let (cp, dp) = dp_with(vec![
        mock("open", &[], &[]),
        mock("deny-local", &[], &["127.0.0.0/8"]),
        mock("allow-other", &["10.0.0.0/8", "2001:db8::/32"], &[]),
        mock("allow-one", &["127.0.0.1"], &[]),
        mock("allow-two", &["127.0.0.2/32"], &[]),
        mock("allow-but-deny", &["127.0.0.0/8"], &["127.0.0.2"]),
    ])
    .await;
    // Clients from 127.0.0.1 and from 127.0.0.2 (both loopback).
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let (one, two) = (from("127.0.0.1"), from("127.0.0.2"));
    let expect = [
        ("open", 200, 200),
        ("deny-local", 403, 403),
        ("allow-other", 403, 403),
        ("allow-one", 200, 403),
        ("allow-two", 403, 200),
        ("allow-but-deny", 200, 403),
    ];
    for (id, from_one, from_two) in expect {
        let url = format!("http://{}/{id}", dp.proxy_addr);
        for (client, want) in [(&one, from_one), (&two, from_two)] {
            let a = call(client, "GET", &url, &[]).await;
            assert_eq!(a.status, want, "{id}: {}", a.text);
            if want == 403 {
                assert_forbidden(&a, id);
            }
        }
    }
    cp.stop();
}
