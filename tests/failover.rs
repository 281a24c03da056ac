//! Leader failover with the shipped timing (`RaftTuning::default()`): the
//! leader stopped, paused or cut off, five times each. Writes through a
//! surviving node resume, nothing acknowledged is lost, the restored node
//! serves linearizable reads again, and a follower that was cut off rejoins
//! without an election. The bounds catch hangs; `cargo xtask bench
//! control-plane` measures.

use crate::common;

use std::future::Future;
use std::time::Duration;

use common::{Cluster, Fault};
use serde_json::json;
use tollgate_control_plane::RaftTuning;

const ROUNDS: usize = 5;
/// Far above the 2 s the failover is meant to take: only a hang fails.
const HANG: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Shut down, then restarted from its data dir.
    Stop,
    Pause,
    Isolate,
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after {HANG:?}"))
}

/// The node that a majority of the running nodes follow (a leader cut off
/// may still believe it leads).
async fn leader(c: &Cluster) -> usize {
    within("a leader the majority follows", async {
        loop {
            let views: Vec<_> = c
                .running()
                .map(|n| n.handle().control.raft.metrics().borrow().current_leader)
                .collect();
            let found = c.nodes.iter().position(|n| {
                views.iter().filter(|v| **v == Some(n.id)).count() * 2 > c.nodes.len()
            });
            if let Some(i) = found.filter(|i| c.nodes[*i].handle.is_some()) {
                return i;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// PUT the tenant through node `via` until it is acknowledged (a 503 has
/// an unknown outcome and is asked again, as the contract allows).
async fn write(c: &Cluster, via: usize, id: &str) {
    let client = c.nodes[via].client();
    within(&format!("write {id} through node {via}"), async {
        loop {
            let (s, _) = client
                .put(&format!("/v1/tenants/{id}"), json!({"name": id}))
                .await;
            if s == 200 || s == 201 {
                return;
            }
            assert_eq!(s, 503, "only 503 while the leader is replaced");
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// A linearizable read of the tenant on node `on` finds it.
async fn read(c: &Cluster, on: usize, id: &str) {
    let client = c.nodes[on].client();
    within(&format!("read {id} on node {on}"), async {
        while client.get(&format!("/v1/tenants/{id}")).await.0 != 200 {
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

async fn rounds(outage: Outage) {
    let mut c = Cluster::start_with(3, RaftTuning::default()).await;
    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        let old = leader(&c).await;
        let survivor = c.follower(old);
        match outage {
            Outage::Stop => c.stop(old).await,
            Outage::Pause => c.set_fault(old, Some(Fault::Frozen)),
            Outage::Isolate => c.set_fault(old, Some(Fault::Partitioned)),
        }
        let id = format!("{outage:?}-{round}").to_lowercase();
        write(&c, survivor, &id).await;
        acked.push(id.clone());
        match outage {
            Outage::Stop => c.restart(old).await,
            Outage::Pause | Outage::Isolate => c.set_fault(old, None),
        }
        read(&c, old, &id).await;
    }
    for (i, id) in (0..c.nodes.len()).flat_map(|i| acked.iter().map(move |id| (i, id))) {
        read(&c, i, id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_after_the_leader_stops() {
    rounds(Outage::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_after_the_leader_pauses() {
    rounds(Outage::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_after_the_leader_is_cut_off() {
    rounds(Outage::Isolate).await;
}

/// Without a pre-vote the follower would raise its term while cut off, and
/// its answer to the leader's first append-entries would unseat the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_rejoins_without_an_election() {
    let c = Cluster::start_with(3, RaftTuning::default()).await;
    let l = leader(&c).await;
    let f = c.follower(l);
    let term = |i: usize| {
        c.nodes[i]
            .handle()
            .control
            .raft
            .metrics()
            .borrow()
            .current_term
    };
    let before = term(l);
    c.set_fault(f, Some(Fault::Partitioned));
    write(&c, l, "while-cut-off").await;
    // Long enough without a leader that openraft alone would have started
    // elections (lease plus election timeout), twice over.
    let raft = c.nodes[f].handle().control.raft.clone();
    let quiet = 2 * Duration::from_millis(raft.config().election_timeout_max * 2);
    within("the follower's election timeout", async {
        loop {
            let since = raft.with_raft_state(|s| s.vote_last_modified()).await;
            if since.unwrap().is_some_and(|at| at.elapsed() > quiet) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    c.set_fault(f, None);
    write(&c, l, "after-healing").await;
    read(&c, f, "after-healing").await;
    read(&c, f, "while-cut-off").await;
    assert_eq!(leader(&c).await, l, "the leader kept its place");
    for i in [l, f] {
        assert_eq!(term(i), before, "no election on node {i}");
    }
}
