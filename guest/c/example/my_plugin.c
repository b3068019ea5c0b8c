#include <stdio.h>

#include "lockfile.h"
#include "plugin.h"

bool exports_wasi_cli_run_run(void) {
    lockfile_error error;
    lockfile *lock = lockfile_lock("my.lock", &error);
    if (!lock) {
        fprintf(stderr, "%s\n", error.message);
        lockfile_exit(error.code == LOCKFILE_LOCKED ? 75 : 1);
    }
    printf("holding %s\n", lockfile_path(lock));
    lockfile_release(lock);
    lockfile_exit(0);
}
