"""One build call rebuilds exactly what changed. Each test edits a copy of
the repository (the real SConstruct, SConscripts, models and crates) and
reads from the build's own log which steps ran: `Training model`,
`Compiling model NAME`, `Building NAME.wasm`.

The copy builds both apps: `wasi` (EfficientNet-Lite0 -> classify.wasm) and
`digits` (the digits model, trained by the build -> digits.wasm, from the
same classify crate). Tests in this module run in order and share the copy.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wasmtime_run

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("wasi", "digits")
# Without LTO, modules link in seconds: what is tested here is what builds
# when, not how it links.
SCONS = (sys.executable, "-m", "SCons", "-Q", "CARGO_LTO=off")
# Every file a test here edits.
EDITED_FILES = ("models/digits/labels.txt", "models/digits/train.py", "models/digits/model.json",
                "models/efficientnet_lite0/efficientnet_lite0.onnx", "rust/classify/src/main.rs",
                "rust/runtime/src/lib.rs", "rust/vision/src/lib.rs", "rust/classify/Cargo.toml",
                "rust/Cargo.lock", "site_scons/wasmml/compiler/cli.py",
                "site_scons/wasmml/compiler/kernels/winograd.py")
ALL_STEPS = {"train digits", "compile efficientnet_lite0", "compile digits",
             "build classify.wasm", "build digits.wasm"}


def copy_repo(dest):
    """The files git knows (tracked, or new and not ignored), as a checkout."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def steps(log):
    """The build steps a log shows, as a set of 'verb name'."""
    found = {f"train {m}" for m in re.findall(r"^Training model (\w+)", log, re.M)}
    found |= {f"compile {m}" for m in re.findall(r"^Compiling model (\w+)", log, re.M)}
    found |= {f"build {m}" for m in re.findall(r"^Building (\S+\.wasm)", log, re.M)}
    found |= {f"sign {m}" for m in re.findall(r"^Signing (\S+\.wasm)", log, re.M)}
    return found


class Checkout:
    def __init__(self, root, cache=None):
        self.root = root
        self.cache = cache

    def scons(self, *args, check=True):
        cmd = [*SCONS, *args]
        if self.cache:
            cmd.append(f"CACHE_DIR={self.cache}")
        out = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=900)
        if check:
            assert out.returncode == 0, out.stdout + out.stderr
        return out

    def build(self, *args):
        out = self.scons(*TARGETS, *args)
        return steps(out.stdout), out.stdout

    def edit(self, rel, change):
        path = self.root / rel
        path.write_text(change(path.read_text()))

    def classify(self, wasm, image):
        out = wasmtime_run("--dir", ".", wasm, image, cwd=self.root, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def take_edits_from(self, other):
        """Copies the files the tests of this module edit from `other`."""
        for rel in EDITED_FILES:
            shutil.copy2(other.root / rel, self.root / rel)

    def digit_label(self, cls):
        """The label the checkout's digits model has for class `cls`."""
        return (self.root / "models/digits/labels.txt").read_text().splitlines()[int(cls)]

    def digest(self):
        """sha256 of every module and model artifact the build made."""
        import hashlib

        return {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((self.root / "build").rglob("*"))
                if p.is_file() and (p.suffix in (".wasm", ".a", ".weights") or p.name.endswith(".plan.json"))
                and "cargo" not in p.parts}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, shared_cache):
    """A first checkout, built once with -j2 into a shared cache."""
    co = Checkout(copy_repo(tmp_path_factory.mktemp("checkout1")), cache=shared_cache)
    ran, log = co.build("-j2")
    assert ran == ALL_STEPS, log
    return co


@pytest.fixture(scope="module")
def digit_image(checkout):
    """A test-split digit as a PNG, with its true class."""
    out_dir = checkout.root / "build" / "digit-images"
    subprocess.run([sys.executable, "models/digits/make_images.py", str(out_dir)],
                   cwd=checkout.root, check=True, capture_output=True)
    image = sorted(out_dir.glob("*.png"))[0]
    return str(image.relative_to(checkout.root)), image.stem.split("_")[1]


def test_nothing_changed_nothing_runs(checkout):
    ran, log = checkout.build()
    assert ran == set(), log
    explain = checkout.scons(*TARGETS, "--debug=explain")
    assert "because" not in explain.stdout


def test_touched_files_with_unchanged_content_rebuild_nothing(checkout):
    for rel in ("models/digits/train.py", "models/efficientnet_lite0/efficientnet_lite0.onnx",
                "rust/classify/src/main.rs", "rust/runtime/src/lib.rs", "rust/Cargo.lock"):
        os.utime(checkout.root / rel)
    assert checkout.build()[0] == set()


