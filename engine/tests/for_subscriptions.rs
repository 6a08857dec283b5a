//! What subscriptions (issue 9) need from the engine, in every mode:
//! - listing streams by name prefix (a new subscription's pattern is matched against the
//!   existing streams): only live streams, with their current tails, in name order, also
//!   after a restart;
//! - where an append's data starts (a stream that first matches through an append is
//!   linked there), pipelined appends included.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use bytes::Bytes;
use ds_engine::fs::sim::{SimFs, Torn};
use ds_engine::{
    AppendRequest, ContentType, CreateRequest, Engine, Expiry, ForkRequest, ManualClock,
    StorageMode,
};

mod common;

use common::{MODES, open};

fn create(body: &'static str, expiry: Expiry) -> CreateRequest {
    CreateRequest {
        content_type: ContentType::new("text/plain"),
        expiry,
        closed: false,
        body: Bytes::from_static(body.as_bytes()),
    }
}

fn listed(engine: &Engine, prefix: &str) -> Vec<(String, u64)> {
    engine
        .list(prefix)
        .unwrap()
        .into_iter()
        .map(|(name, info)| (name.to_string(), info.tail.pos()))
        .collect()
}

#[tokio::test]
async fn lists_live_streams_by_prefix_with_their_tails() {
    for mode in MODES {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_000_000));
        let engine = open(mode, &sim, &clock).await;
        engine.create("events/b", create("bb", Expiry::Never)).await.unwrap();
        engine.create("events/a", create("a", Expiry::Never)).await.unwrap();
        engine.append("events/a", AppendRequest::data("text/plain", "123")).await.unwrap();
        engine.create("events/deleted", create("x", Expiry::Never)).await.unwrap();
        engine.delete("events/deleted").await.unwrap();
        engine.create("events/expiring", create("x", Expiry::IdleTtl { secs: 1 })).await.unwrap();
        // A source deleted while a fork reads it is soft-deleted: gone for listing too.
        engine.create("events/source", create("src", Expiry::Never)).await.unwrap();
        let fork = ForkRequest {
            source: "events/source".into(),
            offset: None,
            sub: 0,
            content_type_given: false,
        };
        engine.fork("other/fork", create("", Expiry::Never), fork).await.unwrap();
        engine.delete("events/source").await.unwrap();
        engine.create("eventsx", create("y", Expiry::Never)).await.unwrap();
        clock.advance_ms(5_000);

        let a = listed(&engine, "events/")[0].1;
        assert!(a > 0, "{mode:?}");
        let names: Vec<String> = listed(&engine, "events/").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["events/a", "events/b"], "{mode:?}");
        let all: Vec<String> = listed(&engine, "").into_iter().map(|(n, _)| n).collect();
        assert_eq!(all, ["events/a", "events/b", "eventsx", "other/fork"], "{mode:?}");
        let tail = engine.head("events/a").await.unwrap().tail;
        assert_eq!(
            engine.list("events/a").unwrap()[0].1.tail,
            tail,
            "{mode:?}: the tail a HEAD shows"
        );
        if mode != StorageMode::Memory {
            drop(engine);
            let sim = if mode == StorageMode::FileFast {
                sim.process_crash()
            } else {
                sim.power_loss(Torn::Clean)
            };
            let engine = open(mode, &sim, &clock).await;
            let names: Vec<String> =
                listed(&engine, "events/").into_iter().map(|(n, _)| n).collect();
            // A restart counts as an access of every sliding-TTL stream (FORMAT.md), so the
            // idle one is back until its TTL passes again.
            assert_eq!(
                names,
                ["events/a", "events/b", "events/expiring"],
                "{mode:?} after a restart"
            );
            clock.advance_ms(5_000);
            let names: Vec<String> =
                listed(&engine, "events/").into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, ["events/a", "events/b"], "{mode:?} once idle again");
        }
    }
}

#[tokio::test]
async fn an_append_reports_where_its_data_starts() {
    for mode in MODES {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_000_000));
        let engine = open(mode, &sim, &clock).await;
        engine.create("s", create("ab", Expiry::Never)).await.unwrap();
        let before = engine.head("s").await.unwrap().tail;
        let first = engine.append("s", AppendRequest::data("text/plain", "c")).await.unwrap();
        assert_eq!(first.start, before, "{mode:?}");
        assert!(first.tail > first.start, "{mode:?}");
        // Pipelined: the second starts where the first (not yet durable) ends.
        let t1 = engine.begin_append("s", AppendRequest::data("text/plain", "dd")).unwrap();
        let t2 = engine.begin_append("s", AppendRequest::data("text/plain", "e")).unwrap();
        let (a1, a2) = (t1.durable().await.unwrap(), t2.durable().await.unwrap());
        assert_eq!((a1.start, a2.start), (first.tail, a1.tail), "{mode:?}");
        assert_eq!(engine.head("s").await.unwrap().tail, a2.tail, "{mode:?}");
    }
}
