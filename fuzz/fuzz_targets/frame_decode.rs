//! The log frame decoder on arbitrary bytes: no panic, whole records only, exact round trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ds_engine::log::checks::frame_decode(data));
