//! Record times: RFC 3339 UTC with milliseconds, formatted without a date library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Current time as RFC 3339 UTC with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    format_rfc3339_millis(SystemTime::now())
}

/// Formats without a date library; times before 1970 clamp to the epoch.
pub(crate) fn format_rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn formats_rfc3339_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_007); // leap day 2024
        assert_eq!(format_rfc3339_millis(t), "2024-02-29T23:59:59.007Z");
        assert_eq!(
            format_rfc3339_millis(UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_rfc3339_millis(t), "2000-02-29T00:00:00.000Z");
    }
}
