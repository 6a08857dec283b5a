//! The subscription service (§6–7) over a real engine, in every mode, with a manual clock and
//! a scripted webhook sender: wakes, deliveries and their late outcomes, retries, leases,
//! claims, and what survives a restart (a process crash and a power cut).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ds_engine::fs::sim::{SimFs, Torn};
use ds_engine::subscription::keys::Use;
use ds_engine::subscription::service::SendFuture;
use ds_engine::subscription::state::Delivered;
use ds_engine::subscription::{Settings, SubError, Subscriptions, WebhookRequest, WebhookSender};
use ds_engine::{
    AppendRequest, ContentType, CreateRequest, Engine, Expiry, ManualClock, ReadFrom, StorageMode,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

mod common;

use common::{MODES, open};

/// Records every webhook and answers from a script (`Accepted` once it runs out); each answer
/// waits for a permit of `gate` when one is set, so a test decides when it arrives.
#[derive(Default)]
struct Script {
    sent: Mutex<Vec<WebhookRequest>>,
    answers: Mutex<VecDeque<Delivered>>,
    gate: Mutex<Option<Arc<Semaphore>>>,
}

impl Script {
    fn answer(&self, outcomes: &[Delivered]) {
        self.answers.lock().unwrap().extend(outcomes.iter().copied());
    }

    fn sent(&self) -> Vec<Value> {
        let sent = self.sent.lock().unwrap();
        sent.iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
    }
}

struct Sender(Arc<Script>);

impl WebhookSender for Sender {
    fn send(&self, request: WebhookRequest) -> SendFuture {
        let script = self.0.clone();
        Box::pin(async move {
            script.sent.lock().unwrap().push(request);
            let gate = script.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            script.answers.lock().unwrap().pop_front().unwrap_or(Delivered::Accepted)
        })
    }
}

struct Rig {
    engine: Arc<Engine>,
    subs: Arc<Subscriptions>,
    script: Arc<Script>,
    clock: ManualClock,
}

async fn rig(mode: StorageMode, sim: &SimFs, clock: &ManualClock) -> Rig {
    let engine = Arc::new(open(mode, sim, clock).await);
    let script = Arc::new(Script::default());
    let settings = Settings { allow_local_webhooks: true, ..Settings::default() };
    let subs = Subscriptions::new(engine.clone(), settings, Arc::new(Sender(script.clone())));
    subs.load().await.unwrap();
    Rig { engine, subs, script, clock: clock.clone() }
}

const BASE: &str = "http://127.0.0.1:4437/v1/stream";

fn text(body: &'static str) -> CreateRequest {
    CreateRequest {
        content_type: ContentType::new("text/plain"),
        expiry: Expiry::Never,
        closed: false,
        body: Bytes::from_static(body.as_bytes()),
    }
}

fn webhook(pattern: &str) -> Value {
    json!({"type": "webhook", "pattern": pattern, "lease_ttl_ms": 1000,
           "webhook": {"url": "http://127.0.0.1:9/hook"}})
}

impl Rig {
    /// Runs what is due and lets the deliveries it started finish (or reach a gate).
    async fn tick(&self) {
        for _ in 0..3 {
            self.subs.run_due().await;
            for _ in 0..500 {
                let gated = self.script.gate.lock().unwrap().is_some();
                if self.subs.deliveries_in_flight() == 0 || gated {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        }
    }

    async fn append(&self, name: &str, data: &'static str) -> String {
        let done = self.engine.append(name, AppendRequest::data("text/plain", data)).await.unwrap();
        done.tail.to_string()
    }

    async fn acked(&self, id: &str, path: &str) -> String {
        let view = self.subs.get(id).await.unwrap();
        let streams = view["streams"].as_array().unwrap();
        let link = streams.iter().find(|s| s["path"] == path).expect("linked");
        link["acked_offset"].as_str().unwrap().to_owned()
    }

    fn generation(&self, id: &str) -> u64 {
        self.subs.inspect(id).unwrap().generation
    }
}

/// The whole webhook path: an append to a matching stream links it (at its tail before the
/// append) and wakes the subscription; the webhook carries the snapshot, signed; `done`
/// acknowledges exactly the snapshot, and data that arrived after it wakes again.
#[tokio::test]
async fn a_done_webhook_acknowledges_its_snapshot_and_newer_data_wakes_again() {
    for mode in MODES {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
        let r = rig(mode, &sim, &clock).await;
        r.engine.create("events/old", text("history")).await.unwrap();
        let (created, view) = r.subs.put("s", &webhook("events/*"), BASE).await.unwrap();
        assert!(created);
        assert_eq!(view["streams"][0]["path"], "events/old", "backfilled at its tail");
        r.engine.create("events/a", text("")).await.unwrap();
        r.script.answer(&[Delivered::Done]);
        let gate = Arc::new(Semaphore::new(0));
        *r.script.gate.lock().unwrap() = Some(gate.clone());
        let tail = r.append("events/a", "one").await;
        r.tick().await;
        let sent = r.script.sent();
        assert_eq!(sent.len(), 1, "{mode:?}: one delivery");
        let body = &sent[0];
        assert_eq!(body["subscription_id"], "s");
        assert_eq!(body["generation"], 1);
        assert_eq!(body["callback_url"], format!("{BASE}/__ds/subscriptions/s/callback"));
        let a = body["streams"].as_array().unwrap().iter().find(|s| s["path"] == "events/a");
        assert_eq!(a.unwrap()["tail_offset"], tail.as_str());
        assert_eq!(a.unwrap()["has_pending"], true);
        let old = body["streams"].as_array().unwrap().iter().find(|s| s["path"] == "events/old");
        assert_eq!(old.unwrap()["has_pending"], false, "history is not pending");
        // The signature verifies with the JWKS key, over `t.body`.
        let request = r.script.sent.lock().unwrap()[0].clone();
        let (t, rest) = request.signature.strip_prefix("t=").unwrap().split_once(",kid=").unwrap();
        let (kid, sig) = rest.split_once(",ed25519=").unwrap();
        let jwks = r.subs.jwks().await.unwrap();
        let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).unwrap();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let x = b64.decode(key["x"].as_str().unwrap()).unwrap();
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(&request.body);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, x)
            .verify(&signed, &b64.decode(sig).unwrap())
            .expect("the signature verifies");
        // More data arrives while the delivery is in flight: not in the snapshot.
        let later = r.append("events/a", "two").await;
        gate.add_permits(1);
        r.tick().await;
        assert_eq!(r.acked("s", "events/a").await, tail, "{mode:?}: done acks the snapshot only");
        assert_eq!(r.generation("s"), 2, "{mode:?}: the newer data woke it again");
        let sent = r.script.sent();
        let again = &sent.last().unwrap()["streams"];
        let a = again.as_array().unwrap().iter().find(|s| s["path"] == "events/a").unwrap();
        assert_eq!(a["tail_offset"], later.as_str());
        gate.add_permits(10);
        r.tick().await;
    }
}

/// Regression (reference server): a late `{done:true}` for a wake whose lease expired ended
/// the newer wake and acknowledged its snapshot.
#[tokio::test]
async fn a_late_done_for_an_expired_wake_changes_nothing() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
    let r = rig(StorageMode::Memory, &sim, &clock).await;
    r.subs.put("s", &webhook("e/*"), BASE).await.unwrap();
    r.engine.create("e/1", text("")).await.unwrap();
    let gate = Arc::new(Semaphore::new(0));
    *r.script.gate.lock().unwrap() = Some(gate.clone());
    r.script.answer(&[Delivered::Done, Delivered::Accepted]);
    r.append("e/1", "x").await;
    r.tick().await;
    assert_eq!(r.script.sent().len(), 1);
    // The lease (1 s) ends while the receiver sits on the delivery.
    r.clock.advance_ms(1_001);
    r.tick().await;
    assert_eq!(r.generation("s"), 2, "the expired lease made a new wake");
    let wake = r.subs.inspect("s").unwrap().wake.unwrap();
    // The first delivery's `done` arrives now, late; the second delivery is still waiting
    // for its turn (one delivery per subscription at a time).
    gate.add_permits(1);
    r.tick().await;
    let now = r.subs.inspect("s").unwrap();
    assert_eq!(now.wake.as_ref().map(|w| w.id.clone()), Some(wake.id), "the new wake stands");
    assert_eq!(now.links[0].acked, ds_engine::Offset::ZERO, "nothing was acknowledged");
    gate.add_permits(1);
    r.tick().await;
    assert_eq!(r.script.sent().len(), 2, "the new wake was delivered after the late answer");
    assert_eq!(r.script.sent()[1]["generation"], 2);
}

