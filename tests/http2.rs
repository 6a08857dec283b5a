//! HTTPS and HTTP/2 (issue 11), on both front ends: certificates the tests make with
//! `openssl` (a CA and a leaf for `localhost`), curl as the real client for HTTP/1.1 and
//! HTTP/2 over TLS and for h2c with prior knowledge, and hyper's HTTP/2 client for what curl
//! cannot show: many streams on one connection (SSE readers, a long-poll, appends), limits,
//! graceful shutdown, the certificate reloaded on SIGHUP while a connection stays open.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;

use crate::support::TestServer;

const TEXT: (&str, &str) = ("content-type", "text/plain");

/// A CA and a leaf certificate for `localhost` and 127.0.0.1 that it signed, in `dir`.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/test.sh installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn temp_dir(what: &str) -> PathBuf {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("ds-{what}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Certs {
    fn make(dir: &Path, name: &str) -> Certs {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let (ca_key, ca) = (format!("{name}-ca.key"), format!("{name}-ca.pem"));
        let (key, csr, cert) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        let subject = format!("/CN={name} test CA");
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", &subject]);
        openssl(dir, &args);
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
        openssl(dir, &args);
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        Certs { ca: dir.join(ca), cert: dir.join(cert), key: dir.join(key) }
    }
}

/// A server over HTTPS with `certs` (and `tweak`), ready.
async fn https_server(
    certs: &Certs,
    front_end: &str,
    tweak: impl FnOnce(&mut ds_server::Config),
) -> TestServer {
    let (cert, key, front_end) =
        (certs.cert.display().to_string(), certs.key.display().to_string(), front_end.to_owned());
    let server = TestServer::unready(move |c| {
        c.server.tls_cert_file = cert;
        c.server.tls_key_file = key;
        c.http.front_end = front_end;
        tweak(c);
    })
    .await;
    let client = h2(server.addr(), Some(&certs.ca)).await.expect("an HTTP/2 connection");
    for _ in 0..500 {
        if client.req("GET", "/readyz", &[], b"").await.0 == 200 {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server did not become ready");
}

/// rustls' client trusting `ca` only, offering `h2` (and HTTP/1.1 if `http1`).
fn client_tls(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// An HTTP/2 client connection: over TLS trusting `ca`, or h2c with prior knowledge.
async fn h2(addr: std::net::SocketAddr, ca: Option<&Path>) -> std::io::Result<H2> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    let (send, scheme) = match ca {
        Some(ca) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(client_tls(ca)).connect(name, tcp).await?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN chose h2");
            let (send, conn) =
                builder.handshake(TokioIo::new(tls)).await.map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            (send, "https")
        }
        None => {
            let (send, conn) =
                builder.handshake(TokioIo::new(tcp)).await.map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            (send, "http")
        }
    };
    Ok(H2 { send, base: format!("{scheme}://localhost:{}", addr.port()) })
}

#[derive(Clone)]
struct H2 {
    send: SendRequest<Full<Bytes>>,
    base: String,
}

impl H2 {
    /// Sends a request; the response with its body not yet read.
    async fn start(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> hyper::Response<hyper::body::Incoming> {
        let mut req = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let mut send = self.send.clone();
        send.ready().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
            .await
            .expect("an answer in time")
            .expect("an answer")
    }

    /// Sends a request and reads the whole answer.
    async fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, hyper::HeaderMap, Bytes) {
        let resp = self.start(method, path, headers, body).await;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
            .await
            .expect("the body in time")
            .expect("the body")
            .to_bytes();
        (parts.status.as_u16(), parts.headers, body)
    }
}

/// Reads an SSE body until its text contains `wanted`; `false` if it ends or `wait` passes.
async fn sse_until(
    body: &mut hyper::body::Incoming,
    seen: &mut String,
    wanted: &str,
    wait: Duration,
) -> bool {
    let until = tokio::time::Instant::now() + wait;
    while !seen.contains(wanted) {
        match tokio::time::timeout_at(until, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&data));
                }
            }
            _ => return false,
        }
    }
    true
}

/// curl's answer: its HTTP version and status (`-w`), and the headers it printed.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}\n",
        ])
        .args(args)
        .output()
        .expect("curl (scripts/test.sh installs it)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text.lines().last().unwrap_or_default().to_owned();
    (last, text)
}

