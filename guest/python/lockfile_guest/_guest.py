"""The library itself; see the package's documentation. It imports the
bindings componentize-py generates, so it loads inside a component only."""


import sys
from typing import NoReturn, Optional

from componentize_py_types import Err
from wit_world.imports import exit as _exit
from wit_world.imports import lockfile as _wit
from wit_world.imports import lockfile_lockfile_types as _types


class LockError(Exception):
    """Couldn't get a lock, worded like zc.lockfile's LockError.

    `holder` is what the holder wrote into the file, or None.
    """

    def __init__(self, message: str, holder: Optional[str] = None):
        super().__init__(message)
        self.holder = holder


def _duration(ms: int) -> str:
    """`ms` as the Rust guest library prints a wait: 50ms, 1.5s, 3600s."""
    if ms < 1000:
        return f"{ms}ms"
    return f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"


def _error(path: str, error: object) -> Exception:
    value = getattr(error, "value", None)
    if isinstance(error, _types.Error_TimedOut):
        held_by = f": held by {value.holder}" if value.holder else ""
        return LockError(
            f"Couldn't lock {path!r} within {_duration(value.waited_ms)}{held_by}", value.holder
        )
    held_by = f": held by {value}" if value else ""
    if isinstance(error, _types.Error_Locked):
        return LockError(f"Couldn't lock {path!r}{held_by}", value)
    if isinstance(error, _types.Error_InvalidTemplate):
        return ValueError(value)
    if isinstance(error, _types.Error_NotPermitted):
        return PermissionError(f"not permitted: {value}")
    if isinstance(error, _types.Error_TooManyLocks):
        return OSError(f"too many locks: this plugin may hold {value}")
    return OSError(value)


class LockFile:
    """An exclusive lock on `path`, released by close() or at the end of a with block.

    content_template: what to write after a space ({pid}, {hostname}, {plugin};
    None writes nothing, like zc.lockfile's SimpleLockFile). wait: seconds to keep
    trying while someone else holds it (0, the default, tries once).
    """

    def __init__(self, path: str, content_template: Optional[str] = "{pid}", wait: float = 0):
        options = _types.Options(content_template=content_template, wait_ms=int(wait * 1000))
        try:
            self._lock: Optional[_wit.Lock] = _wit.Lock.acquire(path, options)
        except Err as error:
            raise _error(path, error.value) from None
        self.path = path
        self.content = self._lock.content()
        # This acquisition's fencing token (None for lock files, which issue
        # none): pass it to what the lock protects, which refuses lower ones.
        self.fencing_token = self._lock.fencing_token()

    @property
    def held(self) -> bool:
        """Whether the lock is still held: False once closed, or once lost (a
        lock the host keeps in a database can be; the host notices within
        seconds)."""
        return self._lock is not None and self._lock.held()

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


class Command:
    """A plugin's `wasi:cli/run` export: subclass it as `Run` in the module
    componentize-py builds, and write `main`.

    `run` calls `main`, then flushes stdout. An exception that escapes `main`
    would trap the component (a panic and a wasm backtrace, status 134): here
    a LockError prints its message on stderr and exits 75 (EX_TEMPFAIL), and
    any other exception prints `TypeName: message` and exits 1. SystemExit
    exits with its code, as in Python.
    """

    def main(self) -> None:
        raise NotImplementedError("write the plugin's main() in your Run class")

    def run(self) -> None:
        try:
            self.main()
        except LockError as error:
            _fail(str(error), 75)
        except SystemExit as request:
            code = request.code
            if code is None or isinstance(code, int):
                exit(code or 0)
            _fail(str(code), 1)
        except BaseException as error:  # noqa: BLE001 - anything else would trap
            _fail(f"{type(error).__name__}: {error}", 1)
        sys.stdout.flush()


def _fail(message: str, code: int) -> NoReturn:
    sys.stdout.flush()
    print(message, file=sys.stderr)
    exit(code)


def exit(code: int) -> NoReturn:
    """Ends the plugin with exit status `code` (0-255), which `lockfile run`
    exits with: 75, EX_TEMPFAIL, says "held, try again later". The host
    releases every lock the plugin still holds."""
    sys.stdout.flush()
    sys.stderr.flush()
    _exit.exit_with_code(code)
    raise SystemExit(code)  # not reached: the host ends the plugin
