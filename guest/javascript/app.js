// A JavaScript plugin scripted by its arguments, like the Rust test program
// lockctl: `lock PATH TEMPLATE WAIT_MS` (TEMPLATE "-": no content), `release`,
// `read PATH`, `hold MS` (keep everything held for MS milliseconds), `exit
// CODE` (exit with status CODE, through lockfile-guest's `exit`).

import { getArguments } from "wasi:cli/environment@0.2.12";
import { subscribeDuration } from "wasi:clocks/monotonic-clock@0.2.12";
import { LockError, LockFile, exit, readContent } from "lockfile-guest";

function main() {
  const args = getArguments().slice(1);
  const held = [];
  while (args.length > 0) {
    const step = args.shift();
    if (step === "lock") {
      const [path, template, waitMs] = args.splice(0, 3);
      try {
        const lock = LockFile.lock(path, { contentTemplate: template === "-" ? null : template, waitMs: Number(waitMs) });
        held.push(lock);
        console.log(`locked ${lock.content ?? "-"}`);
      } catch (error) {
        if (!(error instanceof LockError)) throw error;
        console.log(`error ${error.message}`);
      }
    } else if (step === "release") {
      held.pop().release();
      console.log("released");
    } else if (step === "hold") {
      subscribeDuration(BigInt(args.shift()) * 1_000_000n).block();
    } else if (step === "read") {
      console.log(`content ${readContent(args.shift()) ?? "-"}`);
    } else if (step === "exit") {
      exit(Number(args.shift()));
    } else {
      throw new Error(`unknown step ${step}`);
    }
  }
  for (const lock of held) lock.release();
}

export const run = {
  run() {
    main();
  },
};
