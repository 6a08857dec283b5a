//! A webhook receiver on loopback for tests of subscriptions: it records each delivery's
//! JSON body and answers as the test says. Shared by the black-box tests and the kill test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A webhook that arrived: its body.
pub type Seen = Arc<Mutex<Vec<Value>>>;

/// What a receiver answers: raw response bytes, or `None` to hang.
pub type Answer = std::pin::Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

/// A webhook receiver on loopback answering every request with `answer(body)`.
pub async fn receiver_with(
    answer: impl Fn(Value) -> Answer + Send + Sync + 'static,
) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let answer = Arc::new(answer);
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break serde_json::from_slice::<Value>(&buf[end + 4..end + 4 + len])
                            .unwrap_or(Value::Null);
                    }
                };
                log.lock().unwrap().push(body.clone());
                match answer(body).await {
                    Some(bytes) => {
                        let _ = conn.write_all(&bytes).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    (url, seen)
}

/// A receiver answering at once with `answer(body)`.
pub async fn receiver(
    answer: impl Fn(&Value) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> (String, Seen) {
    let answer = Arc::new(answer);
    receiver_with(move |body| {
        let bytes = answer(&body);
        Box::pin(async move { bytes })
    })
    .await
}

pub fn http_answer(status: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
        .into_bytes()
}
