//! Offsets are incarnation-safe (issue 12): a name deleted and created again must not serve
//! the deleted stream's offsets, in every mode and across restarts.
//!
//! Regression: `PUT` "abc", `POST` "def", `DELETE`, `PUT` "123456789", then a read at the
//! first stream's offset 3 answered "456789": a reader resuming from a saved offset silently
//! read another stream from its middle.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use bytes::Bytes;
use ds_engine::fs::sim::{SimFs, Torn};
use ds_engine::{
    AppendRequest, ContentType, CreateRequest, Engine, Error, Expiry, ForkRequest, ManualClock,
    Offset, ReadFrom, StorageMode,
};

mod common;

use common::{MODES, open};

fn text(body: &'static str) -> CreateRequest {
    CreateRequest {
        content_type: ContentType::new("text/plain"),
        expiry: Expiry::Never,
        closed: false,
        body: Bytes::from_static(body.as_bytes()),
    }
}

fn append(body: &'static str) -> AppendRequest {
    AppendRequest::data("text/plain", body)
}

fn fork_of(source: &str, offset: Option<Offset>) -> ForkRequest {
    ForkRequest { source: source.into(), offset, sub: 0, content_type_given: false }
}

async fn read(engine: &Engine, name: &str, from: Offset) -> Result<String, Error> {
    let chunk = engine.read(name, ReadFrom::At(from)).await?;
    Ok(String::from_utf8(chunk.parts.concat()).unwrap())
}

#[tokio::test]
async fn offsets_of_a_deleted_stream_are_refused() {
    for mode in MODES {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_700_000_000_000));
        let engine = open(mode, &sim, &clock).await;
        let first = engine.create("s", text("abc")).await.unwrap();
        let after_abc = match first {
            ds_engine::Created::New(info) => info.tail,
            ds_engine::Created::Existing(_) => unreachable!(),
        };
        let after_def = engine.append("s", append("def")).await.unwrap().tail;
        engine.delete("s").await.unwrap();
        engine.create("s", text("123456789")).await.unwrap();
        let new_tail = engine.head("s").await.unwrap().tail;
        for (old, what) in [(after_abc, "inside the new data"), (after_def, "also inside it")] {
            assert_eq!(read(&engine, "s", old).await, Err(Error::OffsetGone), "{mode:?}: {what}");
        }
        assert_eq!(read(&engine, "s", Offset::ZERO).await.unwrap(), "123456789");
        assert_eq!(read(&engine, "s", new_tail).await.unwrap(), "");
        // Long-polls and SSE re-read from the offset they were given: the same check.
        let watched = engine.read("s", ReadFrom::Start).await.unwrap().next;
        assert_eq!(watched.to_string(), new_tail.to_string(), "{mode:?}");
        if mode == StorageMode::Memory {
            continue;
        }
        // Across a restart: a clean stop, then the machine off.
        engine.shutdown().await.unwrap();
        drop(engine);
        let engine = open(mode, &sim.power_loss(Torn::Clean), &clock).await;
        assert_eq!(read(&engine, "s", after_abc).await, Err(Error::OffsetGone), "{mode:?}");
        assert_eq!(read(&engine, "s", new_tail).await.unwrap(), "", "{mode:?}");
        assert_eq!(engine.head("s").await.unwrap().tail.to_string(), new_tail.to_string());
    }
}

/// A token minted before offsets carried tags (tag 0) is still served: an upgrade must not
/// strand every reader's saved position.
#[tokio::test]
async fn untagged_offsets_still_read() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_700_000_000_000));
    let engine = open(StorageMode::FileDurable, &sim, &clock).await;
    engine.create("u", text("abc")).await.unwrap();
    let first = engine.head("u").await.unwrap().tail;
    let tail = engine.append("u", append("def")).await.unwrap().tail;
    assert_ne!(tail.tag(), 0);
    assert_eq!(read(&engine, "u", first.with_tag(0)).await.unwrap(), "def");
    assert_eq!(read(&engine, "u", tail.with_tag(0)).await.unwrap(), "");
}

/// Forks at a reused name: the re-created fork's own offsets are new, while positions it
/// inherits keep their source's tokens, and an empty fork's tail is its source's token.
#[tokio::test]
async fn a_recreated_fork_refuses_the_old_forks_offsets() {
    for mode in MODES {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_700_000_000_000));
        let engine = open(mode, &sim, &clock).await;
        engine.create("y", text("aaaa")).await.unwrap();
        let y4 = engine.head("y").await.unwrap().tail;
        let y6 = engine.append("y", append("bb")).await.unwrap().tail;
        let empty = || CreateRequest { body: Bytes::new(), ..text("") };
        engine.fork("x", empty(), fork_of("y", Some(y4))).await.unwrap();
        let old_x = engine.append("x", append("XYZ")).await.unwrap().tail;
        engine.delete("x").await.unwrap();
        engine.fork("x", empty(), fork_of("y", Some(y6))).await.unwrap();
        let x_head = engine.head("x").await.unwrap().tail;
        assert_eq!(x_head.to_string(), y6.to_string(), "{mode:?}: no offset translation");
        engine.append("x", append("Q")).await.unwrap();
        assert_eq!(read(&engine, "x", old_x).await, Err(Error::OffsetGone), "{mode:?}");
        assert_eq!(read(&engine, "x", y4).await.unwrap(), "bbQ", "{mode:?}: inherited");
        assert_eq!(read(&engine, "x", y6).await.unwrap(), "Q", "{mode:?}: the fork point");
        // The fork's own offsets are its own: not the source's.
        assert_eq!(
            read(&engine, "y", engine.head("x").await.unwrap().tail).await,
            Err(Error::OffsetGone)
        );
        // A fork offset of a deleted incarnation names nothing in the source.
        let stale = engine.fork("z", empty(), fork_of("x", Some(old_x))).await;
        assert_eq!(stale.unwrap_err(), Error::OffsetUnknown, "{mode:?}");
        if mode == StorageMode::Memory {
            continue;
        }
        engine.shutdown().await.unwrap();
        drop(engine);
        let engine = open(mode, &sim.power_loss(Torn::Clean), &clock).await;
        assert_eq!(read(&engine, "x", old_x).await, Err(Error::OffsetGone), "{mode:?}");
        assert_eq!(read(&engine, "x", y6).await.unwrap(), "Q", "{mode:?}: after a restart");
    }
}
