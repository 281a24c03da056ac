//! Elections behind a pre-vote, and the leader-contact clock they share
//! with the write path.
//!
//! openraft 0.9 has no PreVote: a follower that times out raises its term
//! before it asks for votes. One cut off from the cluster keeps raising it,
//! and when it comes back its higher term, carried in its answer to the
//! leader's next append-entries, unseats a healthy leader. So openraft's own
//! election timer is off (`enable_elect: false`) and `run` starts elections
//! (`trigger().elect()`, which ignores that switch) after the timeout
//! openraft would use, but only once a majority of voters, itself included,
//! say they too have lost the leader. A voter says so exactly when
//! openraft's leader lease would let it grant the real vote: its vote is not
//! a leader's, or the leader last reached it more than a lease
//! (`election_timeout_max`) ago. A cut-off node thus never raises its term,
//! and rejoins without an election.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tollgate_proto::raft_client::RaftClient;
use tollgate_proto::RaftPayload;

use super::{Metrics, NodeId, Raft};
use crate::transport::Channels;

/// A pre-vote, sent on the Raft service's `vote` method (a real vote
/// request has no `pre_vote` field).
#[derive(Debug, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub pre_vote: PreVote,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PreVote {
    pub candidate: NodeId,
    /// The term the candidate would stand at (for the logs).
    pub term: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PreVoteReply {
    pub granted: bool,
}

/// The leader lease: how long a follower keeps trusting a leader it last
/// heard from, and refuses to vote for anyone else.
pub fn lease(raft: &Raft) -> Duration {
    Duration::from_millis(raft.config().election_timeout_max)
}

/// When this node's vote last changed or was confirmed by a leader's
/// append-entries, and whether it is a leader's vote. `None`: Raft stopped.
async fn vote_clock(raft: &Raft) -> Option<(bool, Option<Instant>)> {
    raft.with_raft_state(|s| (s.vote_ref().committed, s.vote_last_modified()))
        .await
        .ok()
}

/// Whether this node would grant a vote now, lease-wise.
pub async fn grants_pre_vote(raft: &Raft, req: &PreVote) -> bool {
    let lease = lease(raft);
    let m = raft.metrics().borrow().clone();
    let granted = if m.state.is_leader() {
        // A leader that a quorum answered within the lease is alive.
        m.millis_since_quorum_ack
            .is_none_or(|ms| Duration::from_millis(ms) > lease)
    } else {
        match vote_clock(raft).await {
            Some((true, Some(at))) => at.elapsed() > lease,
            Some(_) => true,
            None => false,
        }
    };
    tracing::debug!(
        candidate = req.candidate,
        term = req.term,
        granted,
        "pre-vote"
    );
    granted
}

/// Resolves once node `leader` is no longer this node's leader, or has not
/// reached this node for a lease: a request waiting on it may never be
/// answered.
pub async fn leader_lost(raft: &Raft, leader: NodeId) {
    let lease = lease(raft);
    let tick = Duration::from_millis(raft.config().heartbeat_interval);
    let mut metrics = raft.metrics();
    loop {
        if metrics.borrow_and_update().current_leader != Some(leader) {
            return;
        }
        match vote_clock(raft).await {
            Some((true, Some(at))) if at.elapsed() <= lease => {}
            _ => return,
        }
        // Woken early by a change of leader.
        let _ = tokio::time::timeout(tick, metrics.changed()).await;
    }
}

/// Start elections for this node while it runs (see the module doc).
pub async fn run(raft: Raft, channels: Channels, cancel: CancellationToken) {
    let cfg = raft.config().clone();
    let tick = Duration::from_millis(cfg.heartbeat_interval);
    let pick = || {
        Duration::from_millis(
            rand::thread_rng().gen_range(cfg.election_timeout_min..cfg.election_timeout_max),
        )
    };
    let (lease, min) = (
        lease(&raft),
        Duration::from_millis(cfg.election_timeout_min),
    );
    let mut timeout = pick();
    let mut last_try = Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let m = raft.metrics().borrow().clone();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        if m.running_state.is_err() || m.state.is_leader() || !voters.contains(&m.id) {
            continue;
        }
        let Some((leaders, at)) = vote_clock(&raft).await else {
            return;
        };
        // As openraft's timer: a follower waits out the lease first, so its
        // peers' leases have expired too when it asks; a candidate, or one
        // whose pre-vote failed, waits a timeout before trying again.
        let due = match at {
            // The only voter: nobody to wait for, as in openraft.
            _ if voters.len() == 1 => last_try + tick,
            Some(at) if at > last_try && leaders => at + lease + (timeout - min),
            Some(at) if at > last_try => at + timeout,
            _ => last_try + timeout,
        };
        if Instant::now() < due {
            continue;
        }
        last_try = Instant::now();
        timeout = pick();
        if voters.len() == 1 || pre_vote(&channels, &m, &voters, min).await {
            tracing::info!(
                node = m.id,
                term = m.current_term + 1,
                "starting an election"
            );
            if raft.trigger().elect().await.is_err() {
                return;
            }
        }
    }
}

/// Ask the other voters at once; true once a majority (this node
/// included) grants. Each ask is bounded as openraft bounds a vote.
async fn pre_vote(channels: &Channels, m: &Metrics, voters: &[NodeId], ttl: Duration) -> bool {
    let needed = voters.len() / 2 + 1;
    let body = PreVoteRequest {
        pre_vote: PreVote {
            candidate: m.id,
            term: m.current_term + 1,
        },
    };
    let Ok(json) = serde_json::to_vec(&body) else {
        return false;
    };
    let membership = m.membership_config.membership();
    let mut asks: FuturesUnordered<_> = voters
        .iter()
        .filter(|v| **v != m.id)
        .filter_map(|v| membership.get_node(v))
        .map(|node| {
            let mut client = RaftClient::new(channels.get(&node.grpc_addr));
            let json = json.clone();
            async move {
                let mut req = tonic::Request::new(RaftPayload { json });
                req.set_timeout(ttl);
                let reply = tokio::time::timeout(ttl, client.vote(req)).await;
                let Ok(Ok(reply)) = reply else {
                    return false;
                };
                serde_json::from_slice::<PreVoteReply>(&reply.into_inner().json)
                    .is_ok_and(|r| r.granted)
            }
        })
        .collect();
    let mut granted = 1;
    while let Some(yes) = asks.next().await {
        granted += usize::from(yes);
        if granted >= needed {
            return true;
        }
    }
    false
}
