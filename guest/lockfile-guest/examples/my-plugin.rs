fn main() {
    lockfile_guest::command(|| {
        let lock = lockfile_guest::LockFile::lock("my.lock")?;
        println!("holding {}", lock.path());
        Ok(())
    })
}