/// A receiver that fails gets retries with backoff, `status: failed` while one is pending,
/// and the schedule survives a restart (persistent modes).
#[tokio::test]
async fn failed_deliveries_back_off_and_the_schedule_survives_a_restart() {
    for mode in MODES {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
        let r = rig(mode, &sim, &clock).await;
        let mut config = webhook("e/*");
        config["lease_ttl_ms"] = json!(600_000);
        r.subs.put("s", &config, BASE).await.unwrap();
        r.engine.create("e/1", text("")).await.unwrap();
        r.script.answer(&[Delivered::Failed, Delivered::Failed]);
        r.append("e/1", "x").await;
        r.tick().await;
        assert_eq!(r.subs.get("s").await.unwrap()["status"], "failed", "{mode:?}");
        let retry = r.subs.inspect("s").unwrap().retry;
        assert_eq!(retry.attempts, 1);
        let at = retry.next_attempt_at_ms.unwrap();
        let now = 1_800_000_000_000;
        assert!((now + 800..=now + 1_200).contains(&at), "{mode:?}: 1 s ± 20%: {}", at - now);
        r.clock.advance_ms(700);
        r.tick().await;
        assert_eq!(r.script.sent().len(), 1, "{mode:?}: not before the retry time");
        r.clock.advance_ms(600);
        r.tick().await;
        assert_eq!(r.script.sent().len(), 2, "{mode:?}: retried");
        let retry = r.subs.inspect("s").unwrap().retry;
        assert_eq!(retry.attempts, 2);
        let at = retry.next_attempt_at_ms.unwrap();
        if mode == StorageMode::Memory {
            continue;
        }
        // Restart (a process crash): the schedule holds.
        drop(r);
        let sim = sim.process_crash();
        let r = rig(mode, &sim, &clock).await;
        assert_eq!(r.subs.inspect("s").unwrap().retry.attempts, 2, "{mode:?}");
        r.tick().await;
        assert!(r.script.sent().is_empty(), "{mode:?}: the retry time is honoured");
        r.clock.advance_ms(at - (now + 1_300) + 1);
        r.script.answer(&[Delivered::Accepted]);
        r.tick().await;
        assert_eq!(r.script.sent().len(), 1, "{mode:?}: delivered at the stored time");
        assert_eq!(r.subs.get("s").await.unwrap()["status"], "active");
    }
}

