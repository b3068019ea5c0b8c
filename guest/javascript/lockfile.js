// zc.lockfile's lock files for JavaScript plugins, over the lockfile:lockfile
// WIT interface.
//
//   import { LockFile, LockError } from "./lockfile.js";
//   const lock = LockFile.lock("job.lock");          // " <pid>\n" written into the file
//   try { LockFile.lock("job.lock"); } catch (e) {   // e instanceof LockError
//     console.log(e.message, e.holder);              // Couldn't lock 'job.lock': held by ...
//   }
//   lock.release();
//
// Paths are relative to the lock directory the host gave the plugin.

import { Lock, readContent as witReadContent } from "lockfile:lockfile/lockfile@0.1.0";

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

function toError(path, error) {
  const heldBy = error.val ? `: held by ${error.val}` : "";
  switch (error.tag) {
    case "locked":
      return new LockError(`Couldn't lock '${path}'${heldBy}`, error.val);
    case "timed-out":
      return new LockError(`Couldn't lock '${path}' in time${heldBy}`, error.val);
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
