//! The query string of a read: `offset`, `live`, `cursor` and `timeout`, parsed by hand so that
//! a repeated or empty `offset` is an error rather than silently resolved (§5.6, §8).

use std::time::Duration;

use ds_engine::ReadFrom;

use crate::error::ApiError;
use crate::name::percent_decode;

/// How a `GET` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// Catch-up: return what exists now.
    No,
    /// `live=long-poll`.
    LongPoll,
    /// `live=sse`.
    Sse,
}

impl Live {
    /// The mode a `live` value names (`long-poll` or `sse`).
    #[must_use]
    pub fn named(value: &str) -> Option<Live> {
        match value {
            "long-poll" => Some(Live::LongPoll),
            "sse" => Some(Live::Sse),
            _ => None,
        }
    }
}

/// A parsed read query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadQuery {
    /// Where to start.
    pub from: ReadFrom,
    /// Whether `offset` was given (live modes require it).
    pub offset_given: bool,
    /// The live mode.
    pub live: Live,
    /// The client's echoed `cursor`, if it is a number.
    pub cursor: Option<u64>,
    /// `timeout`: how long a long-poll may wait, in seconds (§5.7, MAY). The server's own
    /// long-poll timeout still bounds it.
    pub timeout: Option<Duration>,
}

/// Parses `offset`, `live`, `cursor` and `timeout`; other parameters are ignored.
///
/// # Errors
/// 400 for a repeated, empty or malformed `offset`, an unknown or repeated `live`, a live
/// mode without `offset`, or a repeated or malformed `timeout`.
pub fn parse(query: Option<&str>) -> Result<ReadQuery, ApiError> {
    let mut offset: Option<String> = None;
    let mut live: Option<Live> = None;
    let mut cursor = None;
    let mut timeout = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value)?;
        match decode(key)?.as_str() {
            "offset" => {
                if offset.is_some() {
                    return Err(ApiError::bad_request("offset must appear only once"));
                }
                offset = Some(value);
            }
            "live" => {
                let mode = Live::named(&value)
                    .ok_or_else(|| ApiError::bad_request("live must be long-poll or sse"))?;
                if live.replace(mode).is_some() {
                    return Err(ApiError::bad_request("live must appear only once"));
                }
            }
            "cursor" => cursor = parse_cursor(&value),
            "timeout" => {
                let t = parse_timeout(&value).ok_or_else(|| {
                    ApiError::bad_request("timeout must be a number of seconds, like 5 or 0.5")
                })?;
                if timeout.replace(t).is_some() {
                    return Err(ApiError::bad_request("timeout must appear only once"));
                }
            }
            _ => {}
        }
    }
    let live = live.unwrap_or(Live::No);
    let from = match offset.as_deref() {
        None => ReadFrom::Start,
        Some(value) => ReadFrom::parse(value)
            .ok_or_else(|| ApiError::bad_request("offset must be -1, now, or an offset token"))?,
    };
    if live != Live::No && offset.is_none() {
        return Err(ApiError::bad_request("live reads need an offset"));
    }
    Ok(ReadQuery { from, offset_given: offset.is_some(), live, cursor, timeout })
}

/// A cursor is a decimal number; one too large for `u64` counts as `u64::MAX`, so that it is
/// never answered with a smaller cursor. Anything else was not minted by a server and is
/// ignored.
fn parse_cursor(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().unwrap_or(u64::MAX))
}

/// Seconds as `S` or `S.fff`: up to 9 whole digits and 3 decimals, no sign or exponent.
fn parse_timeout(value: &str) -> Option<Duration> {
    let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str, max: usize| s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole, 9) || !digits(frac, 3) || value.ends_with('.') {
        return None;
    }
    let millis = format!("{frac:0<3}").parse::<u64>().ok()?;
    Some(Duration::from_secs(whole.parse().ok()?) + Duration::from_millis(millis))
}

/// Form-style decoding: `+` is a space, `%XX` an escape.
fn decode(raw: &str) -> Result<String, ApiError> {
    let plus_as_space: Vec<u8> = raw.bytes().map(|b| if b == b'+' { b' ' } else { b }).collect();
    percent_decode(&plus_as_space)
        .and_then(|v| String::from_utf8(v).ok())
        .ok_or_else(|| ApiError::bad_request("query string has invalid percent-encoding"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ds_engine::Offset;

    #[test]
    fn defaults_to_catch_up_from_start() {
        let q = parse(None).unwrap();
        assert_eq!((q.from, q.live, q.offset_given), (ReadFrom::Start, Live::No, false));
        let q = parse(Some("offset=-1&foo=bar&baz")).unwrap();
        assert_eq!(q.from, ReadFrom::Start);
    }

    #[test]
    fn parses_live_modes_and_cursor() {
        let token = Offset::at(42).to_string();
        let q = parse(Some(&format!("cursor=17&live=long-poll&offset={token}"))).unwrap();
        assert_eq!(q.from, ReadFrom::At(Offset::at(42)));
        assert_eq!((q.live, q.cursor), (Live::LongPoll, Some(17)));
        assert_eq!(parse(Some("offset=now&live=sse")).unwrap().from, ReadFrom::Tail);
        assert_eq!(parse(Some("offset=now&cursor=x")).unwrap().cursor, None);
        assert_eq!(parse(Some("offset=now&cursor=-1")).unwrap().cursor, None);
        assert_eq!(parse(Some("offset=now&cursor=")).unwrap().cursor, None);
        let huge = parse(Some("offset=now&cursor=99999999999999999999999")).unwrap();
        assert_eq!(huge.cursor, Some(u64::MAX), "too large saturates, never resets");
    }

    #[test]
    fn parses_a_timeout_in_seconds() {
        let t = |q: &str| parse(Some(q)).unwrap().timeout;
        assert_eq!(t("offset=-1"), None);
        assert_eq!(t("offset=-1&timeout=5"), Some(Duration::from_secs(5)));
        assert_eq!(t("offset=-1&timeout=0"), Some(Duration::ZERO));
        assert_eq!(t("offset=-1&timeout=0.5"), Some(Duration::from_millis(500)));
        assert_eq!(t("offset=-1&timeout=2.25"), Some(Duration::from_millis(2250)));
        for bad in ["", "-1", "1e3", "1.", ".5", "0.0001", "abc", "1234567890", "5s", "+5"] {
            let q = format!("offset=-1&live=long-poll&timeout={bad}");
            assert_eq!(parse(Some(&q)).unwrap_err().status(), 400, "{bad:?}");
        }
        let twice = parse(Some("offset=-1&timeout=1&timeout=1")).unwrap_err();
        assert_eq!(twice.status(), 400);
    }

    #[test]
    fn rejects_what_the_suite_and_clients_must_not_send() {
        for bad in [
            "offset=",
            "offset=a&offset=b",
            "offset=-1&offset=-1",
            "offset=0,1",
            "offset=0%201",
            "offset=..%2Fx",
            "offset=x%00",
            "offset=x%0A",
            "offset=%zz",
            "live=long-poll",
            "live=sse",
            "offset=-1&live=yes",
            "offset=-1&live=sse&live=sse",
            "offset=NOW",
        ] {
            assert_eq!(parse(Some(bad)).unwrap_err().status(), 400, "{bad:?}");
        }
    }
}
