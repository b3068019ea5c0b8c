//! Nothing another user planted runs or gets overwritten: a compile cache
//! entry under a plugin's key that someone else could have written is never
//! loaded, and a link at a lock path never gets the file it points at
//! written, truncated or read.
//!
//! Another user is `nobody` (uid 65534): as root these tests give files to it
//! with chown, as an attacker's own files would be. Without root the tests
//! that need chown say so on stderr and check nothing.

#[allow(dead_code)]
mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use common::{lockctl_run, lockfile, output, stderr, stdout};
use lockfile_tests::{LOCKCTL_COMPONENT, SINGLETON_JOB_COMPONENT};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Gives `path` itself (not what a link points at) to `nobody`.
fn give_to_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// `lockfile compile --cache-dir CACHE PLUGIN`: the entry's path.
fn compile(cache: &Path, plugin: &str) -> PathBuf {
    let out = output(
        lockfile()
            .arg("compile")
            .arg("--cache-dir")
            .arg(cache)
            .arg(plugin),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    PathBuf::from(stdout(&out).trim())
}

/// A cache in which lockctl's key holds singleton-job's compiled code: what
/// an attacker who can write the cache would plant. `plant` then makes the
/// entry or the directory untrusted in one way.
struct Planted {
    root: tempfile::TempDir,
    cache: PathBuf,
    entry: PathBuf,
    planted: Vec<u8>,
}

impl Planted {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("cache");
        let other = compile(&cache, SINGLETON_JOB_COMPONENT);
        let entry = compile(&cache, LOCKCTL_COMPONENT);
        fs::rename(&other, &entry).unwrap();
        let planted = fs::read(&entry).unwrap();
        Self {
            root,
            cache,
            entry,
            planted,
        }
    }

    /// Runs lockctl with this cache: it prints `locked mine` if its own code
    /// runs; singleton-job's prints `working as ...`.
    fn run(&self, verbose: bool) -> std::process::Output {
        let mut command = lockfile();
        command.arg("run");
        if verbose {
            command.arg("-v");
        }
        command
            .arg("--lock-dir")
            .arg(self.root.path().join("locks"))
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg(LOCKCTL_COMPONENT)
            .args(["lock", "a.lock", "mine", "0"]);
        output(command)
    }

    /// The plugin's own code ran, with one warning naming `named` and saying
    /// `why`; the planted entry is still there, unchanged.
    fn assert_refused(&self, named: &Path, why: &str) {
        let out = self.run(false);
        let err = stderr(&out);
        assert_eq!(
            (out.status.code(), stdout(&out).as_str()),
            (Some(0), "locked mine\n"),
            "the planted code ran: {err}"
        );
        let warnings: Vec<&str> = err.lines().collect();
        assert_eq!(warnings.len(), 1, "one warning line: {err}");
        let warning = warnings[0];
        assert!(
            warning.contains("running uncached: not trusting the compile cache: ")
                && warning.contains(&format!("'{}'", named.display()))
                && warning.contains(why),
            "{warning}"
        );
        assert_eq!(fs::read(&self.entry).unwrap(), self.planted, "changed");
    }
}

#[test]
fn a_planted_entry_runs_only_when_this_user_alone_could_have_written_it() {
    let planted = Planted::new();
    // The control: the same entry, ours and 0600 in our 0700 directory, is
    // trusted, so the refusals below are the checks at work.
    let out = planted.run(true);
    assert!(
        stdout(&out).starts_with("working as "),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("compile cache hit: {}", planted.entry.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn another_users_entry_under_the_plugins_key_is_not_run() {
    if !is_root() {
        eprintln!("skipped: giving a file to another user needs root");
        return;
    }
    let planted = Planted::new();
    give_to_nobody(&planted.entry);
    planted.assert_refused(&planted.entry, "belongs to uid 65534");
}

#[test]
fn a_group_or_world_writable_entry_is_not_run() {
    let planted = Planted::new();
    for writable in [0o620, 0o602, 0o666] {
        chmod(&planted.entry, writable);
        planted.assert_refused(
            &planted.entry,
            &format!("can be written by others than its owner (mode {writable:04o})"),
        );
    }
}

#[test]
fn a_group_or_world_writable_cache_directory_is_not_used() {
    let planted = Planted::new();
    // 1777 is /tmp's mode: a shared directory anyone can add entries to.
    for writable in [0o770, 0o707, 0o1777] {
        chmod(&planted.cache, writable);
        planted.assert_refused(
            &planted.cache,
            &format!("can be written by others than its owner (mode {writable:04o})"),
        );
    }
}

#[test]
fn another_users_cache_directory_is_not_used() {
    if !is_root() {
        eprintln!("skipped: giving a directory to another user needs root");
        return;
    }
    let planted = Planted::new();
    give_to_nobody(&planted.cache);
    planted.assert_refused(&planted.cache, "belongs to uid 65534");
}

#[test]
fn a_symbolic_link_in_place_of_an_entry_is_not_followed() {
    let planted = Planted::new();
    let elsewhere = planted.root.path().join("elsewhere.cwasm");
    fs::rename(&planted.entry, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &planted.entry).unwrap();
    let out = planted.run(false);
    assert_eq!(stdout(&out), "locked mine\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a symbolic link, which the cache never follows"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn a_new_cache_directory_is_private_and_its_entries_too() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("made/by/compile");
    let entry = compile(&cache, LOCKCTL_COMPONENT);
    assert_eq!(entry.parent(), Some(cache.as_path()));
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&root.path().join("made")), 0o700);
    assert_eq!(mode(&entry), 0o600);
    // Only the entry: no partial file is left behind.
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
}

#[test]
fn compile_refuses_a_cache_directory_others_can_write() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("shared");
    fs::create_dir(&cache).unwrap();
    chmod(&cache, 0o1777);
    let out = output(
        lockfile()
            .arg("compile")
            .arg("--cache-dir")
            .arg(&cache)
            .arg(LOCKCTL_COMPONENT),
    );
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "lockfile: not trusting the compile cache: cache directory '{}' can be written by \
             others than its owner (mode 1777): anyone could plant code in it; `chmod go-w` it \
             or use a directory of your own\n",
            cache.display()
        )
    );
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 0, "stored anyway");
}

