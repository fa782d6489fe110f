//! # cellpay — the node binary
//!
//! One binary for every role: `dev` (a local cluster of child processes), `cluster new`
//! (configuration and TLS material), `node` (one cluster member), `bench` (load generator) and
//! `admin` (management client). The HTTP API lives in [`api`], the wiring of a node in
//! [`server`], telemetry in [`telemetry`].
//!
//! Nothing depends on this crate.

mod admin;
mod api;
mod bench;
mod cluster_new;
mod config;
mod dev;
mod limits;
mod server;
mod snapshots;
mod telemetry;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cellpay",
    version,
    about = "cellpay: a replicated mobile-money ledger"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create (if absent) and run a local cluster of N nodes as child processes.
    Dev(dev::DevArgs),
    /// Cluster set-up commands.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// Run one node in the foreground.
    Node {
        #[arg(long)]
        config: PathBuf,
    },
    /// Load generator against a running cluster.
    Bench(bench::BenchArgs),
    /// Management client.
    Admin(admin::AdminArgs),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Write DIR/node-k/config.toml and the TLS material for a local N-node cluster.
    New {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        #[arg(long)]
        token: Option<String>,
        /// Snapshot after this many entries (small values make tests exercise snapshots).
        #[arg(long, default_value_t = 20_000)]
        snapshot_logs: u64,
        /// Snapshot also after this many commands (entries can carry thousands).
        #[arg(long, default_value_t = limits::SNAPSHOT_COMMANDS_SINCE_LAST)]
        snapshot_commands: u64,
        /// Log entries kept behind a snapshot.
        #[arg(long, default_value_t = 1000)]
        logs_to_keep: u64,
        /// Shards (one Raft group each, replicated on every node).
        #[arg(long, default_value_t = 8)]
        shards: u32,
    },
}

/// glibc's malloc, set for a node before any thread exists (the node restarts itself once with
/// the variables an operator has not set already, to any value):
/// - `MALLOC_ARENA_MAX=1`: glibc gives each allocating thread its own arena and rarely hands
///   their free space back: a node (tokio workers, the blocking pool, the log writer) measured
///   ~3,300 bytes resident per account with the default arenas and ~2,240 with one, at the same
///   throughput (bench/RESULTS.md, 2026-11-26).
/// - `GLIBC_TUNABLES=glibc.malloc.tcache_count=2000`: each thread keeps up to 2,000 freed small
///   blocks per size (glibc's default is 7) to hand out again without the arena. A batch frees
///   and allocates thousands of small blocks (decoded ids, statement lines, answers) at a time;
///   with the default, a quarter of a node's CPU went to `malloc`/`free` and the arena's
///   consolidation, and batches ran 8-12% slower (bench/RESULTS.md, session 8).
const MALLOC_SETTINGS: [(&str, &str); 2] = [
    ("MALLOC_ARENA_MAX", "1"),
    ("GLIBC_TUNABLES", "glibc.malloc.tcache_count=2000"),
];

fn malloc_settings() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let missing: Vec<(&str, &str)> = MALLOC_SETTINGS
            .into_iter()
            .filter(|(name, _)| std::env::var_os(name).is_none())
            .collect();
        if missing.is_empty() {
            return;
        }
        use std::os::unix::process::CommandExt;
        if let Ok(exe) = std::env::current_exe() {
            let error = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .envs(missing.iter().copied())
                .exec();
            eprintln!("could not restart with {missing:?} ({error}); glibc's malloc defaults");
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Cmd::Node { .. }) {
        malloc_settings();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Dev(args) => runtime.block_on(dev::run(args)),
        Cmd::Cluster {
            command:
                ClusterCmd::New {
                    nodes,
                    data,
                    http_port,
                    token,
                    snapshot_logs,
                    snapshot_commands,
                    logs_to_keep,
                    shards,
                },
        } => {
            let tuning = config::RaftTuning {
                snapshot_logs_since_last: snapshot_logs,
                snapshot_commands_since_last: snapshot_commands,
                logs_to_keep,
                ..Default::default()
            };
            let token = cluster_new::write_cluster(nodes, &data, http_port, token, tuning, shards)?;
            println!("wrote a {nodes}-node cluster to {}", data.display());
            println!("admin token: {token}");
            Ok(())
        }
        Cmd::Node { config } => {
            let config = config::Config::load(&config)?;
            telemetry::init_tracing(config.node_id);
            runtime.block_on(server::run(config))
        }
        Cmd::Bench(args) => runtime.block_on(bench::run(args)),
        Cmd::Admin(args) => runtime.block_on(admin::run(args)),
    }
}
