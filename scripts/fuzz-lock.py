#!/usr/bin/env python3
"""Checks that fuzz/Cargo.lock has not drifted from the main Cargo.lock.

The fuzz crate is a workspace of its own, so its lock is a copy of the main one plus what only
the targets use (fuzz/README.md). `--locked` catches a crate missing from that copy, not one
at an older version: after the main lock moves (ring, rustls, ...), the targets would go on
fuzzing the old versions. Every crate both locks name must be, in the fuzz lock, at a version
the main lock has (the main lock may hold more versions of it, for crates the fuzz targets do
not build). Exits 1 naming each drifted crate and how to mend it; 0 otherwise.

Usage: scripts/fuzz-lock.py [MAIN_LOCK FUZZ_LOCK]   (default: Cargo.lock fuzz/Cargo.lock)
"""
import sys


def versions(path):
    """Each crate's versions in a Cargo.lock: the `name` and `version` lines of its `[[package]]`
    tables (read line by line, not with tomllib, which Pythons before 3.11 lack)."""
    out = {}
    name = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "[[package]]":
                name = None
            elif line.startswith("name = ") and name is None:
                name = line.split("=", 1)[1].strip().strip('"')
            elif line.startswith("version = ") and name is not None:
                out.setdefault(name, set()).add(line.split("=", 1)[1].strip().strip('"'))
    return out


def drifted(main, fuzz):
    """(name, fuzz versions the main lock lacks, the main lock's) for every crate both name."""
    return [
        (name, sorted(fuzz[name] - main[name]), sorted(main[name]))
        for name in sorted(fuzz)
        if name in main and not fuzz[name] <= main[name]
    ]


def main(argv):
    if len(argv) not in (1, 3):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    main_lock, fuzz_lock = argv[1:] if len(argv) == 3 else ("Cargo.lock", "fuzz/Cargo.lock")
    bad = drifted(versions(main_lock), versions(fuzz_lock))
    for name, only_fuzz, in_main in bad:
        print(
            f"{fuzz_lock}: {name} {', '.join(only_fuzz)}, where {main_lock} has {', '.join(in_main)}",
            file=sys.stderr,
        )
    if bad:
        print(
            f"{fuzz_lock} has drifted from {main_lock}: start again from a copy of it "
            "(cp Cargo.lock fuzz/, then any cargo command in fuzz/; fuzz/README.md)",
            file=sys.stderr,
        )
        return 1
    print(f"{fuzz_lock}: every crate it shares with {main_lock} at a version that lock has")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
