//! Every bound the ledger enforces, in one place.

/// Largest single transfer amount, in minor units (10^15: a quadrillion cents).
pub const AMOUNT_MAX: u64 = 1_000_000_000_000_000;
/// Largest absolute balance an account may reach. Keeps every sum far from `i64` overflow.
pub const BALANCE_MAX: i64 = 100_000_000_000_000_000;
/// Transfers in one batch command (TigerBeetle's figure, 8190 per message).
pub const BATCH_MAX: usize = 8190;
/// Statement entries kept per account in the replicated state (newest kept).
pub const STATEMENT_KEEP_MAX: usize = 1000;
/// Largest `limit` a statement query may ask for.
pub const STATEMENT_LIMIT_MAX: usize = STATEMENT_KEEP_MAX;
/// Longest memo, name or reversal reason, in bytes.
pub const TEXT_BYTES_MAX: usize = 256;
/// Longest transfer id.
pub const TRANSFER_ID_BYTES_MAX: usize = 64;
/// Pending-transfer timeout bounds and default, in seconds.
pub const TIMEOUT_S_MIN: u64 = 1;
pub const TIMEOUT_S_MAX: u64 = 7 * 24 * 3600;
pub const TIMEOUT_S_DEFAULT: u64 = 300;
/// Pending transfers voided by one expiry command (the rest wait for the next one).
pub const EXPIRE_BATCH_MAX: usize = 4096;
/// Fee bands per transfer kind.
pub const FEE_BANDS_MAX: usize = 64;

const _: () = assert!(AMOUNT_MAX < BALANCE_MAX as u64);
// Two maximal balances and a maximal amount still fit in i64: no sum in apply can overflow.
const _: () = assert!(BALANCE_MAX < i64::MAX / 4);
const _: () = assert!(STATEMENT_LIMIT_MAX <= STATEMENT_KEEP_MAX);
const _: () = assert!(TIMEOUT_S_MIN <= TIMEOUT_S_DEFAULT && TIMEOUT_S_DEFAULT <= TIMEOUT_S_MAX);

/// Closed business days kept per shard (a year and a day of daily closes).
pub const CLOSES_KEPT: usize = 366;

/// How long a saga may run before its coordinator redresses what is not done, in ms (a
/// decided pending transfer gets as long again from its decision).
pub const SAGA_DEADLINE_MS: u64 = 10_000;

/// Shortest business day a schedule may set (tests and drills use short ones), in ms.
pub const PERIOD_MS_MIN: u64 = 1_000;
/// Longest business day: a week, in ms.
pub const PERIOD_MS_MAX: u64 = 7 * 86_400_000;