def test_dry_run_and_explain_name_what_would_rebuild_and_why(checkout):
    checkout.edit("rust/classify/src/main.rs", lambda s: s + "\n// edited by a test\n")
    dry = checkout.scons(*TARGETS, "-n")
    assert steps(dry.stdout) == {"build classify.wasm", "build digits.wasm"}
    explain = checkout.scons("digits", "--debug=explain")
    assert "because" in explain.stdout and "rust/classify/src/main.rs" in explain.stdout
    assert steps(explain.stdout) == {"build digits.wasm"}


def test_app_source_rebuilds_only_that_crates_modules(checkout):
    checkout.edit("rust/classify/src/main.rs", lambda s: s + "// edited again\n")
    assert checkout.build()[0] == {"build classify.wasm", "build digits.wasm"}
    assert checkout.build("run-model")[0] == {"build run-model.wasm"}  # first time: built
    checkout.edit("rust/classify/src/main.rs", lambda s: s + "// and again\n")
    assert checkout.build("run-model")[0] == {"build classify.wasm", "build digits.wasm"}


def test_runtime_source_rebuilds_every_module(checkout):
    checkout.edit("rust/runtime/src/lib.rs", lambda s: s + "\n// edited by a test\n")
    assert checkout.build("run-model")[0] == {
        "build classify.wasm", "build digits.wasm", "build run-model.wasm"}


def test_actor_links_the_model_build_the_wasi_app_uses(checkout):
    """Both products from one TVM compile: the actor only runs cargo."""
    assert checkout.build("wascc")[0] == {"build classify_actor.unsigned.wasm", "sign classify_actor.wasm"}


def test_onnx_bytes_rebuild_that_model_and_its_modules(checkout):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    path = checkout.root / "models/efficientnet_lite0/efficientnet_lite0.onnx"
    model = onnx.load(path)
    bias = next(t for t in model.graph.initializer if list(t.dims) == [1000])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(1e-3), bias.name))
    onnx.save(model, path)
    assert checkout.build("run-model", "wascc")[0] == {
        "compile efficientnet_lite0", "build classify.wasm", "build run-model.wasm",
        "build classify_actor.unsigned.wasm", "sign classify_actor.wasm"}
    # New bytes that compile to the same artifacts relink nothing.
    model.doc_string = "edited by a test"
    onnx.save(model, path)
    assert checkout.build("run-model", "wascc")[0] == {"compile efficientnet_lite0"}


def test_training_script_edit_retrains_but_identical_model_compiles_nothing(checkout):
    checkout.edit("models/digits/train.py", lambda s: s + "\n# edited by a test\n")
    assert checkout.build()[0] == {"train digits"}


def retrieved(log):
    """Files the build took from the cache instead of building them."""
    return set(re.findall(r"^Retrieved `(\S+)' from cache", log, re.M))


def test_one_models_option_from_the_command_line_rebuilds_only_it(checkout):
    assert checkout.build("digits.TVM_PIPELINE=default")[0] == {"compile digits", "build digits.wasm"}
    # Back to the default options: the cache still has their artifacts.
    ran, log = checkout.build()
    assert ran == set()
    assert {"build/models/digits/libdigits.a", "build/digits/digits.wasm"} <= retrieved(log)
    assert not any("efficientnet" in path or "classify" in path for path in retrieved(log))


def test_global_option_rebuilds_every_model(checkout):
    ran = checkout.build("TVM_TARGET_FEATURES=+simd128,+bulk-memory")[0]
    assert {"compile digits", "compile efficientnet_lite0"} <= ran
    ran, log = checkout.build()
    assert ran == set() and "build/models/efficientnet_lite0/libefficientnet_lite0.a" in retrieved(log)


def test_label_file_rebuilds_what_embeds_labels_only(checkout, digit_image):
    image, label = digit_image
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    checkout.edit("models/digits/labels.txt", lambda s: "\n".join(names) + "\n")
    assert checkout.build()[0] == {"build digits.wasm"}
    assert checkout.classify("build/digits/digits.wasm", image) == names[int(label)]
    assert checkout.digit_label(label) == names[int(label)]


@pytest.mark.parametrize("module", ["compiler/cli.py", "compiler/kernels/winograd.py"])
def test_compiler_code_recompiles_models(checkout, module):
    checkout.edit(f"site_scons/wasmml/{module}", lambda s: s + "\n# edited by a test\n")
    ran = checkout.build()[0]
    assert {"compile digits", "compile efficientnet_lite0"} <= ran
    assert "train digits" not in ran


