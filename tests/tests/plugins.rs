//! Real guest components under the real host: zc.lockfile's behaviours from
//! inside the sandbox, against other plugins, native locks, other processes and
//! the real zc.lockfile.

#[path = "../support/zc_python.rs"]
mod zc_python;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lockfile_core::{Error, LockFile, LockOptions};
use lockfile_host::{LockfileCtx, LockfileCtxBuilder};
use lockfile_tests::{LOCKCTL_COMPONENT, LOCKCTL_V0_1_COMPONENT, Run, ZC_BEHAVIOUR_COMPONENT, run};

fn lockctl(lock_dir: &Path, args: &[&str]) -> Run {
    run(LOCKCTL_COMPONENT, lock_dir, None, args, |b| b)
}

/// Runs lockctl on a thread; the plugin signals through files in `data_dir`.
fn spawn_lockctl(lock_dir: &Path, data_dir: &Path, args: &[&str]) -> std::thread::JoinHandle<Run> {
    spawn_lockctl_with(lock_dir, data_dir, args, |b| b)
}

/// Like [`spawn_lockctl`], with more of the host's settings.
fn spawn_lockctl_with(
    lock_dir: &Path,
    data_dir: &Path,
    args: &[&str],
    configure: impl FnOnce(LockfileCtxBuilder) -> LockfileCtxBuilder + Send + 'static,
) -> std::thread::JoinHandle<Run> {
    let (lock_dir, data_dir) = (lock_dir.to_owned(), data_dir.to_owned());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(LOCKCTL_COMPONENT, &lock_dir, Some(&data_dir), &args, |b| {
            configure(b.plugin_name("holder"))
        })
    })
}

fn wait_for(path: &Path) {
    for _ in 0..30_000 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("{} never appeared", path.display());
}

fn pid() -> String {
    std::process::id().to_string()
}

struct Dirs {
    _root: tempfile::TempDir,
    locks: PathBuf,
    data: PathBuf,
    outside: PathBuf,
}

fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let [locks, data, outside] = ["locks", "data", "outside"].map(|name| root.path().join(name));
    for dir in [&locks, &data, &outside] {
        fs::create_dir(dir).unwrap();
    }
    Dirs {
        _root: root,
        locks,
        data,
        outside,
    }
}

#[test]
fn zc_lockfile_behaviours_hold_inside_a_plugin() {
    let d = dirs();
    let out = run(ZC_BEHAVIOUR_COMPONENT, &d.locks, None, &[], |b| {
        b.plugin_name("zc-behaviour").hostname("myhostname")
    });
    assert_eq!(out.status, Ok(0), "{}", out.stdout);
    assert_eq!(
        out.lines(),
        [
            "ok second-lock-fails",
            "ok file-left-and-relock",
            "ok pid-slash-hostname",
            "ok plugin-field",
            "ok empty-template",
            "ok no-content-keeps-content",
            "ok bad-template-creates-nothing",
            "ok release-twice",
        ]
    );
    assert_eq!(
        fs::read(d.locks.join("lock")).unwrap(),
        format!(" {}\n", pid()).into_bytes()
    );
    assert_eq!(
        fs::read(d.locks.join("host.lock")).unwrap(),
        format!(" {}/myhostname\n", pid()).into_bytes()
    );
    assert!(!d.locks.join("bad.lock").exists());
}

#[test]
fn two_plugin_instances_exclude_each_other() {
    let d = dirs();
    let holder = spawn_lockctl(
        &d.locks,
        &d.data,
        &[
            "lock", "job.lock", "{plugin}", "0", "touch", "locked", "await", "go",
        ],
    );
    wait_for(&d.data.join("locked"));
    let second = run(
        LOCKCTL_COMPONENT,
        &d.locks,
        None,
        &["lock", "job.lock", "{plugin}", "0"],
        |b| b.plugin_name("second"),
    );
    fs::write(d.data.join("go"), "").unwrap();
    let first = holder.join().unwrap();
    assert_eq!(first.lines(), ["locked holder"]);
    assert_eq!(
        second.lines(),
        ["error Couldn't lock 'job.lock': held by holder"]
    );
}

