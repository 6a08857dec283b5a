//! The query string of a read: `offset`, `live` and `cursor`, parsed by hand so that a repeated
//! or empty `offset` is an error rather than silently resolved (§5.6, §8).

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
}

/// Parses `offset`, `live` and `cursor`; other parameters are ignored.
///
/// # Errors
/// 400 for a repeated, empty or malformed `offset`, an unknown or repeated `live`, or a live
/// mode without `offset`.
pub fn parse(query: Option<&str>) -> Result<ReadQuery, ApiError> {
    let mut offset: Option<String> = None;
    let mut live: Option<Live> = None;
    let mut cursor = None;
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
                let mode = match value.as_str() {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    _ => return Err(ApiError::bad_request("live must be long-poll or sse")),
                };
                if live.replace(mode).is_some() {
                    return Err(ApiError::bad_request("live must appear only once"));
                }
            }
            "cursor" => cursor = value.parse::<u64>().ok(),
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
    Ok(ReadQuery { from, offset_given: offset.is_some(), live, cursor })
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
