/*
 * A C plugin scripted by its arguments, like the Rust test program lockctl:
 *
 *   lock PATH TEMPLATE WAIT_MS   -> "locked CONTENT" or "error MESSAGE" (TEMPLATE "-": no content)
 *   release                      -> "released"
 *   read PATH                    -> "content CONTENT" or "content -"
 *   hold MS                      keep everything held for MS milliseconds
 *   exit CODE                    exit with status CODE, through lockfile_exit
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wasi/api.h>

#include "lockfile.h"
#include "plugin.h"

bool exports_wasi_cli_run_run(void) {
    __wasi_size_t argc, size;
    if (__wasi_args_sizes_get(&argc, &size) != 0) return false;
    char **argv = calloc(argc + 1, sizeof *argv);
    char *buffer = malloc(size);
    if (!argv || !buffer || __wasi_args_get((uint8_t **)argv, (uint8_t *)buffer) != 0) return false;

    lockfile *held[64];
    size_t count = 0;
    for (size_t i = 1; i < argc;) {
        const char *step = argv[i++];
        if (!strcmp(step, "lock") && i + 3 <= argc) {
            const char *path = argv[i], *template = argv[i + 1];
            uint64_t wait_ms = strtoull(argv[i + 2], NULL, 10);
            i += 3;
            lockfile_error error;
            lockfile *lock = lockfile_lock_with(path, strcmp(template, "-") ? template : NULL, wait_ms, &error);
            if (!lock) {
                printf("error %s\n", error.message);
                continue;
            }
            if (count < sizeof held / sizeof *held) held[count++] = lock;
            printf("locked %s\n", lockfile_content(lock) ? lockfile_content(lock) : "-");
        } else if (!strcmp(step, "release") && count > 0) {
            lockfile_release(held[--count]);
            printf("released\n");
        } else if (!strcmp(step, "read") && i < argc) {
            lockfile_error error;
            char *content = lockfile_read_content(argv[i++], &error);
            printf("content %s\n", content ? content : "-");
            free(content);
        } else if (!strcmp(step, "hold") && i < argc) {
            long ms = strtol(argv[i++], NULL, 10);
            struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
            fflush(stdout);
            nanosleep(&pause, NULL);
        } else if (!strcmp(step, "exit") && i < argc) {
            lockfile_exit((uint8_t)strtoul(argv[i++], NULL, 10));
        } else {
            fprintf(stderr, "unknown step %s\n", step);
            lockfile_exit(2);
        }
        fflush(stdout);
    }
    while (count > 0) lockfile_release(held[--count]);
    lockfile_exit(0);
}
