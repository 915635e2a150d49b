"""The main job, for real: `scons wasi` builds the bundled EfficientNet-Lite0
into classify.wasm, which names what is in a photo under the wasmtime CLI
and Node's WASI, and whose logits match onnxruntime's."""

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import wasmtime
from PIL import Image

from big_images import near_budget_jpeg, over_budget_png, wide_row_png
from conftest import wasmtime_run

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "models" / "efficientnet_lite0"
IMAGES = REPO / "models" / "images"
CAT_CLASSES = range(281, 288)
ESPRESSO = 967
MiB = 1 << 20


@pytest.fixture(scope="module")
def built(checkout, checkout_scons):
    """classify.wasm and run-model.wasm, built once by the project's own
    SConstruct with its default settings, in the tests' checkout (they run
    here, in REPO, on its photos)."""
    checkout_scons("-Q", "wasi", "run-model")
    return {"classify": checkout / "build/wasi/classify.wasm",
            "run-model": checkout / "build/wasi/run-model.wasm"}


def run(wasm, *args, node=False, max_memory=None):
    """wasm's run in REPO, `wasmtime run --dir . WASM ARGS` (or Node's WASI);
    max_memory caps its memory (bytes, as wasmtime's -W max-memory-size)."""
    if node:
        return subprocess.run([sys.executable, str(REPO / "tools/node_wasi.py"), "--dir", ".",
                               str(wasm), *map(str, args)],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    limit = ["-W", f"max-memory-size={max_memory}"] if max_memory else []
    return wasmtime_run(*limit, "--dir", ".", wasm, *args, cwd=REPO, timeout=300)


def labels():
    return (MODEL_DIR / "labels.txt").read_text().splitlines()


def rel(path):
    return path.relative_to(REPO)


def test_chelsea_is_a_cat(built):
    out = run(built["classify"], rel(IMAGES / "chelsea.png"))
    assert out.returncode == 0, out.stderr
    assert labels().index(out.stdout.strip()) in CAT_CLASSES


def test_coffee_is_espresso(built):
    out = run(built["classify"], rel(IMAGES / "coffee.png"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == labels()[ESPRESSO]


def test_top_n_lists_probabilities_best_first(built):
    out = run(built["classify"], "--top", "5", rel(IMAGES / "coffee.png"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 5
    probs = [float(line.split()[0]) for line in lines]
    assert probs == sorted(probs, reverse=True)
    assert 0.9 < probs[0] <= 1.0 and sum(probs) <= 1.0001
    assert lines[0].split(None, 1)[1] == labels()[ESPRESSO]


def test_several_images_are_prefixed(built):
    photos = [rel(IMAGES / "chelsea.png"), rel(IMAGES / "rocket.jpg")]
    out = run(built["classify"], *photos)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(p) for p in photos]


def test_run_wasi_classifies_with_the_wasmtime_cli(built, checkout_scons, tmp_path):
    """`./dev run` is `scons run-wasi`: `wasmtime run --dir . classify.wasm
    $IMAGE`, which caches what it compiles under the shell's $XDG_CACHE_HOME."""
    out = checkout_scons("-Q", "run-wasi", "IMAGE=models/images/coffee.png",
                         env={"XDG_CACHE_HOME": str(tmp_path)}, capture_output=True, text=True)
    assert out.stdout == ("Classifying models/images/coffee.png with build/wasi/classify.wasm"
                          f" under wasmtime\n{labels()[ESPRESSO]}\n")
    assert [p for p in (tmp_path / "wasmtime" / "modules").rglob("*") if p.is_file()]


def test_run_wasi_without_wasmtime_says_so_in_one_line(built, checkout_scons):
    out = checkout_scons("-Q", "run-wasi", env={"WASMTIME": "/nonexistent/wasmtime"}, check=False,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr == ("scons: *** [run-wasi] WASMTIME=/nonexistent/wasmtime: "
                          "not an executable program\n")


def test_node_wasi_prints_the_same(built):
    args = ["--top", "3", rel(IMAGES / "chelsea.png"), rel(IMAGES / "rocket.jpg")]
    wasmtime_out = run(built["classify"], *args)
    node_out = run(built["classify"], *args, node=True)
    assert wasmtime_out.returncode == node_out.returncode == 0, node_out.stderr
    assert node_out.stdout == wasmtime_out.stdout


@pytest.mark.parametrize("wasm", ["classify", "run-model"])
def test_imports_only_wasi(built, wasm):
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(built[wasm]))
    assert {imp.module for imp in module.imports} == {"wasi_snapshot_preview1"}


def png_header(width, height):
    """The signature and IHDR chunk of an RGB PNG, with a valid CRC."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def jpeg_header(width, height):
    """SOI and a baseline frame header (SOF0) of a 3-component JPEG."""
    components = b"".join(bytes([i, 0x11, 0]) for i in (1, 2, 3))
    sof = struct.pack(">BHHB", 8, height, width, 3) + components
    return b"\xff\xd8\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof


def bad_file_cases(tmp):
    """{path: what its error line must say}, for files that must each get a
    one-line error without stopping the program."""
    def file(name, data):
        path = tmp / name
        path.write_bytes(data)
        return path

    png = (IMAGES / "chelsea.png").read_bytes()
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0xFF  # inside the image data: its CRC no longer matches
    oversize = tmp / "oversize.png"
    with open(oversize, "wb") as f:  # sparse: takes no disk space
        f.write(png_header(64, 64))
        f.truncate(200 << 20)
    directory = tmp / "folder.png"
    directory.mkdir(exist_ok=True)
    return {
        "missing.png": "cannot read",
        directory: "is a directory",
        oversize: "more than the limit of 134217728 bytes",
        file("notes.txt", b"not an image\n"): "not a decodable",
        file("empty.jpg", b""): "not a decodable",
        file("truncated.png", png[:5000]): "not a decodable",
        file("flipped.png", bytes(flipped)): "not a decodable",
        file("truncated.jpg", (IMAGES / "rocket.jpg").read_bytes()[:3000]): "not a decodable",
        file("animation.gif", b"GIF89a" + struct.pack("<HH", 8, 8) + bytes(64)): "not a decodable",
        file("bitmap.bmp", b"BM" + bytes(64)): "not a decodable",
        # decompression bombs: refused from the header, before any allocation
        file("bomb.png", png_header(100_000, 100_000)):
            "100000x100000 pixels, 8-bit RGB PNG: decoding needs about ",
        file("bomb.jpg", jpeg_header(65_000, 65_000)):
            "65000x65000 pixels, 8-bit color JPEG: decoding needs about ",
    }


def test_bad_files_get_one_line_errors_and_exit_1(built, tmp_path):
    work = REPO / "build" / "test-bad-images"
    work.mkdir(parents=True, exist_ok=True)
    for path, message in bad_file_cases(work).items():
        target = rel(Path(path)) if Path(path).is_absolute() else Path("build") / path
        out = run(built["classify"], target)
        assert out.returncode == 1, (path, out.stderr)
        assert out.stdout == ""
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {target}: "), out.stderr
        assert message in lines[0]
        assert "panicked" not in out.stderr and "trapped" not in out.stderr


def test_good_files_still_classified_beside_bad_ones(built):
    """Every bad file of one run gets its line, in order, and the photo
    among them is still classified."""
    work = REPO / "build" / "test-bad-images"
    work.mkdir(parents=True, exist_ok=True)
    bad = [rel(Path(p)) if Path(p).is_absolute() else Path("build") / p for p in bad_file_cases(work)]
    coffee = rel(IMAGES / "coffee.png")
    out = run(built["classify"], *bad[:3], coffee, *bad[3:])
    assert out.returncode == 1
    assert out.stdout == f"{coffee}: {labels()[ESPRESSO]}\n"
    errors = out.stderr.splitlines()
    assert [line.split(": ")[1] for line in errors] == [str(p) for p in bad], out.stderr


@pytest.fixture(scope="module")
def big_images():
    """The directory, relative to REPO, of the valid images below."""
    work = Path("build") / "test-big-images"
    (REPO / work).mkdir(parents=True, exist_ok=True)
    images = {"wide-row.png": wide_row_png(), "gray.png": over_budget_png(),
              "near-budget.jpg": near_budget_jpeg()}
    for name, data in images.items():
        (REPO / work / name).write_bytes(data)
    return work


@pytest.mark.parametrize("name,message", [
    # issue 24: within the old pixel limit, it took the decoder 1.8 GiB
    ("wide-row.png", "33554432x1 pixels, 16-bit RGBA PNG: decoding needs about 1890 MiB"),
    ("gray.png", "11000x10000 pixels, 8-bit grayscale PNG: decoding needs about 451 MiB"),
])
def test_valid_images_over_the_memory_limit_are_refused_from_the_header(built, big_images, name,
                                                                        message):
    """One line and exit 1, not a trap: under 64 MiB of memory, which the
    module's own 30 MiB and the file fit, so nothing of the image was."""
    path = big_images / name
    out = run(built["classify"], path, max_memory=64 * MiB)
    assert (out.returncode, out.stdout) == (1, ""), out.stderr
    assert out.stderr == f"error: {path}: image is {message}, more than the limit of 416 MiB\n"


def test_a_valid_image_within_the_limit_is_classified_within_512_mib(built, big_images):
    """The costliest 32 Mpx photo, about 400 MiB to decode, fits the limit
    and a 512 MiB memory (`wasmtime run -W max-memory-size=536870912`)."""
    out = run(built["classify"], "--top", "1", big_images / "near-budget.jpg", max_memory=512 * MiB)
    assert out.returncode == 0, out.stderr
    probability, label = out.stdout.split(None, 1)
    assert 0 < float(probability) <= 1 and label.strip() in labels()


def test_out_of_memory_is_reported_as_such(built, big_images):
    """Under a memory smaller than the limit assumes, an image within the
    limit still fails an allocation: the run says so before it traps."""
    out = run(built["classify"], big_images / "near-budget.jpg", max_memory=128 * MiB)
    assert out.returncode == 134 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert lines[0].startswith("memory allocation of ") and lines[0].endswith(" bytes failed"), out.stderr
    assert "wasm trap: wasm `unreachable` instruction executed" in out.stderr


def test_usage_errors(built):
    assert run(built["classify"]).returncode == 2
    out = run(built["classify"], "--top", "zero", "x.png")
    assert out.returncode == 2 and "--top" in out.stderr


# --- numerics against onnxruntime ---------------------------------------------

def preprocess(path, meta):
    """model.json's preprocessing, with PIL: centred crop, resize, normalise."""
    p = meta["preprocess"]
    img = Image.open(path).convert("RGB")
    w, h = img.size
    tw, th = p["size"]
    scale = min(w / tw, h / th) * p["crop_fraction"]
    cw, ch = round(tw * scale), round(th * scale)
    left, top = (w - cw) // 2, (h - ch) // 2
    img = img.crop((left, top, left + cw, top + ch)).resize((tw, th), Image.BICUBIC)
    x = (np.asarray(img, dtype=np.float32) - p["mean"]) / p["std"]
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def wasm_logits(built, tensor, io_dir):
    io_dir.mkdir(parents=True, exist_ok=True)
    tensor.tofile(io_dir / "input_0.bin")
    out = run(built["run-model"], rel(io_dir))
    assert out.returncode == 0, out.stderr
    return np.fromfile(io_dir / "output_0.bin", dtype=np.float32).reshape(1, -1)


@pytest.fixture(scope="module")
def reference():
    return onnxruntime.InferenceSession(str(MODEL_DIR / "efficientnet_lite0.onnx"),
                                        providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("photo", ["chelsea.png", "coffee.png", "noise"])
def test_logits_match_onnxruntime(built, reference, photo):
    meta = json.loads((MODEL_DIR / "model.json").read_text())
    if photo == "noise":
        tensor = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    else:
        tensor = preprocess(IMAGES / photo, meta)
    expected = reference.run(None, {"input": tensor})[0]
    got = wasm_logits(built, tensor, REPO / "build" / "test-io" / photo.split(".")[0])
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
    if photo == "chelsea.png":
        assert int(got.argmax()) in CAT_CLASSES
    if photo == "coffee.png":
        assert int(got.argmax()) == ESPRESSO


def test_the_module_sees_only_the_directory_it_was_given(built):
    """Given models/images only, it reads photos there and nothing else: not
    a file beside it, not one reached with .., not an absolute path."""
    outside = ["README.md", "models/images/../../README.md", "/etc/passwd", str(REPO / "README.md")]
    out = wasmtime_run("--dir", "models/images", built["classify"], "models/images/coffee.png",
                       *outside, cwd=REPO, timeout=300)
    assert out.returncode == 1
    assert out.stdout == f"models/images/coffee.png: {labels()[ESPRESSO]}\n"
    errors = out.stderr.splitlines()
    assert [line.split(": ")[1] for line in errors] == outside, out.stderr
    assert all("cannot read" in line for line in errors), out.stderr


def test_relaxed_simd_build_applies_its_own_database_and_matches_onnxruntime(
        scons, reference, tmp_path):
    """The bundled model built with relaxed SIMD, whose kernels the committed
    database tuned for fused multiply-adds, computes what onnxruntime does."""
    built = scons(f"MODELS={MODEL_DIR / 'model.json'}", "TVM_TARGET_FEATURES=+simd128,+relaxed-simd",
                  cwd=tmp_path)
    sys.path.insert(0, str(REPO / "site_scons"))
    from wasmml.tuning_db import find_tuning_db

    applied = find_tuning_db(str(MODEL_DIR), "nhwc", "+simd128,+relaxed-simd")
    assert applied == str(MODEL_DIR / "tuning" / "nhwc" / "simd128+relaxed-simd")
    assert "(wasm32 +simd128,+relaxed-simd, nhwc, tuned)" in built.stdout, built.stdout
    tensor = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    got = wasm_logits({"run-model": tmp_path / "build" / "efficientnet_lite0" / "run-model.wasm"},
                      tensor, REPO / "build" / "test-io" / "relaxed")
    np.testing.assert_allclose(got, reference.run(None, {"input": tensor})[0], atol=1e-3, rtol=0)
