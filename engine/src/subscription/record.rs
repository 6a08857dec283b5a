//! A subscription as one self-describing record (a JSON object), as the control database
//! keeps it across restarts ([`crate::subscription::control`]). [`decode`] checks everything
//! [`encode`] writes, so a damaged or foreign record is refused instead of loaded half-right.
//!
//! ```text
//! {"v":1, "id":…, "incarnation":…, "created_ms":…,
//!  "config":{"type":"webhook","url":…  | "type":"pull-wake","wake_stream":…,
//!            "pattern":…?, "streams":[…], "lease_ttl_ms":…, "description":…?},
//!  "links":[{"path":…, "explicit":…, "glob":…, "acked":"<offset token>", "provisional":…}…],
//!  "generation":…,
//!  "wake":null | {"id":…, "triggered_by":…, "snapshot":[[path, "<token>"]…],
//!                 "holder":…?, "lease_deadline_ms":…?},
//!  "retry":{"attempts":…, "next_attempt_at_ms":…?},
//!  "base_url":"<scheme://authority/stream-root>"}
//! ```

use serde_json::{Map, Value, json};

use crate::offset::Offset;
use crate::subscription::glob::{self, Pattern};
use crate::subscription::state::{
    Config, Delivery, Link, MAX_LEASE_TTL_MS, MIN_LEASE_TTL_MS, Retry, Subscription, Wake,
};

/// The record version this code writes and reads.
pub const VERSION: u64 = 1;

/// The record of `sub`.
#[must_use]
pub fn encode(sub: &Subscription) -> Vec<u8> {
    let c = &sub.config;
    let mut config = Map::new();
    match &c.delivery {
        Delivery::Webhook { url } => {
            config.insert("type".into(), json!("webhook"));
            config.insert("url".into(), json!(url));
        }
        Delivery::PullWake { wake_stream } => {
            config.insert("type".into(), json!("pull-wake"));
            config.insert("wake_stream".into(), json!(wake_stream));
        }
    }
    if let Some(p) = &c.pattern {
        config.insert("pattern".into(), json!(p.as_str()));
    }
    config.insert("streams".into(), json!(c.streams));
    config.insert("lease_ttl_ms".into(), json!(c.lease_ttl_ms));
    if let Some(d) = &c.description {
        config.insert("description".into(), json!(d));
    }
    let links: Vec<Value> = sub
        .links
        .iter()
        .map(|l| {
            json!({"path": l.path, "explicit": l.explicit, "glob": l.glob, "acked": l.acked.to_string(), "provisional": l.provisional})
        })
        .collect();
    let wake = sub.wake.as_ref().map_or(Value::Null, |w| {
        let snapshot: Vec<Value> =
            w.snapshot.iter().map(|(p, o)| json!([p, o.to_string()])).collect();
        let mut m = Map::new();
        m.insert("id".into(), json!(w.id));
        m.insert("triggered_by".into(), json!(w.triggered_by));
        m.insert("snapshot".into(), Value::Array(snapshot));
        if let Some(h) = &w.holder {
            m.insert("holder".into(), json!(h));
        }
        if let Some(d) = w.lease_deadline_ms {
            m.insert("lease_deadline_ms".into(), json!(d));
        }
        Value::Object(m)
    });
    let mut retry = Map::new();
    retry.insert("attempts".into(), json!(sub.retry.attempts));
    if let Some(at) = sub.retry.next_attempt_at_ms {
        retry.insert("next_attempt_at_ms".into(), json!(at));
    }
    json!({
        "v": VERSION,
        "id": sub.id,
        "incarnation": sub.incarnation,
        "created_ms": sub.created_ms,
        "config": config,
        "links": links,
        "generation": sub.generation,
        "wake": wake,
        "retry": retry,
        "base_url": sub.base_url,
    })
    .to_string()
    .into_bytes()
}

fn text<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key)?.as_str()
}

fn number(m: &Map<String, Value>, key: &str) -> Option<u64> {
    m.get(key)?.as_u64()
}

fn optional<'a>(m: &'a Map<String, Value>, key: &str) -> Option<Option<&'a Value>> {
    match m.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => Some(Some(v)),
    }
}

fn path(v: &Value) -> Option<String> {
    let p = v.as_str()?;
    (glob::normalize(p).ok()? == p).then(|| p.to_owned())
}

fn offset(v: &Value) -> Option<Offset> {
    Offset::parse(v.as_str()?)
}

