//! The tariff: fee bands and per-kind amount limits, configured (replicated), never coded.
//! A cluster charges no fees and applies no per-kind limit until a tariff is set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::account::AccountKind;
use crate::limits::{AMOUNT_MAX, FEE_BANDS_MAX};
use crate::transfer::TransferKind;

/// A fee for amounts in `min..=max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeBand {
    pub min: u64,
    pub max: u64,
    pub fee: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    /// Bands per kind; the first band containing the amount gives the fee, none gives 0.
    /// (Each section of a tariff is optional in JSON: absent means empty.)
    #[serde(default)]
    pub fees: BTreeMap<TransferKind, Vec<FeeBand>>,
    /// Largest amount per kind; absent means `AMOUNT_MAX`.
    #[serde(default)]
    pub amount_max: BTreeMap<TransferKind, u64>,
    /// The most an account of this kind may send (amounts plus fees, pending holds included,
    /// reversals excluded) in one business day; absent means no daily limit. Not for system
    /// accounts: the float issues e-money without a cap.
    #[serde(default)]
    pub daily_out_max: BTreeMap<AccountKind, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    #[error("a fee band has min > max, or a fee above AMOUNT_MAX")]
    BadBand,
    #[error("too many fee bands for one kind")]
    TooManyBands,
    #[error("fee bands of one kind overlap")]
    Overlap,
    #[error("system accounts take no daily limit")]
    SystemLimit,
}

impl Tariff {
    pub fn validate(&self) -> Result<(), TariffError> {
        if self.daily_out_max.contains_key(&AccountKind::System) {
            return Err(TariffError::SystemLimit);
        }
        for bands in self.fees.values() {
            if bands.len() > FEE_BANDS_MAX {
                return Err(TariffError::TooManyBands);
            }
            for band in bands {
                if band.min > band.max || band.fee > AMOUNT_MAX {
                    return Err(TariffError::BadBand);
                }
            }
            let mut sorted: Vec<&FeeBand> = bands.iter().collect();
            sorted.sort_by_key(|band| band.min);
            for pair in sorted.windows(2) {
                if pair[1].min <= pair[0].max {
                    return Err(TariffError::Overlap);
                }
            }
        }
        Ok(())
    }

    pub fn fee(&self, kind: TransferKind, amount: u64) -> u64 {
        let Some(bands) = self.fees.get(&kind) else {
            return 0;
        };
        bands
            .iter()
            .find(|band| band.min <= amount && amount <= band.max)
            .map_or(0, |band| band.fee)
    }

    pub fn daily_out_max(&self, kind: AccountKind) -> Option<u64> {
        self.daily_out_max.get(&kind).copied()
    }

    pub fn amount_max(&self, kind: TransferKind) -> u64 {
        self.amount_max.get(&kind).copied().unwrap_or(AMOUNT_MAX)
    }
}
