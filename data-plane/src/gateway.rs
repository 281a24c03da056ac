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

use crate::auth::{AuthContext, AuthIndex, AuthTuning};
use crate::metrics::Stats;
use crate::router::{CompiledApi, RouteTable};
use crate::upstream::{Clients, UpstreamPool};
use crate::ConfigApplier;

/// An immutable view of one config revision, ready for the request path.
pub struct Snapshot {
    pub config: ConfigSet,
    pub routes: RouteTable,
    /// API keys, plans, authorizers and IP lists.
    pub auth: AuthIndex,
    /// When this snapshot was swapped in.
    pub applied_at: SystemTime,
}

impl Snapshot {
    pub fn revision(&self) -> u64 {
        self.config.revision
    }
}

pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pub clients: Clients,
    pub stats: Stats,
    /// JWKS fetch timing (cooldown, timeout, max age); changeable at run time.
    pub auth_tuning: Arc<AuthTuning>,
    /// Throttles, quotas and metering (set once at start).
    plans: std::sync::OnceLock<Arc<crate::plans::PlanEnforcer>>,
    /// Serialises appliers (the config client is the only one, but tests and
    /// the state-file loader also apply).
    apply_lock: Mutex<()>,
}

impl Gateway {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(Snapshot {
                config: ConfigSet::default(),
                routes: RouteTable::default(),
                auth: AuthIndex::default(),
                applied_at: SystemTime::now(),
            }),
            clients: Clients::new(),
            stats: Stats::default(),
            auth_tuning: Arc::new(AuthTuning::default()),
            plans: std::sync::OnceLock::new(),
            apply_lock: Mutex::new(()),
        })
    }

    pub fn set_plans(&self, plans: Arc<crate::plans::PlanEnforcer>) {
        let _ = self.plans.set(plans);
    }

    pub fn plans(&self) -> Option<&Arc<crate::plans::PlanEnforcer>> {
        self.plans.get()
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
        // Keep the old pool (its health and breaker state) while the
        // upstream block is unchanged.
        let upstream = match &api.upstream {
            None => None,
            Some(up) => match current.api(&api.id).and_then(|old| old.upstream.clone()) {
                Some(pool) if pool.config == *up => Some(pool),
                _ => Some(UpstreamPool::new(&api.id, up.clone(), &self.clients)?),
            },
        };
        Ok(Arc::new(CompiledApi::new(api.clone(), upstream)?))
    }
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
        let removals: Vec<String> = if delta.full {
            // A full config replaces everything: drop APIs it lacks.
            current
                .config
                .of_kind(ResourceKind::Api)
                .map(|r| r.id().to_string())
                .filter(|id| next.get(ResourceKind::Api, id).is_none())
                .collect()
        } else {
            delta
                .removals
                .iter()
                .filter(|(k, _)| *k == ResourceKind::Api)
                .map(|(_, id)| id.clone())
                .collect()
        };
        let auth = current.auth.with_changes(
            delta,
            &AuthContext {
                client: &self.clients.http,
                tuning: &self.auth_tuning,
            },
        )?;
        let routes = current.routes.with_changes(upserts, removals);
        self.snapshot.store(Arc::new(Snapshot {
            config: next.clone(),
            routes,
            auth,
            applied_at: SystemTime::now(),
        }));
        tracing::info!(
            revision = next.revision,
            apis = next.count(ResourceKind::Api),
            "config in force"
        );
        Ok(())
    }
}
