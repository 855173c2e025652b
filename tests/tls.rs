//! TLS on the listener, with certificates made at test time: gRPC, HTTP/JSON and JSON-lines
//! inside TLS, clients without the CA or without a client certificate refused, mTLS accepted,
//! plaintext refused, and a SIGHUP reload that leaves open connections alone.

mod common;

use std::sync::Arc;

use common::certs::{CertDir, Issued, TestCa, write_atomically};
use common::daemon::{Daemon, run_to_exit};
use common::{WAIT, test_config, within};
use contextd::client::{Client, ConnectOptions, TlsOptions};
use contextd::config::Config;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A server's PKI: its CA, its files, and a directory that holds them.
struct Pki {
    ca: TestCa,
    dir: CertDir,
}

impl Pki {
    fn new(test: &str) -> Self {
        let ca = TestCa::new(&format!("contextd test CA {test}"));
        let dir = CertDir::new(test);
        let server = ca.server();
        dir.write("server.pem", &server.cert_pem);
        dir.write("server.key", &server.key_pem);
        dir.write("ca.pem", &ca.pem());
        Self { ca, dir }
    }

    /// A configuration serving TLS with this PKI's server certificate; with `mtls`, client
    /// certificates of the same CA are required.
    fn config(&self, mtls: bool) -> Config {
        let mut config = test_config();
        config.tls.cert_file = Some(self.dir.path.join("server.pem"));
        config.tls.key_file = Some(self.dir.path.join("server.key"));
        if mtls {
            config.tls.client_ca_file = Some(self.dir.path.join("ca.pem"));
        }
        config
    }
}

/// The wrapper client over TLS trusting `ca_pem`, with an optional client certificate.
async fn tls_client(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
) -> Result<Client, contextd::client::Error> {
    let mut tls = TlsOptions::from_ca_pem(ca_pem).domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.client_identity_pem(identity.cert_pem.clone(), identity.key_pem.clone());
    }
    Client::connect_with(
        &format!("https://{addr}"),
        ConnectOptions::default().connect_timeout(WAIT).tls(tls),
    )
    .await
}

/// A raw TLS client config trusting `ca_pem`, offering `alpn`, with an optional identity.
fn rustls_config(ca_pem: &str, alpn: &[&[u8]], identity: Option<&Issued>) -> TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client PEM"),
                PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("client key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A call on a connection the server closed: tonic reports UNAVAILABLE or, when the close
/// comes mid-call, UNKNOWN ("transport error").
fn assert_refused(err: &contextd::client::Error) {
    assert!(
        matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
        "{err}"
    );
}

#[tokio::test]
async fn grpc_over_tls_works_with_the_ca_and_is_refused_without_it() {
    let pki = Pki::new("grpc");
    let server = common::TestServer::start_with(pki.config(false)).await;

    let client = tls_client(server.addr, &pki.ca.pem(), None)
        .await
        .expect("TLS connect");
    let reply = client
        .interact("tls-grpc", "hello over TLS", Some(json!({"user": "alice"})))
        .await
        .expect("interact over TLS");
    assert!(!reply.response.is_empty());

    // A client that trusts another CA does not get through the handshake.
    let stranger = TestCa::new("someone else");
    let refused = tls_client(server.addr, &stranger.pem(), None).await;
    assert!(refused.is_err(), "a client without the CA was let in");

    // A plaintext gRPC client is refused too.
    let plain = Client::connect_with(
        &server.addr.to_string(),
        ConnectOptions::default().connect_timeout(WAIT),
    )
    .await;
    match plain {
        Err(_) => {}
        Ok(plain) => {
            let err = plain.list_models().await.expect_err("plaintext refused");
            assert_refused(&err);
        }
    }
    assert!(server.stop().await);
}

#[tokio::test]
async fn http_json_over_tls() {
    let pki = Pki::new("http");
    let server = common::TestServer::start_with(pki.config(false)).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap()])
        .timeout(WAIT)
        .build()
        .expect("HTTP client");
    let base = format!("https://localhost:{}", server.addr.port());
    let created = http
        .post(format!("{base}/v1/sessions"))
        .header("content-type", "application/json")
        .body(json!({"sessionId": "tls-http"}).to_string())
        .send()
        .await
        .expect("POST over TLS");
    assert!(created.status().is_success(), "{}", created.status());
    let got: Value = http
        .get(format!("{base}/v1/sessions/tls-http"))
        .send()
        .await
        .expect("GET over TLS")
        .json()
        .await
        .expect("JSON");
    assert_eq!(got["session"]["sessionId"], "tls-http", "{got}");
    assert!(server.stop().await);
}

