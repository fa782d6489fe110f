//! Identifiers arrive from HTTP clients, USSD sessions and files: parsing must never panic,
//! an accepted id must be exactly its input, and it must round-trip through serde_json (the
//! API's encoding) — while JSON input must be validated exactly like `parse`.

#![no_main]

use ledger::{AccountId, Currency, TransferId};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An accepted id prints as its input and survives serde_json both ways.
fn check_accepted<T>(text: &str, id: &T, as_str: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + std::fmt::Display,
{
    assert_eq!(as_str, text);
    assert_eq!(id.to_string(), text);
    let json = serde_json::to_string(id).expect("an id serialises");
    assert_eq!(json, serde_json::to_string(text).expect("a str serialises"));
    let back: T = serde_json::from_str(&json).expect("an accepted id deserialises");
    assert_eq!(&back, id);
}

/// JSON input goes through the same validation as `parse`.
fn check_json<T: DeserializeOwned + PartialEq + std::fmt::Debug>(
    data: &[u8],
    parse: impl Fn(&str) -> Option<T>,
) {
    let Ok(id) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let text: String = serde_json::from_slice(data).expect("an id deserialised from a string");
    assert_eq!(parse(&text), Some(id), "serde accepted what parse refuses");
}

fuzz_target!(|data: &[u8]| {
    check_json(data, |t| AccountId::parse(t).ok());
    check_json(data, |t| TransferId::parse(t).ok());
    check_json(data, |t| Currency::parse(t).ok());

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = AccountId::parse(text) {
        check_accepted(text, &id, id.as_str());
    }
    if let Ok(id) = TransferId::parse(text) {
        check_accepted(text, &id, id.as_str());
    }
    if let Ok(currency) = Currency::parse(text) {
        check_accepted(text, &currency, currency.as_str());
    }
});
