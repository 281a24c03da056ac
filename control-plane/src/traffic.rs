//! Live traffic (contract §5.2, `GET /v1/traffic`): what every data plane
//! answered, per API, in 10 s windows over the last 15 minutes, summed by
//! the cluster whichever node is asked.
//!
//! Each data plane sends its latest windows every 2 s (`Usage.Traffic`) to
//! the node it reports to; that node keeps them in memory (`TrafficStore`),
//! never in Raft: they are figures to look at, and a restart losing them
//! costs nothing that matters. A node answering `GET /v1/traffic` asks
//! every peer for what it holds (`Cluster.Traffic`, all at once) and merges.
//!
//! A report's counts are cumulative per (data plane, boot, window, route),
//! so a node replaces rather than adds, and where two nodes hold one data
//! plane's window (it moved between reports) the larger copy is the later
//! one (`Counts::newest`): no answer is counted twice. Then the data planes
//! are summed, histograms included, and each p99 is read off the merged
//! histogram. A peer that cannot be asked in time is left out (its data
//! planes' answers are missing, and the log says so at debug).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tollgate_model::traffic::{window_of, Counts, RouteWindow, TrafficReport, KEPT_S, WINDOW_S};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::peer::Peer;
use crate::service::ControlPlane;

/// How long a peer may take to say what it holds.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// A report's windows further ahead of this node's clock than this are
/// refused (a data plane's clock gone wrong would fill the store).
const MAX_AHEAD_S: u64 = 60;

/// A data plane's boot: (data plane id, epoch).
type Source = (String, u64);
/// One source's windows: (window start, API) → counts, its routes summed.
type SourceWindows = HashMap<(u64, String), Counts>;
/// What the store holds: by window start, then source, then (API, route).
type Held = BTreeMap<u64, HashMap<Source, HashMap<(String, String), Counts>>>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The windows the data planes reporting to this node sent.
#[derive(Default)]
pub struct TrafficStore {
    windows: Mutex<Held>,
}

impl TrafficStore {
    /// A data plane's report.
    pub fn record(&self, report: TrafficReport) {
        self.record_at(report, unix_now());
    }

    /// A data plane's report, at Unix second `now`.
    fn record_at(&self, report: TrafficReport, now: u64) {
        let oldest = window_of(now).saturating_sub(KEPT_S);
        let source = (report.data_plane, report.epoch);
        let mut windows = self.windows.lock().expect("traffic lock");
        for item in report.items {
            if item.t < oldest || item.t > now + MAX_AHEAD_S || item.t % WINDOW_S != 0 {
                continue;
            }
            windows
                .entry(item.t)
                .or_default()
                .entry(source.clone())
                .or_default()
                .entry((item.api, item.route))
                .or_default()
                .newest(&item.counts);
        }
        // Forget what has aged out, here rather than on a timer: a node no
        // data plane reports to holds nothing to forget.
        while windows.first_key_value().is_some_and(|(t, _)| *t < oldest) {
            windows.pop_first();
        }
    }

