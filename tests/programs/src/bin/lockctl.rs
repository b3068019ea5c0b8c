//! Runs lock steps given as arguments, printing one line per step, so tests can
//! script a plugin. Steps:
//!
//! - `lock PATH TEMPLATE WAIT_MS` (TEMPLATE `-`: no content) -> `locked CONTENT` or `error DISPLAY`
//! - `release` the newest held lock -> `released`
//! - `held` -> `held true` or `held false` for the newest held lock; `token`
//!   -> `token N` (its fencing token) or `token -`
//! - `await-lost` waits until the newest held lock is no longer held -> `lost`,
//!   or `still held` after 60 s (a test fails rather than hangs)
//! - `keep-released PATH` takes PATH through the raw interface (template
//!   `{pid}`, one try), releases it and keeps the handle undropped until the
//!   plugin ends -> `kept-released` or `error DEBUG`. lockfile-guest's
//!   `release` consumes and drops its handle, so only the raw binding (module
//!   `raw` below) can show that a released handle still counts towards
//!   `too-many-locks` until it is dropped.
//! - `raw-held PATH` takes PATH through the raw interface (template `{pid}`,
//!   one try) and says whether the handle holds it before and after its
//!   `release` -> `held true`, `held false`, then `token N` or `token -`
//!   (what the released handle still reports), or `error DEBUG`
//! - `read PATH` -> `content CONTENT`, `content -` or `error DISPLAY`
//! - `await FILE` waits until `/data/FILE` exists; `touch FILE` creates it
//! - `increment PATH COUNTER` spins until PATH is locked, then adds 1 to `/data/COUNTER`
//! - `hold-many N` locks `many-0` .. `many-N-1` and keeps them -> `held K` then `error ...` if any failed
//! - `create-many N` locks and releases `new-0` .. `new-N-1`, creating each
//!   file -> `created K` then `error ...` if one failed
//! - `cycles N PATH` N acquire+release cycles -> `cycle-ns NANOS` per cycle
//! - `tries N PATH` N failed tries on a held PATH -> `try-ns NANOS` per try
//! - `cat FILE` -> `file CONTENT` or `error ...`; `write FILE TEXT` -> `wrote` or `error ...`
//! - `now` -> `now NANOS`, the wall clock in ns since the Unix epoch: the one
//!   clock two plugin processes share, for handover benchmarks; `life FILE`
//!   appends it to `/data/FILE` every 20 ms, forever: signs of life
//! - `taken-at` -> `now NANOS`, the wall clock read as the newest `lock` step
//!   returned, before it printed anything: when a waiter started to hold
//! - `released-at` -> `now NANOS`, the wall clock read just before the newest
//!   `release` step called the host: when a holder started to let go
//! - `sleep MS`; `spin` loops forever without calling the host; `alloc MIB`
//!   allocates and touches that much memory -> `allocated`
//! - `env` -> `env N`, the number of environment variables the plugin sees
//! - `trap` aborts the plugin while it holds its locks; `exit` exits without
//!   running destructors, leaving its handles to the host; `exit-code N`
//!   exits with status N through `lockfile_guest::exit`
//!
//! In PATH, `\0` stands for a NUL character.

use std::time::{Duration, Instant};

use lockfile_guest::{Error, LockFile, LockOptions, read_content};

/// The interface itself, beside lockfile-guest's own bindings, for
/// `keep-released`. Its own type-section suffix keeps the linker from merging
/// its type information with lockfile-guest's.
mod raw {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "imports",
        type_section_suffix: "lockctl-raw",
    });
}
use raw::lockfile::lockfile::lockfile as wit;

fn options(template: &str, wait_ms: &str) -> LockOptions {
    let options = match template {
        "-" => LockOptions::new().no_content(),
        template => LockOptions::new().content_template(template),
    };
    options.wait(Duration::from_millis(wait_ms.parse().expect("WAIT_MS")))
}

fn decode(path: &str) -> String {
    path.replace("\\0", "\0")
}

fn wall_clock_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
}

