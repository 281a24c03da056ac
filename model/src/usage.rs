//! Calendar arithmetic for quotas and usage: days are counted from the Unix
//! epoch (UTC), and quota periods are UTC calendar days, weeks starting
//! Monday, and months.

use serde::{Deserialize, Serialize};

use crate::docs::QuotaPeriod;

/// Days since 1970-01-01 (UTC).
pub type Day = u32;

pub fn day_of_unix(secs: u64) -> Day {
    (secs / 86_400) as Day
}

pub fn today() -> Day {
    day_of_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// (year, month 1-12, day 1-31) of a day number (Howard Hinnant's
/// `civil_from_days`).
pub fn civil(day: Day) -> (i32, u32, u32) {
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

/// The day number of a civil date (`days_from_civil`).
pub fn from_civil(y: i32, m: u32, d: u32) -> Option<Day> {
    if !(1..=12).contains(&m) || d == 0 || d > 31 {
        return None;
    }
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let day = era * 146_097 + doe - 719_468;
    let back = u32::try_from(day).ok()?;
    // Reject dates like February 30th.
    (civil(back) == ((y + i64::from(m <= 2)) as i32, m, d)).then_some(back)
}

/// `YYYY-MM-DD`.
pub fn format_day(day: Day) -> String {
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn parse_day(s: &str) -> Option<Day> {
    let mut it = s.splitn(3, '-');
    let y = it.next()?.parse().ok()?;
    let m = it.next()?.parse().ok()?;
    let d = it.next()?.parse().ok()?;
    if s.len() != 10 {
        return None;
    }
    from_civil(y, m, d)
}

/// The first day of the quota period holding `day`.
pub fn period_start(period: QuotaPeriod, day: Day) -> Day {
    match period {
        QuotaPeriod::Day => day,
        // 1970-01-01 was a Thursday: (day + 3) % 7 is 0 on Mondays.
        QuotaPeriod::Week => day - (day + 3) % 7,
        QuotaPeriod::Month => {
            let (y, m, _) = civil(day);
            from_civil(y, m, 1).expect("the first of a month exists")
        }
    }
}

/// The first day of the next period.
pub fn period_end(period: QuotaPeriod, day: Day) -> Day {
    match period {
        QuotaPeriod::Day => day + 1,
        QuotaPeriod::Week => period_start(period, day) + 7,
        QuotaPeriod::Month => {
            let (y, m, _) = civil(day);
            let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            from_civil(y, m, 1).expect("the first of a month exists")
        }
    }
}

/// What one key used under one plan on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageItem {
    pub key: String,
    pub plan: String,
    pub day: Day,
    // Flattened: the Raft log holds items written before the WebSocket
    // measures existed, as `{key, plan, day, count}`.
    #[serde(flatten)]
    pub counts: UsageCounts,
}

/// The measures metered for a (key, plan, day). Requests and messages each
/// take one unit of the quota; they are reported apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageCounts {
    /// Admitted requests.
    #[serde(rename = "count")]
    pub requests: u64,
    /// WebSocket messages delivered, in metered units (each message
    /// ceil(bytes / 32 KiB), at least 1).
    pub messages: u64,
    /// WebSocket messages delivered, in number: one quota unit each.
    pub message_count: u64,
    /// ceil(seconds open / 60) of each WebSocket connection closed.
    pub connection_minutes: u64,
}

impl UsageCounts {
    pub fn requests(n: u64) -> Self {
        Self {
            requests: n,
            ..Self::default()
        }
    }

    /// Units of the quota these took: requests and messages together.
    pub fn quota_units(&self) -> u64 {
        self.requests + self.message_count
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl std::ops::AddAssign for UsageCounts {
    fn add_assign(&mut self, o: Self) {
        self.requests += o.requests;
        self.messages += o.messages;
        self.message_count += o.message_count;
        self.connection_minutes += o.connection_minutes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(format_day(0), "1970-01-01");
        let d = parse_day("2026-11-23").unwrap();
        assert_eq!(format_day(d), "2026-11-23");
        assert_eq!(civil(d), (2026, 11, 23));
        assert!(parse_day("2026-02-30").is_none());
        assert!(parse_day("2026-13-01").is_none());
        assert!(parse_day("garbage").is_none());
        // 2026-11-23 is a Monday.
        assert_eq!(period_start(QuotaPeriod::Week, d), d);
        assert_eq!(period_start(QuotaPeriod::Week, d + 6), d);
        assert_eq!(period_start(QuotaPeriod::Week, d + 7), d + 7);
        assert_eq!(
            format_day(period_start(QuotaPeriod::Month, d)),
            "2026-11-01"
        );
        assert_eq!(format_day(period_end(QuotaPeriod::Month, d)), "2026-12-01");
        let dec = parse_day("2026-12-31").unwrap();
        assert_eq!(
            format_day(period_end(QuotaPeriod::Month, dec)),
            "2027-01-01"
        );
        assert_eq!(period_end(QuotaPeriod::Day, d), d + 1);
        let leap = parse_day("2028-02-29").unwrap();
        assert_eq!(
            format_day(period_end(QuotaPeriod::Month, leap)),
            "2028-03-01"
        );
    }

    #[test]
    fn usage_items_from_before_websockets_still_decode() {
        let old: UsageItem =
            serde_json::from_str(r#"{"key":"k","plan":"p","day":3,"count":5}"#).unwrap();
        assert_eq!(old.counts, UsageCounts::requests(5));
        let mut c = old.counts;
        c += UsageCounts {
            messages: 9,
            message_count: 2,
            connection_minutes: 4,
            ..UsageCounts::default()
        };
        assert_eq!(c.quota_units(), 7, "requests and messages take the quota");
        let item = UsageItem { counts: c, ..old };
        let back: UsageItem = serde_json::from_slice(&serde_json::to_vec(&item).unwrap()).unwrap();
        assert_eq!(back, item);
    }
}
