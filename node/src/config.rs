//! The node's TOML configuration: parsed strictly (unknown keys are errors) and validated.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id, 1..=N.
    pub node_id: u64,
    /// Where this node keeps its Raft log, state machine and pid file.
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    /// The admin bearer token for `/v1/` routes.
    pub token: String,
    /// ISO 4217 code of the cluster's default currency (and of the system accounts).
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Number of shards accounts hash into.
    #[serde(default = "default_shards")]
    pub shards: u32,
    #[serde(default)]
    pub raft: RaftTuning,
    #[serde(default)]
    pub actors: ActorTuning,
    #[serde(default)]
    pub sagas: SagaTuning,
    pub tls: TlsConfig,
    /// Every member of the cluster, this node included.
    pub peers: Vec<Peer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Also build one after this many applied commands since the last (an entry may carry
    /// thousands; a restart replays every command behind the snapshot).
    #[serde(default = "default_snapshot_commands")]
    pub snapshot_commands_since_last: u64,
    /// Log entries kept behind the last snapshot before purging.
    pub logs_to_keep: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 200,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_logs_since_last: 20_000,
            snapshot_commands_since_last: default_snapshot_commands(),
            logs_to_keep: 1000,
        }
    }
}

fn default_snapshot_commands() -> u64 {
    crate::limits::SNAPSHOT_COMMANDS_SINCE_LAST
}

/// Bounds of the account actors (see `actors::limits` for the defaults and what they mean).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorTuning {
    /// Transfers one account actor accepts and has not yet proposed; past it, 429.
    pub account_mailbox_max: usize,
    /// Transfers one account actor has in flight at once.
    pub account_inflight_max: usize,
    /// Account actors resident on the node.
    pub resident_accounts_max: usize,
}

impl Default for ActorTuning {
    fn default() -> Self {
        ActorTuning {
            account_mailbox_max: actors::limits::ACCOUNT_MAILBOX_MAX,
            account_inflight_max: actors::limits::ACCOUNT_INFLIGHT_MAX,
            resident_accounts_max: actors::limits::RESIDENT_ACCOUNTS_MAX,
        }
    }
}

/// How cross-shard transfers are coordinated.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SagaTuning {
    /// How long the node waits, once a cross-shard answer is queued to be recorded on its
    /// home shard (after the client has it), for more to record in the same Raft entries. 0
    /// (the default) takes whatever is queued at once: the queue fills while a round is in
    /// flight. At most `SAGA_RECORD_LINGER_MS_MAX`.
    #[serde(default)]
    pub record_linger_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: u64,
    pub raft_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

fn default_currency() -> String {
    "KES".to_string()
}

fn default_shards() -> u32 {
    8
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: invalid configuration: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source: Box::new(source),
        })?;
        config.validate().map_err(|reason| ConfigError::Invalid {
            path: path.into(),
            reason,
        })?;
        Ok(config)
    }

    /// Every rule a configuration must satisfy, with the first broken one as the error.
    pub fn validate(&self) -> Result<(), String> {
        if self.token.len() < 16 {
            return Err("token must be at least 16 characters".into());
        }
        ledger::Currency::parse(&self.currency).map_err(|e| format!("currency: {e}"))?;
        if self.shards == 0 || self.shards > 1024 {
            return Err("shards must be between 1 and 1024".into());
        }
        let ids: BTreeSet<u64> = self.peers.iter().map(|p| p.id).collect();
        if ids.len() != self.peers.len() {
            return Err("peer ids must be unique".into());
        }
        if !ids.contains(&self.node_id) {
            return Err(format!("node_id {} is not among the peers", self.node_id));
        }
        if ids.contains(&0) {
            return Err("node ids start at 1".into());
        }
        let me = self.me();
        if me.raft_addr != self.raft_addr || me.http_addr != self.http_addr {
            return Err("this node's addresses differ from its entry in peers".into());
        }
        let raft = &self.raft;
        if raft.heartbeat_ms == 0 || raft.election_timeout_min_ms <= raft.heartbeat_ms {
            return Err("raft: election_timeout_min_ms must exceed heartbeat_ms > 0".into());
        }
        if raft.election_timeout_max_ms <= raft.election_timeout_min_ms {
            return Err("raft: election_timeout_max_ms must exceed election_timeout_min_ms".into());
        }
        if raft.snapshot_logs_since_last == 0 || raft.snapshot_commands_since_last == 0 {
            return Err(
                "raft: snapshot_logs_since_last and snapshot_commands_since_last must be positive"
                    .into(),
            );
        }
        let actors = &self.actors;
        if actors.account_inflight_max == 0
            || actors.account_inflight_max > actors.account_mailbox_max
            || actors.account_mailbox_max > 1 << 20
            || actors.resident_accounts_max == 0
        {
            return Err(
                "actors: need 0 < account_inflight_max <= account_mailbox_max <= 1048576 and \
                 resident_accounts_max > 0"
                    .into(),
            );
        }
        let linger_max = crate::limits::SAGA_RECORD_LINGER_MS_MAX;
        if self.sagas.record_linger_ms > linger_max {
            return Err(format!(
                "sagas: record_linger_ms must be at most {linger_max}"
            ));
        }
        Ok(())
    }

    pub fn me(&self) -> &Peer {
        self.peers
            .iter()
            .find(|p| p.id == self.node_id)
            .expect("validated: node_id is among the peers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        r#"
node_id = 1
data_dir = "/tmp/x"
http_addr = "127.0.0.1:8080"
raft_addr = "127.0.0.1:9080"
token = "0123456789abcdef"
[tls]
ca_cert = "ca.pem"
cert = "node.pem"
key = "node.key"
[[peers]]
id = 1
raft_addr = "127.0.0.1:9080"
http_addr = "127.0.0.1:8080"
"#
        .to_string()
    }

    #[test]
    fn parses_and_validates() {
        let config: Config = toml::from_str(&sample()).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.currency, "KES");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = sample().replace("node_id = 1", "node_id = 1\nnode_idd = 2");
        let error = toml::from_str::<Config>(&text).expect_err("unknown key");
        assert!(error.to_string().contains("node_idd"), "{error}");
    }

    #[test]
    fn invalid_values_have_clear_errors() {
        let mut config: Config = toml::from_str(&sample()).expect("parses");
        config.node_id = 7;
        assert!(config
            .validate()
            .expect_err("not a peer")
            .contains("not among the peers"));
        let mut config: Config = toml::from_str(&sample()).expect("parses");
        config.currency = "kes".into();
        assert!(config
            .validate()
            .expect_err("bad currency")
            .contains("currency"));
        let mut config: Config = toml::from_str(&sample()).expect("parses");
        config.token = "short".into();
        assert!(config.validate().is_err());
        let text = format!("{}\n[sagas]\nrecord_linger_ms = 2001\n", sample());
        let config: Config = toml::from_str(&text).expect("parses");
        assert!(config
            .validate()
            .expect_err("linger past the bound")
            .contains("record_linger_ms"));
        let text = format!("{}\n[sagas]\nrecord_linger_ms = 2000\n", sample());
        let config: Config = toml::from_str(&text).expect("parses");
        assert_eq!(config.sagas.record_linger_ms, 2000);
        config.validate().expect("the bound itself is allowed");
    }
}
