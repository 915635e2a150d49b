"""Sanity-check the exported model with onnxruntime, using model.json's preprocessing.

    python models/efficientnet_lite0/check.py    # in the export venv (requirements-export.txt)

Prints the top-3 classes of the photos in models/images/ and fails unless the cat is a cat
class (281-287) and the coffee is espresso (967).
"""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "images"


def preprocess(path: Path, pp: dict) -> np.ndarray:
    """Centre square crop of crop_fraction * shorter side, bicubic resize, (x - mean) / std, NCHW."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    side = int(pp["crop_fraction"] * min(w, h))
    left, top = (w - side + 1) // 2, (h - side + 1) // 2  # same offset rounding as TF's eval crop
    im = im.crop((left, top, left + side, top + side)).resize(tuple(pp["size"]), Image.BICUBIC)
    x = (np.asarray(im, np.float32) - np.float32(pp["mean"])) / np.float32(pp["std"])
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def main() -> None:
    cfg = json.loads((HERE / "model.json").read_text())
    labels = (HERE / cfg["labels"]).read_text(encoding="utf-8").splitlines()
    sess = ort.InferenceSession(str(HERE / cfg["onnx"]), providers=["CPUExecutionProvider"])
    top1 = {}
    for path in sorted(IMAGES.glob("*.[pj][np]g")):
        (logits,) = sess.run(cfg["outputs"], {"input": preprocess(path, cfg["preprocess"])})
        p = np.exp(logits[0] - logits[0].max())
        p /= p.sum()
        top = np.argsort(-p)[:3]
        top1[path.name] = int(top[0])
        print(f"{path.name:20s} " + "; ".join(f"{i} {labels[i].split(',')[0]} {p[i]:.3f}" for i in top))
    assert 281 <= top1["chelsea.png"] <= 287, top1
    assert top1["coffee.png"] == 967, top1
    print("OK")


if __name__ == "__main__":
    main()