fn data(file: &str) -> String {
    format!("/data/{file}")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args = args.iter().map(String::as_str);
    let mut held: Vec<LockFile> = Vec::new();
    let mut kept: Vec<wit::Lock> = Vec::new();
    let mut taken_at = None;
    let mut released_at = None;
    // Read the clock once before any step: the first read pages in the host's
    // clock code (3 page faults, 15-20 µs measured with ftrace), which would
    // otherwise land inside the first `taken-at` or `released-at` interval.
    std::hint::black_box(wall_clock_ns());
    while let Some(step) = args.next() {
        let mut arg = || {
            args.next()
                .unwrap_or_else(|| panic!("{step}: missing argument"))
        };
        match step {
            "lock" => {
                let path = decode(arg());
                let (template, wait) = (arg(), arg());
                match options(template, wait).lock(&path) {
                    Ok(lock) => {
                        taken_at = Some(wall_clock_ns());
                        println!("locked {}", lock.content().unwrap_or_else(|| "-".into()));
                        held.push(lock);
                    }
                    Err(error) => println!("error {error}"),
                }
            }
            "release" => {
                let lock = held.pop().expect("nothing held");
                released_at = Some(wall_clock_ns());
                lock.release();
                println!("released");
            }
            "held" => println!("held {}", held.last().expect("nothing held").held()),
            "token" => match held.last().expect("nothing held").fencing_token() {
                Some(token) => println!("token {token}"),
                None => println!("token -"),
            },
            "await-lost" => {
                let lock = held.last().expect("nothing held");
                let start = Instant::now();
                while lock.held() && start.elapsed() < Duration::from_secs(60) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                println!("{}", if lock.held() { "still held" } else { "lost" });
            }
            "keep-released" => {
                let options = wit::Options {
                    content_template: Some("{pid}".into()),
                    wait_ms: 0,
                };
                match wit::Lock::acquire(&decode(arg()), &options) {
                    Ok(handle) => {
                        handle.release();
                        println!("kept-released");
                        kept.push(handle);
                    }
                    Err(error) => println!("error {error:?}"),
                }
            }
            "raw-held" => {
                let options = wit::Options {
                    content_template: Some("{pid}".into()),
                    wait_ms: 0,
                };
                match wit::Lock::acquire(&decode(arg()), &options) {
                    Ok(handle) => {
                        println!("held {}", handle.held());
                        handle.release();
                        println!("held {}", handle.held());
                        match handle.fencing_token() {
                            Some(token) => println!("token {token}"),
                            None => println!("token -"),
                        }
                    }
                    Err(error) => println!("error {error:?}"),
                }
            }
            "env" => println!("env {}", std::env::vars_os().count()),
            "read" => match read_content(&decode(arg())) {
                Ok(content) => println!("content {}", content.unwrap_or_else(|| "-".into())),
                Err(error) => println!("error {error}"),
            },
            "await" => {
                let file = data(arg());
                while std::fs::metadata(&file).is_err() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            "touch" => std::fs::write(data(arg()), "").unwrap(),
            "increment" => {
                let (path, counter) = (arg(), data(arg()));
                let lock = loop {
                    match LockFile::lock(path) {
                        Ok(lock) => break lock,
                        Err(Error::Locked { .. }) => std::thread::yield_now(),
                        Err(other) => panic!("{other}"),
                    }
                };
                let n: u32 = std::fs::read_to_string(&counter)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                std::thread::sleep(Duration::from_micros(100));
                std::fs::write(&counter, (n + 1).to_string()).unwrap();
                lock.release();
            }
            "hold-many" => {
                let n: u32 = arg().parse().unwrap();
                let mut error = None;
                for i in 0..n {
                    match LockFile::lock(&format!("many-{i}")) {
                        Ok(lock) => held.push(lock),
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                println!("held {}", held.len());
                if let Some(error) = error {
                    println!("error {error}");
                }
            }
            "create-many" => {
                let n: u32 = arg().parse().unwrap();
                let mut created = 0;
                let mut error = None;
                for i in 0..n {
                    match LockFile::lock(&format!("new-{i}")) {
                        Ok(lock) => {
                            lock.release();
                            created += 1;
                        }
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                println!("created {created}");
                if let Some(error) = error {
                    println!("error {error}");
                }
            }
            "cycles" => {
                let (n, path): (u32, _) = (arg().parse().unwrap(), arg());
                let start = Instant::now();
                for _ in 0..n {
                    LockFile::lock(path).unwrap().release();
                }
                println!("cycle-ns {}", start.elapsed().as_nanos() / u128::from(n));
            }
            "tries" => {
                let (n, path): (u32, _) = (arg().parse().unwrap(), arg());
                let start = Instant::now();
                for _ in 0..n {
                    assert!(matches!(LockFile::lock(path), Err(Error::Locked { .. })));
                }
                println!("try-ns {}", start.elapsed().as_nanos() / u128::from(n));
            }
            "cat" => match std::fs::read_to_string(arg()) {
                Ok(content) => println!("file {}", content.trim_end()),
                Err(error) => println!("error {error}"),
            },
            "write" => {
                let (file, text) = (arg(), arg());
                match std::fs::write(file, text) {
                    Ok(()) => println!("wrote"),
                    Err(error) => println!("error {error}"),
                }
            }
            "now" => println!("now {}", wall_clock_ns()),
            "life" => {
                use std::io::Write;
                let mut life = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(data(arg()))
                    .unwrap();
                loop {
                    writeln!(life, "{}", wall_clock_ns()).unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            "taken-at" => println!("now {}", taken_at.expect("taken-at: no lock taken")),
            "released-at" => {
                println!(
                    "now {}",
                    released_at.expect("released-at: nothing released")
                )
            }
            "sleep" => std::thread::sleep(Duration::from_millis(arg().parse().unwrap())),
            "spin" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mib: usize = arg().parse().unwrap();
                let memory = vec![1u8; mib << 20];
                std::hint::black_box(&memory);
                println!("allocated");
            }
            "trap" => std::process::abort(),
            "exit" => std::process::exit(0),
            "exit-code" => lockfile_guest::exit(arg().parse().expect("exit-code N: 0 to 255")),
            other => panic!("unknown step {other}"),
        }
    }
}
