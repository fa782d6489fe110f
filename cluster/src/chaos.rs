//! The transport's fault switch for chaos runs (compiled only with the `chaos` feature): per
//! peer, drop every call to it or delay each call by some milliseconds. With namespaces (the
//! lab) the network itself is cut with nftables; this switch adds what nftables cannot (delay,
//! since `tc netem` is unavailable) and stands in for partitions when nodes share 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What happens to this node's calls to one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerFault {
    /// Calls to the peer fail as if the network dropped them (after their delay).
    pub drop: bool,
    /// Added before each call is sent.
    pub delay_ms: u64,
}

use crate::limits::DELAY_MS_MAX;

fn faults() -> &'static Mutex<BTreeMap<u64, PeerFault>> {
    static FAULTS: OnceLock<Mutex<BTreeMap<u64, PeerFault>>> = OnceLock::new();
    FAULTS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Sets (or, with the default fault, clears) the fault for calls to `peer`.
pub fn set(peer: u64, fault: PeerFault) {
    let mut faults = faults()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if fault == PeerFault::default() {
        faults.remove(&peer);
    } else {
        let bounded = PeerFault {
            drop: fault.drop,
            delay_ms: fault.delay_ms.min(DELAY_MS_MAX),
        };
        faults.insert(peer, bounded);
    }
}

/// Clears every fault.
pub fn heal() {
    faults()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
}

/// The current faults, for the admin view.
pub fn current() -> BTreeMap<u64, PeerFault> {
    faults()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Applies the fault for `peer` to one call: waits out the delay, then says whether to drop it.
pub async fn before_call(peer: u64) -> bool {
    let fault = faults()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&peer)
        .copied();
    let Some(fault) = fault else {
        return false;
    };
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    fault.drop
}