#[tokio::test]
async fn json_lines_inside_tls_without_alpn() {
    let pki = Pki::new("lines");
    let server = common::TestServer::start_with(pki.config(false)).await;
    let connector = rustls_config(&pki.ca.pem(), &[], None);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = within(
        "the TLS handshake",
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let mut tls = BufReader::new(tls);
    tls.write_all(b"{\"sessionId\": \"tls-lines\", \"message\": \"hi\"}\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut line = String::new();
    within("the answer line", tls.read_line(&mut line))
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&line).expect("a JSON answer");
    assert!(answer["response"].is_string(), "{answer}");
    drop(tls);
    assert!(server.stop().await);
}

#[tokio::test]
async fn mtls_accepts_a_client_certificate_of_the_ca_and_refuses_none() {
    let pki = Pki::new("mtls");
    let server = common::TestServer::start_with(pki.config(true)).await;
    let alice = pki.ca.client("alice", &["spiffe://contextd.test/alice"]);

    let client = tls_client(server.addr, &pki.ca.pem(), Some(&alice))
        .await
        .expect("mTLS connect");
    client
        .interact("mtls-ok", "hello", None)
        .await
        .expect("a call with a client certificate");

    // The JSON-lines door in mTLS, over the raw connector: accepted with the certificate.
    let connector = rustls_config(&pki.ca.pem(), &[], Some(&alice));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = BufReader::new(
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("mTLS handshake"),
    );
    tls.write_all(b"{\"sessionId\": \"mtls-lines\", \"message\": \"hi\"}\n")
        .await
        .unwrap();
    let mut line = String::new();
    within("the answer line", tls.read_line(&mut line))
        .await
        .unwrap();
    assert!(line.contains("\"response\""), "{line}");

    // Without a client certificate: refused (in TLS 1.3 the refusal arrives after the
    // client's side of the handshake, so the first call or read fails).
    match tls_client(server.addr, &pki.ca.pem(), None).await {
        Err(_) => {}
        Ok(client) => {
            let err = client
                .interact("mtls-refused", "hello", None)
                .await
                .expect_err("no client certificate");
            assert_refused(&err);
        }
    }
    // A certificate of another CA: refused as well.
    let mallory = TestCa::new("mallory").client("mallory", &[]);
    let connector = rustls_config(&pki.ca.pem(), &[], Some(&mallory));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    if let Ok(mut tls) = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        let _ = tls
            .write_all(b"{\"sessionId\": \"x\", \"message\": \"hi\"}\n")
            .await;
        let mut rest = Vec::new();
        let read = within("the refusal", tls.read_to_end(&mut rest)).await;
        assert!(
            read.is_err() || rest.is_empty(),
            "a foreign client certificate got an answer"
        );
    }
    assert!(server.stop().await);
}

#[tokio::test]
async fn plaintext_on_a_tls_listener_is_refused() {
    let pki = Pki::new("plain");
    let server = common::TestServer::start_with(pki.config(false)).await;

    // HTTP/1: a short 400 that says why, then the close.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /v1/sessions HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    within("the refusal", tcp.read_to_string(&mut reply))
        .await
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("speaks TLS"), "{reply}");

    // JSON-lines in plaintext: closed without an answer.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"{\"sessionId\": \"s\", \"message\": \"hi\"}\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = within("the close", tcp.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(server.stop().await);
}