/// How a link at the lock path was made.
#[derive(Clone, Copy, Debug)]
enum Link {
    /// A symbolic link, made by `nobody` in a sticky world-writable directory.
    Symbolic,
    /// A second hard link to the file.
    Hard,
}

const PRECIOUS: &[u8] = b"root's own file\nthat no lock may touch\n";

/// Puts a `link` to a file of root's at `shared/job.lock`, `shared` being
/// mode 1777 as /tmp is, then runs every taker and reader on it: each must
/// fail with one line (74 from the command, an `error` line from a plugin),
/// run nothing, and leave the file byte for byte as it was.
fn every_taker_leaves_the_target_alone(link: Link) {
    let root = tempfile::tempdir().unwrap();
    let shared = root.path().join("shared");
    fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let target = root.path().join("precious");
    fs::write(&target, PRECIOUS).unwrap();
    chmod(&target, 0o600);
    let path = shared.join("job.lock");
    let why = match link {
        Link::Symbolic => {
            std::os::unix::fs::symlink(&target, &path).unwrap();
            if is_root() {
                give_to_nobody(&path);
            }
            "is a symbolic link"
        }
        Link::Hard => {
            fs::hard_link(&target, &path).unwrap();
            "it has 2 hard links"
        }
    };
    let marker = root.path().join("ran");
    let shown = format!("'{}'", path.display());

    let one_line = |out: &std::process::Output, named: &str| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(74), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("lockfile: ") && err.contains(named) && err.contains(why),
            "{err}"
        );
    };
    let exec = output(
        lockfile()
            .arg("exec")
            .arg(&path)
            .arg("--")
            .arg("touch")
            .arg(&marker),
    );
    one_line(&exec, &shown);
    let exec = output(
        lockfile()
            .args(["exec", "--no-content", "--wait", "1s"])
            .arg(&path)
            .arg("--")
            .arg("touch")
            .arg(&marker),
    );
    one_line(&exec, &shown);
    let inspect = output(lockfile().arg("inspect").arg(&path));
    one_line(&inspect, &shown);
    assert_eq!(stdout(&inspect), "", "inspect showed the target");
    let singleton = output(lockctl_run(
        &shared,
        &["--singleton", "job.lock"],
        &["lock", "other.lock", "ran", "0"],
    ));
    one_line(&singleton, "'job.lock'");
    assert_eq!(stdout(&singleton), "", "the plugin ran");
    // A plugin's own lock and read, confined to the directory by cap-std: a
    // symbolic link leading out of it is refused as such; a hard link by
    // the rule above.
    let plugin = output(lockctl_run(
        &shared,
        &[],
        &["lock", "job.lock", "{pid}", "0", "read", "job.lock"],
    ));
    assert_eq!(plugin.status.code(), Some(0), "{}", stderr(&plugin));
    let printed = stdout(&plugin);
    let printed: Vec<&str> = printed.lines().collect();
    assert!(
        printed.len() == 2 && printed.iter().all(|line| line.starts_with("error ")),
        "{printed:?}"
    );

    assert!(!marker.exists(), "a command ran");
    assert_eq!(fs::read(&target).unwrap(), PRECIOUS, "the target changed");
    assert_eq!(mode(&target), 0o600);
}

#[test]
fn a_symbolic_link_at_the_lock_path_leaves_its_target_unchanged() {
    every_taker_leaves_the_target_alone(Link::Symbolic);
}

#[test]
fn a_hard_link_at_the_lock_path_leaves_the_file_unchanged() {
    every_taker_leaves_the_target_alone(Link::Hard);
}
