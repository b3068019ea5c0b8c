//! zc.lockfile's behaviours, checked from inside a plugin through the guest
//! library. Prints `ok NAME` for each; any failure panics (a trap). The host
//! names this plugin `zc-behaviour` and its hostname `myhostname`.

use lockfile_guest::{Error, LockFile, LockOptions, read_content};

fn check(name: &str, test: impl FnOnce()) {
    test();
    println!("ok {name}");
}

fn main() {
    check("second-lock-fails", || {
        let lock = LockFile::lock("lock").unwrap();
        let content = lock.content().unwrap();
        assert!(content.parse::<u32>().is_ok(), "{content}");
        let error = LockFile::lock("lock").unwrap_err();
        assert_eq!(
            error,
            Error::Locked {
                path: "lock".into(),
                holder: Some(content.clone())
            }
        );
        assert_eq!(
            error.to_string(),
            format!("Couldn't lock 'lock': held by {content}")
        );
        assert_eq!(lock.path(), "lock");
    });
    check("file-left-and-relock", || {
        assert!(read_content("lock").unwrap().is_some());
        LockFile::lock("lock").unwrap().release();
        let again = LockFile::lock("lock").unwrap();
        drop(again);
        LockFile::lock("lock").unwrap();
    });
    check("pid-slash-hostname", || {
        let lock = LockOptions::new()
            .content_template("{pid}/{hostname}")
            .lock("host.lock")
            .unwrap();
        let content = lock.content().unwrap();
        let (pid, host) = content.split_once('/').unwrap();
        assert!(pid.parse::<u32>().is_ok());
        assert_eq!(host, "myhostname");
        assert_eq!(read_content("host.lock").unwrap(), Some(content));
    });
    check("plugin-field", || {
        let lock = LockOptions::new()
            .content_template("{plugin};{{x}}")
            .lock("plugin.lock")
            .unwrap();
        assert_eq!(lock.content().as_deref(), Some("zc-behaviour;{x}"));
    });
    check("empty-template", || {
        let lock = LockOptions::new()
            .content_template("")
            .lock("empty.lock")
            .unwrap();
        assert_eq!(lock.content().as_deref(), Some(""));
        assert_eq!(read_content("empty.lock").unwrap(), None);
    });
    check("no-content-keeps-content", || {
        LockOptions::new()
            .content_template("kept")
            .lock("simple.lock")
            .unwrap()
            .release();
        let lock = LockOptions::new().no_content().lock("simple.lock").unwrap();
        assert_eq!(lock.content(), None);
        assert!(matches!(
            LockFile::lock("simple.lock"),
            Err(Error::Locked { .. })
        ));
        assert_eq!(
            read_content("simple.lock").unwrap().as_deref(),
            Some("kept")
        );
    });
    check("bad-template-creates-nothing", || {
        let error = LockOptions::new()
            .content_template("{foo}")
            .lock("bad.lock")
            .unwrap_err();
        assert!(
            matches!(&error, Error::InvalidTemplate(m) if m.contains("{foo}")),
            "{error:?}"
        );
        assert!(matches!(read_content("bad.lock"), Err(Error::Io { .. })));
    });
    check("release-twice", || {
        let lock = LockFile::lock("twice.lock").unwrap();
        lock.release();
        LockFile::lock("twice.lock").unwrap();
    });
}
