//! A job that must never run twice at once: it works only while it holds
//! `job.lock`, and otherwise reports who holds it and exits 75 (EX_TEMPFAIL,
//! "try again later", as `lockfile run --singleton` does), which
//! `lockfile_guest::exit` carries to the host.
//!
//! Usage: `singleton-job [STEPS]` (default 5 steps of 200 ms).

use std::process::ExitCode;
use std::time::Duration;

use lockfile_guest::{Error, LockOptions};

fn main() -> ExitCode {
    let steps: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let lock = match LockOptions::new()
        .content_template("{plugin} on {hostname}, pid {pid}")
        .lock("job.lock")
    {
        Ok(lock) => lock,
        Err(error @ Error::Locked { .. }) => {
            eprintln!("{error}");
            // `ExitCode::from(75)` would reach the host as 1.
            lockfile_guest::exit(75);
        }
        Err(error) => {
            eprintln!("singleton-job: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("working as {}", lock.content().unwrap_or_default());
    for step in 1..=steps {
        std::thread::sleep(Duration::from_millis(200));
        println!("step {step}/{steps} done");
    }
    lock.release();
    println!("done, lock released");
    ExitCode::SUCCESS
}
