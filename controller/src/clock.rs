//! Wall-clock instants as records and `plexusd inspect` show them: RFC 3339 in UTC, to the
//! millisecond, with no time-zone database and no dependency.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch; written as `2026-12-02T14:06:36.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

const MS_PER_DAY: u64 = 86_400_000;

impl Timestamp {
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// A time before the epoch (a clock set far back) counts as the epoch.
    pub fn from_system(time: SystemTime) -> Self {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    pub fn millis(self) -> u64 {
        self.0
    }

    /// How long before `now` this was; zero when it is in the future (a clock step).
    pub fn age(self, now: Timestamp) -> Duration {
        Duration::from_millis(now.0.saturating_sub(self.0))
    }

    /// Parses what `Display` writes: `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.strip_suffix('Z')?;
        let (date, time) = text.split_once('T')?;
        let mut date = date.splitn(3, '-').map(str::parse::<u64>);
        let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
        let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
        let mut clock = clock.splitn(3, ':').map(str::parse::<u64>);
        let (hour, minute, second) = (
            clock.next()?.ok()?,
            clock.next()?.ok()?,
            clock.next()?.ok()?,
        );
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
            return None;
        }
        if hour > 23 || minute > 59 || second > 60 || fraction.is_empty() {
            return None;
        }
        let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
        let millis: u64 = digits.parse().ok()?;
        let days = days_from_civil(year, month, day);
        Some(Self(
            days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + millis,
        ))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(self.0 / MS_PER_DAY);
        let in_day = self.0 % MS_PER_DAY;
        let (seconds, millis) = (in_day / 1000, in_day % 1000);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not an RFC 3339 UTC time"))
        })
    }
}

/// A duration as operators read it: `850µs`, `12.3ms`, `4.20s`, `3m05s`, `2h07m`, `3d04h`.
pub fn human_duration(duration: Duration) -> String {
    let micros = duration.as_micros();
    let seconds = duration.as_secs();
    match seconds {
        _ if micros < 1000 => format!("{micros}µs"),
        0 => format!("{:.1}ms", micros as f64 / 1000.0),
        1..60 => format!("{:.2}s", duration.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..86_400 => format!("{}h{:02}m", seconds / 3600, seconds / 60 % 60),
        _ => format!("{}d{:02}h", seconds / 86_400, seconds / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_are_written_in_rfc_3339_utc() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_709_210_096_789, "2024-02-29T12:34:56.789Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ];
        for (millis, text) in cases {
            assert_eq!(Timestamp::from_millis(millis).to_string(), text);
            assert_eq!(Timestamp::parse(text), Some(Timestamp::from_millis(millis)));
        }
    }

    #[test]
    fn every_day_for_a_few_centuries_round_trips() {
        for day in (0..200 * 366).step_by(7) {
            let stamp = Timestamp::from_millis(day * MS_PER_DAY + 45_296_007);
            assert_eq!(Timestamp::parse(&stamp.to_string()), Some(stamp), "{stamp}");
        }
    }

    #[test]
    fn parse_takes_whole_seconds_and_short_fractions_and_refuses_the_rest() {
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:01Z"),
            Some(Timestamp::from_millis(1000))
        );
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:01.5Z"),
            Some(Timestamp::from_millis(1500))
        );
        for bad in [
            "",
            "1970-01-01T00:00:00",
            "1970-13-01T00:00:00Z",
            "1970-01-01T24:00:00Z",
            "1970-01-01 00:00:00Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00.Z",
            "yesterday",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_timestamp_is_a_json_string() {
        let stamp = Timestamp::from_millis(1_709_210_096_789);
        let json = serde_json::to_string(&stamp).unwrap();
        assert_eq!(json, "\"2024-02-29T12:34:56.789Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), stamp);
        assert!(serde_json::from_str::<Timestamp>("\"soon\"").is_err());
    }

    #[test]
    fn durations_read_at_a_glance() {
        let cases = [
            (Duration::from_micros(850), "850µs"),
            (Duration::from_micros(12_345), "12.3ms"),
            (Duration::from_millis(4_200), "4.20s"),
            (Duration::from_secs(185), "3m05s"),
            (Duration::from_secs(2 * 3600 + 7 * 60), "2h07m"),
            (Duration::from_secs(3 * 86_400 + 4 * 3600), "3d04h"),
        ];
        for (duration, text) in cases {
            assert_eq!(human_duration(duration), text);
        }
        let earlier = Timestamp::from_millis(1000);
        assert_eq!(
            earlier.age(Timestamp::from_millis(3500)),
            Duration::from_millis(2500)
        );
        assert_eq!(Timestamp::from_millis(5000).age(earlier), Duration::ZERO);
    }
}
