//! The commit point on a real process with a stalled disk: a turn is answered only once its
//! batch's fsync has returned. contextd runs with `tests/support/fsync_gate.c` preloaded, which
//! holds every fsync while a gate file exists; turns sent meanwhile stay unanswered, and once
//! the disk goes on, every reply's turn is in the file (read back after SIGKILL).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::backend::TempDir;
use common::daemon::*;
use common::*;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;

/// Builds the fsync gate as a shared library in `dir`.
fn build_gate(dir: &Path) -> PathBuf {
    let library = dir.join("libfsync_gate.so");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fsync_gate.c");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&compiler)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .status()
        .unwrap_or_else(|e| panic!("{compiler} builds the fsync gate: {e}"));
    assert!(
        status.success(),
        "{compiler} failed on {}",
        source.display()
    );
    library
}

/// `contextd serve` on the SQLite store in `data`.
fn durable_command(data: &Path) -> Command {
    contextd_command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        "sqlite",
        "--data-dir",
        &data.display().to_string(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_leaves_before_its_batch_fsync_returns() {
    let dir = TempDir::new("commit-point");
    let library = build_gate(dir.path());
    let gate = dir.path().join("gate");
    let waiting = dir.path().join("gate.waiting");
    let data = dir.path().join("data");

    let mut command = durable_command(&data);
    command
        .env("LD_PRELOAD", &library)
        .env("CONTEXTD_FSYNC_GATE", &gate);
    let mut daemon = Daemon::spawn(command);
    let mut interact = InteractServiceClient::new(connect(daemon.addr).await);
    let sessions = ["held-a", "held-b", "held-c"];
    for id in sessions {
        say(&mut interact, id, "created on an open disk", None).await;
    }
    assert!(!waiting.exists(), "nothing was held before the gate closed");

    // The disk stalls: the next commit's fsync waits at the gate.
    std::fs::write(&gate, b"").unwrap();
    let turns: Vec<_> = sessions
        .iter()
        .map(|id| {
            let mut client = interact.clone();
            let request = interact_request(id, "is this stored?", None);
            tokio::spawn(async move { client.interact(request).await })
        })
        .collect();
    eventually("a commit's fsync is held at the gate", || async {
        waiting.exists()
    })
    .await;
    // However long the disk takes, nobody is answered before it is done.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (id, turn) in sessions.iter().zip(&turns) {
        assert!(
            !turn.is_finished(),
            "the turn on {id} was answered while its commit's fsync was held"
        );
    }

    std::fs::remove_file(&gate).unwrap();
    let mut told = Vec::new();
    for (id, turn) in sessions.iter().zip(turns) {
        let reply = within("the reply once the disk goes on", turn)
            .await
            .expect("the turn task")
            .unwrap_or_else(|s| panic!("the turn on {id} failed: {s:?}"))
            .into_inner();
        told.push((*id, reply.turn_id));
    }

    // What the clients were told is in the file: killed at once, started again without the
    // gate, the store has every acknowledged turn.
    daemon.child.kill().unwrap();
    daemon.wait();
    let again = Daemon::spawn(durable_command(&data));
    let mut history = SessionServiceClient::new(connect(again.addr).await);
    for (id, turn_id) in told {
        let messages = all_messages(&mut history, id, 0).await;
        assert!(
            messages.iter().any(|m| m.turn_id == turn_id),
            "the acknowledged turn {turn_id} of {id} is stored"
        );
    }
}
