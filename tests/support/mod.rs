//! Test support: an in-process server on a loopback port of its own, and the HTTP client.

pub mod http1;
pub mod receiver;

use std::net::SocketAddr;

use ds_server::{Config, RunningServer};
pub use http1::{Conn, Response};

/// A server for one test, stopped when dropped.
pub struct TestServer {
    server: Option<RunningServer>,
    addr: SocketAddr,
}

impl TestServer {
    /// A memory-mode server with test-friendly timeouts.
    pub async fn start() -> TestServer {
        TestServer::with(|_| {}).await
    }

    /// A server with `tweak` applied to the configuration first.
    pub async fn with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let server = TestServer::unready(tweak).await;
        // The persistent modes recover in the background: wait until /readyz says so.
        for _ in 0..500 {
            if server.req("GET", "/readyz", &[], b"").await.status == 200 {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("server did not become ready");
    }

    /// A server with `tweak` applied, started but perhaps not ready yet (a persistent mode
    /// recovering; an HTTPS server, which the plain client cannot ask).
    pub async fn unready(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::default();
        config.server.host = "127.0.0.1".into();
        config.server.port = 0;
        config.server.long_poll_timeout_ms = Some(500);
        tweak(&mut config);
        let server = ds_server::start(&config).await.expect("server starts");
        let addr = server.addr();
        TestServer { server: Some(server), addr }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics listener's address (`metrics.listen`), if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(RunningServer::metrics_addr)
    }

    /// A new client connection.
    pub async fn conn(&self) -> Conn {
        Conn::connect(self.addr).await.expect("connect")
    }

    /// One request on a fresh connection.
    pub async fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.conn().await.request(method, path, headers, body).await.expect("request")
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean stop");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            let _ = server.shutdown_handle().send(true);
        }
    }
}

/// Path of a stream.
pub fn stream(name: &str) -> String {
    format!("/v1/stream/{name}")
}

/// Asserts a problem+json error response with `status`.
pub fn assert_problem(resp: &Response, status: u16) {
    assert_eq!(resp.status, status, "body: {}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/problem+json"));
    let body: serde_json::Value = serde_json::from_slice(&resp.body).expect("problem body is JSON");
    assert_eq!(body["status"], status);
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty() && d.len() < 300));
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(resp.header("cache-control"), Some("no-store"));
}