#[test]
fn a_plugin_and_a_native_lock_exclude_each_other() {
    let d = dirs();
    let native = LockOptions::new()
        .content_template("native {pid}")
        .lock(d.locks.join("job.lock"))
        .unwrap();
    let out = lockctl(&d.locks, &["lock", "job.lock", "{pid}", "0"]);
    assert_eq!(
        out.lines(),
        [format!(
            "error Couldn't lock 'job.lock': held by native {}",
            pid()
        )]
    );
    native.release();

    let holder = spawn_lockctl(
        &d.locks,
        &d.data,
        &[
            "lock", "job.lock", "{plugin}", "0", "touch", "locked", "await", "go",
        ],
    );
    wait_for(&d.data.join("locked"));
    let refused = LockFile::lock(d.locks.join("job.lock"));
    fs::write(d.data.join("go"), "").unwrap();
    holder.join().unwrap();
    assert!(
        matches!(refused, Err(Error::Locked { holder: Some(ref h), .. }) if h == "holder"),
        "{refused:?}"
    );
}

#[test]
fn fifty_plugin_instances_increment_a_counter_under_the_lock() {
    let d = dirs();
    fs::write(d.data.join("counter"), "0").unwrap();
    let barrier = std::sync::Barrier::new(50);
    std::thread::scope(|scope| {
        for _ in 0..50 {
            scope.spawn(|| {
                barrier.wait();
                let out = run(
                    LOCKCTL_COMPONENT,
                    &d.locks,
                    Some(&d.data),
                    &["increment", "counter.lock", "counter"],
                    |b| b,
                );
                assert_eq!(out.status, Ok(0), "{}", out.stdout);
            });
        }
    });
    assert_eq!(fs::read_to_string(d.data.join("counter")).unwrap(), "50");
    assert_eq!(
        fs::read_to_string(d.locks.join("counter.lock")).unwrap(),
        format!(" {}\n", pid())
    );
}

#[test]
fn a_trap_while_holding_leaves_the_lock_free() {
    let d = dirs();
    let out = lockctl(
        &d.locks,
        &[
            "lock", "a.lock", "{pid}", "0", "lock", "b.lock", "-", "0", "trap",
        ],
    );
    assert!(out.status.is_err(), "{out:?}");
    assert_eq!(
        out.lines(),
        [format!("locked {}", pid()), "locked -".to_owned()]
    );
    LockFile::lock(d.locks.join("a.lock")).expect("free after the trap");
    LockFile::lock(d.locks.join("b.lock")).expect("free after the trap");
}

#[test]
fn a_dropped_store_releases_what_the_plugin_left() {
    use wasmtime_wasi::p2::bindings::sync::Command;
    let d = dirs();
    let (mut store, _stdout) = lockfile_tests::store(
        &d.locks,
        None,
        &["lock", "left.lock", "{pid}", "0", "exit"],
        |b| b,
    );
    let command = Command::instantiate(
        &mut store,
        &lockfile_tests::component(LOCKCTL_COMPONENT),
        lockfile_tests::sync_linker(),
    )
    .unwrap();
    let exited = command.wasi_cli_run().call_run(&mut store).unwrap_err();
    assert_eq!(
        exited.downcast_ref::<wasmtime_wasi::I32Exit>().map(|e| e.0),
        Some(0)
    );
    assert_eq!(
        store.data_mut().locks_live(),
        1,
        "the plugin exited without dropping its handle"
    );
    assert!(
        matches!(
            LockFile::lock(d.locks.join("left.lock")),
            Err(Error::Locked { .. })
        ),
        "held while the store lives"
    );
    drop(store);
    LockFile::lock(d.locks.join("left.lock")).expect("free once the store is dropped");
}

