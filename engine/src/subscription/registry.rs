//! Every subscription of a server, by id, with the indexes that make the append hook cheap:
//! an append asks only the subscriptions whose pattern's literal prefix the stream's path
//! starts with, and those that link the path explicitly, never all of them. Pure like
//! [`crate::subscription::state`]: no locks, clocks or I/O (the engine wraps it).

use std::collections::{BTreeSet, HashMap};

use crate::offset::Offset;
use crate::subscription::state::{Config, Refusal, Subscription, Tails, Woke};

/// Most subscriptions one server holds.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

/// What a create did (§6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// 201: created.
    Created,
    /// 200: the same configuration was already there.
    Confirmed,
}

/// Why a create is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutError {
    /// 409: the id holds a different configuration.
    Conflict,
    /// 400: [`MAX_SUBSCRIPTIONS`] reached.
    Full,
}

/// The subscriptions.
#[derive(Debug, Default)]
pub struct Registry {
    subs: HashMap<String, Subscription>,
    /// Literal prefix of each pattern (`Pattern::literal_prefix`) → subscription ids.
    by_prefix: HashMap<String, BTreeSet<String>>,
    /// Stream path → ids of the subscriptions that link it explicitly.
    explicit: HashMap<String, BTreeSet<String>>,
    next_incarnation: u64,
}

fn index_add(index: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) {
    index.entry(key.to_owned()).or_default().insert(id.to_owned());
}

