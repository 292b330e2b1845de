//! Durations as users write them in specs: `90s`, `15m`, `1h30m` (a subset of Go's format).

use std::time::Duration;

/// Schema pattern of any duration field: one or more `<digits><h|m|s>` parts.
pub const DURATION_PATTERN: &str = r"^([0-9]+[hms])+$";
/// Schema pattern of `checkInterval`: a duration with a non-zero hour or minute part, i.e. at least 1m.
pub const INTERVAL_PATTERN: &str = r"^([0-9]+[hms])*0*[1-9][0-9]*[hm]([0-9]+[hms])*$";

/// The documented range of one spec duration field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DurationRange {
    /// Path of the field in the spec, as users write it (`checkInterval`, `refresh.before`).
    pub field: &'static str,
    pub min: Duration,
    pub max: Duration,
}

/// `spec.checkInterval`: 1 minute to 7 days.
pub const CHECK_INTERVAL_RANGE: DurationRange = DurationRange {
    field: "checkInterval",
    min: Duration::from_secs(60),
    max: Duration::from_secs(168 * 3600),
};
/// `spec.refresh.before`: 0 to 90 days.
pub const REFRESH_BEFORE_RANGE: DurationRange = DurationRange {
    field: "refresh.before",
    min: Duration::ZERO,
    max: Duration::from_secs(2160 * 3600),
};
/// `spec.refresh.keepAlive`: 1 hour to 90 days.
pub const KEEP_ALIVE_RANGE: DurationRange = DurationRange {
    field: "refresh.keepAlive",
    min: Duration::from_secs(3600),
    max: Duration::from_secs(2160 * 3600),
};
/// `spec.refresh.maxAge`: 1 hour to 366 days.
pub const MAX_AGE_RANGE: DurationRange = DurationRange {
    field: "refresh.maxAge",
    min: Duration::from_secs(3600),
    max: Duration::from_secs(8784 * 3600),
};

/// `spec.refreshTokenLifetime` of a provider: 1 hour to 366 days.
pub const REFRESH_TOKEN_LIFETIME_RANGE: DurationRange = DurationRange {
    field: "refreshTokenLifetime",
    min: Duration::from_secs(3600),
    max: Duration::from_secs(8784 * 3600),
};

impl DurationRange {
    /// Parses `input` and checks it against the range; the error names the field and the range.
    pub fn parse(&self, input: &str) -> Result<Duration, String> {
        let d = parse_duration(input).map_err(|e| format!("spec.{}: {e}", self.field))?;
        if d < self.min || d > self.max {
            return Err(format!(
                "spec.{} {input:?} is out of range: allowed from {} to {}",
                self.field,
                human(self.min),
                human(self.max)
            ));
        }
        Ok(d)
    }
}

/// A duration the way the docs write it (`0s`, `1m`, `168h`).
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

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
    let mut rest = input;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let unit = match rest[end..].chars().next() {
            Some('h') => 3600,
            Some('m') => 60,
            Some('s') => 1,
            _ => return Err(err()),
        };
        let n: u64 = rest[..end].parse().map_err(|_| err())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        rest = &rest[end + 1..];
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
    fn ranges_name_the_field_and_the_bounds() {
        assert_eq!(
            CHECK_INTERVAL_RANGE.parse("15m"),
            Ok(Duration::from_secs(900))
        );
        let e = CHECK_INTERVAL_RANGE.parse("99999999999h").unwrap_err();
        assert!(
            e.contains("spec.checkInterval") && e.contains("1m to 168h"),
            "{e}"
        );
        let e = CHECK_INTERVAL_RANGE.parse("30s").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert!(CHECK_INTERVAL_RANGE.parse("168h").is_ok());
        assert!(CHECK_INTERVAL_RANGE.parse("168h1s").is_err());
        assert_eq!(REFRESH_BEFORE_RANGE.parse("0s"), Ok(Duration::ZERO));
        assert!(REFRESH_BEFORE_RANGE.parse("2161h").is_err());
        let e = MAX_AGE_RANGE.parse("1d").unwrap_err();
        assert!(e.contains("spec.refresh.maxAge"), "{e}");
        // Far past u64 seconds: refused, never a panic.
        assert!(
            CHECK_INTERVAL_RANGE
                .parse("99999999999999999999999h")
                .is_err()
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", "15", "m", "1d", "1.5h", "-1m", "1h 30m", "h1", "1hm", "1m5", "+1m", "1é",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should fail");
        }
    }
}