#[test]
fn hostile_paths_are_refused_and_change_nothing_outside() {
    let d = dirs();
    let secret = d.outside.join("secret");
    fs::write(&secret, "untouched").unwrap();
    fs::create_dir(d.locks.join("sub")).unwrap();
    std::os::unix::fs::symlink(&secret, d.locks.join("to-file")).unwrap();
    std::os::unix::fs::symlink(&d.outside, d.locks.join("to-dir")).unwrap();
    std::os::unix::fs::symlink(d.outside.join("created"), d.locks.join("dangling")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", d.locks.join("relative")).unwrap();
    let outside = d.outside.display().to_string();
    let absolute_secret = secret.display().to_string();
    let absolute_new = format!("{outside}/new");
    let hostile = [
        absolute_secret.as_str(),
        absolute_new.as_str(),
        "../outside/new",
        "../outside/secret",
        "sub/../../outside/new",
        "to-file",
        "to-dir/new",
        "to-dir/secret",
        "dangling",
        "relative",
    ];
    for path in hostile {
        let out = lockctl(&d.locks, &["lock", path, "{pid}", "0", "read", path]);
        let reason = if path.starts_with('/') {
            let relative = path.trim_start_matches('/');
            format!(
                "'{path}' is absolute: lock paths are relative to the lock directory (try '{relative}')"
            )
        } else if path.contains("..") {
            // Refused on the text alone, before the file system is asked.
            format!("'{path}' leads outside the lock directory: its '..' climbs above it")
        } else {
            format!("'{path}' leads outside the lock directory (through a symbolic link)")
        };
        let line = format!("error not permitted: {reason}");
        assert_eq!(out.lines(), [line.clone(), line], "{path}");
    }
    let out = lockctl(
        &d.locks,
        &["lock", "", "{pid}", "0", "lock", "a\\0b", "{pid}", "0"],
    );
    assert_eq!(
        out.lines(),
        [
            "error not permitted: empty lock path: name a file in the lock directory, e.g. 'job.lock'",
            "error not permitted: lock path \"a\\0b\" contains NUL"
        ]
    );
    assert_eq!(fs::read_to_string(&secret).unwrap(), "untouched");
    let mut outside_entries: Vec<_> = fs::read_dir(&d.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside_entries.sort();
    assert_eq!(outside_entries, ["secret"]);
}

#[test]
fn paths_inside_the_lock_directory_work_through_symlinks_too() {
    let d = dirs();
    fs::create_dir(d.locks.join("sub")).unwrap();
    std::os::unix::fs::symlink("sub/real.lock", d.locks.join("alias.lock")).unwrap();
    let out = lockctl(
        &d.locks,
        &[
            "lock",
            "sub/../sub/real.lock",
            "{pid}",
            "0",
            "lock",
            "alias.lock",
            "{pid}",
            "0",
        ],
    );
    assert_eq!(
        out.lines(),
        [
            format!("locked {}", pid()),
            format!("error Couldn't lock 'alias.lock': held by {}", pid())
        ]
    );
}

#[test]
fn a_directory_is_not_lockable() {
    let d = dirs();
    fs::create_dir(d.locks.join("sub")).unwrap();
    fs::write(d.locks.join("sub/keep"), "x").unwrap();
    let out = lockctl(
        &d.locks,
        &[
            "lock",
            "sub",
            "{pid}",
            "0",
            "lock",
            ".",
            "{pid}",
            "0",
            "lock",
            "missing/x",
            "{pid}",
            "0",
        ],
    );
    let lines = out.lines();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].starts_with("error couldn't open 'sub': Is a directory"),
        "{}",
        lines[0]
    );
    // The lock directory itself is refused on its name, before any open.
    assert_eq!(
        lines[1],
        "error not permitted: '.' names the lock directory itself: name a file in it, e.g. 'job.lock'"
    );
    assert!(
        lines[2].starts_with("error couldn't open 'missing/x': No such file"),
        "{}",
        lines[2]
    );
    assert_eq!(fs::read_to_string(d.locks.join("sub/keep")).unwrap(), "x");
    assert!(!d.locks.join("missing").exists());
}

#[test]
fn too_many_locks_is_refused() {
    let d = dirs();
    let out = run(
        LOCKCTL_COMPONENT,
        &d.locks,
        None,
        &["hold-many", "5"],
        |b| b.max_locks(3),
    );
    assert_eq!(
        out.lines(),
        ["held 3", "error too many locks: this plugin may hold 3"]
    );
    let out = run(
        LOCKCTL_COMPONENT,
        &d.locks,
        None,
        &["hold-many", "100"],
        |b| b,
    );
    assert_eq!(
        out.lines(),
        ["held 64", "error too many locks: this plugin may hold 64"]
    );
    assert!(!d.locks.join("many-64").exists());
}

