//! Authentication and tenants end to end: keys made by `contextd keys` (offline, into a keys
//! file, and online through AdminService), two tenants calling every RPC on gRPC and on
//! HTTP/JSON, missing, malformed, revoked and expired keys, per-line and open-frame
//! credentials, the admin role, the non-loopback refusal, and keys never in the log.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, contextd_command, run_to_exit};
use common::{TestServer, WAIT, test_config};
use contextd::api::v1;
use contextd::client::{Client, ConnectOptions, NewSession, SessionUpdate};
use contextd::config::{AuthMode, Config};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tonic::Code;

/// A directory removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("contextd-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a config naming `keys.toml` in `dir` as the keys file; returns its path.
fn keys_config(dir: &Path) -> PathBuf {
    let config = dir.join("contextd.toml");
    std::fs::write(
        &config,
        format!("[auth]\nkeys_file = {:?}\n", dir.join("keys.toml")),
    )
    .unwrap();
    config
}

/// `contextd keys <args>` offline on the config; returns stdout (trimmed).
fn keys(config: &Path, args: &[&str]) -> String {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.extend(["--config", config.to_str().unwrap(), "--store", "memory"]);
    let (status, stdout, stderr) = run_to_exit(&all);
    assert!(status.success(), "contextd {all:?}: {stderr}");
    stdout.trim().to_string()
}

/// The server's config: keys mode over the keys file.
fn server_config(dir: &Path) -> Config {
    let mut config = test_config();
    config.auth.mode = AuthMode::Keys;
    config.auth.keys_file = Some(dir.join("keys.toml"));
    config
}

async fn client(server: &TestServer, key: Option<&str>) -> Client {
    let mut options = ConnectOptions::default();
    if let Some(key) = key {
        options = options.bearer_token(key);
    }
    Client::connect_with(&server.addr.to_string(), options)
        .await
        .unwrap()
}

