//! §10.1.3: cursors never go backwards. A client long-polls an idle stream, echoing each
//! `Stream-Cursor`, for thousands of polls while the injected clock moves one second per
//! poll (a 1 s long-poll timeout, tokio's clock paused and advanced by the runtime).
//!
//! Regression: once the echoed cursor ran more than a day of intervals ahead of the clock,
//! the server ignored it and answered the current interval, a smaller value (at poll 46 with
//! a 1 s timeout; after about 24 minutes of idling at the default 30 s).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::Duration;

use ds_engine::{ContentType, CreateRequest, Engine, EngineConfig, Expiry, ManualClock};
use ds_http::response::{Response, Status};
use ds_http::routes::read::Read;
use ds_http::{AppState, HttpConfig, query};

const POLLS: usize = 5_000;

fn header(resp: &Response, name: &str) -> String {
    let mut out = Vec::new();
    resp.headers.get(name).expect(name).write_to(&mut out);
    String::from_utf8(out).unwrap()
}

/// A memory engine on a manual clock with one empty stream, `idle`; the sender keeps the
/// server "running" while the test holds it.
async fn app() -> (AppState, ManualClock, tokio::sync::watch::Sender<bool>) {
    let clock = ManualClock::new(1_790_000_000_000);
    let engine = Engine::open_with_clock(EngineConfig::default(), Arc::new(clock.clone())).unwrap();
    let config = HttpConfig { long_poll_timeout: Duration::from_secs(1), ..HttpConfig::default() };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let app = AppState::new(Arc::new(engine), config, rx);
    let req = CreateRequest {
        content_type: ContentType::new("text/plain"),
        expiry: Expiry::Never,
        closed: false,
        body: bytes::Bytes::new(),
    };
    app.engine.create("idle", req).await.unwrap();
    (app, clock, tx)
}

#[tokio::test(start_paused = true)]
async fn long_poll_cursors_only_move_forward() {
    let (app, clock, _running) = app().await;
    let tail = app.engine.head("idle").await.unwrap().tail;
    let mut cursor: Option<u64> = None;
    for poll in 0..POLLS {
        let q = match cursor {
            Some(c) => format!("offset={tail}&live=long-poll&cursor={c}"),
            None => format!("offset={tail}&live=long-poll"),
        };
        let read = Read::new("idle".into(), query::parse(Some(&q)).unwrap(), None);
        let resp = read.run(&app).await.unwrap();
        assert_eq!(resp.status, Status::NO_CONTENT, "poll {poll}");
        let next: u64 = header(&resp, "stream-cursor").parse().unwrap();
        if let Some(c) = cursor {
            assert!(next > c, "poll {poll}: sent cursor {c}, got {next}");
        }
        cursor = Some(next);
        clock.advance_ms(1000);
    }
}

/// SSE's `streamCursor` follows the same rule: a reconnecting client that echoes a cursor
/// far ahead of the clock gets a larger one in the first control event.
#[tokio::test(start_paused = true)]
async fn sse_cursor_moves_past_a_far_ahead_echo() {
    let (app, _clock, _running) = app().await;
    let tail = app.engine.head("idle").await.unwrap().tail;
    let now = app.engine.now_ms();
    let current = (now - ds_http::cursor::CURSOR_EPOCH_MS) / ds_http::cursor::CURSOR_INTERVAL_MS;
    let far = current + 10 * 4320;
    let q = format!("offset={tail}&live=sse&cursor={far}");
    let resp =
        Read::new("idle".into(), query::parse(Some(&q)).unwrap(), None).run(&app).await.unwrap();
    let ds_http::response::Body::Sse(mut body) = resp.body else { panic!("not SSE") };
    let frame = body.next_frame().await.expect("first control event");
    let text = String::from_utf8(frame.to_vec()).unwrap();
    let at = text.find("\"streamCursor\":\"").expect(&text) + "\"streamCursor\":\"".len();
    let sent: u64 = text[at..].split('"').next().unwrap().parse().unwrap();
    assert!(sent > far, "echoed {far}, got {sent}");
}
