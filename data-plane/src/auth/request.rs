//! Request authorizers (contract §5.4): AWS's Lambda REQUEST authorizers
//! over plain HTTP.
//!
//! - The identity sources (`header:`, `query:`, `path:`) must all be
//!   present, else 401 and no call.
//! - The endpoint gets `POST` with AWS's version 2.0 REQUEST authorizer
//!   event, and answers `simple` (`{isAuthorized, context}`) or `policy`
//!   (`{principalId, policyDocument, context, usageIdentifierKey}`).
//! - Answers (allow and deny) are cached for `ttl_s` by the SHA-256 of the
//!   identity values; concurrent misses share one call (moka's
//!   `try_get_with`). A policy is cached as it came and judged against each
//!   request's `routeArn`, as AWS does.
//! - Fail closed: a refused connection, a status other than 2xx, a timeout
//!   or an unreadable answer is a 500, never a pass, and never cached.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tollgate_model::docs::{Api, Authorizer, AuthorizerResponse, IdentitySource, Route};
use tollgate_model::path::PathTemplate;

use crate::body;
use crate::http1::syntax::percent_decode;
use crate::metrics::AuthorizerMetrics;
use crate::upstream::HttpClient;

/// Answers of an authorizer remembered at most.
const CACHE_MAX: u64 = 10_000;
/// The most of an authorizer's answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Header names of context values start with this.
const CONTEXT_PREFIX: &str = "x-tollgate-authorizer-";

/// One identity source, compiled.
#[derive(Debug, Clone)]
enum Source {
    Header(HeaderName),
    Query(String),
    Path(String),
}

/// What an allowed caller brings along: the `context` (for the upstream's
/// headers and function events), `principalId`, and the API key value
/// whose plans apply.
#[derive(Debug, Default)]
pub struct RequestGrant {
    pub principal: Option<String>,
    pub context: Map<String, Value>,
    /// `x-tollgate-authorizer-<key>`, rendered once per answer.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub usage_key: Option<String>,
}

/// An answer as cached: the verdict (a policy is judged per request).
#[derive(Debug)]
enum Verdict {
    Simple(bool),
    Policy(Vec<Statement>),
}

#[derive(Debug)]
struct Answer {
    verdict: Verdict,
    grant: Arc<RequestGrant>,
}

#[derive(Debug, PartialEq)]
struct Statement {
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// Why a request was refused; only logs see it.
#[derive(Debug)]
pub enum Refusal {
    /// An identity source is missing: 401, no call.
    MissingSource(String),
    /// The authorizer said no: 403.
    Denied,
    /// The call failed or its answer was unreadable: 500.
    Failed(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::MissingSource(s) => write!(f, "identity source {s} missing"),
            Refusal::Denied => f.write_str("denied by the authorizer"),
            Refusal::Failed(e) => write!(f, "authorizer failed: {e}"),
        }
    }
}

/// What the event is built from.
pub struct RequestFacts<'a> {
    pub api: &'a Api,
    pub route: &'a Route,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
    pub source_ip: IpAddr,
    pub request_id: &'a HeaderValue,
}

impl<'a> RequestFacts<'a> {
    pub fn new<B>(
        api: &'a Api,
        route: &'a Route,
        req: &'a Request<B>,
        source_ip: IpAddr,
        request_id: &'a HeaderValue,
    ) -> Self {
        Self {
            api,
            route,
            method: req.method(),
            uri: req.uri(),
            version: req.version(),
            headers: req.headers(),
            source_ip,
            request_id,
        }
    }

    /// `arn:aws:execute-api:tollgate:000000000000:{api}/$default/{METHOD}{path}`.
    pub fn route_arn(&self) -> String {
        format!(
            "arn:aws:execute-api:tollgate:000000000000:{}/$default/{}{}",
            self.api.id,
            self.method,
            self.uri.path()
        )
    }

    /// The route's template under the API's base path, with the method:
    /// `GET /orders/items/{id}`.
    fn route_key(&self) -> String {
        let base = self.api.base_path.trim_end_matches('/');
        format!("{} {base}{}", self.method, self.route.path)
    }

    /// The route's path parameters, decoded.
    fn path_params(&self) -> Vec<(String, String)> {
        let path = self.uri.path();
        let rest = if self.api.base_path == "/" {
            path
        } else {
            path.get(self.api.base_path.len()..).unwrap_or("")
        };
        let Ok(template) = PathTemplate::parse("path", &self.route.path) else {
            return Vec::new();
        };
        template
            .matches(rest)
            .unwrap_or_default()
            .into_iter()
            .map(|(n, v)| (n.to_string(), percent_decode(v, false)))
            .collect()
    }

