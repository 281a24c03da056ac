//! AWS API Gateway's extensions: `x-amazon-apigateway-integration` (an
//! upstream path, a function or a mock), `-authorizer` (JWT and request
//! authorizers) and `-cors`. No I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tollgate_model::{Authorizer, AuthorizerResponse, AuthorizerType, Cors, Function, Mock};

use super::spec::{pointer, Notes, Options, AUTHORIZER_PLACEHOLDER, FUNCTION_PLACEHOLDER};

/// Where one operation's requests go.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// An upstream: `target` is scheme and authority; `upstream_path` the
    /// rewrite (`None`: the path after the base path).
    Http {
        target: Option<String>,
        upstream_path: Option<String>,
        timeout_ms: Option<u64>,
    },
    Function(Function),
    Mock(Mock),
}

/// What an integration is read against.
pub struct Operation<'a> {
    /// The integration's JSON pointer.
    pub at: String,
    /// The operation's method (upper case); `None` for any method.
    pub method: Option<&'a str>,
    /// The definition's path parameter names → the route's.
    pub params: &'a BTreeMap<String, String>,
    pub opts: &'a Options,
}

fn text<'v>(v: &'v Value, field: &str) -> Option<&'v str> {
    v.get(field).and_then(Value::as_str)
}

/// An integration as a backend; `None` (and a note) when it has none
/// Tollgate can run, so the route is left out.
pub fn integration(ix: &Value, op: &Operation, notes: &mut Notes) -> Option<Backend> {
    let kind = text(ix, "type").unwrap_or("").to_ascii_lowercase();
    let backend = match kind.as_str() {
        "http" | "http_proxy" => http(ix, op, kind == "http_proxy", notes)?,
        "aws_proxy" => Backend::Function(function(ix, op, notes)?),
        "mock" => Backend::Mock(mock(ix, op, notes)),
        "aws" => {
            notes.untranslated(&op.at, "an AWS service integration; the route is left out");
            return None;
        }
        other => {
            notes.untranslated(
                &format!("{}/type", op.at),
                format_args!("integration type {other:?}; the route is left out"),
            );
            return None;
        }
    };
    leftovers(ix, op, &kind, notes);
    Some(backend)
}

/// Notes for the integration's fields that no backend above used.
fn leftovers(ix: &Value, op: &Operation, kind: &str, notes: &mut Notes) {
    let Some(fields) = ix.as_object() else { return };
    for (field, value) in fields {
        let why = match field.as_str() {
            "type"
            | "uri"
            | "httpMethod"
            | "timeoutInMillis"
            | "passthroughBehavior"
            | "cacheNamespace"
            | "payloadFormatVersion"
            | "requestParameters" => continue,
            "responses" if kind != "http" => continue,
            "responses" => {
                responses(value, &format!("{}/responses", op.at), notes);
                continue;
            }
            "requestTemplates" if kind == "mock" => continue,
            "connectionType" if value.as_str() == Some("INTERNET") => continue,
            "requestTemplates" => "VTL mapping templates",
            "contentHandling" => "binary content handling",
            "connectionType" | "connectionId" => "VPC link",
            "tlsConfig" => "integration TLS settings",
            "credentials" => "IAM credentials",
            "cacheKeyParameters" => "AWS stage cache keys; give the route a cache",
            _ => "unknown field",
        };
        notes.untranslated(&format!("{}/{field}", op.at), why);
    }
}

/// A non-proxy integration's response mappings: only a bare `default`
/// status is taken as is (the upstream's status passes through).
fn responses(responses: &Value, at: &str, notes: &mut Notes) {
    for (pattern, r) in responses.as_object().into_iter().flatten() {
        let bare = r
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "statusCode"));
        if pattern != "default" || !bare {
            notes.untranslated(
                &format!("{at}{}", pointer(&[pattern])),
                "integration response mapping; the upstream's status and body pass through",
            );
        }
    }
}

