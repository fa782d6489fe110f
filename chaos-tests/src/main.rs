//! `cellpay-chaos`: runs seeded chaos scenarios against real cellpay clusters and checks the
//! histories. `run --seed N --scenario NAME` replays one run exactly (same faults, same
//! workload choices); `--ci` runs the six CI scenarios on one shard and the `mix` scenario on
//! eight (sagas under faults); `--soak DURATION` keeps going.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chaos_tests::nemesis::Scenario;
use chaos_tests::runner::{self, RunConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cellpay-chaos",
    about = "Jepsen-style chaos runs against real cellpay clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// The CI suite: six 50-second scenarios on one shard, then 40 s of `mix` on eight shards.
    #[arg(long)]
    ci: bool,
    /// Raft groups of a --soak cluster (with more than one, most transfers are sagas).
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// Soak: one 5-node cluster under faults for this long (e.g. 30m of workload; the checks
    /// come on top); faults change every minute, about a quarter of the minutes quiet; the
    /// history is checked every --check-every.
    #[arg(long)]
    soak: Option<String>,
    /// How often a soak pauses to check its history.
    #[arg(long, default_value = "10m")]
    check_every: String,
    /// First seed of --ci or --soak (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Where failing runs leave their evidence.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// One scenario, replayable by its seed.
    Run {
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        scenario: String,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Raft groups (with more than one, most transfers are sagas).
        #[arg(long, default_value_t = 1)]
        shards: u32,
        #[arg(long, default_value_t = 12)]
        accounts: usize,
        #[arg(long, default_value_t = 8)]
        clients: u64,
        #[arg(long, default_value_t = 50)]
        seconds: u64,
        #[arg(long, default_value = "target/chaos")]
        out: PathBuf,
    },
}

/// Shards of the CI suite's sharded run, and its workload time (its final reads take longer
/// than one group's: every id is looked up on its home shard, every group compared).
const CI_SHARDS: u32 = 8;
const CI_SHARDED_SECONDS: u64 = 40;

fn config(seed: u64, scenario: Scenario, shards: u32, seconds: u64, out: PathBuf) -> RunConfig {
    RunConfig {
        seed,
        scenario,
        nodes: 3,
        shards,
        accounts: 12,
        clients: 8,
        duration: Duration::from_secs(seconds),
        out,
    }
}

async fn one(config: RunConfig) -> anyhow::Result<bool> {
    let started = Instant::now();
    let result = runner::run(&config).await?;
    print_result(
        &format!(
            "seed {} scenario {} shards {}",
            config.seed,
            config.scenario.name(),
            config.shards
        ),
        started,
        &result,
    );
    Ok(result.passed())
}

fn print_result(what: &str, started: Instant, result: &runner::RunResult) {
    for problem in &result.problems {
        println!("[nemesis] {problem} ({what})");
    }
    println!(
        "{} {what} ({}) in {:.0}s: {} faults\n{}",
        if result.passed() { "PASS" } else { "FAIL" },
        result.mode,
        started.elapsed().as_secs_f64(),
        result.faults.len(),
        result.report
    );
}

/// The soak's totals over every checked stretch.
fn print_soak_summary(seed: u64, soak: &runner::SoakResult) {
    let ops: usize = soak.stretches.iter().map(|r| r.report.stats.ops).sum();
    let attempts: usize = soak
        .stretches
        .iter()
        .map(|r| r.report.stats.transfer_attempts)
        .sum();
    let faults: Vec<&String> = soak
        .stretches
        .iter()
        .flat_map(|r| &r.faults)
        .filter(|f| *f != "quiet period")
        .collect();
    let quiet = soak
        .stretches
        .iter()
        .flat_map(|r| &r.faults)
        .filter(|f| *f == "quiet period")
        .count();
    let mut windows: Vec<u64> = soak
        .stretches
        .iter()
        .flat_map(|r| r.report.windows.iter().map(|w| w.duration_ms()))
        .collect();
    windows.sort_unstable();
    let at = |q: f64| {
        let i = ((windows.len() as f64 * q).ceil() as usize).saturating_sub(1);
        windows
            .get(i)
            .map_or("-".to_string(), |ms| format!("{ms} ms"))
    };
    println!(
        "soak seed {seed} ({}): {} checked stretches, {ops} ops, {attempts} transfer attempts, \
         {} faults, {quiet} quiet periods; unavailability {} windows, p50 {}, p99 {}, max {}",
        soak.mode,
        soak.stretches.len(),
        faults.len(),
        windows.len(),
        at(0.5),
        at(0.99),
        windows
            .last()
            .map_or("-".to_string(), |ms| format!("{ms} ms")),
    );
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number.parse()?;
    let seconds = match unit {
        "s" | "" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => anyhow::bail!("duration like 50s, 30m or 2h"),
    };
    Ok(Duration::from_secs(seconds))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let clock_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let first_seed = cli.seed.unwrap_or(clock_seed);
    let mut failed = 0;
    let mut runs = 0;
    if let Some(Cmd::Run {
        seed,
        scenario,
        nodes,
        shards,
        accounts,
        clients,
        seconds,
        out,
    }) = cli.command
    {
        let scenario = Scenario::parse(&scenario)
            .ok_or_else(|| anyhow::anyhow!("unknown scenario {scenario}"))?;
        let config = RunConfig {
            seed,
            scenario,
            nodes,
            shards,
            accounts,
            clients,
            duration: Duration::from_secs(seconds),
            out,
        };
        runs = 1;
        failed += usize::from(!one(config).await?);
    } else if cli.ci {
        for (i, scenario) in Scenario::ALL.into_iter().enumerate() {
            runs += 1;
            failed += usize::from(
                !one(config(
                    first_seed + i as u64,
                    scenario,
                    1,
                    50,
                    cli.out.clone(),
                ))
                .await?,
            );
        }
        // Cross-shard transfers (sagas, their deferred records, read repair) under every
        // kind of fault.
        let seed = first_seed + Scenario::ALL.len() as u64;
        runs += 1;
        failed += usize::from(
            !one(config(
                seed,
                Scenario::Mix,
                CI_SHARDS,
                CI_SHARDED_SECONDS,
                cli.out.clone(),
            ))
            .await?,
        );
    } else if let Some(soak) = cli.soak {
        // Soak shape: 5 nodes, 200 accounts with 5 hot ones, faults changing every minute.
        let config = runner::SoakConfig {
            seed: first_seed,
            nodes: 5,
            shards: cli.shards,
            accounts: 200,
            clients: 16,
            duration: parse_duration(&soak)?,
            check_every: parse_duration(&cli.check_every)?,
            period: Duration::from_secs(60),
            out: cli.out.clone(),
        };
        let started = Instant::now();
        let result = runner::soak(&config, |number, result| {
            print_result(
                &format!("soak seed {first_seed} stretch {number}"),
                started,
                result,
            );
        })
        .await?;
        runs = result.stretches.len();
        failed = result.stretches.iter().filter(|r| !r.passed()).count();
        print_soak_summary(first_seed, &result);
    } else {
        anyhow::bail!("say `run --seed N --scenario NAME`, `--ci` or `--soak 30m`");
    }
    println!("chaos: {} passed, {} failed", runs - failed, failed);
    anyhow::ensure!(
        failed == 0,
        "{failed} chaos run(s) failed: replay with `cellpay-chaos run --seed N --scenario NAME`"
    );
    Ok(())
}
