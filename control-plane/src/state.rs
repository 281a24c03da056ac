//! The replicated state: every document, at the revision (Raft log index)
//! that last changed it, and the commands that change it.
//!
//! `State` is pure and deterministic: every node applies the same commands in
//! the same order and gets the same result, so checks that depend on other
//! documents (references, conflicts) live here and nowhere else. Persistence
//! is the state machine's job (`raft::state_machine`), which writes the
//! `Change`s that `apply` reports.
//!
//! A revision index ((revision, resource) of every live document and
//! tombstone) makes "what changed since R", which every config stream asks
//! after each write, cost in proportion to the answer, not to the state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tollgate_model::config::ResourceRef;
use tollgate_model::usage::{self, Day, UsageCounts, UsageItem};
use tollgate_model::{ApiKeyRecord, KeyPatch, Resource, ResourceKind, Settings};

#[path = "key_issue_rules.rs"]
mod key_issue_rules;
pub use key_issue_rules::MAX_IDEMPOTENCY_KEY;
#[path = "price_history.rs"]
mod price_history;
#[path = "stage_rules.rs"]
mod stage_rules;
pub use price_history::{price_day, price_on, set_price_day_for_tests, PriceRecord};

/// A write, as it travels through the Raft log. Never carries a key value.
// Most commands are `Put`; boxing it would add an allocation to every write.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create the cluster settings if they do not exist yet.
    InitSettings(Settings),
    Put(Resource),
    Delete(ResourceKind, String),
    PatchKey {
        id: String,
        patch: KeyPatchCmd,
    },
    /// A data plane's batch of metered usage. Applied once per (reporter,
    /// epoch, seq): a retried batch changes nothing.
    RecordUsage {
        reporter: String,
        epoch: u64,
        seq: u64,
        items: Vec<UsageItem>,
    },
    /// Hand a data plane up to `want` units of the key's quota for the
    /// period holding `day`. The result's `amount` is what was granted.
    LeaseQuota {
        key: String,
        plan: String,
        day: Day,
        want: u64,
    },
    /// Give back unused units of a lease.
    ReturnQuota {
        key: String,
        plan: String,
        period: Day,
        amount: u64,
    },
    /// Replace every document and counter with a backup's
    /// (`POST /v1/snapshot`). Documents not in the backup are deleted, so
    /// data planes converge on the backup too.
    Restore {
        docs: Vec<Resource>,
        counters: Vec<(Counter, u64)>,
    },
    /// Start a new cache flush epoch for an API (`DELETE
    /// /v1/apis/{id}/cache`): its `CacheFlush` resource is set to this
    /// command's revision, and streams to every data plane like any
    /// document, so one that is offline flushes when it reconnects.
    FlushCache {
        api: String,
    },
    /// Extra quota for a key in the period holding `day`.
    AdjustQuota {
        key: String,
        plan: String,
        day: Day,
        amount: u64,
    },
    /// Freeze an API document as a deployment, `dep-{revision}`.
    Deploy {
        api: String,
        /// The clock of the node that took the request (RFC 3339), in
        /// the command so every node records the same time.
        created_at: String,
        description: String,
    },
    /// The stage's canary becomes the stage (deployment and variables).
    Promote {
        stage: String,
    },
    /// Issue a key unless `idempotency_key` issued one within 24 hours
    /// (`key_issue_rules.rs`).
    IssueKey {
        record: ApiKeyRecord,
        idempotency_key: String,
    },
    /// Put a usage plan; a new price applies from `day`, the receiving
    /// node's UTC day, in the command so every node records the same
    /// (`price_history.rs`).
    PutPlan {
        plan: tollgate_model::UsagePlan,
        day: Day,
    },
}

impl Command {
    /// The command's name, for traces.
    pub fn name(&self) -> &'static str {
        match self {
            Command::InitSettings(_) => "init_settings",
            Command::Put(_) => "put",
            Command::Delete(..) => "delete",
            Command::PatchKey { .. } => "patch_key",
            Command::RecordUsage { .. } => "record_usage",
            Command::LeaseQuota { .. } => "lease_quota",
            Command::ReturnQuota { .. } => "return_quota",
            Command::Restore { .. } => "restore",
            Command::FlushCache { .. } => "flush_cache",
            Command::AdjustQuota { .. } => "adjust_quota",
            Command::Deploy { .. } => "deploy",
            Command::Promote { .. } => "promote",
            Command::IssueKey { .. } => "issue_key",
            Command::PutPlan { .. } => "put_plan",
        }
    }
}

