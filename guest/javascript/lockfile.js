// zc.lockfile's lock files for JavaScript plugins, over the lockfile:lockfile
// WIT interface.
//
//   import { LockFile, LockError, command } from "lockfile-guest";
//   export const run = command(() => {              // the plugin's wasi:cli/run
//     const lock = LockFile.lock("job.lock");        // " <pid>\n" written into the file
//     try { LockFile.lock("job.lock"); } catch (e) { // e instanceof LockError
//       console.log(e.message, e.holder);            // Couldn't lock 'job.lock': held by ...
//     }
//     lock.release();
//   });
//
// An uncaught LockError ends the plugin with its one line on stderr and exit
// status 75, "held, try later"; any other uncaught error with `Name: message`
// and 1. Paths are relative to the lock directory the host gave the plugin.
// Built against lockfile:lockfile@0.2.0, world `plugin`, whose WIT this
// package carries in wit/ (componentize-js's `--wit node_modules/lockfile-guest/wit`).

import { exitWithCode } from "wasi:cli/exit@0.2.12";
import { Lock, readContent as witReadContent } from "lockfile:lockfile/lockfile@0.2.0";

/** Someone else holds the lock (or held it for the whole wait). */
export class LockError extends Error {
  constructor(message, holder) {
    super(message);
    this.name = "LockError";
    /** What the holder wrote into the file, or undefined. */
    this.holder = holder;
  }
}

/** The host refused the path: it leads outside the lock directory. */
export class NotPermittedError extends Error {
  constructor(message) {
    super(message);
    this.name = "NotPermittedError";
  }
}

/** The content template is malformed. */
export class InvalidTemplateError extends Error {
  constructor(message) {
    super(message);
    this.name = "InvalidTemplateError";
  }
}

/** This plugin holds as many lock handles as the host allows. */
export class TooManyLocksError extends Error {
  constructor(max) {
    super(`too many locks: this plugin may hold ${max}`);
    this.name = "TooManyLocksError";
    this.max = max;
  }
}

/** The operating system refused. */
export class LockIoError extends Error {
  constructor(message) {
    super(message);
    this.name = "LockIoError";
  }
}

/** `ms` (a BigInt) as the Rust guest library prints a wait: 50ms, 1.5s, 3600s. */
function duration(ms) {
  if (ms < 1000n) return `${ms}ms`;
  return `${(Number(ms) / 1000).toFixed(3).replace(/\.?0+$/, "")}s`;
}

function toError(path, error) {
  if (error.tag === "timed-out") {
    const { waitedMs, holder } = error.val;
    const heldBy = holder ? `: held by ${holder}` : "";
    return new LockError(`Couldn't lock '${path}' within ${duration(waitedMs)}${heldBy}`, holder);
  }
  const heldBy = error.val ? `: held by ${error.val}` : "";
  switch (error.tag) {
    case "locked":
      return new LockError(`Couldn't lock '${path}'${heldBy}`, error.val);
    case "not-permitted":
      return new NotPermittedError(`not permitted: ${error.val}`);
    case "invalid-template":
      return new InvalidTemplateError(error.val);
    case "too-many-locks":
      return new TooManyLocksError(error.val);
    default:
      return new LockIoError(error.val);
  }
}

/** An exclusive lock on a file in the lock directory. */
export class LockFile {
  #handle;

  constructor(handle, path) {
    this.#handle = handle;
    /** The path the lock was taken with. */
    this.path = path;
    /** What this holder wrote, without the space and newline; undefined with no content. */
    this.content = handle.content();
    /**
     * This acquisition's fencing token (a BigInt; undefined for lock files,
     * which issue none): pass it to what the lock protects, which refuses
     * lower ones.
     */
    this.fencingToken = handle.fencingToken();
  }

  /**
   * Whether the lock is still held: false once released, or once lost (a
   * lock the host keeps in a database can be; the host notices within
   * seconds).
   */
  get held() {
    return this.#handle !== undefined && this.#handle.held();
  }

  /**
   * Takes the lock on `path`. `contentTemplate`: {pid}, {hostname}, {plugin}
   * (null writes nothing, like zc.lockfile's SimpleLockFile); `waitMs`: how
   * long to keep trying (0, the default, tries once).
   */
  static lock(path, { contentTemplate = "{pid}", waitMs = 0 } = {}) {
    try {
      return new LockFile(Lock.acquire(path, { contentTemplate: contentTemplate ?? undefined, waitMs: BigInt(waitMs) }), path);
    } catch (error) {
      throw toError(path, error.payload ?? error);
    }
  }

  /** Releases the lock; releasing twice does nothing. */
  release() {
    if (this.#handle) {
      this.#handle.release();
      this.#handle[Symbol.dispose]?.();
      this.#handle = undefined;
    }
  }
}

/** What the holder of `path` wrote, without taking the lock. */
export function readContent(path) {
  try {
    return witReadContent(path);
  } catch (error) {
    throw toError(path, error.payload ?? error);
  }
}

/**
 * The plugin's `wasi:cli/run` export, running `main`: `export const run =
 * command(() => { ... })`. An error thrown out of `run` would end the plugin
 * with status 1 and no message at all; here a LockError prints its message on
 * stderr and exits 75 (EX_TEMPFAIL), and any other error prints `Name:
 * message` and exits 1.
 */
export function command(main) {
  return {
    run() {
      try {
        main();
      } catch (error) {
        if (error instanceof LockError) {
          console.error(error.message);
          exit(75);
        }
        console.error(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
        exit(1);
      }
    },
  };
}

/**
 * Ends the plugin with exit status `code` (0-255), which `lockfile run` exits
 * with: 75, EX_TEMPFAIL, says "held, try again later". The host releases
 * every lock the plugin still holds.
 */
export function exit(code) {
  exitWithCode(code);
}