    /// Query parameters, decoded, in order (repeats kept).
    fn query(&self) -> Vec<(String, String)> {
        let Some(q) = self.uri.query() else {
            return Vec::new();
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k, true), percent_decode(v, true))
            })
            .collect()
    }
}

/// A request authorizer ready to use.
pub struct RequestAuthorizer {
    pub doc: Authorizer,
    endpoint: Uri,
    sources: Vec<Source>,
    timeout: Duration,
    client: HttpClient,
    /// `None` with `ttl_s: 0`: every request calls.
    cache: Option<moka::future::Cache<[u8; 32], Arc<Answer>>>,
    pub metrics: Arc<AuthorizerMetrics>,
}

impl RequestAuthorizer {
    /// Compile `doc`; counters are carried over from `previous`.
    pub fn compile(
        doc: &Authorizer,
        previous: Option<&RequestAuthorizer>,
        client: &HttpClient,
    ) -> Result<Self, String> {
        let endpoint: Uri = doc
            .endpoint
            .as_deref()
            .ok_or("no endpoint")?
            .parse()
            .map_err(|e| format!("endpoint: {e}"))?;
        let mut sources = Vec::with_capacity(doc.identity_sources.len());
        for s in &doc.identity_sources {
            sources.push(
                match IdentitySource::parse(s).ok_or_else(|| format!("identity source {s:?}"))? {
                    IdentitySource::Header(n) => Source::Header(
                        HeaderName::try_from(n.to_ascii_lowercase())
                            .map_err(|_| format!("identity source {s:?}: bad header name"))?,
                    ),
                    IdentitySource::Query(n) => Source::Query(n.to_string()),
                    IdentitySource::Path(n) => Source::Path(n.to_string()),
                },
            );
        }
        let ttl = doc.ttl_s();
        let cache = (ttl > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(CACHE_MAX)
                .time_to_live(Duration::from_secs(ttl))
                .build()
        });
        Ok(Self {
            doc: doc.clone(),
            endpoint,
            sources,
            timeout: Duration::from_millis(doc.timeout_ms()),
            client: client.clone(),
            cache,
            metrics: previous
                .map(|p| p.metrics.clone())
                .unwrap_or_else(|| Arc::new(AuthorizerMetrics::new(&doc.id))),
        })
    }

    /// Decide on a request: the grant when allowed.
    pub async fn authorize(&self, facts: &RequestFacts<'_>) -> Result<Arc<RequestGrant>, Refusal> {
        let values = self.identity_values(facts)?;
        let answer = match &self.cache {
            None => Arc::new(self.call(facts, &values).await?),
            Some(cache) => {
                let mut hasher = Sha256::new();
                for v in &values {
                    hasher.update((v.len() as u64).to_le_bytes());
                    hasher.update(v.as_bytes());
                }
                let digest: [u8; 32] = hasher.finalize().into();
                // A hit first, without the machinery of a shared miss.
                if let Some(found) = cache.get(&digest).await {
                    self.metrics.cache_hit();
                    found
                } else {
                    let mut called = false;
                    let found = cache
                        .try_get_with(digest, async {
                            called = true;
                            self.call(facts, &values).await.map(Arc::new)
                        })
                        .await;
                    if !called {
                        self.metrics.cache_hit();
                    }
                    found.map_err(|e| match e.as_ref() {
                        Refusal::Failed(why) => Refusal::Failed(why.clone()),
                        other => Refusal::Failed(other.to_string()),
                    })?
                }
            }
        };
        let allowed = match &answer.verdict {
            Verdict::Simple(ok) => *ok,
            Verdict::Policy(statements) => policy_allows(statements, &facts.route_arn()),
        };
        if allowed {
            Ok(answer.grant.clone())
        } else {
            self.metrics.deny();
            Err(Refusal::Denied)
        }
    }

    /// Every source's value, in order; the first missing one refuses.
    fn identity_values(&self, facts: &RequestFacts<'_>) -> Result<Vec<String>, Refusal> {
        let mut values = Vec::with_capacity(self.sources.len());
        let mut query = None;
        let mut params = None;
        for (source, spec) in self.sources.iter().zip(&self.doc.identity_sources) {
            let value = match source {
                Source::Header(name) => {
                    // Repeated fields joined with `,`; one (the usual case)
                    // copied as it is.
                    let mut all = facts
                        .headers
                        .get_all(name)
                        .iter()
                        .filter_map(|v| v.to_str().ok());
                    all.next().map(|first| {
                        let mut joined = first.to_string();
                        for more in all {
                            joined.push(',');
                            joined.push_str(more);
                        }
                        joined
                    })
                }
                Source::Query(name) => query
                    .get_or_insert_with(|| facts.query())
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone()),
                Source::Path(name) => params
                    .get_or_insert_with(|| facts.path_params())
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone()),
            };
            match value.filter(|v| !v.is_empty()) {
                Some(v) => values.push(v),
                None => return Err(Refusal::MissingSource(spec.clone())),
            }
        }
        Ok(values)
    }

    /// One call to the endpoint, counted and timed.
    async fn call(&self, facts: &RequestFacts<'_>, values: &[String]) -> Result<Answer, Refusal> {
        let started = Instant::now();
        let event = event(facts, values);
        let result = match tokio::time::timeout(self.timeout, self.post(&event)).await {
            Ok(r) => r.and_then(|v| self.read(v)),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        self.metrics
            .call(started.elapsed().as_micros() as u64, result.is_err());
        result.map_err(Refusal::Failed)
    }

    async fn post(&self, event: &Value) -> Result<Value, String> {
        let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let req = Request::post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(body::full(body))
            .map_err(|e| e.to_string())?;
        super::fetch_json(&self.client, req, MAX_ANSWER_BYTES).await
    }

    /// The answer, in the authorizer's `response` shape.
    fn read(&self, v: Value) -> Result<Answer, String> {
        let context = match v.get("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err("context is not an object".into()),
        };
        let headers = context_headers(&context);
        match self.doc.response {
            AuthorizerResponse::Simple => {
                let ok = v
                    .get("isAuthorized")
                    .and_then(Value::as_bool)
                    .ok_or("isAuthorized is not a boolean")?;
                Ok(Answer {
                    verdict: Verdict::Simple(ok),
                    grant: Arc::new(RequestGrant {
                        principal: None,
                        context,
                        headers,
                        usage_key: None,
                    }),
                })
            }
            AuthorizerResponse::Policy => {
                let statements = read_policy(v.get("policyDocument"))?;
                let text = |name: &str| -> Result<Option<String>, String> {
                    match v.get(name) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::String(s)) if s.is_empty() => Ok(None),
                        Some(Value::String(s)) => Ok(Some(s.clone())),
                        Some(_) => Err(format!("{name} is not a string")),
                    }
                };
                Ok(Answer {
                    verdict: Verdict::Policy(statements),
                    grant: Arc::new(RequestGrant {
                        principal: text("principalId")?,
                        context,
                        headers,
                        usage_key: text("usageIdentifierKey")?,
                    }),
                })
            }
        }
    }
}

