//! Parsing durations written on the command line (`200ms`, `2s`, `1.5s`, `1m`, `1h`) and the
//! bound every duration from a user, a file or a socket is held to.

use std::time::Duration;

/// The longest duration any setting may have: 30 days. Timeouts, intervals and delays longer than
/// that are mistakes, and bounding them keeps every `Instant + Duration` and millisecond count far
/// from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3_600);

/// How [`MAX_DURATION`] reads in messages.
pub const MAX_DURATION_TEXT: &str = "720h, 30 days";

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h`. A unit is required, so `5` is refused
/// rather than guessed; so is anything longer than [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{text}' has no unit (write e.g. 200ms, 2s, 1m)"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (write e.g. 200ms, 2s, 1m)"))?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit '{unit}' (use ms, s, m or h)"
            ))
        }
    };
    let duration =
        Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| too_long(text))?;
    bounded(duration).map_err(|_| too_long(text))
}

/// `duration` if it is at most [`MAX_DURATION`].
pub fn bounded(duration: Duration) -> Result<Duration, String> {
    if duration > MAX_DURATION {
        Err(format!(
            "{} is too long (at most {MAX_DURATION_TEXT})",
            crate::core::exit::human(duration)
        ))
    } else {
        Ok(duration)
    }
}

/// A count of milliseconds (from a file or a socket) as a duration, at most [`MAX_DURATION`].
pub fn from_millis(ms: u64) -> Result<Duration, String> {
    if ms > millis(MAX_DURATION) {
        Err(format!("{ms} ms is too long (at most {MAX_DURATION_TEXT})"))
    } else {
        Ok(Duration::from_millis(ms))
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX` (never reached for a bounded one).
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn too_long(text: &str) -> String {
    format!("'{text}' is too long (at most {MAX_DURATION_TEXT})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("720h"), Ok(MAX_DURATION));
    }

    #[test]
    fn refuses_the_rest_with_a_reason() {
        for bad in ["5", "", "ms", "5parsecs", "1.2.3s", "-1s", "s5"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
    }

    #[test]
    fn refuses_durations_past_the_bound() {
        for huge in [
            "721h",
            "4000000000000000h",
            "18446744073709551616ms",
            "99999999999999999999999999999999999999999999s",
        ] {
            let err = parse_duration(huge).expect_err(huge);
            assert!(
                err.contains("too long") || err.contains("not a duration"),
                "{huge}: {err}"
            );
        }
        assert!(from_millis(millis(MAX_DURATION)).is_ok());
        assert!(from_millis(millis(MAX_DURATION) + 1).is_err());
        assert!(from_millis(u64::MAX).is_err());
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
