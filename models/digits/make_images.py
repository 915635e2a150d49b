"""Write the digits model's test split as 8-bit grayscale PNGs.

    python models/digits/make_images.py OUTDIR

One file per test image, OUTDIR/<index>_<label>.png, where <index> is the
sample's index in load_digits() (1500..1796, the split of train.py) and
<label> its digit. Pixel = round(v * 15.9375) for the data set's v in 0..16,
so 0..255, which the model's preprocessing (x = p / 15.9375) maps back.
"""

import os
import sys

sys.dont_write_bytecode = True  # importing train.py must not leave __pycache__ here
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train import N_SAMPLES, TRAIN_COUNT  # noqa: E402  (the one definition of the split)

SCALE = 15.9375  # 255 / 16


def main(argv):
    if len(argv) != 2:
        print("usage: make_images.py OUTDIR", file=sys.stderr)
        return 2
    try:
        import numpy as np
        from PIL import Image
        from sklearn.datasets import load_digits
    except ImportError as e:
        print(f"make_images.py: error: {e.name} is not installed (pip install numpy pillow scikit-learn)",
              file=sys.stderr)
        return 1
    digits = load_digits()
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    for i in range(TRAIN_COUNT, N_SAMPLES):
        pixels = np.clip(np.floor(digits.images[i] * SCALE + 0.5), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(out, f"{i}_{digits.target[i]}.png"))
    print(f"digits: wrote {N_SAMPLES - TRAIN_COUNT} test images to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
