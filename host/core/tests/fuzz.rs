//! Property tests ("fuzzing" on stable Rust) of the two parsers that take
//! input from plugins: content templates and lock paths.
//!
//! Each property runs `LOCKFILE_FUZZ_CASES` cases (default 50,000, about ten
//! seconds); run them longer with, for example,
//! `LOCKFILE_FUZZ_CASES=2000000 cargo test --release -p lockfile-core --test fuzz`.

use std::fs::{File, OpenOptions};
use std::path::{Component, Path, PathBuf};

use lockfile_core::{Error, LockOptions, MAX_RECORD, check_lock_path};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("LOCKFILE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Templates built from the pieces that matter (braces, known and unknown
/// fields, line breaks, multi-byte text) and arbitrary text, some long.
fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        Just("{pid}".to_owned()),
        Just("{hostname}".to_owned()),
        Just("{plugin}".to_owned()),
        Just("{pid:>5}".to_owned()),
        Just("\n".to_owned()),
        Just("\r".to_owned()),
        Just("é".to_owned()),
        "[a-z;/ ]{0,8}",
        any::<String>(),
        "x{0,1100}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// A file to lock that each case reuses: opening is not what is tested.
fn lock_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.lock");
    (dir, path)
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

proptest! {
    #![proptest_config(config())]

    /// Any template and field values either are refused before the file is
    /// opened, or write exactly one line of at most MAX_RECORD bytes.
    #[test]
    fn templates_render_one_bounded_line_or_are_refused(
        template in template(),
        plugin in prop_oneof![Just(String::new()), "[a-z]{1,12}", any::<String>(), "y{0,1100}"],
        hostname in prop_oneof!["[a-z.-]{1,20}", any::<String>()],
    ) {
        let (_dir, path) = lock_file();
        let mut opened = false;
        let result = LockOptions::new()
            .content_template(template.clone())
            .field("plugin", plugin)
            .hostname(hostname)
            .lock_with(&path, || {
                opened = true;
                open(&path)
            });
        match result {
            Ok(lock) => {
                let bytes = std::fs::read(&path).unwrap();
                prop_assert!(bytes.len() <= MAX_RECORD, "{} bytes", bytes.len());
                prop_assert_eq!(bytes[0], b' ');
                prop_assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
                prop_assert_eq!(bytes.last(), Some(&b'\n'));
                prop_assert!(!bytes.contains(&b'\r'));
                let content = lock.content().unwrap();
                let record = format!(" {content}\n");
                prop_assert_eq!(record.as_bytes(), &bytes[..]);
            }
            Err(Error::InvalidTemplate(error)) => {
                prop_assert!(!opened, "refused after opening: {}", error);
                prop_assert!(!path.exists());
                // The message quotes at most the template's start.
                prop_assert!(error.to_string().len() < 600, "{}", error.to_string().len());
            }
            Err(other) => prop_assert!(false, "unexpected error: {other}"),
        }
    }

    /// No accepted lock path leads outside its directory, however its `.` and
    /// `..` are resolved, and every refusal is an error, never a panic.
    #[test]
    fn accepted_lock_paths_stay_beneath_the_directory(
        path in proptest::collection::vec(
            prop_oneof![
                Just("..".to_owned()), Just(".".to_owned()), Just("".to_owned()),
                Just("/".to_owned()), Just("\0".to_owned()), Just("a".to_owned()),
                "[a-z.]{1,4}", any::<String>(), "z{250,260}",
            ],
            0..10,
        ).prop_map(|parts| parts.join("/")),
    ) {
        if check_lock_path(&path).is_err() {
            return Ok(());
        }
        prop_assert!(!path.is_empty() && !path.starts_with('/') && !path.contains('\0'));
        prop_assert!(path.len() <= lockfile_core::MAX_LOCK_PATH);
        let mut depth = 0usize;
        for component in Path::new(&path).components() {
            match component {
                Component::Normal(_) => depth += 1,
                Component::CurDir => {}
                Component::ParentDir => {
                    prop_assert!(depth > 0, "{path:?} climbs out");
                    depth -= 1;
                }
                Component::RootDir | Component::Prefix(_) => prop_assert!(false, "{path:?}"),
            }
        }
    }
}