def test_every_module_of_the_compiler_is_a_source_of_each_compile():
    """The test above edits two of them; this one checks that every module
    the compiler's entry point imports from wasmml, directly or through
    others, is a source of each compile."""
    sys.path.insert(0, str(REPO / "site_scons"))
    from wasmml.site_tools import tvm_model

    root = REPO / "site_scons"

    def module_file(name):
        path = root / name.replace(".", "/")
        return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")

    imported, to_read = set(), ["wasmml.compiler.cli"]
    while to_read:  # and what those modules import in turn
        text = module_file(to_read.pop()).read_text()
        names = set()
        for package, listed in re.findall(r"from (wasmml(?:\.\w+)*) import ([\w, ]+)", text):
            modules = {f"{package}.{n.strip()}" for n in listed.split(",")}
            names |= {m for m in modules if module_file(m).exists()} or {package}
        # wasmml's own __init__ runs nothing of the compiler's
        names.discard("wasmml")
        to_read += sorted(names - imported)
        imported |= names
    assert imported >= {"wasmml.compiler.kernels.winograd", "wasmml.compiler.kernels.pointwise",
                        "wasmml.compiler.kernels.packing", "wasmml.compiler.fold_batch_norm",
                        "wasmml.tuning_db", "wasmml.model_json"}
    sources = {Path(p).resolve() for p in tvm_model.COMPILER_SOURCES}
    assert {module_file(m).resolve() for m in imported} <= sources
    assert (root / "wasmml" / "compiler" / "__main__.py").resolve() in sources


def test_cargo_manifests_rebuild_the_crates_that_read_them(checkout):
    checkout.edit("rust/classify/Cargo.toml", lambda s: s + "\n# edited by a test\n")
    assert checkout.build("run-model")[0] == {"build classify.wasm", "build digits.wasm"}
    checkout.edit("rust/Cargo.lock", lambda s: s + "\n")
    assert checkout.build("run-model")[0] == {
        "build classify.wasm", "build digits.wasm", "build run-model.wasm"}


def kill_during(checkout, step_line, delay, *args):
    """Starts a build, SIGKILLs its whole process group `delay` seconds
    after `step_line` is printed, and checks that the build was still
    running then."""
    proc = subprocess.Popen([*SCONS, *args], cwd=checkout.root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    for line in proc.stdout:
        if line.startswith(step_line):
            time.sleep(delay)
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the build ended before {step_line!r} was killed"


# The digits model compiles in under a second (so the kill comes soon after
# the step starts); cargo rebuilds two crates for digits.wasm in several.
@pytest.mark.parametrize("step,delay,edit", [
    ("Compiling model digits", 0.2,
     ("models/digits/model.json", lambda s: s.replace('"source": "', '"source": "a killed build; ', 1))),
    ("Building digits.wasm", 1.5, ("rust/vision/src/lib.rs", lambda s: s + "\n// killed build\n")),
])
def test_a_killed_build_completes_correctly_when_run_again(checkout, digit_image, step, delay, edit):
    checkout.edit(*edit)
    kill_during(checkout, step, delay, "digits")
    ran, log = checkout.build()
    assert "build digits.wasm" in ran, log
    image, label = digit_image
    assert checkout.classify("build/digits/digits.wasm", image) == checkout.digit_label(label)
    assert checkout.build()[0] == set()
    assert not list((checkout.root / "build").rglob("*.tmp"))


def test_parallel_and_other_directory_builds_are_byte_identical(checkout, tmp_path_factory):
    """-j1 in a second checkout (its own cargo target dir, no cache) makes the
    same bytes as the first checkout's current state rebuilt there."""
    checkout.build()
    other = Checkout(copy_repo(tmp_path_factory.mktemp("checkout2")))
    other.take_edits_from(checkout)
    ran, log = other.build("-j1", "--cache-disable")
    assert ran == ALL_STEPS, log
    mine = {k: v for k, v in checkout.digest().items() if "run-model" not in k and "wascc" not in k}
    assert other.digest() == mine


def test_cache_serves_a_second_checkout_without_compiling(checkout, shared_cache, tmp_path_factory):
    other = Checkout(copy_repo(tmp_path_factory.mktemp("checkout3")), cache=shared_cache)
    # The first checkout's current sources, whose artifacts the cache holds.
    other.take_edits_from(checkout)
    checkout.build()  # make sure the cache has the current state
    out = other.scons(*TARGETS)
    assert steps(out.stdout) == set(), out.stdout
    assert "Retrieved `build/models/efficientnet_lite0/libefficientnet_lite0.a' from cache" in out.stdout
    assert not (other.root / "build" / "cargo").exists()  # cargo never ran
    mine = {k: v for k, v in checkout.digest().items() if "run-model" not in k and "wascc" not in k}
    assert other.digest() == mine


def test_clean_removes_every_artifact_and_the_next_build_is_complete(checkout, digit_image):
    checkout.scons("-c", *TARGETS, "run-model", "wascc")
    left = [p for p in (checkout.root / "build").rglob("*") if p.is_file()
            and "digit-images" not in p.parts]
    assert left == []
    ran, log = checkout.build("--cache-disable")
    assert ran == ALL_STEPS, log
    image, label = digit_image
    assert checkout.classify("build/digits/digits.wasm", image) == checkout.digit_label(label)
