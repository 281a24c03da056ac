//! The service layer: every admin operation, whichever door it came in by
//! (REST or gRPC). Validation, key issuance, forwarding writes to the
//! leader, and linearizable reads live here once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::Serialize;
use tollgate_model::config::ResourceKind;
use tollgate_model::{key, ApiKeyRecord, IssueKeyRequest, KeyPatch, Resource, Settings};

use crate::config_stream::DataPlaneRegistry;
use crate::demand::DemandTable;
pub use crate::error::{ApiError, Result};
use crate::peer::Peer;
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::Shared;
use crate::raft::{Node, NodeId, Raft};
use crate::state::{Command, CommandResult, KeyPatchCmd};
use crate::transport::Channels;

/// A key just issued: the record plus the value, which exists nowhere else.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub record: KeyView,
    pub value: String,
}

/// A key as the admin API shows it: never the value, never the hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub prefix: String,
    pub tenant: String,
    pub name: String,
    pub plans: Vec<String>,
    pub enabled: bool,
    pub created_at: u64,
}

impl From<&ApiKeyRecord> for KeyView {
    fn from(k: &ApiKeyRecord) -> Self {
        Self {
            id: k.id.clone(),
            prefix: k.prefix.clone(),
            tenant: k.tenant.clone(),
            name: k.name.clone(),
            plans: k.plans.clone(),
            enabled: k.enabled,
            created_at: k.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterInfo {
    pub node_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub members: Vec<MemberInfo>,
    pub data_planes: Vec<crate::config_stream::DataPlaneView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberInfo {
    pub id: NodeId,
    pub grpc_addr: String,
    pub admin_addr: String,
    pub voter: bool,
}

pub struct ControlPlane {
    pub id: NodeId,
    pub node: Node,
    pub raft: Raft,
    pub shared: Arc<Shared>,
    pub channels: Channels,
    pub data_planes: DataPlaneRegistry,
    /// Throttle demand per key across data planes (used on the leader).
    pub demand: DemandTable,
    /// The data planes' `Connections.Open` streams held here.
    pub connections: Arc<crate::connections::Links>,
    /// Live traffic from the data planes reporting here (memory only).
    pub traffic: crate::traffic::TrafficStore,
    pub log_store: LogStore,
    /// How long a write or a linearizable read may wait for a leader and a
    /// quorum before it is answered with 503.
    pub request_timeout: Duration,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ControlPlane {
    // ------------------------------------------------------------ writes

    /// Commit `cmd` through Raft, forwarding to the leader if need be.
    /// Returns the revision and what the state machine said.
    pub async fn write(&self, cmd: Command) -> Result<(u64, Option<Resource>)> {
        self.write_result(cmd).await.map(|(rev, r, _)| (rev, r))
    }

    /// `write`, also returning the command's `amount` (quota granted).
    pub async fn write_result(&self, cmd: Command) -> Result<(u64, Option<Resource>, u64)> {
        use tracing::Instrument;
        let span = tracing::debug_span!("raft_write", command = cmd.name());
        let result = tokio::time::timeout(self.request_timeout, self.write_with_retry(cmd))
            .instrument(span)
            .await
            .map_err(|_| {
                ApiError::Unavailable("no quorum: the write was not acknowledged in time".into())
            })??;
        match result.outcome {
            Some(Ok(r)) => Ok((result.revision, r, result.amount)),
            Some(Err(rej)) => Err(rej.into()),
            None => Ok((result.revision, None, result.amount)),
        }
    }

    async fn write_with_retry(&self, cmd: Command) -> Result<CommandResult> {
        loop {
            match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => return Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if let (Some(id), Some(leader)) = (f.leader_id, f.leader_node) {
                        return self.forward(id, &leader, &cmd).await;
                    }
                }
                Err(RaftError::Fatal(f)) => {
                    return Err(ApiError::Unavailable(format!("raft stopped: {f}")))
                }
                Err(e) => tracing::warn!(error = %e, "write failed; retrying"),
            }
            // No leader known yet: an election is under way.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Forward to the leader, giving up with 503 as soon as it is not this
    /// node's leader any more or has not reached this node for a lease:
    /// one that does not answer would hold the write for the whole request
    /// timeout. The write may still commit (contract §4).
    async fn forward(&self, id: NodeId, leader: &Node, cmd: &Command) -> Result<CommandResult> {
        let mut peer = Peer::new(&self.channels, leader);
        tokio::select! {
            r = peer.forward(cmd) => r,
            () = crate::raft::elect::leader_lost(&self.raft, id) => Err(ApiError::Unavailable(
                "the leader did not answer; the write may still commit".into(),
            )),
        }
    }

    /// The leader's side of `Cluster.Forward`: write locally, no further hop.
    pub async fn write_local(&self, cmd: Command) -> Result<CommandResult> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(e) => Err(ApiError::Unavailable(format!("not the leader: {e}"))),
        }
    }

    // ------------------------------------------------------------ reads

    /// Wait until this node has applied everything committed before the
    /// call began (unless `stale`), so a read after an acknowledged write on
    /// any node sees it.
    pub async fn read_barrier(&self, stale: bool) -> Result<()> {
        use tracing::Instrument;
        if stale {
            return Ok(());
        }
        tokio::time::timeout(self.request_timeout, async {
            loop {
                match self.read_index().await {
                    Ok(index) => {
                        let mut rx = self.shared.subscribe();
                        rx.wait_for(|a| *a >= index)
                            .await
                            .map_err(|e| ApiError::Internal(e.to_string()))?;
                        return Ok(());
                    }
                    Err(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(Some(e)) => return Err(e),
                }
            }
        })
        .instrument(tracing::debug_span!("raft_read_barrier"))
        .await
        .map_err(|_| {
            ApiError::Unavailable(
                "no quorum: a linearizable read could not be served in time".into(),
            )
        })?
    }

    /// The index a linearizable read must wait for. `Err(None)`: no leader
    /// known yet, try again.
    async fn read_index(&self) -> Result<u64, Option<ApiError>> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                let (Some(id), Some(leader)) = (f.leader_id, f.leader_node) else {
                    return Err(None);
                };
                // A read is safe to ask again, of the next leader, and of
                // this one when it could not confirm its lease just now
                // (a busy or new leader answers "unavailable").
                let mut peer = Peer::new(&self.channels, &leader);
                tokio::select! {
                    r = peer.read_index() => r.map_err(|e| match e {
                        ApiError::Unavailable(_) => None,
                        other => Some(other),
                    }),
                    () = crate::raft::elect::leader_lost(&self.raft, id) => Err(None),
                }
            }
            Err(_) => Err(None),
        }
    }

    /// The leader's side of `Cluster.ReadIndex`.
    pub async fn local_read_index(&self) -> Result<u64> {
        match self.raft.ensure_linearizable().await {
            Ok(l) => Ok(l.map_or(0, |l| l.index)),
            Err(e) => Err(ApiError::Unavailable(format!("not the leader: {e}"))),
        }
    }

    pub async fn get(&self, kind: ResourceKind, id: &str, stale: bool) -> Result<(u64, Resource)> {
        self.read_barrier(stale).await?;
        self.shared
            .read(|s| s.get(kind, id).map(|st| (st.revision, st.resource.clone())))
            .ok_or_else(|| ApiError::not_found(kind, id))
    }

    pub async fn list(&self, kind: ResourceKind, stale: bool) -> Result<Vec<(u64, Resource)>> {
        self.read_barrier(stale).await?;
        Ok(self.shared.read(|s| {
            s.list(kind)
                .map(|st| (st.revision, st.resource.clone()))
                .collect()
        }))
    }

    // ------------------------------------------------------------ documents

    /// Create or replace a document. `body` is JSON; a `kind` or `revision`
    /// field (as `GET` and `tollgate apply` produce) is ignored; `id` must
    /// match the path if given.
    pub async fn put(&self, kind: ResourceKind, id: &str, body: &[u8]) -> Result<(u64, Resource)> {
        self.put_resource(parse_document(kind, id, body)?).await
    }

    /// Create or replace a document already parsed (gRPC's typed rpcs). It
    /// is checked here whichever door it came by, so none can skip a check.
    pub async fn put_resource(&self, resource: Resource) -> Result<(u64, Resource)> {
        // Key records may be restored (their hash, never a value); the
        // rest are made by the cluster itself.
        if let Resource::Settings(_) | Resource::CacheFlush(_) | Resource::Deployment(_) = resource
        {
            return Err(cannot_write(resource.kind()));
        }
        resource.validate()?;
        if let Resource::ApiKey(k) = &resource {
            k.validate()?;
        }
        let cmd = match &resource {
            // A price applies from the day it is written: this node's.
            Resource::UsagePlan(plan) => Command::PutPlan {
                plan: plan.clone(),
                day: crate::state::price_day(),
            },
            _ => Command::Put(resource.clone()),
        };
        let (rev, _) = self.write(cmd).await?;
        Ok((rev, resource))
    }

    pub async fn delete(&self, kind: ResourceKind, id: &str) -> Result<u64> {
        Ok(self.write(Command::Delete(kind, id.to_string())).await?.0)
    }

    /// Flush an API's cached responses on every data plane: a new flush
    /// epoch (the write's revision), streamed like any document. Returns
    /// the revision, which is also the epoch.
    /// Freeze the API as it is now (`POST /v1/apis/{id}/deployments`).
    pub async fn deploy(&self, api: &str, body: &[u8]) -> Result<(u64, Resource)> {
        tollgate_model::validate::id("id", api)?;
        let req: tollgate_model::stages::DeployRequest = if body.iter().all(u8::is_ascii_whitespace)
        {
            Default::default()
        } else {
            parse_json(body)?
        };
        let (rev, r) = self
            .write(Command::Deploy {
                api: api.to_string(),
                created_at: crate::config_stream::rfc3339(now_secs() * 1000),
                description: req.description,
            })
            .await?;
        Ok((
            rev,
            r.ok_or_else(|| ApiError::Internal("deploy made nothing".into()))?,
        ))
    }

    /// The stage's canary becomes the stage, in one write.
    pub async fn promote(&self, stage: &str) -> Result<(u64, Resource)> {
        tollgate_model::validate::id("id", stage)?;
        let (rev, r) = self
            .write(Command::Promote {
                stage: stage.to_string(),
            })
            .await?;
        Ok((
            rev,
            r.ok_or_else(|| ApiError::Internal("promote made nothing".into()))?,
        ))
    }

    /// A deployment of `api`: 404 for one of another API.
    pub async fn deployment(&self, api: &str, id: &str) -> Result<(u64, Resource)> {
        let (rev, r) = self.get(ResourceKind::Deployment, id, false).await?;
        match &r {
            Resource::Deployment(d) if d.api == api => Ok((rev, r)),
            _ => Err(ApiError::NotFound(format!(
                "deployment {id:?} of api {api:?} not found"
            ))),
        }
    }

    pub async fn flush_cache(&self, api: &str) -> Result<u64> {
        tollgate_model::validate::id("id", api)?;
        let (rev, _) = self
            .write(Command::FlushCache {
                api: api.to_string(),
            })
            .await?;
        Ok(rev)
    }

    // ------------------------------------------------------------ keys

    async fn key_hash_secret(&self) -> Result<String> {
        if let Some(s) = self.shared.read(|s| s.settings().cloned()) {
            return Ok(s.key_hash_secret);
        }
        let (_, r) = self
            .write(Command::InitSettings(Settings {
                key_hash_secret: key::new_secret(),
            }))
            .await?;
        match r {
            Some(Resource::Settings(s)) => Ok(s.key_hash_secret),
            _ => Err(ApiError::Internal("cluster settings missing".into())),
        }
    }

    /// Issue a key. The value is returned here and never stored or logged.
    /// With an `idempotency_key`, a retry within 24 h issues nothing and
    /// fails with `AlreadyIssued` naming the first key.
    pub async fn issue_key(
        &self,
        body: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<(u64, IssuedKey)> {
        if let Some(k) = idempotency_key {
            let ok = !k.is_empty()
                && k.len() <= crate::state::MAX_IDEMPOTENCY_KEY
                && k.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(ApiError::InvalidArgument(format!(
                    "Idempotency-Key: must be 1 to {} visible ASCII characters",
                    crate::state::MAX_IDEMPOTENCY_KEY
                )));
            }
        }
        let req: IssueKeyRequest = parse_json(body)?;
        req.validate()?;
        let secret = self.key_hash_secret().await?;
        let value = req.value.clone().unwrap_or_else(key::generate);
        let record = ApiKeyRecord {
            id: key::new_id("key"),
            tenant: req.tenant,
            name: req.name,
            prefix: key::display_prefix(&value),
            hash: key::hash(&secret, &value),
            plans: req.plans,
            enabled: true,
            created_at: now_secs(),
        };
        let cmd = match idempotency_key {
            Some(k) => Command::IssueKey {
                record: record.clone(),
                idempotency_key: k.to_string(),
            },
            None => Command::Put(Resource::ApiKey(record.clone())),
        };
        let (rev, _) = self.write(cmd).await?;
        Ok((
            rev,
            IssuedKey {
                record: KeyView::from(&record),
                value,
            },
        ))
    }

    pub async fn patch_key(&self, id: &str, body: &[u8]) -> Result<(u64, KeyView)> {
        let patch: KeyPatch = parse_json(body)?;
        if let Some(plans) = &patch.plans {
            for (i, p) in plans.iter().enumerate() {
                tollgate_model::validate::id(&format!("plans[{i}]"), p)?;
            }
        }
        let (rev, r) = self
            .write(Command::PatchKey {
                id: id.to_string(),
                patch: KeyPatchCmd::from(patch),
            })
            .await?;
        match r {
            Some(Resource::ApiKey(k)) => Ok((rev, KeyView::from(&k))),
            _ => Err(ApiError::Internal("patch returned no key".into())),
        }
    }

    // ------------------------------------------------------------ cluster

    /// Add a node: as a learner first, then as a voter once it caught up.
    pub async fn add_member(&self, id: NodeId, node: Node) -> Result<()> {
        if self.raft.current_leader().await != Some(self.id) {
            let leader = self.leader_node().await?;
            return Peer::new(&self.channels, &leader).join(id, node).await;
        }
        let m = self.raft.metrics().borrow().membership_config.clone();
        if m.membership().voter_ids().any(|v| v == id) {
            return Ok(());
        }
        // A node the leader cannot replicate to (wrong address, or a
        // certificate from another CA) never catches up: give up after the
        // request timeout and take it out again, rather than make it a
        // voter that only weakens the quorum.
        let added = self
            .raft
            .add_learner(id, node, true)
            .await
            .map_err(|e| ApiError::Unavailable(format!("adding learner {id}: {e}")))?;
        let target = added.log_id.index;
        let mut metrics = self.raft.metrics();
        let caught_up = tokio::time::timeout(
            self.request_timeout,
            metrics.wait_for(|m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .is_some_and(|matched| matched.index >= target)
            }),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !caught_up {
            let _ = self
                .raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await;
            return Err(ApiError::Unavailable(format!(
                "node {id} did not catch up within {:?}; is it reachable from the leader, with a certificate from the cluster CA?",
                self.request_timeout
            )));
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| ApiError::Unavailable(format!("promoting {id} to voter: {e}")))?;
        tracing::info!(node = id, "node joined as voter");
        Ok(())
    }

    pub async fn remove_member(&self, id: NodeId) -> Result<()> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        if m.membership().get_node(&id).is_none() {
            return Err(ApiError::NotFound(format!("node {id} is not a member")));
        }
        if self.raft.current_leader().await != Some(self.id) {
            return Err(ApiError::Unavailable(format!(
                "send member removal to the leader ({:?})",
                self.leader_node().await.ok().map(|n| n.admin_addr)
            )));
        }
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(())
    }

