//! An OpenAPI 3.0/3.1 or Swagger 2.0 definition as Tollgate documents:
//! paths and methods as routes, servers or `basePath` as the base path and
//! upstream, AWS's extensions through `aws` and `security`. What has no
//! equivalent is noted by JSON pointer. No I/O.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use tollgate_model::path::PathTemplate;
use tollgate_model::{Api, AuthPolicy, Authorizer, Route, Upstream};

use super::aws::{self, Backend, Operation};
use super::security::Schemes;
use super::spec::{pointer, slug, Flavour, Notes, Options, UPSTREAM_PLACEHOLDER};

/// The documents an import makes, and what it left out.
#[derive(Debug)]
pub struct Translation {
    pub authorizers: Vec<Authorizer>,
    pub api: Api,
    pub notes: Vec<String>,
}

/// A route on its way into the API: where it came from, and its backend.
struct Draft {
    route: Route,
    backend: Backend,
    at: String,
    policy: AuthPolicy,
}

/// What every operation is read against.
struct Context<'a> {
    opts: &'a Options,
    schemes: Schemes,
    server: Server,
    /// The top-level `security`, as a policy.
    default_policy: AuthPolicy,
    ids: HashSet<String>,
    drafts: Vec<Draft>,
    notes: Notes,
}

pub fn translate(doc: &Value, flavour: Flavour, opts: &Options) -> Translation {
    let mut notes = Notes::default();
    let api_id = api_id(doc, opts, &mut notes);
    let server = Server::read(doc, flavour, opts, &mut notes);
    top_level(doc, &mut notes);
    let schemes = Schemes::read(doc, flavour, &api_id, opts, &mut notes);
    let default_policy = doc
        .get("security")
        .map(|s| schemes.policy(s, "/security", &mut notes));
    let mut cx = Context {
        opts,
        schemes,
        server,
        default_policy: default_policy.clone().unwrap_or_default(),
        ids: HashSet::new(),
        drafts: Vec::new(),
        notes,
    };
    for (path, item) in doc
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        path_item(&mut cx, path, item);
    }
    let cors = doc
        .get("x-amazon-apigateway-cors")
        .map(|c| aws::cors(c, "/x-amazon-apigateway-cors", &mut cx.notes));
    let mut api = assemble(&api_id, &mut cx, default_policy);
    api.cors = cors;
    let Context {
        schemes,
        mut notes,
        drafts,
        ..
    } = cx;
    let api = validated(api, drafts.into_iter().map(|d| d.at).collect(), &mut notes);
    Translation {
        authorizers: schemes.authorizers,
        api,
        notes: notes.into_lines(),
    }
}

/// `--api-id`, else the title as an id.
fn api_id(doc: &Value, opts: &Options, notes: &mut Notes) -> String {
    if let Some(id) = &opts.api_id {
        return id.clone();
    }
    let title = doc
        .pointer("/info/title")
        .and_then(Value::as_str)
        .unwrap_or("");
    match slug(title) {
        id if !id.is_empty() => id,
        _ => {
            notes.add(
                "/info/title",
                "no title to name the API by; its id is imported-api (give --api-id)",
            );
            "imported-api".into()
        }
    }
}

/// Where the API is served and where routes without an integration go.
struct Server {
    base_path: String,
    /// Scheme and authority of the definition's server (or `--upstream`).
    target: Option<String>,
    /// The server URL's path, which such routes' upstream paths start with.
    prefix: String,
    /// Where a missing server is noted.
    at: &'static str,
}

