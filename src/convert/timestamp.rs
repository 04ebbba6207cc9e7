//! Parsing of every instant format Iterable sends into microseconds since the Unix epoch (UTC).
//!
//! Export records use `2024-01-02 03:04:05 +00:00`, sometimes with fractional seconds, a `T`
//! separator, another offset or a doubled fraction; list-style endpoints use epoch
//! milliseconds. `tests::SHAPES` lists every shape seen in real data with the instant it
//! names. A fast path handles them byte by byte (this runs for several fields of every
//! record); anything else falls back to chrono's RFC 3339 and format-string parsers. Callers
//! never fail a row on an unparseable value: they get `None` and keep the text elsewhere.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime};

const MICROS_PER_SECOND: i64 = 1_000_000;

/// Parse an instant written as text. Without an offset, the instant is taken as UTC.
pub fn parse_instant(text: &str) -> Option<i64> {
    let text = text.trim();
    fast_path(text.as_bytes()).or_else(|| slow_path(text))
}

/// An epoch-milliseconds integer as microseconds, or `None` when out of range.
pub fn from_epoch_millis(ms: i64) -> Option<i64> {
    ms.checked_mul(1000)
}

/// The instant formatted the way the export API expects in `startDateTime`/`endDateTime`.
pub fn format_for_query(micros: i64) -> String {
    to_datetime(micros)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Microseconds since the epoch as a chrono UTC instant.
pub fn to_datetime(micros: i64) -> Option<DateTime<chrono::Utc>> {
    DateTime::from_timestamp_micros(micros)
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.f{1,9}][ ]?(Z|±HH:MM|±HHMM)?`
fn fast_path(b: &[u8]) -> Option<i64> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[10] != b' ' && b[10] != b'T' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        digits(&b[0..4])? as i32,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )?;
    let (h, m, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut frac_micros = 0i64;
    if let Some((&b'.', tail)) = rest.split_first() {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        let mut v = i64::from(digits(&tail[..n.min(6)])?);
        for _ in n..6 {
            v *= 10;
        }
        frac_micros = v;
        rest = &tail[n..];
        // A second fraction of zeros (`05.134105.000Z`, seen in real exports) adds nothing.
        if let Some((&b'.', tail)) = rest.split_first() {
            let zeros = tail.iter().take_while(|&&c| c == b'0').count();
            if zeros == 0 || tail.get(zeros).is_some_and(u8::is_ascii_digit) {
                return None;
            }
            rest = &tail[zeros..];
        }
    }
    if let Some((&b' ', tail)) = rest.split_first() {
        rest = tail;
    }
    let offset_secs: i64 = match *rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            offset(sign, &[h1, h2], &[m1, m2])?
        }
        _ => return None,
    };
    let days = i64::from(date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE);
    let secs = days * 86_400 + i64::from(h * 3600 + m * 60 + s) - offset_secs;
    Some(secs * MICROS_PER_SECOND + frac_micros)
}

/// `NaiveDate::from_ymd(1970, 1, 1).num_days_from_ce()`.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

fn offset(sign: u8, hh: &[u8], mm: &[u8]) -> Option<i64> {
    let v = i64::from(digits(hh)? * 3600 + digits(mm)? * 60);
    Some(if sign == b'-' { -v } else { v })
}

fn slow_path(text: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f %z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, fmt) {
            return Some(t.timestamp_micros());
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    /// Every shape of instant seen in Iterable's data (exports, `itblInternal`, list-style
    /// endpoints), with the instant it names in RFC 3339. Epoch milliseconds (a JSON number)
    /// are read by the decoder through [`from_epoch_millis`].
    const SHAPES: [(&str, &str); 19] = [
        ("2021-04-14 16:29:39 +00:00", "2021-04-14T16:29:39Z"),
        ("2021-04-14 16:29:39 +0000", "2021-04-14T16:29:39Z"),
        ("2021-04-14 16:29:39+00:00", "2021-04-14T16:29:39Z"),
        ("2021-04-14 16:29:39", "2021-04-14T16:29:39Z"),
        ("2021-04-14 16:29:39.123 +00:00", "2021-04-14T16:29:39.123Z"),
        ("2021-04-14 18:29:39 +02:00", "2021-04-14T16:29:39Z"),
        ("2021-04-14 11:29:39 -05:00", "2021-04-14T16:29:39Z"),
        ("2021-04-14 22:14:39 +0545", "2021-04-14T16:29:39Z"),
        ("2021-04-14T16:29:39Z", "2021-04-14T16:29:39Z"),
        ("2021-04-14T16:29:39+00:00", "2021-04-14T16:29:39Z"),
        ("2021-04-14T16:29:39 +0000", "2021-04-14T16:29:39Z"),
        ("2021-04-14T21:59:39+05:30", "2021-04-14T16:29:39Z"),
        ("2021-04-14T16:29:39.5Z", "2021-04-14T16:29:39.5Z"),
        ("2021-04-14T16:29:39.123Z", "2021-04-14T16:29:39.123Z"),
        ("2021-04-14T16:29:39.123456Z", "2021-04-14T16:29:39.123456Z"),
        (
            "2021-04-14T16:29:39.123456789Z",
            "2021-04-14T16:29:39.123456Z",
        ),
        (
            "2025-12-19T22:43:34.134105.000Z",
            "2025-12-19T22:43:34.134105Z",
        ),
        (
            "2025-12-19 22:43:34.134105.0 +00:00",
            "2025-12-19T22:43:34.134105Z",
        ),
        ("2021-04-14", "2021-04-14T00:00:00Z"),
    ];

    #[test]
    fn parses_every_iterable_shape() {
        for (text, instant) in SHAPES {
            assert_eq!(parse_instant(text), Some(utc(instant)), "{text}");
            let padded = format!(" {text} ");
            assert_eq!(parse_instant(&padded), Some(utc(instant)), "{padded:?}");
        }
    }

    #[test]
    fn before_the_epoch_and_leap_days() {
        assert_eq!(
            parse_instant("1969-12-31 23:59:59 +00:00"),
            Some(-MICROS_PER_SECOND)
        );
        assert_eq!(
            parse_instant("2024-02-29 00:00:00 +00:00"),
            Some(utc("2024-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn rejects_what_is_not_an_instant() {
        for s in [
            "",
            "yesterday",
            "2024-13-01 00:00:00 +00:00",
            "2023-02-29 00:00:00 +00:00",
            "2024-01-02 24:00:00 +00:00",
            "2024-01-02 03:04:05 +0x:00",
            "2024-01-02 03:04:05.",
            "2025-12-19T22:43:34.134105.001Z",
            "2025-12-19T22:43:34.134105.Z",
            "2025-12-19T22:43:34.134105.000.000Z",
        ] {
            assert_eq!(parse_instant(s), None, "{s}");
        }
    }

    #[test]
    fn query_format_and_epoch_millis() {
        let t = utc("2024-01-02T03:04:05Z");
        assert_eq!(format_for_query(t), "2024-01-02 03:04:05");
        assert_eq!(from_epoch_millis(1_704_164_645_000), Some(t));
        assert_eq!(from_epoch_millis(i64::MAX), None);
    }
}
