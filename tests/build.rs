//! Builds the guest programs and example plugins for wasm32-wasip2 and writes
//! `pub const <NAME>_COMPONENT: &str` constants with their paths, as
//! wasmtime's test-programs do.

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("guest-target");
    // What the guests are built from; not guest/target or node_modules, whose
    // changes would rebuild everything for nothing.
    for watched in [
        "wit",
        "guest/Cargo.toml",
        "guest/Cargo.lock",
        "guest/lockfile-guest/src",
        "guest/lockfile-guest/Cargo.toml",
        "guest/examples",
        "tests/programs",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--workspace",
            "--locked",
            "--manifest-path",
        ])
        .arg(root.join("guest/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags meant for the host build must not reach the guests.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("run cargo for the guests");
    assert!(
        status.success(),
        "building the guests failed; is the target installed? `rustup target add wasm32-wasip2`"
    );

    let release = target_dir.join("wasm32-wasip2/release");
    let mut constants = String::new();
    for name in [
        "lockctl",
        "lockctl_v0_1",
        "zc_behaviour",
        "needs_missing",
        "singleton-job",
        "wait-turn",
    ] {
        let path = release.join(format!("{name}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        let constant = name.replace('-', "_").to_uppercase();
        writeln!(
            constants,
            "/// `{name}`, built from source for wasm32-wasip2."
        )
        .unwrap();
        writeln!(
            constants,
            "pub const {constant}_COMPONENT: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
    }
    std::fs::write(out_dir.join("components.rs"), constants).unwrap();
}
