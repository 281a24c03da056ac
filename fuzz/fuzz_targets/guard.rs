// No `forbid(unsafe_code)` here alone: libFuzzer's entry point, which
// `fuzz_target!` generates, is an `unsafe extern "C"` function. The checks
// it calls (`src/lib.rs`) forbid unsafe code.
//! `cargo +nightly fuzz run guard`: arbitrary bytes, split at arbitrary
//! points (see `tollgate_fuzz::split_input`), through the HTTP/1 framing
//! guard and against the strict reference parser (`tollgate_fuzz::check`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Err(why) = tollgate_fuzz::check(input, tollgate_fuzz::lenient_trailers_from_env()) {
        panic!("{why}");
    }
});