/// AWS's version 2.0 REQUEST authorizer event.
fn event(facts: &RequestFacts<'_>, values: &[String]) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for name in facts.headers.keys() {
        let all: Vec<&str> = facts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if *name == header::COOKIE {
            cookies.extend(
                all.iter()
                    .flat_map(|c| c.split(';'))
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| Value::String(c.to_string())),
            );
            continue;
        }
        headers.insert(name.as_str().to_string(), all.join(",").into());
    }
    let mut query: Map<String, Value> = Map::new();
    for (k, v) in facts.query() {
        match query.get_mut(&k) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(&v);
            }
            _ => {
                query.insert(k, v.into());
            }
        }
    }
    let params: Map<String, Value> = facts
        .path_params()
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    let route_key = facts.route_key();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let text = |name: &HeaderName| {
        facts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let host = text(&header::HOST);
    let mut event = json!({
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": facts.route_arn(),
        "identitySource": values,
        "routeKey": route_key,
        "rawPath": facts.uri.path(),
        "rawQueryString": facts.uri.query().unwrap_or(""),
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": facts.api.id,
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or(""),
            "http": {
                "method": facts.method.as_str(),
                "path": facts.uri.path(),
                "protocol": protocol(facts.version),
                "sourceIp": facts.source_ip.to_string(),
                "userAgent": text(&header::USER_AGENT),
            },
            "requestId": facts.request_id.to_str().unwrap_or(""),
            "routeKey": route_key,
            "stage": "$default",
            "time": crate::civil_time::clf(std::time::UNIX_EPOCH + now),
            "timeEpoch": now.as_millis() as u64,
        },
    });
    if !cookies.is_empty() {
        event["cookies"] = cookies.into();
    }
    if !query.is_empty() {
        event["queryStringParameters"] = query.into();
    }
    if !params.is_empty() {
        event["pathParameters"] = params.into();
    }
    event
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// `context` as upstream headers: `x-tollgate-authorizer-<key>`, the key
/// lowercased with characters outside `[a-z0-9-]` as `-`; strings as they
/// are, anything else as JSON text. Values that cannot be a header are
/// dropped.
fn context_headers(context: &Map<String, Value>) -> Vec<(HeaderName, HeaderValue)> {
    context
        .iter()
        .filter_map(|(k, v)| {
            let key: String = k
                .chars()
                .map(|c| {
                    let c = c.to_ascii_lowercase();
                    if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let name = HeaderName::try_from(format!("{CONTEXT_PREFIX}{key}")).ok()?;
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((name, HeaderValue::from_str(&text).ok()?))
        })
        .collect()
}

/// The statements of a `policyDocument`; `Action` and `Resource` may be
/// a string or a list.
fn read_policy(doc: Option<&Value>) -> Result<Vec<Statement>, String> {
    let doc = doc
        .and_then(Value::as_object)
        .ok_or("policyDocument is not an object")?;
    let list = match doc.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(s @ Value::Object(_)) => vec![s.clone()],
        _ => return Err("policyDocument.Statement is not a list".into()),
    };
    let strings = |v: Option<&Value>, what: &str| -> Result<Vec<String>, String> {
        match v {
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{what} is not a string"))
                })
                .collect(),
            _ => Err(format!("{what} missing")),
        }
    };
    list.iter()
        .map(|s| {
            let allow = match s.get("Effect").and_then(Value::as_str) {
                Some(e) if e.eq_ignore_ascii_case("allow") => true,
                Some(e) if e.eq_ignore_ascii_case("deny") => false,
                _ => return Err("Statement.Effect is not Allow or Deny".into()),
            };
            Ok(Statement {
                allow,
                actions: strings(s.get("Action"), "Statement.Action")?,
                resources: strings(s.get("Resource"), "Statement.Resource")?,
            })
        })
        .collect()
}

