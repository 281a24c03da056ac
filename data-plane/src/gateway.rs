//! The config in force on this data plane, and how a new one replaces it.
//!
//! `Gateway` owns an `ArcSwap<Snapshot>`. Each request loads the snapshot
//! once and uses it to the end, so a config change never changes the rules
//! under an in-flight request. A new snapshot is built off the request path
//! (in the config client's task) from the old one plus the delta, then
//! swapped in with one atomic store.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tollgate_model::{ConfigDelta, ConfigSet, Resource, ResourceKind};

use crate::access_log::AccessLog;
use crate::auth::{AuthContext, AuthIndex, AuthTuning};
use crate::cache::ResponseCache;
use crate::metrics::Metrics;
use crate::router::{CompiledApi, RouteTable};
use crate::stages;
use crate::upstream::{Clients, UpstreamPool};
use crate::ConfigApplier;

/// An immutable view of one config revision, ready for the request path.
pub struct Snapshot {
    pub config: ConfigSet,
    pub routes: RouteTable,
    /// API keys, plans, authorizers and IP lists.
    pub auth: AuthIndex,
    /// Cache flush epoch per API (absent: 0), part of every cache key.
    pub cache_epochs: im::HashMap<String, u64>,
    /// When this snapshot was swapped in.
    pub applied_at: SystemTime,
}

impl Snapshot {
    pub fn revision(&self) -> u64 {
        self.config.revision
    }

    pub fn cache_epoch(&self, api: &str) -> u64 {
        self.cache_epochs.get(api).copied().unwrap_or(0)
    }
}

pub struct Gateway {
    /// Itself, for tasks that outlive a request (WebSocket sessions).
    me: std::sync::Weak<Gateway>,
    snapshot: ArcSwap<Snapshot>,
    pub clients: Clients,
    /// Per-route counters and histograms for the status port.
    pub metrics: Metrics,
    /// Cached upstream responses.
    pub cache: ResponseCache,
    /// Where access log lines go (unset: off).
    access_log: std::sync::OnceLock<Arc<AccessLog>>,
    /// JWKS fetch timing (cooldown, timeout, max age); changeable at run time.
    pub auth_tuning: Arc<AuthTuning>,
    /// Open WebSocket connections, for the connections API.
    pub connections: Arc<crate::websocket::Connections>,
    /// Throttles, quotas and metering (set once at start).
    plans: std::sync::OnceLock<Arc<crate::plans::PlanEnforcer>>,
    /// Serialises appliers (the config client is the only one, but tests and
    /// the state-file loader also apply).
    apply_lock: Mutex<()>,
}

impl Gateway {
    pub fn new() -> Arc<Self> {
        Self::with_cache_capacity(crate::cache::DEFAULT_CAPACITY_BYTES)
    }

