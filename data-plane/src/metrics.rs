//! Request counters for the status port. Labels are bounded by design: a
//! status class, never a path or a key.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Stats {
    /// Responses by status class, 1xx to 5xx.
    responses: [AtomicU64; 5],
}

impl Stats {
    pub fn record(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# TYPE tollgate_requests_total counter");
        for (i, c) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "tollgate_requests_total{{status_class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
    }
}
