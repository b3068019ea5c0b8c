"""zc.lockfile's lock files for Python plugins, over the lockfile:lockfile WIT interface.

    from lockfile import LockFile, LockError

    with LockFile("job.lock") as lock:      # " <pid>\n" written into the file
        print("holding", lock.path, "as", lock.content)

    try:
        LockFile("job.lock", content_template="{plugin}@{hostname}", wait=3.0)
    except LockError as error:
        print(error)                         # Couldn't lock 'job.lock': held by ...
        print(error.holder)

Paths are relative to the lock directory the host gave the plugin.
"""

from typing import Optional

from componentize_py_types import Err
from wit_world.imports import lockfile as _wit


class LockError(Exception):
    """Couldn't get a lock, worded like zc.lockfile's LockError.

    `holder` is what the holder wrote into the file, or None.
    """

    def __init__(self, message: str, holder: Optional[str] = None):
        super().__init__(message)
        self.holder = holder


def _error(path: str, error: object) -> Exception:
    value = getattr(error, "value", None)
    held_by = f": held by {value}" if value else ""
    if isinstance(error, _wit.Error_Locked):
        return LockError(f"Couldn't lock {path!r}{held_by}", value)
    if isinstance(error, _wit.Error_TimedOut):
        return LockError(f"Couldn't lock {path!r} in time{held_by}", value)
    if isinstance(error, _wit.Error_InvalidTemplate):
        return ValueError(value)
    if isinstance(error, _wit.Error_NotPermitted):
        return PermissionError(f"not permitted: {value}")
    if isinstance(error, _wit.Error_TooManyLocks):
        return OSError(f"too many locks: this plugin may hold {value}")
    return OSError(value)


class LockFile:
    """An exclusive lock on `path`, released by close() or at the end of a with block.

    content_template: what to write after a space ({pid}, {hostname}, {plugin};
    None writes nothing, like zc.lockfile's SimpleLockFile). wait: seconds to keep
    trying while someone else holds it (0, the default, tries once).
    """

    def __init__(self, path: str, content_template: Optional[str] = "{pid}", wait: float = 0):
        options = _wit.Options(content_template=content_template, wait_ms=int(wait * 1000))
        try:
            self._lock: Optional[_wit.Lock] = _wit.Lock.acquire(path, options)
        except Err as error:
            raise _error(path, error.value) from None
        self.path = path
        self.content = self._lock.content()

    def close(self) -> None:
        """Releases the lock; closing twice does nothing."""
        if self._lock is not None:
            self._lock.release()
            self._lock.__exit__(None, None, None)
            self._lock = None

    def __enter__(self) -> "LockFile":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_content(path: str) -> Optional[str]:
    """What the holder of `path` wrote, without taking the lock."""
    try:
        return _wit.read_content(path)
    except Err as error:
        raise _error(path, error.value) from None