/// Usage and quota bookkeeping. Not documents: never streamed to data
/// planes, and kept apart from the revision index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Counter {
    /// Admitted requests metered for a key under a plan on a UTC day.
    Used { key: String, plan: String, day: Day },
    /// Quota leased to data planes in the period starting `period`.
    Leased {
        key: String,
        plan: String,
        period: Day,
    },
    /// Extra quota granted by an admin for the period starting `period`.
    Extra {
        key: String,
        plan: String,
        period: Day,
    },
    /// The last usage batch applied from one boot of a data plane.
    ReportSeq { reporter: String, epoch: u64 },
    // The WebSocket measures, after the older variants so that stored
    // counters and snapshots read as before.
    /// WebSocket messages in metered units, for a key under a plan on a
    /// UTC day.
    Messages { key: String, plan: String, day: Day },
    /// WebSocket messages in number (each took a quota unit).
    MessageCount { key: String, plan: String, day: Day },
    /// WebSocket connection-minutes charged on a UTC day.
    ConnectionMinutes { key: String, plan: String, day: Day },
    /// The key an `Idempotency-Key` issued; the value is the issue's time
    /// (Unix seconds).
    IssuedWith {
        idempotency_key: String,
        key_id: String,
    },
    /// A usage plan's price from a UTC day on; the value is the revision
    /// that wrote it (`price_history.rs`).
    Price {
        plan: String,
        from: Day,
        price: Option<tollgate_model::billing::Price>,
    },
}

impl Counter {
    /// A usage counter's (key, plan, day), and its value `n` as counts.
    fn usage(&self, n: u64) -> Option<(&str, &str, Day, UsageCounts)> {
        let mut counts = UsageCounts::default();
        let (key, plan, day, measure) = match self {
            Counter::Used { key, plan, day } => (key, plan, day, &mut counts.requests),
            Counter::Messages { key, plan, day } => (key, plan, day, &mut counts.messages),
            Counter::MessageCount { key, plan, day } => (key, plan, day, &mut counts.message_count),
            Counter::ConnectionMinutes { key, plan, day } => {
                (key, plan, day, &mut counts.connection_minutes)
            }
            Counter::Leased { .. }
            | Counter::Extra { .. }
            | Counter::ReportSeq { .. }
            | Counter::IssuedWith { .. }
            | Counter::Price { .. } => return None,
        };
        *measure = n;
        Some((key, plan, *day, counts))
    }

    /// The counters an item adds to, with what it adds to each (measures
    /// at zero left out, so no counter is written for them).
    fn for_usage(item: UsageItem) -> impl Iterator<Item = (Counter, u64)> {
        let UsageItem {
            key: k,
            plan: p,
            day,
            counts: c,
        } = item;
        let (key, plan) = (k.clone(), p.clone());
        let used = Counter::Used { key, plan, day };
        let (key, plan) = (k.clone(), p.clone());
        let messages = Counter::Messages { key, plan, day };
        let (key, plan) = (k.clone(), p.clone());
        let message_count = Counter::MessageCount { key, plan, day };
        let (key, plan) = (k, p);
        let minutes = Counter::ConnectionMinutes { key, plan, day };
        [
            (used, c.requests),
            (messages, c.messages),
            (message_count, c.message_count),
            (minutes, c.connection_minutes),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
    }
}

/// `KeyPatch` in a serializable form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPatchCmd {
    pub enabled: Option<bool>,
    pub plans: Option<Vec<String>>,
    pub name: Option<String>,
}

impl From<KeyPatch> for KeyPatchCmd {
    fn from(p: KeyPatch) -> Self {
        Self {
            enabled: p.enabled,
            plans: p.plans,
            name: p.name,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    Conflict,
}

/// Why the state refused a command. The entry is still in the log; it just
/// changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    /// An issue refused for its `Idempotency-Key`: the key it issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            key_id: None,
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
}

/// What a command did, returned to the client through openraft.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub revision: u64,
    pub outcome: Option<Result<Option<Resource>, Rejection>>,
    /// Units granted by `LeaseQuota`.
    #[serde(default)]
    pub amount: u64,
}

