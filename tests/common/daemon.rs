//! The `contextd` binary as a child process: start it, read its startup line, signal or kill
//! it, and collect what it prints.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_contextd");

/// How long the process may take to start, exit or print; generous for loaded machines.
pub const PROCESS_WAIT: Duration = Duration::from_secs(30);

/// A running `contextd` process, killed when dropped if it is still running.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `contextd serve --listen 127.0.0.1:0` and waits for its startup line.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts `contextd serve --listen 127.0.0.1:0 <extra>` and waits for its startup line.
    pub fn start_with(extra: &[String]) -> Self {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend(extra.iter().map(String::as_str));
        Self::spawn(contextd_command(&args))
    }

    /// Spawns `command` (a [`contextd_command`]) and waits for its startup line.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("spawn contextd");
        let stderr = drain(child.stderr.take().expect("stderr"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep reading so the process never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(PROCESS_WAIT) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                panic!(
                    "no startup line from contextd ({other:?}); stderr:\n{}",
                    stderr.lock().expect("stderr lock")
                );
            }
        };
        let addr: SocketAddr = line
            .strip_prefix("contextd listening on ")
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("startup line {line:?} has no address: {e}"));
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_ne!(addr.port(), 0, "the real port is printed");
        Self {
            child,
            addr,
            stderr,
        }
    }

    /// Sends a signal with `kill -<signal> <pid>`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        wait_for_exit(&mut self.child).unwrap_or_else(|| {
            panic!(
                "contextd did not exit within {PROCESS_WAIT:?}; stderr:\n{}",
                self.stderr.lock().expect("stderr lock")
            )
        })
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// The first stderr line `matches` accepts, waiting up to [`PROCESS_WAIT`] for it.
    pub async fn log_line(&self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PROCESS_WAIT;
        loop {
            let log = self.stderr();
            if let Some(line) = log.lines().find(|line| matches(line)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no such log line in:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `contextd <args>` with piped output, on the in-memory store unless `args` name another.
pub fn contextd_command(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_remove("CONTEXTD_CONFIG")
        .env_remove("CONTEXTD_LISTEN")
        .env("CONTEXTD_STORE", "memory")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Reads a pipe to its end on a thread, collecting the text.
pub fn drain(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .expect("pipe lock")
                    .push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
    });
    text
}

/// Polls for the child's exit for up to [`PROCESS_WAIT`].
pub fn wait_for_exit(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + PROCESS_WAIT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs contextd with `args` to its exit; returns the exit status, stdout and stderr.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = contextd_command(args).spawn().expect("spawn contextd");
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let Some(status) = wait_for_exit(&mut child) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "contextd {args:?} kept running; stderr:\n{}",
            stderr.lock().expect("stderr lock")
        );
    };
    // The pipes close at exit; give the reader threads a moment to finish.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&stderr) > 1 || Arc::strong_count(&stdout) > 1 {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = stdout.lock().expect("stdout lock").clone();
    let err = stderr.lock().expect("stderr lock").clone();
    (status, out, err)
}
