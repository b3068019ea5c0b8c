//! The real zc.lockfile from PyPI, for interop tests.
//!
//! Included with `#[path]` by the test crates that need it. The first test to
//! ask creates a virtualenv under the target directory and installs
//! zc.lockfile into it; concurrent test processes wait for it on a lock file
//! of our own. `LOCKFILE_TEST_PYTHON` names a Python that already has it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The zc.lockfile release the interop tests are pinned to.
pub const ZC_LOCKFILE: &str = "zc.lockfile==4.0";

/// A Python interpreter that can `import zc.lockfile`.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(python) = std::env::var_os("LOCKFILE_TEST_PYTHON") {
            return python.into();
        }
        let venv = target_dir().join("zc-lockfile-venv");
        let python = venv.join("bin/python");
        let ready = venv.join("installed");
        std::fs::create_dir_all(target_dir()).unwrap();
        let _setup = lockfile_core::LockOptions::new()
            .wait(Duration::from_secs(600))
            .lock(target_dir().join("zc-lockfile-venv.lock"))
            .expect("lock the virtualenv set-up");
        if !ready.exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
            run(Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                ZC_LOCKFILE,
            ]));
            std::fs::write(&ready, ZC_LOCKFILE).unwrap();
        }
        python
    })
}

/// The cargo target directory this executable was built in: the nearest
/// ancestor that cargo marked with CACHEDIR.TAG.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").exists());
    target
        .unwrap_or_else(|| panic!("{} is not inside a cargo target directory", exe.display()))
        .to_owned()
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// Runs a Python snippet with zc.lockfile imported as `zc` and `sys.argv[1:]`
/// set to `args`; returns its stdout.
pub fn python_output(code: &str, args: &[&str]) -> String {
    let output = Command::new(python())
        .arg("-c")
        .arg(format!("import sys, os, zc.lockfile as zc\n{code}"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Tries `zc.lockfile.LockFile(path)` once: `Ok(pid)` if it got the lock (and
/// released it), `Err(message)` with zc's LockError text if not.
pub fn zc_try_lock(path: &Path) -> Result<u32, String> {
    let out = python_output(
        "try:\n    zc.LockFile(sys.argv[1]).close()\n    print('acquired', os.getpid())\n\
         except zc.LockError as e:\n    print('LockError', e)",
        &[path.to_str().unwrap()],
    );
    match out.trim().split_once(' ') {
        Some(("acquired", pid)) => Ok(pid.parse().unwrap()),
        Some(("LockError", message)) => Err(message.to_owned()),
        _ => panic!("unexpected output {out:?}"),
    }
}

/// A Python process holding `zc.lockfile.LockFile(path, content_template)`
/// until dropped.
pub struct ZcHolder {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The holder's pid.
    pub pid: u32,
}

impl ZcHolder {
    /// Starts the holder and waits until it holds the lock.
    pub fn lock(path: &Path, template: &str) -> Self {
        let mut child = Command::new(python())
            .arg("-c")
            .arg(
                "import sys, os, zc.lockfile as zc\n\
                 lock = zc.LockFile(sys.argv[1], content_template=sys.argv[2])\n\
                 print(os.getpid(), flush=True)\n\
                 sys.stdin.read()\n\
                 lock.close()\n\
                 print('released', flush=True)",
            )
            .arg(path)
            .arg(template)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut line = String::new();
        let mut stdout: BufReader<ChildStdout> = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("zc holder said {line:?}"));
        child.stdout = Some(stdout.into_inner());
        Self { child, stdin, pid }
    }

    /// Makes the holder close its lock and waits for it to exit.
    pub fn release(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "zc holder failed: {status}");
    }
}

impl Drop for ZcHolder {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.finish();
        }
    }
}