/// `http`/`http_proxy`: the URI's scheme and authority are the target, its
/// path the `upstream_path`, with `{X}` filled from `requestParameters`.
fn http(ix: &Value, op: &Operation, proxy: bool, notes: &mut Notes) -> Option<Backend> {
    let uri_at = format!("{}/uri", op.at);
    let uri = text(ix, "uri").unwrap_or("");
    let Some((target, path)) = split_url(uri) else {
        notes.untranslated(
            &uri_at,
            format_args!("{uri:?} is not an http(s) URL; the route is left out"),
        );
        return None;
    };
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if !query.is_empty() {
        notes.untranslated(&uri_at, "the URI's query string");
    }
    let mapped = path_mapping(ix, op, notes);
    let mut upstream_path = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        // `${stageVariables.NAME}` is Tollgate's syntax too: kept as is.
        if rest[..open].ends_with('$') {
            upstream_path.push_str(&rest[..=close]);
            rest = &rest[close + 1..];
            continue;
        }
        upstream_path.push_str(&rest[..open]);
        let name = rest[open + 1..close].trim_end_matches('+');
        let filled = mapped
            .get(name)
            .cloned()
            .or_else(|| op.params.get(name).map(|p| format!("{{{p}}}")));
        let Some(filled) = filled else {
            notes.untranslated(
                &uri_at,
                format_args!(
                    "{{{name}}} has no source in requestParameters; the route is left out"
                ),
            );
            return None;
        };
        upstream_path.push_str(&filled);
        rest = &rest[close + 1..];
    }
    upstream_path.push_str(rest);
    let method = text(ix, "httpMethod").unwrap_or("ANY");
    if !proxy
        && !method.eq_ignore_ascii_case("ANY")
        && op.method.is_some_and(|m| !m.eq_ignore_ascii_case(method))
    {
        notes.untranslated(
            &format!("{}/httpMethod", op.at),
            format_args!("{method}: Tollgate forwards the client's method"),
        );
    }
    Some(Backend::Http {
        target: Some(target.to_string()),
        upstream_path: Some(if upstream_path.is_empty() {
            "/".into()
        } else {
            upstream_path
        }),
        timeout_ms: ix.get("timeoutInMillis").and_then(Value::as_u64),
    })
}

/// `http://host:port/path` → (`http://host:port`, `/path`).
pub fn split_url(url: &str) -> Option<(&str, &str)> {
    let scheme_end = url.find("://")? + 3;
    if !url[..scheme_end].eq_ignore_ascii_case("http://")
        && !url[..scheme_end].eq_ignore_ascii_case("https://")
    {
        return None;
    }
    let path_at = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    (path_at > scheme_end).then(|| (&url[..path_at], &url[path_at..]))
}

/// `requestParameters` entries for the integration's path: name → what
/// replaces `{name}` (`{param}` of the route, or a static text). Every
/// other mapping that changes something is noted.
fn path_mapping(ix: &Value, op: &Operation, notes: &mut Notes) -> BTreeMap<String, String> {
    let mut mapped = BTreeMap::new();
    let Some(params) = ix.get("requestParameters").and_then(Value::as_object) else {
        return mapped;
    };
    for (to, from) in params {
        let from = from.as_str().unwrap_or("");
        if let Some(name) = to.strip_prefix("integration.request.path.") {
            let source = from
                .strip_prefix("method.request.path.")
                .and_then(|p| op.params.get(p))
                .map(|p| format!("{{{p}}}"))
                .or_else(|| static_value(from).map(str::to_string));
            if let Some(s) = source {
                mapped.insert(name.to_string(), s);
                continue;
            }
        }
        // The same header or query parameter under the same name is what
        // forwarding does anyway.
        let same = ["header", "querystring"].iter().any(|k| {
            to.strip_prefix(&format!("integration.request.{k}."))
                .is_some_and(|n| from.strip_prefix(&format!("method.request.{k}.")) == Some(n))
        });
        if !same {
            notes.untranslated(
                &format!("{}{}", op.at, pointer(&["requestParameters", to])),
                "request parameter mapping",
            );
        }
    }
    mapped
}

/// `'text'`: a static value in AWS's mapping expressions.
fn static_value(expr: &str) -> Option<&str> {
    expr.strip_prefix('\'')?.strip_suffix('\'')
}