/// HTTPS on both front ends: curl gets HTTP/2 when it offers it by ALPN and HTTP/1.1 when
/// it asks for that; a created stream's `Location` is `https`; the certificate is the one
/// configured (curl checks it against the test CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_http2_and_http1_by_alpn_on_both_front_ends() {
    let dir = temp_dir("tls");
    let certs = Certs::make(&dir, "a");
    for front_end in ["fast", "axum"] {
        let server = https_server(&certs, front_end, |_| {}).await;
        let url = format!("https://localhost:{}/v1/stream/alpn", server.addr().port());
        let resolve = format!("localhost:{}:127.0.0.1", server.addr().port());
        let ca = certs.ca.display().to_string();
        let (h2, create, h1) = tokio::task::spawn_blocking(move || {
            let tls = ["--cacert", ca.as_str(), "--resolve", resolve.as_str()];
            let mut h2 = tls.to_vec();
            h2.extend([
                "--http2",
                "-X",
                "PUT",
                "-H",
                "content-type: text/plain",
                "--data-binary",
                "hi",
                &url,
            ]);
            let create = curl(&h2);
            let mut h1 = tls.to_vec();
            h1.extend(["--http1.1", &url]);
            let read = curl(&h1);
            let mut again = tls.to_vec();
            again.extend(["--http2", &url]);
            (curl(&again).0, create, read.0)
        })
        .await
        .unwrap();
        assert_eq!(create.0, "2 201", "{front_end}: {}", create.1);
        let location =
            format!("location: https://localhost:{}/v1/stream/alpn", server.addr().port());
        assert!(create.1.contains(&location), "{front_end}: {}", create.1);
        assert_eq!(h1, "1.1 200", "{front_end}");
        assert_eq!(h2, "2 200", "{front_end}");
        server.stop().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// h2c with prior knowledge on the plain port, both front ends (the fast one hands the
/// connection to hyper), beside plain HTTP/1.1; a preface after an HTTP/1.1 request on the
/// same connection still gets a GOAWAY it understands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_on_the_plain_port_on_both_front_ends() {
    for front_end in ["fast", "axum"] {
        let fe = front_end.to_owned();
        let server = TestServer::with(move |c| c.http.front_end = fe).await;
        let url = format!("http://127.0.0.1:{}/v1/stream/h2c", server.addr().port());
        let (create, read, h1) = tokio::task::spawn_blocking(move || {
            let create = curl(&[
                "--http2-prior-knowledge",
                "-X",
                "PUT",
                "-H",
                "content-type: text/plain",
                "-d",
                "x",
                &url,
            ]);
            let read = curl(&["--http2-prior-knowledge", &url]);
            (create.0, read.0, curl(&["--http1.1", &url]).0)
        })
        .await
        .unwrap();
        assert_eq!(
            (create.as_str(), read.as_str(), h1.as_str()),
            ("2 201", "2 200", "1.1 200"),
            "{front_end}"
        );
        // hyper's own client, prior knowledge, several requests on one connection.
        let c = h2(server.addr(), None).await.unwrap();
        for i in 0..5 {
            let (status, _, _) =
                c.req("POST", "/v1/stream/h2c", &[TEXT], format!("{i}").as_bytes()).await;
            assert_eq!(status, 204, "{front_end}");
        }
        let (status, _, body) = c.req("GET", "/v1/stream/h2c?offset=-1", &[], b"").await;
        assert_eq!((status, &body[..]), (200, &b"x01234"[..]), "{front_end}");
        server.stop().await;
    }
}