impl Server {
    fn read(doc: &Value, flavour: Flavour, opts: &Options, notes: &mut Notes) -> Server {
        let (url, at) = match flavour {
            Flavour::Swagger2 => {
                let base = doc.get("basePath").and_then(Value::as_str).unwrap_or("/");
                let url = match doc.get("host").and_then(Value::as_str) {
                    Some(host) => {
                        let scheme = doc
                            .pointer("/schemes/0")
                            .and_then(Value::as_str)
                            .unwrap_or("https");
                        format!("{scheme}://{host}{base}")
                    }
                    None => base.to_string(),
                };
                (url, "/host")
            }
            Flavour::OpenApi3 => (first_server(doc, notes), "/servers"),
        };
        let (target, path) = match aws::split_url(&url) {
            Some((t, p)) => (Some(t.to_string()), p.to_string()),
            None => (None, url.clone()),
        };
        let base_path = match &opts.base_path {
            Some(b) => b.clone(),
            None => base_path(&path, at, notes),
        };
        let mut server = Server {
            base_path,
            target,
            prefix: normalize(&path),
            at,
        };
        if let Some(up) = &opts.upstream {
            let (t, p) = aws::split_url(up).unwrap_or((up, ""));
            server.target = Some(t.to_string());
            server.prefix = normalize(p);
        }
        server
    }
}

/// The first server's URL with its variables' defaults filled in.
fn first_server(doc: &Value, notes: &mut Notes) -> String {
    let Some(server) = doc.pointer("/servers/0") else {
        return "/".into();
    };
    if doc
        .get("servers")
        .and_then(Value::as_array)
        .is_some_and(|s| s.len() > 1)
    {
        notes.untranslated("/servers", "servers after the first");
    }
    let mut url = server
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    for (name, var) in server
        .get("variables")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(default) = var.get("default").and_then(Value::as_str) {
            url = url.replace(&format!("{{{name}}}"), default);
        }
    }
    url
}

/// `p` with one slash between segments, a leading one and no trailing one.
fn normalize(p: &str) -> String {
    let p = p.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segments.join("/"))
}

fn base_path(path: &str, at: &str, notes: &mut Notes) -> String {
    let path = normalize(path);
    match tollgate_model::path::base_path("base_path", &path) {
        Ok(()) => path,
        Err(e) => {
            notes.untranslated(
                at,
                format_args!("base path: {}; / used (give --base-path)", e.message),
            );
            "/".into()
        }
    }
}

/// Why a definition-wide or operation field is not translated; `None`:
/// translated elsewhere, or only documentation.
fn untranslated_field(field: &str) -> Option<&'static str> {
    Some(match field {
        "definitions" => "models: Tollgate does not validate bodies",
        "webhooks" | "callbacks" => "webhooks and callbacks",
        "servers" => "per-path servers",
        "x-amazon-apigateway-request-validators" | "x-amazon-apigateway-request-validator" => {
            "request validation"
        }
        "x-amazon-apigateway-binary-media-types" => "binary media types",
        "x-amazon-apigateway-gateway-responses" => "gateway responses",
        "x-amazon-apigateway-policy" => "resource policy",
        "x-amazon-apigateway-minimum-compression-size" => "compression",
        "x-amazon-apigateway-endpoint-configuration" => "endpoint configuration",
        "x-amazon-apigateway-documentation" => "documentation parts",
        "x-amazon-apigateway-cors"
        | "x-amazon-apigateway-api-key-source"
        | "x-amazon-apigateway-importexport-version"
        | "x-amazon-apigateway-integration" => return None,
        f if f.starts_with("x-amazon-apigateway-") => "AWS extension",
        f if f.starts_with("x-") => "unknown extension",
        _ => return None,
    })
}

/// Notes for what the definition says outside its paths.
fn top_level(doc: &Value, notes: &mut Notes) {
    // The first server is read as the base path and upstream.
    let fields = doc.as_object().into_iter().flatten().map(|(k, _)| k);
    for field in fields.filter(|f| *f != "servers") {
        if let Some(why) = untranslated_field(field) {
            notes.untranslated(&pointer(&[field]), why);
        }
    }
    if doc.pointer("/components/schemas").is_some() {
        notes.untranslated(
            "/components/schemas",
            "models: Tollgate does not validate bodies",
        );
    }
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];
const ANY_METHOD: &str = "x-amazon-apigateway-any-method";