    /// A gateway whose response cache holds at most `cache_bytes`.
    pub fn with_cache_capacity(cache_bytes: u64) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            snapshot: ArcSwap::from_pointee(Snapshot {
                config: ConfigSet::default(),
                routes: RouteTable::default(),
                auth: AuthIndex::default(),
                cache_epochs: im::HashMap::new(),
                applied_at: SystemTime::now(),
            }),
            clients: Clients::new(),
            metrics: Metrics::default(),
            cache: ResponseCache::new(cache_bytes),
            access_log: std::sync::OnceLock::new(),
            auth_tuning: Arc::new(AuthTuning::default()),
            connections: Arc::default(),
            plans: std::sync::OnceLock::new(),
            apply_lock: Mutex::new(()),
        })
    }

    /// The gateway as an `Arc` (every gateway is made in one).
    pub fn arc(&self) -> Arc<Gateway> {
        self.me.upgrade().expect("a gateway in use is alive")
    }

    pub fn set_plans(&self, plans: Arc<crate::plans::PlanEnforcer>) {
        let _ = self.plans.set(plans);
    }

    pub fn plans(&self) -> Option<&Arc<crate::plans::PlanEnforcer>> {
        self.plans.get()
    }

    pub fn set_access_log(&self, log: Arc<AccessLog>) {
        let _ = self.access_log.set(log);
    }

    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access_log.get()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Install a whole config (the state file at start).
    pub fn install(&self, config: &ConfigSet) -> Result<(), String> {
        let delta = ConfigDelta {
            revision: config.revision,
            full: true,
            base_revision: 0,
            upserts: config.resources.values().cloned().collect(),
            removals: Vec::new(),
        };
        self.apply(config, &delta)
    }

    fn compile(
        &self,
        current: &RouteTable,
        api: &tollgate_model::docs::Api,
    ) -> Result<Arc<CompiledApi>, String> {
        self.build(current, &api.id, "", api).map(Arc::new)
    }

    /// `api` compiled for the route table's `key`, its counters labelled
    /// with `deployment` ("" on an API's own path).
    fn build(
        &self,
        current: &RouteTable,
        key: &str,
        deployment: &str,
        api: &tollgate_model::docs::Api,
    ) -> Result<CompiledApi, String> {
        use tollgate_model::stages::refers_to_variables;
        // Keep the old pool (its health and breaker state) while the
        // upstream block is unchanged. Targets made of stage variables
        // have no pool on the API's own path.
        let upstream = match &api.upstream {
            None => None,
            Some(up) if up.targets.iter().any(|t| refers_to_variables(&t.url)) => None,
            Some(up) => match current.api(key).and_then(|old| old.upstream.clone()) {
                Some(pool) if pool.config == *up => Some(pool),
                _ => Some(UpstreamPool::new(&api.id, up.clone(), &self.clients)?),
            },
        };
        let mut compiled = CompiledApi::new(api.clone(), upstream)?;
        compiled.key = key.to_string();
        for r in &mut compiled.routes {
            r.metrics = self.metrics.route(&api.id, deployment, &r.doc.id);
        }
        Ok(compiled)
    }

    /// A stage: its deployment's document at the stage's path, and its
    /// canary's; counters labelled with the deployment, so the two sides
    /// compare.
    fn compile_stage(
        &self,
        current: &RouteTable,
        next: &ConfigSet,
        stage: &tollgate_model::stages::Stage,
    ) -> Result<Arc<CompiledApi>, String> {
        let deployment = |id: &str| match next.get(ResourceKind::Deployment, id) {
            Some(Resource::Deployment(d)) => Some(d),
            _ => None,
        };
        let (main, canary_doc) = stages::documents(stage, deployment)?;
        let key = stages::route_key(&stage.id);
        let canary = match (canary_doc, &stage.canary) {
            (Some(doc), Some(c)) => {
                let mut api = self.build(current, &format!("{key}~canary"), &c.deployment, &doc)?;
                // The canary's side is of the stage too (its throttle).
                api.stage = Some(stages::StageServing {
                    stage: stage.id.clone(),
                    deployment: header_value(&c.deployment)?,
                    canary: None,
                    throttle: stage.throttle,
                    ip_rules: ip_rules(&doc)?,
                });
                Some(stages::CanarySide {
                    api: Arc::new(api),
                    percent: c.percent,
                    sticky: c.sticky,
                })
            }
            _ => None,
        };
        let mut compiled = self.build(current, &key, &stage.deployment, &main)?;
        compiled.stage = Some(stages::StageServing {
            stage: stage.id.clone(),
            deployment: header_value(&stage.deployment)?,
            canary,
            throttle: stage.throttle,
            ip_rules: ip_rules(&main)?,
        });
        Ok(Arc::new(compiled))
    }

    /// The stages to compile after `delta` (all of them for a full one),
    /// and the route keys of those gone.
    fn stage_changes(
        &self,
        current: &Snapshot,
        next: &ConfigSet,
        delta: &ConfigDelta,
    ) -> Result<(Vec<Arc<CompiledApi>>, Vec<String>), String> {
        let mut compiled = Vec::new();
        let upserts: Vec<&Resource> = if delta.full {
            next.of_kind(ResourceKind::Stage).collect()
        } else {
            delta
                .upserts
                .iter()
                .filter(|r| r.kind() == ResourceKind::Stage)
                .collect()
        };
        for r in upserts {
            if let Resource::Stage(s) = r {
                compiled.push(self.compile_stage(&current.routes, next, s)?);
            }
        }
        let gone = removed(&current.config, next, delta, ResourceKind::Stage);
        Ok((
            compiled,
            gone.iter().map(|id| stages::route_key(id)).collect(),
        ))
    }

    /// The flush epoch of each API after `delta`: updated from the delta,
    /// rebuilt only for a full one.
    fn cache_epochs_after(
        current: &im::HashMap<String, u64>,
        next: &ConfigSet,
        delta: &ConfigDelta,
    ) -> im::HashMap<String, u64> {
        let epoch = |r: &Resource| match r {
            Resource::CacheFlush(f) => Some((f.api.clone(), f.epoch)),
            _ => None,
        };
        if delta.full {
            return next
                .of_kind(ResourceKind::CacheFlush)
                .filter_map(epoch)
                .collect();
        }
        let mut epochs = current.clone();
        epochs.extend(delta.upserts.iter().filter_map(epoch));
        for (kind, api) in &delta.removals {
            if *kind == ResourceKind::CacheFlush {
                epochs.remove(api);
            }
        }
        epochs
    }

    /// APIs whose cached responses must go: a new flush epoch, a changed
    /// or removed API document. In proportion to the delta, unless it is a
    /// full one.
    fn stale_caches(current: &ConfigSet, next: &ConfigSet, delta: &ConfigDelta) -> Vec<String> {
        let relevant = |k: ResourceKind| matches!(k, ResourceKind::Api | ResourceKind::CacheFlush);
        let mut touched: Vec<(ResourceKind, &str)> = if delta.full {
            [ResourceKind::Api, ResourceKind::CacheFlush]
                .into_iter()
                .flat_map(|k| current.of_kind(k).chain(next.of_kind(k)))
                .map(|r| (r.kind(), r.id()))
                .collect()
        } else {
            delta
                .upserts
                .iter()
                .map(|r| (r.kind(), r.id()))
                .chain(delta.removals.iter().map(|(k, id)| (*k, id.as_str())))
                .filter(|(k, _)| relevant(*k))
                .collect()
        };
        touched.retain(|(k, id)| current.get(*k, id) != next.get(*k, id));
        let mut apis: Vec<String> = touched.into_iter().map(|(_, id)| id.to_string()).collect();
        apis.sort();
        apis.dedup();
        apis
    }
}