/// The subscription a record holds; `None` if it is damaged, of another version, or breaks
/// any rule a live subscription keeps.
#[must_use]
pub fn decode(bytes: &[u8]) -> Option<Subscription> {
    let Value::Object(m) = serde_json::from_slice(bytes).ok()? else { return None };
    if number(&m, "v")? != VERSION {
        return None;
    }
    let Value::Object(c) = m.get("config")? else { return None };
    let delivery = match text(c, "type")? {
        "webhook" => Delivery::Webhook { url: text(c, "url")?.to_owned() },
        "pull-wake" => Delivery::PullWake { wake_stream: path(c.get("wake_stream")?)? },
        _ => return None,
    };
    let pattern = match optional(c, "pattern")? {
        None => None,
        Some(p) => Some(Pattern::parse(p.as_str()?).ok()?),
    };
    let streams = c.get("streams")?.as_array()?.iter().map(path).collect::<Option<Vec<_>>>()?;
    let lease_ttl_ms = number(c, "lease_ttl_ms")
        .filter(|ms| (MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(ms))?;
    let description = match optional(c, "description")? {
        None => None,
        Some(d) => Some(d.as_str()?.to_owned()),
    };
    let links = m
        .get("links")?
        .as_array()?
        .iter()
        .map(|l| {
            let Value::Object(l) = l else { return None };
            let link = Link {
                path: path(l.get("path")?)?,
                explicit: l.get("explicit")?.as_bool()?,
                glob: l.get("glob")?.as_bool()?,
                acked: offset(l.get("acked")?)?,
                provisional: match l.get("provisional") {
                    None => false,
                    Some(p) => p.as_bool()?,
                },
            };
            (link.explicit || link.glob).then_some(link)
        })
        .collect::<Option<Vec<_>>>()?;
    let wake = match optional(&m, "wake")? {
        None => None,
        Some(Value::Object(w)) => Some(Wake {
            id: text(w, "id")?.to_owned(),
            triggered_by: text(w, "triggered_by")?.to_owned(),
            snapshot: w
                .get("snapshot")?
                .as_array()?
                .iter()
                .map(|pair| match pair.as_array()?.as_slice() {
                    [p, o] => Some((path(p)?, offset(o)?)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?,
            holder: match optional(w, "holder")? {
                None => None,
                Some(h) => Some(h.as_str()?.to_owned()),
            },
            lease_deadline_ms: match optional(w, "lease_deadline_ms")? {
                None => None,
                Some(d) => Some(d.as_u64()?),
            },
        }),
        Some(_) => return None,
    };
    let Value::Object(r) = m.get("retry")? else { return None };
    let retry = Retry {
        attempts: u32::try_from(number(r, "attempts")?).ok()?,
        next_attempt_at_ms: match optional(r, "next_attempt_at_ms")? {
            None => None,
            Some(at) => Some(at.as_u64()?),
        },
    };
    Some(Subscription {
        id: text(&m, "id")?.to_owned(),
        incarnation: number(&m, "incarnation")?,
        config: Config { delivery, pattern, streams, lease_ttl_ms, description },
        created_ms: number(&m, "created_ms")?,
        links,
        generation: number(&m, "generation")?,
        wake,
        retry,
        base_url: text(&m, "base_url")?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::state::{Delivered, Tails};

    fn tails(p: &str) -> Option<Offset> {
        match p {
            "e/1" => Some(Offset::at(40).with_tag(7)),
            "m" => Some(Offset::at(9)),
            _ => None,
        }
    }

    fn busy(delivery: Delivery) -> Subscription {
        let config = Config {
            delivery,
            pattern: Some(Pattern::parse("e/*").unwrap()),
            streams: vec!["m".into(), "z".into()],
            lease_ttl_ms: 1_000,
            description: Some("d \"quoted\" é".into()),
        };
        let t: &dyn Tails = &tails;
        let mut s = Subscription::new("sub-1".into(), 3, config, 5, t, []);
        s.appended("e/1", Offset::at(20).with_tag(7), t, 10, || "w_1".to_owned());
        s
    }

    fn same(a: &Subscription, b: &Subscription) {
        // Offsets compare without their tags: compare the records' bytes too.
        assert_eq!(a, b);
        assert_eq!(encode(a), encode(b));
    }

    #[test]
    fn records_round_trip_in_every_state() {
        let mut pull = busy(Delivery::PullWake { wake_stream: "wake/pool".into() });
        same(&decode(&encode(&pull)).unwrap(), &pull);
        pull.claim("worker-1", &tails, 11, || "w_2".into()).unwrap();
        same(&decode(&encode(&pull)).unwrap(), &pull);
        let mut hook = busy(Delivery::Webhook { url: "https://example.com/h".into() });
        let wake = hook.wake.clone().unwrap().id;
        hook.delivered((hook.generation, &wake), Delivered::Failed, &tails, 12, 3, || "w_3".into());
        assert_eq!(hook.status(), "failed");
        same(&decode(&encode(&hook)).unwrap(), &hook);
        let idle = Subscription { wake: None, ..hook.clone() };
        same(&decode(&encode(&idle)).unwrap(), &idle);
    }

    #[test]
    fn damaged_or_foreign_records_are_refused() {
        let good = String::from_utf8(encode(&busy(Delivery::PullWake { wake_stream: "w".into() })))
            .unwrap();
        assert!(decode(good.as_bytes()).is_some());
        for (from, to) in [
            ("\"v\":1", "\"v\":2"),
            ("\"type\":\"pull-wake\"", "\"type\":\"email\""),
            ("\"lease_ttl_ms\":1000", "\"lease_ttl_ms\":5"),
            ("\"path\":\"e/1\"", "\"path\":\"e//1\""),
            ("\"explicit\":true", "\"explicit\":1"),
            ("\"generation\":1", "\"generation\":-1"),
            ("\"attempts\":0", "\"attempts\":99999999999"),
            ("\"pattern\":\"e/*\"", "\"pattern\":\"\""),
        ] {
            assert!(good.contains(from), "{from}");
            let bad = good.replacen(from, to, 1);
            assert!(decode(bad.as_bytes()).is_none(), "{to}");
        }
        let acked = good.find("\"acked\":\"").unwrap() + 9;
        let mut bad = good.clone();
        bad.replace_range(acked..acked + 1, "x");
        assert!(decode(bad.as_bytes()).is_none(), "a malformed offset");
        for cut in 0..good.len() {
            assert!(decode(&good.as_bytes()[..cut]).is_none(), "cut at {cut}");
        }
        assert!(decode(b"[]").is_none());
    }
}
