//! A plugin built against `lockfile:lockfile@0.1.0`, the first released
//! version (its frozen text is `wit/compat/lockfile-0.1.0.wit`), through raw
//! bindings rather than lockfile-guest (which imports 0.2.0), so that tests
//! can show hosts still serve it. Steps, one line each:
//!
//! - `lock PATH TEMPLATE WAIT_MS` (TEMPLATE `-`: no content) -> `locked
//!   CONTENT`, `locked -`, or the error: `locked-by HOLDER`, `timed-out
//!   HOLDER` (HOLDER `-` when none), or `error DEBUG` for the others
//! - `release` the newest held lock -> `released`
//! - `read PATH` -> `content CONTENT`, `content -` or `error DEBUG`

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit", "../../wit/compat/lockfile-0.1.0.wit"],
        world: "lockfile:lockfile/imports@0.1.0",
    });
}

use bindings::lockfile::lockfile0_1_0::lockfile as wit;

fn or_dash(text: Option<String>) -> String {
    text.unwrap_or_else(|| "-".into())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args = args.iter().map(String::as_str);
    let mut held: Vec<wit::Lock> = Vec::new();
    while let Some(step) = args.next() {
        let mut arg = || {
            args.next()
                .unwrap_or_else(|| panic!("{step}: missing argument"))
        };
        match step {
            "lock" => {
                let path = arg();
                let options = wit::Options {
                    content_template: match arg() {
                        "-" => None,
                        template => Some(template.into()),
                    },
                    wait_ms: arg().parse().expect("WAIT_MS"),
                };
                match wit::Lock::acquire(path, &options) {
                    Ok(lock) => {
                        println!("locked {}", or_dash(lock.content()));
                        held.push(lock);
                    }
                    Err(wit::Error::Locked(holder)) => println!("locked-by {}", or_dash(holder)),
                    Err(wit::Error::TimedOut(holder)) => println!("timed-out {}", or_dash(holder)),
                    Err(other) => println!("error {other:?}"),
                }
            }
            "release" => {
                held.pop().expect("nothing held").release();
                println!("released");
            }
            "read" => match wit::read_content(arg()) {
                Ok(content) => println!("content {}", or_dash(content)),
                Err(error) => println!("error {error:?}"),
            },
            other => panic!("unknown step {other}"),
        }
    }
}
