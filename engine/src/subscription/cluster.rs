//! Subscriptions over several nodes (the `postgres` mode): what the service needs besides
//! the database side in [`crate::pg::subs`].
//!
//! - [`Book`]: the leader's view of every stream (incarnation, own start, tail), seeded
//!   from the database when it is elected and kept current by the changes every node
//!   announces. It is the leader's [`Tails`], and its source of stream lists.
//! - [`Call`]: a subscription request as a follower hands it to the leader, and the
//!   answer's encoding (the answer of a refused request carries its [`SubError`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::offset::Offset;
use crate::pg::listen::{Change, QuietRanges};
use crate::pg::subs::SubsDb;
use crate::subscription::keys::Use;
use crate::subscription::service::SubError;
use crate::subscription::state::Tails;

/// What a stream change means to subscriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Nothing (an older state, closure only, or a quiet change).
    None,
    /// Appended: the tail moved from `start` to `tail`.
    Appended { start: Offset, tail: Offset },
    /// The stream is gone.
    Removed,
    /// It was replaced by a new incarnation, which may already hold data from `start`.
    Replaced { start: Offset, tail: Offset },
}

/// Every live stream, as the leader knows it.
#[derive(Debug, Default)]
pub(crate) struct Book {
    streams: Mutex<HashMap<Arc<str>, Change>>,
}

impl Book {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Change>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts again from `streams` (read from the database).
    pub(crate) fn reset(&self, streams: impl IntoIterator<Item = (Arc<str>, Change)>) {
        *self.map() = streams.into_iter().collect();
    }

    /// Forgets everything (no longer leading).
    pub(crate) fn clear(&self) {
        self.map().clear();
    }

    /// Applies a change, and says what it means to subscriptions: data past the tail known
    /// here is news unless `quiet` says it is this node's own wake events. Changes arrive
    /// from several nodes in no agreed order: an older incarnation, or a tail behind the one
    /// known, changes nothing.
    pub(crate) fn apply(&self, name: &Arc<str>, change: &Change, quiet: &QuietRanges) -> Event {
        let mut map = self.map();
        let had = map.get(name).cloned();
        match had {
            Some(had) if change.incarnation < had.incarnation => Event::None,
            Some(had) if change.incarnation == had.incarnation => {
                if change.gone {
                    map.remove(name);
                    return Event::Removed;
                }
                let tail = change.tail.max(had.tail);
                map.insert(
                    name.clone(),
                    Change { tail, closed: change.closed || had.closed, ..had.clone() },
                );
                if change.tail <= had.tail
                    || quiet.covers(name, had.incarnation, had.tail, change.tail)
                {
                    return Event::None;
                }
                let lineage = had.lineage();
                Event::Appended { start: lineage.at(had.tail), tail: lineage.at(change.tail) }
            }
            had => {
                if change.gone {
                    return if had.is_some() {
                        map.remove(name);
                        Event::Removed
                    } else {
                        Event::None
                    };
                }
                map.insert(name.clone(), change.clone());
                let lineage = change.lineage();
                let (start, tail) = (lineage.at(change.start), lineage.at(change.tail));
                let news = change.tail > change.start
                    && !quiet.covers(name, change.incarnation, change.start, change.tail);
                match (had.is_some(), news) {
                    (true, true) => Event::Replaced { start, tail },
                    (true, false) => Event::Removed,
                    (false, true) => Event::Appended { start, tail },
                    (false, false) => Event::None,
                }
            }
        }
    }

    /// The incarnations known here of the streams named in `names` or starting with one of
    /// `prefixes`.
    pub(crate) fn incarnations(&self, names: &[String], prefixes: &[&str]) -> HashMap<String, u64> {
        let map = self.map();
        let mut out: HashMap<String, u64> = names
            .iter()
            .filter_map(|n| map.get(n.as_str()).map(|c| (n.clone(), c.incarnation)))
            .collect();
        if !prefixes.is_empty() {
            for (name, c) in map.iter() {
                if prefixes.iter().any(|p| name.starts_with(p)) {
                    out.insert(name.to_string(), c.incarnation);
                }
            }
        }
        out
    }

