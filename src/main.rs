//! The `contextd` binary: parse flags, set up logging, bind, and hand over to the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use contextd::config::{Config, LogFormat};
use contextd::server::log_output::{BufferedStderr, FlushGuard};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than the system allocator: a turn allocates and frees many small buffers,
/// and glibc's malloc took about a tenth of a unary turn's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// contextd: a gRPC context service for LLM agents.
#[derive(Parser, Debug)]
#[command(name = "contextd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gRPC server.
    ///
    /// Settings come from, lowest first: built-in defaults, the TOML file given by --config,
    /// CONTEXTD_* environment variables, and these flags. The log filter comes from
    /// CONTEXTD_LOG or RUST_LOG (default: info).
    Serve(ServeArgs),
    /// Chat with a contextd server in the terminal, over one Converse stream.
    ///
    /// Lines are sent as user messages and the reply prints as it arrives. When the model
    /// asks for a client-side tool, type its result (start with `!` to report a failure).
    /// Commands: /context, /history, /preview, /help, /quit. Ctrl-C cancels a running turn.
    Chat(ChatArgs),
    /// Manage API keys: add (printed once), list, revoke.
    ///
    /// Without --server the commands work on the store (same --store, --data-dir and --config
    /// as `serve`; no server may hold an SQLite data directory meanwhile) or on the configured
    /// auth.keys_file; with --server ADDR and an admin --key they go to the running server.
    Keys {
        #[command(subcommand)]
        command: contextd::admin_cli::KeysCommand,
        #[command(flatten)]
        target: contextd::admin_cli::Target,
    },
    /// Manage tenants: list their usage, export one as JSON lines, delete one.
    ///
    /// Reaches the store or a running server like `contextd keys`.
    Tenants {
        #[command(subcommand)]
        command: contextd::admin_cli::TenantsCommand,
        #[command(flatten)]
        target: contextd::admin_cli::Target,
    },
}

#[derive(clap::Args, Debug)]
struct ChatArgs {
    /// The server, HOST:PORT or http://HOST:PORT
    #[arg(long, env = "CONTEXTD_TARGET", value_name = "ADDR", default_value = contextd::client::DEFAULT_TARGET)]
    target: String,
    /// Session to attach to, created when it does not exist [default: a new chat-<random> one]
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Model of a new session [default: the server's]
    #[arg(long, value_name = "M")]
    model: Option<String>,
    /// Declare a client-side tool NAME on a new session; you type its results (repeatable)
    #[arg(long = "tool", value_name = "NAME")]
    tools: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free one) [default: 127.0.0.1:61900]
    #[arg(long, env = "CONTEXTD_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// TOML configuration file (every setting; see the README)
    #[arg(long, env = "CONTEXTD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format [default: text]
    #[arg(long, env = "CONTEXTD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Model of sessions that name none [default: echo]
    #[arg(long, env = "CONTEXTD_DEFAULT_MODEL", value_name = "MODEL")]
    default_model: Option<String>,
    /// Most model steps per turn while server-side tools are called [default: 8]
    #[arg(long, env = "CONTEXTD_MAX_TOOL_STEPS", value_name = "N")]
    max_tool_steps: Option<u32>,
    /// Milliseconds running turns get to finish on shutdown [default: 10000]
    #[arg(long, env = "CONTEXTD_SHUTDOWN_GRACE_MS", value_name = "MS")]
    shutdown_grace_ms: Option<u64>,
    /// Largest user message in bytes [default: 1048576]
    #[arg(long, env = "CONTEXTD_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    max_message_bytes: Option<usize>,
    /// Largest context or patch in bytes of JSON [default: 1048576]
    #[arg(long, env = "CONTEXTD_MAX_CONTEXT_BYTES", value_name = "BYTES")]
    max_context_bytes: Option<usize>,
    /// Deepest nesting of a context or patch [default: 32]
    #[arg(long, env = "CONTEXTD_MAX_CONTEXT_DEPTH", value_name = "LEVELS")]
    max_context_depth: Option<usize>,
    /// Where sessions live: `sqlite` (default, in --data-dir), `memory`, or a
    /// `postgres://user@host:port/database` URL shared by several replicas.
    #[arg(long, env = "CONTEXTD_STORE", value_name = "STORE")]
    store: Option<String>,
    /// Directory of the SQLite store (created on first start) [default: ./contextd-data].
    #[arg(long, env = "CONTEXTD_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Idle time-to-live of sessions without an expire_time of their own (`30m`, `24h`,
    /// `7d`); unset: sessions never expire.
    #[arg(long, env = "CONTEXTD_SESSION_TTL", value_name = "DURATION")]
    session_ttl: Option<String>,
    /// Who may call: `none` (loopback only), `keys` (authorization: Bearer <key>) or `mtls`
    /// (client certificates) [default: none]
    #[arg(long, env = "CONTEXTD_AUTH", value_enum)]
    auth: Option<contextd::config::AuthMode>,
    /// Serve a non-loopback address without authentication anyway (anyone who reaches it
    /// reads and changes every conversation)
    #[arg(long, env = "CONTEXTD_INSECURE_LISTEN")]
    insecure_listen: bool,
}