fn index_remove(index: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

impl Registry {
    /// An empty registry whose incarnations start above `floor` (restored subscriptions'
    /// highest, so that a re-created id never reuses one).
    #[must_use]
    pub fn new(floor: u64) -> Registry {
        Registry { next_incarnation: floor + 1, ..Registry::default() }
    }

    /// The subscription `id`.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&Subscription> {
        self.subs.get(id)
    }

    /// How many there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    fn index(&mut self, id: &str) {
        let Some(sub) = self.subs.get(id) else { return };
        let prefix = sub.config.pattern.as_ref().map(|p| p.literal_prefix());
        let explicit: Vec<String> =
            sub.links.iter().filter(|l| l.explicit).map(|l| l.path.clone()).collect();
        if let Some(prefix) = prefix {
            index_add(&mut self.by_prefix, &prefix, id);
        }
        for path in explicit {
            index_add(&mut self.explicit, &path, id);
        }
    }

    fn unindex(&mut self, sub: &Subscription) {
        if let Some(p) = &sub.config.pattern {
            index_remove(&mut self.by_prefix, &p.literal_prefix(), &sub.id);
        }
        for link in sub.links.iter().filter(|l| l.explicit) {
            index_remove(&mut self.explicit, &link.path, &sub.id);
        }
    }

    /// Creates `id` with `config`, or confirms it if it holds the same configuration (§6.2).
    /// `existing` lists the live streams (path and tail) its pattern may match.
    ///
    /// # Errors
    /// [`PutError`].
    pub fn put(
        &mut self,
        id: &str,
        config: Config,
        now_ms: u64,
        tails: &dyn Tails,
        existing: impl IntoIterator<Item = (String, Offset)>,
    ) -> Result<Put, PutError> {
        if let Some(sub) = self.subs.get(id) {
            return if sub.config == config { Ok(Put::Confirmed) } else { Err(PutError::Conflict) };
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(PutError::Full);
        }
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let sub = Subscription::new(id.to_owned(), incarnation, config, now_ms, tails, existing);
        self.subs.insert(id.to_owned(), sub);
        self.index(id);
        Ok(Put::Created)
    }

    /// Restores a stored subscription (at start).
    pub fn restore(&mut self, sub: Subscription) {
        self.next_incarnation = self.next_incarnation.max(sub.incarnation + 1);
        let id = sub.id.clone();
        if let Some(old) = self.subs.insert(id.clone(), sub) {
            self.unindex(&old);
        }
        self.index(&id);
    }

    /// Deletes `id`; its tokens die with its incarnation. `false` if there was none.
    pub fn delete(&mut self, id: &str) -> bool {
        match self.subs.remove(id) {
            Some(sub) => {
                self.unindex(&sub);
                true
            }
            None => false,
        }
    }

    /// Runs `change` on subscription `id` and keeps the indexes right whatever it did to its
    /// links. `None` if there is no such subscription.
    pub fn update<T>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Subscription) -> T,
    ) -> Option<T> {
        let sub = self.subs.get_mut(id)?;
        let before: Vec<String> =
            sub.links.iter().filter(|l| l.explicit).map(|l| l.path.clone()).collect();
        let out = change(sub);
        for path in before {
            index_remove(&mut self.explicit, &path, id);
        }
        self.index(id);
        Some(out)
    }

    /// Like [`Registry::update`], for changes that leave the explicit links as they are
    /// (appends and stream removals only add, type or drop glob links): no re-indexing, so
    /// the append hook costs nothing per link.
    fn update_glob<T>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Subscription) -> T,
    ) -> Option<T> {
        let sub = self.subs.get_mut(id)?;
        let explicit = sub.links.iter().filter(|l| l.explicit).count();
        let out = change(sub);
        debug_assert_eq!(explicit, sub.links.iter().filter(|l| l.explicit).count());
        Some(out)
    }

    /// Adds explicit links to `id` (§6.4).
    ///
    /// # Errors
    /// `None`: no such subscription; `Some(Err)`: too many links.
    pub fn add_streams(
        &mut self,
        id: &str,
        paths: &[String],
        tails: &dyn Tails,
    ) -> Option<Result<(), Refusal>> {
        self.update(id, |s| s.add_streams(paths, tails))
    }

    /// Removes an explicit link of `id` (§6.4). `false` if there is no such subscription.
    pub fn remove_stream(&mut self, id: &str, path: &str) -> bool {
        self.update(id, |s| s.remove_stream(path)).is_some()
    }

    /// The ids of the subscriptions an append to `path` may concern: those whose pattern's
    /// literal prefix `path` (with a final `/`) starts with, and those linking it explicitly.
    #[must_use]
    pub fn candidates(&self, path: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(ids) = self.explicit.get(path) {
            out.extend(ids.iter().cloned());
        }
        if !self.by_prefix.is_empty() {
            let with_slash = format!("{path}/");
            for (i, b) in with_slash.bytes().enumerate() {
                if b == b'/'
                    && let Some(ids) = self.by_prefix.get(&with_slash[..=i])
                {
                    out.extend(ids.iter().cloned());
                }
            }
            if let Some(ids) = self.by_prefix.get("") {
                out.extend(ids.iter().cloned());
            }
        }
        out
    }

    /// Whether an append to `path` may concern some subscription (no allocation: asked on
    /// every append).
    #[must_use]
    pub fn concerns(&self, path: &str) -> bool {
        if self.explicit.contains_key(path) || self.by_prefix.contains_key("") {
            return true;
        }
        if self.by_prefix.is_empty() {
            return false;
        }
        let with_slash = format!("{path}/");
        with_slash.match_indices('/').any(|(i, _)| self.by_prefix.contains_key(&with_slash[..=i]))
    }

    /// An append moved `path` from `before` to its current tail (`tails`): every
    /// subscription it concerns links and wakes as [`Subscription::appended`] says. Returns
    /// the subscriptions that changed (a new link, or a wake), with the wake made.
    pub fn appended(
        &mut self,
        path: &str,
        before: Offset,
        tails: &dyn Tails,
        now_ms: u64,
        mut wake_id: impl FnMut() -> String,
    ) -> Vec<(String, Option<Woke>)> {
        let mut out = Vec::new();
        for id in self.candidates(path) {
            let changed = self.update_glob(&id, |s| {
                let link = |s: &Subscription| {
                    s.links.iter().find(|l| l.path == path).map(|l| (l.explicit, l.glob))
                };
                let was = link(s);
                let woke = s.appended(path, before, tails, now_ms, &mut wake_id);
                (woke.is_some() || link(s) != was).then_some(woke)
            });
            if let Some(Some(woke)) = changed {
                out.push((id, woke));
            }
        }
        out
    }

    /// A stream was deleted or expired: every subscription linking it forgets it (glob) or
    /// restarts it (explicit). Returns the subscriptions that linked it.
    pub fn stream_removed(&mut self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for id in self.candidates(path) {
            let linked = self.update_glob(&id, |s| {
                let linked = s.links.iter().any(|l| l.path == path);
                s.stream_removed(path);
                linked
            });
            if linked == Some(true) {
                out.push(id);
            }
        }
        out
    }

    /// The lowest incarnation not given yet (stored, so that a restart never reuses one).
    #[must_use]
    pub fn next_incarnation(&self) -> u64 {
        self.next_incarnation
    }

    /// Every subscription, for timers and listing.
    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.subs.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::glob::Pattern;
    use crate::subscription::state::Delivery;
    use proptest::prelude::*;

    fn config(pattern: Option<&str>, streams: &[&str]) -> Config {
        Config {
            delivery: Delivery::PullWake { wake_stream: "wake".into() },
            pattern: pattern.map(|p| Pattern::parse(p).unwrap()),
            streams: streams.iter().map(|s| (*s).to_owned()).collect(),
            lease_ttl_ms: 1_000,
            description: None,
        }
    }

    fn none(_: &str) -> Option<Offset> {
        None
    }

    #[test]
    fn put_creates_confirms_or_conflicts() {
        let mut r = Registry::new(0);
        let c = config(Some("e/*"), &[]);
        assert_eq!(r.put("a", c.clone(), 0, &none, []), Ok(Put::Created));
        assert_eq!(r.put("a", c.clone(), 5, &none, []), Ok(Put::Confirmed));
        assert_eq!(r.put("a", config(Some("e/**"), &[]), 5, &none, []), Err(PutError::Conflict));
        let first = r.get("a").unwrap().incarnation;
        assert!(r.delete("a"));
        assert!(!r.delete("a"));
        r.put("a", c, 6, &none, []).unwrap();
        assert_ne!(r.get("a").unwrap().incarnation, first, "a re-created id is a new incarnation");
    }

    #[test]
    fn appends_reach_only_the_subscriptions_they_concern() {
        let mut r = Registry::new(0);
        r.put("glob", config(Some("events/*"), &[]), 0, &none, []).unwrap();
        r.put("deep", config(Some("events/**"), &[]), 0, &none, []).unwrap();
        r.put("all", config(Some("**"), &[]), 0, &none, []).unwrap();
        r.put("manual", config(None, &["other/x"]), 0, &none, []).unwrap();
        let ids = |r: &Registry, p: &str| r.candidates(p).into_iter().collect::<Vec<_>>();
        assert_eq!(ids(&r, "events/a"), ["all", "deep", "glob"]);
        assert_eq!(ids(&r, "other/x"), ["all", "manual"]);
        assert_eq!(ids(&r, "other/y"), ["all"]);
        r.remove_stream("manual", "other/x");
        assert_eq!(ids(&r, "other/x"), ["all"], "the explicit index follows removals");
        r.add_streams("manual", &["other/y".into()], &none).unwrap().unwrap();
        assert_eq!(ids(&r, "other/y"), ["all", "manual"]);
        r.delete("all");
        assert!(r.candidates("zzz").is_empty());
    }

    #[test]
    fn an_append_wakes_each_concerned_idle_subscription_once() {
        let mut r = Registry::new(0);
        r.put("a", config(Some("e/*"), &[]), 0, &none, []).unwrap();
        r.put("b", config(None, &["e/1"]), 0, &none, []).unwrap();
        r.put("c", config(Some("x/*"), &[]), 0, &none, []).unwrap();
        let tails = |p: &str| (p == "e/1").then_some(Offset::at(10));
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("w_{n}")
        };
        let woke = r.appended("e/1", Offset::ZERO, &tails, 0, &mut next);
        let ids: Vec<&str> = woke.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(r.appended("e/1", Offset::ZERO, &tails, 1, &mut next).is_empty(), "in flight");
        assert_eq!(r.stream_removed("e/1"), ["a", "b"]);
        assert!(r.get("a").unwrap().links.is_empty());
        assert_eq!(r.get("b").unwrap().links[0].acked, Offset::ZERO);
    }

    #[test]
    fn the_subscription_limit_holds() {
        let mut r = Registry::new(0);
        for i in 0..MAX_SUBSCRIPTIONS {
            r.put(&format!("s{i}"), config(None, &["x"]), 0, &none, []).unwrap();
        }
        assert_eq!(r.put("one-more", config(None, &["x"]), 0, &none, []), Err(PutError::Full));
        assert_eq!(r.put("s0", config(None, &["x"]), 0, &none, []), Ok(Put::Confirmed));
    }

    #[test]
    fn restored_subscriptions_are_indexed_and_keep_incarnations_unique() {
        let mut a = Registry::new(0);
        a.put("s", config(Some("e/*"), &["m"]), 0, &none, []).unwrap();
        let stored = a.get("s").unwrap().clone();
        let mut b = Registry::new(0);
        b.restore(stored.clone());
        assert_eq!(b.candidates("e/1").len(), 1);
        assert_eq!(b.candidates("m").len(), 1);
        b.delete("s");
        b.put("s", config(Some("e/*"), &["m"]), 0, &none, []).unwrap();
        assert!(b.get("s").unwrap().incarnation > stored.incarnation);
    }

    proptest! {
        /// The index never misses a subscription an append concerns: its candidates are
        /// exactly those whose pattern matches the path or that link it explicitly.
        #[test]
        fn candidates_are_exactly_the_matching_subscriptions(
            patterns in prop::collection::vec(
                prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "**"]), 1..4), 1..8),
            explicit in prop::collection::vec(
                prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4), 0..4),
            path in prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..5),
        ) {
            let mut r = Registry::new(0);
            for (i, p) in patterns.iter().enumerate() {
                r.put(&format!("p{i}"), config(Some(&p.join("/")), &[]), 0, &none, []).unwrap();
            }
            for (i, e) in explicit.iter().enumerate() {
                r.put(&format!("e{i}"), config(None, &[&e.join("/")]), 0, &none, []).unwrap();
            }
            let path = path.join("/");
            let expected: BTreeSet<String> = r
                .iter()
                .filter(|s| {
                    s.config.pattern.as_ref().is_some_and(|p| p.matches(&path))
                        || s.links.iter().any(|l| l.explicit && l.path == path)
                })
                .map(|s| s.id.clone())
                .collect();
            let got = r.candidates(&path);
            prop_assert_eq!(r.concerns(&path), !got.is_empty());
            prop_assert!(expected.is_subset(&got), "missed: {:?} of {:?}", expected, got);
            // Candidates beyond the matches are fine (checked again) but must share the
            // literal prefix.
            for id in got.difference(&expected) {
                let s = r.get(id).unwrap();
                let prefix = s.config.pattern.as_ref().unwrap().literal_prefix();
                let with_slash = format!("{path}/");
                prop_assert!(with_slash.starts_with(&prefix));
            }
        }
    }
}