fn code<T: std::fmt::Debug>(result: Result<T, contextd::client::Error>) -> Code {
    result.expect_err("the call must fail").code()
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Keys of two tenants and an admin, made offline into the keys file.
struct Keys {
    alice: String,
    bob: String,
    admin: String,
}

fn make_keys(config: &Path) -> Keys {
    Keys {
        alice: keys(config, &["add", "--tenant", "tenant-a", "--label", "alice"]),
        bob: keys(config, &["add", "--tenant", "tenant-b"]),
        admin: keys(config, &["add", "--tenant", "ops", "--role", "admin"]),
    }
}

#[tokio::test]
async fn two_tenants_never_see_each_other_on_grpc() {
    let dir = TempDir::new();
    let config = keys_config(&dir.0);
    let k = make_keys(&config);
    let server = TestServer::start_with(server_config(&dir.0)).await;
    let alice = client(&server, Some(&k.alice)).await;
    let bob = client(&server, Some(&k.bob)).await;

    // The same id in two tenants is two sessions.
    alice
        .create_session(NewSession {
            system_prompt: "alice's".into(),
            ..NewSession::new("shared")
        })
        .await
        .unwrap();
    bob.create_session(NewSession {
        system_prompt: "bob's".into(),
        ..NewSession::new("shared")
    })
    .await
    .unwrap();
    bob.create_session(NewSession::new("bob-only"))
        .await
        .unwrap();
    bob.interact("bob-only", "secret plans", None)
        .await
        .unwrap();
    assert_eq!(
        alice.get_session("shared").await.unwrap().system_prompt,
        "alice's"
    );
    assert_eq!(
        bob.get_session("shared").await.unwrap().system_prompt,
        "bob's"
    );

    // Every RPC on bob's session, as alice: exactly as if it did not exist.
    assert_eq!(code(alice.get_session("bob-only").await), Code::NotFound);
    assert_eq!(
        code(alice.list_messages("bob-only", 10, "").await),
        Code::NotFound
    );
    assert_eq!(
        code(
            alice
                .update_session(
                    "bob-only",
                    SessionUpdate {
                        system_prompt: Some("mine now".into()),
                        ..Default::default()
                    }
                )
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(alice.preview_context("bob-only", "hi", None).await),
        Code::NotFound
    );
    assert_eq!(
        code(alice.list_tools(Some("bob-only")).await),
        Code::NotFound
    );
    assert_eq!(
        code(
            alice
                .call_tool(
                    "history_search",
                    json!({"query": "secret"}),
                    Some("bob-only")
                )
                .await
        ),
        Code::NotFound
    );
    assert_eq!(code(alice.delete_session("bob-only").await), Code::NotFound);
    let listed: Vec<String> = alice
        .list_sessions(100, "")
        .await
        .unwrap()
        .sessions
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(listed, ["shared"]);
    // Turns on the id make alice's own session; bob's history is untouched.
    let reply = alice.interact("bob-only", "hello", None).await.unwrap();
    assert!(reply.session_created);
    let mut events = alice
        .stream_response("bob-only", "again", None)
        .await
        .unwrap();
    while let Some(event) = events.next().await {
        event.unwrap();
    }
    let mut conversation = alice
        .converse(contextd::client::ConverseOptions::new("bob-only"))
        .await
        .unwrap();
    conversation.turn("third", None).await.unwrap();
    drop(conversation);
    let bobs = bob
        .list_messages("bob-only", 100, "")
        .await
        .unwrap()
        .messages;
    assert_eq!(bobs.len(), 2, "bob's history is his: {bobs:?}");
    assert!(bobs[0].content.contains("secret plans"));
    let alices = alice
        .list_messages("bob-only", 100, "")
        .await
        .unwrap()
        .messages;
    assert_eq!(alices.len(), 6);
    assert!(alices.iter().all(|m| !m.content.contains("secret")));

    // Health needs no key; everything else does.
    let anonymous = client(&server, None).await;
    let error = anonymous.get_session("shared").await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert!(
        error.to_string().contains("authorization: Bearer"),
        "says what to send: {error}"
    );
    let mut health = server.health().await;
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(code(anonymous.list_models().await), Code::Unauthenticated);
    server.stop().await;
}

#[tokio::test]
async fn two_tenants_never_see_each_other_on_http() {
    let dir = TempDir::new();
    let config = keys_config(&dir.0);
    let k = make_keys(&config);
    let server = TestServer::start_with(server_config(&dir.0)).await;
    let http = http();
    let url = server.url();
    let call = |method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Json>| {
        let mut request = http.request(method, format!("{url}{path}"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, text)
        }
    };
    use reqwest::Method;
    let (status, _) = call(
        Method::POST,
        "/v1/sessions",
        Some(&k.bob),
        Some(json!({"sessionId": "bob-only"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        Method::POST,
        "/v1/sessions/bob-only:interact",
        Some(&k.bob),
        Some(json!({"message": "secret plans"})),
    )
    .await;
    assert_eq!(status, 200);

    // Every route on bob's session, as alice: 404, as for a missing session.
    let a = Some(k.alice.as_str());
    for (method, path, body) in [
        (Method::GET, "/v1/sessions/bob-only", None),
        (Method::GET, "/v1/sessions/bob-only/messages", None),
        (
            Method::PATCH,
            "/v1/sessions/bob-only",
            Some(json!({"systemPrompt": "x"})),
        ),
        (
            Method::POST,
            "/v1/sessions/bob-only:preview",
            Some(json!({"message": "hi"})),
        ),
        (Method::DELETE, "/v1/sessions/bob-only", None),
    ] {
        let (status, text) = call(method.clone(), path, a, body).await;
        assert_eq!(status, 404, "{method} {path}: {text}");
        assert!(text.contains("does not exist"), "{text}");
    }
    let (status, text) = call(Method::GET, "/v1/sessions", a, None).await;
    assert_eq!(status, 200);
    assert!(!text.contains("bob-only"), "{text}");
    // A streamed turn (SSE) on the id is alice's own session.
    let (status, text) = call(
        Method::POST,
        "/v1/sessions/bob-only:stream",
        a,
        Some(json!({"message": "hello"})),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (_, text) = call(
        Method::GET,
        "/v1/sessions/bob-only/messages",
        Some(&k.bob),
        None,
    )
    .await;
    assert_eq!(text.matches("\"index\"").count(), 2, "{text}");

    // No key, a malformed one, an unknown one: 401 saying what to send.
    for (key, says) in [
        (None, "authorization: Bearer"),
        (Some("not-a-key"), "ctxd_"),
        (
            Some("ctxd_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            "no such key",
        ),
    ] {
        let mut request = http.get(format!("{url}/v1/sessions"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"contextd\""
        );
        let text = response.text().await.unwrap();
        assert!(text.contains(says), "{key:?}: {text}");
        assert!(text.contains("UNAUTHENTICATED"), "{text}");
    }
    // Health is open; the OpenAPI document, status and metrics are not by default.
    assert_eq!(call(Method::GET, "/health", None, None).await.0, 200);
    for path in ["/openapi.json", "/api/mcp/status", "/api/mcp/interact"] {
        let method = if path == "/api/mcp/interact" {
            Method::POST
        } else {
            Method::GET
        };
        assert_eq!(call(method, path, None, None).await.0, 401, "{path}");
    }
    // The classic route with a key.
    let (status, text) = call(
        Method::POST,
        "/api/mcp/interact",
        a,
        Some(json!({"sessionId": "classic", "message": "hi"})),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn revoked_and_expired_keys_are_refused_and_roles_hold() {
    let dir = TempDir::new();
    let config = keys_config(&dir.0);
    let k = make_keys(&config);
    let short = keys(&config, &["add", "--tenant", "tenant-a", "--expires", "1s"]);
    let doomed = keys(&config, &["add", "--tenant", "tenant-a"]);
    let listed = keys(&config, &["list", "--tenant", "tenant-a"]);
    assert!(!listed.contains(&doomed) && !listed.contains(&k.alice));
    let doomed_id = contextd::auth::secret::key_id(&contextd::auth::secret::hash(&doomed));
    assert!(listed.contains(&doomed_id), "{listed}");
    keys(&config, &["revoke", &doomed_id]);
    let started = Instant::now();
    let server = TestServer::start_with(server_config(&dir.0)).await;

    let revoked = client(&server, Some(&doomed)).await;
    let error = revoked.list_sessions(0, "").await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert!(error.to_string().contains("revoked"), "{error}");
    // The 1 s key: wait until it has certainly run out.
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(started.elapsed())).await;
    let expired = client(&server, Some(&short)).await;
    let error = expired.list_sessions(0, "").await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert!(error.to_string().contains("expired"), "{error}");

    // A user key manages nothing; an admin key sees every tenant.
    let alice = client(&server, Some(&k.alice)).await;
    alice.create_session(NewSession::new("s")).await.unwrap();
    assert_eq!(code(alice.list_keys(None).await), Code::PermissionDenied);
    assert_eq!(
        code(alice.delete_tenant("tenant-b").await),
        Code::PermissionDenied
    );
    assert_eq!(
        alice
            .export_tenant("tenant-b")
            .await
            .err()
            .map(|e| e.code()),
        Some(Code::PermissionDenied)
    );
    let own = alice.list_tenants().await.unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].tenant_id, "tenant-a");
    let admin = client(&server, Some(&k.admin)).await;
    let tenants: Vec<String> = admin
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.tenant_id)
        .collect();
    assert_eq!(tenants, ["ops", "tenant-a", "tenant-b"]);
    // Keys in a file are changed with the CLI, not through the server.
    assert_eq!(
        code(admin.create_key("x", v1::KeyRole::User, "", None).await),
        Code::FailedPrecondition
    );
    server.stop().await;
}

#[tokio::test]
async fn json_lines_and_websocket_carry_credentials_in_the_message() {
    let dir = TempDir::new();
    let config = keys_config(&dir.0);
    let k = make_keys(&config);
    let server = TestServer::start_with(server_config(&dir.0)).await;

    // JSON lines: an `authorization` member per line, consumed by the door.
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write
        .write_all(b"{\"sessionId\": \"lines\", \"message\": \"hi\"}\n")
        .await
        .unwrap();
    let refused = lines.next_line().await.unwrap().unwrap();
    assert!(refused.contains("UNAUTHENTICATED"), "{refused}");
    let line = format!(
        "{{\"sessionId\": \"lines\", \"message\": \"hi\", \"authorization\": \"Bearer {}\"}}\n",
        k.alice
    );
    write.write_all(line.as_bytes()).await.unwrap();
    let answered = lines.next_line().await.unwrap().unwrap();
    assert!(answered.contains("\"sessionCreated\":true"), "{answered}");

    // WebSocket: no header on the upgrade, credentials in the open frame.
    let url = format!("ws://{}/v1/sessions/ws:converse", server.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let open = json!({"open": {"authorization": format!("Bearer {}", k.bob)}});
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            open.to_string().into(),
        ))
        .await
        .unwrap();
    let opened = tokio::time::timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(opened.to_string().contains("opened"), "{opened}");
    drop(socket);
    let bob = client(&server, Some(&k.bob)).await;
    bob.get_session("ws").await.unwrap();
    let alice = client(&server, Some(&k.alice)).await;
    assert_eq!(code(alice.get_session("ws").await), Code::NotFound);

    // Without credentials anywhere: the socket is closed with 4016 (UNAUTHENTICATED).
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "{\"open\": {}}".into(),
        ))
        .await
        .unwrap();
    let mut closed = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, socket.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Close(frame) = message {
            closed = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(closed, Some(4016));
    // A bad key on the upgrade itself is refused before upgrading.
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .map(|mut r| {
        r.headers_mut()
            .insert("authorization", "Bearer nope".parse().unwrap());
        r
    })
    .unwrap();
    let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    server.stop().await;
}

#[test]
fn a_public_address_without_authentication_refuses_to_start() {
    let (status, _, stderr) = run_to_exit(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--insecure-listen"), "{stderr}");
    assert!(stderr.contains("without authentication"), "{stderr}");
    // With the flag it starts, and says what it does.
    let mut command = contextd_command(&["serve", "--listen", "0.0.0.0:0", "--insecure-listen"]);
    command.env("CONTEXTD_LOG", "warn");
    let mut child = command.spawn().unwrap();
    let stderr = common::daemon::drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + common::daemon::PROCESS_WAIT;
    while !stderr.lock().unwrap().contains("WITHOUT authentication") {
        assert!(
            Instant::now() < deadline,
            "no warning: {}",
            stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Online management on the server's own store (SQLite, held by the server), revocation
/// taking effect while it runs, and no key ever in the log, at `trace` level.
#[test]
fn keys_are_managed_online_and_never_logged() {
    let dir = TempDir::new();
    let data = dir.0.join("data");
    let data_arg = data.to_str().unwrap();
    let store_args = ["--store", "sqlite", "--data-dir", data_arg];
    // The first admin key: offline, before the server holds the store.
    let mut add = vec!["keys", "add", "--tenant", "ops", "--role", "admin"];
    add.extend(store_args);
    let (status, admin, stderr) = run_to_exit(&add);
    assert!(status.success(), "{stderr}");
    let admin = admin.trim().to_string();

    let mut command = contextd_command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--auth",
        "keys",
        "--store",
        "sqlite",
        "--data-dir",
        data_arg,
    ]);
    command.env("CONTEXTD_LOG", "trace");
    let daemon = Daemon::spawn(command);
    let server = daemon.addr.to_string();

    // Offline while the server holds the store: refused, pointing at --server.
    let mut offline = vec!["keys", "list"];
    offline.extend(store_args);
    let (status, _, stderr) = run_to_exit(&offline);
    assert!(!status.success());
    assert!(stderr.contains("--server"), "{stderr}");

    let online = |args: &[&str], key: &str| {
        let mut all = args.to_vec();
        all.extend(["--server", server.as_str(), "--key", key]);
        let (status, stdout, stderr) = run_to_exit(&all);
        assert!(status.success(), "contextd {args:?}: {stderr}");
        stdout.trim().to_string()
    };
    let user = online(&["keys", "add", "--tenant", "team"], &admin);
    assert!(user.starts_with("ctxd_") && user.len() == 48, "{user}");
    let listed = online(&["keys", "list"], &admin);
    assert!(
        listed.contains("team") && !listed.contains(&user),
        "{listed}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = ConnectOptions::default().bearer_token(user.clone());
        let team = Client::connect_with(&server, options).await.unwrap();
        team.create_session(NewSession::new("t1")).await.unwrap();
        team.interact("t1", "hello", None).await.unwrap();
    });
    let tenants = online(&["tenants", "list"], &admin);
    assert!(tenants.contains("team"), "{tenants}");
    let export = online(&["tenants", "export", "team"], &admin);
    let records: Vec<Json> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{export}");
    assert_eq!(records[0]["session"]["sessionId"], "t1");
    assert_eq!(records[1]["message"]["content"], "hello");

    // Revoked online: refused within auth.key_cache_ms (2 s), bounded here at 10 s.
    let id = contextd::auth::secret::key_id(&contextd::auth::secret::hash(&user));
    online(&["keys", "revoke", &id], &admin);
    runtime.block_on(async {
        let options = ConnectOptions::default().bearer_token(user.clone());
        let team = Client::connect_with(&server, options).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match team.get_session("t1").await {
                Err(e) if e.code() == Code::Unauthenticated => break,
                _ => assert!(Instant::now() < deadline, "the revoked key still works"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let deleted = online(&["tenants", "delete", "team"], &admin);
    assert!(
        deleted.contains("deleted 1 sessions, 2 messages and 1 keys"),
        "{deleted}"
    );

    let log = daemon.stderr();
    assert!(log.contains("TRACE"), "the log is at trace level");
    for key in [&admin, &user] {
        assert!(!log.contains(key.as_str()), "a key is in the log");
        assert!(!log.contains(&key[5..20]), "part of a key is in the log");
    }
}

#[tokio::test]
async fn a_tenant_over_its_storage_quota_is_refused_and_others_are_not() {
    let dir = TempDir::new();
    let config = keys_config(&dir.0);
    let k = make_keys(&config);
    let mut server_config = server_config(&dir.0);
    server_config.limits.tenant_storage_bytes = 4_000;
    let server = TestServer::start_with(server_config).await;
    let alice = client(&server, Some(&k.alice)).await;
    let bob = client(&server, Some(&k.bob)).await;
    let long = "x".repeat(1_000);
    let mut refused = None;
    for turn in 0..10 {
        match alice.interact("big", &long, None).await {
            Ok(_) => {}
            Err(error) => {
                refused = Some((turn, error));
                break;
            }
        }
    }
    let (turn, error) = refused.expect("the quota stops the tenant");
    // Each turn stores the message and the echo of it: about 2 KB.
    assert!((2..=4).contains(&turn), "refused at turn {turn}");
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert!(
        error.to_string().contains("limits.tenant_storage_bytes"),
        "{error}"
    );
    let status = match &error {
        contextd::client::Error::Status(status) => status.clone(),
        other => panic!("{other}"),
    };
    assert!(
        status.details().is_empty(),
        "no retry information: waiting does not help"
    );
    assert_eq!(
        code(alice.create_session(NewSession::new("more")).await),
        Code::ResourceExhausted
    );
    // Another tenant is not affected; deleting frees the space at once.
    bob.interact("b", "hello", None).await.unwrap();
    alice.delete_session("big").await.unwrap();
    alice.interact("small", "hello", None).await.unwrap();
    server.stop().await;
}

/// Two replicas on one PostgreSQL database: a key made through one works on the other, and
/// its revocation through one reaches the other within `auth.key_cache_ms` (2 s by default;
/// bounded at 10 s here so that a loaded machine cannot fail the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_replica() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = common::postgres::Cluster::shared();
    let url = cluster.create_database();
    let (status, admin, stderr) = run_to_exit(&[
        "keys", "add", "--store", &url, "--tenant", "default", "--role", "admin",
    ]);
    assert!(status.success(), "offline keys add: {stderr}");
    let admin = admin.trim().to_owned();
    let replica = || {
        let mut config = test_config();
        config.store = url.clone();
        config.auth.mode = AuthMode::Keys;
        TestServer::start_with(config)
    };
    let (one, two) = (replica().await, replica().await);

    let made = client(&one, Some(&admin))
        .await
        .create_key("team", v1::KeyRole::User, "replicas", None)
        .await
        .unwrap();
    let user = made.secret.clone();
    let id = made.key.expect("the key's record").key_id;
    let on_two = client(&two, Some(&user)).await;
    on_two.create_session(NewSession::new("r1")).await.unwrap();
    let on_one = client(&one, Some(&user)).await;
    assert_eq!(on_one.get_session("r1").await.unwrap().session_id, "r1");

    client(&one, Some(&admin))
        .await
        .revoke_key(&id)
        .await
        .unwrap();
    let revoked = Instant::now();
    let deadline = revoked + Duration::from_secs(10);
    loop {
        match on_two.get_session("r1").await {
            Err(e) if e.code() == Code::Unauthenticated => {
                assert!(e.to_string().contains("revoked"), "{e}");
                break;
            }
            Ok(_) => assert!(
                Instant::now() < deadline,
                "the revoked key still works on the other replica"
            ),
            Err(e) => panic!("unexpected error on the other replica: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "revocation reached the other replica after {} ms",
        revoked.elapsed().as_millis()
    );
    // The replica that revoked it refuses it at once.
    assert_eq!(code(on_one.get_session("r1").await), Code::Unauthenticated);
}
