//! A plugin crate of a user's own, outside this repository, that depends on
//! lockfile-guest by path, exactly as the README tells plugin authors to.

use std::path::Path;
use std::process::Command;

#[test]
fn a_plugin_crate_outside_the_repository_builds_and_runs() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let krate = outside.path().join("my-plugin");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"my-plugin\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\nlockfile-guest = {{ path = {:?} }}\n",
            repo.join("guest/lockfile-guest").display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        krate.join("src/main.rs"),
        r#"use lockfile_guest::{LockFile, LockOptions};

fn main() -> Result<(), lockfile_guest::Error> {
    let lock = LockOptions::new().content_template("{plugin}").lock("my.lock")?;
    println!("holding {} as {}", lock.path(), lock.content().unwrap_or_default());
    assert!(LockFile::lock("my.lock").is_err(), "a second take fails");
    Ok(())
}
"#,
    )
    .unwrap();
    // A target directory of its own under target/, kept between runs so the
    // dependencies compile once.
    let target_dir = repo.join("target/outside-plugin");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(krate.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap();
    assert!(status.success());
    let wasm = target_dir.join("wasm32-wasip2/release/my-plugin.wasm");
    assert!(
        wasm.exists(),
        "the README says the plugin lands at {}",
        wasm.display()
    );

    let locks = tempfile::tempdir().unwrap();
    let out = lockfile_tests::run(wasm.to_str().unwrap(), locks.path(), None, &[], |b| {
        b.plugin_name("mine")
    });
    assert_eq!(out.status, Ok(0), "{out:?}");
    assert_eq!(out.lines(), ["holding my.lock as mine"]);
    assert_eq!(
        std::fs::read_to_string(locks.path().join("my.lock")).unwrap(),
        " mine\n"
    );
}
