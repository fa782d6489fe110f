//! Identifiers: account ids (E.164 phone numbers or reserved system names), transfer ids,
//! currencies and shard ids.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::TRANSFER_ID_BYTES_MAX;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("account id must be an E.164 number like +254700000001 or a system account name")]
    AccountId,
    #[error("transfer id must be 1-64 characters of [A-Za-z0-9._:-]")]
    TransferId,
    #[error("currency must be an ISO 4217 code of three capital letters")]
    Currency,
}

/// The e-money float: the only account whose balance may go below zero.
pub const FLOAT: &str = "float";
/// Collected fees.
pub const FEES: &str = "fees";
const SYSTEM_NAMES: [&str; 2] = [FLOAT, FEES];

/// Bytes of the longest account id: `+` and 15 digits (system names are shorter).
const ACCOUNT_ID_BYTES: usize = 16;

/// An account id: an E.164 number (`+` then 8 to 15 digits, the first not 0) or a system name.
///
/// Held inline — its ASCII bytes, zero-padded to 16 — so an id is 16 bytes with no heap
/// allocation: the ledger keeps millions of them (map keys, statement lines), and
/// comparing two is one 16-byte compare instead of a pointer chase. The derived order of the
/// padded bytes is the order of the strings (a shorter id sorts before its extensions); the
/// wire and snapshot form is the string, as before.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId([u8; ACCOUNT_ID_BYTES]);

impl Serialize for AccountId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Read from a string without allocating one (postcard and serde_json lend their input): every
/// command decoded on every replica carries account ids, and a snapshot millions of them.
impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(Parsed(AccountId::parse, "an account id"))
    }
}

/// A serde visitor that parses a borrowed string with `.0` (no `String` allocated).
struct Parsed<T>(fn(&str) -> Result<T, IdError>, &'static str);

impl<T> serde::de::Visitor<'_> for Parsed<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        (self.0)(text).map_err(E::custom)
    }
}

impl AccountId {
    pub fn parse(text: &str) -> Result<AccountId, IdError> {
        if SYSTEM_NAMES.contains(&text) || is_e164(text) {
            return Ok(AccountId::inline(text));
        }
        Err(IdError::AccountId)
    }

    /// `text` is a valid id: ASCII, not empty, at most 16 bytes, no NUL.
    fn inline(text: &str) -> AccountId {
        let mut bytes = [0u8; ACCOUNT_ID_BYTES];
        bytes
            .get_mut(..text.len())
            .expect("a valid account id fits in 16 bytes")
            .copy_from_slice(text.as_bytes());
        AccountId(bytes)
    }

    pub fn float() -> AccountId {
        AccountId::inline(FLOAT)
    }

    pub fn fees() -> AccountId {
        AccountId::inline(FEES)
    }

    /// A system name: the one kind of id that does not start with `+` (`parse` admits no other).
    pub fn is_system(&self) -> bool {
        self.0.first() != Some(&b'+')
    }

    /// Compares the bytes in place (no string is made: this is asked on every money movement).
    pub fn is_float(&self) -> bool {
        self.0.starts_with(FLOAT.as_bytes()) && self.0.get(FLOAT.len()) == Some(&0)
    }

    pub fn as_str(&self) -> &str {
        let len = self
            .0
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(ACCOUNT_ID_BYTES);
        std::str::from_utf8(self.0.get(..len).unwrap_or_default())
            .expect("an account id holds ASCII only")
    }
}

fn is_e164(text: &str) -> bool {
    let Some(digits) = text.strip_prefix('+') else {
        return false;
    };
    let length_ok = (8..=15).contains(&digits.len());
    let all_digits = digits.bytes().all(|b| b.is_ascii_digit());
    length_ok && all_digits && !digits.starts_with('0')
}

impl From<AccountId> for String {
    fn from(id: AccountId) -> String {
        id.as_str().to_string()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AccountId").field(&self.as_str()).finish()
    }
}

/// A client-chosen transfer key: 1-64 characters of `[A-Za-z0-9._:-]`.
///
/// Encoded as its string, without a copy, and decoded from a borrowed string (one allocation,
/// the id's own; through `String` it was two). Not shared (`Arc<str>`): measured, sharing made
/// batches 16% slower, glibc's allocator spending twice the time finding blocks among the
/// long-lived shared ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(String);

impl TransferId {
    pub fn parse(text: &str) -> Result<TransferId, IdError> {
        let length_ok = !text.is_empty() && text.len() <= TRANSFER_ID_BYTES_MAX;
        let chars_ok = text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if length_ok && chars_ok {
            return Ok(TransferId(text.to_string()));
        }
        Err(IdError::TransferId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for TransferId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TransferId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(Parsed(TransferId::parse, "a transfer id"))
    }
}

impl From<TransferId> for String {
    fn from(id: TransferId) -> String {
        id.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ISO 4217 alphabetic code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct Currency([u8; 3]);

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(Parsed(Currency::parse, "an ISO 4217 currency code"))
    }
}

impl Currency {
    pub fn parse(text: &str) -> Result<Currency, IdError> {
        let bytes = text.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(|b| b.is_ascii_uppercase()) {
            return Ok(Currency([bytes[0], bytes[1], bytes[2]]));
        }
        Err(IdError::Currency)
    }