/// A stored document and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub revision: u64,
    pub resource: Resource,
}

/// One persisted change, for the state machine to write.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(Stored),
    /// A delete, kept as a tombstone so data planes learn of it.
    Remove(ResourceRef, u64),
    /// A usage or quota counter's new value.
    Counter(Counter, u64),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "StateParts", from = "StateParts")]
pub struct State {
    resources: BTreeMap<ResourceRef, Stored>,
    tombstones: BTreeMap<ResourceRef, u64>,
    /// (revision, resource) of every live document and tombstone, so that
    /// "what changed since R" costs in proportion to the answer.
    by_revision: BTreeSet<(u64, ResourceRef)>,
    /// (host or "", base_path) -> the API or stage served there, for the
    /// conflict check.
    mounts: BTreeMap<(String, String), ResourceRef>,
    /// key hash -> key id, for the duplicate-value check.
    key_hashes: BTreeMap<String, String>,
    counters: BTreeMap<Counter, u64>,
}

/// The serialized form of `State` (snapshots): JSON maps need string keys,
/// and the revision index is derived, so it is rebuilt rather than stored.
#[derive(Serialize, Deserialize)]
struct StateParts {
    docs: Vec<Stored>,
    tombstones: Vec<(ResourceRef, u64)>,
    #[serde(default)]
    counters: Vec<(Counter, u64)>,
}

impl From<State> for StateParts {
    fn from(s: State) -> Self {
        Self {
            docs: s.resources.into_values().collect(),
            tombstones: s.tombstones.into_iter().collect(),
            counters: s.counters.into_iter().collect(),
        }
    }
}

impl From<StateParts> for State {
    fn from(p: StateParts) -> Self {
        State::from_parts(p.docs, p.tombstones, p.counters)
    }
}

/// What changed after a revision: documents written and documents removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub upserts: Vec<Resource>,
    pub removals: Vec<ResourceRef>,
}

impl State {
    /// Rebuild from persisted documents and tombstones.
    pub fn from_parts(
        stored: impl IntoIterator<Item = Stored>,
        tombstones: impl IntoIterator<Item = (ResourceRef, u64)>,
        counters: impl IntoIterator<Item = (Counter, u64)>,
    ) -> Self {
        let mut s = State {
            counters: counters.into_iter().collect(),
            ..State::default()
        };
        for st in stored {
            s.by_revision.insert((st.revision, st.resource.key()));
            s.index(&st.resource, true);
            s.resources.insert(st.resource.key(), st);
        }
        for (k, rev) in tombstones {
            s.by_revision.insert((rev, k.clone()));
            s.tombstones.insert(k, rev);
        }
        s
    }

    pub fn get(&self, kind: ResourceKind, id: &str) -> Option<&Stored> {
        self.resources.get(&(kind, id.to_string()))
    }

    pub fn list(&self, kind: ResourceKind) -> impl Iterator<Item = &Stored> {
        self.resources
            .range((kind, String::new())..)
            .take_while(move |((k, _), _)| *k == kind)
            .map(|(_, s)| s)
    }

    pub fn all(&self) -> impl Iterator<Item = &Stored> {
        self.resources.values()
    }

    pub fn tombstones(&self) -> impl Iterator<Item = (&ResourceRef, &u64)> {
        self.tombstones.iter()
    }

    /// Documents, tombstones and counters: what a snapshot holds.
    pub fn entries(&self) -> usize {
        self.resources.len() + self.tombstones.len() + self.counters.len()
    }

    pub fn counters(&self) -> impl Iterator<Item = (&Counter, &u64)> {
        self.counters.iter()
    }

    pub fn counter(&self, c: &Counter) -> u64 {
        self.counters.get(c).copied().unwrap_or(0)
    }

