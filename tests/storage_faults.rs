//! Storage faults, injected for real: the data directory on a small tmpfs that fills up, and
//! the database file removed or replaced under a running server. What a client was told is
//! stored must survive a restart; what could not be stored must be refused, saying why; and
//! the service must resume by itself when space returns.
//!
//! Mounting a tmpfs needs root: where the test cannot mount one, the full-disk case is
//! reported as ignored (decided at run time), never as passed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use contextd::config::Config;
use libtest_mimic::{Arguments, Failed, Trial};
use tonic::Code;

/// A fresh directory under the system temp dir, removed on drop (unmounted first if mounted).
struct Scratch {
    path: PathBuf,
    mounted: bool,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "contextd-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).expect("scratch dir");
        Self {
            path,
            mounted: false,
        }
    }

    /// Mounts a tmpfs of `size` (e.g. `2m`) on the directory; false if that is not allowed.
    fn mount_tmpfs(&mut self, size: &str) -> bool {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&self.path)
            .output()
            .is_ok_and(|o| o.status.success());
        self.mounted = ok;
        ok
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount: {out:?}");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).output();
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn sqlite_config(data_dir: &Path) -> Config {
    Config {
        store: "sqlite".into(),
        data_dir: data_dir.to_path_buf(),
        ..test_config()
    }
}

/// Fills the disk with turns, checks every answer, grows the disk, checks that the service
/// resumed, restarts, and checks that exactly the acknowledged turns are there.
async fn disk_full_loses_no_acknowledged_turn(scratch: Scratch) {
    let data_dir = scratch.path.join("data");
    let server = TestServer::start_with(sqlite_config(&data_dir)).await;
    let mut interact = server.interact().await;
    let filler = "x".repeat(3000);
    // Turn ids acknowledged per session.
    let mut acked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut refusals = 0;
    let mut attempt = 0;
    // 2 MiB hold a few hundred such turns; the bound only guards against a disk that never
    // fills.
    while refusals < 20 {
        attempt += 1;
        assert!(attempt < 5_000, "the 2 MiB disk never filled");
        let session = format!("s{}", attempt % 5);
        let request = interact_request(&session, &format!("{attempt} {filler}"), None);
        match within("Interact", interact.interact(request)).await {
            Ok(reply) => acked
                .entry(session)
                .or_default()
                .push(reply.into_inner().turn_id),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    status.message().contains("the data disk is full"),
                    "says what happened: {status:?}"
                );
                assert!(!status.message().contains('/'), "no paths: {status:?}");
                refusals += 1;
            }
        }
    }

    // Space returns: the service resumes by itself, on existing sessions and new ones.
    scratch.resize("64m");
    for n in 0..10 {
        let session = format!("s{}", n % 6);
        let reply = within(
            "Interact",
            interact.interact(interact_request(&session, "after the disk grew", None)),
        )
        .await
        .unwrap_or_else(|s| panic!("turn {n} after the disk grew: {s:?}"));
        acked
            .entry(session)
            .or_default()
            .push(reply.into_inner().turn_id);
    }
    drop(interact);
    assert!(server.stop().await);

    // Restarted on the same directory: every acknowledged turn is there, and nothing else.
    let server = TestServer::start_with(sqlite_config(&data_dir)).await;
    let mut sessions = server.sessions().await;
    for (session, turns) in &acked {
        let stored: BTreeSet<String> = all_messages(&mut sessions, session, 100)
            .await
            .into_iter()
            .map(|m| m.turn_id)
            .collect();
        let expected: BTreeSet<String> = turns.iter().cloned().collect();
        assert_eq!(stored, expected, "session {session}");
        let session = get_session(&mut sessions, session).await;
        assert_eq!(session.message_count, 2 * turns.len() as u64);
    }
    assert!(server.stop().await);
}

/// Removes (or replaces) the database file under a running server: every later request is
/// refused, saying what happened, instead of writing into a file nobody will open again.
async fn a_vanished_database_file_refuses_every_request(replace: bool) {
    let scratch = Scratch::new("vanished");
    let data_dir = scratch.path.join("data");
    let server = TestServer::start_with(sqlite_config(&data_dir)).await;
    let mut interact = server.interact().await;
    say(&mut interact, "kept", "before", None).await;
    let db = data_dir.join("contextd.db");
    std::fs::remove_file(&db).expect("remove the database file");
    if replace {
        std::fs::write(&db, b"").expect("put another file in its place");
    }
    let status = expect_code(
        within(
            "Interact",
            interact.interact(interact_request("new", "after", None)),
        )
        .await,
        Code::Unavailable,
    );
    assert!(
        status.message().contains("removed or replaced"),
        "{status:?}"
    );
    assert!(!status.message().contains('/'), "no paths: {status:?}");
    // Reads are refused too: what they would show is gone at the next start.
    let mut sessions = server.sessions().await;
    let status = expect_code(
        within(
            "GetSession",
            sessions.get_session(contextd::api::v1::GetSessionRequest {
                session_id: "kept".into(),
            }),
        )
        .await,
        Code::Unavailable,
    );
    assert!(status.message().contains("restart"), "{status:?}");
    assert!(server.stop().await);
}

/// Runs `future` on a runtime of its own, as `#[tokio::test]` would.
fn block_on(future: impl Future<Output = ()>) -> Result<(), Failed> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future);
    Ok(())
}

fn main() {
    let mut full = Scratch::new("full-disk");
    let can_mount = full.mount_tmpfs("2m");
    let mut full = Some(full);
    let trials = vec![
        Trial::test("disk_full_loses_no_acknowledged_turn", move || {
            block_on(disk_full_loses_no_acknowledged_turn(
                full.take().expect("runs once"),
            ))
        })
        .with_ignored_flag(!can_mount),
        Trial::test("a_removed_database_file_refuses_every_request", || {
            block_on(a_vanished_database_file_refuses_every_request(false))
        }),
        Trial::test("a_replaced_database_file_refuses_every_request", || {
            block_on(a_vanished_database_file_refuses_every_request(true))
        }),
    ];
    if !can_mount {
        eprintln!("disk_full_loses_no_acknowledged_turn is ignored: mounting a tmpfs needs root");
    }
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
