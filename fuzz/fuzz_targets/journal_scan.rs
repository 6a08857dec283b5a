//! The journal scan and replay on arbitrary bytes: no panic, entries re-encode exactly, no
//! log is ever created.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ds_engine::log::checks::journal_scan(data));
