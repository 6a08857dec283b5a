//! A subscription's configuration as a client sends it (§6.2), checked and normalized, and
//! the subscription id rules. Refusals are 400s: `INVALID_REQUEST`, or
//! `WEBHOOK_URL_REJECTED` for a webhook URL the forgery rules refuse.
//!
//! Stricter than the reference server where the issue asks for clear 4xx answers: a field
//! of the wrong type is refused instead of ignored, `webhook` only goes with webhook
//! subscriptions and `wake_stream` only with pull-wake ones, and ids, paths and descriptions
//! are bounded. Unknown fields are ignored (a newer client's additions).

use serde_json::Value;

use crate::subscription::glob::{self, Pattern};
use crate::subscription::state::{
    Config, DEFAULT_LEASE_TTL_MS, Delivery, MAX_LEASE_TTL_MS, MAX_LINKS, MIN_LEASE_TTL_MS,
};
use crate::subscription::webhook_url;

/// Longest subscription id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// Why a configuration or id is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// 400 `INVALID_REQUEST`.
    Invalid(String),
    /// 400 `WEBHOOK_URL_REJECTED`.
    UrlRejected(&'static str),
}

fn invalid(why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(why.into())
}

/// Checks a subscription id (one path segment, already percent-decoded): 1 to
/// [`MAX_ID_BYTES`] bytes of letters, digits and `-._~:`, and not `.` or `..`.
///
/// # Errors
/// [`ConfigError::Invalid`].
pub fn check_id(id: &str) -> Result<(), ConfigError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(invalid("subscription id must be 1 to 128 bytes"));
    }
    if id == "." || id == ".." {
        return Err(invalid("subscription id must not be . or .."));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:".contains(&b)) {
        return Err(invalid("subscription id may hold only letters, digits and -._~:"));
    }
    Ok(())
}