#[test]
fn a_bad_tls_file_at_start_exits_2_naming_the_flag() {
    let dir = CertDir::new("bad");
    let cert = dir.write("cert.pem", "not a certificate\n");
    let key = dir.write("key.pem", "not a key\n");
    let (status, _, stderr) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");

    let (status, _, stderr) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_while_open_connections_keep_working() {
    let pki = Pki::new("reload");
    let cert = pki.dir.path.join("server.pem");
    let key = pki.dir.path.join("server.key");
    let daemon = Daemon::start_with(&[
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ]);
    let old = tls_client(daemon.addr, &pki.ca.pem(), None)
        .await
        .expect("connect with the first certificate");
    old.interact("reload", "before", None).await.expect("call");

    // A new CA and certificate in place of the old; until the reload the server still
    // shows the old one.
    let next_ca = TestCa::new("the next CA");
    let next = next_ca.server();
    // A broken pair first: the reload fails and the old certificate stays.
    write_atomically(&key, "broken\n");
    daemon.signal("HUP");
    common::eventually("the failed reload to be logged", || {
        let stderr = daemon.stderr();
        async move { stderr.contains("TLS reload failed") }
    })
    .await;
    tls_client(daemon.addr, &pki.ca.pem(), None)
        .await
        .expect("the old certificate still served after a failed reload")
        .list_models()
        .await
        .expect("a call after a failed reload");

    write_atomically(&cert, &next.cert_pem);
    write_atomically(&key, &next.key_pem);
    daemon.signal("HUP");
    // New handshakes get the new certificate once the reload is done.
    common::eventually("a handshake with the new certificate", || {
        let ca = next_ca.pem();
        let addr = daemon.addr;
        async move {
            match tls_client(addr, &ca, None).await {
                Ok(client) => client.list_models().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(
        tls_client(daemon.addr, &pki.ca.pem(), None).await.is_err(),
        "the old certificate is still served to new connections"
    );
    // The connection made before the reload is still open and works.
    old.interact("reload", "after", None)
        .await
        .expect("the old connection survives the reload");
    drop(daemon);
}

#[tokio::test]
async fn with_auth_mtls_the_certificate_names_the_tenant() {
    use contextd::config::{AuthMode, MtlsTenant, RoleName};
    let pki = Pki::new("mtls-tenants");
    let mut config = pki.config(true);
    config.auth.mode = AuthMode::Mtls;
    config.auth.mtls_tenants = vec![
        MtlsTenant {
            identity: "spiffe://contextd.test/alice".into(),
            tenant: "tenant-a".into(),
            role: RoleName::User,
        },
        MtlsTenant {
            identity: "bob".into(),
            tenant: "tenant-b".into(),
            role: RoleName::Admin,
        },
    ];
    let server = common::TestServer::start_with(config).await;
    let alice = tls_client(
        server.addr,
        &pki.ca.pem(),
        Some(&pki.ca.client("alice", &["spiffe://contextd.test/alice"])),
    )
    .await
    .unwrap();
    let bob = tls_client(server.addr, &pki.ca.pem(), Some(&pki.ca.client("bob", &[])))
        .await
        .unwrap();
    alice
        .create_session(contextd::client::NewSession::new("mine"))
        .await
        .unwrap();
    // The same id is another tenant's session for bob (matched by CN).
    assert_eq!(
        bob.get_session("mine").await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let tenants = bob.list_tenants().await.unwrap();
    assert!(tenants.iter().any(|t| t.tenant_id == "tenant-a"));
    // Alice's certificate maps to a user: admin calls are refused.
    assert_eq!(
        alice.list_keys(None).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    // A certificate of the CA whose names map to no tenant.
    let carol = tls_client(
        server.addr,
        &pki.ca.pem(),
        Some(&pki.ca.client("carol", &[])),
    )
    .await
    .unwrap();
    let error = carol.get_session("mine").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unauthenticated);
    assert!(error.to_string().contains("CN carol"), "{error}");
    server.stop().await;
}
