from lockfile_guest import Command, LockFile


class Run(Command):
    def main(self) -> None:
        with LockFile("my.lock") as lock:
            print("holding", lock.path)
