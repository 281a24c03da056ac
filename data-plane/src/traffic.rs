//! Live traffic (contract §5.2, `GET /v1/traffic`): each route's answers
//! in 10 s windows aligned to Unix time, reported to the control plane
//! every `REPORT_EVERY` (`Usage.Traffic`).
//!
//! The request path (`proxy::trail::finish`) adds to the window in its
//! worker's own copy (`shard`): two relaxed `fetch_add`s at most, no lock,
//! no lookup, and no clock read beyond the `Instant` `finish` takes anyway
//! (Unix time is that `Instant` against an anchor taken once). Each route
//! keeps `SLOTS` windows in a ring. The reporter, one task off the request
//! path, reads the closed and the current window and clears the next one
//! before the request path reaches it, so the request path never resets
//! anything and never checks whose slot it writes. Counters are 32-bit (a
//! worker answers far fewer than 4 billion requests in 10 s), which keeps a
//! route's rings small: `SLOTS` × `BUCKETS + 2` × 4 bytes per worker.
//!
//! A report carries each window's counts so far, not what changed since
//! the last report: the control plane replaces what it held for (data
//! plane, boot, window, route), so a retried or repeated report cannot
//! count an answer twice. The closed window is sent during the whole next
//! window, so the answers that ended on its edge are in its last report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tollgate_model::traffic::{bucket_of, Counts, RouteWindow, TrafficReport, BUCKETS, WINDOW_S};

use crate::gateway::Gateway;
use crate::plans::link::{ControlPlaneLink, LinkError, Sent};
use crate::shard::Sharded;

/// Windows kept per route: the closed one (still reported), the current
/// one, and the next, cleared ahead of time.
const SLOTS: usize = 3;
/// How often the windows go to the control plane (and the ring turns).
const REPORT_EVERY: Duration = Duration::from_secs(2);
const REPORT_TIMEOUT: Duration = Duration::from_millis(1500);

/// Unix time at one `Instant`, taken once: the request path turns its
/// `Instant` into a window with arithmetic rather than a second clock read.
fn anchor() -> &'static (Instant, u64) {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        (Instant::now(), unix_ms)
    })
}

/// The number of the window holding `at` (its start is `n * WINDOW_S`).
pub fn window_at(at: Instant) -> u64 {
    let (instant, unix_ms) = anchor();
    let ms = match at.checked_duration_since(*instant) {
        Some(d) => unix_ms + d.as_millis() as u64,
        None => unix_ms.saturating_sub(instant.duration_since(at).as_millis() as u64),
    };
    ms / (WINDOW_S * 1000)
}

/// One window of one worker's copy of a route's counters. Requests are
/// the latency buckets' sum, so they cost no add of their own.
#[derive(Default)]
struct Slot {
    /// The window the slot was cleared for.
    window: AtomicU64,
    errors_4xx: AtomicU32,
    errors_5xx: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

impl Slot {
    /// Zero the counters for window `n` (by the reporter only).
    fn clear_for(&self, n: u64) {
        for c in [&self.errors_4xx, &self.errors_5xx]
            .into_iter()
            .chain(&self.latency)
        {
            c.store(0, Relaxed);
        }
        self.window.store(n, Relaxed);
    }

    fn add_to(&self, c: &mut Counts) {
        c.errors_4xx += u64::from(self.errors_4xx.load(Relaxed));
        c.errors_5xx += u64::from(self.errors_5xx.load(Relaxed));
        for (sum, b) in c.latency.iter_mut().zip(&self.latency) {
            *sum += u64::from(b.load(Relaxed));
        }
    }
}

/// One route's windows, a ring per worker.
pub struct RouteTraffic {
    slots: Sharded<[Slot; SLOTS]>,
}

impl Default for RouteTraffic {
    fn default() -> Self {
        let t = Self {
            slots: Sharded::default(),
        };
        // Ready for the windows around now, so nothing counted before the
        // reporter's next turn is lost.
        let now = window_at(Instant::now());
        for ring in t.slots.iter() {
            for n in now.saturating_sub(1)..now + SLOTS as u64 - 1 {
                ring[slot_of(n)].clear_for(n);
            }
        }
        t
    }
}

fn slot_of(n: u64) -> usize {
    (n % SLOTS as u64) as usize
}

impl RouteTraffic {
    /// One answer: its status and how long it took, ended at `at`.
    pub fn record(&self, at: Instant, status: u16, us: u64) {
        let s = &self.slots.local()[slot_of(window_at(at))];
        s.latency[bucket_of(us)].fetch_add(1, Relaxed);
        match status {
            400..=499 => s.errors_4xx.fetch_add(1, Relaxed),
            500..=599 => s.errors_5xx.fetch_add(1, Relaxed),
            _ => 0,
        };
    }

