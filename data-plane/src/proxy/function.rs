//! Function routes (contract §5.4): the request becomes AWS's
//! proxy-integration event (payload format 1.0, REST-style, or 2.0,
//! HTTP-API-style), goes to the Lambda Invoke API
//! (`POST {url}/2015-03-31/functions/{name}/invocations`), and the
//! function's result becomes the response.
//!
//! A function error (`X-Amz-Function-Error`), an Invoke answer other than
//! 200 or an unreadable result is 502, the reason logged; no answer within
//! `timeout_ms` is 504.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Map, Value};
use tollgate_model::docs::Function;

use super::{RequestCtx, Trail};
use crate::auth;
use crate::body::{self, ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::http1::syntax::percent_decode;
use crate::router::RouteMatch;

/// The most of a function's result the gateway reads (Lambda's own limit
/// for a synchronous response is 6 MB).
const MAX_RESULT_BYTES: usize = 16 << 20;

const X_AMZ_FUNCTION_ERROR: &str = "x-amz-function-error";

/// Invoke `f` for `req` and answer with what it returns.
pub(super) async fn invoke(
    cx: RequestCtx<'_>,
    host: &str,
    matched: &RouteMatch,
    f: &Function,
    mut req: Request<RequestBody>,
    identity: &auth::Identity,
    trail: &mut Trail,
) -> Result<Response<ProxyBody>, ProxyError> {
    auth::prepare_upstream_headers(req.headers_mut(), identity);
    super::headers::strip_hop_by_hop(req.headers_mut());
    let (parts, incoming) = req.into_parts();
    let body = match Limited::new(incoming, cx.limits.max_body_bytes)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ProxyError::PayloadTooLarge)
        }
        Err(e) => {
            tracing::debug!(error = %e, "reading the request body failed");
            return Err(ProxyError::BadFraming("malformed request body"));
        }
    };
    let v2 = f.payload != "1.0";
    let facts = Facts::new(cx, host, matched, &parts, identity);
    let event = if v2 {
        facts.event_v2(&body)
    } else {
        facts.event_v1(&body)
    };
    let started = Instant::now();
    let outcome = call(cx, f, event.to_string()).await;
    let us = started.elapsed().as_micros() as u64;
    trail.upstream_us = Some(us);
    let route = matched.route();
    let res = outcome.and_then(|result| {
        map_result(&result, v2).map_err(|why| FnFailure::Bad(format!("unreadable result: {why}")))
    });
    route.metrics.function_call(us, res.is_err());
    res.map_err(|e| {
        let (api, route) = (&matched.api.doc.id, &route.doc.id);
        match e {
            FnFailure::Timeout => {
                tracing::warn!(request_id = ?cx.id, api = %api, route = %route, function = %f.name,
                    timeout_ms = f.timeout_ms, "function did not answer in time");
                ProxyError::GatewayTimeout
            }
            FnFailure::Bad(why) => {
                tracing::warn!(request_id = ?cx.id, api = %api, route = %route, function = %f.name,
                    reason = %why, "function invocation failed");
                ProxyError::BadGateway(why)
            }
        }
    })
}

enum FnFailure {
    Timeout,
    Bad(String),
}

