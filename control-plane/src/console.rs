//! The web console (contract §5.7) at `/ui/`: hand-written HTML, CSS and
//! ES modules from `control-plane/ui/`, embedded in the binary so a node
//! serves it with no internet and no build step.
//!
//! The console is only a client of the admin API: the page and its assets
//! need no token, and everything it shows or writes goes through `/v1` with
//! the admin token the operator signs in with (kept in `sessionStorage`).
//! So there is no console-only endpoint to secure; what this module adds is
//! a strict Content-Security-Policy on every answer (no inline script or
//! style, no `eval`, connections to this origin only), which is what keeps
//! that token from leaking to anything but this node. The routes are not in
//! the OpenAPI document: that describes the JSON API, and these are files.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// Every `/ui/` answer's policy: only this origin's files and API, nothing
/// inline, and no framing (clickjacking a signed-in operator).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

/// One embedded file: its name under `/ui/`, content type and bytes.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ctype:expr) => {
        Asset {
            name: $name,
            content_type: $ctype,
            body: include_bytes!(concat!("../ui/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The console's files (`index.html` is also `/ui/`).
pub const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("charts.js", JS),
    asset!("pages.js", JS),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", CSS),
    asset!("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
];

/// Bytes of JavaScript and of CSS the console ships (docs/BENCHMARKS.md).
pub fn weight() -> (usize, usize) {
    let sum = |ctype: &str| {
        ASSETS
            .iter()
            .filter(|a| a.content_type == ctype)
            .map(|a| a.body.len())
            .sum()
    };
    (sum(JS), sum(CSS))
}

/// `/ui` (redirected), `/ui/` and `/ui/{file}`, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { serve("index.html") }))
        .route(
            "/ui/{*file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

fn serve(name: &str) -> Response {
    let mut res = match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                // The files change only with the binary; revalidating is
                // cheap and keeps a stale console from talking to a new API.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.body,
        )
            .into_response(),
        // In the error shape and as JSON, so the admin router's error layer
        // passes it through with the headers below.
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":{"code":"not_found","message":"no such console file"}}"#,
        )
            .into_response(),
    };
    let h = res.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_known_type_and_html_no_inline_code() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.name);
        }
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        // CSP would block these; catch them here rather than in a browser.
        for banned in ["<script>", " style=", "onclick=", "onload=", "javascript:"] {
            assert!(!html.contains(banned), "index.html has {banned}");
        }
        let (js, css) = weight();
        assert!(js > 0 && css > 0);
    }
}
