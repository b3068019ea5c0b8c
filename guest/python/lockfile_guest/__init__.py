"""zc.lockfile's lock files for Python plugins, over the lockfile:lockfile WIT interface.

    from lockfile_guest import Command, LockFile, LockError

    class Run(Command):                      # the plugin's wasi:cli/run export
        def main(self) -> None:
            with LockFile("job.lock") as lock:   # " <pid>\n" written into the file
                print("holding", lock.path, "as", lock.content)

An uncaught LockError ends the plugin with its one line on stderr
(`Couldn't lock 'job.lock': held by 7633`) and exit status 75, "held, try
later"; any other uncaught exception with `TypeName: message` and 1. Or catch
it yourself:

    try:
        LockFile("job.lock", content_template="{plugin}@{hostname}", wait=3.0)
    except LockError as error:
        print(error)                         # Couldn't lock 'job.lock' within 3s: held by ...
        print(error.holder)
        exit(75)                             # lockfile run exits 75

Paths are relative to the lock directory the host gave the plugin. Built
against lockfile:lockfile@0.2.0, world `plugin`, whose WIT this package
carries: `python -m lockfile_guest --wit` prints its directory, for
componentize-py's `-d`. The module imports the bindings componentize-py
generates from it (`wit_world`), so it runs inside a component only.
"""

__all__ = ["Command", "LockError", "LockFile", "exit", "read_content"]

try:
    from ._guest import Command, LockError, LockFile, exit, read_content
except ModuleNotFoundError as missing:
    # Outside a component (`python -m lockfile_guest --wit`, an editor): the
    # bindings componentize-py generates do not exist there.
    if missing.name not in ("wit_world", "componentize_py_types"):
        raise
    _outside = missing

    def __getattr__(name: str):
        raise ImportError(
            f"lockfile_guest.{name} works inside a component only: build the plugin with "
            "componentize-py -d \"$(python -m lockfile_guest --wit)\" -w lockfile:lockfile/plugin"
        ) from _outside
