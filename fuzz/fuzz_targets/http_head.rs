//! The HTTP/1.1 request head parser of the fast front end on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ds_http::front::fast::checks::request_head(data));