fn pull(wake_stream: &str) -> Value {
    json!({"type": "pull-wake", "pattern": "jobs/*", "wake_stream": wake_stream, "lease_ttl_ms": 1000})
}

async fn wake_events(engine: &Engine, stream: &str) -> Vec<Value> {
    let chunk = engine.read(stream, ReadFrom::Start).await.unwrap();
    let body = chunk.into_body().concat();
    serde_json::from_slice::<Vec<Value>>(&body).unwrap()
}

fn token_of(claim: &Value) -> String {
    claim["token"].as_str().unwrap().to_owned()
}

/// Pull-wake end to end: a wake event in the wake stream, one claim wins, acks move the
/// cursor (never backwards, never past the tail), `done` ends the wake, release makes the
/// next one; wake events never wake their own subscription.
#[tokio::test]
async fn pull_wake_claims_acks_and_releases() {
    for mode in MODES {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
        let r = rig(mode, &sim, &clock).await;
        let json_ct = CreateRequest {
            content_type: ContentType::new("application/json"),
            expiry: Expiry::Never,
            closed: false,
            body: Bytes::from_static(b"[]"),
        };
        r.engine.create("jobs/wake", json_ct).await.unwrap();
        // The wake stream matches the pattern too: its events must not wake anything.
        r.subs.put("p", &pull("jobs/wake"), BASE).await.unwrap();
        let no_work = r.subs.claim("p", None, &json!({"worker": "w1"})).await.unwrap_err();
        assert_eq!(no_work, SubError::NoPendingWork, "{mode:?}");
        r.engine.create("jobs/1", text("")).await.unwrap();
        let tail = r.append("jobs/1", "work").await;
        r.tick().await;
        let events = wake_events(&r.engine, "jobs/wake").await;
        assert_eq!(events.len(), 1, "{mode:?}: one event, and it woke nothing: {events:?}");
        assert_eq!(events[0]["subscription_id"], "p");
        assert_eq!(events[0]["stream"], "jobs/1");
        assert_eq!(events[0]["type"], "wake");
        let claim = r.subs.claim("p", None, &json!({"worker": "w1"})).await.unwrap().body;
        let second = r.subs.claim("p", None, &json!({"worker": "w2"})).await.unwrap_err();
        assert_eq!(second, SubError::AlreadyClaimed { holder: "w1".into(), generation: 1 });
        let (generation, wake_id) = (claim["generation"].clone(), claim["wake_id"].clone());
        let token = token_of(&claim);
        let ack = |offset: &str, done: bool| {
            json!({"generation": generation, "wake_id": wake_id, "done": done,
                   "acks": [{"stream": "jobs/1", "offset": offset}]})
        };
        // Past the tail, garbage, -1: refused, nothing applied.
        let beyond = "0000000000001000_0000000000000000";
        for (bad, want) in [
            (beyond, "INVALID_OFFSET"),
            ("-1", "INVALID_OFFSET"),
            ("now", "INVALID_OFFSET"),
            ("zz", "INVALID_REQUEST"),
        ] {
            let e = r.subs.ack("p", Use::Claim, &token, &ack(bad, false)).await.unwrap_err();
            let code = match e {
                SubError::InvalidOffset(_) => "INVALID_OFFSET",
                SubError::Invalid(_) => "INVALID_REQUEST",
                other => panic!("{other:?}"),
            };
            assert_eq!(code, want, "{mode:?}: {bad}");
        }
        assert_eq!(r.acked("p", "jobs/1").await, "0000000000000000_0000000000000000");
        assert!(!r.subs.ack("p", Use::Claim, &token, &ack(&tail, false)).await.unwrap());
        let zero = "0000000000000000_0000000000000000";
        let back = r.subs.ack("p", Use::Claim, &token, &ack(zero, false)).await.unwrap_err();
        assert!(matches!(back, SubError::InvalidOffset(_)), "{mode:?}: a cursor never goes back");
        // A callback token does not fit an ack, nor a claim token a callback.
        let wrong = r.subs.ack("p", Use::Callback, &token, &ack(&tail, true)).await.unwrap_err();
        assert!(matches!(wrong, SubError::Invalid(_)), "{mode:?}: {wrong:?}");
        assert!(!r.subs.ack("p", Use::Claim, &token, &ack(&tail, true)).await.unwrap());
        let replay = r.subs.ack("p", Use::Claim, &token, &ack(&tail, true)).await.unwrap_err();
        assert_eq!(replay, SubError::Fenced, "{mode:?}: a replayed done is fenced");
        // New work: claim (which makes the wake at once), release, and the next wake.
        r.append("jobs/1", "more").await;
        let claim = r.subs.claim("p", None, &json!({"worker": "w2"})).await.unwrap().body;
        assert_eq!(claim["generation"], 2);
        let fence = json!({"generation": 2, "wake_id": claim["wake_id"]});
        r.subs.release("p", &token_of(&claim), &fence).await.unwrap();
        assert_eq!(r.generation("p"), 3, "{mode:?}: released work wakes again");
        let stale = r.subs.release("p", &token_of(&claim), &fence).await.unwrap_err();
        assert_eq!(stale, SubError::Fenced);
        r.tick().await;
        let events = wake_events(&r.engine, "jobs/wake").await;
        let generations: Vec<u64> =
            events.iter().map(|e| e["generation"].as_u64().unwrap()).collect();
        // Generation 2 was made by a claim and released before the scheduler ran: a wake
        // that ended unannounced needs no announcement.
        assert_eq!(generations, [1, 3], "{mode:?}");
    }
}

