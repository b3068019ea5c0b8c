//! Plugins written in Python (componentize-py), JavaScript (componentize-js),
//! C (`wit-bindgen c`, clang and wasm-tools) and Go (`wit-bindgen go`,
//! mainline Go and wasm-tools) from the same WIT, under `lockfile run`, against a Rust plugin and the real
//! zc.lockfile: mutual exclusion both ways and the same bytes; and, unchanged,
//! through etcd (Python, JavaScript and Rust).
//!
//! Each plugin is built once per test process by its own build script, which
//! installs its pinned tool the first time, then compiled once into a shared
//! compile cache. The build scripts build as a plugin author's own project
//! would, from the packages alone: the Python wheel and the npm tarball made
//! from `guest/`, and (for Rust) the `.crate` that `cargo package` makes.
//!
//! The README's examples, one per language (`guest/*/example/`, and
//! lockfile-guest's `examples/my-plugin.rs`), are built the same way and run
//! with their lock free and held.

#[path = "../../../tests/support/zc_python.rs"]
mod zc_python;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use lockfile_core::read_content;
use lockfile_tests::LOCKCTL_COMPONENT;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

fn cache_dir() -> PathBuf {
    workspace().join("target/plugin-test-cache")
}

/// Builds share a package directory and a project per language: one at a time.
static BUILDS: Mutex<()> = Mutex::new(());

/// Builds the plugin with `guest/<language>/build-plugin` (from `app`, or
/// the test plugin) and fills the compile cache.
fn build(language: &str, name: &str, app: Option<&Path>) -> PathBuf {
    let out = workspace().join(format!("target/plugins/{language}-{name}.wasm"));
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new(workspace().join(format!("guest/{language}/build-plugin")))
        .arg(&out)
        .args(app)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "guest/{language}/build-plugin failed");
    compile(out)
}

fn compile(out: PathBuf) -> PathBuf {
    let compiled = Command::new(env!("CARGO_BIN_EXE_lockfile"))
        .args(["compile", "--cache-dir"])
        .arg(cache_dir())
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    out
}

fn python_plugin() -> &'static Path {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN.get_or_init(|| build("python", "plugin", None))
}

fn javascript_plugin() -> &'static Path {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN.get_or_init(|| build("javascript", "plugin", None))
}

fn c_plugin() -> &'static Path {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN.get_or_init(|| build("c", "plugin", None))
}

fn go_plugin() -> &'static Path {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN.get_or_init(|| build("go", "plugin", None))
}

fn lockfile_run(lock_dir: &Path, name: &str, plugin: &Path, args: &[&str]) -> Command {
    lockfile_run_with(
        &["--lock-dir".as_ref(), lock_dir.as_os_str()],
        name,
        plugin,
        args,
    )
}

/// `lockfile run OPTIONS --name NAME PLUGIN ARGS`, with the shared cache.
fn lockfile_run_with(
    options: &[&std::ffi::OsStr],
    name: &str,
    plugin: &Path,
    args: &[&str],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lockfile"));
    command
        .env_remove("LOCKFILE_DB")
        .arg("run")
        .args(options)
        .arg("--cache-dir")
        .arg(cache_dir())
        .args(["--name", name])
        .arg(plugin)
        .args(args);
    command
}