/// A list of stream paths (`streams[]` of a create or of the streams endpoint): normalized,
/// sorted, without duplicates.
///
/// # Errors
/// [`ConfigError::Invalid`] for anything but an array of valid paths, or more than
/// [`MAX_LINKS`] of them.
pub fn stream_list(value: &Value, field: &str) -> Result<Vec<String>, ConfigError> {
    let Value::Array(items) = value else {
        return Err(invalid(format!("{field} must be an array of stream paths")));
    };
    if items.len() > MAX_LINKS {
        return Err(invalid(format!("{field} holds more than {MAX_LINKS} paths")));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(path) = item else {
            return Err(invalid(format!("{field} must hold only strings")));
        };
        let path = glob::normalize(path)
            .map_err(|e| invalid(format!("stream path {path:?} in {field} {e}")))?;
        out.push(path.to_owned());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parses the body of `PUT …/subscriptions/{id}`.
///
/// # Errors
/// [`ConfigError`], with a message naming the field.
pub fn parse(body: &Value, allow_local_webhooks: bool) -> Result<Config, ConfigError> {
    let Value::Object(fields) = body else {
        return Err(invalid("the body must be a JSON object"));
    };
    let present = |name: &str| fields.get(name).filter(|v| !v.is_null());
    let kind = match present("type") {
        Some(Value::String(t)) if t == "webhook" => true,
        Some(Value::String(t)) if t == "pull-wake" => false,
        _ => return Err(invalid("type must be \"webhook\" or \"pull-wake\"")),
    };
    let pattern = match present("pattern") {
        None => None,
        Some(Value::String(p)) => {
            Some(Pattern::parse(p).map_err(|e| invalid(format!("pattern {e}")))?)
        }
        Some(_) => return Err(invalid("pattern must be a string")),
    };
    let streams = match present("streams") {
        None => Vec::new(),
        Some(v) => stream_list(v, "streams")?,
    };
    if pattern.is_none() && streams.is_empty() {
        return Err(invalid("at least one of pattern or streams is required"));
    }
    let lease_ttl_ms = match present("lease_ttl_ms") {
        None => DEFAULT_LEASE_TTL_MS,
        Some(v) => v
            .as_u64()
            .filter(|ms| (MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(ms))
            .ok_or_else(|| invalid("lease_ttl_ms must be an integer from 1000 to 600000"))?,
    };
    let description = match present("description") {
        None => None,
        Some(Value::String(d)) if d.len() <= MAX_DESCRIPTION_BYTES => Some(d.clone()),
        Some(Value::String(_)) => return Err(invalid("description is longer than 1024 bytes")),
        Some(_) => return Err(invalid("description must be a string")),
    };
    let delivery = if kind {
        if present("wake_stream").is_some() {
            return Err(invalid("wake_stream is only for pull-wake subscriptions"));
        }
        let url = match present("webhook") {
            Some(Value::Object(w)) => match w.get("url") {
                Some(Value::String(url)) => url,
                _ => return Err(invalid("webhook.url must be a string")),
            },
            _ => return Err(invalid("webhook subscriptions need a webhook object with a url")),
        };
        webhook_url::validate(url, allow_local_webhooks).map_err(ConfigError::UrlRejected)?;
        Delivery::Webhook { url: url.clone() }
    } else {
        if present("webhook").is_some() {
            return Err(invalid("webhook is only for webhook subscriptions"));
        }
        let wake_stream = match present("wake_stream") {
            Some(Value::String(s)) => {
                glob::normalize(s).map_err(|e| invalid(format!("wake_stream {e}")))?.to_owned()
            }
            Some(_) => return Err(invalid("wake_stream must be a string")),
            None => return Err(invalid("pull-wake subscriptions need a wake_stream")),
        };
        if streams.contains(&wake_stream) {
            // Its own wake events would be pending work forever: each done would wake again.
            return Err(invalid("a subscription cannot link its own wake_stream"));
        }
        Delivery::PullWake { wake_stream }
    };
    Ok(Config { delivery, pattern, streams, lease_ttl_ms, description })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(body: Value) -> Config {
        parse(&body, true).unwrap()
    }

    fn refused(body: Value) -> ConfigError {
        parse(&body, true).unwrap_err()
    }

    #[test]
    fn a_webhook_config_is_normalized() {
        let c = ok(json!({
            "type": "webhook",
            "pattern": "/events/*/",
            "streams": ["b/x", "/a", "b/x"],
            "webhook": {"url": "http://127.0.0.1:9/webhook"},
            "description": "d",
            "future_field": 1
        }));
        assert_eq!(c.pattern.as_ref().map(Pattern::as_str), Some("events/*"));
        assert_eq!(c.streams, ["a", "b/x"]);
        assert_eq!(c.lease_ttl_ms, DEFAULT_LEASE_TTL_MS);
        assert_eq!(c.delivery, Delivery::Webhook { url: "http://127.0.0.1:9/webhook".into() });
        // The same meaning written differently is the same configuration.
        let same = ok(json!({
            "type": "webhook",
            "pattern": "events/*",
            "streams": ["a", "b/x"],
            "webhook": {"url": "http://127.0.0.1:9/webhook"},
            "lease_ttl_ms": 30000,
            "description": "d"
        }));
        assert_eq!(c, same);
    }

    #[test]
    fn a_pull_wake_config_needs_its_wake_stream() {
        let c = ok(json!({"type": "pull-wake", "streams": ["e"], "wake_stream": "/wake/pool"}));
        assert_eq!(c.delivery, Delivery::PullWake { wake_stream: "wake/pool".into() });
        assert!(matches!(
            refused(json!({"type": "pull-wake", "streams": ["e"]})),
            ConfigError::Invalid(_)
        ));
    }

    #[test]
    fn wrong_types_missing_fields_and_bounds_are_refused() {
        let base = json!({"type": "pull-wake", "pattern": "e/*", "wake_stream": "w"});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        for body in [
            json!([]),
            json!("x"),
            json!({"pattern": "e/*", "wake_stream": "w"}),
            with("type", json!("email")),
            with("type", json!(1)),
            json!({"type": "pull-wake", "wake_stream": "w"}),
            with("pattern", json!(5)),
            with("pattern", json!("")),
            with("pattern", json!("a//b")),
            with("pattern", json!("../x")),
            with("streams", json!("e")),
            with("streams", json!([1])),
            with("streams", json!(["ok", ".."])),
            with("streams", json!(vec!["x"; MAX_LINKS + 1])),
            with("lease_ttl_ms", json!(999)),
            with("lease_ttl_ms", json!(600_001)),
            with("lease_ttl_ms", json!(1500.5)),
            with("lease_ttl_ms", json!("1000")),
            with("lease_ttl_ms", json!(-1)),
            with("description", json!(7)),
            with("description", json!("x".repeat(MAX_DESCRIPTION_BYTES + 1))),
            with("wake_stream", json!(3)),
            with("webhook", json!({"url": "https://example.com"})),
            json!({"type": "webhook", "pattern": "e/*"}),
            json!({"type": "webhook", "pattern": "e/*", "webhook": {"url": 5}}),
            json!({"type": "webhook", "pattern": "e/*", "webhook": "https://example.com"}),
            json!({"type": "webhook", "pattern": "e/*", "webhook": {"url": "https://example.com"}, "wake_stream": "w"}),
            json!({"type": "pull-wake", "streams": ["a", "w"], "wake_stream": "w"}),
        ] {
            assert!(matches!(refused(body.clone()), ConfigError::Invalid(_)), "{body}");
        }
        assert_eq!(ok(with("lease_ttl_ms", json!(1000))).lease_ttl_ms, 1000);
        assert_eq!(ok(with("lease_ttl_ms", json!(600_000))).lease_ttl_ms, 600_000);
    }

    #[test]
    fn unsafe_webhook_urls_have_their_own_refusal() {
        let body = json!({"type": "webhook", "pattern": "e/*", "webhook": {"url": "http://10.0.0.1/hook"}});
        assert!(matches!(parse(&body, true), Err(ConfigError::UrlRejected(_))));
        let local = json!({"type": "webhook", "pattern": "e/*", "webhook": {"url": "http://127.0.0.1:1/h"}});
        assert!(matches!(parse(&local, false), Err(ConfigError::UrlRejected(_))));
    }

    #[test]
    fn ids_are_short_plain_segments() {
        for id in ["sub-1", "pull-1764500000000", "a.b_c~d:e", &"x".repeat(128)] {
            assert_eq!(check_id(id), Ok(()), "{id}");
        }
        for id in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129), "a%2Fb"] {
            assert!(check_id(id).is_err(), "{id:?}");
        }
    }
}
