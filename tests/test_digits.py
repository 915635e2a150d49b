"""The second model, trained by the build itself: `scons digits` trains the
digits MLP, compiles it and links it into the classifier app; on the
held-out test split, the wasm module's answers equal onnxruntime's."""

import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from conftest import wasmtime_run


@pytest.fixture(scope="module")
def built(checkout, checkout_scons):
    checkout_scons("-Q", "digits")
    subprocess.run([sys.executable, "models/digits/make_images.py", "build/test-digit-images"],
                   cwd=checkout, check=True, capture_output=True)
    return checkout / "build/digits/digits.wasm"


def onnxruntime_predictions(images, top):
    session = onnxruntime.InferenceSession(str(top / "build/models/digits/digits.onnx"),
                                           providers=["CPUExecutionProvider"])
    predictions = []
    for image in images:
        pixels = np.asarray(Image.open(image).convert("L"), dtype=np.float32) / 15.9375
        logits = session.run(None, {"pixels": pixels[None, None]})[0]
        predictions.append(str(int(logits.argmax())))
    return predictions


def test_wasm_matches_onnxruntime_on_the_test_split(built, checkout):
    images = sorted((checkout / "build" / "test-digit-images").glob("*.png"))
    assert len(images) == 297
    out = wasmtime_run("--dir", ".", built.relative_to(checkout), *(p.relative_to(checkout) for p in images),
                       cwd=checkout, timeout=300)
    assert out.returncode == 0, out.stderr
    wasm = [line.rsplit(": ", 1)[1] for line in out.stdout.splitlines()]
    assert wasm == onnxruntime_predictions(images, checkout)
    truth = [p.stem.split("_")[1] for p in images]
    accuracy = np.mean([w == t for w, t in zip(wasm, truth)])
    assert accuracy > 0.9, accuracy


def test_imports_only_wasi(built):
    import wasmtime

    module = wasmtime.Module.from_file(wasmtime.Engine(), str(built))
    assert {imp.module for imp in module.imports} == {"wasi_snapshot_preview1"}
