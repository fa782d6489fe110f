//! The nemesis: faults chosen by the seed, applied to the cluster while the workload runs.
//! Process faults (kill -9, crash of all nodes, SIGSTOP) work in every mode; network faults
//! (isolation, partitions, one-way links, packet loss) need the namespace lab.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use crate::nodes::{Cluster, Mode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    CrashRestart,
    PauseLeader,
    Partitions,
    LossDelay,
    CrashAll,
    Mix,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::CrashRestart,
        Scenario::PauseLeader,
        Scenario::Partitions,
        Scenario::LossDelay,
        Scenario::CrashAll,
        Scenario::Mix,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::CrashRestart => "crash-restart",
            Scenario::PauseLeader => "pause-leader",
            Scenario::Partitions => "partitions",
            Scenario::LossDelay => "loss-delay",
            Scenario::CrashAll => "crash-all",
            Scenario::Mix => "mix",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillRandom,
    KillLeader,
    CrashAll,
    PauseLeader,
    PauseRandom,
    IsolateRandom,
    IsolateLeader,
    MinorityMajority,
    OneWay,
    Loss,
}

fn choose(scenario: Scenario, lab: bool, rng: &mut StdRng) -> Fault {
    let process = [
        Fault::KillRandom,
        Fault::KillLeader,
        Fault::CrashAll,
        Fault::PauseLeader,
        Fault::PauseRandom,
    ];
    let network = [
        Fault::IsolateRandom,
        Fault::IsolateLeader,
        Fault::MinorityMajority,
        Fault::OneWay,
    ];
    let pick = |rng: &mut StdRng, from: &[Fault]| from[rng.random_range(0..from.len())];
    match scenario {
        Scenario::CrashRestart => pick(rng, &[Fault::KillRandom, Fault::KillLeader]),
        Scenario::PauseLeader => pick(rng, &[Fault::PauseLeader, Fault::PauseRandom]),
        Scenario::CrashAll => Fault::CrashAll,
        // Without namespaces, network scenarios fall back to the nearest process fault.
        Scenario::Partitions if lab => pick(rng, &network),
        Scenario::Partitions => pick(rng, &[Fault::PauseRandom, Fault::KillRandom]),
        Scenario::LossDelay if lab => Fault::Loss,
        Scenario::LossDelay => Fault::PauseRandom,
        Scenario::Mix if lab => {
            let all: Vec<Fault> = process
                .iter()
                .chain(network.iter())
                .copied()
                .chain([Fault::Loss])
                .collect();
            pick(rng, &all)
        }
        Scenario::Mix => pick(rng, &process),
    }
}

/// What the nemesis did, for the report.
#[derive(Default, Debug)]
pub struct NemesisLog {
    pub faults: Vec<String>,
}

async fn leader(cluster: &Mutex<Cluster>) -> Option<u64> {
    let guard = cluster.lock().await;
    guard.wait_for_leader(Duration::from_secs(3)).await
}

/// Applies faults until `stop`, then heals whatever is still broken.
pub async fn run(
    seed: u64,
    scenario: Scenario,
    cluster: Arc<Mutex<Cluster>>,
    stop: Arc<AtomicBool>,
) -> NemesisLog {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let mut log = NemesisLog::default();
    let lab = matches!(cluster.lock().await.mode, Mode::Lab(_));
    let nodes = cluster.lock().await.nodes.len() as u64;
    while !stop.load(Ordering::Relaxed) {
        // About a quarter of the time is quiet.
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..4_000))).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let fault = choose(scenario, lab, &mut rng);
        let random = rng.random_range(1..=nodes);
        let hold = Duration::from_millis(rng.random_range(1_000..5_000));
        let target = match fault {
            Fault::KillLeader | Fault::PauseLeader | Fault::IsolateLeader => {
                leader(&cluster).await.unwrap_or(random)
            }
            _ => random,
        };
        let description = apply(&cluster, fault, target, &mut rng).await;
        log.faults.push(description.clone());
        eprintln!("nemesis: {description} for {:.1}s", hold.as_secs_f64());
        let pause_hold = Duration::from_millis(rng.random_range(2_000..8_000));
        let wait = if matches!(fault, Fault::PauseLeader | Fault::PauseRandom) {
            pause_hold
        } else {
            hold
        };
        tokio::time::sleep(wait).await;
        heal(&cluster).await;
    }
    heal(&cluster).await;
    log
}

async fn apply(cluster: &Mutex<Cluster>, fault: Fault, target: u64, rng: &mut StdRng) -> String {
    let mut guard = cluster.lock().await;
    let nodes = guard.nodes.len();
    let k = usize::try_from(target).expect("small");
    match (fault, &guard.mode) {
        (Fault::KillRandom | Fault::KillLeader, _) => {
            guard.kill(target);
            format!("kill -9 node {target}")
        }
        (Fault::CrashAll, _) => {
            for node in 1..=nodes as u64 {
                guard.kill(node);
            }
            "kill -9 every node".to_string()
        }
        (Fault::PauseLeader | Fault::PauseRandom, _) => {
            guard.pause(target);
            format!("SIGSTOP node {target}")
        }
        (Fault::IsolateRandom | Fault::IsolateLeader, Mode::Lab(lab)) => {
            let result = lab.isolate(k, false);
            format!("isolate node {target} ({result:?})")
        }
        (Fault::MinorityMajority, Mode::Lab(lab)) => {
            let minority = vec![k];
            let majority: Vec<usize> = (1..=nodes).filter(|n| *n != k).collect();
            let result = lab.partition(&[minority, majority]);
            format!("partition [{k}] | rest ({result:?})")
        }
        (Fault::OneWay, Mode::Lab(lab)) => {
            let result = lab.one_way(k);
            format!("one-way: node {target} receives nothing ({result:?})")
        }
        (Fault::Loss, Mode::Lab(lab)) => {
            let percent: u8 = rng.random_range(5..=30);
            let result = lab.loss(k, percent);
            format!("drop {percent}% of node {target}'s packets ({result:?})")
        }
        (_, Mode::Loopback) => "network fault skipped (loopback mode)".to_string(),
    }
}

/// Restores the network and every process.
pub async fn heal(cluster: &Mutex<Cluster>) {
    let mut guard = cluster.lock().await;
    if let Mode::Lab(lab) = &guard.mode {
        if let Err(e) = lab.heal() {
            eprintln!("nemesis: healing the network failed: {e}");
        }
    }
    if let Err(e) = guard.heal_processes() {
        eprintln!("nemesis: restarting nodes failed: {e}");
    }
}