#[test]
fn a_released_handle_still_counts_until_dropped() {
    let d = dirs();
    // `keep-released` unlocks c.lock but keeps its handle: the file is free to
    // others, yet the handle still fills the plugin's only slot.
    let plugin = spawn_lockctl_with(
        &d.locks,
        &d.data,
        &[
            "keep-released",
            "c.lock",
            "touch",
            "kept",
            "await",
            "go",
            "lock",
            "d.lock",
            "{pid}",
            "0",
        ],
        |b| b.max_locks(1),
    );
    wait_for(&d.data.join("kept"));
    let native = LockFile::lock(d.locks.join("c.lock"));
    fs::write(d.data.join("go"), "").unwrap();
    let out = plugin.join().unwrap();
    native.expect("released: others may take it while the handle lives");
    assert_eq!(out.status, Ok(0), "{out:?}");
    assert_eq!(
        out.lines(),
        [
            "kept-released",
            "error too many locks: this plugin may hold 1"
        ]
    );
    assert!(!d.locks.join("d.lock").exists());

    // lockfile-guest's `release` drops the handle too, so a plugin that
    // releases can lock again and again within one slot.
    let out = run(
        LOCKCTL_COMPONENT,
        &d.locks,
        None,
        &["cycles", "200", "c.lock"],
        |b| b.max_locks(1),
    );
    assert_eq!(out.status, Ok(0), "{out:?}");
}

#[test]
fn a_wait_hands_over_and_times_out() {
    let d = dirs();
    let holder = spawn_lockctl(
        &d.locks,
        &d.data,
        &[
            "lock", "w.lock", "{plugin}", "0", "touch", "locked", "await", "go",
        ],
    );
    wait_for(&d.data.join("locked"));
    let timed_out = lockctl(&d.locks, &["lock", "w.lock", "{pid}", "50"]);
    assert_eq!(
        timed_out.lines(),
        ["error Couldn't lock 'w.lock' within 50ms: held by holder"]
    );

    let path = d.locks.join("w.lock");
    assert_eq!(open_count(&path), 1, "only the holder has w.lock open");
    let waiter = spawn_lockctl(&d.locks, &d.data, &["lock", "w.lock", "waiter", "60000"]);
    // The waiter opens the file once, then retries the lock on it: a second
    // descriptor on w.lock in this process means it is waiting.
    for _ in 0..30_000 {
        if open_count(&path) == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(open_count(&path), 2, "the waiter never opened w.lock");
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        !waiter.is_finished(),
        "the waiter did not wait for the holder"
    );
    fs::write(d.data.join("go"), "").unwrap();
    holder.join().unwrap();
    assert_eq!(waiter.join().unwrap().lines(), ["locked waiter"]);
}

/// How many descriptors of this process are open on `path`.
fn open_count(path: &Path) -> usize {
    let path = fs::canonicalize(path).unwrap();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| *target == path)
        .count()
}

#[test]
fn the_host_caps_how_long_a_plugin_may_wait() {
    let d = dirs();
    let _held = LockFile::lock(d.locks.join("w.lock")).unwrap();
    let out = run(
        LOCKCTL_COMPONENT,
        &d.locks,
        None,
        &["lock", "w.lock", "{pid}", "3600000"],
        |b| b.max_wait(Duration::from_millis(20)),
    );
    // The message gives the wait the host allowed, not the one asked for.
    assert_eq!(
        out.lines(),
        [format!(
            "error Couldn't lock 'w.lock' within 20ms: held by {}",
            pid()
        )]
    );
}

#[test]
fn failures_name_the_template() {
    let d = dirs();
    let out = lockctl(
        &d.locks,
        &[
            "lock", "t.lock", "{nope}", "0", "lock", "t.lock", "{pid", "0",
        ],
    );
    assert_eq!(
        out.lines(),
        [
            "error unknown field {nope} in content template \"{nope}\" (known: {pid}, {hostname}, {plugin})",
            "error single '{' at byte 0 of content template \"{pid\" (write '{{' for a literal brace)",
        ]
    );
    assert!(!d.locks.join("t.lock").exists());
}

