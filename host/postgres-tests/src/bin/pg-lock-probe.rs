//! A second process for the tests and the handover benchmark; not a tool.
//!
//! ```text
//! pg-lock-probe [--url URL] [--namespace NS] [--wait-ms N] [--lease-ms N] [--record R] COMMAND NAME [ARGS]
//!   hold NAME             take the lock, print "locked TOKEN", hold it until stdin closes, release
//!   try NAME              take the lock, print "locked TOKEN", release it
//!   count NAME FILE N     N times: take the lock (waiting), add 1 to the number in FILE, release
//!   handover NAME         per line "go" on stdin: take the lock (waiting), print the wall clock in
//!                         ns, release; for the handover benchmark
//! ```
//!
//! The URL defaults to `$LOCKFILE_TEST_DB`. `--lease-ms` sets a short lease,
//! with the heartbeat every tenth of it, answered within three tenths, and a
//! stop notice of three tenths. Exit status: 0, 75 when the lock
//! is held (or the wait ran out), 74 for other lock errors, 64 for usage.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockfile_postgres::{Error, PgLocker};

struct Args {
    url: String,
    namespace: String,
    wait: Duration,
    lease: Option<Duration>,
    record: Option<String>,
    rest: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        url: std::env::var("LOCKFILE_TEST_DB").unwrap_or_default(),
        namespace: lockfile_postgres::DEFAULT_NAMESPACE.to_owned(),
        wait: Duration::ZERO,
        lease: None,
        record: Some(std::process::id().to_string()),
        rest: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => parsed.url = value()?,
            "--namespace" => parsed.namespace = value()?,
            "--wait-ms" => {
                let ms = value()?.parse().map_err(|e| format!("--wait-ms: {e}"))?;
                parsed.wait = Duration::from_millis(ms);
            }
            "--lease-ms" => {
                let ms = value()?.parse().map_err(|e| format!("--lease-ms: {e}"))?;
                parsed.lease = Some(Duration::from_millis(ms));
            }
            "--record" => parsed.record = Some(value()?),
            "--no-record" => parsed.record = None,
            _ => parsed.rest.push(arg),
        }
    }
    Ok(parsed)
}

fn status(error: &Error) -> u8 {
    match error {
        Error::Lock(
            lockfile_core::Error::Locked { .. } | lockfile_core::Error::TimedOut { .. },
        ) => 75,
        Error::InvalidUrl { .. }
        | Error::Name(_)
        | Error::InvalidNamespace { .. }
        | Error::InvalidSettings { .. } => 64,
        _ => 74,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("pg-lock-probe: {message}");
            return ExitCode::from(64);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(status(&error))
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let mut builder = PgLocker::builder(&args.url).namespace(&args.namespace);
    if let Some(lease) = args.lease {
        builder = builder
            .heartbeat(lease / 10, lease * 3 / 10)
            .lease(lease, lease * 3 / 10);
    }
    let locker = builder.connect().await?;
    let rest: Vec<&str> = args.rest.iter().map(String::as_str).collect();
    let out = &mut std::io::stdout();
    match rest.as_slice() {
        ["hold", name] => {
            let lock = locker.acquire(name, args.record, args.wait).await?;
            let _ = writeln!(out, "locked {}", lock.token());
            let _ = out.flush();
            // Hold until stdin closes (the test drops its end, or kills us).
            // A thread of its own: the runtime would wait for a blocking task.
            let (closed_tx, stdin) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let mut sink = String::new();
                while std::io::stdin().lock().read_line(&mut sink).unwrap_or(0) > 0 {}
                let _ = closed_tx.send(());
            });
            tokio::select! {
                _ = stdin => {}
                reason = lock.lost_notify() => {
                    let _ = writeln!(out, "lost {reason}");
                    let _ = out.flush();
                }
            }
            lock.release().await?;
            let _ = writeln!(out, "released");
        }
        ["try", name] => {
            let lock = locker.acquire(name, args.record, args.wait).await?;
            let _ = writeln!(out, "locked {}", lock.token());
            lock.release().await?;
        }
        ["count", name, file, times] => {
            let times: u32 = times.parse().expect("a count");
            for _ in 0..times {
                let lock = locker
                    .acquire(name, args.record.clone(), Duration::from_secs(60))
                    .await?;
                let value: u64 = std::fs::read_to_string(file)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .unwrap_or(0);
                // Widen the window in which an unlocked increment would be lost.
                tokio::time::sleep(Duration::from_millis(1)).await;
                std::fs::write(file, format!("{}\n", value + 1)).expect("write the counter");
                lock.release().await?;
            }
        }
        ["handover", name] => {
            let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    if lines_tx.send(line.unwrap_or_default()).is_err() {
                        break;
                    }
                }
            });
            while let Some(line) = lines.recv().await {
                if line.trim() != "go" {
                    continue;
                }
                let lock = locker
                    .acquire(name, args.record.clone(), Duration::from_secs(30))
                    .await?;
                let taken = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("after 1970");
                lock.release().await?;
                let _ = writeln!(out, "{}", taken.as_nanos());
                let _ = out.flush();
            }
        }
        _ => {
            eprintln!(
                "usage: pg-lock-probe [--url URL] [--namespace NS] [--wait-ms N] [--lease-ms N] [--record R|--no-record] hold|try|count|handover NAME ..."
            );
            std::process::exit(64);
        }
    }
    Ok(())
}
