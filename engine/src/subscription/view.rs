//! What clients and receivers see of a subscription (§6.2, §7.1, §7.2): its description, the
//! stream list of webhooks and claims, the webhook body and the pull-wake event. JSON values
//! the HTTP layer writes out as they are.

use serde_json::{Map, Value, json};

use crate::offset::Offset;
use crate::subscription::state::{Delivery, Link, Subscription, Tails};

/// The JWKS's path under the stream root.
pub const JWKS_PATH: &str = "/__ds/jwks.json";
/// The subscriptions' path under the stream root.
pub const SUBSCRIPTIONS_PATH: &str = "/__ds/subscriptions/";

/// `GET …/subscriptions/{id}` (and the answer to its `PUT`). `base` is the stream root's
/// URL (`http://host:port/v1/stream`), `kid` the active signing key's id.
#[must_use]
pub fn describe(sub: &Subscription, base: &str, kid: &str) -> Value {
    let c = &sub.config;
    let mut m = Map::new();
    m.insert("id".into(), json!(sub.id));
    m.insert("subscription_id".into(), json!(sub.id));
    let kind = match c.delivery {
        Delivery::Webhook { .. } => "webhook",
        Delivery::PullWake { .. } => "pull-wake",
    };
    m.insert("type".into(), json!(kind));
    if let Some(p) = &c.pattern {
        m.insert("pattern".into(), json!(p.as_str()));
    }
    let streams: Vec<Value> = sub
        .links
        .iter()
        .map(|l| json!({"path": l.path, "link_type": l.link_type(), "acked_offset": l.acked.to_string()}))
        .collect();
    m.insert("streams".into(), Value::Array(streams));
    match &c.delivery {
        Delivery::Webhook { url } => {
            let signing =
                json!({"alg": "ed25519", "kid": kid, "jwks_url": format!("{base}{JWKS_PATH}")});
            m.insert("webhook".into(), json!({"url": url, "signing": signing}));
        }
        Delivery::PullWake { wake_stream } => {
            m.insert("wake_stream".into(), json!(wake_stream));
        }
    }
    m.insert("lease_ttl_ms".into(), json!(c.lease_ttl_ms));
    m.insert("created_at".into(), json!(iso8601_ms(sub.created_ms)));
    m.insert("status".into(), json!(sub.status()));
    if let Some(d) = &c.description {
        m.insert("description".into(), json!(d));
    }
    Value::Object(m)
}

fn stream_info(link: &Link, tail: Option<Offset>) -> Value {
    let tail = tail.unwrap_or(Offset::ZERO);
    json!({
        "path": link.path,
        "link_type": link.link_type(),
        "acked_offset": link.acked.to_string(),
        "tail_offset": tail.to_string(),
        "has_pending": tail > link.acked,
    })
}

/// Every linked stream with its cursor and current tail (a claim's `streams`).
#[must_use]
pub fn streams_now(sub: &Subscription, tails: &dyn Tails) -> Value {
    Value::Array(sub.links.iter().map(|l| stream_info(l, tails.tail(&l.path))).collect())
}

/// The callback URL of `id` under the stream root `base`.
#[must_use]
pub fn callback_url(base: &str, id: &str) -> String {
    format!("{base}{SUBSCRIPTIONS_PATH}{id}/callback")
}

/// The body of the webhook of the wake in flight: the linked streams of the wake's snapshot,
/// each with the tail the snapshot holds for it, which is exactly what `done` acknowledges
/// (§7.1). A stream linked after the snapshot is not in it: its data is pending, for the
/// next wake. `None` if no wake is in flight.
#[must_use]
pub fn webhook_body(sub: &Subscription, base: &str, token: &str) -> Option<Value> {
    let wake = sub.wake.as_ref()?;
    let streams: Vec<Value> = sub
        .links
        .iter()
        .filter_map(|l| {
            let snap = wake.snapshot.iter().find(|(p, _)| *p == l.path).map(|(_, t)| *t)?;
            Some(stream_info(l, Some(snap)))
        })
        .collect();
    Some(json!({
        "subscription_id": sub.id,
        "wake_id": wake.id,
        "generation": sub.generation,
        "streams": streams,
        "callback_url": callback_url(base, &sub.id),
        "callback_token": token,
    }))
}

/// The pull-wake event of the wake in flight (§7.2).
#[must_use]
pub fn wake_event(sub: &Subscription, now_ms: u64) -> Option<Value> {
    let wake = sub.wake.as_ref()?;
    Some(json!({
        "type": "wake",
        "subscription_id": sub.id,
        "stream": wake.triggered_by,
        "generation": sub.generation,
        "ts": now_ms,
    }))
}

/// Unix milliseconds as ISO 8601 in UTC with milliseconds: `2026-06-03T10:00:00.000Z`.
#[must_use]
pub fn iso8601_ms(unix_ms: u64) -> String {
    let days = i64::try_from(unix_ms / 86_400_000).unwrap_or(0);
    let ms_of_day = unix_ms % 86_400_000;
    // Civil date from days since 1970-01-01 (proleptic Gregorian; H. Hinnant's method).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_8601_with_milliseconds() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601_ms(1_780_480_800_000), "2026-06-03T10:00:00.000Z");
        assert_eq!(iso8601_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
