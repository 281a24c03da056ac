//! Counters the request path writes, kept once per proxy worker thread.
//!
//! Two cores adding to one atomic pass its cache line back and forth on
//! every request (nginx's workers, separate processes, share nothing). So
//! each worker writes its own copy, on cache lines of its own, and readers
//! (the status port, the balancer) add the copies up.

use std::cell::Cell;
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;

/// One `T` per worker: as many as this machine has cores, at most 8
/// (threads beyond that share). Memory grows with it: each route's
/// counters are kept this many times.
pub struct Sharded<T> {
    shards: Box<[CachePadded<T>]>,
}

thread_local! {
    /// This thread's shard; threads that are not proxy workers use 0.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8)
    })
}

/// Make this thread (proxy worker `i`) write shard `i`.
pub fn enter(i: usize) {
    SHARD.with(|s| s.set(i % count()));
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self {
            shards: (0..count())
                .map(|_| CachePadded::new(T::default()))
                .collect(),
        }
    }
}

impl<T> Sharded<T> {
    /// This thread's copy.
    pub fn local(&self) -> &T {
        // `enter` keeps the index below `count()`, the length: no division
        // on the request path.
        &self.shards[SHARD.with(Cell::get)]
    }

    /// Every copy, for a reader to add up.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|s| &**s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    #[test]
    fn each_worker_writes_its_own_copy_and_readers_see_the_sum() {
        let counter: std::sync::Arc<Sharded<AtomicU64>> = Default::default();
        let threads: Vec<_> = (0..count() + 1)
            .map(|i| {
                let c = counter.clone();
                std::thread::spawn(move || {
                    enter(i);
                    for _ in 0..1000 {
                        c.local().fetch_add(1, Relaxed);
                    }
                    c.local().load(Relaxed)
                })
            })
            .collect();
        let seen: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let total: u64 = counter.iter().map(|c| c.load(Relaxed)).sum();
        assert_eq!(total, 1000 * seen.len() as u64);
        // Workers below the shard count write alone.
        if count() > 1 {
            assert!(seen[1..count()].iter().all(|&n| n == 1000), "{seen:?}");
        }
    }
}
