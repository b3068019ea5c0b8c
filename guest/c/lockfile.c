/* The library of lockfile.h over the generated bindings of world `plugin`. */
#include "lockfile.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

struct lockfile {
    lockfile_lockfile_lockfile_own_lock_t handle;
    char *path;
    char *content;
};

static char *to_c(const plugin_string_t *s) {
    char *out = malloc(s->len + 1);
    if (out) {
        memcpy(out, s->ptr, s->len);
        out[s->len] = '\0';
    }
    return out;
}

static void copy_out(char *dest, size_t size, const plugin_string_t *s) {
    size_t n = s->len < size - 1 ? s->len : size - 1;
    memcpy(dest, s->ptr, n);
    dest[n] = '\0';
}

static void clear(lockfile_error *error) {
    error->code = LOCKFILE_OK;
    error->message[0] = '\0';
    error->holder[0] = '\0';
}

/* How the Rust library prints a wait: 50ms, 1.5s, 3600s. */
static void duration(char *out, size_t size, uint64_t ms) {
    if (ms < 1000) {
        snprintf(out, size, "%" PRIu64 "ms", ms);
        return;
    }
    snprintf(out, size, "%" PRIu64 ".%03" PRIu64, ms / 1000, ms % 1000);
    char *end = out + strlen(out) - 1;
    while (*end == '0') *end-- = '\0';
    if (*end == '.') *end = '\0';
    strncat(out, "s", size - strlen(out) - 1);
}

/* Fills `error` from the host's, in zc.lockfile's words, and frees it. */
static void from_wit(lockfile_error *error, const char *path, lockfile_lockfile_lockfile_error_t *wit) {
    const plugin_option_string_t *holder = NULL;
    char detail[1024] = "";
    switch (wit->tag) {
    case LOCKFILE_LOCKFILE_TYPES_ERROR_LOCKED:
        error->code = LOCKFILE_LOCKED;
        holder = &wit->val.locked;
        break;
    case LOCKFILE_LOCKFILE_TYPES_ERROR_TIMED_OUT:
        error->code = LOCKFILE_TIMED_OUT;
        holder = &wit->val.timed_out.holder;
        break;
    case LOCKFILE_LOCKFILE_TYPES_ERROR_NOT_PERMITTED:
        error->code = LOCKFILE_NOT_PERMITTED;
        copy_out(detail, sizeof detail, &wit->val.not_permitted);
        snprintf(error->message, sizeof error->message, "not permitted: %s", detail);
        break;
    case LOCKFILE_LOCKFILE_TYPES_ERROR_INVALID_TEMPLATE:
        error->code = LOCKFILE_INVALID_TEMPLATE;
        copy_out(error->message, sizeof error->message, &wit->val.invalid_template);
        break;
    case LOCKFILE_LOCKFILE_TYPES_ERROR_TOO_MANY_LOCKS:
        error->code = LOCKFILE_TOO_MANY_LOCKS;
        snprintf(error->message, sizeof error->message, "too many locks: this plugin may hold %" PRIu32,
                 wit->val.too_many_locks);
        break;
    default:
        error->code = LOCKFILE_IO;
        copy_out(error->message, sizeof error->message, &wit->val.io);
        break;
    }
    if (holder) {
        if (holder->is_some) copy_out(error->holder, sizeof error->holder, &holder->val);
        char within[64] = "";
        if (error->code == LOCKFILE_TIMED_OUT) {
            char waited[32];
            duration(waited, sizeof waited, wit->val.timed_out.waited_ms);
            snprintf(within, sizeof within, " within %s", waited);
        }
        snprintf(error->message, sizeof error->message, "Couldn't lock '%s'%s%s%s", path, within,
                 holder->is_some ? ": held by " : "", error->holder);
    }
    lockfile_lockfile_lockfile_error_free(wit);
}

lockfile *lockfile_lock(const char *path, lockfile_error *error) {
    return lockfile_lock_with(path, "{pid}", 0, error);
}

lockfile *lockfile_lock_with(const char *path, const char *content_template, uint64_t wait_ms,
                             lockfile_error *error) {
    clear(error);
    plugin_string_t wit_path;
    plugin_string_set(&wit_path, path);
    lockfile_lockfile_lockfile_options_t options = {.wait_ms = wait_ms};
    if (content_template) {
        options.content_template.is_some = true;
        plugin_string_set(&options.content_template.val, content_template);
    }
    lockfile_lockfile_lockfile_own_lock_t handle;
    lockfile_lockfile_lockfile_error_t wit_error;
    if (!lockfile_lockfile_lockfile_static_lock_acquire(&wit_path, &options, &handle, &wit_error)) {
        from_wit(error, path, &wit_error);
        return NULL;
    }
    lockfile *lock = calloc(1, sizeof *lock);
    if (!lock || !(lock->path = strdup(path))) {
        free(lock);
        lockfile_lockfile_lockfile_lock_drop_own(handle);
        error->code = LOCKFILE_IO;
        snprintf(error->message, sizeof error->message, "out of memory");
        return NULL;
    }
    lock->handle = handle;
    plugin_string_t content;
    if (lockfile_lockfile_lockfile_method_lock_content(lockfile_lockfile_lockfile_borrow_lock(handle),
                                                        &content)) {
        lock->content = to_c(&content);
        plugin_string_free(&content);
    }
    return lock;
}

const char *lockfile_content(const lockfile *lock) { return lock->content; }

const char *lockfile_path(const lockfile *lock) { return lock->path; }

bool lockfile_held(const lockfile *lock) {
    return lockfile_lockfile_lockfile_method_lock_held(lockfile_lockfile_lockfile_borrow_lock(lock->handle));
}

bool lockfile_fencing_token(const lockfile *lock, uint64_t *token) {
    return lockfile_lockfile_lockfile_method_lock_fencing_token(
        lockfile_lockfile_lockfile_borrow_lock(lock->handle), token);
}

void lockfile_release(lockfile *lock) {
    if (!lock) return;
    lockfile_lockfile_lockfile_method_lock_release(lockfile_lockfile_lockfile_borrow_lock(lock->handle));
    lockfile_lockfile_lockfile_lock_drop_own(lock->handle);
    free(lock->path);
    free(lock->content);
    free(lock);
}

char *lockfile_read_content(const char *path, lockfile_error *error) {
    clear(error);
    plugin_string_t wit_path;
    plugin_string_set(&wit_path, path);
    plugin_option_string_t content;
    lockfile_lockfile_lockfile_error_t wit_error;
    if (!lockfile_lockfile_lockfile_read_content(&wit_path, &content, &wit_error)) {
        from_wit(error, path, &wit_error);
        return NULL;
    }
    if (!content.is_some) return NULL;
    char *out = to_c(&content.val);
    plugin_string_free(&content.val);
    return out;
}

_Noreturn void lockfile_exit(uint8_t code) {
    fflush(stdout);
    fflush(stderr);
    wasi_cli_exit_exit_with_code(code);
    exit(code != 0); /* not reached: the host ends the plugin */
}