    /// Metered usage of `key` (or every key) under `plan` (or every plan)
    /// on days in `[start, end)`, one item per (key, plan, day) that has
    /// any, in that order.
    pub fn used(
        &self,
        plan: Option<&str>,
        key: Option<&str>,
        start: Day,
        end: Day,
    ) -> Vec<UsageItem> {
        let mut days: BTreeMap<(&str, &str, Day), UsageCounts> = BTreeMap::new();
        for (c, n) in &self.counters {
            let Some((k, p, day, counts)) = c.usage(*n) else {
                continue;
            };
            if (start..end).contains(&day)
                && plan.is_none_or(|want| want == p)
                && key.is_none_or(|want| want == k)
            {
                *days.entry((k, p, day)).or_default() += counts;
            }
        }
        days.into_iter()
            .map(|((key, plan, day), counts)| UsageItem {
                key: key.to_string(),
                plan: plan.to_string(),
                day,
                counts,
            })
            .collect()
    }

    /// The quota for a key under a plan in the period holding `day`:
    /// (limit including extra, leased so far, period start). `None` if the
    /// plan has no quota.
    pub fn quota(&self, key: &str, plan: &str, day: Day) -> Option<(u64, u64, Day)> {
        let Some(Resource::UsagePlan(p)) =
            self.get(ResourceKind::UsagePlan, plan).map(|s| &s.resource)
        else {
            return None;
        };
        let q = p.quota.as_ref()?;
        let period = usage::period_start(q.period, day);
        let extra = self.counter(&Counter::Extra {
            key: key.into(),
            plan: plan.into(),
            period,
        });
        let leased = self.counter(&Counter::Leased {
            key: key.into(),
            plan: plan.into(),
            period,
        });
        Some((q.limit + extra, leased, period))
    }

    fn bump(&mut self, c: Counter, f: impl FnOnce(u64) -> u64, changes: &mut Vec<Change>) {
        let v = f(self.counter(&c));
        self.counters.insert(c.clone(), v);
        changes.push(Change::Counter(c, v));
    }

    pub fn settings(&self) -> Option<&Settings> {
        match self
            .get(ResourceKind::Settings, "cluster")
            .map(|s| &s.resource)
        {
            Some(Resource::Settings(s)) => Some(s),
            _ => None,
        }
    }

    /// Everything written or removed after `revision`.
    pub fn changes_since(&self, revision: u64) -> Changes {
        let mut out = Changes::default();
        for (_, key) in self
            .by_revision
            .range((revision + 1, (ResourceKind::Api, String::new()))..)
        {
            match self.resources.get(key) {
                Some(st) => out.upserts.push(st.resource.clone()),
                None => out.removals.push(key.clone()),
            }
        }
        out
    }

    /// Apply a command at log index `revision`. Returns what the client is
    /// told and the changes to persist (empty when rejected).
    pub fn apply(
        &mut self,
        revision: u64,
        cmd: Command,
    ) -> (Result<Option<Resource>, Rejection>, Vec<Change>, u64) {
        match self.check(&cmd) {
            Err(rej) => (Err(rej), Vec::new(), 0),
            Ok(()) => {
                let mut changes = Vec::new();
                let mut amount = 0;
                let out = self.execute(revision, cmd, &mut changes, &mut amount);
                (Ok(out), changes, amount)
            }
        }
    }

