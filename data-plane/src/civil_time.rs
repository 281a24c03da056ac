//! UTC calendar time from a `SystemTime`, without a date crate: the access
//! log's RFC 3339 stamps, AWS's event times, SigV4's dates.

use std::time::{SystemTime, UNIX_EPOCH};

/// (year, month, day, hour, minute, second) in UTC.
pub fn civil(t: SystemTime) -> (i64, u64, u64, u64, u64, u64) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60)
}

/// `12/Mar/2020:19:03:58 +0000`, the time format of AWS's events.
pub fn clf(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day, h, m, s) = civil(t);
    format!(
        "{day:02}/{}/{year}:{h:02}:{m:02}:{s:02} +0000",
        MONTHS[(month - 1) as usize]
    )
}

/// `2026-12-03T06:40:00Z` for Unix milliseconds (to the second).
pub fn rfc3339_ms(ms: u64) -> String {
    let (year, month, day, h, m, s) = civil(UNIX_EPOCH + std::time::Duration::from_millis(ms));
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn calendar_dates_and_aws_times() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(civil(at(0)), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(at(951_782_400)), (2000, 2, 29, 0, 0, 0));
        assert_eq!(clf(at(0)), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf(at(1_583_348_638)), "04/Mar/2020:19:03:58 +0000");
    }
}
