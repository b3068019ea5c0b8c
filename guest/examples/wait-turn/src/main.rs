//! Several instances share one resource: each waits up to 30 s for
//! `turn.lock`, works while holding it, and hands it to the next.
//!
//! Usage: `wait-turn [WORK_MS]` (default 300).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use lockfile_guest::{LockOptions, read_content};

fn main() -> ExitCode {
    let work = Duration::from_millis(
        std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    let name = std::env::args().next().unwrap_or_default();
    if let Ok(Some(holder)) = read_content("turn.lock") {
        println!("{name}: last holder was {holder}");
    }
    let asked = Instant::now();
    let lock = match LockOptions::new()
        .content_template("{plugin}")
        .wait(Duration::from_secs(30))
        .lock("turn.lock")
    {
        Ok(lock) => lock,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{name}: my turn after {} ms", asked.elapsed().as_millis());
    std::thread::sleep(work);
    lock.release();
    println!("{name}: done");
    ExitCode::SUCCESS
}