/// Allowed when an `Allow` statement for `execute-api:Invoke` matches
/// `arn` and no `Deny` does.
fn policy_allows(statements: &[Statement], arn: &str) -> bool {
    let applies = |s: &Statement| {
        s.actions
            .iter()
            .any(|a| glob(&a.to_ascii_lowercase(), "execute-api:invoke"))
            && s.resources.iter().any(|r| glob(r, arn))
    };
    let mut allowed = false;
    for s in statements.iter().filter(|s| applies(s)) {
        if !s.allow {
            return false;
        }
        allowed = true;
    }
    allowed
}

/// `*` any run of characters, `?` one character, as IAM matches.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(allow: bool, action: &str, resource: &str) -> Statement {
        Statement {
            allow,
            actions: vec![action.into()],
            resources: vec![resource.into()],
        }
    }

    const ARN: &str =
        "arn:aws:execute-api:tollgate:000000000000:orders/$default/GET/orders/items/7";

    #[test]
    fn policies_need_an_allow_and_no_deny() {
        let any = "arn:aws:execute-api:tollgate:000000000000:orders/*";
        assert!(policy_allows(
            &[statement(true, "execute-api:Invoke", any)],
            ARN
        ));
        assert!(policy_allows(&[statement(true, "execute-api:*", ARN)], ARN));
        assert!(policy_allows(&[statement(true, "*", "*")], ARN));
        assert!(!policy_allows(&[], ARN));
        assert!(!policy_allows(&[statement(true, "s3:GetObject", "*")], ARN));
        assert!(!policy_allows(
            &[statement(true, "execute-api:Invoke", "arn:*:other/*")],
            ARN
        ));
        assert!(!policy_allows(
            &[
                statement(true, "execute-api:Invoke", any),
                statement(false, "execute-api:Invoke", "*/GET/orders/items/*"),
            ],
            ARN
        ));
        assert!(policy_allows(
            &[
                statement(true, "execute-api:Invoke", any),
                statement(false, "execute-api:Invoke", "*/POST/*"),
            ],
            ARN
        ));
        assert!(glob("a?c*", "abcdef") && !glob("a?c", "ac") && glob("*", ""));
    }

    #[test]
    fn policy_documents_parse_strings_and_lists() {
        let doc = json!({"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": ["a", "b"]},
            {"Action": ["execute-api:Invoke"], "Effect": "Deny", "Resource": "c"}]});
        let s = read_policy(Some(&doc)).unwrap();
        assert_eq!(
            s[0],
            Statement {
                allow: true,
                actions: vec!["execute-api:Invoke".into()],
                resources: vec!["a".into(), "b".into()]
            }
        );
        assert!(!s[1].allow);
        assert!(read_policy(None).is_err());
        assert!(read_policy(Some(
            &json!({"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]})
        ))
        .is_err());
    }

    #[test]
    fn context_keys_become_header_names() {
        let ctx = json!({"User_Id": "u1", "tier": 3, "ok": true, "obj": {"a": 1}, "bad": "x\ny"});
        let h = context_headers(ctx.as_object().unwrap());
        let find = |n: &str| {
            h.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(find("x-tollgate-authorizer-user-id").as_deref(), Some("u1"));
        assert_eq!(find("x-tollgate-authorizer-tier").as_deref(), Some("3"));
        assert_eq!(find("x-tollgate-authorizer-ok").as_deref(), Some("true"));
        assert_eq!(
            find("x-tollgate-authorizer-obj").as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(find("x-tollgate-authorizer-bad"), None);
    }

    #[test]
    fn decoding_and_times() {}
}
