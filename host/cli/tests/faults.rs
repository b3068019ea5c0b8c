//! The lock's one promise, that two holders never run at once, under faults:
//! full and read-only file systems (real tmpfs mounts), a lock directory
//! removed under a plugin, lock files replaced by a directory, a FIFO or a
//! socket, and holders killed or signalled. Every check uses a real contender
//! (a lock taken by this test process), every child runs under a deadline, so
//! a hang fails the test instead of stalling it, and every process a test
//! starts is killed when it ends.
//!
//! The mounts need root (CAP_SYS_ADMIN); where mounting is refused those tests
//! say why on stderr and pass without checking anything.

#[allow(dead_code)]
mod common;

use std::ffi::CString;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    DEADLINE, Reaper, Try, contend, contend_read_only, is_running, lockctl_run, lockfile, output,
    read_pid_file, signal, stderr, stdout, wait_until,
};

const NO_SPACE: &str = "No space left on device";
const READ_ONLY: &str = "Read-only file system";

/// A tmpfs mounted on a fresh directory, unmounted when dropped, even when the
/// test fails.
struct Tmpfs {
    // Dropped after `drop` below has unmounted it, which removes the mount point.
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options`; `None`, with the reason on stderr, where
    /// this process may not mount, so the calling test skips.
    fn mount(test: &str, options: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let target = c_path(dir.path());
        let data = CString::new(options).unwrap();
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            eprintln!(
                "SKIPPED {test}: cannot mount a tmpfs ({options}) on {}: {} (needs root)",
                dir.path().display(),
                io::Error::last_os_error()
            );
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount_read_only(&self) {
        let target = c_path(self.path());
        // EBUSY while any process has a file open for writing there: another
        // test's child between fork and exec briefly holds copies of all
        // this process's descriptors, the one that wrote the file included.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rc = unsafe {
                libc::mount(
                    std::ptr::null(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                )
            };
            let error = io::Error::last_os_error();
            if rc == 0 {
                return;
            }
            assert!(
                error.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline,
                "remount ro: {error}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = c_path(self.path());
        if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
            // Still busy (a process the test could not end): detach it, so it
            // disappears once unused and the mount point can be removed.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn is_no_space(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC)
}

/// Writes into a new file in `dir` until the file system has no block left,
/// then checks the premise of the "write fails" case: a new empty file can
/// still be created (it needs an inode, no block), but not written.
fn fill_blocks(dir: &Path) {
    let mut filler = fs::File::create(dir.join("filler")).unwrap();
    let chunk = [0xa5; 4096];
    loop {
        match filler.write(&chunk) {
            Ok(0) => panic!("filling {}: wrote nothing", dir.display()),
            Ok(_) => {}
            Err(e) if is_no_space(&e) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    let mut probe = fs::File::create(dir.join("probe")).expect("an empty file still fits");
    let error = probe.write(b"x").expect_err("the disk is full");
    assert!(is_no_space(&error), "{error}");
    fs::remove_file(dir.join("probe")).unwrap();
}

/// Creates empty files in `dir` until the file system has no inode left.
fn fill_inodes(dir: &Path) {
    for n in 0..100_000 {
        match fs::File::create(dir.join(format!("inode-{n}"))) {
            Ok(_) => {}
            Err(e) if is_no_space(&e) => return,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    panic!("{} never ran out of inodes", dir.display());
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// Checks one line of `lockfile`'s stderr for an I/O error: one line, after the
/// command's name, naming `path` and giving the system's `reason`, no panic.
fn assert_io_error(err: &str, path: &str, reason: &str) {
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("lockfile: "), "{err:?}");
    assert!(err.contains(path), "names {path}: {err:?}");
    assert!(err.contains(reason), "says {reason:?}: {err:?}");
    assert!(!err.contains("panicked"), "{err:?}");
}

/// What a failed acquire must leave behind: no file (its creation failed) or
/// an empty one (the record could not be written), and no lock either way.
#[derive(Clone, Copy, Debug)]
enum Left {
    Nothing,
    EmptyFile,
}

fn assert_left(path: &Path, left: Left) {
    match left {
        Left::Nothing => assert!(!path.exists(), "{} was created", path.display()),
        Left::EmptyFile => {
            assert_eq!(
                fs::read(path).unwrap(),
                b"",
                "half a record in {}",
                path.display()
            );
            assert_eq!(
                contend(path),
                Try::Free,
                "{} is still locked",
                path.display()
            );
        }
    }
}

/// `lockfile exec`, `lockfile run --singleton` and a plugin's own acquire all
/// fail on the full file system at `locks` with `reason`, run nothing, hold
/// nothing and leave `left`. Markers go to `outside`, which has room.
fn every_taker_fails(locks: &Path, outside: &Path, reason: &str, left: Left) {
    // lockfile exec, with and without a wait: an I/O error is not contention,
    // so the wait must not retry it.
    for wait in [None, Some("5s")] {
        let path = locks.join("job.lock");
        let marker = outside.join("exec-ran");
        let mut command = lockfile();
        command.arg("exec");
        if let Some(wait) = wait {
            command.args(["--wait", wait]);
        }
        let start = Instant::now();
        let out = output(command.arg(&path).arg("--").arg("touch").arg(&marker));
        assert_eq!(out.status.code(), Some(74), "{wait:?}: {}", stderr(&out));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "--wait {wait:?} retried an I/O error for {:?}",
            start.elapsed()
        );
        assert_io_error(&stderr(&out), &path.display().to_string(), reason);
        assert!(!marker.exists(), "the command ran without the lock");
        assert_left(&path, left);
    }

    // lockfile run --singleton: the plugin never starts.
    let marker = outside.join("ran");
    let out = output(lockctl_run(
        locks,
        &[
            "--singleton",
            "s.lock",
            "--dir",
            &format!("{}::/data", outside.display()),
        ],
        &["touch", "ran"],
    ));
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    assert_io_error(&stderr(&out), "'s.lock'", reason);
    assert_eq!(stdout(&out), "");
    assert!(!marker.exists(), "the plugin ran without its singleton");
    assert_left(&locks.join("s.lock"), left);

    // The plugin's own acquire: an error line, then the plugin goes on.
    let out = output(lockctl_run(
        locks,
        &[],
        &["lock", "x.lock", "{pid}", "0", "read", "x.lock"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    let printed = lines(&printed);
    assert_eq!(printed.len(), 2, "{printed:?}");
    assert!(
        printed[0].starts_with("error ")
            && printed[0].contains("'x.lock'")
            && printed[0].contains(reason),
        "{printed:?}"
    );
    match left {
        Left::EmptyFile => assert_eq!(printed[1], "content -", "no record was written"),
        Left::Nothing => assert!(
            printed[1].starts_with("error ") && printed[1].contains("No such file"),
            "{printed:?}"
        ),
    }
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_left(&locks.join("x.lock"), left);
}

/// A lock file that already has its block keeps working on a full disk: the
/// record is rewritten in place.
fn an_existing_lock_file_still_works(path: &Path) {
    let out = output(
        lockfile()
            .arg("exec")
            .arg(path)
            .args(["--", "cat"])
            .arg(path),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = stdout(&out);
    assert!(
        record.starts_with(' ') && record.ends_with('\n') && record.len() > 2,
        "{record:?}"
    );
    assert_eq!(contend(path), Try::Free);
}

#[test]
fn a_disk_out_of_blocks_fails_every_taker_with_no_lock_and_no_half_record() {
    let Some(fs) = Tmpfs::mount("disk out of blocks", "size=64k,mode=0755") else {
        return;
    };
    let locks = fs.path();
    fs::write(locks.join("old.lock"), " 1\n").unwrap();
    fill_blocks(locks);
    let outside = tempfile::tempdir().unwrap();
    // Creating the empty lock file succeeds; writing the record fails.
    every_taker_fails(locks, outside.path(), NO_SPACE, Left::EmptyFile);
    an_existing_lock_file_still_works(&locks.join("old.lock"));
}

#[test]
fn a_disk_out_of_inodes_fails_every_taker_and_creates_nothing() {
    let Some(fs) = Tmpfs::mount("disk out of inodes", "size=1m,nr_inodes=16,mode=0755") else {
        return;
    };
    let locks = fs.path();
    fs::write(locks.join("old.lock"), " 1\n").unwrap();
    fill_inodes(locks);
    let outside = tempfile::tempdir().unwrap();
    // Creating the lock file fails.
    every_taker_fails(locks, outside.path(), NO_SPACE, Left::Nothing);
    an_existing_lock_file_still_works(&locks.join("old.lock"));
}

#[test]
fn a_read_only_lock_directory_gives_clear_errors_and_inspect_still_reads() {
    let Some(fs) = Tmpfs::mount("read-only lock directory", "size=1m,mode=0755") else {
        return;
    };
    let locks = fs.path();
    let held = locks.join("held.lock");
    let new = locks.join("new.lock");
    fs::write(&held, " 4242\n").unwrap();
    fs.remount_read_only();
    let outside = tempfile::tempdir().unwrap();
    let marker = outside.path().join("ran");

    for path in [&held, &new] {
        let out = output(
            lockfile()
                .arg("exec")
                .arg(path)
                .arg("--")
                .arg("touch")
                .arg(&marker),
        );
        assert_eq!(out.status.code(), Some(74), "{path:?}: {}", stderr(&out));
        assert_io_error(&stderr(&out), &path.display().to_string(), READ_ONLY);
        assert!(!marker.exists(), "the command ran without the lock");
    }
    // A plugin would find no lock it could take there: refused before it
    // starts, naming the directory, with or without --singleton.
    for options in [&["--singleton", "held.lock"][..], &[]] {
        let mut options = options.to_vec();
        let data = format!("{}::/data", outside.path().display());
        options.extend(["--dir", &data]);
        let out = output(lockctl_run(locks, &options, &["touch", "ran"]));
        assert_eq!(out.status.code(), Some(74), "{options:?}: {}", stderr(&out));
        assert_io_error(
            &stderr(&out),
            &format!("--lock-dir '{}' cannot hold lock files", locks.display()),
            READ_ONLY,
        );
        assert!(!marker.exists(), "the plugin ran");
    }

    // inspect reads the record, and sees a lock taken through a read-only
    // descriptor (flock needs no write access).
    let out = output(lockfile().arg("inspect").arg(&held));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "content: 4242\nlocked: no\n");
    let reader = fs::File::open(&held).unwrap();
    reader.try_lock().unwrap();
    let out = output(lockfile().arg("inspect").arg(&held));
    // Unlocked explicitly: a child another test forks meanwhile shares the
    // descriptor until it execs, and would keep a merely closed lock.
    reader.unlock().unwrap();
    assert_eq!(
        stdout(&out),
        format!("content: 4242\nlocked: yes (pid {})\n", std::process::id())
    );

    assert_eq!(fs::read_to_string(&held).unwrap(), " 4242\n");
    assert!(!new.exists());
    assert_eq!(contend_read_only(&held), Try::Free);
}

#[test]
fn removing_the_lock_directory_under_a_plugin_gives_an_error_not_a_panic() {
    let root = tempfile::tempdir().unwrap();
    let (locks, data) = (root.path().join("locks"), root.path().join("data"));
    fs::create_dir(&locks).unwrap();
    fs::create_dir(&data).unwrap();
    let mut reaper = Reaper::default();
    let plugin = reaper.spawn(&mut lockctl_run(
        &locks,
        &["--dir", &format!("{}::/data", data.display())],
        &[
            "lock", "a.lock", "{pid}", "0", "touch", "locked", "await", "go", "lock", "b.lock",
            "{pid}", "0", "read", "a.lock",
        ],
    ));
    wait_until("the plugin's first lock", || data.join("locked").exists());
    assert_eq!(contend(&locks.join("a.lock")), Try::Held);
    fs::remove_dir_all(&locks).unwrap();
    fs::write(data.join("go"), "").unwrap();
    let done = reaper.finish(plugin, DEADLINE);
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(!done.stderr.contains("panicked"), "{}", done.stderr);
    let printed = lines(&done.stdout);
    assert_eq!(printed.len(), 3, "{printed:?}");
    assert_eq!(printed[0], format!("locked {plugin}"));
    for (line, name) in printed[1..].iter().zip(["'b.lock'", "'a.lock'"]) {
        assert!(
            line.starts_with("error ") && line.contains(name) && line.contains("No such file"),
            "{printed:?}"
        );
    }
    assert!(!locks.exists(), "the plugin recreated its lock directory");
}

/// One reader or taker run against an impostor; it panics if it misbehaves.
type Check<'a> = Box<dyn FnOnce() + 'a>;

/// What takes the place of the lock file.
#[derive(Clone, Copy, Debug)]
enum Impostor {
    Directory,
    Fifo,
    Socket,
}

/// Replaces a lock file that had a record with `impostor`, then runs every
/// reader and taker on it in turn, each under the deadline: each must fail
/// clearly (74 from the command, an `error` line from the plugin), run
/// nothing, and not hang. All failures are reported together.
fn every_taker_refuses(impostor: Impostor) {
    let root = tempfile::tempdir().unwrap();
    let (locks, data) = (root.path().join("locks"), root.path().join("data"));
    fs::create_dir(&locks).unwrap();
    fs::create_dir(&data).unwrap();
    let path = locks.join("job.lock");
    fs::write(&path, " 4242\n").unwrap();
    fs::remove_file(&path).unwrap();
    let _listener = match impostor {
        Impostor::Directory => {
            fs::create_dir(&path).unwrap();
            None
        }
        Impostor::Fifo => {
            let rc = unsafe { libc::mkfifo(c_path(&path).as_ptr(), 0o644) };
            assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
            None
        }
        Impostor::Socket => Some(std::os::unix::net::UnixListener::bind(&path).unwrap()),
    };
    let shown = path.display().to_string();
    let data_dir = format!("{}::/data", data.display());

    let checks: Vec<(&str, Check)> = vec![
        (
            "lockfile exec",
            Box::new(|| {
                let marker = data.join("exec-ran");
                let out = output(
                    lockfile()
                        .arg("exec")
                        .arg(&path)
                        .arg("--")
                        .arg("touch")
                        .arg(&marker),
                );
                assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
                assert_io_error(&stderr(&out), &shown, "");
                assert!(!marker.exists(), "the command ran");
            }),
        ),
        (
            "lockfile exec --no-content",
            Box::new(|| {
                let marker = data.join("exec-no-content-ran");
                let out = output(
                    lockfile()
                        .args(["exec", "--no-content"])
                        .arg(&path)
                        .arg("--")
                        .arg("touch")
                        .arg(&marker),
                );
                assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
                assert_io_error(&stderr(&out), &shown, "");
                assert!(!marker.exists(), "the command ran");
            }),
        ),
        (
            "lockfile inspect",
            Box::new(|| {
                let out = output(lockfile().arg("inspect").arg(&path));
                assert_eq!(
                    out.status.code(),
                    Some(74),
                    "{}{}",
                    stdout(&out),
                    stderr(&out)
                );
                assert_io_error(&stderr(&out), &shown, "");
            }),
        ),
        (
            "lockfile run --singleton",
            Box::new(|| {
                let out = output(lockctl_run(
                    &locks,
                    &["--singleton", "job.lock", "--dir", &data_dir],
                    &["touch", "singleton-ran"],
                ));
                assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
                assert_io_error(&stderr(&out), "'job.lock'", "");
                assert!(!data.join("singleton-ran").exists(), "the plugin ran");
            }),
        ),
        (
            "plugin lock",
            Box::new(|| {
                let out = output(lockctl_run(
                    &locks,
                    &[],
                    &["lock", "job.lock", "{pid}", "0"],
                ));
                assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
                let printed = stdout(&out);
                let printed = lines(&printed);
                assert!(
                    printed.len() == 1
                        && printed[0].starts_with("error ")
                        && printed[0].contains("'job.lock'"),
                    "{printed:?}"
                );
            }),
        ),
        (
            "plugin lock without content",
            Box::new(|| {
                let out = output(lockctl_run(&locks, &[], &["lock", "job.lock", "-", "0"]));
                assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
                let printed = stdout(&out);
                let printed = lines(&printed);
                assert!(
                    printed.len() == 1
                        && printed[0].starts_with("error ")
                        && printed[0].contains("'job.lock'"),
                    "{printed:?}"
                );
            }),
        ),
        (
            "plugin read",
            Box::new(|| {
                let out = output(lockctl_run(&locks, &[], &["read", "job.lock"]));
                assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
                let printed = stdout(&out);
                let printed = lines(&printed);
                assert!(
                    printed.len() == 1
                        && printed[0].starts_with("error ")
                        && printed[0].contains("'job.lock'"),
                    "{printed:?}"
                );
            }),
        ),
    ];
    // One after the other: a taker that wrongly succeeds, or one that locks
    // before failing to write, would make a concurrent one report 75.
    let failures: Vec<String> = checks
        .into_iter()
        .filter_map(|(name, check)| {
            let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).err()?;
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Some(format!("{name}: {message}"))
        })
        .collect();
    let kind = fs::symlink_metadata(&path).unwrap().file_type();
    let unchanged = match impostor {
        Impostor::Directory => kind.is_dir(),
        Impostor::Fifo => kind.is_fifo(),
        Impostor::Socket => kind.is_socket(),
    };
    let entries: Vec<PathBuf> = fs::read_dir(&locks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        failures.is_empty(),
        "{impostor:?} in place of the lock file:\n{}",
        failures.join("\n")
    );
    assert!(unchanged, "the {impostor:?} was replaced");
    assert_eq!(entries, [path], "something else was created");
}

#[test]
fn a_lock_file_replaced_by_a_directory_is_refused_by_everyone() {
    every_taker_refuses(Impostor::Directory);
}

#[test]
fn a_lock_file_replaced_by_a_fifo_is_refused_by_everyone_and_nothing_hangs() {
    every_taker_refuses(Impostor::Fifo);
}

#[test]
fn a_lock_file_replaced_by_a_socket_is_refused_by_everyone() {
    every_taker_refuses(Impostor::Socket);
}

/// Runs lockctl under `lockfile run` with `options` and `steps`, which must
/// end by touching `locked` and sleeping; kills `lockfile` with SIGKILL once
/// every lock in `held` is taken, and checks each is free at once.
fn a_killed_run_frees(options: &[&str], steps: &[&str], held: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let (locks, data) = (root.path().join("locks"), root.path().join("data"));
    fs::create_dir(&data).unwrap();
    let data_dir = format!("{}::/data", data.display());
    let options: Vec<&str> = options
        .iter()
        .copied()
        .chain(["--dir", &data_dir])
        .collect();
    let mut reaper = Reaper::default();
    let run = reaper.spawn(&mut lockctl_run(&locks, &options, steps));
    wait_until("the plugin to hold its locks", || {
        data.join("locked").exists()
    });
    for name in held {
        assert_eq!(
            contend(&locks.join(name)),
            Try::Held,
            "{name} before the kill"
        );
    }
    signal(run, libc::SIGKILL);
    let done = reaper.finish(run, DEADLINE);
    assert_eq!(done.status.signal(), Some(libc::SIGKILL), "{}", done.stderr);
    for name in held {
        assert_eq!(
            contend(&locks.join(name)),
            Try::Free,
            "{name} is still held after its holder was killed"
        );
    }
}

#[test]
fn sigkill_of_a_singleton_run_frees_the_singleton_at_once() {
    a_killed_run_frees(
        &["--singleton", "s.lock"],
        &["touch", "locked", "sleep", "60000"],
        &["s.lock"],
    );
}

#[test]
fn sigkill_of_a_plugin_holding_several_locks_frees_them_all_at_once() {
    a_killed_run_frees(
        &["--singleton", "s.lock"],
        &[
            "lock", "a.lock", "{pid}", "0", "lock", "b.lock", "{pid}", "0", "lock", "c.lock",
            "{pid}", "0", "touch", "locked", "sleep", "60000",
        ],
        &["s.lock", "a.lock", "b.lock", "c.lock"],
    );
}

/// Whether `pid` is still running after a short grace: a process closes its
/// files (freeing a lock it shares) a moment before /proc shows it exited.
fn still_running(pid: libc::pid_t) -> bool {
    let start = Instant::now();
    while is_running(pid) {
        if start.elapsed() > Duration::from_millis(200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Polls a contender on `path` until it takes the lock; whenever it does,
/// `command` must be gone. Returns how long that took; fails after 10 s,
/// saying how `lockfile` (`holder`, a child of `reaper` not yet finished)
/// ended.
fn contend_until_free(
    reaper: &mut Reaper,
    holder: Option<libc::pid_t>,
    path: &Path,
    command: libc::pid_t,
) -> Duration {
    let start = Instant::now();
    loop {
        let failure = match contend(path) {
            Try::Free if still_running(command) => format!(
                "the lock was free after {:?} while COMMAND (pid {command}) still ran",
                start.elapsed()
            ),
            Try::Free => return start.elapsed(),
            Try::Held if start.elapsed() > Duration::from_secs(10) => format!(
                "the lock is still held 10 s later; COMMAND (pid {command}) {}",
                if is_running(command) {
                    "still runs"
                } else {
                    "is gone"
                }
            ),
            Try::Held => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let lockfile = match holder {
            None => "had exited before".to_owned(),
            Some(holder) if is_running(holder) => format!("(pid {holder}) still runs"),
            Some(holder) => {
                let done = reaper.finish(holder, Duration::from_secs(1));
                format!(
                    "(pid {holder}) ended with {:?}, stderr {:?}",
                    done.status, done.stderr
                )
            }
        };
        panic!("{failure}; lockfile {lockfile}");
    }
}

/// `lockfile exec PATH -- sh -c SCRIPT`, where SCRIPT writes its pid with
/// `echo $$ > PIDFILE` (`{pidfile}` in `script`); returns both pids once the
/// command runs (and the lock is held). Every signal `lockfile` forwards is
/// reset to its default first, whatever this test process ignores.
fn spawn_exec(reaper: &mut Reaper, path: &Path, script: &str) -> (libc::pid_t, libc::pid_t) {
    let pidfile = path.with_extension("command-pid");
    let script = script.replace("{pidfile}", &format!("'{}'", pidfile.display()));
    let mut command = lockfile();
    command
        .arg("exec")
        .arg(path)
        .args(["--", "sh", "-c", &script]);
    unsafe {
        command.pre_exec(|| {
            for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let holder = reaper.spawn(&mut command);
    let command = read_pid_file(&pidfile);
    reaper.adopt(command);
    assert_eq!(contend(path), Try::Held, "COMMAND runs without the lock");
    (holder, command)
}

/// A signal sent to `lockfile exec` reaches COMMAND; the lock stays held until
/// COMMAND has exited; `lockfile` exits with COMMAND's status, 128+N.
fn a_signal_is_forwarded_and_the_lock_outlives_the_command(signo: libc::c_int) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let mut reaper = Reaper::default();
    let (holder, command) = spawn_exec(&mut reaper, &path, "echo $$ > {pidfile}; exec sleep 30");
    signal(holder, signo);
    contend_until_free(&mut reaper, Some(holder), &path, command);
    let done = reaper.finish(holder, DEADLINE);
    assert_eq!(
        done.status.code(),
        Some(128 + signo),
        "lockfile ended with {:?}; stderr {:?}",
        done.status,
        done.stderr
    );
}

#[test]
fn exec_forwards_sigterm_and_holds_the_lock_until_the_command_is_gone() {
    a_signal_is_forwarded_and_the_lock_outlives_the_command(libc::SIGTERM);
}

#[test]
fn exec_forwards_sigint_and_holds_the_lock_until_the_command_is_gone() {
    a_signal_is_forwarded_and_the_lock_outlives_the_command(libc::SIGINT);
}

#[test]
fn exec_forwards_sighup_and_holds_the_lock_until_the_command_is_gone() {
    a_signal_is_forwarded_and_the_lock_outlives_the_command(libc::SIGHUP);
}

#[test]
fn exec_forwards_sigquit_and_holds_the_lock_until_the_command_is_gone() {
    a_signal_is_forwarded_and_the_lock_outlives_the_command(libc::SIGQUIT);
}

#[test]
fn a_command_that_ignores_sigterm_keeps_the_lock_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let mut reaper = Reaper::default();
    let (holder, command) = spawn_exec(
        &mut reaper,
        &path,
        "trap '' TERM; echo $$ > {pidfile}; sleep 1",
    );
    signal(holder, libc::SIGTERM);
    let held_for = contend_until_free(&mut reaper, Some(holder), &path, command);
    assert!(
        held_for >= Duration::from_millis(700),
        "the lock was free {held_for:?} after SIGTERM, while COMMAND ran on for about 1 s"
    );
    let done = reaper.finish(holder, DEADLINE);
    assert_eq!(
        done.status.code(),
        Some(0),
        "{:?} {}",
        done.status,
        done.stderr
    );
}

#[test]
fn sigkill_of_exec_leaves_the_lock_with_the_command_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let mut reaper = Reaper::default();
    let (holder, command) = spawn_exec(&mut reaper, &path, "echo $$ > {pidfile}; exec sleep 30");
    signal(holder, libc::SIGKILL);
    let done = reaper.finish(holder, DEADLINE);
    assert_eq!(done.status.signal(), Some(libc::SIGKILL));
    // COMMAND inherited the lock's open file description, as under flock(1).
    for _ in 0..20 {
        assert!(is_running(command), "COMMAND died with lockfile");
        assert_eq!(
            contend(&path),
            Try::Held,
            "the lock was free while COMMAND (pid {command}) still ran, after lockfile was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(command, libc::SIGKILL);
    let start = Instant::now();
    wait_until("the lock to be free once COMMAND is killed", || {
        contend(&path) == Try::Free
    });
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_background_child_that_kept_the_descriptor_keeps_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let mut reaper = Reaper::default();
    // COMMAND exits at once; the sleep it started in the background keeps the
    // inherited descriptor, so the lock stays held until the sleep ends.
    let (holder, background) = spawn_exec(&mut reaper, &path, "sleep 1 & echo $! > {pidfile}");
    let done = reaper.finish(holder, DEADLINE);
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    let held_for = contend_until_free(&mut reaper, None, &path, background);
    assert!(
        held_for >= Duration::from_millis(500),
        "free {held_for:?} after COMMAND exited, while its background child ran for about 1 s"
    );
}

/// The children of `pid`'s main thread, from /proc.
fn children(pid: libc::pid_t) -> Vec<libc::pid_t> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|child| child.parse().unwrap())
        .collect()
}

#[test]
fn a_signal_as_soon_as_the_command_exists_is_forwarded_too() {
    // Signalled the moment COMMAND exists, before it could have written
    // anything: `lockfile` must already forward, not die of the signal and
    // leave COMMAND holding the lock, unsignalled, for its whole run.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    for _ in 0..10 {
        let mut reaper = Reaper::default();
        let mut command = lockfile();
        command.arg("exec").arg(&path).args(["--", "sleep", "30"]);
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                Ok(())
            });
        }
        let holder = reaper.spawn(&mut command);
        let mut started = Vec::new();
        wait_until("COMMAND to exist", || {
            started = children(holder);
            !started.is_empty()
        });
        let command = started[0];
        reaper.adopt(command);
        signal(holder, libc::SIGTERM);
        contend_until_free(&mut reaper, Some(holder), &path, command);
        let done = reaper.finish(holder, DEADLINE);
        assert_eq!(
            done.status.code(),
            Some(128 + libc::SIGTERM),
            "lockfile ended with {:?}; stderr {:?}",
            done.status,
            done.stderr
        );
    }
}