    pub fn as_str(&self) -> &str {
        // The constructor admits only ASCII capitals.
        std::str::from_utf8(&self.0).expect("currency bytes are ASCII")
    }
}

impl TryFrom<String> for Currency {
    type Error = IdError;
    fn try_from(text: String) -> Result<Self, IdError> {
        Currency::parse(&text)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.as_str().to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A shard: one Raft group owning a stable subset of accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The shard an account belongs to: FNV-1a over the id's bytes, modulo the shard count.
/// Stable across versions and platforms; changing it re-homes every account. System accounts
/// (`float`, `fees`) have a slice on every shard: a transfer touching one is served by the
/// shard of its other account (see [`crate::saga`]).
pub fn shard_of(account: &AccountId, shard_count: u32) -> ShardId {
    shard_of_bytes(account.as_str().as_bytes(), shard_count)
}

/// The home shard of a transfer id: where its one record (idempotency key, answer) lives.
pub fn home_of(id: &TransferId, shard_count: u32) -> ShardId {
    shard_of_bytes(id.as_str().as_bytes(), shard_count)
}

fn shard_of_bytes(bytes: &[u8], shard_count: u32) -> ShardId {
    assert!(shard_count > 0, "a cluster has at least one shard");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let index = hash
        .checked_rem(u64::from(shard_count))
        .expect("shard_count is not zero");
    ShardId(u32::try_from(index).expect("remainder is below a u32 shard count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_accepts_and_refuses() {
        assert!(AccountId::parse("+254700000001").is_ok());
        assert!(AccountId::parse("+12025550123").is_ok());
        assert!(AccountId::parse("float").is_ok());
        for bad in [
            "254700000001",
            "+0254700000",
            "+25470",
            "+2547000000011111",
            "+25470a000001",
            "",
            "+",
            "Float",
        ] {
            assert_eq!(AccountId::parse(bad), Err(IdError::AccountId), "{bad}");
        }
    }

    /// Goal: the inline form changes nothing visible. Method: for arbitrary valid ids (E.164
    /// of every length, and the system names), the text round-trips (also through postcard
    /// and JSON), ids order as their strings do, and an id is 16 bytes.
    #[test]
    fn inline_account_ids_behave_as_their_strings() {
        use proptest::prelude::*;
        assert_eq!(std::mem::size_of::<AccountId>(), 16);
        let id = prop_oneof![
            "\\+[1-9][0-9]{7,14}",
            Just(FLOAT.to_string()),
            Just(FEES.to_string()),
        ];
        proptest!(|(a in id.clone(), b in id)| {
            let (x, y) = (AccountId::parse(&a).expect("valid"), AccountId::parse(&b).expect("valid"));
            prop_assert_eq!(x.as_str(), a.as_str());
            prop_assert_eq!(x.to_string(), a.clone());
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            let bytes = postcard::to_allocvec(&x).expect("encode");
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&a).expect("encode"));
            prop_assert_eq!(postcard::from_bytes::<AccountId>(&bytes).expect("decode"), x.clone());
            let json = serde_json::to_string(&x).expect("json");
            prop_assert_eq!(serde_json::from_str::<AccountId>(&json).expect("json back"), x);
        });
    }

    #[test]
    fn transfer_ids() {
        assert!(TransferId::parse("abc-1.2_3:4").is_ok());
        assert!(TransferId::parse(&"a".repeat(64)).is_ok());
        assert!(TransferId::parse(&"a".repeat(65)).is_err());
        assert!(TransferId::parse("").is_err());
        assert!(TransferId::parse("a b").is_err());
        assert!(TransferId::parse("a/b").is_err());
    }

    /// Goal: a transfer id's own encoding changes nothing visible. Method: for arbitrary valid
    /// ids, the text, the order and the postcard and JSON forms are the string's; an id with a
    /// bad character, empty or past 64 bytes is refused when decoded.
    #[test]
    fn transfer_ids_encode_as_their_strings() {
        use proptest::prelude::*;
        proptest!(|(a in "[A-Za-z0-9._:-]{1,64}", b in "[A-Za-z0-9._:-]{1,64}")| {
            let (x, y) = (TransferId::parse(&a).expect("valid"), TransferId::parse(&b).expect("valid"));
            prop_assert_eq!(x.as_str(), a.as_str());
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            let bytes = postcard::to_allocvec(&x).expect("encode");
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&a).expect("encode"));
            prop_assert_eq!(postcard::from_bytes::<TransferId>(&bytes).expect("decode"), x.clone());
            let json = serde_json::to_string(&x).expect("json");
            prop_assert_eq!(&json, &serde_json::to_string(&a).expect("json"));
            prop_assert_eq!(serde_json::from_str::<TransferId>(&json).expect("json back"), x.clone());
        });
        for bad in ["a b", "", &"a".repeat(65)] {
            let bytes = postcard::to_allocvec(&bad).expect("encode");
            assert!(
                postcard::from_bytes::<TransferId>(&bytes).is_err(),
                "{bad:?}"
            );
            let json = serde_json::to_string(&bad).expect("json");
            assert!(
                serde_json::from_str::<TransferId>(&json).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shard_hash_is_stable() {
        // Golden values: changing the hash would re-home every account on upgrade.
        let id = AccountId::parse("+254700000001").expect("valid");
        assert_eq!(shard_of(&id, 1), ShardId(0));
        let spread: std::collections::BTreeSet<u32> = (0..64)
            .map(|i| {
                shard_of(
                    &AccountId::parse(&format!("+2547000{i:05}")).expect("valid"),
                    8,
                )
                .0
            })
            .collect();
        assert_eq!(spread.len(), 8, "64 sequential numbers cover all 8 shards");
    }
}
