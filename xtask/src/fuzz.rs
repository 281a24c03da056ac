//! `cargo xtask fuzz --seconds N`: the HTTP/1 framing guard against the
//! strict reference parser in fuzz/ (see fuzz/src/lib.rs).
//!
//! With a nightly toolchain: `cargo +nightly fuzz run guard` (cargo-fuzz is
//! installed from crates.io if missing) for N seconds. Without one: the
//! same checks on random structured inputs in a plain stable binary
//! (`fuzz/src/bin/stable.rs`) for N seconds.

use std::path::PathBuf;
use std::process::Command;

const SEEDS: [&[u8]; 4] = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.0\n\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 1\r\n\r\n",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with("nightly"))
        })
}

fn has_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn run(seconds: u64) -> anyhow::Result<()> {
    let fuzz = root().join("fuzz");
    if !has_nightly() {
        println!(
            "fuzz: no nightly toolchain (`rustup toolchain list`), so no libFuzzer; \
             `rustup toolchain install nightly` enables it. Running the guard target's \
             checks on random inputs on stable for {seconds} s instead."
        );
        let status = Command::new(env!("CARGO"))
            .current_dir(&fuzz)
            .args(["run", "--release", "--quiet", "--bin", "stable", "--"])
            .args(["--seconds", &seconds.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "the guard's checks failed (see above)");
        return Ok(());
    }
    if !has_cargo_fuzz() {
        println!("fuzz: installing cargo-fuzz (cargo install cargo-fuzz)");
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()?;
        anyhow::ensure!(status.success(), "cargo install cargo-fuzz failed");
    }
    // The corpus persists under fuzz/corpus/guard (ignored by git); a
    // failing input lands in fuzz/artifacts/guard.
    let corpus = fuzz.join("corpus/guard");
    std::fs::create_dir_all(&corpus)?;
    if std::fs::read_dir(&corpus)?.next().is_none() {
        // Seeds: a few well-formed pipelines (first byte 0: no split
        // points), so the fuzzer starts from real framing.
        for (i, seed) in SEEDS.iter().enumerate() {
            std::fs::write(
                corpus.join(format!("seed-{i}")),
                [&[0u8][..], seed].concat(),
            )?;
        }
    }
    let dict = fuzz.join("guard.dict");
    // `cargo +nightly` goes through rustup's proxy, so not env!("CARGO"),
    // and the stable toolchain's variables must not leak into it.
    let status = Command::new("cargo")
        .current_dir(&fuzz)
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .args([
            "+nightly",
            "fuzz",
            "run",
            "--features",
            "libfuzzer",
            "guard",
        ])
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-dict={}", dict.display()))
        .status()?;
    anyhow::ensure!(
        status.success(),
        "the guard fuzz target failed: the discrepancy and its input are above \
         (the input is saved under fuzz/artifacts/guard/)"
    );
    Ok(())
}