/// The Invoke API call: the result's bytes, or why there are none.
async fn call(cx: RequestCtx<'_>, f: &Function, event: String) -> Result<Bytes, FnFailure> {
    let uri = format!(
        "{}/2015-03-31/functions/{}/invocations",
        f.url.trim_end_matches('/'),
        sigv4::uri_encode(&f.name)
    );
    let mut builder = Request::post(&uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-amz-invocation-type", "RequestResponse");
    if let Some(sig) = &f.sigv4 {
        for (name, value) in signed_headers(sig, &uri, event.as_bytes())? {
            builder = builder.header(name, value);
        }
    }
    let req = builder
        .body(body::full(event))
        .map_err(|e| FnFailure::Bad(format!("bad invoke request: {e}")))?;
    let client = cx.gw.clients.for_request(false);
    let exchange = async move {
        let res = client
            .request(req)
            .await
            .map_err(|e| FnFailure::Bad(format!("invoke failed: {e}")))?;
        let status = res.status();
        let fn_error = res
            .headers()
            .get(X_AMZ_FUNCTION_ERROR)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let bytes = Limited::new(res.into_body(), MAX_RESULT_BYTES)
            .collect()
            .await
            .map_err(|e| FnFailure::Bad(format!("reading the invoke answer failed: {e}")))?
            .to_bytes();
        if let Some(kind) = fn_error {
            let detail = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(FnFailure::Bad(format!("function error ({kind}): {detail}")));
        }
        if status != StatusCode::OK {
            let detail = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(FnFailure::Bad(format!(
                "invoke answered {status}: {detail}"
            )));
        }
        Ok(bytes)
    };
    tokio::time::timeout(Duration::from_millis(f.timeout_ms), exchange)
        .await
        .unwrap_or(Err(FnFailure::Timeout))
}

/// The headers that sign an Invoke call (`host`, `x-amz-date`, the
/// session token if any, `authorization`), credentials read from the
/// environment variables the route names.
fn signed_headers(
    sig: &tollgate_model::docs::SigV4,
    uri: &str,
    payload: &[u8],
) -> Result<Vec<(&'static str, String)>, FnFailure> {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| FnFailure::Bad(format!("sigv4: environment variable {name} is not set")))
    };
    let access_key_id = env(&sig.access_key_id_env)?;
    let secret_access_key = env(&sig.secret_access_key_env)?;
    let token = match &sig.session_token_env {
        Some(name) => Some(env(name)?),
        None => None,
    };
    let uri: http::Uri = uri
        .parse()
        .map_err(|e| FnFailure::Bad(format!("bad invoke uri: {e}")))?;
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .unwrap_or("")
        .to_string();
    let (y, mo, d, h, mi, sec) = crate::civil_time::civil(SystemTime::now());
    let amz_date = format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{sec:02}Z");
    let mut signed = vec![
        ("content-type", "application/json"),
        ("host", host.as_str()),
        ("x-amz-date", amz_date.as_str()),
        ("x-amz-invocation-type", "RequestResponse"),
    ];
    if let Some(t) = &token {
        signed.push(("x-amz-security-token", t.as_str()));
    }
    let authorization = sigv4::authorization(
        &sigv4::Signing {
            access_key_id: &access_key_id,
            secret_access_key: &secret_access_key,
            region: &sig.region,
            service: "lambda",
            amz_date: &amz_date,
        },
        "POST",
        uri.path(),
        &signed,
        payload,
    );
    let mut out = vec![
        ("x-amz-date", amz_date.clone()),
        ("authorization", authorization),
    ];
    if let Some(t) = token {
        out.push(("x-amz-security-token", t));
    }
    Ok(out)
}

