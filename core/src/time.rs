//! UTC time as epoch milliseconds, and RFC 3339 on the wire.
//!
//! Inputs accept any offset (normalised to UTC) and a naive timestamp without offset (read as UTC,
//! which is what the Python SDK sends for a naive `datetime`). Output is always `...Z`, with
//! milliseconds only when they are not zero.

use alloc::string::String;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

pub const SECOND_MS: i64 = 1_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Why a timestamp string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// Not RFC 3339 (nor a naive `YYYY-MM-DDTHH:MM:SS[.fff]`).
    Malformed,
    /// The year is not four digits (0001..=9999 is all RFC 3339 can carry anyway).
    YearOutOfRange,
}

impl core::fmt::Display for TimeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TimeError::Malformed => f.write_str("must be an RFC 3339 timestamp"),
            TimeError::YearOutOfRange => f.write_str("must have a four-digit year"),
        }
    }
}

/// Parses an RFC 3339 timestamp (any offset, or none = UTC) into epoch milliseconds.
/// Sub-millisecond digits are truncated towards the past.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, TimeError> {
    let utc: DateTime<Utc> = match DateTime::parse_from_rfc3339(s) {
        Ok(dt) => dt.with_timezone(&Utc),
        Err(_) => parse_naive(s)?.and_utc(),
    };
    let year = chrono::Datelike::year(&utc);
    if !(1..=9999).contains(&year) {
        return Err(TimeError::YearOutOfRange);
    }
    Ok(utc.timestamp_millis())
}

fn parse_naive(s: &str) -> Result<NaiveDateTime, TimeError> {
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(dt);
        }
    }
    Err(TimeError::Malformed)
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
pub fn format_rfc3339_ms(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        // Out of chrono's range: only reachable with absurd inputs that parsing never produces.
        None => String::from("invalid-time"),
    }
}

/// The unit of a relative date (`RelativeDate`: a package's offsets and durations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RelativeUnit {
    Days,
    Weeks,
    Months,
    Years,
}

/// `from_ms` moved by `value` units (`value >= 0`): days and weeks exactly, months and years
/// on the calendar (UTC) with the day clamped to the month's last (01-31 + 1 month = 02-28 or
/// 02-29). `None` on overflow or a negative `value`.
pub fn add_relative(from_ms: i64, value: i64, unit: RelativeUnit) -> Option<i64> {
    let value = u32::try_from(value).ok()?;
    let days = |n: u32| from_ms.checked_add(i64::from(n).checked_mul(DAY_MS)?);
    let months = |n: u32| {
        let t = DateTime::<Utc>::from_timestamp_millis(from_ms)?;
        Some(
            t.checked_add_months(chrono::Months::new(n))?
                .timestamp_millis(),
        )
    };
    match unit {
        RelativeUnit::Days => days(value),
        RelativeUnit::Weeks => days(value.checked_mul(7)?),
        RelativeUnit::Months => months(value),
        RelativeUnit::Years => months(value.checked_mul(12)?),
    }
}

/// The start of the UTC hour containing `ms`. In the first, partial hour of the `i64` range (far
/// outside the years 1..=9999 validation allows) that start is not representable, and the result
/// is `i64::MIN`, which still contains `ms` in `[floor, floor + 1h)`.
pub fn hour_floor(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS).saturating_mul(HOUR_MS)
}

/// True when `ms` falls exactly on a UTC hour boundary.
pub fn is_hour_aligned(ms: i64) -> bool {
    ms.rem_euclid(HOUR_MS) == 0
}

#[cfg(test)]
mod tests {

    #[test]
    fn relative_dates_move_on_the_calendar() {
        let t = |s: &str| parse_rfc3339_ms(s).unwrap();
        let jan31 = t("2024-01-31T00:00:00Z");
        assert_eq!(
            add_relative(jan31, 1, RelativeUnit::Months),
            Some(t("2024-02-29T00:00:00Z"))
        );
        assert_eq!(
            add_relative(jan31, 13, RelativeUnit::Months),
            Some(t("2025-02-28T00:00:00Z"))
        );
        assert_eq!(
            add_relative(jan31, 1, RelativeUnit::Years),
            Some(t("2025-01-31T00:00:00Z"))
        );
        assert_eq!(
            add_relative(jan31, 2, RelativeUnit::Weeks),
            Some(t("2024-02-14T00:00:00Z"))
        );
        assert_eq!(add_relative(jan31, 0, RelativeUnit::Days), Some(jan31));
        assert_eq!(add_relative(jan31, -1, RelativeUnit::Days), None);
        assert_eq!(
            add_relative(jan31, i64::from(u32::MAX), RelativeUnit::Years),
            None
        );
    }

    use super::*;

    #[test]
    fn parses_offsets_naive_and_millis() {
        let z = parse_rfc3339_ms("2024-09-01T00:00:00Z").unwrap();
        assert_eq!(z, 1_725_148_800_000);
        assert_eq!(parse_rfc3339_ms("2024-09-01T02:00:00+02:00").unwrap(), z);
        assert_eq!(parse_rfc3339_ms("2024-08-31T19:00:00-05:00").unwrap(), z);
        assert_eq!(parse_rfc3339_ms("2024-09-01T00:00:00.000Z").unwrap(), z);
        assert_eq!(parse_rfc3339_ms("2024-09-01T00:00:00.000").unwrap(), z);
        assert_eq!(
            parse_rfc3339_ms("2024-09-01T00:00:00.250Z").unwrap(),
            z + 250
        );
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "yesterday",
            "2024-09-01",
            "2024-13-01T00:00:00Z",
            "12024-09-01T00:00:00Z",
        ] {
            assert!(parse_rfc3339_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_utc_with_z() {
        assert_eq!(format_rfc3339_ms(1_725_148_800_000), "2024-09-01T00:00:00Z");
        assert_eq!(
            format_rfc3339_ms(1_725_148_800_250),
            "2024-09-01T00:00:00.250Z"
        );
    }

    #[test]
    fn hours() {
        assert_eq!(hour_floor(HOUR_MS + 5), HOUR_MS);
        assert_eq!(hour_floor(-1), -HOUR_MS);
        assert!(is_hour_aligned(3 * HOUR_MS));
        assert!(!is_hour_aligned(3 * HOUR_MS + 1));
    }

    /// Found by fuzzing (`metric_match`): an event at `i64::MIN` overflowed the multiplication.
    #[test]
    fn hour_floor_at_the_ends_of_the_range() {
        assert_eq!(hour_floor(i64::MIN), i64::MIN);
        assert_eq!(hour_floor(i64::MIN + 1), i64::MIN);
        // Division truncates towards zero: the smallest multiple of an hour that is >= MIN.
        let first_whole_hour = i64::MIN / HOUR_MS * HOUR_MS;
        assert_eq!(hour_floor(first_whole_hour - 1), i64::MIN);
        assert_eq!(hour_floor(first_whole_hour), first_whole_hour);
        assert_eq!(
            hour_floor(i64::MAX),
            i64::MAX - i64::MAX.rem_euclid(HOUR_MS)
        );
    }
}
