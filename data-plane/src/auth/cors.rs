//! CORS from an API's `cors` block. The gateway answers preflights itself
//! (they never reach the upstream or the auth phases: browsers send them
//! without credentials), and sets the CORS headers of actual responses,
//! replacing whatever the upstream said, since the API's `cors` block is
//! the single source of truth once it exists.
//!
//! Origins match exactly (ASCII case-insensitive, as origins are) or by
//! `*`. Credentials are allowed only for an origin listed explicitly; the
//! response then names that origin, never `*`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tollgate_model::docs::Cors;

use crate::body::{self, ProxyBody};
use crate::error::ProxyError;
use crate::http1::fields::Answer;
use crate::router::RouteTable;

/// How a request's origin is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Listed: the response names the origin.
    Exact(HeaderValue),
    /// Allowed by `*` (without credentials): the response says `*`.
    Any,
}

pub fn allowed_origin(cors: &Cors, origin: &HeaderValue) -> Option<Allowed> {
    let o = origin.to_str().ok()?;
    if cors
        .allow_origins
        .iter()
        .any(|a| a != "*" && a.trim_end_matches('/').eq_ignore_ascii_case(o))
    {
        return Some(Allowed::Exact(origin.clone()));
    }
    if cors.allow_origins.iter().any(|a| a == "*") {
        // Validation forbids `*` with credentials; were it there anyway,
        // credentials stay off for origins that are not listed.
        return Some(Allowed::Any);
    }
    None
}

fn allow_origin_headers(cors: &Cors, allowed: &Allowed, h: &mut HeaderMap) {
    match allowed {
        Allowed::Exact(origin) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if cors.allow_credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        Allowed::Any => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
}

fn joined(list: &[String]) -> Option<HeaderValue> {
    if list.is_empty() {
        return None;
    }
    HeaderValue::from_str(&list.join(", ")).ok()
}

/// The method a preflight asks about, if `req` is a preflight.
pub fn preflight_method<B>(req: &Request<B>) -> Option<Method> {
    if req.method() != Method::OPTIONS || !req.headers().contains_key(header::ORIGIN) {
        return None;
    }
    let m = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)?
        .to_str()
        .ok()?;
    Method::from_bytes(m.trim().as_bytes()).ok()
}

/// Answer a preflight for a route of an API with a `cors` block: the route
/// is found with the method the preflight asks about. `None` when `req` is
/// not a preflight for such a route (it then goes the usual way).
pub fn answer_preflight<B>(
    routes: &RouteTable,
    host: &str,
    req: &Request<B>,
) -> Option<Response<ProxyBody>> {
    let method = preflight_method(req)?;
    let matched = routes.find(host, req.uri().path(), &method).ok()?;
    let cors = matched.api.doc.cors.as_ref()?;
    Some(preflight(cors, &matched.api.doc.id, req.headers(), &method))
}

static VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

/// The gateway's answer to a preflight: 204 with the CORS headers, or 403
/// (without them) for an origin or method the API does not allow.
pub fn preflight(cors: &Cors, api: &str, h: &HeaderMap, method: &Method) -> Response<ProxyBody> {
    let origin = h.get(header::ORIGIN).expect("a preflight has an Origin");
    let refuse = |why: &str| {
        tracing::debug!(api, origin = ?origin, %method, "CORS preflight refused: {why}");
        let mut res = ProxyError::Forbidden.into_response();
        res.headers_mut()
            .insert(header::VARY, VARY_PREFLIGHT.clone());
        res
    };
    let Some(allowed) = allowed_origin(cors, origin) else {
        return refuse("origin not allowed");
    };
    let method_ok = cors.allow_methods.is_empty()
        || cors
            .allow_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method.as_str()));
    if !method_ok {
        return refuse("method not allowed");
    }
    let mut res = Response::new(body::empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    let out = res.headers_mut();
    allow_origin_headers(cors, &allowed, out);
    // An empty list allows the methods of the route (it matched this one).
    let methods =
        joined(&cors.allow_methods).or_else(|| HeaderValue::from_str(method.as_str()).ok());
    if let Some(m) = methods {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
    }
    let wildcard_headers = cors.allow_headers.iter().any(|x| x == "*");
    let allow_headers = if wildcard_headers {
        // Echo what was asked: `*` is taken literally by browsers when
        // credentials are involved.
        h.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned()
    } else {
        joined(&cors.allow_headers)
    };
    if let Some(v) = allow_headers {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(age) = cors.max_age_s {
        out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
    }
    out.insert(header::VARY, VARY_PREFLIGHT.clone());
    res
}

static GATEWAY_OWNED: [HeaderName; 3] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
];