fn path_item(cx: &mut Context, path: &str, item: &Value) {
    let at = pointer(&["paths", path]);
    let (template, params) = route_path(path);
    if let Err(e) = PathTemplate::parse("path", &template) {
        let why = format!("path: {}; the path is left out", e.message);
        cx.notes.untranslated(&at, why);
        return;
    }
    for (key, value) in item.as_object().into_iter().flatten() {
        let method = match key.as_str() {
            k if METHODS.contains(&k) => Some(k.to_ascii_uppercase()),
            ANY_METHOD => None,
            "parameters" | "summary" | "description" => continue,
            k => {
                let why = untranslated_field(k).unwrap_or("a method Tollgate does not route");
                cx.notes
                    .untranslated(&format!("{at}{}", pointer(&[k])), why);
                continue;
            }
        };
        let op_at = format!("{at}{}", pointer(&[key]));
        if let Some(draft) = operation(cx, &op_at, &template, &params, method.as_deref(), value) {
            cx.drafts.push(draft);
        }
    }
}

/// `/pets/{pet-id}` as a route template (`/pets/{pet_id}`) and the names
/// its parameters got.
fn route_path(path: &str) -> (String, BTreeMap<String, String>) {
    let mut params = BTreeMap::new();
    let segments: Vec<String> = path
        .split('/')
        .map(|seg| {
            let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                return seg.to_string();
            };
            let (name, rest) = match inner.strip_suffix('+') {
                Some(n) => (n, "+"),
                None => (inner, ""),
            };
            let mut valid: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if !valid.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                valid.insert(0, '_');
            }
            params.insert(name.to_string(), valid.clone());
            format!("{{{valid}{rest}}}")
        })
        .collect();
    let template = segments.join("/");
    (
        if template.starts_with('/') {
            template
        } else {
            format!("/{template}")
        },
        params,
    )
}

/// One operation as a draft route; `None` when its integration has no
/// equivalent (noted).
fn operation(
    cx: &mut Context,
    at: &str,
    template: &str,
    params: &BTreeMap<String, String>,
    method: Option<&str>,
    op: &Value,
) -> Option<Draft> {
    for (field, value) in op.as_object().into_iter().flatten() {
        let why = match field.as_str() {
            "x-amazon-apigateway-auth"
                if value
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("none")) =>
            {
                continue
            }
            "x-amazon-apigateway-auth" => "IAM authorization",
            f => match untranslated_field(f) {
                Some(why) => why,
                None => continue,
            },
        };
        cx.notes
            .untranslated(&format!("{at}{}", pointer(&[field])), why);
    }
    let backend = match op.get("x-amazon-apigateway-integration") {
        Some(ix) => {
            let o = Operation {
                at: format!("{at}/x-amazon-apigateway-integration"),
                method,
                params,
                opts: cx.opts,
            };
            aws::integration(ix, &o, &mut cx.notes)?
        }
        None => Backend::Http {
            target: cx.server.target.clone(),
            upstream_path: (cx.server.prefix != "/")
                .then(|| format!("{}{}", cx.server.prefix, template.trim_end_matches('/'))),
            timeout_ms: None,
        },
    };
    let policy = match op.get("security") {
        Some(s) => cx
            .schemes
            .policy(s, &format!("{at}/security"), &mut cx.notes),
        None => cx.default_policy.clone(),
    };
    let id = route_id(&mut cx.ids, op, method, template);
    let mut route: Route = serde_json::from_value(serde_json::json!({"id": id, "path": template}))
        .expect("a route from its id and path");
    route.methods = method.map(|m| vec![m.to_string()]).unwrap_or_default();
    Some(Draft {
        route,
        backend,
        at: at.to_string(),
        policy,
    })
}

