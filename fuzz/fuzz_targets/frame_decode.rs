//! Node-to-node frames from an untrusted peer: `read_frame` must never panic, never allocate
//! past FRAME_BYTES_MAX, and whatever it accepts must survive encode → decode unchanged.
//!
//! Each input is tried twice: as raw wire bytes (the fuzzer controls the length prefix), and
//! as a frame body behind a truthful prefix (so every input reaches the postcard decoder).
//! Both directions of the protocol are decoded: `RequestFrame` (what a server reads) and
//! `ResponseFrame` (what a client reads).

#![no_main]

use std::sync::OnceLock;

use cluster::frame::{encode, read_frame, FrameError};
use cluster::limits::FRAME_BYTES_MAX;
use cluster::rpc::{RequestFrame, ResponseFrame};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
    })
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> (Result<Option<T>, FrameError>, usize) {
    let mut reader = bytes;
    let result = runtime().block_on(read_frame::<_, T>(&mut reader));
    (result, reader.len())
}

/// Raw wire bytes: the length gate must hold before anything is read or allocated.
fn check_raw<T: DeserializeOwned>(data: &[u8]) {
    let (result, unread) = decode::<T>(data);
    if data.len() >= 4 {
        let length = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if length > FRAME_BYTES_MAX {
            assert!(matches!(result, Err(FrameError::TooLarge(n)) if n == length));
            assert_eq!(unread, data.len() - 4, "an oversized body must not be read");
        }
    } else {
        assert!(
            !matches!(result, Ok(Some(_))),
            "a frame from under four bytes"
        );
    }
}

/// A truthful prefix: whatever decodes must re-encode and decode to the same value.
fn check_framed<T: DeserializeOwned + Serialize + std::fmt::Debug>(data: &[u8]) {
    let length = u32::try_from(data.len()).expect("libFuzzer inputs are far below 4 GiB");
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(data);
    let (result, unread) = decode::<T>(&framed);
    assert_eq!(unread, 0, "a whole frame is consumed");
    let Ok(Some(value)) = result else {
        return;
    };
    let encoded = encode(&value).expect("a decoded frame re-encodes");
    let (again, unread) = decode::<T>(&encoded);
    assert_eq!(unread, 0);
    let again = again.expect("a re-encoded frame decodes").expect("a frame");
    assert_eq!(format!("{again:?}"), format!("{value:?}"));
}

fuzz_target!(|data: &[u8]| {
    check_raw::<RequestFrame>(data);
    check_raw::<ResponseFrame>(data);
    check_framed::<RequestFrame>(data);
    check_framed::<ResponseFrame>(data);
});
