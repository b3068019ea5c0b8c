//! The example embedder, built as its own binary, runs a real plugin (lockctl,
//! built from source by lockfile-tests) whose locks are real OS locks: a
//! native holder excludes the plugin, and the plugin excludes a native taker.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lockfile_core::{LockFile, LockOptions, read_content};
use lockfile_tests::LOCKCTL_COMPONENT;

/// Generous: a passing run takes well under a second.
const DEADLINE: Duration = Duration::from_secs(60);

fn embedder(lock_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lockfile-example-embedder"));
    command
        .arg(lock_dir)
        .arg(LOCKCTL_COMPONENT)
        .args(args)
        .stdin(Stdio::null());
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn output(mut command: Command) -> Output {
    let out = command.output().unwrap();
    eprintln!("stderr: {}", text(&out.stderr));
    out
}

/// A plugin run that keeps its locks until it is killed.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_native_holder_excludes_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let held = LockOptions::new()
        .content_template("native {pid}")
        .lock(dir.path().join("job.lock"))
        .unwrap();
    let out = output(embedder(dir.path(), &["lock", "job.lock", "{plugin}", "0"]));
    assert_eq!(
        text(&out.stdout),
        format!(
            "error Couldn't lock 'job.lock': held by native {}\n",
            std::process::id()
        )
    );
    assert!(
        out.status.success(),
        "lockctl reports the error and exits 0"
    );

    held.release();
    let out = output(embedder(
        dir.path(),
        &["lock", "job.lock", "{plugin}", "0", "read", "job.lock"],
    ));
    assert_eq!(text(&out.stdout), "locked lockctl\ncontent lockctl\n");
    assert!(out.status.success());
}

#[test]
fn the_plugin_excludes_a_native_taker_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let mut plugin = Running(
        embedder(
            dir.path(),
            &["lock", "job.lock", "{plugin} {pid}", "0", "sleep", "600000"],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let content = format!("lockctl {}", plugin.0.id());
    let start = Instant::now();
    while read_content(&path).ok().flatten().as_deref() != Some(content.as_str()) {
        if let Some(status) = plugin.0.try_wait().unwrap() {
            panic!("the embedder ended ({status}) before it held job.lock");
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the plugin never held job.lock as {content:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let refused = LockFile::lock(&path).unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!("Couldn't lock '{}': held by {content}", path.display())
    );

    drop(plugin);
    LockFile::lock(&path).expect("the OS released the lock with the process");
}

#[test]
fn a_trapping_plugin_fails_the_embedder_naming_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(embedder(
        dir.path(),
        &["lock", "job.lock", "-", "0", "trap"],
    ));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "lockfile-example-embedder: plugin '{LOCKCTL_COMPONENT}': "
        )),
        "{stderr}"
    );
}

#[test]
fn a_missing_plugin_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lockfile-example-embedder"))
        .arg(dir.path())
        .arg(dir.path().join("missing.wasm"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!(
            "failed to read input file: {}",
            dir.path().join("missing.wasm").display()
        )),
        "{}",
        text(&out.stderr)
    );
}
