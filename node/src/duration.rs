//! Parses durations written as a number and a unit (`250ms`, `5s`, `10m`, `1h`, `2d`; `0` alone
//! is zero), for command-line flags and the config file.

use std::time::Duration;

/// Parses `text` into a duration, or says what a valid one looks like.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!(
            "bad duration {text:?}: expected a number with a unit, like 5ms, 30s, 10m, 1h or 2d"
        )
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => {
            return Err(format!(
                "bad duration {text:?}: the unit must be ms, s, m, h or d"
            ))
        }
    };
    Ok(d)
}

/// The longest debounce accepted. A debounce is a quiet time of milliseconds; anything
/// longer than this is a mistake (and ten times it must still be a representable time).
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(3600);

/// Why a debounce was refused: it is longer than [`MAX_DEBOUNCE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebounceTooLong;

impl std::fmt::Display for DebounceTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("is longer than the most a debounce may be, 1h")
    }
}

impl std::error::Error for DebounceTooLong {}

/// Checks a debounce against [`MAX_DEBOUNCE`].
pub fn check_debounce(d: Duration) -> Result<Duration, DebounceTooLong> {
    if d > MAX_DEBOUNCE {
        return Err(DebounceTooLong);
    }
    Ok(d)
}

/// Parses a debounce: a duration of at most [`MAX_DEBOUNCE`] (for `--debounce`).
pub fn parse_debounce(text: &str) -> Result<Duration, String> {
    check_debounce(parse(text)?).map_err(|e| format!("debounce {text:?} {e}"))
}

/// How long after its first change a batch is sent at the latest, however busy the folder:
/// 50 ms, or ten times the debounce if that is longer.
pub fn batch_deadline(debounce: Duration) -> Duration {
    debounce.saturating_mul(10).max(Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert!(parse("5").is_err());
        assert!(parse("fast").is_err());
        assert!(parse("5 days").is_err());
    }

    #[test]
    fn a_debounce_is_at_most_an_hour_and_its_batch_deadline_never_overflows() {
        assert_eq!(parse_debounce("1h"), Ok(MAX_DEBOUNCE));
        let err = parse_debounce("99999999999999d").unwrap_err();
        assert!(
            err.contains("99999999999999d") && err.contains("1h"),
            "{err}"
        );
        assert!(parse_debounce("fast").is_err());
        assert_eq!(
            batch_deadline(Duration::from_millis(2)),
            Duration::from_millis(50)
        );
        assert_eq!(
            batch_deadline(Duration::from_secs(1)),
            Duration::from_secs(10)
        );
        assert_eq!(batch_deadline(Duration::MAX), Duration::MAX);
    }
}