/// Two workers claiming at once: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_simultaneous_claims_exactly_one_wins() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
    let r = rig(StorageMode::FileDurable, &sim, &clock).await;
    r.engine.create("jobs/1", text("x")).await.unwrap();
    r.subs
        .put("p", &json!({"type": "pull-wake", "streams": ["jobs/1"], "wake_stream": "w"}), BASE)
        .await
        .unwrap();
    for round in 0..20 {
        r.append("jobs/1", "y").await;
        let (wa, wb) = (json!({"worker": "a"}), json!({"worker": "b"}));
        let (a, b) = tokio::join!(r.subs.claim("p", None, &wa), r.subs.claim("p", None, &wb));
        let won = [&a, &b].iter().filter(|c| c.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {a:?} {b:?}");
        let claim = a.or(b).unwrap().body;
        let fence = json!({"generation": claim["generation"], "wake_id": claim["wake_id"],
            "done": true, "acks": [{"stream": "jobs/1", "offset": claim["streams"][0]["tail_offset"]}]});
        r.subs.ack("p", Use::Claim, &token_of(&claim), &fence).await.unwrap();
    }
}

/// A lease held across a restart stays held until its deadline, then expires into a new
/// wake; acknowledged cursors survive a power cut.
#[tokio::test]
async fn leases_and_cursors_survive_a_restart() {
    for mode in [StorageMode::FileFast, StorageMode::FileDurable, StorageMode::Acid] {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
        let r = rig(mode, &sim, &clock).await;
        r.engine.create("jobs/1", text("")).await.unwrap();
        r.subs.put("p", &pull("w"), BASE).await.unwrap();
        let first = r.append("jobs/1", "a").await;
        r.append("jobs/1", "b").await;
        let claim = r.subs.claim("p", None, &json!({"worker": "w1"})).await.unwrap().body;
        let ack = json!({"generation": claim["generation"], "wake_id": claim["wake_id"],
            "acks": [{"stream": "jobs/1", "offset": first}]});
        r.subs.ack("p", Use::Claim, &token_of(&claim), &ack).await.unwrap();
        drop(r);
        let sim = if mode == StorageMode::FileFast {
            sim.process_crash()
        } else {
            sim.power_loss(Torn::Prefix(7))
        };
        let r = rig(mode, &sim, &clock).await;
        assert_eq!(r.acked("p", "jobs/1").await, first, "{mode:?}: the ack survived");
        let held = r.subs.claim("p", None, &json!({"worker": "w2"})).await.unwrap_err();
        assert!(matches!(held, SubError::AlreadyClaimed { .. }), "{mode:?}: still held");
        // The old token still works after the restart (the keys were stored).
        let ack2 = json!({"generation": claim["generation"], "wake_id": claim["wake_id"]});
        r.subs.ack("p", Use::Claim, &token_of(&claim), &ack2).await.unwrap();
        r.clock.advance_ms(1_001);
        r.tick().await;
        assert_eq!(r.generation("p"), 2, "{mode:?}: the lease expired into a new wake");
        r.subs.claim("p", None, &json!({"worker": "w2"})).await.unwrap();
    }
}