/// The CORS headers of an actual response (upstream or the gateway's own,
/// errors included, so browsers can read a 401 or 429).
pub fn decorate(cors: &Cors, origin: Option<&HeaderValue>, answer: &mut Answer<ProxyBody>) {
    // `Vary` merges with the upstream's.
    let res = answer.materialize();
    let h = res.headers_mut();
    for name in &GATEWAY_OWNED {
        h.remove(name);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(allowed) = origin.and_then(|o| allowed_origin(cors, o)) else {
        return;
    };
    allow_origin_headers(cors, &allowed, h);
    if let Some(v) = joined(&cors.expose_headers) {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["content-type".into(), "x-api-key".into()],
            expose_headers: vec!["x-request-id".into()],
            allow_credentials: credentials,
            max_age_s: Some(600),
        }
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn preflight_headers(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, hv(origin));
        h.insert(header::ACCESS_CONTROL_REQUEST_METHOD, hv("POST"));
        h.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, hv("content-type"));
        h
    }

    #[test]
    fn origins_match_exactly_or_by_star() {
        let c = cors(&["https://app.example", "https://b.example/"], true);
        assert_eq!(
            allowed_origin(&c, &hv("https://APP.example")),
            Some(Allowed::Exact(hv("https://APP.example")))
        );
        assert!(allowed_origin(&c, &hv("https://b.example")).is_some());
        assert_eq!(allowed_origin(&c, &hv("https://app.example.evil")), None);
        assert_eq!(allowed_origin(&c, &hv("http://app.example")), None);
        assert_eq!(allowed_origin(&c, &hv("null")), None);
        let star = cors(&["*"], false);
        assert_eq!(
            allowed_origin(&star, &hv("https://x.example")),
            Some(Allowed::Any)
        );
    }

    #[test]
    fn preflight_answers_and_refuses() {
        let c = cors(&["https://app.example"], true);
        let res = preflight(
            &c,
            "a",
            &preflight_headers("https://app.example"),
            &Method::POST,
        );
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let h = res.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, x-api-key"
        );
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
        let res = preflight(
            &c,
            "a",
            &preflight_headers("https://evil.example"),
            &Method::POST,
        );
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(!res
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        let res = preflight(
            &c,
            "a",
            &preflight_headers("https://app.example"),
            &Method::DELETE,
        );
        assert_eq!(res.status(), StatusCode::FORBIDDEN);

        // `*` without credentials answers `*` and no credentials header.
        let star = cors(&["*"], false);
        let res = preflight(
            &star,
            "a",
            &preflight_headers("https://x.example"),
            &Method::GET,
        );
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!res
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[test]
    fn actual_responses_get_gateway_cors_headers() {
        let c = cors(&["https://app.example"], true);
        let mut res = Response::new(body::empty());
        res.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, hv("*"));
        let mut answer = Answer::from(res);
        decorate(&c, Some(&hv("https://evil.example")), &mut answer);
        let res = answer.res;
        assert!(!res
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(res.headers()[header::VARY], "Origin");
        let mut answer = Answer::from(Response::new(body::empty()));
        decorate(&c, Some(&hv("https://app.example")), &mut answer);
        let res = answer.res;
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            "x-request-id"
        );
    }
}
