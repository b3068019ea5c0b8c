"""A Python plugin scripted by its arguments, like the Rust test program lockctl:

  lock PATH TEMPLATE WAIT_MS   -> "locked CONTENT" or "error MESSAGE" (TEMPLATE "-": no content)
  release                      -> "released"
  read PATH                    -> "content CONTENT" or "content -"
  hold MS                      keep everything held for MS milliseconds
  exit CODE                    exit with status CODE, through lockfile_guest.exit
"""

import sys
import time

import lockfile_guest
from lockfile_guest import LockError, LockFile, read_content
from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        args = sys.argv[1:]
        held = []
        while args:
            step, args = args[0], args[1:]
            if step == "lock":
                path, template, wait_ms, args = args[0], args[1], int(args[2]), args[3:]
                try:
                    lock = LockFile(path, None if template == "-" else template, wait_ms / 1000)
                except LockError as error:
                    print("error", error, flush=True)
                    continue
                held.append(lock)
                print("locked", lock.content if lock.content is not None else "-", flush=True)
            elif step == "release":
                held.pop().close()
                print("released", flush=True)
            elif step == "read":
                content, args = read_content(args[0]), args[1:]
                print("content", content if content is not None else "-", flush=True)
            elif step == "hold":
                time.sleep(int(args[0]) / 1000)
                args = args[1:]
            elif step == "exit":
                lockfile_guest.exit(int(args[0]))
            else:
                raise ValueError(f"unknown step {step}")
        for lock in held:
            lock.close()
