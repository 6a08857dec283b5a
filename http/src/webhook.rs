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

/// A future of resolved addresses.
pub type Resolved =
    std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;

/// Resolves a host name: the system's resolver, or a test's.
pub type Resolver = Arc<dyn Fn(&str, u16) -> Resolved + Send + Sync>;

/// Sends webhooks.
#[derive(Clone)]
pub struct WebhookClient {
    tls: Arc<rustls::ClientConfig>,
    resolve: Resolver,
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
        let resolve: Resolver = Arc::new(|host: &str, port: u16| {
            let host = host.to_owned();
            Box::pin(
                async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) },
            )
        });
        Ok(WebhookClient { tls: Arc::new(config), resolve })
    }

    /// The same client resolving names with `resolve` (tests stand in for DNS with it).
    #[must_use]
    pub fn with_resolver(mut self, resolve: Resolver) -> WebhookClient {
        self.resolve = resolve;
        self
    }
}

impl WebhookSender for WebhookClient {
    fn send(&self, request: WebhookRequest) -> SendFuture {
        let (tls, resolve) = (self.tls.clone(), self.resolve.clone());
        Box::pin(async move {
            let outcome =
                tokio::time::timeout(request.timeout, deliver(&tls, &resolve, &request)).await;
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
    resolve: &Resolver,
    req: &WebhookRequest,
) -> Result<Delivered, String> {
    let url = webhook_url::validate(&req.url, req.allow_local)?;
    let resolved: Vec<SocketAddr> = match &url.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, url.port)],
        Host::Name(name) => {
            resolve(name, url.port).await.map_err(|e| format!("cannot resolve {name}: {e}"))?
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A name that resolves to `addrs`, whatever it is.
    fn dns(addrs: Vec<SocketAddr>) -> Resolver {
        Arc::new(move |_: &str, _: u16| {
            let addrs = addrs.clone();
            Box::pin(async move { Ok(addrs) })
        })
    }

    fn request(url: &str, allow_local: bool) -> WebhookRequest {
        WebhookRequest {
            url: url.to_owned(),
            signature: "t=1,kid=k,ed25519=s".to_owned(),
            body: Bytes::from_static(b"{}"),
            timeout: Duration::from_secs(2),
            allow_local,
        }
    }

    /// §12: a name that passed validation but resolves (or rebinds) to a private or loopback
    /// address is never connected to; with local webhooks allowed, loopback is.
    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_not_connected_to() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let private = SocketAddr::from(([10, 0, 0, 1], local.port()));
        let client = WebhookClient::new().unwrap().with_resolver(dns(vec![private, local]));
        let url = format!("https://rebinding.example:{}/hook", local.port());
        assert_eq!(client.send(request(&url, false)).await, Delivered::Failed);
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "nothing connected to the loopback address");
        // The control: allowed, the same name reaches the listener.
        let url = format!("http://localhost:{}/hook", local.port());
        let sent = tokio::spawn(async move { client.send(request(&url, true)).await });
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(2), listener.accept())
            .await
            .expect("connected")
            .unwrap();
        use tokio::io::AsyncWriteExt;
        let mut buf = [0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"done\":true}")
            .await
            .unwrap();
        assert_eq!(sent.await.unwrap(), Delivered::Done);
    }
}
