//! Durations as users write them in specs: `90s`, `15m`, `1h30m` (a subset of Go's format).

use std::time::Duration;

/// Schema pattern of any duration field: one or more `<digits><h|m|s>` parts.
pub const DURATION_PATTERN: &str = r"^([0-9]+[hms])+$";
/// Schema pattern of `checkInterval`: a duration with a non-zero hour or minute part, i.e. at least 1m.
pub const INTERVAL_PATTERN: &str = r"^([0-9]+[hms])*0*[1-9][0-9]*[hm]([0-9]+[hms])*$";

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid duration {input:?}: use digits followed by h, m or s, e.g. 15m or 1h30m")]
pub struct DurationError {
    input: String,
}

/// Parses `1h30m`, `15m`, `90s`. The API server already enforces the pattern; this is the
/// controller's own check for objects written before the schema or through a lax cluster.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        input: input.to_owned(),
    };
    if input.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in input.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(err()),
        };
        let n: u64 = digits.parse().map_err(|_| err())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_combined_units() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "15", "m", "1d", "1.5h", "-1m", "1h 30m"] {
            assert!(parse_duration(bad).is_err(), "{bad} should fail");
        }
    }
}