/// `aws_proxy` with a Lambda ARN: a function route. The Invoke URL is not
/// in the export, so `--function-url` or a listed placeholder.
fn function(ix: &Value, op: &Operation, notes: &mut Notes) -> Option<Function> {
    let uri_at = format!("{}/uri", op.at);
    let uri = text(ix, "uri").unwrap_or("");
    // arn:aws:apigateway:REGION:lambda:path/2015-03-31/functions/ARN/invocations,
    // or (HTTP APIs) the function's ARN itself.
    let arn = match uri.split_once("/functions/") {
        Some((_, tail)) => tail.strip_suffix("/invocations").unwrap_or(tail),
        None => uri,
    };
    let valid = arn.starts_with("arn:")
        && arn.contains(":lambda:")
        && arn.len() <= 170
        && arn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b));
    if !valid {
        notes.untranslated(
            &uri_at,
            format_args!("{uri:?} is not a Lambda function ARN; the route is left out"),
        );
        return None;
    }
    let url = match &op.opts.function_url {
        Some(u) => u.clone(),
        None => {
            notes.add(
                &uri_at,
                format_args!(
                    "function {arn}: its Invoke URL is not in the definition; placeholder {FUNCTION_PLACEHOLDER} (give --function-url)"
                ),
            );
            FUNCTION_PLACEHOLDER.to_string()
        }
    };
    let mut f: Function = serde_json::from_value(serde_json::json!({"url": url, "name": arn}))
        .expect("a function from its url and name");
    // REST APIs (no payloadFormatVersion) send the 1.0 event.
    f.payload = text(ix, "payloadFormatVersion")
        .unwrap_or("1.0")
        .to_string();
    if let Some(t) = ix.get("timeoutInMillis").and_then(Value::as_u64) {
        f.timeout_ms = t;
    }
    Some(f)
}

/// `mock`: the status of the `default` response (else the only one), its
/// literal JSON template as the body and its static header values.
fn mock(ix: &Value, op: &Operation, notes: &mut Notes) -> Mock {
    for (media, template) in ix
        .get("requestTemplates")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        // `{"statusCode": 200}` only picks the response, as the status does here.
        let picks_status = template
            .as_str()
            .and_then(|t| serde_json::from_str::<Map<String, Value>>(t).ok())
            .is_some_and(|m| m.keys().all(|k| k == "statusCode"));
        if !picks_status {
            notes.untranslated(
                &format!("{}{}", op.at, pointer(&["requestTemplates", media])),
                "VTL mapping templates",
            );
        }
    }
    let mut mock: Mock = serde_json::from_value(serde_json::json!({})).expect("a default mock");
    let responses = ix.get("responses").and_then(Value::as_object);
    let chosen = responses.and_then(|r| match r.get("default") {
        Some(d) => Some(("default", d)),
        None if r.len() == 1 => r.iter().next().map(|(k, v)| (k.as_str(), v)),
        None => None,
    });
    for (pattern, _) in responses
        .into_iter()
        .flatten()
        .filter(|(k, _)| Some(k.as_str()) != chosen.map(|c| c.0))
    {
        notes.untranslated(
            &format!("{}{}", op.at, pointer(&["responses", pattern])),
            "a second mock response",
        );
    }
    let Some((pattern, response)) = chosen else {
        return mock;
    };
    let at = format!("{}{}", op.at, pointer(&["responses", pattern]));
    if let Some(code) = response.get("statusCode") {
        let status = match code {
            Value::String(s) => s.parse().ok(),
            other => other.as_u64().and_then(|n| u16::try_from(n).ok()),
        };
        match status {
            Some(s) => mock.status = s,
            None => notes.untranslated(&format!("{at}/statusCode"), "not a status code"),
        }
    }
    mock_body(response, &at, &mut mock, notes);
    mock_headers(response, &at, &mut mock, notes);
    mock
}

