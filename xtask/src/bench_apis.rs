//! The APIs the benches serve, set up through the admin API: keyed with a
//! plan, behind a JWT or a request authorizer, a function route, a stage
//! with a canary, and mock APIs.

use serde_json::json;

use crate::bench::ADMIN_TOKEN;

/// An API behind API keys with a plan (throttle, quota, metering); returns
/// a key's value.
pub(crate) async fn keyed_api(
    client: &reqwest::Client,
    admin: &str,
    echo: &str,
) -> anyhow::Result<String> {
    put(
        client,
        format!("{admin}/v1/tenants/bench"),
        json!({"name": "t"}),
    )
    .await?;
    put(
        client,
        format!("{admin}/v1/apis/keyed"),
        json!({
        "base_path": "/keyed", "auth": {"api_key": true},
        "upstream": {"targets": [{"url": format!("http://{echo}")}]},
        "routes": [{"id": "all", "path": "/{rest+}"}]}),
    )
    .await?;
    put(
        client,
        format!("{admin}/v1/usage-plans/unlimited"),
        json!({
        "apis": ["keyed"], "throttle": {"rate": 1_000_000.0, "burst": 1_000_000u32},
        "quota": {"limit": 1_000_000_000u64, "period": "month"}}),
    )
    .await?;
    let r = client
        .post(format!("{admin}/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"tenant": "bench", "plans": ["unlimited"]}))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "issuing a key: {}", r.status());
    let v: serde_json::Value = r.json().await?;
    Ok(v["value"].as_str().unwrap_or_default().to_string())
}

pub(crate) async fn put(
    client: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let r = client
        .put(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "PUT {url}: {}", r.status());
    Ok(())
}

pub(crate) fn mock_api(id: &str) -> serde_json::Value {
    json!({"base_path": format!("/{id}"), "routes": [{"id": "r", "path": "/", "mock": {"body": id}}]})
}

/// An API to the upstream with two deployments, and a stage serving the
/// first with a 10 % canary on the second, split per request.
pub(crate) async fn staged_api(
    client: &reqwest::Client,
    admin: &str,
    echo: &str,
) -> anyhow::Result<()> {
    put(
        client,
        format!("{admin}/v1/apis/staged"),
        json!({
        "base_path": "/staged",
        "upstream": {"targets": [{"url": format!("http://{echo}")}]},
        "routes": [{"id": "all", "path": "/{rest+}"}]}),
    )
    .await?;
    let mut deps = Vec::new();
    for _ in 0..2 {
        deps.push(deploy(client, admin, "staged").await?);
    }
    put(
        client,
        format!("{admin}/v1/stages/staged-prod"),
        json!({"api": "staged", "deployment": deps[0], "base_path": "/staged-prod",
               "canary": {"deployment": deps[1], "percent": 10, "sticky": "none"}}),
    )
    .await?;
    // The same without a canary, to tell the canary's cost from the stage's.
    put(
        client,
        format!("{admin}/v1/stages/staged-one"),
        json!({"api": "staged", "deployment": deps[0], "base_path": "/staged-one"}),
    )
    .await
}

pub(crate) async fn deploy(
    client: &reqwest::Client,
    admin: &str,
    api: &str,
) -> anyhow::Result<String> {
    let r = client
        .post(format!("{admin}/v1/apis/{api}/deployments"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 201,
        "deploying {api}: {}",
        r.status()
    );
    let v: serde_json::Value = r.json().await?;
    Ok(v["id"].as_str().unwrap_or_default().to_string())
}

/// A mock API deployed twice, and its stage `rb` at `/rb`; the two
/// deployment ids.
pub(crate) async fn rollback_stage(
    client: &reqwest::Client,
    admin: &str,
) -> anyhow::Result<[String; 2]> {
    put(client, format!("{admin}/v1/apis/rb-api"), json!({"base_path": "/rb-api", "routes": [{"id": "r", "path": "/", "mock": {"body": "rb"}}]})).await?;
    let (a, b) = (
        deploy(client, admin, "rb-api").await?,
        deploy(client, admin, "rb-api").await?,
    );
    put(
        client,
        format!("{admin}/v1/stages/rb"),
        json!({"api": "rb-api", "deployment": a, "base_path": "/rb"}),
    )
    .await?;
    Ok([a, b])
}

/// An API behind a request authorizer (`tollgate echo`'s `/authorize`,
/// keyed on one header, cached for 300 s) and an API of one function route
/// (`tollgate echo`'s Invoke API).
pub(crate) async fn authorizer_and_function_apis(
    client: &reqwest::Client,
    admin: &str,
    echo: &str,
) -> anyhow::Result<()> {
    put(
        client,
        format!("{admin}/v1/authorizers/bench-request"),
        json!({"type": "request", "endpoint": format!("http://{echo}/authorize"),
               "identity_sources": ["header:x-bench-caller"], "ttl_s": 300}),
    )
    .await?;
    put(
        client,
        format!("{admin}/v1/apis/authorized"),
        json!({
        "base_path": "/authorized", "auth": {"authorizer": "bench-request"},
        "upstream": {"targets": [{"url": format!("http://{echo}")}]},
        "routes": [{"id": "all", "path": "/{rest+}"}]}),
    )
    .await?;
    put(
        client,
        format!("{admin}/v1/apis/fn"),
        json!({
        "base_path": "/fn",
        "routes": [{"id": "all", "path": "/{rest+}",
                    "function": {"url": format!("http://{echo}"), "name": "bench", "payload": "2.0"}}]}),
    )
    .await
}

/// An API behind an RS256 authorizer (inline JWKS from a key made here);
/// returns a token valid for an hour.
pub(crate) async fn jwt_api(
    client: &reqwest::Client,
    admin: &str,
    echo: &str,
) -> anyhow::Result<String> {
    use base64::Engine;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = json!({"kty": "RSA", "kid": "bench", "use": "sig", "alg": "RS256",
                     "n": b64.encode(key.n().to_bytes_be()), "e": b64.encode(key.e().to_bytes_be())});
    put(
        client,
        format!("{admin}/v1/authorizers/bench-jwt"),
        json!({
        "issuer": "https://bench.test", "audiences": ["bench"], "algorithms": ["RS256"],
        "jwks": {"keys": [jwk]}}),
    )
    .await?;
    put(
        client,
        format!("{admin}/v1/apis/jwt"),
        json!({
        "base_path": "/jwt", "auth": {"authorizer": "bench-jwt"},
        "upstream": {"targets": [{"url": format!("http://{echo}")}]},
        "routes": [{"id": "all", "path": "/{rest+}"}]}),
    )
    .await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("bench".into());
    let claims = json!({"iss": "https://bench.test", "aud": "bench", "sub": "bench-user",
                        "iat": now, "exp": now + 3600});
    let der = key.to_pkcs1_der()?;
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
    )?)
}