    /// The live streams whose names start with `prefix`: name, own start, tail.
    pub(crate) fn list(&self, prefix: &str) -> Vec<(String, Offset, Offset)> {
        let map = self.map();
        let mut out: Vec<(String, Offset, Offset)> = map
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, c)| {
                let lineage = c.lineage();
                (name.to_string(), lineage.at(c.start), lineage.at(c.tail))
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Tails for Book {
    fn tail(&self, path: &str) -> Option<Offset> {
        self.map().get(path).map(|c| c.lineage().at(c.tail))
    }
}

/// The `postgres` mode's side of the service: the database, the book, and whether (at
/// which epoch) this node leads.
#[derive(Debug, Default)]
pub(crate) struct Cluster {
    /// Set once the store is open.
    pub(crate) db: std::sync::OnceLock<SubsDb>,
    pub(crate) book: Book,
    /// The epoch this node leads at; 0 while it does not.
    pub(crate) epoch: AtomicU64,
    /// Woken when a write found this node deposed.
    pub(crate) deposed: Notify,
}

impl Cluster {
    /// The epoch this node leads at, if it does.
    pub(crate) fn leading(&self) -> Option<u64> {
        Some(self.epoch.load(Ordering::Acquire)).filter(|e| *e != 0)
    }
}

/// A subscription request a follower hands to the leader.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Call {
    Put { id: String, body: Value, base: String },
    Get { id: String },
    Delete { id: String },
    AddStreams { id: String, body: Value },
    RemoveStream { id: String, path: String },
    Ack { id: String, usage: Use, token: String, body: Value },
    Release { id: String, token: String, body: Value },
    Claim { id: String, authorization: Option<String>, body: Value },
    Jwks,
}

impl Call {
    /// As stored in `ds_sub_calls.call`.
    pub(crate) fn encode(&self) -> String {
        let v = match self {
            Call::Put { id, body, base } => {
                json!({"op": "put", "id": id, "body": body, "base": base})
            }
            Call::Get { id } => json!({"op": "get", "id": id}),
            Call::Delete { id } => json!({"op": "delete", "id": id}),
            Call::AddStreams { id, body } => json!({"op": "add_streams", "id": id, "body": body}),
            Call::RemoveStream { id, path } => {
                json!({"op": "remove_stream", "id": id, "path": path})
            }
            Call::Ack { id, usage, token, body } => json!({"op": "ack", "id": id,
                "usage": if *usage == Use::Claim { "claim" } else { "callback" },
                "token": token, "body": body}),
            Call::Release { id, token, body } => {
                json!({"op": "release", "id": id, "token": token, "body": body})
            }
            Call::Claim { id, authorization, body } => json!({"op": "claim", "id": id,
                "authorization": authorization, "body": body}),
            Call::Jwks => json!({"op": "jwks"}),
        };
        v.to_string()
    }

