"""Valid images whose decoding needs hundreds of MiB, made in a second:
PNG rows of zeros compress about 1000 to 1, and a flat JPEG is small."""
import io
import struct
import zlib

PNG_SAMPLES = {0: 1, 2: 3, 4: 2, 6: 4}  # color type: gray, RGB, gray+alpha, RGBA


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def black_png(width, height, depth=8, color=2):
    """A complete PNG of width x height black pixels, rows unfiltered."""
    row = 1 + (width * PNG_SAMPLES[color] * depth + 7) // 8
    deflate = zlib.compressobj(9)
    block = bytes(1 << 20)
    data = []
    for _ in range(height):  # a row at a time, in blocks of 1 MiB
        for start in range(0, row, len(block)):
            data.append(deflate.compress(block[:min(len(block), row - start)]))
    data.append(deflate.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(data))
            + _chunk(b"IEND", b""))


def wide_row_png():
    """Issue 24's repro: 33554432x1 pixels of 16-bit RGBA, one compressed
    row of 256 MiB. Within the old 2^25 pixel limit, it took the decoder
    1.8 GiB."""
    return black_png(33_554_432, 1, depth=16, color=6)


def over_budget_png():
    """11000x10000 8-bit grayscale: 105 MiB of pixels and 315 more as the
    RGB copy a 3-channel model needs, about 450 MiB to decode, over the
    416 MiB limit."""
    return black_png(11_000, 10_000, color=0)


def near_budget_jpeg():
    """6928x4842 (just under 2^25 pixels), progressive, no chroma
    subsampling: the costliest 32 Mpx 8-bit photo, about 400 MiB to decode
    (3 planes, their coefficients as i16, the RGB result), within the limit."""
    from PIL import Image
    out = io.BytesIO()
    Image.new("RGB", (6928, 4842), (200, 120, 40)).save(out, "JPEG", quality=90, progressive=True,
                                                         subsampling=0)
    return out.getvalue()