fn run(lock_dir: &Path, name: &str, plugin: &Path, args: &[&str]) -> Output {
    lockfile_run(lock_dir, name, plugin, args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A plugin run that holds `job.lock` (with `content`) until killed.
struct Holder(Child);

impl Holder {
    fn start(lock_dir: &Path, name: &str, plugin: &Path, args: &[&str], content: &str) -> Self {
        let child = lockfile_run(lock_dir, name, plugin, args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while read_content(lock_dir.join("job.lock"))
            .ok()
            .flatten()
            .as_deref()
            != Some(content)
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{name} never held job.lock as {content:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Self(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hostname() -> String {
    hostname::get().unwrap().into_string().unwrap()
}

fn excludes_and_is_excluded_by_a_rust_plugin(language: &str, plugin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path();
    {
        let _held = Holder::start(
            locks,
            language,
            plugin,
            &["lock", "job.lock", "{plugin}", "0", "hold", "60000"],
            language,
        );
        let rust = run(
            locks,
            "rust",
            Path::new(LOCKCTL_COMPONENT),
            &["lock", "job.lock", "{pid}", "0"],
        );
        assert_eq!(
            stdout(&rust),
            format!("error Couldn't lock 'job.lock': held by {language}\n")
        );
    }
    {
        let _held = Holder::start(
            locks,
            "rust",
            Path::new(LOCKCTL_COMPONENT),
            &["lock", "job.lock", "{plugin}", "0", "sleep", "60000"],
            "rust",
        );
        let theirs = run(
            locks,
            language,
            plugin,
            &[
                "lock", "job.lock", "{pid}", "0", "lock", "job.lock", "{pid}", "30",
            ],
        );
        // A wait reports how long the host waited (lockfile:lockfile@0.2.0).
        assert_eq!(
            stdout(&theirs),
            "error Couldn't lock 'job.lock': held by rust\n\
             error Couldn't lock 'job.lock' within 30ms: held by rust\n"
        );
    }
    let free = run(
        locks,
        language,
        plugin,
        &[
            "lock", "job.lock", "{plugin}", "0", "read", "job.lock", "release",
        ],
    );
    assert_eq!(
        stdout(&free),
        format!("locked {language}\ncontent {language}\nreleased\n")
    );
}

fn excludes_and_is_excluded_by_zc_lockfile(language: &str, plugin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path();
    let path = locks.join("job.lock");
    let zc = zc_python::ZcHolder::lock(&path, "{pid};{hostname}");
    let refused = run(locks, language, plugin, &["lock", "job.lock", "{pid}", "0"]);
    assert_eq!(
        stdout(&refused),
        format!(
            "error Couldn't lock 'job.lock': held by {};{}\n",
            zc.pid,
            hostname()
        )
    );
    zc.release();

    let held = Holder::start(
        locks,
        language,
        plugin,
        &["lock", "job.lock", "{plugin}", "0", "hold", "60000"],
        language,
    );
    let zc_refused = zc_python::zc_try_lock(&path);
    drop(held);
    assert_eq!(
        zc_refused.unwrap_err(),
        format!("Couldn't lock '{}'", path.display())
    );
}

fn writes_the_same_bytes_as_rust_and_zc_lockfile(language: &str, plugin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let template = "{pid};{hostname}";
    let expected = |pid: u32| format!(" {pid};{}\n", hostname()).into_bytes();

    let child = lockfile_run(
        dir.path(),
        language,
        plugin,
        &["lock", "job.lock", template, "0"],
    )
    .output()
    .unwrap();
    let ours = std::fs::read(dir.path().join("job.lock")).unwrap();
    assert!(child.status.success());
    let pid: u32 = String::from_utf8_lossy(&child.stdout)
        .trim()
        .strip_prefix("locked ")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ours, expected(pid), "{language}");

    let rust = run(
        dir.path(),
        "rust",
        Path::new(LOCKCTL_COMPONENT),
        &["lock", "job.lock", template, "0"],
    );
    let rust_pid: u32 = stdout(&rust)
        .trim()
        .strip_prefix("locked ")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("job.lock")).unwrap(),
        expected(rust_pid)
    );

    let zc = zc_python::ZcHolder::lock(&dir.path().join("zc.lock"), template);
    assert_eq!(
        std::fs::read(dir.path().join("zc.lock")).unwrap(),
        expected(zc.pid)
    );
}

fn exits_with_the_status_it_asks_for(language: &str, plugin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        language,
        plugin,
        &["lock", "job.lock", "{plugin}", "0", "exit", "75"],
    );
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("locked {language}\n")
    );
    lockfile_core::LockFile::lock(dir.path().join("job.lock"))
        .expect("released when the plugin exited");
}

/// Unchanged plugins exclude each other through etcd (`LOCKFILE_TEST_ETCD`,
/// `eval "$(scripts/etcd start)"`), as through a lock directory: `language`'s
/// holds while a Rust plugin and another `language` one are refused, then
/// the Rust one holds while `language`'s is refused.
fn excludes_and_is_excluded_through_etcd(language: &str, plugin: &Path) {
    let url = std::env::var("LOCKFILE_TEST_ETCD").unwrap_or_else(|_| {
        panic!("LOCKFILE_TEST_ETCD is not set: run `eval \"$(scripts/etcd start)\"` first")
    });
    let ns = format!(
        "languages-{language}-{}-{:?}",
        std::process::id(),
        Instant::now()
    );
    let on_etcd = [
        "--lock-db".as_ref(),
        url.as_ref(),
        "--lock-namespace".as_ref(),
        std::ffi::OsStr::new(&ns),
        // A holder ended by SIGKILL keeps the lock until its lease ends.
        "--lease".as_ref(),
        "3s".as_ref(),
    ];
    let run_on_etcd =
        |name: &str, plugin: &Path, args: &[&str]| lockfile_run_with(&on_etcd, name, plugin, args);
    let holding = |content: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_lockfile"))
            .env_remove("LOCKFILE_DB")
            .args([
                "inspect",
                "--lock-db",
                &url,
                "--lock-namespace",
                &ns,
                "job.lock",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("content: {content}\nlocked: yes"))
    };
    // Rust's lockctl sleeps where the other languages' test plugin holds;
    // each waits for the last holder's lease to end.
    let hold = |name: &str, plugin: &Path, sleep: &str| {
        let child = run_on_etcd(
            name,
            plugin,
            &["lock", "job.lock", "{plugin}", "20000", sleep, "60000"],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
        let held = Holder(child);
        let start = Instant::now();
        while !holding(name) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{name} never held job.lock on etcd"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        held
    };
    {
        let _held = hold(language, plugin, "hold");
        let rust = run_on_etcd(
            "rust",
            Path::new(LOCKCTL_COMPONENT),
            &["lock", "job.lock", "{pid}", "0"],
        )
        .output()
        .unwrap();
        assert_eq!(
            stdout(&rust),
            format!("error Couldn't lock 'job.lock': held by {language}\n")
        );
        let twin = run_on_etcd("twin", plugin, &["lock", "job.lock", "{pid}", "0"])
            .output()
            .unwrap();
        assert_eq!(
            stdout(&twin),
            format!("error Couldn't lock 'job.lock': held by {language}\n")
        );
    }
    {
        let _held = hold("rust", Path::new(LOCKCTL_COMPONENT), "sleep");
        let theirs = run_on_etcd(language, plugin, &["lock", "job.lock", "{pid}", "30"])
            .output()
            .unwrap();
        assert_eq!(
            stdout(&theirs),
            "error Couldn't lock 'job.lock' within 30ms: held by rust\n"
        );
    }
}

#[test]
fn python_plugin_excludes_and_is_excluded_through_etcd() {
    excludes_and_is_excluded_through_etcd("python", python_plugin());
}

#[test]
fn javascript_plugin_excludes_and_is_excluded_through_etcd() {
    excludes_and_is_excluded_through_etcd("javascript", javascript_plugin());
}

#[test]
fn python_plugin_excludes_and_is_excluded_by_a_rust_plugin() {
    excludes_and_is_excluded_by_a_rust_plugin("python", python_plugin());
}

#[test]
fn python_plugin_excludes_and_is_excluded_by_zc_lockfile() {
    excludes_and_is_excluded_by_zc_lockfile("python", python_plugin());
}

#[test]
fn python_plugin_writes_the_same_bytes_as_rust_and_zc_lockfile() {
    writes_the_same_bytes_as_rust_and_zc_lockfile("python", python_plugin());
}

#[test]
fn javascript_plugin_excludes_and_is_excluded_by_a_rust_plugin() {
    excludes_and_is_excluded_by_a_rust_plugin("javascript", javascript_plugin());
}

#[test]
fn javascript_plugin_excludes_and_is_excluded_by_zc_lockfile() {
    excludes_and_is_excluded_by_zc_lockfile("javascript", javascript_plugin());
}

#[test]
fn javascript_plugin_writes_the_same_bytes_as_rust_and_zc_lockfile() {
    writes_the_same_bytes_as_rust_and_zc_lockfile("javascript", javascript_plugin());
}

#[test]
fn python_plugin_exits_with_the_status_it_asks_for() {
    exits_with_the_status_it_asks_for("python", python_plugin());
}

#[test]
fn javascript_plugin_exits_with_the_status_it_asks_for() {
    exits_with_the_status_it_asks_for("javascript", javascript_plugin());
}

/// The README's Rust example, built as an outside crate against lockfile-guest
/// unpacked from the `.crate` that `cargo package` makes: what a user of the
/// published crate gets.
fn rust_example() -> PathBuf {
    let guest = workspace().join("guest");
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let packaged = Command::new(&cargo)
        .args([
            "package",
            "-p",
            "lockfile-guest",
            "--no-verify",
            "--allow-dirty",
            "--locked",
        ])
        .arg("--manifest-path")
        .arg(guest.join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        packaged.status.success(),
        "{}",
        String::from_utf8_lossy(&packaged.stderr)
    );
    let project = tempfile::tempdir().unwrap();
    let untarred = Command::new("tar")
        .arg("-xzf")
        .arg(guest.join("target/package/lockfile-guest-0.2.0.crate"))
        .arg("-C")
        .arg(project.path())
        .status()
        .unwrap();
    assert!(untarred.success());
    let krate = project.path().join("my-plugin");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"my-plugin\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\nlockfile-guest = { path = \"../lockfile-guest-0.2.0\" }\n",
    )
    .unwrap();
    std::fs::copy(
        guest.join("lockfile-guest/examples/my-plugin.rs"),
        krate.join("src/main.rs"),
    )
    .unwrap();
    let wasm = lockfile_tests::build_my_plugin(&krate);
    let out = workspace().join("target/plugins/rust-example.wasm");
    std::fs::copy(wasm, &out).unwrap();
    compile(out)
}

/// The README's example in `language`, built from the packages alone.
fn example(language: &str) -> PathBuf {
    let source = match language {
        "rust" => return rust_example(),
        "python" => "guest/python/example/app.py",
        "javascript" => "guest/javascript/example/app.js",
        "c" => "guest/c/example/my_plugin.c",
        "go" => "guest/go/example/export_wasi_cli_run",
        _ => panic!("no example in {language}"),
    };
    build(language, "example", Some(&workspace().join(source)))
}

/// Each language's README example, with `my.lock` free: it says it holds it;
/// with the lock held by another process: the one line zc.lockfile's
/// `LockError` prints, on stderr, and exit status 75; never a trap.
fn the_example_says_who_holds_the_lock_and_exits_75(language: &str) {
    let plugin = example(language);
    let dir = tempfile::tempdir().unwrap();
    let free = lockfile_run(dir.path(), language, &plugin, &[])
        .output()
        .unwrap();
    assert_eq!(stdout(&free), "holding my.lock\n");

    let held = lockfile_core::LockFile::lock(dir.path().join("my.lock")).unwrap();
    let refused = lockfile_run(dir.path(), language, &plugin, &[])
        .output()
        .unwrap();
    assert_eq!(
        (
            refused.status.code(),
            String::from_utf8_lossy(&refused.stderr).into_owned(),
            String::from_utf8_lossy(&refused.stdout).into_owned(),
        ),
        (
            Some(75),
            format!("Couldn't lock 'my.lock': held by {}\n", std::process::id()),
            String::new()
        ),
        "{language}"
    );
    held.release();
}

#[test]
fn the_rust_example_says_who_holds_the_lock_and_exits_75() {
    the_example_says_who_holds_the_lock_and_exits_75("rust");
}

#[test]
fn the_python_example_says_who_holds_the_lock_and_exits_75() {
    the_example_says_who_holds_the_lock_and_exits_75("python");
}

#[test]
fn the_javascript_example_says_who_holds_the_lock_and_exits_75() {
    the_example_says_who_holds_the_lock_and_exits_75("javascript");
}

/// The README shows each example exactly as the tests build it.
#[test]
fn the_c_example_says_who_holds_the_lock_and_exits_75() {
    the_example_says_who_holds_the_lock_and_exits_75("c");
}

#[test]
fn c_plugin_excludes_and_is_excluded_by_a_rust_plugin() {
    excludes_and_is_excluded_by_a_rust_plugin("c", c_plugin());
}

#[test]
fn c_plugin_excludes_and_is_excluded_by_zc_lockfile() {
    excludes_and_is_excluded_by_zc_lockfile("c", c_plugin());
}

#[test]
fn c_plugin_writes_the_same_bytes_as_rust_and_zc_lockfile() {
    writes_the_same_bytes_as_rust_and_zc_lockfile("c", c_plugin());
}

#[test]
fn c_plugin_exits_with_the_status_it_asks_for() {
    exits_with_the_status_it_asks_for("c", c_plugin());
}

#[test]
fn the_go_example_says_who_holds_the_lock_and_exits_75() {
    the_example_says_who_holds_the_lock_and_exits_75("go");
}

#[test]
fn go_plugin_excludes_and_is_excluded_by_a_rust_plugin() {
    excludes_and_is_excluded_by_a_rust_plugin("go", go_plugin());
}

#[test]
fn go_plugin_excludes_and_is_excluded_by_zc_lockfile() {
    excludes_and_is_excluded_by_zc_lockfile("go", go_plugin());
}

#[test]
fn go_plugin_writes_the_same_bytes_as_rust_and_zc_lockfile() {
    writes_the_same_bytes_as_rust_and_zc_lockfile("go", go_plugin());
}

#[test]
fn go_plugin_exits_with_the_status_it_asks_for() {
    exits_with_the_status_it_asks_for("go", go_plugin());
}

#[test]
fn the_readme_shows_each_example_as_tested() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    for example in [
        "guest/lockfile-guest/examples/my-plugin.rs",
        "guest/python/example/app.py",
        "guest/javascript/example/app.js",
        "guest/c/example/my_plugin.c",
        "guest/go/example/export_wasi_cli_run/run.go",
    ] {
        let text = std::fs::read_to_string(workspace().join(example)).unwrap();
        assert!(
            readme.contains(&text),
            "README.md does not show {example} as it is"
        );
    }
}