    /// The windows starting at `since` or later, one report per source,
    /// each API's routes summed (a peer's question, and this node's part of
    /// its own answer).
    pub fn held(&self, since: u64) -> Vec<TrafficReport> {
        let mut by_source: HashMap<Source, SourceWindows> = HashMap::new();
        let windows = self.windows.lock().expect("traffic lock");
        for (t, sources) in windows.range(since..) {
            for (source, routes) in sources {
                let mine = by_source.entry(source.clone()).or_default();
                for ((api, _), c) in routes {
                    mine.entry((*t, api.clone())).or_default().add(c);
                }
            }
        }
        drop(windows);
        by_source
            .into_iter()
            .map(|((data_plane, epoch), w)| TrafficReport {
                data_plane,
                epoch,
                items: w
                    .into_iter()
                    .map(|((t, api), counts)| RouteWindow {
                        t,
                        api,
                        route: String::new(),
                        counts,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// `GET /v1/traffic`'s answer.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct TrafficView {
    /// The window asked for, in seconds.
    pub window_s: u64,
    /// The length of each step of a series (one data-plane window).
    pub step_s: u64,
    /// By API id: the APIs that answered anything in the window.
    pub apis: BTreeMap<String, ApiTraffic>,
}

/// One API's answers over the window, and step by step.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct ApiTraffic {
    pub requests: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    /// From the merged latency histogram; null with no answers.
    pub p99_ms: Option<f64>,
    /// Every step of the window, oldest first; they add up to the totals.
    pub series: Vec<Step>,
}

/// One step of a series.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct Step {
    /// The step's start, Unix seconds.
    pub t: u64,
    pub requests: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    /// Null for a step with no answers.
    pub p99_ms: Option<f64>,
}

/// Reports from this node and its peers as the answer for the `steps`
/// windows starting at `first`: each source's windows deduplicated (the
/// newest copy), then summed per API and step.
pub fn merge(
    reports: Vec<TrafficReport>,
    first: u64,
    steps: usize,
) -> BTreeMap<String, Vec<Counts>> {
    let mut by_source: HashMap<Source, SourceWindows> = HashMap::new();
    for r in reports {
        let mine = by_source.entry((r.data_plane, r.epoch)).or_default();
        for item in r.items {
            mine.entry((item.t, item.api))
                .or_default()
                .newest(&item.counts);
        }
    }
    let mut apis: BTreeMap<String, Vec<Counts>> = BTreeMap::new();
    for ((t, api), c) in by_source.into_values().flatten() {
        let Some(step) = t.checked_sub(first).map(|d| (d / WINDOW_S) as usize) else {
            continue;
        };
        if step < steps {
            apis.entry(api)
                .or_insert_with(|| vec![Counts::default(); steps])[step]
                .add(&c);
        }
    }
    apis
}

/// The answer for the merged windows.
pub fn view(window_s: u64, first: u64, apis: BTreeMap<String, Vec<Counts>>) -> TrafficView {
    let apis = apis
        .into_iter()
        .map(|(api, steps)| {
            let mut total = Counts::default();
            let series = steps
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    total.add(c);
                    Step {
                        t: first + i as u64 * WINDOW_S,
                        requests: c.requests,
                        errors_4xx: c.errors_4xx,
                        errors_5xx: c.errors_5xx,
                        p99_ms: c.p99_ms(),
                    }
                })
                .collect();
            let t = ApiTraffic {
                requests: total.requests,
                errors_4xx: total.errors_4xx,
                errors_5xx: total.errors_5xx,
                p99_ms: total.p99_ms(),
                series,
            };
            (api, t)
        })
        .collect();
    TrafficView {
        window_s,
        step_s: WINDOW_S,
        apis,
    }
}

/// `?window=`: `Nm` or `Ns`, from 1 to 15 minutes in whole steps; absent,
/// the whole 15 minutes.
pub fn parse_window(v: Option<&str>) -> Result<u64, ApiError> {
    let Some(v) = v else { return Ok(KEPT_S) };
    let bad = || {
        ApiError::InvalidArgument(format!(
            "window: {v:?} is not a duration from 1m to 15m in steps of {WINDOW_S}s (e.g. 5m, 900s)"
        ))
    };
    let (n, unit) = match v.strip_suffix('m') {
        Some(n) => (n, 60),
        None => (v.strip_suffix('s').ok_or_else(bad)?, 1),
    };
    let s = n
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(bad)?;
    if (60..=KEPT_S).contains(&s) && s % WINDOW_S == 0 {
        Ok(s)
    } else {
        Err(bad())
    }
}

impl ControlPlane {
    /// The cluster's traffic over the last `window_s` seconds (a multiple
    /// of `WINDOW_S`, at most `KEPT_S`): the current window and those
    /// before it, from this node and every peer.
    pub async fn traffic(&self, window_s: u64) -> TrafficView {
        let steps = (window_s / WINDOW_S) as usize;
        let first = (window_of(unix_now()) + WINDOW_S).saturating_sub(window_s);
        let mut reports = self.traffic.held(first);
        let calls = self.peers().into_iter().map(|node| {
            let mut peer = Peer::new(&self.channels, &node);
            async move { (peer.traffic(first, PEER_TIMEOUT).await, node) }
        });
        for (answer, node) in futures::future::join_all(calls).await {
            match answer {
                Ok(held) => reports.extend(held),
                Err(e) => tracing::debug!(peer = %node.grpc_addr, error = %e.message(),
                    "a peer's traffic is left out"),
            }
        }
        view(window_s, first, merge(reports, first, steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_model::traffic::bucket_of;

    const T0: u64 = 1_700_000_000;

    fn counts(requests: u64, e4: u64, e5: u64, us: u64) -> Counts {
        let mut c = Counts {
            requests,
            errors_4xx: e4,
            errors_5xx: e5,
            ..Counts::default()
        };
        c.latency[bucket_of(us)] = requests;
        c
    }

    fn report(dp: &str, epoch: u64, items: &[(u64, &str, &str, Counts)]) -> TrafficReport {
        TrafficReport {
            data_plane: dp.into(),
            epoch,
            items: items
                .iter()
                .map(|(t, api, route, c)| RouteWindow {
                    t: *t,
                    api: api.to_string(),
                    route: route.to_string(),
                    counts: c.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_resent_or_stale_report_replaces_never_adds() {
        let store = TrafficStore::default();
        store.record_at(
            report("a", 1, &[(T0, "orders", "r", counts(3, 1, 0, 300))]),
            T0,
        );
        store.record_at(
            report("a", 1, &[(T0, "orders", "r", counts(5, 1, 1, 300))]),
            T0 + 2,
        );
        // An older copy arriving late changes nothing.
        store.record_at(
            report("a", 1, &[(T0, "orders", "r", counts(3, 1, 0, 300))]),
            T0 + 4,
        );
        let held = store.held(T0);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].items[0].counts, counts(5, 1, 1, 300));
    }

    #[test]
    fn old_and_far_future_windows_are_not_kept() {
        let store = TrafficStore::default();
        let now = T0 + KEPT_S + 100;
        store.record_at(
            report(
                "a",
                1,
                &[
                    (T0, "orders", "r", counts(1, 0, 0, 300)),
                    (now + 3600, "orders", "r", counts(1, 0, 0, 300)),
                    (window_of(now), "orders", "r", counts(2, 0, 0, 300)),
                ],
            ),
            now,
        );
        let held = store.held(0);
        assert_eq!(held[0].items.len(), 1);
        assert_eq!(held[0].items[0].t, window_of(now));
    }

    #[test]
    fn nodes_merge_summing_data_planes_and_routes_once_each() {
        let (a, b) = (TrafficStore::default(), TrafficStore::default());
        // Data plane 1 reports to node a, then moves to b mid-window;
        // data plane 2 reports to b. Two routes of one API.
        a.record_at(
            report("dp1", 1, &[(T0, "orders", "r1", counts(4, 1, 0, 300))]),
            T0,
        );
        b.record_at(
            report("dp1", 1, &[(T0, "orders", "r1", counts(6, 1, 0, 300))]),
            T0 + 4,
        );
        b.record_at(
            report(
                "dp2",
                9,
                &[
                    (T0, "orders", "r2", counts(10, 0, 2, 40_000)),
                    (T0 + 10, "orders", "r2", counts(1, 0, 0, 300)),
                    (T0 + 10, "users", "r", counts(2, 2, 0, 300)),
                ],
            ),
            T0 + 12,
        );
        let mut all = a.held(T0);
        all.extend(b.held(T0));
        let v = view(30, T0, merge(all, T0, 3));
        let orders = &v.apis["orders"];
        // 6 (dp1's newest) + 10 + 1.
        assert_eq!(
            (orders.requests, orders.errors_4xx, orders.errors_5xx),
            (17, 1, 2)
        );
        assert_eq!(orders.series.len(), 3);
        assert_eq!(
            orders
                .series
                .iter()
                .map(|s| (s.t, s.requests))
                .collect::<Vec<_>>(),
            [(T0, 16), (T0 + 10, 1), (T0 + 20, 0)]
        );
        assert_eq!(orders.series[2].p99_ms, None);
        // 10 of 16 answers are slow: the p99 is one of theirs.
        assert!(orders.series[0].p99_ms.unwrap() > 30.0);
        assert!(orders.p99_ms.unwrap() > 30.0);
        assert_eq!(v.apis["users"].requests, 2);
        assert_eq!((v.window_s, v.step_s), (30, 10));
        // Windows outside the one asked for are left out.
        let v = view(10, T0 + 10, merge(a.held(0), T0 + 10, 1));
        assert!(v.apis.is_empty());
    }

    #[test]
    fn the_window_is_one_to_fifteen_minutes_in_whole_steps() {
        assert_eq!(parse_window(None).unwrap(), 900);
        assert_eq!(parse_window(Some("5m")).unwrap(), 300);
        assert_eq!(parse_window(Some("900s")).unwrap(), 900);
        assert_eq!(parse_window(Some("1m")).unwrap(), 60);
        for bad in [
            "",
            "m",
            "0m",
            "16m",
            "30s",
            "65s",
            "1h",
            "5",
            "-5m",
            "5 m",
            "99999999999999999999m",
        ] {
            let e = parse_window(Some(bad)).unwrap_err();
            assert!(e.to_string().starts_with("window: "), "{bad}: {e}");
        }
    }

    #[test]
    fn two_boots_of_one_data_plane_both_count() {
        let store = TrafficStore::default();
        store.record_at(
            report("dp1", 1, &[(T0, "orders", "r", counts(4, 0, 0, 300))]),
            T0,
        );
        store.record_at(
            report("dp1", 2, &[(T0, "orders", "r", counts(3, 0, 0, 300))]),
            T0,
        );
        let v = view(10, T0, merge(store.held(T0), T0, 1));
        assert_eq!(v.apis["orders"].requests, 7);
    }
}
