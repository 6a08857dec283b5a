//! Strict RFC 3339 timestamps for `Stream-Expires-At`, without a date-time dependency.
//!
//! Accepted: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, `T`/`Z` in either case,
//! seconds `60` refused (no leap-second table), years 1970..=9999.

/// Parses an RFC 3339 timestamp into milliseconds since the Unix epoch (fractions below a
/// millisecond are truncated). `None` for anything malformed or before 1970.
#[must_use]
pub fn parse_ms(value: &str) -> Option<u64> {
    let b = value.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0u64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let tz = [*h1, *h2, *m1, *m2];
            let oh = digits(&tz, 0, 2)?;
            let om = digits(&tz, 2, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = i64::try_from(oh * 3600 + om * 60).ok()?;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let local = days * 86_400 + i64::try_from(hour * 3600 + minute * 60 + second).ok()?;
    let utc_secs = u64::try_from(local - offset_secs).ok()?;
    utc_secs.checked_mul(1000)?.checked_add(millis)
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
#[must_use]
pub fn format_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn digits(b: &[u8], at: usize, len: usize) -> Option<u64> {
    let mut v = 0u64;
    for &d in b.get(at..at + len)? {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(d - b'0');
    }
    Some(v)
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7, IMF-fixdate) for the `Date` header.
#[must_use]
pub fn imf_fixdate(unix_secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    let two = |n: u64| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[5..7].copy_from_slice(&two(day.unsigned_abs()));
    out[8..11].copy_from_slice(MONTHS[(month.clamp(1, 12) - 1) as usize]);
    let year = year.clamp(0, 9999).unsigned_abs();
    out[12..14].copy_from_slice(&two(year / 100));
    out[14..16].copy_from_slice(&two(year % 100));
    out[17..19].copy_from_slice(&two(rem / 3600));
    out[20..22].copy_from_slice(&two(rem / 60 % 60));
    out[23..25].copy_from_slice(&two(rem % 60));
    out
}

fn days_from_civil(year: u64, month: u64, day: u64) -> i64 {
    let y = i64::try_from(year).unwrap_or(0) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::try_from(month).unwrap_or(1);
    let d = i64::try_from(day).unwrap_or(1);
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imf_fixdate_examples() {
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&imf_fixdate(1_798_761_600), b"Fri, 01 Jan 2027 00:00:00 GMT");
    }

    #[test]
    fn parses_utc_and_offsets() {
        assert_eq!(parse_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_ms("2025-06-01T12:34:56.789Z"), Some(1_748_781_296_789));
        assert_eq!(parse_ms("2025-06-01T12:34:56.789+00:00"), Some(1_748_781_296_789));
        assert_eq!(parse_ms("2025-06-01T14:34:56.789+02:00"), Some(1_748_781_296_789));
        assert_eq!(parse_ms("2025-06-01T10:34:56.7891234-02:00"), Some(1_748_781_296_789));
        assert_eq!(parse_ms("2024-10-09t00:00:00z"), Some(1_728_432_000_000));
        assert_eq!(parse_ms("2024-02-29T00:00:00.5Z"), Some(1_709_164_800_500));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "not-a-timestamp",
            "",
            "2025-06-01",
            "2025-06-01T12:34:56",
            "2025-06-01 12:34:56Z",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-06-31T00:00:00Z",
            "2025-06-01T24:00:00Z",
            "2025-06-01T12:60:00Z",
            "2025-06-01T12:00:60Z",
            "2025-06-01T12:00:00.Z",
            "2025-06-01T12:00:00+0200",
            "2025-06-01T12:00:00+24:00",
            "1969-12-31T23:59:59Z",
            "+2025-06-01T12:00:00Z",
            "2025-06-01T12:00:00ZZ",
            "２０２５-06-01T12:00:00Z",
            "2025-06-01T12:00:00.123",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn format_roundtrips() {
        for ms in [0, 1_748_781_296_789, 1_709_164_800_500, 253_402_300_799_999] {
            assert_eq!(parse_ms(&format_ms(ms)), Some(ms));
        }
        assert_eq!(format_ms(1_748_781_296_789), "2025-06-01T12:34:56.789Z");
    }
}
