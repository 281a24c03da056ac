//! The compiled router: host, then the longest base path, then the route
//! templates of that API in order of specificity, then the method.
//!
//! The table is two persistent (`im`) maps, so a config change rebuilds only
//! the APIs it touches and shares the rest with the table in force; readers
//! keep using the old table until they drop it.
//!
//! Each host also counts its base paths per depth (segment count), so a
//! lookup skips the path prefixes of depths no base path has, and skips
//! the host lookup when no API names a host: most tables mount everything
//! on a few shallow base paths.

use std::net::IpAddr;
use std::sync::Arc;

use http::Method;
use tollgate_model::docs::{Api, Route};
use tollgate_model::path::PathTemplate;
use tollgate_model::stages::Sticky;

use crate::upstream::UpstreamPool;

/// One route, ready to match.
pub struct CompiledRoute {
    pub doc: Route,
    template: PathTemplate,
    rewrite: Option<PathTemplate>,
    /// Empty means every method.
    methods: Vec<Method>,
    /// This route's counters (the gateway hands out the registered ones, so
    /// they outlive config changes).
    pub metrics: Arc<crate::metrics::RouteMetrics>,
}

impl CompiledRoute {
    fn allows(&self, m: &Method) -> bool {
        self.methods.is_empty()
            || self.methods.contains(m)
            || (*m == Method::HEAD && self.methods.contains(&Method::GET))
    }
}

/// One API with its routes compiled and its upstream pool attached.
pub struct CompiledApi {
    pub doc: Api,
    /// Routes, most specific first.
    pub routes: Vec<CompiledRoute>,
    pub upstream: Option<Arc<UpstreamPool>>,
    /// What the route table knows it by: the API's id, or `@{stage}` for
    /// a stage (whose document carries the API's id).
    pub key: String,
    /// A stage's deployment and canary; `None` for an API's own path.
    pub stage: Option<StageServing>,
    /// An API's own path whose document refers to stage variables: the
    /// routes that use one answer 500 here (only stages define them).
    pub needs_variables: bool,
}

impl CompiledApi {
    /// Compile `doc`. The document has been validated, so a failure here is
    /// a bug in validation, reported as a NACK reason all the same.
    pub fn new(doc: Api, upstream: Option<Arc<UpstreamPool>>) -> Result<Self, String> {
        let mut routes = Vec::with_capacity(doc.routes.len());
        // A WebSocket API answers its base path alone (the upgrade); its
        // routes' paths are where their integrations POST.
        let websocket = doc.protocol == tollgate_model::websocket::Protocol::Websocket;
        for (i, r) in doc.routes.iter().enumerate() {
            let field = |f: &str| format!("api {:?} routes[{i}].{f}", doc.id);
            let matched_path = if websocket { "/" } else { r.path.as_str() };
            let template =
                PathTemplate::parse(&field("path"), matched_path).map_err(|e| e.to_string())?;
            let rewrite = match &r.upstream_path {
                Some(p) => Some(
                    PathTemplate::parse(&field("upstream_path"), p).map_err(|e| e.to_string())?,
                ),
                None => None,
            };
            // The upgrade is a GET.
            let get = ["GET".to_string()];
            let methods = if websocket { &get[..] } else { &r.methods[..] };
            let methods = methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| format!("{}: bad method {m:?}", field("methods")))
                })
                .collect::<Result<_, _>>()?;
            routes.push(CompiledRoute {
                metrics: Arc::new(crate::metrics::RouteMetrics::new(&doc.id, &r.id)),
                doc: r.clone(),
                template,
                rewrite,
                methods,
            });
        }
        // Stable: among equally specific templates, declaration order wins.
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
        Ok(Self {
            key: doc.id.clone(),
            needs_variables: !tollgate_model::stages::variables_used(&doc).is_empty(),
            doc,
            routes,
            upstream,
            stage: None,
        })
    }

    /// Whether route `i` (or the upstream it would use) refers to a stage
    /// variable that nothing here defines.
    pub fn route_needs_variables(&self, i: usize) -> bool {
        use tollgate_model::stages::refers_to_variables as refers;
        if !self.needs_variables {
            return false;
        }
        let r = &self.routes[i].doc;
        let proxied = r.mock.is_none() && r.function.is_none();
        r.upstream_path.as_deref().is_some_and(refers)
            || r.mock.as_ref().is_some_and(|m| refers(&m.body))
            || (proxied
                && self
                    .doc
                    .upstream
                    .as_ref()
                    .is_some_and(|u| u.targets.iter().any(|t| refers(&t.url))))
    }
}

