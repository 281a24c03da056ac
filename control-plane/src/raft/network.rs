//! Raft over tonic, on the node's gRPC port. Payloads are openraft's own
//! types as JSON. One lazily connected channel per peer, cached for the life
//! of the node, so reconnects are tonic's business, not ours.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tollgate_proto::raft_client::RaftClient;
use tollgate_proto::RaftPayload;
use tonic::{Request, Response, Status};

use super::elect::{PreVoteReply, PreVoteRequest};
use super::log_store::LogStore;
use super::{Node, NodeId, Raft, TypeConfig};
use crate::transport::{Channels, PeerChannel};

/// Builds connections to peers; shares one channel cache across them.
#[derive(Clone)]
pub struct Network {
    channels: Channels,
}

impl Network {
    pub fn new(channels: Channels) -> Self {
        Self { channels }
    }
}

pub struct Connection {
    target: NodeId,
    client: RaftClient<PeerChannel>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        Connection {
            target,
            client: RaftClient::new(self.channels.get(&node.grpc_addr)),
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Result<RaftPayload, serde_json::Error> {
    Ok(RaftPayload {
        json: serde_json::to_vec(v)?,
    })
}

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        which: Rpc,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = Request::new(payload);
        // openraft drops the call at `hard_ttl` (a heartbeat interval for
        // append-entries, election_timeout_min for a vote), so a dead peer
        // stalls neither replication nor an election; the header lets the
        // peer give up on it too.
        request.set_timeout(option.hard_ttl());
        let reply = match which {
            Rpc::Append => self.client.append_entries(request).await,
            Rpc::Vote => self.client.vote(request).await,
            Rpc::Snapshot => self.client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.into_inner().json)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(&req, &option, Rpc::Append).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(&req, &option, Rpc::Snapshot).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(&req, &option, Rpc::Vote).await
    }
}

/// The server half: decodes a payload, hands it to the local Raft, and
/// returns openraft's `Result` as JSON so errors cross the wire intact.
pub struct RaftService {
    raft: Raft,
    /// Read for a pre-vote's log comparison.
    log_store: LogStore,
}

impl RaftService {
    pub fn new(raft: Raft, log_store: LogStore) -> Self {
        Self { raft, log_store }
    }
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().json)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl tollgate_proto::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let r = self.raft.append_entries(decode(req)?).await;
        reply(&r)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        // Pre-votes share the method, so peers need no new RPC (`elect`).
        if let Ok(pre) = serde_json::from_slice::<PreVoteRequest>(&req.get_ref().json) {
            let granted =
                super::elect::grants_pre_vote(&self.raft, &self.log_store, &pre.pre_vote).await;
            return reply(&PreVoteReply { granted });
        }
        let r = self.raft.vote(decode(req)?).await;
        reply(&r)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let r = self.raft.install_snapshot(decode(req)?).await;
        reply(&r)
    }
}
