//! When to build a snapshot (and purge the log behind it).
//!
//! A snapshot costs work in proportion to the whole state, so a fixed
//! "every N entries" policy makes each write pay O(state / N): a cluster
//! that holds 50,000 documents and snapshots every 5,000 writes spends a
//! large share of its CPU serializing. Instead a snapshot is built once the
//! log since the last one holds at least `min_entries` entries *and* at
//! least as many entries as the state holds documents and counters. Each
//! write then pays a constant share of a snapshot, and the log (what a
//! restart replays) stays no longer than the state it rebuilds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::state_machine::Shared;
use super::Raft;

/// Entries in the log since the last snapshot at which one is due.
pub fn due_after(min_entries: u64, state_entries: usize) -> u64 {
    min_entries.max(state_entries as u64)
}

/// Trigger snapshots by the policy above until `cancel`.
pub async fn run(raft: Raft, shared: Arc<Shared>, min_entries: u64, cancel: CancellationToken) {
    let mut metrics = raft.metrics();
    // The snapshot index a trigger was sent for, and when: wait for it to
    // change before sending another (or a minute, in case the build failed).
    let mut pending: Option<(Option<u64>, Instant)> = None;
    loop {
        let (applied, snapshot) = {
            let m = metrics.borrow_and_update();
            (
                m.last_applied.map_or(0, |l| l.index),
                m.snapshot.map(|l| l.index),
            )
        };
        if pending.is_some_and(|(p, at)| p != snapshot || at.elapsed() > Duration::from_secs(60)) {
            pending = None;
        }
        let since = applied.saturating_sub(snapshot.unwrap_or(0));
        if pending.is_none() && since >= due_after(min_entries, shared.read(|s| s.entries())) {
            if raft.trigger().snapshot().await.is_err() {
                return; // Raft has shut down.
            }
            pending = Some((snapshot, Instant::now()));
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
        // Metrics change on every apply; looking a few times a second is
        // plenty and keeps this task off the write path.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::due_after;

    #[test]
    fn the_log_may_grow_as_large_as_the_state_but_no_less_than_the_minimum() {
        assert_eq!(due_after(5000, 10), 5000);
        assert_eq!(due_after(5000, 80_000), 80_000);
        assert_eq!(due_after(5, 0), 5);
    }
}
