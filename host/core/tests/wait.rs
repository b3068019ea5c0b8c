//! Waiting for a lock, with real files and real processes: a waiter is handed
//! the lock when its holder releases (by closing, or by unlocking alone, which
//! only the fallback poll notices), gives up on its limit and never before,
//! never takes the lock after it gave up, and a single try pays for no watch.
//!
//! No test asserts how fast anything is, only generous upper bounds for
//! liveness; `measure_waiting` (ignored) prints the figures:
//! `cargo test -p lockfile-core --release --test wait -- --ignored --nocapture`.

use std::fs::File;
#[cfg(unix)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use lockfile_core::{Attempt, ReleaseWatch};
use lockfile_core::{Error, FALLBACK_POLL, LockFile, LockOptions};

/// Far longer than any handover: only a hang reaches it.
const LIVENESS: Duration = Duration::from_secs(5);
/// The wait of waiters that are expected to get the lock.
const LONG_WAIT: Duration = Duration::from_secs(30);

fn lock_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    (dir, path)
}

fn open(path: &Path) -> File {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

fn wait_for(path: &Path, wait: Duration) -> Result<LockFile, Error> {
    LockOptions::new().wait(wait).lock(path)
}

#[cfg(unix)]
fn is_held(path: &Path) -> bool {
    matches!(LockFile::lock(path), Err(Error::Locked { .. }))
}

/// Starts a waiter on `path`, makes sure it is waiting, runs `release`, and
/// returns the waiter's lock: it must get it, well within [`LIVENESS`].
fn handed_over(path: &Path, release: impl FnOnce()) -> LockFile {
    thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let lock = wait_for(path, LONG_WAIT);
            (lock, Instant::now())
        });
        thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "the waiter must still be waiting");
        let released = Instant::now();
        release();
        let (lock, taken) = waiter.join().unwrap();
        assert!(taken.duration_since(released) < LIVENESS);
        lock.expect("the waiter gets the lock")
    })
}

#[test]
fn a_waiter_gets_the_lock_when_a_lockfile_in_this_process_is_released() {
    let (_dir, path) = lock_path();
    let holder = LockFile::lock(&path).unwrap();
    let lock = handed_over(&path, || holder.release());
    assert_eq!(
        lock.content(),
        Some(std::process::id().to_string().as_str())
    );
}

#[test]
fn a_waiter_gets_the_lock_when_a_plain_file_holding_it_is_closed() {
    let (_dir, path) = lock_path();
    let holder = open(&path);
    holder.lock().unwrap();
    // Closing without unlocking: the kernel releases the lock on the last close.
    handed_over(&path, || drop(holder));
}

/// Runs `command`, which prints a line once it holds the lock, and returns it
/// once it has; `None` (and the test is skipped) if the program is missing.
#[cfg(unix)]
fn holder_process(command: &mut Command) -> Option<Child> {
    let mut child = match command.stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: {command:?} is not installed");
            return None;
        }
        Err(e) => panic!("{command:?}: {e}"),
    };
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked", "{command:?}");
    Some(child)
}

/// A holder in another process that releases by exiting, as a crashed or
/// finished zc.lockfile user does: the lock goes with its last close.
/// Unix: the holders are Python's fcntl.flock and flock(1); on Windows,
/// tests/processes.rs has a holder in another process.
#[cfg(unix)]
#[test]
fn a_waiter_gets_the_lock_when_a_python_holder_exits() {
    let (_dir, path) = lock_path();
    drop(open(&path));
    let script = "import fcntl, sys, time\n\
                  f = open(sys.argv[1], 'r+')\n\
                  fcntl.flock(f, fcntl.LOCK_EX)\n\
                  print('locked', flush=True)\n\
                  time.sleep(0.3)\n";
    let Some(mut child) = holder_process(Command::new("python3").arg("-c").arg(script).arg(&path))
    else {
        return;
    };
    assert!(is_held(&path));
    let lock = wait_for(&path, LONG_WAIT).expect("handed over when python exits");
    assert!(child.wait().unwrap().success());
    drop(lock);
}

/// flock(1) from util-linux: the lock is held by flock while its command runs
/// (the command's exit is a close too, but not the last one).
#[cfg(unix)]
#[test]
fn a_waiter_gets_the_lock_when_flock_1_exits() {
    let (_dir, path) = lock_path();
    let Some(mut child) = holder_process(Command::new("flock").arg(&path).args([
        "sh",
        "-c",
        "echo locked; sleep 0.3",
    ])) else {
        return;
    };
    assert!(is_held(&path));
    let lock = wait_for(&path, LONG_WAIT).expect("handed over when flock exits");
    assert!(child.wait().unwrap().success());
    drop(lock);
}

