//! Raw bytes into the `/v1/ingest` parser and validator: it never panics, refuses a request as a
//! whole exactly when the body is not a JSON array of 1..=100 items, otherwise judges every index
//! exactly once, and what it accepts survives re-serialisation and re-validation unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    tally_core_fuzz::check_parse_batch(body);
});