/// A deleted subscription's requests fail, and one re-created under its id accepts none of
/// the old tokens.
#[tokio::test]
async fn a_recreated_subscription_refuses_the_old_tokens() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
    let r = rig(StorageMode::Acid, &sim, &clock).await;
    r.engine.create("jobs/1", text("x")).await.unwrap();
    r.subs.put("p", &pull("w"), BASE).await.unwrap();
    r.append("jobs/1", "y").await;
    let claim = r.subs.claim("p", None, &json!({"worker": "w1"})).await.unwrap().body;
    let fence = json!({"generation": claim["generation"], "wake_id": claim["wake_id"]});
    r.subs.delete("p").await.unwrap();
    r.subs.delete("p").await.unwrap();
    let gone = r.subs.release("p", &token_of(&claim), &fence).await.unwrap_err();
    assert_eq!(gone, SubError::NotFound);
    r.subs.put("p", &pull("w"), BASE).await.unwrap();
    r.append("jobs/1", "z").await;
    let again = r.subs.claim("p", None, &json!({"worker": "w1"})).await.unwrap().body;
    assert_eq!(again["generation"], claim["generation"], "generations start over");
    // Same generation, but another incarnation: fenced (even with the new wake id).
    let forged = json!({"generation": again["generation"], "wake_id": again["wake_id"]});
    let old = r.subs.release("p", &token_of(&claim), &forged).await.unwrap_err();
    assert_eq!(old, SubError::Fenced);
}

/// A missing wake stream: the wake stays claimable and the event is retried until the stream
/// exists.
#[tokio::test]
async fn a_missing_wake_stream_is_retried_and_never_blocks_claims() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
    let r = rig(StorageMode::FileFast, &sim, &clock).await;
    r.subs.put("p", &pull("wake/late"), BASE).await.unwrap();
    r.engine.create("jobs/1", text("")).await.unwrap();
    r.append("jobs/1", "a").await;
    r.tick().await;
    assert_eq!(r.generation("p"), 1);
    r.engine
        .create(
            "wake/late",
            CreateRequest {
                content_type: ContentType::new("application/json"),
                expiry: Expiry::Never,
                closed: false,
                body: Bytes::new(),
            },
        )
        .await
        .unwrap();
    r.clock.advance_ms(1_300);
    r.tick().await;
    assert_eq!(wake_events(&r.engine, "wake/late").await.len(), 1, "written once it existed");
    r.subs.claim("p", None, &json!({"worker": "w"})).await.unwrap();
}

