//! RFC 3339 timestamps for `created` fields, formatted as Go's
//! `time.RFC3339Nano` in UTC (`2024-05-01T12:00:00.5Z`): what Docker and
//! BuildKit write. No clock is read here: the caller passes the time (it may come
//! from `SOURCE_DATE_EPOCH`), so builds stay reproducible.

/// Why a time cannot be formatted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Nanoseconds must be below one second.
    #[error("invalid timestamp {secs}.{nanos:09}: nanoseconds must be below 1000000000")]
    Nanos { secs: i64, nanos: u32 },
    /// RFC 3339 has four-digit years only (Go refuses to marshal others too).
    #[error("timestamp {secs} is outside the years 0000-9999 that RFC 3339 can express")]
    Range { secs: i64 },
}

/// Formats `secs` (+`nanos`) since the Unix epoch as RFC 3339 in UTC with a `Z`
/// suffix. Fractional seconds are printed only when non-zero, without trailing
/// zeros, as Go's `RFC3339Nano` does.
pub fn rfc3339(secs: i64, nanos: u32) -> Result<String, TimeError> {
    if nanos >= 1_000_000_000 {
        return Err(TimeError::Nanos { secs, nanos });
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(TimeError::Range { secs });
    }
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    Ok(out)
}

/// Year, month, day of the proleptic Gregorian calendar for a day count since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = if m <= 2 { y + 1 } else { y };
    // d and m are small and positive by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64, nanos: u32) -> String {
        rfc3339(secs, nanos).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn formats_like_go_rfc3339nano() {
        assert_eq!(t(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(t(1, 500_000_000), "1970-01-01T00:00:01.5Z");
        assert_eq!(t(0, 1), "1970-01-01T00:00:00.000000001Z");
        // From the BuildKit-built image in testdata/oci/config/buildkit-full.
        assert_eq!(
            t(1_795_524_522, 252_090_482),
            "2026-11-24T12:48:42.252090482Z"
        );
        assert_eq!(
            t(1_795_524_522, 240_388_380),
            "2026-11-24T12:48:42.24038838Z"
        );
        assert_eq!(t(951_782_400, 0), "2000-02-29T00:00:00Z"); // leap day
        assert_eq!(t(4_107_542_400, 0), "2100-03-01T00:00:00Z"); // 2100 is not leap
        assert_eq!(t(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(
            t(253_402_300_799, 999_999_999),
            "9999-12-31T23:59:59.999999999Z"
        );
        assert_eq!(t(-62_167_219_200, 0), "0000-01-01T00:00:00Z");
    }

    #[test]
    fn rejects_out_of_range() {
        assert!(rfc3339(253_402_300_800, 0).is_err());
        assert!(rfc3339(-62_167_219_201, 0).is_err());
        assert!(rfc3339(0, 1_000_000_000).is_err());
        assert!(rfc3339(i64::MAX, 0).is_err());
        assert!(rfc3339(i64::MIN, 0).is_err());
    }
}
