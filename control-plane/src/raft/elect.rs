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
//! (`election_timeout_max`) ago, and the candidate's log is at least as
//! new as its own (else it would refuse the real vote too). A cut-off node
//! thus never raises its term, and rejoins without an election.
//!
//! Two things keep survivors from duelling, which once held a failover for
//! seven seconds: a node whose log is behind gets no pre-vote, so it cannot
//! unseat the leader just elected with a newer blank entry; and a node that
//! voted, or heard from a leader, while its own pre-vote was out does not
//! stand (its `trigger().elect()` would raise the term past the vote it
//! just gave).

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tollgate_proto::raft_client::RaftClient;
use tollgate_proto::RaftPayload;

use super::log_store::LogStore;
use super::typ::LogId;
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
    /// The candidate's last log id (absent: an empty log).
    #[serde(default)]
    pub last_log: Option<LogId>,
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

/// What this node's vote says of the leader it follows.
#[derive(Debug, Clone, Copy, PartialEq)]
struct VoteClock {
    /// The vote is a leader's (granted by a quorum).
    leaders: bool,
    /// When the vote last changed or was confirmed by a leader's
    /// append-entries.
    at: Option<Instant>,
}

/// This node's `VoteClock`. `None`: Raft stopped.
async fn vote_clock(raft: &Raft) -> Option<VoteClock> {
    raft.with_raft_state(|s| VoteClock {
        leaders: s.vote_ref().committed,
        at: s.vote_last_modified(),
    })
    .await
    .ok()
}

/// Whether this node would grant a vote now, lease-wise.
pub async fn grants_pre_vote(raft: &Raft, log: &LogStore, req: &PreVote) -> bool {
    let lease = lease(raft);
    let m = raft.metrics().borrow().clone();
    let (Some(mine), Ok(my_log)) = (vote_clock(raft).await, log.last_log_id()) else {
        return false;
    };
    let log_ok = log_as_new(my_log, req.last_log);
    let lease_over = if m.state.is_leader() {
        // A leader that a quorum answered within the lease is alive.
        m.millis_since_quorum_ack
            .is_none_or(|ms| Duration::from_millis(ms) > lease)
    } else {
        match mine {
            VoteClock {
                leaders: true,
                at: Some(at),
                ..
            } => at.elapsed() > lease,
            _ => true,
        }
    };
    let granted = log_ok && lease_over;
    tracing::debug!(
        candidate = req.candidate,
        term = req.term,
        log_ok,
        lease_over,
        "pre-vote"
    );
    granted
}

/// Whether a candidate whose last log id is `theirs` has a log at least
/// as new as `mine`: a later term first, then a longer log.
fn log_as_new(mine: Option<LogId>, theirs: Option<LogId>) -> bool {
    mine <= theirs
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
            Some(VoteClock {
                leaders: true,
                at: Some(at),
                ..
            }) if at.elapsed() <= lease => {}
            _ => return,
        }
        // Woken early by a change of leader.
        let _ = tokio::time::timeout(tick, metrics.changed()).await;
    }
}

/// Start elections for this node while it runs (see the module doc).
pub async fn run(raft: Raft, log: LogStore, channels: Channels, cancel: CancellationToken) {
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
        let Some(clock) = vote_clock(&raft).await else {
            return;
        };
        let (leaders, at) = (clock.leaders, clock.at);
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
        let stand = voters.len() == 1
            || pre_vote(&channels, &m, log.last_log_id().ok().flatten(), &voters, min).await
                // Nothing changed while the pre-vote was out.
                && vote_clock(&raft).await == Some(clock);
        if stand {
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
async fn pre_vote(
    channels: &Channels,
    m: &Metrics,
    last_log: Option<LogId>,
    voters: &[NodeId],
    ttl: Duration,
) -> bool {
    let needed = voters.len() / 2 + 1;
    let body = PreVoteRequest {
        pre_vote: PreVote {
            candidate: m.id,
            term: m.current_term + 1,
            last_log,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(term: u64, leader: NodeId, index: u64) -> Option<LogId> {
        Some(LogId::new(
            openraft::CommittedLeaderId::new(term, leader),
            index,
        ))
    }

    #[test]
    fn a_candidate_behind_gets_no_pre_vote() {
        // The duel seen in a failover: node 2 still at T8's last entry asks
        // node 1, which has just written its own T9 blank entry.
        assert!(!log_as_new(id(9, 1, 3428), id(8, 3, 3427)));
        // A later term wins over a longer log of an older one.
        assert!(!log_as_new(id(9, 1, 10), id(8, 3, 50)));
        assert!(log_as_new(id(9, 1, 10), id(9, 1, 10)));
        assert!(log_as_new(id(8, 3, 3427), id(9, 1, 3428)));
        assert!(log_as_new(None, id(1, 1, 1)));
        assert!(!log_as_new(id(1, 1, 1), None));
    }

    #[test]
    fn a_pre_vote_without_a_log_id_reads_as_an_empty_log() {
        let req: PreVoteRequest =
            serde_json::from_str(r#"{"pre_vote":{"candidate":2,"term":9}}"#).unwrap();
        assert_eq!(req.pre_vote.last_log, None);
        assert!(!log_as_new(id(9, 1, 3428), req.pre_vote.last_log));
    }
}