/// A holder that unlocks and keeps the file open sends no event: the waiter
/// gets the lock through the fallback poll. A second watch on the same file
/// proves that no close happened at all while it waited.
#[cfg(target_os = "linux")]
#[test]
fn an_unlock_without_a_close_is_noticed_by_the_fallback_poll() {
    let (_dir, path) = lock_path();
    let holder = open(&path);
    holder.try_lock().unwrap();
    let mut observer = ReleaseWatch::new(&holder).unwrap();
    let lock = handed_over(&path, || holder.unlock().unwrap());
    assert_eq!(
        observer.drain().unwrap(),
        0,
        "a close would have woken the waiter: this handover must be the fallback poll's"
    );
    drop(lock);
    drop(holder);
}

/// A waiter that gave up is done: the lock released right after it returned
/// is free for everyone else, every time.
#[test]
fn a_waiter_that_gave_up_never_takes_the_lock_later() {
    let (_dir, path) = lock_path();
    for holder_closes in [true, false] {
        let holder = open(&path);
        holder.try_lock().unwrap();
        let gave_up =
            thread::scope(|scope| scope.spawn(|| wait_for(&path, FALLBACK_POLL * 2)).join())
                .unwrap();
        assert!(
            matches!(gave_up, Err(Error::TimedOut { .. })),
            "{gave_up:?}"
        );
        // Release the way that wakes waiters, and the way that only their
        // poll notices.
        if holder_closes {
            drop(holder);
        } else {
            holder
                .unlock()
                .or_else(|error| match error.raw_os_error() {
                    // Wine answers the second of the two UnlockFile calls of
                    // std's Windows unlock with ERROR_LOCK_VIOLATION rather
                    // than ERROR_NOT_LOCKED, after the first has unlocked.
                    Some(33) if cfg!(windows) => Ok(()),
                    _ => Err(error),
                })
                .unwrap();
        }
        let end = Instant::now() + FALLBACK_POLL * 6;
        let mut tries = 0;
        while Instant::now() < end {
            let lock =
                LockFile::lock(&path).expect("nobody holds the lock once the waiter gave up");
            drop(lock);
            tries += 1;
        }
        assert!(tries > 0);
    }
}

#[test]
fn a_wait_lasts_its_limit_then_fails_with_the_holder() {
    let (_dir, path) = lock_path();
    let _holder = LockFile::lock(&path).unwrap();
    for limit in [
        Duration::from_millis(200),
        Duration::from_millis(73),
        Duration::from_micros(300),
    ] {
        let start = Instant::now();
        let error = wait_for(&path, limit).unwrap_err();
        let elapsed = start.elapsed();
        let Error::TimedOut { holder, waited, .. } = error else {
            panic!("{error:?}");
        };
        assert_eq!(holder, Some(std::process::id().to_string()));
        assert_eq!(waited, limit);
        assert!(elapsed >= limit, "gave up after {elapsed:?} of {limit:?}");
        assert!(elapsed < limit + LIVENESS);
    }
}

/// A host's own wait loop, as the async host runs one: watch before the
/// first try, try on every close.
#[cfg(target_os = "linux")]
#[test]
fn a_host_waits_with_the_pending_locks_watch() {
    let (_dir, path) = lock_path();
    let holder = LockFile::lock(&path).unwrap();
    let mut pending = LockOptions::new()
        .wait(LONG_WAIT)
        .prepare(&path, || Ok(open(&path)))
        .unwrap();
    let mut watch = pending.release_watch().unwrap();
    pending = match pending.try_lock().unwrap() {
        Attempt::Held(pending) => pending,
        Attempt::Taken(_) => panic!("held"),
    };
    drop(holder);
    assert!(watch.wait(LIVENESS).unwrap(), "the release is a close");
    assert!(matches!(pending.try_lock().unwrap(), Attempt::Taken(_)));
}

#[cfg(target_os = "linux")]
#[path = "support/inotify.rs"]
mod inotify;

#[cfg(target_os = "linux")]
mod single_try {
    use super::inotify::{inotify_instances, watches_in_inotify_instances};
    use super::*;

    /// Set in the copy of this test binary that `a_single_try_creates_no_watch` runs.
    const CHILD: &str = "LOCKFILE_WAIT_TEST_CHILD";

