//! Sync schedules: parsing cron expressions and presets with their time zone, and which tick of a
//! schedule is due at a given moment (jitter included). Pure: the clock is always an argument.

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A schedule may fire at most this often: n8n workflows take longer than this to run.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "the schedule is empty; give a cron expression or a preset (@hourly, @daily, every 15m)"
    )]
    Empty,
    #[error("schedule `{expression}` is not valid: {reason}")]
    Invalid { expression: String, reason: String },
    #[error("unknown time zone `{0}`; use an IANA name such as `Europe/Berlin` or `UTC`")]
    TimeZone(String),
    #[error(
        "schedule `{expression}` fires {secs} s apart; a sync schedule may fire at most once a minute"
    )]
    TooFrequent { expression: String, secs: i64 },
}

impl ScheduleError {
    fn invalid(expression: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            expression: expression.to_string(),
            reason: reason.into(),
        }
    }
}

/// A validated schedule: the expression as the operator wrote it, compiled, in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    /// The expression in the `cron` crate's syntax (seconds first), presets and intervals
    /// spelled out.
    cron_text: String,
    cron: cron::Schedule,
    tz: Tz,
}

impl Schedule {
    /// Accepts a cron expression of 5 fields (minute first, day of week by name), 6 or 7 fields
    /// (the `cron` crate's syntax: seconds first, optional year), `@hourly`, `@daily`,
    /// `@weekly`, `@monthly`, `@yearly`, or `every N m|h|d` for N that divides the hour or day.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let tz = parse_timezone(timezone)?;
        let trimmed = expression.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let cron_text = to_cron_syntax(trimmed)?;
        let cron = cron::Schedule::from_str(&cron_text)
            .map_err(|e| ScheduleError::invalid(trimmed, e.to_string()))?;
        let this = Self {
            expression: trimmed.to_string(),
            cron_text,
            cron,
            tz,
        };
        let upcoming: Vec<DateTime<Utc>> =
            this.cron.upcoming(tz).take(6).map(|t| t.to_utc()).collect();
        if upcoming.is_empty() {
            return Err(ScheduleError::invalid(trimmed, "it never fires"));
        }
        if let Some(gap) = upcoming
            .windows(2)
            .map(|w| w[1] - w[0])
            .min()
            .filter(|gap| gap.num_seconds() < MIN_INTERVAL.as_secs() as i64)
        {
            return Err(ScheduleError::TooFrequent {
                expression: trimmed.to_string(),
                secs: gap.num_seconds(),
            });
        }
        Ok(this)
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The latest tick in `(after, until]`, if any. Ticks are computed in the schedule's time
    /// zone (so `@daily` in Europe/Berlin is Berlin midnight across DST changes), returned in UTC.
    pub fn latest_tick(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if until <= after {
            return None;
        }
        // `after` is exclusive: start just past `until` and step back once.
        let start = (until + chrono::Duration::milliseconds(1)).with_timezone(&self.tz);
        self.cron
            .after(&start)
            .next_back()
            .map(|t| t.to_utc())
            .filter(|t| *t > after && *t <= until)
    }

    /// The schedule in words ("Every 15 minutes", "At 09:30 AM, Monday through Friday"), in its
    /// own time zone; `None` for what reads no better than the expression (seconds other than
    /// 0, a year field, days of week by number, which `cronspeak` counts from Sunday = 0 and the
    /// `cron` crate from Sunday = 1).
    pub fn describe(&self) -> Option<String> {
        let fields: Vec<&str> = self.cron_text.split_whitespace().collect();
        let [seconds, rest @ ..] = fields.as_slice() else {
            return None;
        };
        if *seconds != "0" || rest.len() != 5 || rest[4].chars().any(|c| c.is_ascii_digit()) {
            return None;
        }
        let five = rest.join(" ");
        // cronspeak's "At 0 minutes past the hour" for the commonest schedule of all.
        if five == "0 * * * *" {
            return Some("Every hour, on the hour".into());
        }
        cronspeak::describe(&five).ok()
    }

    /// The next `n` ticks after `after`.
    pub fn next_ticks(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.cron
            .after(&after.with_timezone(&self.tz))
            .take(n)
            .map(|t| t.to_utc())
            .collect()
    }

    /// The first tick after `after`.
    pub fn next_tick(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&after.with_timezone(&self.tz))
            .next()
            .map(|t| t.to_utc())
    }
}

pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::TimeZone(name.to_string()))
}

