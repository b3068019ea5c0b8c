/*
 * zc.lockfile's lock files for C plugins, over the lockfile:lockfile WIT
 * interface (world `plugin`), on the bindings `wit-bindgen c` generates
 * ("plugin.h"). Strings in and out are NUL-terminated; a lock is one handle,
 * freed by lockfile_release; an error is a code and a message worded like
 * zc.lockfile's LockError.
 *
 *     lockfile_error error;
 *     lockfile *lock = lockfile_lock("job.lock", &error);
 *     if (!lock) {
 *         fprintf(stderr, "%s\n", error.message);  // Couldn't lock 'job.lock': held by 1234
 *         lockfile_exit(error.code == LOCKFILE_LOCKED ? 75 : 1);
 *     }
 *     ...
 *     lockfile_release(lock);
 *
 * Paths are relative to the lock directory the host gave the plugin.
 */
#ifndef LOCKFILE_H
#define LOCKFILE_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Why a lock could not be taken or read. */
typedef enum lockfile_code {
    LOCKFILE_OK = 0,
    /* Someone else holds the lock. */
    LOCKFILE_LOCKED,
    /* The lock stayed held for the whole wait. */
    LOCKFILE_TIMED_OUT,
    /* The host refused the path (absolute, too long, outside the lock
     * directory), or the plugin may create no more lock files. */
    LOCKFILE_NOT_PERMITTED,
    /* The content template is malformed. */
    LOCKFILE_INVALID_TEMPLATE,
    /* The plugin already holds as many lock handles as the host allows. */
    LOCKFILE_TOO_MANY_LOCKS,
    /* The operating system refused. */
    LOCKFILE_IO,
} lockfile_code;

/* Filled in by every call that can fail. On success code is LOCKFILE_OK
 * and message an empty string. The strings live in the struct: nothing to
 * free. */
typedef struct lockfile_error {
    lockfile_code code;
    /* "Couldn't lock 'job.lock': held by 1234", cut at 1023 bytes. */
    char message[1024];
    /* What the holder wrote (LOCKFILE_LOCKED, LOCKFILE_TIMED_OUT), or "". */
    char holder[1024];
} lockfile_error;

/* A held lock. */
typedef struct lockfile lockfile;

/* zc.lockfile's LockFile(path): one try, " <pid>\n" written into the file.
 * NULL, with `error` filled in, if it cannot be taken. */
lockfile *lockfile_lock(const char *path, lockfile_error *error);

/* content_template: what to write after a space ({pid}, {hostname},
 * {plugin}; NULL writes nothing, like zc.lockfile's SimpleLockFile).
 * wait_ms: how long to keep trying while someone else holds it (0: once). */
lockfile *lockfile_lock_with(const char *path, const char *content_template, uint64_t wait_ms,
                             lockfile_error *error);

/* What this holder wrote (NULL with no content), and the path locked; both
 * valid until lockfile_release. */
const char *lockfile_content(const lockfile *lock);
const char *lockfile_path(const lockfile *lock);

/* Whether the lock is still held: false once lost (a lock the host keeps in
 * a database can be). */
bool lockfile_held(const lockfile *lock);

/* This acquisition's fencing token, if the host issues one (lock files do
 * not): true and *token set, or false. */
bool lockfile_fencing_token(const lockfile *lock, uint64_t *token);

/* Releases the lock and frees the handle. NULL does nothing. */
void lockfile_release(lockfile *lock);

/* What the holder of `path` wrote, without taking the lock: a string to
 * free() (NULL if the file holds no record: error->code is LOCKFILE_OK). */
char *lockfile_read_content(const char *path, lockfile_error *error);

/* Ends the plugin with exit status `code`, which `lockfile run` exits with
 * (75, EX_TEMPFAIL: "held, try again later"), after flushing stdout and
 * stderr. The host releases every lock still held. (exit() cannot: under
 * wasi:cli 0.2 it reports only success or failure.) */
_Noreturn void lockfile_exit(uint8_t code);

#ifdef __cplusplus
}
#endif

#endif
