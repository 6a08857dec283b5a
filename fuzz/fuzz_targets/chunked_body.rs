//! The chunked request body decoder of the fast front end on arbitrary bytes and splits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ds_http::front::fast::checks::chunked_body(data));
