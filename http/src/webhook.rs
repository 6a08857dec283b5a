//! The webhook client (§7.1): one HTTP/1.1 exchange per delivery, over rustls for
//! `https://`. What it guards against (§12):
//! - **Where it connects.** The URL is checked again, then its name resolved, and only
//!   addresses the forgery rules allow are connected to (a DNS name that points at a private
//!   address, or rebinds to one after the subscription was made, gets nothing). No proxy is
//!   taken from the environment.
//! - **How long.** Connecting and the whole exchange share one timeout.
//! - **What it follows.** Nothing: a 3xx is a failed delivery, like any status but 2xx.
//! - **What it reads.** At most [`MAX_RESPONSE_BYTES`] of the answer; more is a failure.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ds_engine::subscription::state::Delivered;
use ds_engine::subscription::webhook_url::{self, Host};
use ds_engine::subscription::{WebhookRequest, WebhookSender, service::SendFuture};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest webhook answer read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Sends webhooks.
#[derive(Clone)]
pub struct WebhookClient {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookClient")
    }
}

impl WebhookClient {
    /// A client trusting the Mozilla root certificates (`webpki-roots`).
    ///
    /// # Errors
    /// If rustls cannot be set up with the ring provider (it can).
    pub fn new() -> Result<WebhookClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("webhook TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(WebhookClient { tls: Arc::new(config) })
    }
}

impl WebhookSender for WebhookClient {
    fn send(&self, request: WebhookRequest) -> SendFuture {
        let tls = self.tls.clone();
        Box::pin(async move {
            let outcome = tokio::time::timeout(request.timeout, deliver(&tls, &request)).await;
            match outcome {
                Ok(Ok(delivered)) => delivered,
                Ok(Err(why)) => {
                    tracing::warn!(url = %request.url, %why, "webhook delivery failed");
                    Delivered::Failed
                }
                Err(_) => {
                    tracing::warn!(url = %request.url, timeout_ms = request.timeout.as_millis(), "webhook delivery timed out");
                    Delivered::Failed
                }
            }
        })
    }
}

/// Aborts a task when dropped: the connection task of a delivery ends with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn deliver(
    tls: &Arc<rustls::ClientConfig>,
    req: &WebhookRequest,
) -> Result<Delivered, String> {
    let url = webhook_url::validate(&req.url, req.allow_local)?;
    let resolved: Vec<SocketAddr> = match &url.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, url.port)],
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), url.port))
            .await
            .map_err(|e| format!("cannot resolve {name}: {e}"))?
            .collect(),
    };
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| webhook_url::allowed_target(a.ip(), req.allow_local))
        .collect();
    if allowed.is_empty() {
        return Err(format!("{} resolves to no address webhooks may reach", url.authority()));
    }
    let mut last = String::new();
    let mut tcp = None;
    for addr in allowed {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = format!("connect {addr}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let _ = tcp.set_nodelay(true);
    if url.https {
        let name = match &url.host {
            Host::Name(n) => rustls::pki_types::ServerName::try_from(n.clone())
                .map_err(|e| format!("server name: {e}"))?,
            Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
        };
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(stream, &url, req).await
    } else {
        exchange(tcp, &url, req).await
    }
}

async fn exchange<S>(
    io: S,
    url: &webhook_url::WebhookUrl,
    req: &WebhookRequest,
) -> Result<Delivered, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let request = hyper::Request::post(url.target.as_str())
        .header("host", url.authority())
        .header("content-type", "application/json")
        .header("webhook-signature", req.signature.as_str())
        .header("user-agent", concat!("ds-server/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(req.body.clone()))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    let body: Bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| format!("answer body: {e}"))?
        .to_bytes();
    let done = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("done").and_then(serde_json::Value::as_bool))
        == Some(true);
    Ok(if done { Delivered::Done } else { Delivered::Accepted })
}