    /// A single try must cost no more than its system calls: no inotify instance.
    /// Checked in a child process of its own (other tests here do wait): it
    /// counts its inotify descriptors, then forbids inotify with seccomp, so that
    /// even an instance made and closed within a try would kill it. A wait keeps
    /// its instance for the next one, which reuses it under the filter; a
    /// second watch at once needs a new instance and is killed, which shows
    /// the check works.
    #[test]
    fn a_single_try_creates_no_watch() {
        if let Ok(task) = std::env::var(CHILD) {
            return child(&task);
        }
        let (_dir, path) = lock_path();
        let _holder = LockFile::lock(&path).unwrap();
        let run = |mode: &str| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "single_try::a_single_try_creates_no_watch",
                    "--exact",
                    "--nocapture",
                ])
                .arg("--test-threads=1")
                .env(CHILD, format!("{mode}:{}", path.display()))
                .output()
                .unwrap()
        };
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

        let tries = run("tries");
        let (stdout, stderr) = (text(&tries.stdout), text(&tries.stderr));
        assert!(
            tries.status.success(),
            "{}\n{stdout}\n{stderr}",
            tries.status
        );
        if stdout.contains("skipped") {
            eprintln!("skipped: {stdout}");
            return;
        }
        assert!(
            stdout.contains("2000 single tries, no inotify instance"),
            "{stdout}"
        );

        let wait = run("wait");
        let (stdout, stderr) = (text(&wait.stdout), text(&wait.stderr));
        assert!(
            stdout.contains("a wait holds one inotify instance, then keeps it for the next"),
            "{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("the next wait reused it"),
            "{stdout}\n{stderr}"
        );
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            wait.status.signal(),
            Some(libc::SIGSYS),
            "a new instance under the seccomp filter must be killed: {}\n{stdout}",
            wait.status
        );
    }

    /// The child's side of `a_single_try_creates_no_watch`.
    fn child(task: &str) {
        let (mode, path) = task.split_once(':').unwrap();
        let path = Path::new(path);
        assert_eq!(inotify_instances(), 0);
        match mode {
            "tries" => {
                for _ in 0..1000 {
                    assert!(is_held(path));
                }
                assert_eq!(inotify_instances(), 0);
                if let Err(e) = forbid_inotify() {
                    println!("skipped: no seccomp here ({e})");
                    return;
                }
                for _ in 0..1000 {
                    assert!(is_held(path));
                }
                println!("2000 single tries, no inotify instance");
            }
            "wait" => {
                thread::scope(|scope| {
                    let waiter = scope.spawn(|| wait_for(path, Duration::from_secs(1)));
                    while inotify_instances() == 0 {
                        assert!(!waiter.is_finished(), "the wait made no watch");
                        thread::sleep(Duration::from_millis(1));
                    }
                    assert_eq!(inotify_instances(), 1);
                    let result = waiter.join().unwrap();
                    assert!(matches!(result, Err(Error::TimedOut { .. })));
                });
                // The instance is kept for the next wait rather than closed
                // (closing takes the kernel milliseconds, and piled-up closes
                // exhaust the user's instances), its watch still in it: waking
                // a thread to remove it would cost the waiter that returns with
                // the lock (on a VM, an interrupt to the other CPU). Still one,
                // watching, well after the wait ended.
                thread::sleep(Duration::from_millis(50));
                assert_eq!(inotify_instances(), 1);
                assert_eq!(watches_in_inotify_instances(), 1);
                println!("a wait holds one inotify instance, then keeps it for the next");
                // Another lock file, held here (flock excludes a second open
                // file description even in the same process).
                let other = path.with_file_name("other.lock");
                let _other_held = LockFile::lock(&other).unwrap();
                forbid_inotify().unwrap();
                // Creating an instance now kills the process: the next wait
                // must take the kept one, its old watch removed (the other
                // file's watch is a new one): one instance, one watch.
                let result = wait_for(&other, Duration::from_millis(10));
                assert!(matches!(result, Err(Error::TimedOut { .. })));
                assert_eq!(inotify_instances(), 1);
                assert_eq!(watches_in_inotify_instances(), 1);
                println!("the next wait reused it");
                // Two watches at once need a second instance: this is killed,
                // which shows the filter works.
                let file = open(path);
                let _first = ReleaseWatch::new(&file);
                let _second = ReleaseWatch::new(&file);
                println!("the second watch was not killed");
            }
            _ => unreachable!("{mode}"),
        }
    }

    /// From now on any thread of this process that creates an inotify instance
    /// kills the process with SIGSYS (without a core dump).
    fn forbid_inotify() -> std::io::Result<()> {
        use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, sock_filter};
        let mut forbidden = vec![libc::SYS_inotify_init1];
        #[cfg(target_arch = "x86_64")]
        forbidden.push(libc::SYS_inotify_init);
        let statement = |code: u32, k: u32| sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        // Load the syscall number (`seccomp_data.nr`, at offset 0); each match
        // jumps to the last instruction (kill); no match falls through to allow.
        let mut filter = vec![statement(BPF_LD | BPF_W | BPF_ABS, 0)];
        let n = forbidden.len();
        for (i, nr) in forbidden.iter().enumerate() {
            filter.push(sock_filter {
                code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
                jt: (n - i) as u8,
                jf: 0,
                k: *nr as u32,
            });
        }
        filter.push(statement(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
        filter.push(statement(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS));
        let program = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        let check = |result: i64| {
            if result < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: plain prctl/seccomp calls; `program` points to `filter`, which
        // outlives them.
        unsafe {
            check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0).into())?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())?;
            check(libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &program,
            ))
        }
    }
}

