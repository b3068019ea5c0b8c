import { LockFile, command } from "lockfile-guest";

export const run = command(() => {
  const lock = LockFile.lock("my.lock");
  console.log(`holding ${lock.path}`);
  lock.release();
});