/// This integration's fixed offset within `max_secs`: the same on every scheduler replica (it
/// derives from the id alone), different between integrations.
pub fn jitter(integration_id: Uuid, max_secs: u32) -> Duration {
    if max_secs == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(integration_id.as_bytes());
    let n = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    Duration::from_secs(n % (u64::from(max_secs) + 1))
}

fn to_cron_syntax(expression: &str) -> Result<String, ScheduleError> {
    let lower = expression.to_ascii_lowercase();
    let preset = match lower.as_str() {
        "@hourly" => Some("0 0 * * * *"),
        "@daily" | "@midnight" => Some("0 0 0 * * *"),
        "@weekly" => Some("0 0 0 * * SUN"),
        "@monthly" => Some("0 0 0 1 * *"),
        "@yearly" | "@annually" => Some("0 0 0 1 1 *"),
        _ => None,
    };
    if let Some(p) = preset {
        return Ok(p.to_string());
    }
    if lower.starts_with('@') {
        return Err(ScheduleError::invalid(
            expression,
            "unknown preset; use @hourly, @daily, @weekly, @monthly or @yearly",
        ));
    }
    if let Some(rest) = lower.strip_prefix("every") {
        return every(expression, rest.trim());
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    match fields.len() {
        5 => {
            // Standard cron numbers Sunday 0 (Monday 1); the `cron` crate numbers Sunday 1. A
            // number would silently run on the wrong day, so five-field expressions take names.
            if fields[4].chars().any(|c| c.is_ascii_digit()) {
                return Err(ScheduleError::invalid(
                    expression,
                    "numeric days of week are ambiguous (standard cron counts Sunday as 0, \
                     the cron crate as 1); use names such as MON-FRI or SUN",
                ));
            }
            Ok(format!("0 {expression}"))
        }
        6 | 7 => Ok(expression.to_string()),
        n => Err(ScheduleError::invalid(
            expression,
            format!(
                "a cron expression has 5 fields (minute hour day-of-month month day-of-week) or \
                 6 (seconds first), not {n}"
            ),
        )),
    }
}

/// `every 15m`, `every 2 hours`, `every day`.
fn every(expression: &str, rest: &str) -> Result<String, ScheduleError> {
    let split = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (number, unit) = rest.split_at(split);
    let n: u32 = if number.is_empty() {
        1
    } else {
        number
            .parse()
            .map_err(|_| ScheduleError::invalid(expression, "the interval is not a number"))?
    };
    let unit = unit.trim();
    let fits = |whole: u32| n >= 1 && n <= whole && whole.is_multiple_of(n);
    match unit {
        "m" | "min" | "mins" | "minute" | "minutes" if n == 60 => Ok("0 0 * * * *".into()),
        "m" | "min" | "mins" | "minute" | "minutes" if fits(60) => Ok(format!("0 */{n} * * * *")),
        "h" | "hr" | "hrs" | "hour" | "hours" if n == 24 => Ok("0 0 0 * * *".into()),
        "h" | "hr" | "hrs" | "hour" | "hours" if fits(24) => Ok(format!("0 0 */{n} * * *")),
        "d" | "day" | "days" if n == 1 => Ok("0 0 0 * * *".into()),
        "m" | "min" | "mins" | "minute" | "minutes" | "h" | "hr" | "hrs" | "hour" | "hours"
        | "d" | "day" | "days" => Err(ScheduleError::invalid(
            expression,
            "the interval must divide the hour (1-60 minutes) or the day (1-24 hours) evenly; \
             use a cron expression for other intervals",
        )),
        _ => Err(ScheduleError::invalid(
            expression,
            "write intervals as `every 15m`, `every 2h` or `every day`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn presets_and_intervals_fire_where_expected() {
        let at = utc(2026, 3, 10, 10, 7);
        let hourly = Schedule::parse("@hourly", "UTC").unwrap();
        assert_eq!(hourly.next_tick(at), Some(utc(2026, 3, 10, 11, 0)));
        let quarter = Schedule::parse("every 15m", "UTC").unwrap();
        assert_eq!(quarter.next_tick(at), Some(utc(2026, 3, 10, 10, 15)));
        let two_hours = Schedule::parse("every 2 hours", "UTC").unwrap();
        assert_eq!(two_hours.next_tick(at), Some(utc(2026, 3, 10, 12, 0)));
        let daily = Schedule::parse("@daily", "UTC").unwrap();
        assert_eq!(daily.next_tick(at), Some(utc(2026, 3, 11, 0, 0)));
        assert_eq!(
            Schedule::parse("every 60m", "UTC").unwrap().next_tick(at),
            Some(utc(2026, 3, 10, 11, 0))
        );
    }

    #[test]
    fn schedules_read_in_words_when_words_say_it() {
        let words = |e: &str| Schedule::parse(e, "Europe/Berlin").unwrap().describe();
        assert_eq!(words("every 15m").as_deref(), Some("Every 15 minutes"));
        assert_eq!(
            words("30 9 * * MON-FRI").as_deref(),
            Some("At 09:30 AM, Monday through Friday")
        );
        assert_eq!(words("@hourly").as_deref(), Some("Every hour, on the hour"));
        assert_eq!(
            words("every 2h").as_deref(),
            Some("At minute 0, every 2 hours")
        );
        // Seconds, or a weekday by the cron crate's number, read no better than themselves.
        assert_eq!(words("30 0 * * * *"), None);
        assert_eq!(words("0 0 9 * * 2"), None);
        let at = utc(2026, 3, 10, 10, 7);
        assert_eq!(
            Schedule::parse("every 2h", "UTC")
                .unwrap()
                .next_ticks(at, 3),
            vec![
                utc(2026, 3, 10, 12, 0),
                utc(2026, 3, 10, 14, 0),
                utc(2026, 3, 10, 16, 0)
            ]
        );
    }

    #[test]
    fn five_and_six_field_expressions() {
        // 5 fields: minute first; weekdays by name.
        let s = Schedule::parse("30 9 * * MON-FRI", "UTC").unwrap();
        // 2026-03-14 is a Saturday: the next run is Monday 09:30.
        assert_eq!(
            s.next_tick(utc(2026, 3, 13, 10, 0)),
            Some(utc(2026, 3, 16, 9, 30))
        );
        // 6 fields: seconds first, as the cron crate writes them.
        let s = Schedule::parse("0 */30 * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_tick(utc(2026, 3, 13, 10, 1)),
            Some(utc(2026, 3, 13, 10, 30))
        );
    }

    #[test]
    fn time_zones_move_the_ticks() {
        let s = Schedule::parse("0 9 * * *", "Europe/Berlin").unwrap();
        // Winter: UTC+1.
        assert_eq!(
            s.next_tick(utc(2026, 1, 5, 0, 0)),
            Some(utc(2026, 1, 5, 8, 0))
        );
        // Summer: UTC+2.
        assert_eq!(
            s.next_tick(utc(2026, 7, 6, 0, 0)),
            Some(utc(2026, 7, 6, 7, 0))
        );
        assert_eq!(s.timezone(), chrono_tz::Europe::Berlin);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("* * *", "5 fields"),
            ("0 9 * * 1-5", "numeric days of week"),
            ("61 * * * *", "61"),
            ("@fortnightly", "unknown preset"),
            ("every 7m", "divide the hour"),
            ("every 5 parsecs", "every 15m"),
            ("* * * * * *", "at most once a minute"),
            ("*/10 * * * * *", "10 s apart"),
        ];
        for (expression, expected) in cases {
            let err = Schedule::parse(expression, "UTC").unwrap_err().to_string();
            assert!(
                err.to_lowercase().contains(&expected.to_lowercase()),
                "{expression:?}: {err}"
            );
        }
        let err = Schedule::parse("@daily", "Mars/Olympus").unwrap_err();
        assert_eq!(err, ScheduleError::TimeZone("Mars/Olympus".into()));
    }

    #[test]
    fn latest_tick_is_exclusive_of_after_and_inclusive_of_until() {
        let s = Schedule::parse("@hourly", "UTC").unwrap();
        let ten = utc(2026, 3, 10, 10, 0);
        assert_eq!(s.latest_tick(ten, ten), None);
        assert_eq!(
            s.latest_tick(ten - chrono::Duration::seconds(1), ten),
            Some(ten)
        );
        assert_eq!(s.latest_tick(ten, utc(2026, 3, 10, 10, 59)), None);
        // Three hours down: the latest of the missed ticks.
        assert_eq!(
            s.latest_tick(ten, utc(2026, 3, 10, 13, 20)),
            Some(utc(2026, 3, 10, 13, 0))
        );
    }

    #[test]
    fn jitter_is_stable_per_integration_and_bounded() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert_eq!(jitter(a, 300), jitter(a, 300));
        assert!(jitter(a, 300) <= Duration::from_secs(300));
        assert_eq!(jitter(a, 0), Duration::ZERO);
        let spread: std::collections::HashSet<_> = (0..50u128)
            .map(|i| jitter(Uuid::from_u128(i), 300))
            .collect();
        assert!(
            spread.len() > 30,
            "50 integrations share {} offsets",
            spread.len()
        );
        assert_ne!(jitter(a, 300), jitter(b, 300));
    }
}
