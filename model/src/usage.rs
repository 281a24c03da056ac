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

/// Admitted requests of one key under one plan on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageItem {
    pub key: String,
    pub plan: String,
    pub day: Day,
    pub count: u64,
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
}