    fn execute(
        &mut self,
        revision: u64,
        cmd: Command,
        changes: &mut Vec<Change>,
        amount: &mut u64,
    ) -> Option<Resource> {
        match cmd {
            Command::Restore { docs, counters } => {
                let keep: BTreeSet<ResourceRef> = docs.iter().map(Resource::key).collect();
                let gone: Vec<ResourceRef> = self
                    .resources
                    .keys()
                    .filter(|k| !keep.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.remove(revision, key, changes);
                }
                for r in docs {
                    self.upsert(revision, r, changes);
                }
                let old: Vec<Counter> = self.counters.keys().cloned().collect();
                for c in old {
                    self.bump(c, |_| 0, changes);
                }
                for (c, v) in counters {
                    self.bump(c, |_| v, changes);
                }
                None
            }
            Command::RecordUsage {
                reporter,
                epoch,
                seq,
                items,
            } => {
                let last = Counter::ReportSeq { reporter, epoch };
                if seq <= self.counter(&last) {
                    return None; // a retried batch: already counted
                }
                self.bump(last, |_| seq, changes);
                for (c, add) in items.into_iter().flat_map(Counter::for_usage) {
                    self.bump(c, |n| n + add, changes);
                }
                None
            }
            Command::LeaseQuota {
                key,
                plan,
                day,
                want,
            } => {
                let (limit, leased, period) = self.quota(&key, &plan, day).expect("checked");
                let granted = want.min(limit.saturating_sub(leased));
                if granted > 0 {
                    self.bump(
                        Counter::Leased { key, plan, period },
                        |n| n + granted,
                        changes,
                    );
                }
                *amount = granted;
                None
            }
            Command::ReturnQuota {
                key,
                plan,
                period,
                amount: back,
            } => {
                let c = Counter::Leased { key, plan, period };
                if self.counter(&c) > 0 {
                    self.bump(c, |n| n.saturating_sub(back), changes);
                }
                None
            }
            Command::AdjustQuota {
                key,
                plan,
                day,
                amount: extra,
            } => {
                let (_, _, period) = self.quota(&key, &plan, day).expect("checked");
                self.bump(Counter::Extra { key, plan, period }, |n| n + extra, changes);
                *amount = extra;
                None
            }
            Command::InitSettings(s) => {
                if self.settings().is_none() {
                    self.upsert(revision, Resource::Settings(s), changes);
                }
                self.get(ResourceKind::Settings, "cluster")
                    .map(|s| s.resource.clone())
            }
            Command::Put(r) => {
                self.upsert(revision, r.clone(), changes);
                Some(r)
            }
            Command::PutPlan { plan, day } => {
                self.record_price(revision, &plan, day, changes);
                let r = Resource::UsagePlan(plan);
                self.upsert(revision, r.clone(), changes);
                Some(r)
            }
            Command::FlushCache { api } => {
                let r = Resource::CacheFlush(tollgate_model::config::CacheFlush {
                    api,
                    epoch: revision,
                });
                self.upsert(revision, r.clone(), changes);
                Some(r)
            }
            Command::Delete(ResourceKind::Api, id) => {
                // The API's flush epoch and its deployments go with it (no
                // stage uses them: a stage of the API refuses the delete).
                self.remove(revision, (ResourceKind::CacheFlush, id.clone()), changes);
                for dep in self.deployments_of(&id) {
                    self.remove(revision, (ResourceKind::Deployment, dep), changes);
                }
                self.remove(revision, (ResourceKind::Api, id), changes)
            }
            Command::Deploy {
                api,
                created_at,
                description,
            } => self.deploy(revision, api, created_at, description, changes),
            Command::Promote { stage } => self.promote(revision, &stage, changes),
            Command::IssueKey {
                record,
                idempotency_key,
            } => self.issue_once(revision, record, idempotency_key, changes),
            Command::Delete(kind, id) => self.remove(revision, (kind, id), changes),
            Command::PatchKey { id, patch } => {
                let Some(Resource::ApiKey(mut k)) = self
                    .get(ResourceKind::ApiKey, &id)
                    .map(|s| s.resource.clone())
                else {
                    unreachable!("checked")
                };
                if let Some(e) = patch.enabled {
                    k.enabled = e;
                }
                if let Some(p) = patch.plans {
                    k.plans = p;
                }
                if let Some(n) = patch.name {
                    k.name = n;
                }
                let r = Resource::ApiKey(k);
                self.upsert(revision, r.clone(), changes);
                Some(r)
            }
        }
    }

    fn remove(
        &mut self,
        revision: u64,
        key: ResourceRef,
        changes: &mut Vec<Change>,
    ) -> Option<Resource> {
        let old = self.resources.remove(&key)?;
        self.index(&old.resource, false);
        self.by_revision.remove(&(old.revision, key.clone()));
        self.by_revision.insert((revision, key.clone()));
        self.tombstones.insert(key.clone(), revision);
        changes.push(Change::Remove(key, revision));
        Some(old.resource)
    }

    fn upsert(&mut self, revision: u64, resource: Resource, changes: &mut Vec<Change>) {
        let key = resource.key();
        if let Some(old) = self.resources.remove(&key) {
            self.index(&old.resource, false);
            self.by_revision.remove(&(old.revision, key.clone()));
        }
        self.index(&resource, true);
        if let Some(rev) = self.tombstones.remove(&key) {
            self.by_revision.remove(&(rev, key.clone()));
        }
        self.by_revision.insert((revision, key.clone()));
        let stored = Stored { revision, resource };
        self.resources.insert(key, stored.clone());
        changes.push(Change::Upsert(stored));
    }

