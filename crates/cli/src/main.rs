//! The `switchboard` binary: the service, its admin and data commands, and
//! its benchmarks.

mod bench;
mod commands;
mod config;
mod serve;

use clap::{Parser, Subcommand};

/// jemalloc: frees from any thread go back to shared arenas, and its
/// background threads (switched on at start) give freed memory back to the
/// system, so that a node's memory follows what its sessions hold. (glibc's
/// allocator kept much of what blocking-pool threads allocated and others
/// freed.)
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Switchboard: an eventing service with an embedded durable log.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: API, sessions and the embedded log in one process.
    Serve(Box<config::ServeArgs>),
    /// Run an API node: the stateless HTTP tier, which reaches backend
    /// nodes through the phone switch's RabbitMQ brokers (--router).
    Api(Box<config::ServeArgs>),
    /// Run a backend node: sessions against the store (--store), attached
    /// to one phone-switch broker (--router).
    Backend(Box<config::ServeArgs>),
    /// Create, list, describe and delete streams.
    Stream {
        #[command(subcommand)]
        cmd: commands::StreamCmd,
        #[command(flatten)]
        conn: commands::Conn,
    },
    /// Publish events: one with --value, or NDJSON from stdin.
    Publish {
        #[command(flatten)]
        args: commands::PublishArgs,
        #[command(flatten)]
        conn: commands::Conn,
    },
    /// Print a stream's events as NDJSON.
    Tail {
        #[command(flatten)]
        args: commands::TailArgs,
        #[command(flatten)]
        conn: commands::Conn,
    },
    /// Show the cluster: API and backend nodes (state, broker, sessions,
    /// memory, load) and the phone switch's brokers.
    Cluster {
        /// Print the JSON answer of GET /v1/cluster instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: commands::Conn,
    },
    /// Encryption keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Benchmarks; each prints one JSON object as its last line.
    #[command(subcommand)]
    Bench(bench::Bench),
}

/// Where the server key file is: `--server-key-file`, else the data
/// directory's.
#[derive(Debug, clap::Args)]
struct ServerKeyFile {
    /// Server key file, if the server uses another than <data-dir>/server.key.
    #[arg(long, env = "SWITCHBOARD_SERVER_KEY_FILE")]
    server_key_file: Option<std::path::PathBuf>,
    /// Data directory of the server.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", default_value = "./data")]
    data_dir: std::path::PathBuf,
}

impl ServerKeyFile {
    fn path(&self) -> std::path::PathBuf {
        self.server_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("server.key"))
    }
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Add a new master key to the master key file. Servers using the
    /// file wrap every data key under it too: running ones within seconds,
    /// stopped ones when they start. No data is rewritten; old data stays
    /// readable.
    #[command(alias = "rotate-master")]
    Rotate {
        /// Data directory of the server.
        #[arg(long, env = "SWITCHBOARD_DATA_DIR", default_value = "./data")]
        data_dir: std::path::PathBuf,
        /// Master key file, if the server uses another than
        /// <data-dir>/keys/master.keys.
        #[arg(long, env = "SWITCHBOARD_MASTER_KEY_FILE")]
        master_key_file: Option<std::path::PathBuf>,
    },
    /// Create a server key file with one random key (mode 0600), to share
    /// between the nodes of a cluster with `--server-key-file`.
    InitServer {
        /// Where to write it; refused if it exists.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Add a new server key: new cursors and sessions use it, those minted
    /// under older keys keep working until those are retired. Running
    /// nodes pick the change up within a second.
    RotateServer(ServerKeyFile),
    /// Remove a server key: cursors and sessions minted under it stop
    /// working. The newest key cannot be retired.
    RetireServer {
        #[command(flatten)]
        file: ServerKeyFile,
        /// Id of the key to retire.
        #[arg(long)]
        id: u32,
    },
}

fn keys(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Rotate {
            data_dir,
            master_key_file,
        } => {
            let keys_dir = data_dir.join("keys");
            let file = master_key_file.unwrap_or_else(|| keys_dir.join("master.keys"));
            if !file.exists() {
                anyhow::bail!("{} does not exist: nothing to rotate", file.display());
            }
            let id = switchboard_session::crypto::add_master(&file)?;
            println!(
                "new master key {id} in {}; servers using it wrap every data key under it \
                 (running ones within seconds, stopped ones when they start)",
                file.display()
            );
            Ok(())
        }
        KeysCmd::InitServer { file } => {
            if file.exists() {
                anyhow::bail!("{} exists: refusing to replace server keys", file.display());
            }
            switchboard_rpc::keys::ServerKeys::load_or_create(&file)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
            println!("server key 1 in {}", file.display());
            Ok(())
        }
        KeysCmd::RotateServer(f) => {
            let path = f.path();
            let id = switchboard_rpc::keys::rotate(&path)
                .map_err(|e| anyhow::anyhow!("rotating {}: {e}", path.display()))?;
            println!(
                "new server key {id} in {}; keys {:?} still open older cursors and sessions",
                path.display(),
                key_ids(&path)?.iter().filter(|&&k| k != id).collect::<Vec<_>>()
            );
            Ok(())
        }
        KeysCmd::RetireServer { file, id } => {
            let path = file.path();
            switchboard_rpc::keys::retire(&path, id)
                .map_err(|e| anyhow::anyhow!("retiring key {id} of {}: {e}", path.display()))?;
            println!("server key {id} retired; keys in use: {:?}", key_ids(&path)?);
            Ok(())
        }
    }
}

fn key_ids(path: &std::path::Path) -> anyhow::Result<Vec<u32>> {
    Ok(switchboard_rpc::keys::ServerKeys::from_file(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
        .ids())
}

fn init_cli_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// jemalloc's background threads give memory freed for about ten seconds
/// (its default decay) back to the system, also when no thread allocates.
/// (A shorter decay made busy nodes fault the same pages in again.)
fn tune_allocator() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("warning: jemalloc background threads: {e}");
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            tune_allocator();
            serve::run(*args, serve::Role::All)
        }
        Command::Api(args) => {
            tune_allocator();
            serve::run(*args, serve::Role::Api)
        }
        Command::Backend(args) => {
            tune_allocator();
            serve::run(*args, serve::Role::Backend)
        }
        other => {
            init_cli_logging();
            match other {
                Command::Stream { conn, cmd } => conn.explain(commands::stream(&conn, cmd)),
                Command::Publish { conn, args } => conn.explain(commands::publish(&conn, args)),
                Command::Tail { conn, args } => conn.explain(commands::tail(&conn, args)),
                Command::Cluster { conn, json } => conn.explain(commands::cluster(&conn, json)),
                Command::Keys(k) => keys(k),
                Command::Bench(b) => bench::run(b),
                Command::Serve(_) | Command::Api(_) | Command::Backend(_) => unreachable!(),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints an error for a person: the message, then each cause on its own
/// line. Never a backtrace, whatever `RUST_BACKTRACE` says: these are
/// answers to what the user did, not crashes.
fn report(e: &anyhow::Error) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {e}");
    let mut last = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        // wrappers often repeat their source's text
        if !last.contains(&text) {
            let _ = writeln!(err, "  caused by: {text}");
        }
        last = text;
    }
}