/// What both event formats are made of.
struct Facts<'a> {
    method: &'a str,
    raw_path: &'a str,
    raw_query: &'a str,
    headers: &'a HeaderMap,
    extra: Vec<(&'static str, String)>,
    route_template: String,
    path_params: Vec<(&'a str, String)>,
    route_key: String,
    api_id: &'a str,
    host: &'a str,
    protocol: &'static str,
    source_ip: String,
    user_agent: String,
    request_id: String,
    identity: &'a auth::Identity,
    now: SystemTime,
}

impl<'a> Facts<'a> {
    fn new(
        cx: RequestCtx<'a>,
        host: &'a str,
        matched: &'a RouteMatch,
        parts: &'a http::request::Parts,
        identity: &'a auth::Identity,
    ) -> Self {
        let api = &matched.api.doc;
        let route = &matched.route().doc;
        let raw_path = parts.uri.path();
        let route_template = match (api.base_path.as_str(), route.path.as_str()) {
            ("/", p) => p.to_string(),
            (b, "/") => b.to_string(),
            (b, p) => format!("{}{p}", b.trim_end_matches('/')),
        };
        let method = parts.method.as_str();
        let key_method = if route.methods.is_empty() {
            "ANY"
        } else {
            method
        };
        let source_ip = cx.conn.remote.ip().to_string();
        // What AWS adds, and what the gateway tells every upstream.
        let mut extra = vec![
            ("x-forwarded-for", source_ip.clone()),
            (
                "x-forwarded-proto",
                if cx.conn.tls { "https" } else { "http" }.to_string(),
            ),
            (
                "x-request-id",
                String::from_utf8_lossy(cx.id.as_bytes()).into_owned(),
            ),
        ];
        if !parts.headers.contains_key(header::HOST) && !host.is_empty() {
            extra.push(("host", host.to_string()));
        }
        Facts {
            method,
            raw_path,
            raw_query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            path_params: matched
                .path_params(raw_path)
                .into_iter()
                .map(|(k, v)| (k, percent_decode(v, false)))
                .collect(),
            route_key: format!("{key_method} {route_template}"),
            route_template,
            extra,
            api_id: &api.id,
            host,
            protocol: match parts.version {
                Version::HTTP_09 => "HTTP/0.9",
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2.0",
                Version::HTTP_3 => "HTTP/3.0",
                _ => "HTTP/1.1",
            },
            source_ip,
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default(),
            request_id: String::from_utf8_lossy(cx.id.as_bytes()).into_owned(),
            identity,
            now: SystemTime::now(),
        }
    }

    /// Every header as (lower-case name, values in order), the gateway's
    /// own last; `cookie` left out when `cookies` carries it (2.0).
    fn header_lists(&self, without_cookie: bool) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        let mut push = |name: &str, value: String| match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, vs)) => vs.push(value),
            None => out.push((name.to_string(), vec![value])),
        };
        for (name, value) in self.headers {
            if without_cookie && *name == header::COOKIE {
                continue;
            }
            if self.extra.iter().any(|(n, _)| *n == name.as_str()) {
                continue;
            }
            push(
                name.as_str(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            );
        }
        for (name, value) in &self.extra {
            push(name, value.clone());
        }
        out
    }

    /// The query's pairs, decoded (`+` as a space), in order.
    fn query_lists(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for pair in self.raw_query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k, true), percent_decode(v, true));
            match out.iter_mut().find(|(n, _)| *n == k) {
                Some((_, vs)) => vs.push(v),
                None => out.push((k, vec![v])),
            }
        }
        out
    }

    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split(';')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn path_parameters(&self) -> Option<Value> {
        (!self.path_params.is_empty()).then(|| {
            Value::Object(
                self.path_params
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                    .collect(),
            )
        })
    }

    fn epoch_ms(&self) -> u64 {
        self.now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn body(&self, body: &Bytes) -> (Value, bool) {
        if body.is_empty() {
            return (Value::Null, false);
        }
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match std::str::from_utf8(body) {
            Ok(text) if is_text(content_type) => (Value::String(text.to_string()), false),
            _ => (Value::String(B64.encode(body)), true),
        }
    }

    /// The caller's JWT claims and scopes. Payload 1.0 (REST) passes each
    /// claim with its JSON type; 2.0 (HTTP APIs) as text, the way AWS
    /// renders them: numbers as digits, arrays as `[a b]`, objects as JSON.
    fn jwt_claims(&self, as_text: bool) -> Option<(Value, Vec<String>)> {
        let jwt = self.identity.jwt.as_ref()?;
        let v = &jwt.verified;
        let claims: Map<String, Value> = if as_text {
            v.claims
                .iter()
                .map(|(k, c)| (k.clone(), Value::String(claim_text(c))))
                .collect()
        } else {
            v.claims.clone()
        };
        Some((Value::Object(claims), v.scopes.clone()))
    }

    /// The caller's key, tenant and address (`requestContext.identity`).
    fn identity(&self) -> Value {
        json!({
            "sourceIp": self.source_ip,
            "userAgent": self.user_agent,
            "apiKeyId": self.identity.key_id(),
            "tenant": self.identity.tenant(),
            "accessKey": null, "accountId": null, "caller": null, "user": null, "userArn": null,
        })
    }

    fn domain_name(&self) -> &str {
        match self.host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.host,
        }
    }

    /// Payload format 2.0 (HTTP APIs).
    fn event_v2(&self, body: &Bytes) -> Value {
        let headers: Map<String, Value> = self
            .header_lists(true)
            .into_iter()
            .map(|(k, vs)| (k, Value::String(vs.join(","))))
            .collect();
        let query: Map<String, Value> = self
            .query_lists()
            .into_iter()
            .map(|(k, vs)| (k, Value::String(vs.join(","))))
            .collect();
        let mut authorizer = Map::new();
        if let Some((claims, scopes)) = self.jwt_claims(true) {
            authorizer.insert(
                "jwt".into(),
                json!({"claims": claims, "scopes": (!scopes.is_empty()).then_some(scopes)}),
            );
        }
        if let Some(sub) = &self.identity.subject {
            authorizer.insert("principalId".into(), Value::String(sub.clone()));
        }
        if let Some(grant) = &self.identity.request {
            // A request authorizer's context, where AWS puts a Lambda
            // authorizer's for HTTP APIs.
            authorizer.insert("lambda".into(), Value::Object(grant.context.clone()));
        }
        let domain = self.domain_name();
        let mut request_context = json!({
            "accountId": "000000000000",
            "apiId": self.api_id,
            "domainName": domain,
            "domainPrefix": domain.split('.').next().unwrap_or(""),
            "http": {
                "method": self.method,
                "path": percent_decode(self.raw_path, false),
                "protocol": self.protocol,
                "sourceIp": self.source_ip,
                "userAgent": self.user_agent,
            },
            "identity": self.identity(),
            "requestId": self.request_id,
            "routeKey": self.route_key,
            "stage": "$default",
            "time": crate::civil_time::clf(self.now),
            "timeEpoch": self.epoch_ms(),
        });
        if !authorizer.is_empty() {
            request_context["authorizer"] = Value::Object(authorizer);
        }
        let mut event = json!({
            "version": "2.0",
            "routeKey": self.route_key,
            "rawPath": self.raw_path,
            "rawQueryString": self.raw_query,
            "headers": headers,
            "requestContext": request_context,
        });
        let cookies = self.cookies();
        if !cookies.is_empty() {
            event["cookies"] = json!(cookies);
        }
        if !query.is_empty() {
            event["queryStringParameters"] = Value::Object(query);
        }
        if let Some(p) = self.path_parameters() {
            event["pathParameters"] = p;
        }
        let (body, b64) = self.body(body);
        if !body.is_null() {
            event["body"] = body;
        }
        event["isBase64Encoded"] = Value::Bool(b64);
        event
    }

    /// Payload format 1.0 (REST APIs).
    fn event_v1(&self, body: &Bytes) -> Value {
        let header_lists = self.header_lists(false);
        let single = |lists: &[(String, Vec<String>)]| -> Value {
            if lists.is_empty() {
                return Value::Null;
            }
            Value::Object(
                lists
                    .iter()
                    .map(|(k, vs)| (k.clone(), json!(vs.last())))
                    .collect(),
            )
        };
        let multi = |lists: &[(String, Vec<String>)]| -> Value {
            if lists.is_empty() {
                return Value::Null;
            }
            Value::Object(lists.iter().map(|(k, vs)| (k.clone(), json!(vs))).collect())
        };
        let query_lists = self.query_lists();
        let mut authorizer = Map::new();
        if let Some((claims, scopes)) = self.jwt_claims(false) {
            authorizer.insert("claims".into(), claims);
            authorizer.insert(
                "scopes".into(),
                json!((!scopes.is_empty()).then_some(scopes)),
            );
        }
        if let Some(sub) = &self.identity.subject {
            authorizer.insert("principalId".into(), Value::String(sub.clone()));
        }
        if let Some(grant) = &self.identity.request {
            // REST APIs put a Lambda authorizer's context keys beside
            // `principalId`.
            for (k, v) in &grant.context {
                authorizer.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let domain = self.domain_name();
        let mut request_context = json!({
            "accountId": "000000000000",
            "apiId": self.api_id,
            "domainName": domain,
            "domainPrefix": domain.split('.').next().unwrap_or(""),
            "extendedRequestId": self.request_id,
            "httpMethod": self.method,
            "identity": self.identity(),
            "path": self.raw_path,
            "protocol": self.protocol,
            "requestId": self.request_id,
            "requestTime": crate::civil_time::clf(self.now),
            "requestTimeEpoch": self.epoch_ms(),
            "resourceId": null,
            "resourcePath": self.route_template,
            "stage": "$default",
        });
        if !authorizer.is_empty() {
            request_context["authorizer"] = Value::Object(authorizer);
        }
        let (body, b64) = self.body(body);
        json!({
            "version": "1.0",
            "resource": self.route_template,
            "path": self.raw_path,
            "httpMethod": self.method,
            "headers": single(&header_lists),
            "multiValueHeaders": multi(&header_lists),
            "queryStringParameters": single(&query_lists),
            "multiValueQueryStringParameters": multi(&query_lists),
            "requestContext": request_context,
            "pathParameters": self.path_parameters(),
            "stageVariables": null,
            "body": body,
            "isBase64Encoded": b64,
        })
    }
}

/// Whether a body of this content type goes in the event as text (else
/// base64, as AWS does for binary media).
fn is_text(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || matches!(
            mime.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
                | "application/yaml"
        )
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
}

/// The function's result as the response: AWS's proxy-integration result
/// (`statusCode`, `headers`, `multiValueHeaders`, `cookies`, `body`,
/// `isBase64Encoded`); with payload 2.0 any JSON without a `statusCode`
/// is a 200 JSON body.
fn map_result(result: &[u8], v2: bool) -> Result<Response<ProxyBody>, String> {
    let value: Value = serde_json::from_slice(result).map_err(|e| format!("not JSON ({e})"))?;
    let structured = value.as_object().filter(|o| o.contains_key("statusCode"));
    let Some(obj) = structured else {
        if !v2 {
            return Err("no statusCode".into());
        }
        let mut res = Response::new(body::full(Bytes::copy_from_slice(result)));
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(result.len()));
        return Ok(res);
    };
    let status = match &obj["statusCode"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .and_then(|n| u16::try_from(n).ok())
    .filter(|n| (200..=599).contains(n))
    .and_then(|n| StatusCode::from_u16(n).ok())
    .ok_or_else(|| format!("statusCode {} is not a status", obj["statusCode"]))?;
    let mut headers = HeaderMap::new();
    let multi = match obj.get("multiValueHeaders") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("multiValueHeaders is not an object".into()),
    };
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if multi.keys().any(|mk| mk.eq_ignore_ascii_case(k)) {
                    continue;
                }
                append(&mut headers, k, v)?;
            }
        }
        Some(_) => return Err("headers is not an object".into()),
    }
    for (k, vs) in &multi {
        let Value::Array(vs) = vs else {
            return Err(format!("multiValueHeaders.{k} is not an array"));
        };
        for v in vs {
            append(&mut headers, k, v)?;
        }
    }
    match obj.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(cs)) if v2 => {
            for c in cs {
                append(&mut headers, "set-cookie", c)?;
            }
        }
        Some(Value::Array(_)) => {}
        Some(_) => return Err("cookies is not an array".into()),
    }
    let b64 = match obj.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(_) => return Err("isBase64Encoded is not a boolean".into()),
    };
    let body = match obj.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if b64 => B64
            .decode(s.trim())
            .map(Bytes::from)
            .map_err(|e| format!("body is not base64 ({e})"))?,
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(_) => return Err("body is not a string".into()),
    };
    // The length the client gets is the decoded body's; framing is the
    // gateway's.
    super::headers::strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    if !bodiless {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let mut res = Response::new(if bodiless {
        body::empty()
    } else {
        body::full(body)
    });
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    Ok(res)
}

