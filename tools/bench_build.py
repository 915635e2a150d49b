"""Build-speed benchmark: ratios measured side by side in one run, in a
temporary copy of this checkout (your build/ is not touched).

    .venv/bin/python tools/bench_build.py [--runs 5]

1. a no-op `scons wasi` against SCons reading an empty SConstruct (goal: <= 2x);
2. the rebuild after an edit to the WASI app's Rust source against a clean
   build of everything (`scons wasi digits run-model` from nothing).
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EVERYTHING = ("wasi", "digits", "run-model")


def copy_checkout(dest):
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


def timed_scons(cwd, *args):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "SCons", "-Q", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_of(runs, fn):
    return statistics.median(fn() for _ in range(runs))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        work, empty = Path(tmp) / "checkout", Path(tmp) / "empty"
        work.mkdir()
        empty.mkdir()
        (empty / "SConstruct").write_text("")
        copy_checkout(work)

        clean = timed_scons(work, *EVERYTHING)
        no_op = median_of(runs, lambda: timed_scons(work, "wasi"))
        baseline = median_of(runs, lambda: timed_scons(empty))
        main_rs = work / "rust/classify/src/main.rs"
        main_rs.write_text(main_rs.read_text() + "\n// benchmark edit\n")
        rebuild = timed_scons(work, *EVERYTHING)

    print(f"no-op `scons wasi`         {no_op:7.2f} s   empty SConstruct {baseline:6.2f} s   "
          f"ratio {no_op / baseline:5.2f}x (goal <= 2x)")
    print(f"rebuild after app edit     {rebuild:7.2f} s   clean build      {clean:6.2f} s   "
          f"ratio {rebuild / clean:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
