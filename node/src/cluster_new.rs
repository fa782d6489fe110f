//! `cellpay cluster new`: writes every node's configuration and the cluster's TLS material.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::Rng;

use crate::config::{Config, Peer, RaftTuning, TlsConfig};

/// Raft ports sit this far above HTTP ports.
pub const RAFT_PORT_OFFSET: u16 = 1000;

pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

pub fn config_path(dir: &Path, node: u64) -> PathBuf {
    dir.join(format!("node-{node}")).join("config.toml")
}

/// Writes `DIR/node-k/config.toml`, certificates and keys, `DIR/ca.pem`, `DIR/ca.key` and
/// `DIR/admin.token`. Returns the token.
pub fn write_cluster(
    nodes: u64,
    dir: &Path,
    http_port: u16,
    token: Option<String>,
    tuning: RaftTuning,
    shards: u32,
) -> anyhow::Result<String> {
    anyhow::ensure!((1..=9).contains(&nodes), "--nodes must be between 1 and 9");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let token = token.unwrap_or_else(random_token);
    anyhow::ensure!(token.len() >= 16, "--token must be at least 16 characters");
    let (ca_cert, ca_key) = cluster::tls::generate_ca()?;
    write_private(&dir.join("ca.pem"), &ca_cert)?;
    write_private(&dir.join("ca.key"), &ca_key)?;
    let peers: Vec<Peer> = (1..=nodes)
        .map(|id| {
            let index = u16::try_from(id - 1).expect("at most 9 nodes");
            let http = http_port
                .checked_add(index)
                .context("http port out of range")?;
            let raft = http
                .checked_add(RAFT_PORT_OFFSET)
                .context("raft port out of range")?;
            Ok(Peer {
                id,
                http_addr: ([127, 0, 0, 1], http).into(),
                raft_addr: ([127, 0, 0, 1], raft).into(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    for peer in &peers {
        let node_dir = dir.join(format!("node-{}", peer.id));
        std::fs::create_dir_all(&node_dir)?;
        let (cert, key) = cluster::tls::generate_node_cert(peer.id, &ca_key)?;
        write_private(&node_dir.join("node.pem"), &cert)?;
        write_private(&node_dir.join("node.key"), &key)?;
        let config = Config {
            node_id: peer.id,
            data_dir: node_dir.clone(),
            http_addr: peer.http_addr,
            raft_addr: peer.raft_addr,
            token: token.clone(),
            currency: "KES".into(),
            shards,
            raft: tuning.clone(),
            actors: crate::config::ActorTuning::default(),
            sagas: crate::config::SagaTuning::default(),
            tls: TlsConfig {
                ca_cert: dir.join("ca.pem"),
                cert: node_dir.join("node.pem"),
                key: node_dir.join("node.key"),
            },
            peers: peers.clone(),
        };
        config.validate().map_err(anyhow::Error::msg)?;
        std::fs::write(config_path(&dir, peer.id), toml::to_string_pretty(&config)?)?;
    }
    write_private(&dir.join("admin.token"), &token)?;
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}