/// What waiting costs and how fast it hands over, the way it waits now and
/// the way it did before (polling with a backoff from 20 µs to 500 µs):
/// `cargo test -p lockfile-core --release --test wait -- --ignored --nocapture`.
#[cfg(target_os = "linux")]
mod measure {
    use super::*;

    /// The wait before release watches: lockfile-core 0.1's `Backoff`.
    fn polling_wait(path: &Path, wait: Duration) -> Result<LockFile, Error> {
        let mut pending = LockOptions::new()
            .wait(wait)
            .prepare(path, || Ok(open(path)))?;
        let start = Instant::now();
        let mut next = Duration::from_micros(20);
        loop {
            pending = match pending.try_lock()? {
                Attempt::Taken(lock) => return Ok(lock),
                Attempt::Held(pending) => pending,
            };
            let Some(left) = wait.checked_sub(start.elapsed()).filter(|d| !d.is_zero()) else {
                return Err(pending.into_error());
            };
            thread::sleep(next.min(left));
            next = (next * 2).min(Duration::from_micros(500));
        }
    }

    type Waiter = fn(&Path, Duration) -> Result<LockFile, Error>;
    const WAITERS: [(&str, Waiter); 2] = [
        ("before (polling)", polling_wait),
        ("now (watch)", wait_for),
    ];

    /// This thread's CPU time and voluntary context switches (its sleeps).
    fn thread_usage() -> (Duration, i64) {
        // SAFETY: getrusage fills the struct it is given.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
            usage
        };
        let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        (time(usage.ru_utime) + time(usage.ru_stime), usage.ru_nvcsw)
    }

    fn percentile(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        values[((values.len() - 1) as f64 * q).round() as usize]
    }

    #[test]
    #[ignore = "a measurement: run it with --ignored --nocapture, in release mode"]
    fn measure_waiting() {
        let (_dir, path) = lock_path();
        let hold = Duration::from_secs(3);
        println!("one waiter behind a {hold:?} holder:");
        for (name, waiter) in WAITERS {
            let holder = LockFile::lock(&path).unwrap();
            let (cpu, wakeups) = thread::scope(|scope| {
                let waiting = scope.spawn(|| {
                    let (cpu, switches) = thread_usage();
                    let lock = waiter(&path, LONG_WAIT).unwrap();
                    let (cpu_after, switches_after) = thread_usage();
                    drop(lock);
                    (cpu_after - cpu, switches_after - switches)
                });
                thread::sleep(hold);
                drop(holder);
                waiting.join().unwrap()
            });
            println!(
                "  {name:18} {wakeups:6} wakeups ({:.1}/s), {:.1} ms CPU ({:.3}% of a core)",
                wakeups as f64 / hold.as_secs_f64(),
                cpu.as_secs_f64() * 1e3,
                cpu.as_secs_f64() / hold.as_secs_f64() * 100.0
            );
        }

        let rounds = 200;
        println!("handover, holder releases -> waiter holds, {rounds} rounds:");
        for (name, waiter) in WAITERS {
            let mut micros: Vec<f64> = (0..rounds)
                .map(|round| {
                    let holder = LockFile::lock(&path).unwrap();
                    let started = std::sync::Barrier::new(2);
                    thread::scope(|scope| {
                        let waiting = scope.spawn(|| {
                            started.wait();
                            let lock = waiter(&path, LONG_WAIT).unwrap();
                            let taken = Instant::now();
                            drop(lock);
                            taken
                        });
                        // Hold for 0.2 to 5 ms from the waiter's start (not
                        // from its spawn, which can take milliseconds on a
                        // busy machine), as bench's handovers do.
                        started.wait();
                        thread::sleep(Duration::from_micros(200 + (round * 7919) % 4800));
                        let released = Instant::now();
                        drop(holder);
                        let taken = waiting.join().unwrap();
                        taken.duration_since(released).as_secs_f64() * 1e6
                    })
                })
                .collect();
            let p50 = percentile(&mut micros, 0.5);
            let p99 = percentile(&mut micros, 0.99);
            let max = percentile(&mut micros, 1.0);
            println!("  {name:18} p50 {p50:7.1} µs, p99 {p99:7.1} µs, max {max:7.1} µs");
        }
    }
}
