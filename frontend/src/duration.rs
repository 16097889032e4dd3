//! Go's `time.ParseDuration`, for HEALTHCHECK's `--interval=30s` and friends.

use std::time::Duration;

/// Parses a Go duration (`300ms`, `1h30m`, `1.5s`, `-2s`, `0`). Returns the
/// duration in nanoseconds, which may be negative.
pub fn parse_go_duration_nanos(s: &str) -> Result<i128, String> {
    let err = || "time: invalid duration".to_owned();
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    crate::quote::go_quote(s)
                ));
            }
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    crate::quote::go_quote(unit),
                    crate::quote::go_quote(s)
                ));
            }
        };
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err())?
        };
        let mut v = int.checked_mul(scale).ok_or_else(err)?;
        if !frac_part.is_empty() {
            let digits = frac_part.len().min(30) as u32;
            let frac: i128 = frac_part[..digits as usize].parse().map_err(|_| err())?;
            v += frac * scale / 10i128.pow(digits);
        }
        total = total.checked_add(v).ok_or_else(err)?;
        if total > i128::from(i64::MAX) {
            return Err(err());
        }
    }
    Ok(if neg { -total } else { total })
}

/// A non-negative Go duration.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let n = parse_go_duration_nanos(s)?;
    if n < 0 {
        return Err("durations must not be negative".to_owned());
    }
    Ok(Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX)))
}

/// Go's `time.Duration.String` of `nanos` (`1m30s`, `1.5s`, `500ms`, `0s`).
pub fn go_duration_string(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_owned();
    }
    let neg = nanos < 0;
    let u = nanos.unsigned_abs();
    let frac = |v: u64, prec: u32| -> (String, u64) {
        let scale = 10u64.pow(prec);
        let (int, f) = (v / scale, v % scale);
        if f == 0 {
            return (String::new(), int);
        }
        let digits = format!("{f:0width$}", width = prec as usize);
        (format!(".{}", digits.trim_end_matches('0')), int)
    };
    let mut out = if u < 1_000_000_000 {
        let (unit, prec) = match u {
            0..1_000 => ("ns", 0),
            1_000..1_000_000 => ("µs", 3),
            _ => ("ms", 6),
        };
        let (f, int) = frac(u, prec);
        format!("{int}{f}{unit}")
    } else {
        let (f, secs) = frac(u, 9);
        let mut s = format!("{}{f}s", secs % 60);
        let mins = secs / 60;
        if mins > 0 {
            s = format!("{}m{s}", mins % 60);
            let hours = mins / 60;
            if hours > 0 {
                s = format!("{hours}h{s}");
            }
        }
        s
    };
    if neg {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ns = |s: &str| parse_go_duration_nanos(s);
        assert_eq!(ns("0"), Ok(0));
        assert_eq!(ns("30s"), Ok(30_000_000_000));
        assert_eq!(ns("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(ns("1.5s"), Ok(1_500_000_000));
        assert_eq!(ns(".5ms"), Ok(500_000));
        assert_eq!(ns("-2s"), Ok(-2_000_000_000));
        assert_eq!(ns("100µs"), Ok(100_000));
        assert!(ns("").is_err());
        assert!(ns("10").is_err());
        assert!(ns("1x").is_err());
        assert!(ns("s").is_err());
        assert!(ns("1.s.").is_err());
    }

    #[test]
    fn go_strings() {
        let s = go_duration_string;
        assert_eq!(s(0), "0s");
        assert_eq!(s(1_500_000_000), "1.5s");
        assert_eq!(s(90_000_000_000), "1m30s");
        assert_eq!(s(3_600_000_000_000), "1h0m0s");
        assert_eq!(s(500_000_000), "500ms");
        assert_eq!(s(1_500_000), "1.5ms");
        assert_eq!(s(1_000), "1µs");
        assert_eq!(s(7), "7ns");
        assert_eq!(s(-2_000_000_000), "-2s");
    }
}