/// The response template, if it is literal JSON (VTL is noted instead).
fn mock_body(response: &Value, at: &str, mock: &mut Mock, notes: &mut Notes) {
    let Some(templates) = response.get("responseTemplates").and_then(Value::as_object) else {
        return;
    };
    let preferred = templates
        .get_key_value("application/json")
        .or_else(|| templates.iter().next());
    for (media, template) in templates {
        let t = template.as_str().unwrap_or("");
        let literal = t.trim().is_empty()
            || (serde_json::from_str::<Value>(t).is_ok()
                && ![
                    "$input",
                    "$context",
                    "$util",
                    "$stageVariables",
                    "$method",
                    "#set",
                    "#if",
                    "#foreach",
                ]
                .iter()
                .any(|v| t.contains(v)));
        let at = format!("{at}{}", pointer(&["responseTemplates", media]));
        if Some(media) != preferred.map(|p| p.0) {
            notes.untranslated(&at, "a second media type's template");
        } else if !literal {
            notes.untranslated(&at, "a VTL response template; the mock's body is empty");
        } else if !t.trim().is_empty() {
            mock.body = t.to_string();
            mock.headers.insert("content-type".into(), media.clone());
        }
    }
}

/// `method.response.header.X: "'value'"` as the mock's header X.
fn mock_headers(response: &Value, at: &str, mock: &mut Mock, notes: &mut Notes) {
    for (to, from) in response
        .get("responseParameters")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let header = to.strip_prefix("method.response.header.");
        match (header, from.as_str().and_then(static_value)) {
            (Some(h), Some(v)) => {
                mock.headers.insert(h.to_ascii_lowercase(), v.to_string());
            }
            _ => notes.untranslated(
                &format!("{at}{}", pointer(&["responseParameters", to])),
                "a response parameter that is not a static header",
            ),
        }
    }
}

/// `x-amazon-apigateway-authorizer` on a security scheme as an
/// authorizer document with id `id`; `None` (and a note) when none fits.
pub fn authorizer(
    id: &str,
    ext: &Value,
    at: &str,
    opts: &Options,
    notes: &mut Notes,
) -> Option<Authorizer> {
    let kind = text(ext, "type").unwrap_or("").to_ascii_lowercase();
    let mut a: Authorizer =
        serde_json::from_value(serde_json::json!({"id": id})).expect("an authorizer from its id");
    match kind.as_str() {
        "jwt" => {
            let config = ext.get("jwtConfiguration").unwrap_or(&Value::Null);
            a.issuer = text(config, "issuer").unwrap_or("").to_string();
            a.audiences = strings(config.get("audience"));
            if let Some(source) = text(ext, "identitySource")
                .filter(|s| !s.eq_ignore_ascii_case("$request.header.Authorization"))
            {
                notes.untranslated(
                    &format!("{at}/identitySource"),
                    format_args!("{source}: Tollgate reads the bearer token from Authorization"),
                );
            }
        }
        "cognito_user_pools" => {
            let arns = strings(ext.get("providerARNs"));
            // arn:aws:cognito-idp:REGION:ACCOUNT:userpool/POOL
            let pool = arns.first().and_then(|arn| {
                let region = arn.split(':').nth(3)?;
                let pool = arn.split_once(":userpool/")?.1;
                Some(format!("https://cognito-idp.{region}.amazonaws.com/{pool}"))
            });
            let Some(issuer) = pool else {
                notes.untranslated(&format!("{at}/providerARNs"), "no user pool ARN");
                return None;
            };
            if arns.len() > 1 {
                notes.untranslated(&format!("{at}/providerARNs"), "user pools after the first");
            }
            a.issuer = issuer;
        }
        "token" | "request" => return Some(request_authorizer(a, &kind, ext, at, opts, notes)),
        other => {
            notes.untranslated(
                &format!("{at}/type"),
                format_args!("authorizer type {other:?}"),
            );
            return None;
        }
    }
    // AWS finds the keys through the issuer's discovery document; Cognito
    // and most identity providers serve them here.
    let jwks = format!("{}/.well-known/jwks.json", a.issuer.trim_end_matches('/'));
    if kind == "jwt" {
        notes.add(
            at,
            format_args!("jwks_uri set to {jwks} (AWS discovers it from the issuer; check it)"),
        );
    }
    a.jwks_uri = Some(jwks);
    a.algorithms = vec!["RS256".into()];
    Some(a)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// A Lambda `token` or `request` authorizer as a request authorizer
/// (contract §5.4): its endpoint is not in the export, so `--authorizer-url`
/// or a listed placeholder.
fn request_authorizer(
    mut a: Authorizer,
    kind: &str,
    ext: &Value,
    at: &str,
    opts: &Options,
    notes: &mut Notes,
) -> Authorizer {
    a.kind = AuthorizerType::Request;
    a.endpoint = Some(match &opts.authorizer_url {
        Some(u) => u.clone(),
        None => {
            let lambda = text(ext, "authorizerUri").unwrap_or("?");
            notes.add(
                &format!("{at}/authorizerUri"),
                format_args!("{lambda}: its endpoint is not in the definition; placeholder {AUTHORIZER_PLACEHOLDER} (give --authorizer-url); it gets AWS's 2.0 REQUEST event"),
            );
            AUTHORIZER_PLACEHOLDER.to_string()
        }
    });
    let sources = text(ext, "identitySource").unwrap_or(if kind == "token" {
        "method.request.header.Authorization"
    } else {
        ""
    });
    for source in sources.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match identity_source(source) {
            Some(s) => a.identity_sources.push(s),
            None => notes.untranslated(
                &format!("{at}/identitySource"),
                format_args!("identity source {source}"),
            ),
        }
    }
    if let Some(ttl) = ext
        .get("authorizerResultTtlInSeconds")
        .and_then(Value::as_u64)
    {
        a.ttl_s = Some(ttl.min(Authorizer::MAX_TTL_S));
    }
    // HTTP APIs may answer {isAuthorized}; REST API authorizers answer a policy.
    a.response = if ext.get("enableSimpleResponses").and_then(Value::as_bool) == Some(true) {
        AuthorizerResponse::Simple
    } else {
        AuthorizerResponse::Policy
    };
    for field in ["identityValidationExpression", "authorizerCredentials"] {
        if ext.get(field).is_some() {
            notes.untranslated(&format!("{at}/{field}"), field);
        }
    }
    a
}