/// What a stage's compiled API serves, besides its document.
pub struct StageServing {
    pub stage: String,
    /// The deployment this side serves, as `x-tollgate-deployment` says it.
    pub deployment: http::HeaderValue,
    pub canary: Option<CanarySide>,
    /// The throttle for keys whose plan sets none.
    pub throttle: Option<tollgate_model::docs::Throttle>,
    /// The deployment's IP lists (the index by API id holds the draft's).
    pub ip_rules: Option<Arc<crate::auth::ip::IpRules>>,
}

impl StageServing {
    /// Whether the deployment's IP lists admit `ip`.
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.ip_rules.as_ref().is_none_or(|r| r.admits(ip))
    }
}

/// The other side of a canary.
pub struct CanarySide {
    /// The canary's document; its `stage` names its deployment.
    pub api: Arc<CompiledApi>,
    pub percent: f64,
    pub sticky: Sticky,
}

/// A routing decision.
pub struct RouteMatch {
    pub api: Arc<CompiledApi>,
    pub route: usize,
    /// The route's `upstream_path` rewritten for this request; `None`:
    /// the request's own path after the base path.
    rewritten: Option<String>,
}

impl RouteMatch {
    pub fn route(&self) -> &CompiledRoute {
        &self.api.routes[self.route]
    }

    /// The route's path parameters for a request to `path` (the one
    /// matched), raw (not percent-decoded), in template order.
    pub fn path_params<'a>(&'a self, path: &'a str) -> Vec<(&'a str, &'a str)> {
        self.route()
            .template
            .matches(after_base(&self.api, path))
            .unwrap_or_default()
    }

    /// The path to send upstream (after the target's own path prefix),
    /// without the query, for a request to `path` (the one matched).
    pub fn upstream_path<'a>(&'a self, path: &'a str) -> &'a str {
        match &self.rewritten {
            Some(p) => p,
            None => match after_base(&self.api, path) {
                "" => "/",
                rest => rest,
            },
        }
    }
}

/// `path` without the API's base path (which it starts with).
fn after_base<'a>(api: &CompiledApi, path: &'a str) -> &'a str {
    if api.doc.base_path == "/" {
        path
    } else {
        &path[api.doc.base_path.len()..]
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    MethodNotAllowed { allow: Vec<Method> },
}

/// A request hashes its host and every prefix of its path.
type Map<K, V> = crate::ImMap<K, V>;

#[derive(Clone, Default)]
pub struct RouteTable {
    apis: Map<String, Arc<CompiledApi>>,
    /// Lower-case host ("" for any host) → its base paths. Nested so a
    /// lookup borrows the request's strings instead of building a key.
    mounts: Map<String, Bases>,
    /// Some API names hosts: a request's host is worth a lookup.
    named_hosts: bool,
}

/// One host's base paths → API, and how many base paths have each depth
/// (segment count; the last slot counts all deeper ones): a path prefix
/// of a depth no base path has is not looked up. Most tables mount
/// everything on a few shallow base paths.
#[derive(Clone, Default)]
struct Bases {
    by_path: Map<String, Arc<CompiledApi>>,
    depths: [u32; 8],
}

