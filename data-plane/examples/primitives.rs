//! Micro-benchmarks of the request path's shared primitives, run by
//! `cargo xtask bench primitives` (in a release build): the GCRA throttle
//! bucket, alone and contended, and response-cache hits. Prints figures;
//! asserts nothing.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use tollgate_data_plane::cache::{self, ResponseCache, DEFAULT_CAPACITY_BYTES};
use tollgate_data_plane::plans::gcra::Gcra;

fn report(name: &str, ops: u64, elapsed: std::time::Duration) {
    println!(
        "{name:<44} {:>8.1} ns/op  {:>7.1} M ops/s",
        elapsed.as_nanos() as f64 / ops as f64,
        ops as f64 / elapsed.as_secs_f64() / 1e6
    );
}

fn gcra_alone(ops: u64) {
    let bucket = Gcra::default();
    let start = Instant::now();
    for i in 0..ops {
        black_box(bucket.check(i * 10, 1e6, 1e6));
    }
    report("gcra check, one thread", ops, start.elapsed());
}

fn gcra_contended(threads: u64, ops: u64) {
    let bucket = Arc::new(Gcra::default());
    let clock = Instant::now();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let bucket = bucket.clone();
            std::thread::spawn(move || {
                for _ in 0..ops {
                    let now = clock.elapsed().as_nanos() as u64;
                    black_box(bucket.check(now, 1e9, 1e9));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("bench thread");
    }
    report(
        &format!("gcra check + clock read, one key, threads: {threads}"),
        threads * ops,
        start.elapsed(),
    );
}

async fn cache_hits(ops: u64) {
    let cache = ResponseCache::new(DEFAULT_CAPACITY_BYTES);
    let cfg: tollgate_model::docs::CacheConfig =
        serde_json::from_value(serde_json::json!({"ttl_s": 300})).expect("cache config");
    let keys: Vec<Arc<str>> = (0..1000).map(|i| format!("api\n{i}").into()).collect();
    for k in &keys {
        let res = http::Response::new(tollgate_data_plane::body::full(bytes::Bytes::from_static(
            b"{\"hello\":\"world\"}",
        )));
        let Ok(entry) = cache::collect(res.into(), &cfg).await else {
            panic!("a 200 is storable");
        };
        cache.insert(k.clone(), entry).await;
    }
    let start = Instant::now();
    for i in 0..ops {
        let hit = cache.get(&keys[(i % 1000) as usize]).await;
        black_box(hit.expect("a hit"));
    }
    report("cache get (hit), 1,000 keys", ops, start.elapsed());
}

fn main() {
    println!("release build, this machine; nothing else should be running");
    gcra_alone(20_000_000);
    gcra_contended(1, 5_000_000);
    gcra_contended(2, 5_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(cache_hits(2_000_000));
}
