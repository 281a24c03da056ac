//! WebSocket figures for `/metrics`: open connections, messages each way
//! and closes by code, per API; and how long a connections-API push takes
//! from its arrival here to the client's socket.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::metrics::{escape, family, Histogram};

/// One API's counters.
#[derive(Default)]
pub struct ApiCounters {
    pub open: AtomicI64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub push_latency: Histogram,
    closes: Mutex<BTreeMap<u16, u64>>,
}

impl ApiCounters {
    pub fn closed(&self, code: u16) {
        self.open.fetch_sub(1, Relaxed);
        *self
            .closes
            .lock()
            .expect("closes lock")
            .entry(code)
            .or_default() += 1;
    }
}

#[derive(Default)]
pub struct WebSocketMetrics {
    apis: Mutex<BTreeMap<String, Arc<ApiCounters>>>,
}

impl WebSocketMetrics {
    /// The counters of `api`, made on first use (kept after the API goes,
    /// as counters are).
    pub fn api(&self, api: &str) -> Arc<ApiCounters> {
        self.apis
            .lock()
            .expect("metrics lock")
            .entry(api.to_string())
            .or_default()
            .clone()
    }

    pub fn render(&self, out: &mut String) {
        let apis: Vec<(String, Arc<ApiCounters>)> = self
            .apis
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(k, v)| (escape(k).into_owned(), v.clone()))
            .collect();
        if apis.is_empty() {
            return;
        }
        family(
            out,
            "tollgate_websocket_connections",
            "gauge",
            "Open WebSocket connections by API.",
        );
        for (api, c) in &apis {
            let _ = writeln!(
                out,
                "tollgate_websocket_connections{{api=\"{api}\"}} {}",
                c.open.load(Relaxed)
            );
        }
        family(
            out,
            "tollgate_websocket_messages_total",
            "counter",
            "WebSocket messages by API and direction (in: from clients; out: to clients).",
        );
        for (api, c) in &apis {
            for (dir, n) in [("in", &c.messages_in), ("out", &c.messages_out)] {
                let _ = writeln!(
                    out,
                    "tollgate_websocket_messages_total{{api=\"{api}\",direction=\"{dir}\"}} {}",
                    n.load(Relaxed)
                );
            }
        }
        family(
            out,
            "tollgate_websocket_closes_total",
            "counter",
            "Closed WebSocket connections by API and close code.",
        );
        for (api, c) in &apis {
            for (code, n) in c.closes.lock().expect("closes lock").iter() {
                let _ = writeln!(
                    out,
                    "tollgate_websocket_closes_total{{api=\"{api}\",code=\"{code}\"}} {n}"
                );
            }
        }
        family(
            out,
            "tollgate_websocket_push_seconds",
            "histogram",
            "Connections-API pushes: from their arrival at the data plane to the client's socket.",
        );
        for (api, c) in &apis {
            c.push_latency.render_one(
                out,
                "tollgate_websocket_push_seconds",
                &format!("api=\"{api}\""),
            );
        }
    }
}