/// `method.request.header.X` / `$request.header.X` (and querystring,
/// path) as `header:x`; context and stage variables have no equivalent.
fn identity_source(source: &str) -> Option<String> {
    let rest = source
        .strip_prefix("method.request.")
        .or_else(|| source.strip_prefix("$request."))?;
    let (kind, name) = rest.split_once('.')?;
    match kind {
        "header" => Some(format!("header:{}", name.to_ascii_lowercase())),
        "querystring" => Some(format!("query:{name}")),
        "path" => Some(format!("path:{name}")),
        _ => None,
    }
}

/// `x-amazon-apigateway-cors` (HTTP APIs) as the API's `cors`.
pub fn cors(ext: &Value, at: &str, notes: &mut Notes) -> Cors {
    let mut cors = Cors::default();
    for (field, value) in ext.as_object().into_iter().flatten() {
        match field.as_str() {
            "allowOrigins" => cors.allow_origins = strings(Some(value)),
            "allowMethods" => {
                for m in strings(Some(value)) {
                    let m = m.to_ascii_uppercase();
                    if m == "*" {
                        cors.allow_methods =
                            tollgate_model::validate::METHODS.map(String::from).to_vec();
                    } else if tollgate_model::validate::METHODS.contains(&m.as_str()) {
                        if !cors.allow_methods.contains(&m) {
                            cors.allow_methods.push(m);
                        }
                    } else {
                        notes.untranslated(
                            &format!("{at}/allowMethods"),
                            format_args!("method {m}"),
                        );
                    }
                }
            }
            "allowHeaders" => {
                cors.allow_headers = strings(Some(value))
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect()
            }
            "exposeHeaders" => {
                cors.expose_headers = strings(Some(value))
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect()
            }
            "allowCredentials" => cors.allow_credentials = value.as_bool().unwrap_or(false),
            "maxAge" => cors.max_age_s = value.as_u64(),
            _ => notes.untranslated(&format!("{at}/{field}"), "unknown field"),
        }
    }
    cors
}