/// The ids of `kind` that `delta` removes; a full config replaces
/// everything, so it removes what it lacks.
fn removed(
    current: &ConfigSet,
    next: &ConfigSet,
    delta: &ConfigDelta,
    kind: ResourceKind,
) -> Vec<String> {
    if delta.full {
        current
            .of_kind(kind)
            .map(|r| r.id().to_string())
            .filter(|id| next.get(kind, id).is_none())
            .collect()
    } else {
        delta
            .removals
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

/// A deployment id as the `x-tollgate-deployment` value, made once.
fn header_value(deployment: &str) -> Result<http::HeaderValue, String> {
    http::HeaderValue::from_str(deployment)
        .map_err(|_| format!("deployment {deployment:?}: not a header value"))
}

/// A deployed document's IP lists, compiled.
fn ip_rules(
    api: &tollgate_model::docs::Api,
) -> Result<Option<Arc<crate::auth::ip::IpRules>>, String> {
    crate::auth::ip::IpRules::compile(&api.ip_allow, &api.ip_deny)
        .map(|r| r.map(Arc::new))
        .map_err(|e| format!("api {:?}: {e}", api.id))
}

impl ConfigApplier for Gateway {
    fn apply(&self, next: &ConfigSet, delta: &ConfigDelta) -> Result<(), String> {
        let _guard = self.apply_lock.lock().expect("apply lock");
        let current = self.snapshot.load();
        if next.revision < current.revision() {
            return Err(format!(
                "revision {} is older than {} in force",
                next.revision,
                current.revision()
            ));
        }
        // References between documents must resolve in the new config.
        for r in &delta.upserts {
            if let Resource::Api(api) = r {
                for (field, authorizer) in api.authorizers() {
                    if next.get(ResourceKind::Authorizer, authorizer).is_none() {
                        return Err(format!(
                            "api {:?} {field}: authorizer {authorizer:?} is not in the config",
                            api.id
                        ));
                    }
                }
            }
        }
        let mut upserts = Vec::new();
        for r in &delta.upserts {
            if let Resource::Api(api) = r {
                upserts.push(self.compile(&current.routes, api)?);
            }
        }
        let mut removals = removed(&current.config, next, delta, ResourceKind::Api);
        let (staged, unstaged) = self.stage_changes(&current, next, delta)?;
        upserts.extend(staged);
        removals.extend(unstaged);
        let auth = current.auth.with_changes(
            delta,
            &AuthContext {
                client: &self.clients.http,
                tuning: &self.auth_tuning,
            },
        )?;
        let routes = current.routes.with_changes(upserts, removals);
        let cache_epochs = Self::cache_epochs_after(&current.cache_epochs, next, delta);
        let stale = Self::stale_caches(&current.config, next, delta);
        self.snapshot.store(Arc::new(Snapshot {
            config: next.clone(),
            routes,
            auth,
            cache_epochs,
            applied_at: SystemTime::now(),
        }));
        // Entries under an old flush epoch are unreachable already; this
        // gives their memory back (and drops entries of changed APIs).
        for api in &stale {
            self.cache.invalidate_api(api);
            tracing::debug!(api = %api, "cached responses flushed");
        }
        let served = |k: ResourceKind| matches!(k, ResourceKind::Api | ResourceKind::Stage);
        let routes_changed = delta.full
            || delta.upserts.iter().any(|r| served(r.kind()))
            || delta.removals.iter().any(|(k, _)| served(*k));
        if routes_changed {
            self.connections.reconcile(&self.snapshot.load().routes);
            self.metrics.retain(|api, deployment, route| {
                let doc = if deployment.is_empty() {
                    match next.get(ResourceKind::Api, api) {
                        Some(Resource::Api(a)) => Some(a),
                        _ => None,
                    }
                } else {
                    stages::served_deployment(next, deployment).map(|d| &d.document)
                };
                doc.is_some_and(|a| a.routes.iter().any(|r| r.id == route))
            });
        }
        tracing::info!(
            revision = next.revision,
            apis = next.count(ResourceKind::Api),
            "config in force"
        );
        Ok(())
    }
}
