"""Tests for tools/wasmrun.py, on both runtimes (wasmtime-py and Node's node:wasi).

The guest modules are written inline as WAT and compiled with wasmtime.wat2wasm.
"""
import os
import select
import subprocess
import sys

import pytest
import wasmtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASMRUN = os.path.join(ROOT, "tools", "wasmrun.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import wasmrun  # noqa: E402

WASI = '"wasi_snapshot_preview1"'
FD_WRITE = f'(import {WASI} "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))'
FD_READ = f'(import {WASI} "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))'
PROC_EXIT = f'(import {WASI} "proc_exit" (func $proc_exit (param i32)))'

# write(fd, ptr, len) helper: iovec at 0..8, nwritten at 8
WRITE = """
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
"""

MODULES = {
    "hello": f"""(module {FD_WRITE} (memory (export "memory") 1)
  (data (i32.const 100) "hello\\n") {WRITE}
  (func (export "_start") (call $write (i32.const 1) (i32.const 100) (i32.const 6))))""",

    "exit3": f"""(module {PROC_EXIT} (memory (export "memory") 1)
  (func (export "_start") (call $proc_exit (i32.const 3))))""",

    "trap": """(module (memory (export "memory") 1)
  (func (export "_start") unreachable))""",

    "exit130": f"""(module {PROC_EXIT} (memory (export "memory") 1)
  (func (export "_start") (call $proc_exit (i32.const 130))))""",

    # traps in the start section, i.e. while instantiating
    "start_trap": """(module (memory (export "memory") 1)
  (func $boom unreachable) (start $boom) (func (export "_start")))""",

    # prints argv[1] and a newline; exits 1 if there is no argv[1]
    "argv": f"""(module {FD_WRITE} {PROC_EXIT}
  (import {WASI} "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import {WASI} "args_get" (func $args (param i32 i32) (result i32)))
  (memory (export "memory") 1) (data (i32.const 100) "\\n") {WRITE}
  (func (export "_start") (local $p i32) (local $n i32)
    (drop (call $sizes (i32.const 16) (i32.const 20)))
    (if (i32.lt_u (i32.load (i32.const 16)) (i32.const 2))
      (then (call $proc_exit (i32.const 1))))
    (drop (call $args (i32.const 1024) (i32.const 4096)))
    (local.set $p (i32.load (i32.const 1028)))
    (block $done (loop $len   ;; strlen
      (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $len)))
    (call $write (i32.const 1) (local.get $p) (local.get $n))
    (call $write (i32.const 1) (i32.const 100) (i32.const 1))))""",

    # opens "in.txt" in the first preopen (fd 3), copies up to 64 bytes to stdout;
    # exits 10 + errno if path_open fails
    "cat": f"""(module {FD_WRITE} {FD_READ} {PROC_EXIT}
  (import {WASI} "path_open" (func $path_open
    (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1) (data (i32.const 100) "in.txt") {WRITE}
  (func (export "_start") (local $err i32)
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 6)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 24)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 10) (local.get $err)))))
    (i32.store (i32.const 32) (i32.const 512))
    (i32.store (i32.const 36) (i32.const 64))
    (drop (call $fd_read (i32.load (i32.const 24)) (i32.const 32) (i32.const 1) (i32.const 40)))
    (call $write (i32.const 1) (i32.const 512) (i32.load (i32.const 40)))))""",

    # writes "ready", blocks reading stdin, then writes "done": proves streaming
    "stream": f"""(module {FD_WRITE} {FD_READ} (memory (export "memory") 1)
  (data (i32.const 100) "ready\\ndone\\n") {WRITE}
  (func (export "_start")
    (call $write (i32.const 1) (i32.const 100) (i32.const 6))
    (i32.store (i32.const 32) (i32.const 512))
    (i32.store (i32.const 36) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
    (call $write (i32.const 1) (i32.const 106) (i32.const 5))))""",

    # grows its memory from 1 page to 16 (1 MiB); exits 1 if it may not
    "grow": f"""(module {PROC_EXIT} (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 15)) (i32.const -1))
      (then (call $proc_exit (i32.const 1))))))""",

    "missing_import": """(module (import "env" "nope" (func))
  (memory (export "memory") 1) (func (export "_start")))""",
}

RUNTIMES = [pytest.param([], id="wasmtime"), pytest.param(["--node"], id="node")]


@pytest.fixture(scope="session")
def mods(tmp_path_factory):
    d = tmp_path_factory.mktemp("mods")
    paths = {}
    for name, wat in MODULES.items():
        paths[name] = d / f"{name}.wasm"
        paths[name].write_bytes(wasmtime.wat2wasm(wat))
    paths["garbage"] = d / "garbage.wasm"
    paths["garbage"].write_bytes(b"\0asm not really")
    return paths


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def run(cache, *args, cwd=None, **kw):
    # every run gets its own cache so tests never touch ~/.cache
    env = dict(os.environ, WASMRUN_CACHE=str(cache))
    return subprocess.run([sys.executable, WASMRUN, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=30, **kw)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_smoke(mods, cache, rt):
    r = run(cache, *rt, mods["hello"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", "")


@pytest.mark.parametrize("rt", RUNTIMES)
def test_exit_code(mods, cache, rt):
    r = run(cache, *rt, mods["exit3"])
    assert (r.returncode, r.stdout, r.stderr) == (3, "", "")


def test_exit_code_126_and_up(mods, cache):
    # wasmtime rejects proc_exit(>= 126) with a host error, and `wasmtime run`
    # then exits 1; Node passes the status through unchanged
    r = run(cache, mods["exit130"])
    assert r.returncode == 1
    assert r.stderr == f"error: {mods['exit130']}: exit with invalid exit status outside of [0..126)\n"
    assert run(cache, "--node", mods["exit130"]).returncode == 130


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("mod", ["trap", "start_trap"])
def test_trap(mods, cache, rt, mod):
    r = run(cache, *rt, mods[mod])
    assert r.returncode == 134 and r.stdout == ""
    assert r.stderr.startswith(f"error: {mods[mod]} trapped: ")
    assert "unreachable" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("rt", RUNTIMES)
def test_argv(mods, cache, rt):
    # options after the module belong to the guest
    r = run(cache, *rt, mods["argv"], "--node", "x")
    assert (r.returncode, r.stdout, r.stderr) == (0, "--node\n", "")
    assert run(cache, *rt, mods["argv"]).returncode == 1


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("spec", [".", "{dir}::/data"])
def test_preopen(mods, cache, tmp_path, rt, spec):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("file contents\n")
    r = run(cache, *rt, "--dir", spec.format(dir=data), mods["cat"], cwd=data)
    assert (r.returncode, r.stdout, r.stderr) == (0, "file contents\n", "")


@pytest.mark.parametrize("rt", RUNTIMES)
def test_no_preopen_is_an_error_for_the_guest(mods, cache, rt):
    r = run(cache, *rt, mods["cat"])
    assert r.returncode == 10 + 8  # WASI errno 8 = EBADF: there is no fd 3


@pytest.mark.parametrize("rt", RUNTIMES)
def test_streams_output(mods, cache, rt):
    env = dict(os.environ, WASMRUN_CACHE=str(cache))
    p = subprocess.Popen([sys.executable, WASMRUN, *rt, str(mods["stream"])], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        # "ready" must arrive while the guest is still blocked on stdin
        assert select.select([p.stdout], [], [], 15)[0], "no output before stdin"
        assert p.stdout.readline() == b"ready\n"
        p.stdin.write(b"x")
        p.stdin.close()
        assert p.stdout.read() == b"done\n"
        assert p.wait(15) == 0
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("mod", ["garbage", "missing_import"])
def test_load_errors(mods, cache, rt, mod):
    r = run(cache, *rt, mods[mod])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"error: {mods[mod]}: ") and r.stderr.count("\n") == 1


@pytest.mark.parametrize("rt", RUNTIMES)
def test_missing_file(cache, tmp_path, rt):
    r = run(cache, *rt, tmp_path / "nope.wasm")
    assert r.returncode == 2
    assert r.stderr == f"error: {tmp_path / 'nope.wasm'}: file not found\n"


def cache_state(cache):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.iterdir()}


def test_cache_hit(mods, cache):
    assert run(cache, mods["hello"]).stdout == "hello\n"
    before = cache_state(cache)
    assert sorted(n.rsplit(".", 1)[1] for n in before) == ["cwasm", "sha256"]
    r = run(cache, mods["hello"])
    assert (r.returncode, r.stdout) == (0, "hello\n")
    assert cache_state(cache) == before  # nothing new, nothing rewritten


@pytest.mark.parametrize("how", ["digest-mismatch", "digest-matches"])
def test_corrupt_cache_is_recompiled(mods, cache, how):
    run(cache, mods["hello"])
    entry = next(cache.glob("*.cwasm"))
    good = entry.read_bytes()
    entry.write_bytes(b"garbage")
    if how == "digest-matches":  # reaches wasmtime's own deserialize checks
        import hashlib
        entry.with_suffix(".cwasm.sha256").write_text(hashlib.sha256(b"garbage").hexdigest())
    r = run(cache, mods["hello"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", "")
    assert entry.read_bytes() == good
    assert not list(cache.glob(".tmp-*"))


def test_no_cache(mods, cache):
    assert run(cache, "--no-cache", mods["hello"]).stdout == "hello\n"
    assert not cache.exists()


def test_main_in_process(mods, cache, capfd):
    assert wasmrun.main(["--cache", str(cache), str(mods["exit3"])]) == 3
    assert wasmrun.main(["--no-cache", str(mods["hello"])]) == 0
    assert capfd.readouterr().out == "hello\n"


def test_max_memory_size_caps_memory_grow(mods, cache):
    assert run(cache, mods["grow"]).returncode == 0
    assert run(cache, "--max-memory-size", "1MiB", mods["grow"]).returncode == 0
    assert run(cache, "--max-memory-size", str((1 << 20) - 1), mods["grow"]).returncode == 1
    assert run(cache, "--max-memory-size", "1023K", mods["grow"]).returncode == 1


@pytest.mark.parametrize("args", [["--max-memory-size", "lots"], ["--max-memory-size", "5XB"],
                                  ["--node", "--max-memory-size", "1G"]])
def test_max_memory_size_usage_errors(mods, cache, args):
    r = run(cache, *args, mods["grow"])
    assert r.returncode == 2 and "--max-memory-size" in r.stderr


def test_parse_args():
    ns = wasmrun.parse_args(["--env", "A=1=2", "--env", "HOME", "--dir", "a::b", "m.wasm"])
    assert ns.env == [("A", "1=2"), ("HOME", os.environ.get("HOME", ""))]
    assert ns.dirs == [("a", "b")]


def test_one_line_keeps_reasons_and_drops_backtrace():
    msg = ("failed to run main module `x.wasm`\n\nCaused by:\n"
           "    0: failed to instantiate \"x.wasm\"\n"
           "    1: error while executing at wasm backtrace:\n"
           "           0:  0x41c - x.wasm!main\n"
           "                    at /src/main.rs:3:5\n"
           "       note: using the `WASMTIME_BACKTRACE_DETAILS=1` environment variable\n"
           "    2: wasm trap: wasm `unreachable` instruction executed\n")
    assert wasmrun._one_line(msg) == ('failed to run main module `x.wasm`: failed to instantiate'
                                      ' "x.wasm": wasm trap: wasm `unreachable` instruction executed')