/// The protocol over one HTTP/2 connection (TLS, both front ends): twelve SSE readers and a
/// long-poll open at once beside appends, each reader gets the data; a body over the limit
/// is a 413 that leaves the connection usable; producer retries are deduplicated; at
/// shutdown the live reads end and the server stops within its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_over_one_http2_connection() {
    let dir = temp_dir("h2-protocol");
    let certs = Certs::make(&dir, "p");
    for front_end in ["fast", "axum"] {
        let server = https_server(&certs, front_end, |c| {
            c.limits.max_body_bytes = 1024;
            c.server.long_poll_timeout_ms = Some(5_000);
        })
        .await;
        let c = h2(server.addr(), Some(&certs.ca)).await.unwrap();
        let s = "/v1/stream/live";
        assert_eq!(c.req("PUT", s, &[TEXT], b"").await.0, 201);
        let mut readers = Vec::new();
        for _ in 0..12 {
            let resp = c.start("GET", &format!("{s}?offset=-1&live=sse"), &[], b"").await;
            assert_eq!(resp.status(), 200, "{front_end}");
            readers.push(resp.into_body());
        }
        let long_poll = {
            let c = c.clone();
            let url = format!("{s}?offset=now&live=long-poll");
            tokio::spawn(async move { c.req("GET", &url, &[], b"").await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let producer =
            [("producer-id", "p1"), ("producer-epoch", "0"), ("producer-seq", "0"), TEXT];
        assert_eq!(c.req("POST", s, &producer, b"hello").await.0, 200);
        assert_eq!(c.req("POST", s, &producer, b"hello").await.0, 204, "a retry is a duplicate");
        for (i, body) in readers.iter_mut().enumerate() {
            let mut seen = String::new();
            assert!(
                sse_until(body, &mut seen, "hello", Duration::from_secs(5)).await,
                "{front_end}: reader {i}: {seen}"
            );
        }
        let (status, _, polled) = long_poll.await.unwrap();
        assert_eq!((status, &polled[..]), (200, &b"hello"[..]), "{front_end}: the long-poll woke");
        let (status, headers, body) = c.req("POST", s, &[TEXT], &[b'x'; 2048]).await;
        assert_eq!(status, 413, "{front_end}");
        assert_eq!(headers.get("content-type").unwrap(), "application/problem+json");
        assert!(!body.is_empty());
        assert!(headers.get("connection").is_none(), "no HTTP/1.1 connection header in HTTP/2");
        assert_eq!(c.req("GET", &format!("{s}?offset=-1"), &[], b"").await.2, &b"hello"[..]);
        // Shutdown: the SSE readers end, and the server is down well within its grace.
        let stopped = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(8), server.stop()).await.expect("a prompt stop");
        assert!(stopped.elapsed() < Duration::from_secs(8));
        for body in &mut readers {
            let ended = tokio::time::timeout(Duration::from_secs(3), async {
                while let Some(Ok(_)) = body.frame().await {}
            })
            .await;
            assert!(ended.is_ok(), "{front_end}: the SSE reader ended at shutdown");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A client that opens a connection to the HTTPS port and says nothing, or speaks plain
/// HTTP to it, is closed within the head timeout; the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_plain_client_on_the_https_port_is_closed() {
    let dir = temp_dir("tls-silent");
    let certs = Certs::make(&dir, "s");
    let server = https_server(&certs, "fast", |c| c.server.header_read_timeout_secs = 1).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let mut plain = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    for conn in [&mut silent, &mut plain] {
        let mut got = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(4), conn.read_to_end(&mut got)).await;
        assert!(closed.is_ok(), "closed within the head timeout");
        assert!(!got.starts_with(b"HTTP/1.1 200"), "no plain answer on the TLS port");
    }
    let c = h2(server.addr(), Some(&certs.ca)).await.unwrap();
    assert_eq!(c.req("GET", "/healthz", &[], b"").await.0, 200);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Idle connections close, as HTTP/1.1 keep-alive ones do: an HTTP/2 connection with no
/// request in progress for the head timeout gets a GOAWAY; one with a live SSE reader stays
/// and keeps serving. On the plain port of the axum front end, a client that says nothing,
/// or half of the HTTP/2 preface, is closed within the head timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_connections_close_within_the_head_timeout() {
    for front_end in ["fast", "axum"] {
        let fe = front_end.to_owned();
        let server = TestServer::with(move |c| {
            c.http.front_end = fe;
            c.server.header_read_timeout_secs = 1;
        })
        .await;
        let idle = h2(server.addr(), None).await.unwrap();
        assert_eq!(idle.req("GET", "/healthz", &[], b"").await.0, 200);
        let busy = h2(server.addr(), None).await.unwrap();
        assert_eq!(busy.req("PUT", "/v1/stream/idle", &[TEXT], b"").await.0, 201);
        let mut reader =
            busy.start("GET", "/v1/stream/idle?offset=-1&live=sse", &[], b"").await.into_body();
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let mut send = idle.send.clone();
        let gone = send.ready().await.is_err() || send.is_closed();
        assert!(gone, "{front_end}: the idle HTTP/2 connection was closed");
        assert_eq!(
            busy.req("POST", "/v1/stream/idle", &[TEXT], b"still").await.0,
            204,
            "{front_end}"
        );
        let mut seen = String::new();
        assert!(
            sse_until(&mut reader, &mut seen, "still", Duration::from_secs(3)).await,
            "{front_end}"
        );
        for opening in [&b""[..], &b"PRI * HTTP/2.0\r\n"[..]] {
            let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut tcp, opening).await.unwrap();
            let mut got = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(4), tcp.read_to_end(&mut got)).await;
            assert!(closed.is_ok(), "{front_end}: {opening:?} closed within the head timeout");
        }
        server.stop().await;
    }
}

