"""The two WASI runtimes the tests run modules with: the wasmtime
command-line program, the project's runner, and Node's node:wasi through
tools/node_wasi.py, which must run a module as `wasmtime run` does (the same
options, preopened directories, streams and exit statuses).

The guest modules are written inline as WAT and compiled with wasmtime.wat2wasm.
"""
import os
import select
import subprocess
import sys

import pytest
import wasmtime

from conftest import REPO, wasmtime_cli

NODE_WASI = REPO / "tools" / "node_wasi.py"
sys.path.insert(0, str(REPO / "tools"))
import node_wasi  # noqa: E402

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

def command(runtime):
    """The command that runs a module: `wasmtime run`, or the Node launcher."""
    if runtime == "wasmtime":
        return [wasmtime_cli(), "run"]
    return [sys.executable, str(NODE_WASI)]


RUNTIMES = ["wasmtime", "node"]


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


def run(runtime, *args, cwd=None, **kw):
    return subprocess.run([*command(runtime), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=30, **kw)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_smoke(mods, rt):
    r = run(rt, mods["hello"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", "")


@pytest.mark.parametrize("rt", RUNTIMES)
def test_exit_code(mods, rt):
    r = run(rt, mods["exit3"])
    assert (r.returncode, r.stdout, r.stderr) == (3, "", "")


def test_exit_code_126_and_up(mods):
    # wasmtime rejects proc_exit(>= 126) with a host error and exits 1;
    # Node passes the status through unchanged
    r = run("wasmtime", mods["exit130"])
    assert r.returncode == 1
    assert "exit with invalid exit status outside of [0..126)" in r.stderr
    assert run("node", mods["exit130"]).returncode == 130


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("mod", ["trap", "start_trap"])
def test_trap(mods, rt, mod):
    r = run(rt, mods[mod])
    assert r.returncode == 134 and r.stdout == ""
    assert "unreachable" in r.stderr


def test_node_trap_is_one_line(mods):
    r = run("node", mods["trap"])
    assert r.stderr.startswith(f"error: {mods['trap']} trapped: ") and r.stderr.count("\n") == 1


@pytest.mark.parametrize("rt", RUNTIMES)
def test_argv(mods, rt):
    # options after the module belong to the guest
    r = run(rt, mods["argv"], "--dir", "x")
    assert (r.returncode, r.stdout, r.stderr) == (0, "--dir\n", "")
    assert run(rt, mods["argv"]).returncode == 1


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("spec", [".", "{dir}::/data"])
def test_preopen(mods, tmp_path, rt, spec):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("file contents\n")
    r = run(rt, "--dir", spec.format(dir=data), mods["cat"], cwd=data)
    assert (r.returncode, r.stdout, r.stderr) == (0, "file contents\n", "")


@pytest.mark.parametrize("rt", RUNTIMES)
def test_no_preopen_is_an_error_for_the_guest(mods, rt):
    r = run(rt, mods["cat"])
    assert r.returncode == 10 + 8  # WASI errno 8 = EBADF: there is no fd 3


@pytest.mark.parametrize("rt", RUNTIMES)
def test_streams_output(mods, rt):
    p = subprocess.Popen([*command(rt), str(mods["stream"])],
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
def test_load_errors(mods, rt, mod):
    r = run(rt, mods[mod])
    assert r.returncode == 1 and r.stdout == "" and r.stderr


def test_node_load_error_is_one_line_naming_the_module(mods):
    for mod in ("garbage", "missing_import"):
        r = run("node", mods[mod])
        assert r.stderr.startswith(f"error: {mods[mod]}: ") and r.stderr.count("\n") == 1


@pytest.mark.parametrize("rt", RUNTIMES)
def test_missing_file(tmp_path, rt):
    r = run(rt, tmp_path / "nope.wasm")
    assert r.returncode == 1 and str(tmp_path / "nope.wasm") in r.stderr
    if rt == "node":
        assert r.stderr == f"error: {tmp_path / 'nope.wasm'}: file not found\n"


def test_max_memory_size_caps_memory_grow(mods):
    """`-W max-memory-size=BYTES` (wasmtime 46 takes no unit): a memory.grow
    past it fails, as at the 4 GiB of wasm32."""
    assert run("wasmtime", mods["grow"]).returncode == 0
    assert run("wasmtime", "-W", f"max-memory-size={1 << 20}", mods["grow"]).returncode == 0
    assert run("wasmtime", "-W", f"max-memory-size={(1 << 20) - 1}", mods["grow"]).returncode == 1


def test_the_tests_cache_compiled_modules_in_their_own_directory(cache_home, tmp_path):
    """wasmtime run caches what it compiles in $XDG_CACHE_HOME/wasmtime,
    which the session points at a directory of its own (conftest.py)."""
    wasm = tmp_path / "new.wasm"  # a module no other test has run
    wasm.write_bytes(wasmtime.wat2wasm(f'(module (data "{tmp_path}") (func (export "_start")))'))
    cached = cache_home / "wasmtime" / "modules"
    before = set(cached.rglob("*"))
    assert run("wasmtime", wasm).returncode == 0
    assert [p for p in set(cached.rglob("*")) - before if p.is_file()]


def test_node_launcher_in_process(mods, capfd):
    assert node_wasi.main([str(mods["exit3"])]) == 3
    assert node_wasi.main([str(mods["hello"])]) == 0
    assert capfd.readouterr().out == "hello\n"


def test_parse_args():
    ns = node_wasi.parse_args(["--env", "A=1=2", "--env", "HOME", "--dir", "a::b", "m.wasm"])
    assert ns.env == [("A", "1=2"), ("HOME", os.environ.get("HOME", ""))]
    assert ns.dirs == [("a", "b")]