impl Bases {
    /// The slot in `depths` of a path this many segments deep.
    fn slot(depth: usize) -> usize {
        depth.min(7)
    }

    fn depth(path: &str) -> usize {
        let slashes = path.bytes().filter(|b| *b == b'/').count();
        slashes.saturating_sub(usize::from(path == "/"))
    }

    fn insert(&mut self, base: String, api: Arc<CompiledApi>) {
        let slot = Self::slot(Self::depth(&base));
        if self.by_path.insert(base, api).is_none() {
            self.depths[slot] += 1;
        }
    }

    fn remove(&mut self, base: &str) {
        if self.by_path.remove(base).is_some() {
            self.depths[Self::slot(Self::depth(base))] -= 1;
        }
    }

    /// The API mounted on the longest base path that `path` starts with.
    fn longest_match(&self, path: &str) -> Option<&Arc<CompiledApi>> {
        // Each prefix is one segment shorter than the one before, down to
        // `/` (depth 0), so the depth is counted once. (A path starting
        // `//` yields `/` twice, the second time at its true depth.)
        let deepest = Self::depth(path.trim_end_matches('/'));
        prefixes(path)
            .enumerate()
            .filter(|(i, _)| self.depths[Self::slot(deepest.saturating_sub(*i))] > 0)
            .find_map(|(_, p)| self.by_path.get(p))
    }
}

fn mount_keys(api: &Api) -> impl Iterator<Item = (String, String)> + '_ {
    api.host_keys()
        .into_iter()
        .map(|h| (h.to_ascii_lowercase(), api.base_path.clone()))
}

/// `path` and each shorter prefix ending at a segment boundary, longest
/// first, ending with `/`.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    let trimmed = path.trim_end_matches('/');
    let mut next = Some(trimmed);
    std::iter::from_fn(move || {
        let cur = next?;
        if cur.is_empty() {
            next = None;
            return Some("/");
        }
        // A byte scan: `rfind(char)` builds a searcher for each call.
        next = Some(
            cur.bytes()
                .rposition(|b| b == b'/')
                .map_or("", |i| &cur[..i]),
        );
        Some(cur)
    })
}

impl RouteTable {
    pub fn api(&self, id: &str) -> Option<&Arc<CompiledApi>> {
        self.apis.get(id)
    }

    pub fn len(&self) -> usize {
        self.apis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apis.is_empty()
    }

    /// The table with `upserts` added or replaced and `removals` gone; costs
    /// in proportion to the change.
    pub fn with_changes(
        &self,
        upserts: impl IntoIterator<Item = Arc<CompiledApi>>,
        removals: impl IntoIterator<Item = String>,
    ) -> RouteTable {
        let mut next = self.clone();
        let drop_api = |next: &mut RouteTable, id: &str| {
            if let Some(old) = next.apis.remove(id) {
                for (host, base) in mount_keys(&old.doc) {
                    if let Some(bases) = next.mounts.get_mut(&host) {
                        if bases.by_path.get(&base).is_some_and(|a| a.key == id) {
                            bases.remove(&base);
                        }
                        if bases.by_path.is_empty() {
                            next.mounts.remove(&host);
                        }
                    }
                }
            }
        };
        for id in removals {
            drop_api(&mut next, &id);
        }
        for api in upserts {
            drop_api(&mut next, &api.key);
            for (host, base) in mount_keys(&api.doc) {
                next.mounts
                    .entry(host)
                    .or_default()
                    .insert(base, api.clone());
            }
            next.apis.insert(api.key.clone(), api);
        }
        next.named_hosts = next.mounts.len() > usize::from(next.mounts.contains_key(""));
        next
    }

