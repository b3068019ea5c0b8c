// `npm pack` leaves out links, so the package's copies of the repository's
// wit/ and license files are made here, before each pack (they are ignored by
// git: the repository's own are the one source).
import { cpSync, rmSync } from "node:fs";

rmSync("wit", { recursive: true, force: true });
cpSync("../../wit", "wit", { recursive: true, dereference: true });
for (const license of ["LICENSE-ZPL", "LICENSE-APACHE"]) {
  cpSync(`../../${license}`, license);
}