/// Deleting a stream drops its glob links; an explicit link stays and restarts at the
/// beginning (a later stream of that name is new data).
#[tokio::test]
async fn deleted_streams_leave_glob_links_and_restart_explicit_ones() {
    for mode in MODES {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
        let r = rig(mode, &sim, &clock).await;
        r.engine.create("e/1", text("a")).await.unwrap();
        r.engine.create("m", text("b")).await.unwrap();
        let config =
            json!({"type": "pull-wake", "pattern": "e/*", "streams": ["m"], "wake_stream": "w"});
        r.subs.put("p", &config, BASE).await.unwrap();
        r.engine.delete("e/1").await.unwrap();
        r.engine.delete("m").await.unwrap();
        let view = r.subs.get("p").await.unwrap();
        assert_eq!(
            view["streams"],
            json!([{"path": "m", "link_type": "explicit", "acked_offset": "0000000000000000_0000000000000000"}]),
            "{mode:?}"
        );
        // A stream created again under the explicit name is pending from its start.
        r.engine.create("m", text("new")).await.unwrap();
        r.tick().await;
        assert_eq!(r.generation("p"), 1, "{mode:?}");
    }
}

/// Hostile bodies get 400s, never a panic or a change.
#[tokio::test]
async fn hostile_bodies_are_refused() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
    let r = rig(StorageMode::Memory, &sim, &clock).await;
    r.engine.create("jobs/1", text("x")).await.unwrap();
    r.subs.put("p", &pull("w"), BASE).await.unwrap();
    r.append("jobs/1", "y").await;
    let claim = r.subs.claim("p", None, &json!({"worker": "w1"})).await.unwrap().body;
    let token = token_of(&claim);
    let wake = claim["wake_id"].clone();
    for body in [
        json!({"generation": "1", "wake_id": wake}),
        json!({"generation": 1.5, "wake_id": wake}),
        json!({"generation": 9_007_199_254_740_993_u64, "wake_id": wake}),
        json!({"generation": -1, "wake_id": wake}),
        json!({"wake_id": wake}),
        json!({"generation": 1}),
        json!({"generation": 1, "wake_id": wake, "done": "yes"}),
        json!({"generation": 1, "wake_id": wake, "acks": {}}),
        json!({"generation": 1, "wake_id": wake, "acks": [{"offset": "x"}]}),
        json!({"generation": 1, "wake_id": wake, "acks": vec![json!({"stream": "jobs/1", "offset": "0000000000000000_0000000000000000"}); 10_000]}),
    ] {
        let e = r.subs.ack("p", Use::Claim, &token, &body).await.unwrap_err();
        assert!(matches!(e, SubError::Invalid(_)), "{body}: {e:?}");
    }
    for worker in [json!(""), json!(7), json!("w".repeat(300))] {
        let e = r.subs.claim("p", None, &json!({"worker": worker})).await.unwrap_err();
        assert!(matches!(e, SubError::Invalid(_)), "{worker}");
    }
    for (id, body) in [
        ("..", pull("w")),
        ("a b", pull("w")),
        (&"x".repeat(2048)[..], pull("w")),
        ("ok", json!({"type": "pull-wake", "pattern": "a//b", "wake_stream": "w"})),
        ("ok", json!({"type": "pull-wake", "pattern": "../x", "wake_stream": "w"})),
        ("ok", json!({"type": "pull-wake", "streams": ["a/".repeat(1000)], "wake_stream": "w"})),
        (
            "ok",
            json!({"type": "pull-wake", "streams": ["x"], "wake_stream": "w", "lease_ttl_ms": 999}),
        ),
        (
            "ok",
            json!({"type": "pull-wake", "streams": ["x"], "wake_stream": "w", "lease_ttl_ms": 600_001}),
        ),
        (
            "ok",
            json!({"type": "pull-wake", "streams": ["x"], "wake_stream": "w", "description": "d".repeat(1 << 20)}),
        ),
        (
            "ok",
            json!({"type": "webhook", "streams": ["x"], "webhook": {"url": "http://10.0.0.1/h"}}),
        ),
    ] {
        let e = r.subs.put(id, &body, BASE).await.unwrap_err();
        assert!(matches!(e, SubError::Invalid(_) | SubError::UrlRejected(_)), "{id} {body}: {e:?}");
    }
    assert!(r.subs.get("ok").await.is_err(), "nothing was created");
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Start-up reconciles: a linked stream that expired while the server was down loses its
/// glob link, and a matching stream that got data while no subscription heard of it (a
/// crash between an append and the flush of its link) is linked at its start and woken.
#[tokio::test]
async fn start_up_reconciles_links_with_the_streams() {
    for mode in [StorageMode::FileFast, StorageMode::FileDurable, StorageMode::Acid] {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
        let r = rig(mode, &sim, &clock).await;
        let expiring =
            CreateRequest { expiry: Expiry::At { unix_ms: 1_800_000_001_000 }, ..text("x") };
        r.engine.create("e/short", expiring).await.unwrap();
        r.subs
            .put("p", &json!({"type": "pull-wake", "pattern": "e/*", "wake_stream": "w"}), BASE)
            .await
            .unwrap();
        assert_eq!(r.subs.inspect("p").unwrap().links.len(), 1);
        drop(r);
        // The engine alone (no subscriptions): an append nobody links.
        let engine = open(mode, &sim, &clock).await;
        engine.create("e/unheard", text("")).await.unwrap();
        engine.append("e/unheard", AppendRequest::data("text/plain", "data")).await.unwrap();
        engine.shutdown().await.unwrap();
        drop(engine);
        clock.advance_ms(5_000);
        let r = rig(mode, &sim, &clock).await;
        let sub = r.subs.inspect("p").unwrap();
        let paths: Vec<&str> = sub.links.iter().map(|l| l.path.as_str()).collect();
        assert_eq!(paths, ["e/unheard"], "{mode:?}");
        assert_eq!(sub.links[0].acked, ds_engine::Offset::ZERO);
        assert_eq!(sub.generation, 1, "{mode:?}: its data woke the subscription");
    }
}