impl ServeArgs {
    /// Defaults < file < environment and flags (clap already ranks flags over environment).
    fn into_config(self) -> Result<Config, contextd::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.log_format {
            config.log_format = v;
        }
        if let Some(v) = self.default_model {
            config.engine.default_model = v;
        }
        if let Some(v) = self.max_tool_steps {
            config.engine.max_tool_steps = v;
        }
        if let Some(v) = self.shutdown_grace_ms {
            config.shutdown_grace_ms = v;
        }
        if let Some(v) = self.max_message_bytes {
            config.limits.max_message_bytes = v;
        }
        if let Some(v) = self.max_context_bytes {
            config.limits.max_context_bytes = v;
        }
        if let Some(v) = self.max_context_depth {
            config.limits.max_context_depth = v;
        }
        if let Some(v) = self.store {
            config.store = v;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.session_ttl {
            config.session_ttl = Some(v);
        }
        if let Some(v) = self.auth {
            config.auth.mode = v;
        }
        if self.insecure_listen {
            config.insecure_listen = true;
        }
        Ok(config)
    }
}

/// Sets up logging to stderr; lines are written by a background thread until the returned
/// guard is dropped (see `contextd::server::log_output`).
fn init_logging(config: &Config) -> Option<FlushGuard> {
    let filter = std::env::var("CONTEXTD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| config.log_filter.clone());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("contextd: ignoring invalid log filter {filter:?}: {e}");
        EnvFilter::new("info")
    });
    let (writer, guard) = BufferedStderr::start();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    match guard {
        Ok(guard) => Some(guard),
        Err(e) => {
            eprintln!("contextd: cannot start the log writer thread ({e}); logging directly");
            None
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Chat(args) => chat(args),
        Command::Keys { command, target } => {
            admin(target, contextd::admin_cli::Command::Keys(command))
        }
        Command::Tenants { command, target } => {
            admin(target, contextd::admin_cli::Command::Tenants(command))
        }
    }
}

fn admin(target: contextd::admin_cli::Target, command: contextd::admin_cli::Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("contextd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(contextd::admin_cli::run(target, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("contextd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn chat(args: ChatArgs) -> ExitCode {
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let options = contextd::chat::ChatOptions {
        target: args.target,
        session_id: args.session,
        model: args.model,
        tools: args.tools,
        colour,
        prompts: std::io::stdin().is_terminal(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("contextd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let input = tokio::io::BufReader::new(tokio::io::stdin());
    match runtime.block_on(contextd::chat::run(options, input, std::io::stdout())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("contextd: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = match config.validate() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("contextd: {e}");
            return ExitCode::from(2);
        }
    };
    let _log = init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("contextd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match contextd::server::bind(addr).await {
            Ok(listener) => listener,
            Err(message) => {
                eprintln!("contextd: {message}");
                return ExitCode::FAILURE;
            }
        };
        // Announce the address only once the store is open and requests can be served.
        let store = match contextd::server::open(&config).await {
            Ok(store) => store,
            Err(e) => {
                eprintln!("contextd: {e}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(local) => println!("contextd listening on {local}"),
            Err(e) => {
                eprintln!("contextd: {e}");
                return ExitCode::FAILURE;
            }
        }
        match contextd::server::serve_store(listener, config, store, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("contextd: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
