//! The gRPC services of a control-plane node other than Raft and config
//! streaming: cluster-internal calls, the admin API, and usage for data
//! planes. All are thin: they decode, call the service layer, and encode.

use std::sync::Arc;
use std::time::Duration;

use tollgate_model::ResourceKind;
use tollgate_proto as pb;
use tonic::{Request, Response, Status};

use crate::raft::Node;
use crate::service::{ApiError, ControlPlane};
use crate::state::Command;

pub struct ClusterService {
    pub cp: Arc<ControlPlane>,
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let r = req.into_inner();
        let node = Node {
            grpc_addr: r.grpc_addr,
            admin_addr: r.admin_addr,
        };
        self.cp.add_member(r.node_id, node).await?;
        Ok(Response::new(pb::JoinReply {
            leader_id: self.cp.id,
        }))
    }

    async fn forward(
        &self,
        req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardReply>, Status> {
        let cmd: Command = serde_json::from_slice(&req.into_inner().command_json)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let result = self.cp.write_local(cmd).await?;
        let json = serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ForwardReply { result_json: json }))
    }

    async fn read_index(
        &self,
        _: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexReply>, Status> {
        let index = self.cp.local_read_index().await?;
        Ok(Response::new(pb::ReadIndexReply { index }))
    }

    async fn local_data_planes(
        &self,
        _: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::DataPlaneList>, Status> {
        Ok(Response::new(pb::DataPlaneList {
            items: self.cp.data_planes.local(),
        }))
    }

    async fn deliver(
        &self,
        req: Request<pb::ConnectionCommand>,
    ) -> Result<Response<pb::ConnectionReply>, Status> {
        let reply = self.cp.connections.deliver_here(req.into_inner()).await;
        Ok(Response::new(reply))
    }

    async fn traffic(
        &self,
        req: Request<pb::TrafficQuery>,
    ) -> Result<Response<pb::TrafficHeld>, Status> {
        let held = self.cp.traffic.held(req.into_inner().since);
        Ok(Response::new(pb::TrafficHeld {
            reports: held.iter().map(Into::into).collect(),
        }))
    }
}

pub struct AdminService {
    pub cp: Arc<ControlPlane>,
}

fn kind_of(name: &str) -> Result<ResourceKind, Status> {
    match name {
        "api" | "Api" | "apis" => Ok(ResourceKind::Api),
        "authorizer" | "Authorizer" | "authorizers" => Ok(ResourceKind::Authorizer),
        "tenant" | "Tenant" | "tenants" => Ok(ResourceKind::Tenant),
        "usage_plan" | "UsagePlan" | "usage-plans" => Ok(ResourceKind::UsagePlan),
        "api_key" | "ApiKey" | "keys" => Ok(ResourceKind::ApiKey),
        other => Err(Status::invalid_argument(format!(
            "kind: unknown kind {other:?}"
        ))),
    }
}

fn doc(json: serde_json::Value) -> Result<pb::Document, Status> {
    serde_json::to_vec(&json)
        .map(|json| pb::Document { json })
        .map_err(|e| Status::internal(e.to_string()))
}

/// A stored resource as the admin API shows it (keys never show the hash).
pub fn view(revision: u64, r: &tollgate_model::Resource) -> serde_json::Value {
    let mut v = match r {
        tollgate_model::Resource::ApiKey(k) => {
            serde_json::to_value(crate::service::KeyView::from(k)).expect("serializes")
        }
        other => other.doc_json(),
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("revision".into(), revision.into());
    }
    v
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let r = req.into_inner();
        let (revision, _) = self.cp.put(kind_of(&r.kind)?, &r.id, &r.json).await?;
        Ok(Response::new(pb::WriteReply { revision }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Document>, Status> {
        let r = req.into_inner();
        let (rev, res) = self.cp.get(kind_of(&r.kind)?, &r.id, r.stale).await?;
        Ok(Response::new(doc(view(rev, &res))?))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::DocumentList>, Status> {
        let r = req.into_inner();
        let items = self
            .cp
            .list(kind_of(&r.kind)?, r.stale)
            .await?
            .iter()
            .map(|(rev, res)| doc(view(*rev, res)))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::DocumentList { items }))
    }

    async fn delete(
        &self,
        req: Request<pb::GetRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let r = req.into_inner();
        let revision = self.cp.delete(kind_of(&r.kind)?, &r.id).await?;
        Ok(Response::new(pb::WriteReply { revision }))
    }

    async fn issue_key(
        &self,
        req: Request<pb::Document>,
    ) -> Result<Response<pb::Document>, Status> {
        let (revision, issued) = self.cp.issue_key(&req.into_inner().json, None).await?;
        let mut v = serde_json::to_value(issued).map_err(|e| ApiError::Internal(e.to_string()))?;
        v["revision"] = revision.into();
        Ok(Response::new(doc(v)?))
    }
}

/// `Usage`, for data planes: metering, quota leases, throttle shares and
/// live traffic.
/// Messages become `tollgate_model` types (`metering`, `traffic`) here and
/// the service layer (`usage`, `demand`, `traffic`) only sees those.
pub struct UsageService {
    pub cp: Arc<ControlPlane>,
}

#[tonic::async_trait]
impl pb::usage_server::Usage for UsageService {
    async fn report(&self, req: Request<pb::UsageBatch>) -> Result<Response<pb::UsageAck>, Status> {
        let revision = self.cp.record_usage(req.into_inner().into()).await?;
        Ok(Response::new(pb::UsageAck { revision }))
    }

    async fn lease(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        let lease = self.cp.lease_quota(req.into_inner().into()).await?;
        Ok(Response::new(lease.into()))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        self.cp.release_quota(req.into_inner().into()).await?;
        Ok(Response::new(pb::ReleaseReply {}))
    }

    async fn sync(
        &self,
        req: Request<pb::DemandReport>,
    ) -> Result<Response<pb::DemandShares>, Status> {
        let report = req.into_inner();
        if self.cp.raft.current_leader().await == Some(self.cp.id) {
            let shares = self.cp.demand.sync(&report.into());
            return Ok(Response::new(shares.into()));
        }
        // Only the leader keeps the demand table: pass the call on as it
        // came, and its answer (or its status) back.
        let leader = self.cp.leader_node().await?;
        let mut client =
            pb::usage_client::UsageClient::new(self.cp.channels.get(&leader.grpc_addr));
        let mut fwd = Request::new(report);
        fwd.set_timeout(Duration::from_millis(500));
        client.sync(fwd).await
    }

    async fn traffic(
        &self,
        req: Request<pb::TrafficReport>,
    ) -> Result<Response<pb::TrafficAck>, Status> {
        self.cp.traffic.record(req.into_inner().into());
        Ok(Response::new(pb::TrafficAck {}))
    }
}