/// A control database that fails stops subscription requests (503), not the streams.
#[tokio::test]
async fn a_failed_control_database_answers_503_and_streams_go_on() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
    let r = rig(StorageMode::FileFast, &sim, &clock).await;
    sim.fail_one_sync(0);
    let e = r.subs.put("p", &pull("w"), BASE).await.unwrap_err();
    assert!(matches!(e, SubError::Unavailable(_)), "{e:?}");
    assert!(matches!(r.subs.get("p").await, Err(SubError::Unavailable(_))));
    assert!(matches!(r.subs.jwks().await, Err(SubError::Unavailable(_))));
    r.engine.create("jobs/1", text("still")).await.unwrap();
    r.append("jobs/1", " fine").await;
}

/// Regression (review): creation listed streams under the pattern's literal prefix *with*
/// its final `/`, so `a/**` missed the stream `a`, and a pattern without wildcards missed
/// the stream it names; a restart then linked them at their start (replaying history).
#[tokio::test]
async fn creation_backfills_streams_the_pattern_names_exactly() {
    for mode in MODES {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
        let r = rig(mode, &sim, &clock).await;
        for name in ["events", "events/a", "orders/7", "eventsx"] {
            r.engine.create(name, text("history")).await.unwrap();
        }
        for (id, pattern) in [("deep", "events/**"), ("exact", "orders/7")] {
            let config = json!({"type": "pull-wake", "pattern": pattern, "wake_stream": "w"});
            r.subs.put(id, &config, BASE).await.unwrap();
        }
        let paths = |id: &str| {
            let sub = r.subs.inspect(id).unwrap();
            for l in &sub.links {
                assert_eq!(Some(l.acked), r.engine.tail(&l.path), "{mode:?}: at its tail");
            }
            sub.links.iter().map(|l| l.path.clone()).collect::<Vec<_>>()
        };
        assert_eq!(paths("deep"), ["events", "events/a"], "{mode:?}");
        assert_eq!(paths("exact"), ["orders/7"], "{mode:?}");
        assert_eq!(r.generation("deep"), 0, "{mode:?}: no history is pending");
    }
}