    /// Keep the lookup indexes in step with `resources`.
    fn index(&mut self, r: &Resource, insert: bool) {
        match r {
            Resource::Api(_) | Resource::Stage(_) => {
                let (hosts, base) = match r {
                    Resource::Api(a) => (a.host_keys(), &a.base_path),
                    Resource::Stage(s) => (s.host_keys(), &s.base_path),
                    _ => unreachable!(),
                };
                for host in hosts {
                    let k = (host.to_string(), base.clone());
                    if insert {
                        self.mounts.insert(k, r.key());
                    } else if self.mounts.get(&k) == Some(&r.key()) {
                        self.mounts.remove(&k);
                    }
                }
            }
            Resource::ApiKey(k) => {
                if insert {
                    self.key_hashes.insert(k.hash.clone(), k.id.clone());
                } else {
                    self.key_hashes.remove(&k.hash);
                }
            }
            _ => {}
        }
    }

    fn exists(&self, kind: ResourceKind, id: &str) -> bool {
        self.resources.contains_key(&(kind, id.to_string()))
    }

    /// Checks that depend on other documents.
    fn check(&self, cmd: &Command) -> Result<(), Rejection> {
        match cmd {
            Command::InitSettings(_) => Ok(()),
            Command::Put(r) => self.check_put(r),
            Command::PutPlan { plan, .. } => self.check_plan(plan),
            Command::Restore { docs, .. } => {
                for r in docs {
                    r.validate().map_err(|e| {
                        Rejection::invalid(format!("{} {:?}: {e}", r.kind().as_str(), r.id()))
                    })?;
                }
                Ok(())
            }
            Command::Delete(kind, id) => {
                if !self.exists(*kind, id) {
                    return Err(Rejection::new(
                        ErrorCode::NotFound,
                        format!("{} {id:?} not found", kind.as_str()),
                    ));
                }
                if let Some(by) = self.referrer(*kind, id) {
                    return Err(Rejection::conflict(format!(
                        "{} {id:?} is still referenced by {by}",
                        kind.as_str()
                    )));
                }
                Ok(())
            }
            Command::RecordUsage { .. } | Command::ReturnQuota { .. } => Ok(()),
            Command::Deploy { api, .. } => self.check_deploy(api),
            Command::Promote { stage } => self.check_promote(stage),
            Command::IssueKey {
                record,
                idempotency_key,
            } => self.check_issue_once(record, idempotency_key),
            Command::FlushCache { api } => {
                if !self.exists(ResourceKind::Api, api) {
                    return Err(Rejection::new(
                        ErrorCode::NotFound,
                        format!("api {api:?} not found"),
                    ));
                }
                Ok(())
            }
            Command::LeaseQuota { key, plan, day, .. }
            | Command::AdjustQuota { key, plan, day, .. } => {
                let Some(Resource::ApiKey(k)) =
                    self.get(ResourceKind::ApiKey, key).map(|s| &s.resource)
                else {
                    return Err(Rejection::new(
                        ErrorCode::NotFound,
                        format!("key {key:?} not found"),
                    ));
                };
                if !k.plans.contains(plan) {
                    return Err(Rejection::invalid(format!(
                        "plan: key {key:?} is not on plan {plan:?}"
                    )));
                }
                if self.quota(key, plan, *day).is_none() {
                    return Err(Rejection::invalid(format!(
                        "plan: usage plan {plan:?} has no quota"
                    )));
                }
                Ok(())
            }
            Command::PatchKey { id, patch } => {
                if !self.exists(ResourceKind::ApiKey, id) {
                    return Err(Rejection::new(
                        ErrorCode::NotFound,
                        format!("key {id:?} not found"),
                    ));
                }
                if let Some(plans) = &patch.plans {
                    self.check_plans(plans)?;
                }
                Ok(())
            }
        }
    }

    fn check_plans(&self, plans: &[String]) -> Result<(), Rejection> {
        for (i, p) in plans.iter().enumerate() {
            if !self.exists(ResourceKind::UsagePlan, p) {
                return Err(Rejection::invalid(format!(
                    "plans[{i}]: usage plan {p:?} does not exist"
                )));
            }
        }
        Ok(())
    }