#[test]
fn plugins_and_zc_lockfile_exclude_each_other_and_write_the_same_bytes() {
    let d = dirs();
    let path = d.locks.join("job.lock");
    let zc = zc_python::ZcHolder::lock(&path, "{pid};{hostname}");
    let hostname = hostname::get().unwrap().into_string().unwrap();
    let out = lockctl(
        &d.locks,
        &["lock", "job.lock", "{pid}", "0", "read", "job.lock"],
    );
    assert_eq!(
        out.lines(),
        [
            format!(
                "error Couldn't lock 'job.lock': held by {};{hostname}",
                zc.pid
            ),
            format!("content {};{hostname}", zc.pid),
        ]
    );
    let theirs = fs::read(&path).unwrap();
    let zc_pid = zc.pid;
    zc.release();

    let holder = spawn_lockctl(
        &d.locks,
        &d.data,
        &[
            "lock",
            "job.lock",
            "{pid};{hostname}",
            "0",
            "touch",
            "locked",
            "await",
            "go",
        ],
    );
    wait_for(&d.data.join("locked"));
    let refused = zc_python::zc_try_lock(&path);
    let ours = fs::read_to_string(&path).unwrap();
    fs::write(d.data.join("go"), "").unwrap();
    holder.join().unwrap();
    assert_eq!(
        refused.unwrap_err(),
        format!("Couldn't lock '{}'", path.display())
    );
    assert_eq!(
        ours.replace(&pid(), &zc_pid.to_string()).into_bytes(),
        theirs
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_wait_does_not_block_the_executor() {
    let d = dirs();
    let held = LockOptions::new()
        .content_template("native")
        .lock(d.locks.join("a.lock"))
        .unwrap();
    // On a single-threaded runtime, the release below can only run while the
    // plugin's wait is sleeping asynchronously.
    let release = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        held.release();
    };
    let waiter = lockfile_tests::run_async(
        LOCKCTL_COMPONENT,
        &d.locks,
        None,
        &["lock", "a.lock", "async", "60000"],
        |b| b,
    );
    let ((), out) = tokio::join!(release, waiter);
    assert_eq!(out.lines(), ["locked async"]);

    let timed_out = lockfile_tests::run_async(
        LOCKCTL_COMPONENT,
        &d.locks,
        None,
        &["lock", "a.lock", "x", "0"],
        |b| b,
    )
    .await;
    assert_eq!(timed_out.lines(), ["locked x"]);
}

#[test]
fn a_path_that_climbs_out_through_a_missing_directory_is_not_permitted() {
    let d = dirs();
    // `a` does not exist: the file system would answer "No such file or
    // directory"; the text alone shows the path leaves the lock directory.
    let out = lockctl(
        &d.locks,
        &[
            "lock",
            "a/../../x.lock",
            "{pid}",
            "0",
            "read",
            "a/../../x.lock",
        ],
    );
    let line = "error not permitted: 'a/../../x.lock' leads outside the lock directory: its '..' climbs above it";
    assert_eq!(out.lines(), [line, line]);
    assert!(!d.outside.join("x.lock").exists());
    let out = lockctl(&d.locks, &["lock", "/locks/my.lock", "{pid}", "0"]);
    assert_eq!(
        out.lines(),
        [
            "error not permitted: '/locks/my.lock' is absolute: lock paths are relative to the lock directory (try 'my.lock')"
        ]
    );
    let long = "x".repeat(600);
    let out = lockctl(&d.locks, &["lock", &long, "{pid}", "0"]);
    assert!(
        out.lines()[0].starts_with("error not permitted: lock path 'xxxx")
            && out.lines()[0].contains("is too long: 600 bytes"),
        "{out:?}"
    );
}

#[test]
fn a_plugin_creates_no_more_lock_files_than_allowed() {
    let d = dirs();
    fs::write(d.locks.join("existing.lock"), "").unwrap();
    let out = run(
        LOCKCTL_COMPONENT,
        &d.locks,
        None,
        &["create-many", "1000", "lock", "existing.lock", "{pid}", "0"],
        |b| b.max_lock_files(10),
    );
    assert_eq!(out.status, Ok(0), "{out:?}");
    assert_eq!(
        out.lines()[..2],
        [
            "created 10",
            "error not permitted: this plugin may create at most 10 lock files and has created them all: reuse existing lock names"
        ]
    );
    // Files that exist can still be locked.
    assert!(out.lines()[2].starts_with("locked "), "{out:?}");
    let files = fs::read_dir(&d.locks).unwrap().count();
    assert_eq!(files, 11, "10 created and the existing one");
}

#[test]
fn the_default_bounds_what_a_plugin_leaves_on_disk() {
    let d = dirs();
    let out = run(
        LOCKCTL_COMPONENT,
        &d.locks,
        None,
        &["create-many", "20000"],
        |b| b,
    );
    let limit = LockfileCtx::DEFAULT_MAX_LOCK_FILES;
    assert_eq!(out.lines()[0], format!("created {limit}"), "{out:?}");
    assert_eq!(fs::read_dir(&d.locks).unwrap().count(), limit as usize);
}

#[test]
fn a_record_over_the_cap_or_of_two_lines_is_an_invalid_template() {
    let d = dirs();
    let huge = "x".repeat(5_000_000);
    let out = lockctl(
        &d.locks,
        &[
            "lock", "big.lock", &huge, "0", "lock", "two.lock", "a\nb", "0",
        ],
    );
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert!(
        lines[0].starts_with("error content template \"xxx")
            && lines[0].contains("is too long: 5000000 bytes as written, the most is 1024"),
        "{}",
        &lines[0][..lines[0].len().min(300)]
    );
    assert!(
        lines[0].len() < 400,
        "the error quotes only the template's start"
    );
    assert!(!d.locks.join("big.lock").exists());
    assert!(!d.locks.join("two.lock").exists());
}

/// The names of what the component at `path` imports.
fn imports(path: &str) -> Vec<String> {
    lockfile_tests::component(path)
        .component_type()
        .imports(lockfile_tests::engine())
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The steps the 0.1.0 plugin runs against `n.lock` (held natively, as
/// "native"), `new.lock` (held by a 0.2.0 plugin, as "holder") and `old.lock`,
/// and what it must print: today's host serves it unchanged.
const V0_1_STEPS: &[&str] = &[
    "lock", "n.lock", "{pid}", "0", //
    "lock", "n.lock", "{pid}", "30", //
    "lock", "new.lock", "{pid}", "0", //
    "lock", "old.lock", "{plugin}", "0", //
    "lock", "old.lock", "{pid}", "0", //
    "read", "old.lock", //
    "release",  //
    "lock", "old.lock", "-", "0", //
];
const V0_1_LINES: &[&str] = &[
    "locked-by native",
    "timed-out native",
    "locked-by holder",
    "locked old",
    "locked-by old",
    "content old",
    "released",
    "locked -",
];

/// Holds `n.lock` natively and `new.lock` through a 0.2.0 plugin, runs
/// `plugin` (a 0.1.0 plugin run on one of the linkers), and checks its lines.
fn a_0_1_0_plugin_still_locks_excludes_and_times_out(plugin: impl FnOnce(&Dirs) -> Run) {
    let names = imports(LOCKCTL_V0_1_COMPONENT);
    assert!(
        names
            .iter()
            .any(|name| name == "lockfile:lockfile/lockfile@0.1.0"),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|name| name.starts_with("lockfile:lockfile/") && !name.ends_with("@0.1.0")),
        "a plugin of 0.1.0 imports nothing newer: {names:?}"
    );
    let d = dirs();
    let _native = LockOptions::new()
        .content_template("native")
        .lock(d.locks.join("n.lock"))
        .unwrap();
    let holder = spawn_lockctl(
        &d.locks,
        &d.data,
        &[
            "lock", "new.lock", "{plugin}", "0", "touch", "locked", "await", "go",
        ],
    );
    wait_for(&d.data.join("locked"));
    let out = plugin(&d);
    fs::write(d.data.join("go"), "").unwrap();
    assert_eq!(holder.join().unwrap().status, Ok(0));
    assert_eq!(out.status, Ok(0), "{out:?}");
    assert_eq!(out.lines(), V0_1_LINES);
    assert_eq!(
        fs::read_to_string(d.locks.join("old.lock")).unwrap(),
        " old\n"
    );
    LockFile::lock(d.locks.join("old.lock")).expect("released when the plugin ended");
}

#[test]
fn a_plugin_built_against_0_1_0_runs_on_the_sync_linker() {
    a_0_1_0_plugin_still_locks_excludes_and_times_out(|d| {
        run(LOCKCTL_V0_1_COMPONENT, &d.locks, None, V0_1_STEPS, |b| {
            b.plugin_name("old")
        })
    });
}

#[test]
fn a_plugin_built_against_0_1_0_runs_on_the_async_linker() {
    a_0_1_0_plugin_still_locks_excludes_and_times_out(|d| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(lockfile_tests::run_async(
            LOCKCTL_V0_1_COMPONENT,
            &d.locks,
            None,
            V0_1_STEPS,
            |b| b.plugin_name("old"),
        ))
    });
}

#[test]
fn a_lock_file_is_held_until_released_and_has_no_fencing_token() {
    let d = dirs();
    let out = lockctl(
        &d.locks,
        &[
            "lock", "a.lock", "-", "0", "held", "token", "raw-held", "b.lock",
        ],
    );
    assert_eq!(out.status, Ok(0), "{out:?}");
    assert_eq!(
        out.lines(),
        [
            "locked -",
            "held true",
            "token -",
            "held true",
            "held false",
            "token -"
        ]
    );
}

#[test]
fn a_plugin_exits_with_the_status_it_asks_for() {
    let d = dirs();
    for code in ["0", "3", "75", "255"] {
        let out = lockctl(
            &d.locks,
            &["lock", "x.lock", "{pid}", "0", "exit-code", code],
        );
        assert_eq!(out.status, Ok(code.parse().unwrap()), "{out:?}");
        assert_eq!(out.lines(), [format!("locked {}", pid())]);
    }
    LockFile::lock(d.locks.join("x.lock")).expect("the host released what the plugin held");
}

/// The lock directory behind the backend boundary (`DirBackend`), as a host
/// that picks its backend at run time holds it: a plugin cannot tell it from
/// `LockfileCtx::builder`'s directory, and natives and plugins exclude each
/// other on the same files with the same records.
mod dir_backend {
    use std::sync::Arc;

    use lockfile_core::{LockBackend, block_on};
    use lockfile_host::DirBackend;
    use lockfile_tests::run_with;

    use super::*;

    fn on(dir: &Path) -> LockfileCtxBuilder {
        LockfileCtx::builder_for_backend(Arc::new(DirBackend::open(dir).unwrap()))
            .plugin_name("lockctl")
    }

    #[test]
    fn a_plugin_locks_the_same_files_with_the_same_records() {
        let d = dirs();
        let out = run_with(
            LOCKCTL_COMPONENT,
            on(&d.locks),
            None,
            &[
                "lock", "a.lock", "{plugin}", "0", "read", "a.lock", "held", "token",
            ],
        );
        assert_eq!(out.status, Ok(0), "{out:?}");
        assert_eq!(
            out.lines(),
            ["locked lockctl", "content lockctl", "held true", "token -"]
        );
        assert_eq!(fs::read(d.locks.join("a.lock")).unwrap(), b" lockctl\n");

        let native = LockFile::lock(d.locks.join("b.lock")).unwrap();
        let out = run_with(
            LOCKCTL_COMPONENT,
            on(&d.locks),
            None,
            &["lock", "b.lock", "x", "0"],
        );
        assert_eq!(
            out.lines(),
            [format!(
                "error Couldn't lock 'b.lock': held by {}",
                std::process::id()
            )]
        );
        drop(native);
        // Paths are confined as a plugin's are.
        let out = run_with(
            LOCKCTL_COMPONENT,
            on(&d.locks),
            None,
            &["lock", "../x", "x", "0"],
        );
        assert!(out.lines()[0].starts_with("error not permitted"), "{out:?}");
    }

    #[test]
    fn a_wait_takes_the_lock_on_release_and_a_dropped_wait_never_takes_it() {
        let d = dirs();
        let backend = DirBackend::open(&d.locks).unwrap();
        let path = d.locks.join("job.lock");

        let held = LockFile::lock(&path).unwrap();
        let waiting = backend.acquire("job.lock", Some("{waiter}".into()), Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        let lock = block_on(waiting).unwrap();
        // Braces in the rendered content are written as they are.
        assert_eq!(fs::read(&path).unwrap(), b" {waiter}\n");
        assert!(LockFile::lock(&path).is_err());
        block_on(lock.release()).unwrap();

        // A wait dropped while the lock is held: after the release it must
        // not take the lock (it would write its record).
        let held = LockFile::lock(&path).unwrap();
        let record = fs::read(&path).unwrap();
        let gave_up = backend.acquire("job.lock", Some("late".into()), Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
        drop(gave_up);
        drop(held);
        // Longer than any wake-up: the waiting thread sees the release,
        // and must stop without a try.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            fs::read(&path).unwrap(),
            record,
            "the dropped wait took the lock"
        );
        // One try when it is held, and the limit of a wait.
        let _held = LockFile::lock(&path).unwrap();
        let err = block_on(backend.acquire("job.lock", None, Duration::ZERO)).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err:?}");
        let err =
            block_on(backend.acquire("job.lock", None, Duration::from_millis(60))).unwrap_err();
        assert!(matches!(err, Error::TimedOut { .. }), "{err:?}");
        assert!(block_on(backend.exists("job.lock")).unwrap());
        assert!(!block_on(backend.exists("never.lock")).unwrap());
    }
}