/// §7.3: a stale request is fenced (409) even when its token has also expired; a current
/// one with an expired token is 401 `TOKEN_EXPIRED`.
#[tokio::test]
async fn stale_requests_are_fenced_before_their_token_expiry_counts() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
    let r = rig(StorageMode::Memory, &sim, &clock).await;
    r.engine.create("jobs/1", text("x")).await.unwrap();
    let mut config = pull("w");
    config["lease_ttl_ms"] = json!(600_000);
    r.subs.put("p", &config, BASE).await.unwrap();
    r.append("jobs/1", "y").await;
    let old = r.subs.claim("p", None, &json!({"worker": "w"})).await.unwrap().body;
    let fence = json!({"generation": old["generation"], "wake_id": old["wake_id"]});
    r.subs.release("p", &token_of(&old), &fence).await.unwrap();
    let current = r.subs.claim("p", None, &json!({"worker": "w"})).await.unwrap().body;
    r.clock.advance_ms(3_601_000);
    let stale = r.subs.release("p", &token_of(&old), &fence).await.unwrap_err();
    assert_eq!(stale, SubError::Fenced);
    let fence = json!({"generation": current["generation"], "wake_id": current["wake_id"]});
    let expired = r.subs.release("p", &token_of(&current), &fence).await.unwrap_err();
    assert_eq!(expired, SubError::TokenExpired);
}

/// A retry delivers the wake's snapshot again, not streams linked after it (their data is
/// for the next wake, which `done` then makes).
#[tokio::test]
async fn a_retry_carries_the_same_snapshot() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
    let r = rig(StorageMode::Memory, &sim, &clock).await;
    let mut config = webhook("e/*");
    config["lease_ttl_ms"] = json!(600_000);
    r.subs.put("s", &config, BASE).await.unwrap();
    r.engine.create("e/1", text("")).await.unwrap();
    r.engine.create("e/2", text("")).await.unwrap();
    r.script.answer(&[Delivered::Failed, Delivered::Done]);
    let tail = r.append("e/1", "x").await;
    r.tick().await;
    r.append("e/2", "y").await;
    r.clock.advance_ms(1_300);
    r.tick().await;
    let sent = r.script.sent();
    assert_eq!(sent.len(), 3, "first try, retry, then the next wake for e/2");
    assert_eq!(sent[0]["streams"], sent[1]["streams"], "the retry carries the same snapshot");
    let paths = |body: &Value| -> Vec<String> {
        body["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(paths(&sent[1]), ["e/1"]);
    assert_eq!(sent[1]["streams"][0]["tail_offset"], tail.as_str());
    assert_eq!(paths(&sent[2]), ["e/1", "e/2"]);
    assert_eq!(sent[2]["generation"], 2);
}

/// A closed wake stream refuses the event: logged and retried, and the wake stays
/// claimable.
#[tokio::test]
async fn a_closed_wake_stream_never_blocks_claims() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
    let r = rig(StorageMode::FileDurable, &sim, &clock).await;
    r.engine.create("wake/closed", CreateRequest { closed: true, ..text("") }).await.unwrap();
    r.subs.put("p", &pull("wake/closed"), BASE).await.unwrap();
    r.engine.create("jobs/1", text("")).await.unwrap();
    r.append("jobs/1", "a").await;
    r.tick().await;
    r.clock.advance_ms(1_300);
    r.tick().await;
    assert_eq!(r.generation("p"), 1);
    r.subs.claim("p", None, &json!({"worker": "w"})).await.unwrap();
}

/// A subscription deleted and re-created while a webhook of the old one is in flight: the
/// old delivery's answer changes nothing, and the new subscription's own delivery is not
/// held up or doubled by it.
#[tokio::test]
async fn a_delivery_in_flight_does_not_touch_a_recreated_subscription() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_800_000_000_000));
    let r = rig(StorageMode::Memory, &sim, &clock).await;
    r.subs.put("s", &webhook("e/*"), BASE).await.unwrap();
    r.engine.create("e/1", text("")).await.unwrap();
    let gate = Arc::new(Semaphore::new(0));
    *r.script.gate.lock().unwrap() = Some(gate.clone());
    r.script.answer(&[Delivered::Done, Delivered::Accepted]);
    r.append("e/1", "x").await;
    r.tick().await;
    assert_eq!(r.subs.deliveries_in_flight(), 1);
    r.subs.delete("s").await.unwrap();
    r.subs.put("s", &webhook("e/*"), BASE).await.unwrap();
    r.append("e/1", "y").await;
    r.tick().await;
    assert_eq!(r.script.sent().len(), 2, "the new subscription's wake went out");
    gate.add_permits(1);
    r.tick().await;
    let s = r.subs.inspect("s").unwrap();
    assert_eq!(s.generation, 1, "the old done did not end the new wake");
    assert!(s.wake.is_some());
    assert_eq!(r.subs.deliveries_in_flight(), 1, "the new delivery still counts as running");
    gate.add_permits(1);
    r.tick().await;
    assert_eq!(r.subs.deliveries_in_flight(), 0);
}