    fn check_put(&self, r: &Resource) -> Result<(), Rejection> {
        match r {
            Resource::Api(api) => {
                for (field, a) in api.authorizers() {
                    if !self.exists(ResourceKind::Authorizer, a) {
                        return Err(Rejection::invalid(format!(
                            "{field}: authorizer {a:?} does not exist"
                        )));
                    }
                }
                self.check_mounts(r, api.host_keys(), &api.base_path)
            }
            Resource::Stage(stage) => self.check_stage(stage),
            Resource::UsagePlan(plan) => self.check_plan(plan),
            Resource::ApiKey(k) => self.check_key(k),
            Resource::CacheFlush(f) => {
                if !self.exists(ResourceKind::Api, &f.api) {
                    return Err(Rejection::invalid(format!(
                        "api: api {:?} does not exist",
                        f.api
                    )));
                }
                Ok(())
            }
            Resource::Authorizer(_)
            | Resource::Tenant(_)
            | Resource::Settings(_)
            | Resource::Deployment(_) => Ok(()),
        }
    }

    fn check_plan(&self, plan: &tollgate_model::UsagePlan) -> Result<(), Rejection> {
        for (i, a) in plan.apis.iter().enumerate() {
            if !self.exists(ResourceKind::Api, a) {
                return Err(Rejection::invalid(format!(
                    "apis[{i}]: api {a:?} does not exist"
                )));
            }
        }
        Ok(())
    }