    pub async fn leader_node(&self) -> Result<Node> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        loop {
            let metrics = self.raft.metrics().borrow().clone();
            if let Some(l) = metrics.current_leader {
                if let Some(n) = metrics.membership_config.membership().get_node(&l) {
                    return Ok(n.clone());
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::Unavailable("no leader".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn cluster_info(&self) -> ClusterInfo {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: Vec<MemberInfo> = membership
            .nodes()
            .map(|(id, n)| MemberInfo {
                id: *id,
                grpc_addr: n.grpc_addr.clone(),
                admin_addr: n.admin_addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let peers: Vec<String> = members
            .iter()
            .filter(|p| p.id != self.id)
            .map(|p| p.grpc_addr.clone())
            .collect();
        let data_planes = self.data_planes.gather(&self.channels, &peers).await;
        ClusterInfo {
            node_id: self.id,
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: crate::raft::commit_index(&m, self.id),
            applied_index: crate::raft::applied_index(&m),
            members,
            data_planes,
        }
    }

    /// A connections-API call (contract §5.2), answered wherever in the
    /// cluster the connection is held.
    pub async fn connection_call(
        &self,
        op: crate::connections::Op,
        connection_id: &str,
        body: Vec<u8>,
    ) -> Result<crate::connections::Answer> {
        let peers = self.peers();
        self.connections
            .call(&self.channels, &peers, op, connection_id, body)
            .await
    }

    /// Every other member of the cluster, voter or not.
    pub fn peers(&self) -> Vec<Node> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Ready: a leader is known and this node has applied its log (it is
    /// not replaying a backlog, to within a small lag).
    pub fn is_ready(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let applied = m.last_applied.map_or(0, |l| l.index);
        let last = m.last_log_index.unwrap_or(0);
        m.current_leader.is_some() && last.saturating_sub(applied) < 100
    }
}

/// Parse JSON, reporting the path of the offending field.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // `?`: a syntax error, before any field could be named.
        if path == "." || path == "?" || path.is_empty() {
            ApiError::InvalidArgument(format!("body: {inner}"))
        } else {
            ApiError::InvalidArgument(format!("{path}: {inner}"))
        }
    })
}

/// Settings, flush epochs and deployments the cluster makes itself: no
/// door puts them as documents.
fn cannot_write(kind: ResourceKind) -> ApiError {
    ApiError::InvalidArgument(format!("kind: {} cannot be written here", kind.as_str()))
}

/// Turn a request body into a validated document of `kind` with id `id`.
pub fn parse_document(kind: ResourceKind, id: &str, body: &[u8]) -> Result<Resource> {
    let mut value: serde_json::Value = parse_json(body)?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| ApiError::InvalidArgument("body: must be a JSON object".into()))?;
    obj.remove("kind");
    obj.remove("revision");
    match obj.get("id") {
        None => {
            obj.insert("id".into(), id.into());
        }
        Some(serde_json::Value::String(s)) if s == id => {}
        Some(other) => {
            return Err(ApiError::InvalidArgument(format!(
                "id: {other} does not match the id in the path ({id:?})"
            )))
        }
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let resource = match kind {
        ResourceKind::Api => Resource::Api(parse_json(&bytes)?),
        ResourceKind::Authorizer => Resource::Authorizer(parse_json(&bytes)?),
        ResourceKind::Tenant => Resource::Tenant(parse_json(&bytes)?),
        ResourceKind::UsagePlan => Resource::UsagePlan(parse_json(&bytes)?),
        ResourceKind::Stage => Resource::Stage(parse_json(&bytes)?),
        // A key record (`PUT /v1/keys/{id}`, `kind: ApiKey` in a dump):
        // its hash, never a value; new keys are issued by `POST /v1/keys`.
        ResourceKind::ApiKey => Resource::ApiKey(parse_json(&bytes)?),
        ResourceKind::Settings | ResourceKind::CacheFlush | ResourceKind::Deployment => {
            return Err(cannot_write(kind))
        }
    };
    resource.validate()?;
    Ok(resource)
}