/// One header of the result; numbers and booleans as their text.
fn append(h: &mut HeaderMap, name: &str, v: &Value) -> Result<(), String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => return Ok(()),
        _ => return Err(format!("header {name} is not a string")),
    };
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?;
    let value =
        HeaderValue::from_str(&text).map_err(|_| format!("header {name} has an invalid value"))?;
    h.append(name, value);
    Ok(())
}

// ---------------------------------------------------------------- SigV4

/// AWS Signature Version 4 for the Invoke call, so the same route can call
/// real AWS Lambda. HMAC-SHA256 built on `sha2` (RFC 2104).
mod sigv4;

/// A claim as payload 2.0 carries it: strings as they are, arrays of
/// scalars as `[a b]`, anything else as JSON text.
fn claim_text(claim: &Value) -> String {
    match claim {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            let items: Vec<String> = items.iter().map(claim_text).collect();
            format!("[{}]", items.join(" "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_authorizers_context_reaches_both_event_shapes() {
        let mut context = Map::new();
        context.insert("tier".into(), json!("gold"));
        context.insert("level".into(), json!(3));
        let identity = auth::Identity {
            subject: Some("user-7".into()),
            request: Some(std::sync::Arc::new(auth::request::RequestGrant {
                principal: Some("user-7".into()),
                context,
                ..Default::default()
            })),
            ..Default::default()
        };
        let headers = HeaderMap::new();
        let facts = Facts {
            method: "GET",
            raw_path: "/a",
            raw_query: "",
            headers: &headers,
            extra: Vec::new(),
            route_template: "/a".into(),
            path_params: Vec::new(),
            route_key: "GET /a".into(),
            api_id: "api",
            host: "h",
            protocol: "HTTP/1.1",
            source_ip: "127.0.0.1".into(),
            user_agent: String::new(),
            request_id: "rid".into(),
            identity: &identity,
            now: SystemTime::UNIX_EPOCH,
        };
        let v2 = facts.event_v2(&Bytes::new());
        assert_eq!(
            v2["requestContext"]["authorizer"]["lambda"],
            json!({"tier": "gold", "level": 3})
        );
        assert_eq!(v2["requestContext"]["authorizer"]["principalId"], "user-7");
        let v1 = facts.event_v1(&Bytes::new());
        assert_eq!(v1["requestContext"]["authorizer"]["tier"], "gold");
        assert_eq!(v1["requestContext"]["authorizer"]["level"], 3);
        assert_eq!(v1["requestContext"]["authorizer"]["principalId"], "user-7");
    }

    #[test]
    fn text_media_types() {
        assert!(is_text("application/json; charset=utf-8"));
        assert!(is_text("text/plain"));
        assert!(is_text("application/vnd.api+json"));
        assert!(!is_text("application/octet-stream"));
        assert!(!is_text("image/png"));
        assert!(!is_text(""));
    }

    #[test]
    fn results_map_to_responses() {
        let r = map_result(br#"{"hello":"world"}"#, true).unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert!(map_result(br#"{"hello":"world"}"#, false).is_err());
        let r = map_result(
            br#"{"statusCode":201,"headers":{"a":"1","content-length":"999"},"multiValueHeaders":{"b":["x","y"]},"cookies":["c=1","d=2"],"body":"aGk=","isBase64Encoded":true}"#,
            true,
        )
        .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["content-length"], "2");
        assert_eq!(r.headers().get_all("b").iter().count(), 2);
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        assert!(map_result(b"not json", true).is_err());
        assert!(map_result(br#"{"statusCode":"abc"}"#, true).is_err());
        assert!(map_result(
            br#"{"statusCode":200,"body":"%%","isBase64Encoded":true}"#,
            true
        )
        .is_err());
    }
}
