//! What the MCP client tests share: one Python virtual environment under
//! `target/mcp-servers/time-venv` holding PyPI's `mcp-server-time` and the official Python SDK
//! (`mcp`), pinned, installed once and reused by every test file; and `tests/mcp_toolbox.py`,
//! a small MCP server written with that SDK, run over stdio or Streamable HTTP.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use contextd::config::McpServerConfig;

/// What the environment holds, pinned; also its stamp, so a changed pin reinstalls.
const PACKAGES: [&str; 2] = ["mcp-server-time==2026.10.19", "mcp==2.3.0"];

/// The virtual environment, installed once per test run (and kept while the pins hold).
pub fn python_venv() -> &'static PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mcp-servers/time-venv");
        let stamp = venv.join(".installed");
        let wanted = PACKAGES.join(" ");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 -m venv");
            assert!(made.success(), "python3 -m venv failed");
            let installed = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(PACKAGES)
                .status()
                .expect("pip install");
            assert!(installed.success(), "pip install {wanted} failed");
            std::fs::write(&stamp, &wanted).expect("stamp");
        }
        venv
    })
}

/// The `mcp-server-time` program.
pub fn time_server() -> PathBuf {
    python_venv().join("bin/mcp-server-time")
}

/// The venv's Python and the toolbox script, as a command line.
pub fn toolbox_command() -> (String, String) {
    let python = python_venv().join("bin/python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_toolbox.py");
    (
        python.to_string_lossy().into_owned(),
        script.to_string_lossy().into_owned(),
    )
}

/// The toolbox over stdio, named `name`, with a start-up bound for a busy machine.
pub fn toolbox_stdio(name: &str) -> McpServerConfig {
    let (python, script) = toolbox_command();
    let mut config = McpServerConfig::stdio(name, &python, &[&script]);
    config.startup_timeout_ms = 60_000;
    config
}

/// The toolbox serving Streamable HTTP on a free port, stopped when dropped.
pub struct ToolboxHttp {
    child: std::process::Child,
    /// Its endpoint, `http://127.0.0.1:<port>/mcp`.
    pub url: String,
}

impl ToolboxHttp {
    /// Starts it and waits (generously) until its port accepts connections.
    pub async fn start() -> Self {
        let (python, script) = toolbox_command();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("its address")
            .port();
        let child = Command::new(python)
            .arg(script)
            .args(["--http", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python mcp_toolbox.py --http");
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        };
        wait_for_port(port, "the toolbox").await;
        server
    }

    /// An `[[mcp_servers]]` entry for it, named `name`.
    pub fn config(&self, name: &str) -> McpServerConfig {
        let mut config = McpServerConfig::http(name, &self.url);
        config.startup_timeout_ms = 60_000;
        config
    }
}

impl Drop for ToolboxHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (generously: 60 s) until `127.0.0.1:port` accepts connections; `what` names the
/// server in the failure.
pub async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..1200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on port {port} within 60 s");
}
