"""`python -m lockfile_guest --wit`: the directory of the WIT this package
was built against, for componentize-py's `-d`."""

import argparse
from pathlib import Path


def wit_dir() -> Path:
    return Path(__file__).resolve().parent / "wit"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lockfile_guest",
        description="lockfile-guest: zc.lockfile's lock files for Python plugins.",
    )
    parser.add_argument(
        "--wit",
        action="store_true",
        help="print the directory of the lockfile:lockfile WIT (world `plugin`), for componentize-py -d",
    )
    args = parser.parse_args()
    if not args.wit:
        parser.error("say what to print: --wit")
    print(wit_dir())


main()