    /// What [`Call::encode`] wrote; `None` for anything else.
    pub(crate) fn decode(text: &str) -> Option<Call> {
        let v: Value = serde_json::from_str(text).ok()?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let body = || v.get("body").cloned().unwrap_or(Value::Null);
        Some(match v.get("op")?.as_str()? {
            "put" => Call::Put { id: s("id")?, body: body(), base: s("base")? },
            "get" => Call::Get { id: s("id")? },
            "delete" => Call::Delete { id: s("id")? },
            "add_streams" => Call::AddStreams { id: s("id")?, body: body() },
            "remove_stream" => Call::RemoveStream { id: s("id")?, path: s("path")? },
            "ack" => Call::Ack {
                id: s("id")?,
                usage: if s("usage")? == "claim" { Use::Claim } else { Use::Callback },
                token: s("token")?,
                body: body(),
            },
            "release" => Call::Release { id: s("id")?, token: s("token")?, body: body() },
            "claim" => {
                Call::Claim { id: s("id")?, authorization: s("authorization"), body: body() }
            }
            "jwks" => Call::Jwks,
            _ => return None,
        })
    }
}

/// The messages a [`SubError::TokenInvalid`] carries (a `&'static str`, so the follower
/// maps the leader's text back onto one of them).
const TOKEN_INVALID: [&str; 3] = [
    "token is not valid for this request",
    "claims need an Authorization: Bearer token",
    "exp must be a number",
];

/// An answer as stored in `ds_sub_calls.answer`.
pub(crate) fn encode_answer(answer: &Result<Value, SubError>) -> String {
    let v = match answer {
        Ok(v) => json!({"ok": v}),
        Err(e) => {
            let (code, why, extra) = match e {
                SubError::Invalid(w) => ("invalid", w.as_str(), Value::Null),
                SubError::UrlRejected(w) => ("url_rejected", w.as_str(), Value::Null),
                SubError::NotFound => ("not_found", "", Value::Null),
                SubError::TokenInvalid(w) => ("token_invalid", *w, Value::Null),
                SubError::TokenExpired => ("token_expired", "", Value::Null),
                SubError::Exists => ("exists", "", Value::Null),
                SubError::Fenced => ("fenced", "", Value::Null),
                SubError::AlreadyClaimed { holder, generation } => {
                    ("already_claimed", holder.as_str(), json!(generation))
                }
                SubError::NoPendingWork => ("no_pending_work", "", Value::Null),
                SubError::InvalidOffset(w) => ("invalid_offset", w.as_str(), Value::Null),
                SubError::Unavailable(w) => ("unavailable", w.as_str(), Value::Null),
            };
            json!({"err": {"code": code, "why": why, "extra": extra}})
        }
    };
    v.to_string()
}

/// What [`encode_answer`] wrote (an answer that does not decode is a 503).
pub(crate) fn decode_answer(text: &str) -> Result<Value, SubError> {
    let bad = || SubError::Unavailable("the subscription leader's answer did not decode".into());
    let v: Value = serde_json::from_str(text).map_err(|_| bad())?;
    if let Some(ok) = v.get("ok") {
        return Ok(ok.clone());
    }
    let err = v.get("err").ok_or_else(bad)?;
    let why = err.get("why").and_then(Value::as_str).unwrap_or_default().to_owned();
    Err(match err.get("code").and_then(Value::as_str).ok_or_else(bad)? {
        "invalid" => SubError::Invalid(why),
        "url_rejected" => SubError::UrlRejected(why),
        "not_found" => SubError::NotFound,
        "token_invalid" => SubError::TokenInvalid(
            TOKEN_INVALID.iter().find(|m| **m == why).unwrap_or(&TOKEN_INVALID[0]),
        ),
        "token_expired" => SubError::TokenExpired,
        "exists" => SubError::Exists,
        "fenced" => SubError::Fenced,
        "already_claimed" => SubError::AlreadyClaimed {
            holder: why,
            generation: err.get("extra").and_then(Value::as_u64).unwrap_or(0),
        },
        "no_pending_work" => SubError::NoPendingWork,
        "invalid_offset" => SubError::InvalidOffset(why),
        "unavailable" => SubError::Unavailable(why),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(incarnation: u64, tail: u64) -> Change {
        Change { incarnation, tail, closed: false, gone: false, start: 0, start_tag: 0 }
    }

    #[test]
    fn the_book_turns_changes_from_any_node_into_subscription_events() {
        let (book, quiet) = (Book::default(), QuietRanges::default());
        quiet.record_from_now(true);
        let s: Arc<str> = Arc::from("s");
        let tagged = |inc: u64, pos: u64| crate::offset::Lineage::new(inc, None).at(pos);
        // Created empty: nothing to link yet.
        assert_eq!(book.apply(&s, &change(7, 0), &quiet), Event::None);
        assert_eq!(
            book.apply(&s, &change(7, 10), &quiet),
            Event::Appended { start: Offset::ZERO, tail: tagged(7, 10) }
        );
        // A slower node's older tail arrives late: nothing.
        assert_eq!(book.apply(&s, &change(7, 4), &quiet), Event::None);
        // This node's wake event: the tail moves, nobody wakes; the next append starts there.
        quiet.record(&s, 7, 10, 12);
        assert_eq!(book.apply(&s, &change(7, 12), &quiet), Event::None);
        assert_eq!(
            book.apply(&s, &change(7, 15), &quiet),
            Event::Appended { start: tagged(7, 12), tail: tagged(7, 15) }
        );
        // Review finding: another node's append (15..20) announced after this node's wake
        // event (20..25) was lost, its tail being behind. The wake event's notification
        // now carries the other node's data with it.
        quiet.record(&s, 7, 20, 25);
        assert_eq!(
            book.apply(&s, &change(7, 25), &quiet),
            Event::Appended { start: tagged(7, 15), tail: tagged(7, 25) }
        );
        assert_eq!(book.apply(&s, &change(7, 20), &quiet), Event::None);
        assert_eq!(book.tail("s"), Some(tagged(7, 25)));
        // Deleted and created again with data, announced together; an old incarnation's
        // wake-event range does not hide the new one's data.
        quiet.record(&s, 7, 25, 30);
        assert_eq!(
            book.apply(&s, &change(9, 3), &quiet),
            Event::Replaced { start: Offset::ZERO, tail: tagged(9, 3) }
        );
        assert_eq!(book.apply(&s, &change(7, 99), &quiet), Event::None);
        assert_eq!(book.apply(&s, &Change::gone(9), &quiet), Event::Removed);
        assert_eq!(book.tail("s"), None);
        assert_eq!(book.apply(&s, &Change::gone(9), &quiet), Event::None);
        // A fork first heard of with data: linked at its fork point, tagged as the source.
        let f: Arc<str> = Arc::from("f");
        let fork = Change { start: 5, start_tag: 77, ..change(11, 8) };
        let Event::Appended { start, tail } = book.apply(&f, &fork, &quiet) else { panic!() };
        assert_eq!((start.pos(), start.tag(), tail.pos()), (5, 77, 8));
        assert_eq!(book.list(""), vec![("f".to_owned(), start, tail)]);
        // A wake stream first heard of holding only wake events: nothing.
        let w: Arc<str> = Arc::from("w");
        quiet.record(&w, 12, 0, 40);
        assert_eq!(book.apply(&w, &change(12, 40), &quiet), Event::None);
        // Not recording (not leading): nothing is quiet.
        quiet.record_from_now(false);
        quiet.record(&w, 12, 40, 50);
        assert!(!quiet.covers("w", 12, 40, 50));
    }

    #[test]
    fn calls_and_answers_round_trip() {
        let calls = [
            Call::Put {
                id: "a".into(),
                body: json!({"x": [1]}),
                base: "http://h/v1/stream".into(),
            },
            Call::Get { id: "a".into() },
            Call::Delete { id: "a".into() },
            Call::AddStreams { id: "a".into(), body: json!({"streams": ["s"]}) },
            Call::RemoveStream { id: "a".into(), path: "s/t".into() },
            Call::Ack { id: "a".into(), usage: Use::Claim, token: "t".into(), body: json!({}) },
            Call::Ack { id: "a".into(), usage: Use::Callback, token: "t".into(), body: json!(1) },
            Call::Release { id: "a".into(), token: "t".into(), body: json!(null) },
            Call::Claim { id: "a".into(), authorization: None, body: json!({"worker": "w"}) },
            Call::Claim { id: "a".into(), authorization: Some("b".into()), body: json!({}) },
            Call::Jwks,
        ];
        for call in calls {
            assert_eq!(Call::decode(&call.encode()), Some(call));
        }
        assert_eq!(Call::decode("{\"op\":\"nope\"}"), None);
        let answers = [
            Ok(json!({"created": true})),
            Err(SubError::Invalid("why".into())),
            Err(SubError::UrlRejected("u".into())),
            Err(SubError::NotFound),
            Err(SubError::TokenInvalid("claims need an Authorization: Bearer token")),
            Err(SubError::TokenExpired),
            Err(SubError::Exists),
            Err(SubError::Fenced),
            Err(SubError::AlreadyClaimed { holder: "w1".into(), generation: 4 }),
            Err(SubError::NoPendingWork),
            Err(SubError::InvalidOffset("o".into())),
            Err(SubError::Unavailable("down".into())),
        ];
        for answer in answers {
            assert_eq!(decode_answer(&encode_answer(&answer)), answer);
        }
        assert!(matches!(decode_answer("garbage"), Err(SubError::Unavailable(_))));
    }
}