    /// 409 when another API or stage serves `base` on one of `hosts`.
    fn check_mounts(&self, r: &Resource, hosts: Vec<&str>, base: &str) -> Result<(), Rejection> {
        for host in hosts {
            match self.mounts.get(&(host.to_string(), base.to_string())) {
                Some(other) if *other != r.key() => {
                    return Err(Rejection::conflict(format!(
                        "{} {:?} already serves base_path {base:?} on the same host",
                        other.0.as_str(),
                        other.1
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_key(&self, k: &ApiKeyRecord) -> Result<(), Rejection> {
        if !self.exists(ResourceKind::Tenant, &k.tenant) {
            return Err(Rejection::invalid(format!(
                "tenant: tenant {:?} does not exist",
                k.tenant
            )));
        }
        self.check_plans(&k.plans)?;
        match self.key_hashes.get(&k.hash) {
            Some(other) if *other != k.id => Err(Rejection::conflict(
                "value: this key value is already in use",
            )),
            _ => Ok(()),
        }
    }

    /// Who still refers to (kind, id), if anyone.
    fn referrer(&self, kind: ResourceKind, id: &str) -> Option<String> {
        let found = match kind {
            ResourceKind::Api => self.stage_using(|s| s.api == id).or_else(|| {
                self.list(ResourceKind::UsagePlan)
                    .find_map(|s| match &s.resource {
                        Resource::UsagePlan(p) if p.apis.iter().any(|a| a == id) => {
                            Some(format!("usage plan {:?}", p.id))
                        }
                        _ => None,
                    })
            }),
            ResourceKind::Deployment => self.stage_using(|s| {
                s.deployment == id || s.canary.as_ref().is_some_and(|c| c.deployment == id)
            }),
            ResourceKind::Authorizer => {
                self.list(ResourceKind::Api)
                    .find_map(|s| match &s.resource {
                        Resource::Api(a) if a.authorizers().any(|(_, x)| x == id) => {
                            Some(format!("api {:?}", a.id))
                        }
                        _ => None,
                    })
            }
            ResourceKind::Tenant => {
                self.list(ResourceKind::ApiKey)
                    .find_map(|s| match &s.resource {
                        Resource::ApiKey(k) if k.tenant == id => Some(format!("key {:?}", k.id)),
                        _ => None,
                    })
            }
            ResourceKind::UsagePlan => {
                self.list(ResourceKind::ApiKey)
                    .find_map(|s| match &s.resource {
                        Resource::ApiKey(k) if k.plans.iter().any(|p| p == id) => {
                            Some(format!("key {:?}", k.id))
                        }
                        _ => None,
                    })
            }
            ResourceKind::ApiKey
            | ResourceKind::Settings
            | ResourceKind::CacheFlush
            | ResourceKind::Stage => None,
        };
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_model::{Tenant, UsagePlan};

    fn tenant(id: &str) -> Resource {
        Resource::Tenant(Tenant {
            id: id.into(),
            name: String::new(),
        })
    }

    fn counts(requests: u64, messages: u64, message_count: u64, minutes: u64) -> UsageCounts {
        UsageCounts {
            requests,
            messages,
            message_count,
            connection_minutes: minutes,
        }
    }

    fn record(seq: u64, key: &str, day: Day, c: UsageCounts) -> Command {
        Command::RecordUsage {
            reporter: "dp-1".into(),
            epoch: 1,
            seq,
            items: vec![UsageItem {
                key: key.into(),
                plan: "gold".into(),
                day,
                counts: c,
            }],
        }
    }

    #[test]
    fn record_usage_counts_messages_and_minutes_once() {
        let mut s = State::default();
        let (r, ch, _) = s.apply(1, record(1, "k1", 10, counts(2, 9, 3, 4)));
        r.unwrap();
        // The sequence and four measures; a measure at zero writes nothing.
        assert_eq!(ch.len(), 5);
        let (_, ch, _) = s.apply(2, record(2, "k1", 10, counts(1, 0, 0, 6)));
        assert_eq!(ch.len(), 3);
        // A retried batch counts nothing.
        let (r, ch, _) = s.apply(3, record(2, "k1", 10, counts(1, 0, 0, 6)));
        r.unwrap();
        assert!(ch.is_empty());
        s.apply(4, record(3, "k2", 11, counts(0, 1, 1, 0)))
            .0
            .unwrap();

        let used = s.used(Some("gold"), Some("k1"), 0, 100);
        assert_eq!(used.len(), 1);
        assert_eq!((used[0].day, used[0].counts), (10, counts(3, 9, 3, 10)));
        // Quota terms: each request and each message is one unit.
        assert_eq!(used[0].counts.quota_units(), 6);
        let all: Vec<(String, Day)> = s
            .used(None, None, 0, 100)
            .into_iter()
            .map(|i| (i.key, i.day))
            .collect();
        assert_eq!(all, [("k1".to_string(), 10), ("k2".to_string(), 11)]);
        assert!(s.used(None, None, 11, 11).is_empty());

        // Snapshots keep the new counters, and old ones still read.
        let round: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(round.used(None, None, 0, 100), s.used(None, None, 0, 100));
        let old: (Counter, u64) =
            serde_json::from_str(r#"[{"Used":{"key":"k","plan":"p","day":1}},5]"#).unwrap();
        assert_eq!(old.1, 5);
        let old: Command = serde_json::from_str(
            r#"{"RecordUsage":{"reporter":"dp","epoch":1,"seq":1,
                "items":[{"key":"k","plan":"p","day":1,"count":5}]}}"#,
        )
        .unwrap();
        let Command::RecordUsage { items, .. } = old else {
            panic!("{old:?}")
        };
        assert_eq!(items[0].counts, UsageCounts::requests(5));
    }

    #[test]
    fn references_are_enforced_and_changes_indexed() {
        let mut s = State::default();
        assert!(s.apply(1, Command::Put(tenant("acme"))).0.is_ok());
        let plan = Resource::UsagePlan(UsagePlan {
            id: "gold".into(),
            apis: vec!["missing".into()],
            throttle: None,
            quota: None,
            price: None,
        });
        let (r, ch, _) = s.apply(2, Command::Put(plan));
        assert_eq!(r.unwrap_err().code, ErrorCode::InvalidArgument);
        assert!(ch.is_empty());
        assert_eq!(s.changes_since(1), Changes::default());
        assert_eq!(s.changes_since(0).upserts.len(), 1);
        let (r, _, _) = s.apply(3, Command::Delete(ResourceKind::Tenant, "acme".into()));
        r.unwrap();
        let c = s.changes_since(1);
        assert_eq!(c.removals, vec![(ResourceKind::Tenant, "acme".to_string())]);
        assert_eq!(
            s.apply(4, Command::Delete(ResourceKind::Tenant, "acme".into()))
                .0
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
        let round: State =
            serde_json::from_slice::<State>(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(round.changes_since(0), s.changes_since(0));
    }
}