/// Over TLS, HTTP/2 is chosen by ALPN (RFC 9113 §3.3): a client that agreed on HTTP/1.1 and
/// sends the HTTP/2 preface anyway gets a GOAWAY, not an HTTP/2 server. The metrics listener
/// stays plain HTTP beside an HTTPS main port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_needs_alpn_and_metrics_stay_plain() {
    let dir = temp_dir("tls-alpn");
    let certs = Certs::make(&dir, "n");
    let server = https_server(&certs, "fast", |c| c.metrics.listen = "127.0.0.1:0".into()).await;
    let mut config = (*client_tls(&certs.ca)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tls, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut got)).await;
    assert!(got.len() >= 26, "{got:?}");
    assert_eq!((got[3], got[12]), (4, 7), "SETTINGS, then GOAWAY");
    assert_eq!(&got[22..26], &[0, 0, 0, 0x0d], "HTTP_1_1_REQUIRED");
    let metrics = server.metrics_addr().expect("a metrics listener");
    let mut plain = crate::support::Conn::connect(metrics).await.unwrap();
    assert_eq!(plain.request("GET", "/metrics", &[], b"").await.unwrap().status, 200);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// TLS files that cannot serve stop the start with the reason and the file: a missing
/// certificate, a file with no certificate, a key of another certificate. Half a pair is a
/// configuration error.
#[tokio::test]
async fn unusable_tls_files_stop_the_start_with_the_reason() {
    let dir = temp_dir("tls-bad");
    let (a, b) = (Certs::make(&dir, "a"), Certs::make(&dir, "b"));
    let missing = dir.join("missing.pem");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for (cert, key, says) in [
        (&missing, &a.key, "missing.pem"),
        (&empty, &a.key, "no certificate"),
        (&a.cert, &b.key, "b.key"),
        (&a.cert, &empty, "empty.pem"),
    ] {
        let mut config = ds_server::Config::default();
        config.server.host = "127.0.0.1".into();
        config.server.port = 0;
        config.server.tls_cert_file = cert.display().to_string();
        config.server.tls_key_file = key.display().to_string();
        let err = ds_server::start(&config).await.expect_err("no start").to_string();
        assert!(err.contains(says), "{says}: {err}");
    }
    let half = ds_server::config::load(
        &[],
        [("DS_SERVER__TLS_CERT_FILE".into(), a.cert.display().to_string())],
    );
    let err = half.expect_err("half a pair").to_string();
    assert!(err.contains("tls_key_file"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGHUP reloads the certificate: new connections get the new one (a client trusting only
/// the old CA is refused), the HTTP/2 connection opened before goes on (its SSE reader gets
/// data appended after the reload); a reload of unusable files keeps the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = temp_dir("tls-reload");
    let (old, new) = (Certs::make(&dir, "old"), Certs::make(&dir, "new"));
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::copy(&old.cert, &cert).unwrap();
    std::fs::copy(&old.key, &key).unwrap();
    let mut command = crate::cli::ds_server();
    command.env("DS_SERVER__TLS_CERT_FILE", &cert).env("DS_SERVER__TLS_KEY_FILE", &key);
    let running = crate::cli::Running::start(command);
    let addr = running.addr;
    let before = h2(addr, Some(&old.ca)).await.unwrap();
    assert_eq!(before.req("PUT", "/v1/stream/r", &[TEXT], b"").await.0, 201);
    let mut reader =
        before.start("GET", "/v1/stream/r?offset=-1&live=sse", &[], b"").await.into_body();
    let hup = |pid: u32| {
        let ok = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill -HUP");
    };
    std::fs::copy(&new.cert, &cert).unwrap();
    std::fs::copy(&new.key, &key).unwrap();
    hup(running.child.id());
    running.next_line_where(|v| v["fields"]["message"] == "TLS certificate reloaded");
    let after = h2(addr, Some(&new.ca)).await.expect("the new certificate is presented");
    assert!(h2(addr, Some(&old.ca)).await.is_err(), "the old certificate is gone");
    assert_eq!(after.req("POST", "/v1/stream/r", &[TEXT], b"after").await.0, 204);
    let mut seen = String::new();
    assert!(sse_until(&mut reader, &mut seen, "after", Duration::from_secs(5)).await, "{seen}");
    // A broken file: the reload fails, said so, and the new certificate stays.
    std::fs::write(&cert, "garbage\n").unwrap();
    hup(running.child.id());
    let failed = running.next_line_where(|v| {
        v["fields"]["message"].as_str().is_some_and(|m| m.contains("not reloaded"))
    });
    assert!(failed.to_string().contains("server.pem"), "{failed}");
    assert_eq!(
        h2(addr, Some(&new.ca)).await.unwrap().req("GET", "/healthz", &[], b"").await.0,
        200
    );
    drop(running);
    let _ = std::fs::remove_dir_all(dir);
}