    /// Route a request. `host` may carry a port; `path` excludes the query.
    pub fn find(&self, host: &str, path: &str, method: &Method) -> Result<RouteMatch, RouteError> {
        let host = match host.bytes().rposition(|b| b == b':') {
            Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
            _ => host,
        };
        let host: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        let hosts: &[&str] = if host.is_empty() || !self.named_hosts {
            &[""]
        } else {
            &[host.as_ref(), ""]
        };
        let api = hosts
            .iter()
            .filter_map(|h| self.mounts.get(*h))
            .find_map(|bases| bases.longest_match(path))
            .ok_or(RouteError::NotFound)?;
        Self::find_in(api, path, method)
    }

    /// Route a request to `path` among `api`'s routes (the API mounted on
    /// a prefix of `path`, or a canary's document at the same base path).
    pub fn find_in(
        api: &Arc<CompiledApi>,
        path: &str,
        method: &Method,
    ) -> Result<RouteMatch, RouteError> {
        let rest = after_base(api, path);
        let mut allow = Vec::new();
        for (i, r) in api.routes.iter().enumerate() {
            // Parameters are kept only for a rewrite.
            let rewritten = match &r.rewrite {
                None if r.template.match_with(rest, |_, _| {}) => None,
                None => continue,
                Some(rewrite) => match r.template.matches(rest) {
                    Some(params) => Some(rewrite.render(&params)),
                    None => continue,
                },
            };
            if !r.allows(method) {
                allow.extend(r.methods.iter().cloned());
                continue;
            }
            return Ok(RouteMatch {
                api: api.clone(),
                route: i,
                rewritten,
            });
        }
        if allow.is_empty() {
            Err(RouteError::NotFound)
        } else {
            allow.dedup();
            Err(RouteError::MethodNotAllowed { allow })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(json: serde_json::Value) -> Arc<CompiledApi> {
        Arc::new(CompiledApi::new(serde_json::from_value(json).unwrap(), None).unwrap())
    }

    fn table() -> RouteTable {
        RouteTable::default().with_changes(
            [
                api(serde_json::json!({"id":"root","base_path":"/","routes":[
                    {"id":"any","path":"/{rest+}","mock":{}}]})),
                api(serde_json::json!({"id":"orders","base_path":"/orders","routes":[
                    {"id":"list","methods":["GET"],"path":"/","mock":{}},
                    {"id":"one","methods":["GET","DELETE"],"path":"/{id}","upstream_path":"/v1/o/{id}","mock":{}},
                    {"id":"special","methods":["GET"],"path":"/special","mock":{}}]})),
                api(serde_json::json!({"id":"deep","base_path":"/orders/archive","routes":[
                    {"id":"all","path":"/{rest+}","mock":{}}]})),
                api(serde_json::json!({"id":"hosted","base_path":"/orders","hosts":["Api.Example"],"routes":[
                    {"id":"h","path":"/","mock":{}}]})),
            ],
            [],
        )
    }

    fn hit(t: &RouteTable, host: &str, path: &str, m: Method) -> (String, String, String) {
        let r = t
            .find(host, path, &m)
            .unwrap_or_else(|e| panic!("{path}: {e:?}"));
        (
            r.api.doc.id.clone(),
            r.route().doc.id.clone(),
            r.upstream_path(path).to_string(),
        )
    }

    #[test]
    fn longest_base_path_then_specificity_then_method() {
        let t = table();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            hit(&t, "x", "/orders", Method::GET),
            s("orders", "list", "/")
        );
        assert_eq!(
            hit(&t, "x", "/orders/", Method::GET),
            s("orders", "list", "/")
        );
        assert_eq!(
            hit(&t, "x", "/orders/7", Method::GET),
            s("orders", "one", "/v1/o/7")
        );
        assert_eq!(
            hit(&t, "x", "/orders/special", Method::GET),
            s("orders", "special", "/special")
        );
        assert_eq!(
            hit(&t, "x", "/orders/7", Method::HEAD),
            s("orders", "one", "/v1/o/7")
        );
        assert_eq!(
            hit(&t, "x", "/orders/archive/a/b", Method::PUT),
            s("deep", "all", "/a/b")
        );
        assert_eq!(
            hit(&t, "x", "/ordersx", Method::GET),
            s("root", "any", "/ordersx")
        );
        assert_eq!(
            hit(&t, "api.example:8080", "/orders", Method::POST),
            s("hosted", "h", "/")
        );
        assert_eq!(
            t.find("x", "/orders/7", &Method::POST).err(),
            Some(RouteError::MethodNotAllowed {
                allow: vec![Method::GET, Method::DELETE]
            })
        );
        assert_eq!(
            t.find("x", "/orders/7/x", &Method::GET).err(),
            Some(RouteError::NotFound)
        );
    }

    #[test]
    fn changes_replace_and_remove_mounts() {
        let t = table();
        let moved = api(
            serde_json::json!({"id":"orders","base_path":"/o2","routes":[
            {"id":"list","path":"/","mock":{}}]}),
        );
        let t2 = t.with_changes([moved], ["root".to_string()]);
        assert_eq!(
            t2.find("x", "/orders", &Method::GET).err(),
            Some(RouteError::NotFound)
        );
        assert_eq!(
            t2.find("x", "/o2", &Method::GET).unwrap().api.doc.id,
            "orders"
        );
        // The old table is untouched.
        assert_eq!(
            t.find("x", "/orders", &Method::GET).unwrap().api.doc.id,
            "orders"
        );
        assert_eq!(t2.len(), 3);
    }

    /// Lookups skip depths no base path has, and a table with no named
    /// hosts skips the host: both follow every change.
    #[test]
    fn skipped_lookups_follow_changes() {
        let t = table();
        let id = |t: &RouteTable, host: &str, path: &str| {
            t.find(host, path, &Method::GET)
                .map(|m| m.api.doc.id.clone())
        };
        assert_eq!(id(&t, "x", "/orders/archive/1").unwrap(), "deep");
        // The only depth-2 base path goes: its paths fall to `/orders`.
        let t2 = t.with_changes([], ["deep".to_string()]);
        assert_eq!(id(&t2, "x", "/orders/archive").unwrap(), "orders");
        // A new depth-3 base path is found.
        let t3 = t2.with_changes(
            [api(
                serde_json::json!({"id":"d3","base_path":"/a/b/c","routes":[
                {"id":"all","path":"/{rest+}","mock":{}}]}),
            )],
            [],
        );
        assert_eq!(id(&t3, "x", "/a/b/c/d").unwrap(), "d3");
        // Deeper than the last slot counts: still found, from deeper paths.
        let t9 = t3.with_changes(
            [api(
                serde_json::json!({"id":"d9","base_path":"/1/2/3/4/5/6/7/8/9","routes":[
                {"id":"all","path":"/{rest+}","mock":{}}]}),
            )],
            [],
        );
        assert_eq!(id(&t9, "x", "/1/2/3/4/5/6/7/8/9/10/11").unwrap(), "d9");
        assert_eq!(id(&t9, "x", "//a/b/c/d").unwrap(), "root");
        assert_eq!(id(&t3, "x", "/a/b/x").unwrap(), "root");
        // Without the one API that names a host, no host is looked up; with
        // it back, its host routes to it again.
        let t4 = t3.with_changes([], ["hosted".to_string()]);
        assert!(!t4.named_hosts);
        assert_eq!(id(&t4, "api.example", "/orders").unwrap(), "orders");
        assert!(t3.named_hosts);
        assert_eq!(id(&t3, "api.example", "/orders").unwrap(), "hosted");
    }

    #[test]
    fn prefixes_are_segment_boundaries() {
        let p: Vec<_> = prefixes("/a/b/c").collect();
        assert_eq!(p, ["/a/b/c", "/a/b", "/a", "/"]);
        assert_eq!(prefixes("/").collect::<Vec<_>>(), ["/"]);
        assert_eq!(prefixes("/a/").collect::<Vec<_>>(), ["/a", "/"]);
    }
}