    /// The counts of windows `now - 1` and `now` so far (summed over the
    /// workers), and the ring turned: the next window cleared. A
    /// current window the ring was not turned to in time (the reporter
    /// stalled for a whole window) is cleared rather than mixed with the
    /// old window it holds.
    fn turn(&self, now: u64) -> [Counts; 2] {
        let mut out = [Counts::default(), Counts::default()];
        for ring in self.slots.iter() {
            let next = &ring[slot_of(now + 1)];
            if next.window.load(Relaxed) != now + 1 {
                next.clear_for(now + 1);
            }
            let current = &ring[slot_of(now)];
            if current.window.load(Relaxed) != now {
                current.clear_for(now);
            }
            for (i, n) in [now.saturating_sub(1), now].into_iter().enumerate() {
                let s = &ring[slot_of(n)];
                if s.window.load(Relaxed) == n {
                    s.add_to(&mut out[i]);
                }
            }
        }
        for c in &mut out {
            c.requests = c.latency.iter().sum();
        }
        out
    }
}

/// Every route's closed and current window with answers in it, routes of
/// one API served by several deployments (a stage and its canary) summed.
fn collect(gw: &Gateway, now: u64) -> Vec<RouteWindow> {
    let mut by_route: BTreeMap<(u64, String, String), Counts> = BTreeMap::new();
    gw.metrics.for_each_route(|api, route, m| {
        let [closed, current] = m.traffic.turn(now);
        for (n, c) in [(now.saturating_sub(1), closed), (now, current)] {
            if c.requests > 0 {
                by_route
                    .entry((n * WINDOW_S, api.to_string(), route.to_string()))
                    .or_default()
                    .add(&c);
            }
        }
    });
    by_route
        .into_iter()
        .map(|((t, api, route), counts)| RouteWindow {
            t,
            api,
            route,
            counts,
        })
        .collect()
}

/// Report the windows every `REPORT_EVERY` until `stop`, and once more
/// then (after the proxy's drain: its last answers are in). A control
/// plane without `Usage.Traffic` (an older one) is not asked again.
pub async fn run(
    gw: Arc<Gateway>,
    link: ControlPlaneLink,
    data_plane: String,
    stop: CancellationToken,
) {
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let items = collect(&gw, window_at(Instant::now()));
        if !items.is_empty() {
            let report = TrafficReport {
                data_plane: data_plane.clone(),
                epoch,
                items,
            };
            match link.traffic(&report, REPORT_TIMEOUT).await {
                Ok(Sent::Done) => {}
                Ok(Sent::Unsupported) => {
                    tracing::debug!("the control plane takes no traffic reports; not sending them");
                    return;
                }
                Err(LinkError::NoControlPlane) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "a traffic report failed; trying the next node");
                    link.failed();
                }
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_window(n: u64) -> Instant {
        let (instant, unix_ms) = anchor();
        let ms = n * WINDOW_S * 1000 + 5000;
        if ms >= *unix_ms {
            *instant + Duration::from_millis(ms - unix_ms)
        } else {
            *instant - Duration::from_millis(unix_ms - ms)
        }
    }

    #[test]
    fn the_request_path_counts_into_the_window_of_its_instant() {
        let now = window_at(Instant::now());
        assert_eq!(window_at(at_window(now + 3)), now + 3);
        let t = RouteTraffic::default();
        t.record(at_window(now), 200, 300);
        t.record(at_window(now), 404, 1_500);
        t.record(at_window(now), 503, 40_000);
        t.record(at_window(now.saturating_sub(1)), 429, 100);
        let [closed, current] = t.turn(now);
        assert_eq!((closed.requests, closed.errors_4xx), (1, 1));
        assert_eq!(
            (current.requests, current.errors_4xx, current.errors_5xx),
            (3, 1, 1)
        );
        assert_eq!(current.latency[bucket_of(40_000)], 1);
        // A resend is the same counts, not twice them.
        assert_eq!(t.turn(now), [closed, current]);
    }

    #[test]
    fn the_ring_turns_without_mixing_windows() {
        let now = window_at(Instant::now());
        let t = RouteTraffic::default();
        // One answer a window, round the ring three times.
        for n in now..now + 3 * SLOTS as u64 {
            t.record(at_window(n), if n % 2 == 0 { 200 } else { 500 }, 300);
            let [closed, current] = t.turn(n);
            assert_eq!(closed.requests, u64::from(n > now), "window {n}");
            assert_eq!(
                closed.errors_5xx,
                u64::from(n > now && n % 2 == 0),
                "window {n}"
            );
            assert_eq!(
                (current.requests, current.errors_5xx),
                (1, n % 2),
                "window {n}"
            );
        }
    }

    #[test]
    fn a_stalled_reporter_drops_the_old_window_rather_than_mix_it_in() {
        let now = window_at(Instant::now());
        let t = RouteTraffic::default();
        t.record(at_window(now), 200, 300);
        // SLOTS windows later the request path writes into the same slot,
        // which nobody cleared: the reporter clears it, never sends both.
        let later = now + SLOTS as u64;
        t.record(at_window(later), 200, 300);
        let [closed, current] = t.turn(later);
        assert_eq!((closed.requests, current.requests), (0, 0));
        t.record(at_window(later), 200, 300);
        assert_eq!(t.turn(later)[1].requests, 1);
    }
}