/// The slug of `operationId`, else of method and path; unique in the API.
fn route_id(
    taken: &mut HashSet<String>,
    op: &Value,
    method: Option<&str>,
    template: &str,
) -> String {
    let from_op = op
        .get("operationId")
        .and_then(Value::as_str)
        .map(slug)
        .unwrap_or_default();
    let base = match from_op {
        id if !id.is_empty() => id,
        _ => slug(&format!("{} {template}", method.unwrap_or("any"))),
    };
    let base = if base.is_empty() {
        "root".to_string()
    } else {
        base
    };
    let mut id = base.clone();
    let mut n = 2;
    while taken.contains(&id) {
        let suffix = format!("-{n}");
        let keep = base.len().min(64 - suffix.len());
        id = format!("{}{suffix}", base[..keep].trim_end_matches('-'));
        n += 1;
    }
    taken.insert(id.clone());
    id
}

/// The API from its drafts: one upstream (the target most routes use),
/// its policy on the API when the routes share it.
fn assemble(api_id: &str, cx: &mut Context, default_policy: Option<AuthPolicy>) -> Api {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut placeholder = false;
    for d in &mut cx.drafts {
        if let Backend::Http { target, .. } = &mut d.backend {
            let t = target.get_or_insert_with(|| {
                placeholder = true;
                UPSTREAM_PLACEHOLDER.to_string()
            });
            *counts.entry(t.clone()).or_default() += 1;
        }
    }
    if placeholder {
        let why = format!("no upstream for routes without an integration; placeholder {UPSTREAM_PLACEHOLDER} (give --upstream)");
        cx.notes.add(cx.server.at, why);
    }
    let chosen = counts
        .iter()
        .max_by_key(|(t, n)| (**n, std::cmp::Reverse(*t)))
        .map(|(t, _)| t.clone());
    let mut timeout = None;
    let drafts = std::mem::take(&mut cx.drafts);
    for mut d in drafts {
        match &d.backend {
            Backend::Http {
                target,
                upstream_path,
                timeout_ms,
            } => {
                if *target != chosen {
                    let why = format!(
                        "upstream {}: an API has one upstream, {}; the route is left out",
                        target.as_deref().unwrap_or_default(),
                        chosen.as_deref().unwrap_or_default()
                    );
                    cx.notes.untranslated(&d.at, why);
                    continue;
                }
                d.route.upstream_path = upstream_path.clone();
                timeout = timeout.max(*timeout_ms);
            }
            Backend::Function(f) => d.route.function = Some(f.clone()),
            Backend::Mock(m) => d.route.mock = Some(m.clone()),
        }
        cx.drafts.push(d);
    }
    let mut api: Api =
        serde_json::from_value(serde_json::json!({"id": api_id, "base_path": cx.server.base_path}))
            .expect("an API from its id and base path");
    api.upstream = chosen.map(|url| {
        let mut up: Upstream =
            serde_json::from_value(serde_json::json!({"targets": [{"url": url}]}))
                .expect("an upstream from one target");
        if let Some(t) = timeout {
            up.timeout_ms = t;
        }
        up
    });
    api.auth = default_policy.unwrap_or_else(|| shared_policy(&cx.drafts));
    for d in &mut cx.drafts {
        d.route.auth = (d.policy != api.auth).then(|| d.policy.clone());
    }
    api.routes = cx.drafts.iter().map(|d| d.route.clone()).collect();
    api
}

/// The routes' one policy, or open when they differ.
fn shared_policy(drafts: &[Draft]) -> AuthPolicy {
    match drafts.split_first() {
        Some((first, rest)) if rest.iter().all(|d| d.policy == first.policy) => {
            first.policy.clone()
        }
        _ => AuthPolicy::default(),
    }
}

/// `api` with every route that fails the model's validation left out (and
/// noted at its operation); what is left is checked again by the caller.
fn validated(mut api: Api, mut ats: Vec<String>, notes: &mut Notes) -> Api {
    while let Err(e) = api.validate() {
        let index = e
            .field
            .strip_prefix("routes[")
            .and_then(|r| r.split(']').next())
            .and_then(|i| i.parse::<usize>().ok());
        let Some(i) = index.filter(|i| *i < api.routes.len()) else {
            break;
        };
        notes.untranslated(&ats[i], format_args!("{e}; the route is left out"));
        api.routes.remove(i);
        ats.remove(i);
    }
    api
}
