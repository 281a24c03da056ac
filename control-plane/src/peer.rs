//! Calls from one control-plane node to another's `Cluster` service, in
//! the service layer's terms: a write forwarded to the leader, the leader's
//! read index, a join request. The wire messages stay in here; a peer's
//! failure comes back as an `ApiError`. `deliver` is the exception: the
//! connections module speaks the wire's command and reply itself; and
//! `traffic` answers the status, as a peer left out is no error.

use tollgate_proto as pb;
use tollgate_proto::cluster_client::ClusterClient;

use crate::error::{ApiError, Result};
use crate::raft::{Node, NodeId};
use crate::state::{Command, CommandResult};
use crate::transport::{Channels, PeerChannel};

/// A client for one peer's `Cluster` service.
pub struct Peer(ClusterClient<PeerChannel>);

impl Peer {
    pub fn new(channels: &Channels, node: &Node) -> Self {
        Self(ClusterClient::new(channels.get(&node.grpc_addr)))
    }

    /// Have the peer (the leader) write `cmd`, with no further hop.
    pub async fn forward(&mut self, cmd: &Command) -> Result<CommandResult> {
        let json = serde_json::to_vec(cmd).map_err(|e| ApiError::Internal(e.to_string()))?;
        let reply = self
            .0
            .forward(pb::ForwardRequest { command_json: json })
            .await?
            .into_inner();
        serde_json::from_slice(&reply.result_json).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// The index a linearizable read must wait for, as the leader sees it.
    pub async fn read_index(&mut self) -> Result<u64> {
        Ok(self
            .0
            .read_index(pb::ReadIndexRequest {})
            .await?
            .into_inner()
            .index)
    }

    /// Hand a connections-API command to the peer, which answers for the
    /// data plane it holds or says NOT_HERE, within `timeout`.
    pub async fn deliver(
        &mut self,
        cmd: pb::ConnectionCommand,
        timeout: std::time::Duration,
    ) -> Result<pb::ConnectionReply, tonic::Status> {
        let mut req = tonic::Request::new(cmd);
        req.set_timeout(timeout);
        Ok(self.0.deliver(req).await?.into_inner())
    }

    /// The live-traffic windows the peer holds from `since` (Unix
    /// seconds), within `timeout`.
    pub async fn traffic(
        &mut self,
        since: u64,
        timeout: std::time::Duration,
    ) -> Result<Vec<tollgate_model::traffic::TrafficReport>, tonic::Status> {
        let mut req = tonic::Request::new(pb::TrafficQuery { since });
        req.set_timeout(timeout);
        let held = self.0.traffic(req).await?.into_inner();
        Ok(held.reports.into_iter().map(Into::into).collect())
    }

    /// Ask the peer (the leader) to add node `id`.
    pub async fn join(&mut self, id: NodeId, node: Node) -> Result<()> {
        self.0
            .join(pb::JoinRequest {
                node_id: id,
                grpc_addr: node.grpc_addr,
                admin_addr: node.admin_addr,
            })
            .await?;
        Ok(())
    }
}
