//! UTC calendar days: the partition unit of both metadata stores.
//!
//! A [`UtcDay`] is a whole number of days since 1970-01-01 (UTC). It names the
//! SQLite day file (`events-2026-11-23.sqlite`) and the PostgreSQL partition
//! (`georelay_events_20261123`). Conversions use Howard Hinnant's civil-date
//! algorithms, so no calendar crate is needed.

use std::fmt;

/// Milliseconds in one UTC day (UTC has no leap seconds in Unix time).
pub const DAY_MS: u64 = 86_400_000;

/// A UTC calendar day, counted from 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcDay(u32);

impl UtcDay {
    /// The day that contains `unix_ms`.
    pub fn of_unix_ms(unix_ms: u64) -> Self {
        Self(u32::try_from(unix_ms / DAY_MS).unwrap_or(u32::MAX))
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(self) -> u32 {
        self.0
    }

    /// The first millisecond of the day.
    pub fn start_ms(self) -> u64 {
        u64::from(self.0) * DAY_MS
    }

    /// The first millisecond of the next day (exclusive end of this one).
    pub fn end_ms(self) -> u64 {
        self.start_ms() + DAY_MS
    }

    /// The day from a calendar date; `None` for dates before 1970 or invalid
    /// month/day numbers.
    pub fn from_ymd(year: u32, month: u32, day: u32) -> Option<Self> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        let year = i64::from(year) - i64::from(month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let shifted_month = (i64::from(month) + 9) % 12;
        let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        let days = era * 146_097 + day_of_era - 719_468;
        u32::try_from(days).ok().map(Self)
    }

    /// The calendar date `(year, month, day)`.
    pub fn ymd(self) -> (u32, u32, u32) {
        let days = i64::from(self.0) + 719_468;
        let era = days.div_euclid(146_097);
        let day_of_era = days - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let shifted_month = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
        let month = if shifted_month < 10 {
            shifted_month + 3
        } else {
            shifted_month - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        // All three values are small and non-negative for days >= 0.
        (year as u32, month as u32, day as u32)
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse_iso(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '-');
        let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
        if year.len() != 4 || month.len() != 2 || day.len() != 2 {
            return None;
        }
        Self::from_ymd(year.parse().ok()?, month.parse().ok()?, day.parse().ok()?)
    }

    /// The compact form `YYYYMMDD` used in PostgreSQL partition names.
    pub fn compact(self) -> String {
        let (year, month, day) = self.ymd();
        format!("{year:04}{month:02}{day:02}")
    }

    /// Parses the compact form `YYYYMMDD`.
    pub fn parse_compact(text: &str) -> Option<Self> {
        if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::from_ymd(
            text[..4].parse().ok()?,
            text[4..6].parse().ok()?,
            text[6..].parse().ok()?,
        )
    }
}

impl fmt::Display for UtcDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.ymd();
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_convert_both_ways() {
        assert_eq!(UtcDay::of_unix_ms(0).to_string(), "1970-01-01");
        // 2000-02-29T12:00:00Z
        let leap = UtcDay::of_unix_ms(951_825_600_000);
        assert_eq!(leap.to_string(), "2000-02-29");
        assert_eq!(UtcDay::parse_iso("2000-02-29"), Some(leap));
        assert_eq!(leap.compact(), "20000229");
        assert_eq!(UtcDay::parse_compact("20000229"), Some(leap));
        assert_eq!(UtcDay::parse_iso("2001-02-29"), None);
        assert_eq!(UtcDay::parse_iso("1969-12-31"), None);
        assert_eq!(UtcDay::parse_iso("2026-13-01"), None);
    }

    #[test]
    fn every_day_for_centuries_round_trips() {
        let mut previous: Option<(u32, u32, u32)> = None;
        for days in 0..(400 * 366) {
            let day = UtcDay(days);
            let (y, m, d) = day.ymd();
            assert_eq!(UtcDay::from_ymd(y, m, d), Some(day));
            assert_eq!(UtcDay::parse_iso(&day.to_string()), Some(day));
            if let Some(before) = previous {
                assert!((y, m, d) > before, "dates increase");
            }
            previous = Some((y, m, d));
        }
    }

    #[test]
    fn day_bounds_contain_the_instant() {
        let at = 1_795_000_000_123;
        let day = UtcDay::of_unix_ms(at);
        assert!(day.start_ms() <= at && at < day.end_ms());
        assert_eq!(day.end_ms() - day.start_ms(), DAY_MS);
    }
}
