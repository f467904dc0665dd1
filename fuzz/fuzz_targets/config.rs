//! The config loader: any bytes give a config or an error that names file, line,
//! column and key; never a panic. Names are not resolved (nothing leaves the machine).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ringway::config::{self, resolve::Resolver};

fuzz_target!(|data: &[u8]| {
    match config::from_bytes(Path::new("fuzz.toml"), data, Resolver::Offline) {
        // What `check` and the start log print.
        Ok(c) => drop(c.summary()),
        // What the operator reads: the message with its snippet and caret.
        Err(e) => drop(e.to_string()),
    }
});
