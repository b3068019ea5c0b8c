//! A plugin crate of a user's own, outside this repository, that depends on
//! lockfile-guest by path, exactly as the README tells plugin authors to.

use std::path::Path;

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
    let wasm = lockfile_tests::build_my_plugin(&krate);

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
