"""3x3 convolutions by Winograd's minimal filtering, F(m x m, 3 x 3).

A 3x3 convolution with stride 1 is computed per tile of m x m outputs from
an (m+2) x (m+2) patch of input: the patch and the filter both move into
the transform domain, where the convolution is an elementwise product, and
over the input channels a batch of (m+2)^2 matrix products. F(4x4, 3x3)
needs 36 multiplies for 16 outputs instead of 144; small images, too few
tiles of 4x4, use F(2x2, 3x3). The filter's transform
depends only on the weights, so the build does it once (pack_weights) and
the kernel reads the packed weights; the kernel's stages (gather and
transform the input, the matrix products, transform back) are blocks of
one TIR function. Each transform, B^T d B and A^T m A, is computed one
matrix product at a time (two blocks), not as one sum over the patch: on
ResNet50's layers that made the input transform 2.6-5.9x faster.
MetaSchedule's own Winograd rules expect the single sum,
so it tunes the matrix products alone, and the hand-written schedules
(winograd_schedule.py) the whole kernel.

Used by the compiler's nhwc pipeline, on convolutions in NHWC layout
with HWIO weights (winograd_tile says which, and with which tile).
"""

# Outputs per tile side, the larger first: F(4x4, 3x3) needs 36 multiplies
# for 16 outputs (144 direct), F(2x2, 3x3) 16 for 4 (36 direct), and its
# packed weights are 16/9 of the filters' size where F(4x4)'s are 4x.
TILES = (4, 2)
# Below this many input or output channels the transforms cost more than
# the multiplies saved (and such layers are rare in the networks that have
# many 3x3 convolutions).
MIN_CHANNELS = 16
# The matrix products have one row per tile: with fewer, they are too short
# for the kernel to keep its vector registers busy. ResNet50's 7x7 layers
# (4 tiles of 4x4) were slower by F(4x4) than direct; by F(2x2) they have
# 16 tiles, and are faster. The other choices lost when measured
# (docs/tuning.md).
MIN_TILES = 16
NO_GENERIC_RULES = {"schedule_rule": "None"}


def transform_matrices(tile):
    """(A, B, G) of F(tile x tile, 3x3) as float64 numpy arrays, from TVM's
    Cook-Toom construction with its low-error interpolation points:
    Y = A^T [(G g G^T) * (B^T d B)] A."""
    from tvm.topi.nn import winograd_util

    points = winograd_util._interpolation_points(tile + 1)
    return winograd_util._cook_toom_convolution(points, tile, 3)


def pack_weights(hwio, tile):
    """3x3 HWIO weights -> [alpha, alpha, O / block, I, block], alpha =
    tile + 2, block from packing.OUT_BLOCKS: each filter in the transform domain,
    G g G^T, computed in float64."""
    import numpy as np

    from wasmml.compiler.kernels.packing import block_outputs

    _, _, g = transform_matrices(tile)
    packed = np.einsum("ak,klio,bl->abio", g, hwio.astype(np.float64), g)
    return block_outputs(packed).astype(hwio.dtype)


def conv2d_nhwc(data, packed, padding):
    """The TE compute of a stride-1 3x3 convolution, NHWC data and weights
    packed by pack_weights (whose shape says the tile and block sizes); padding is
    (top, left, bottom, right)."""
    from tvm import te, topi
    from tvm.topi.utils import const_matrix

    n, h, w, _ = (int(d) for d in data.shape)
    alpha, _, out_blocks, in_channels, block = (int(d) for d in packed.shape)
    out_channels = out_blocks * block
    tile = alpha - 2
    top, left, bottom, right = padding
    out_h, out_w, tiles_h, tiles_w = _tile_grid(h, w, padding, tile)
    tiles = n * tiles_h * tiles_w
    a_np, b_np, _ = transform_matrices(tile)
    a = const_matrix(a_np.astype("float32"), "A")
    b = const_matrix(b_np.astype("float32"), "B")

    # Padded up to whole tiles: the outputs past out_h, out_w are dropped.
    # The padding, the gathering into tiles and the transforms get no
    # MetaSchedule rule ("None" keeps the generic rules off: MetaSchedule's
    # Winograd rules expect each transform as one sum, and a generic rule
    # could inline a block another rule still refers to, which crashed its
    # search); only the hand-written schedules place them.
    padded = topi.nn.pad(
        data, (0, top, left, 0),
        (0, tiles_h * tile + 2 - h - top, tiles_w * tile + 2 - w - left, 0), name="data_pad",
        attrs=NO_GENERIC_RULES)

    def tile_origin(t):
        return t // (tiles_h * tiles_w), t // tiles_w % tiles_h * tile, t % tiles_w * tile

    def patch(eps, nu, t, c):
        image, y, x = tile_origin(t)
        return padded[image, y + eps, x + nu, c]

    input_tile = te.compute((alpha, alpha, tiles, in_channels), patch, name="input_tile",
                            attrs=NO_GENERIC_RULES)
    data_pack = _two_sided(b, input_tile, "data_pack")  # B^T d B
    ci = te.reduce_axis((0, in_channels), "ci")
    bgemm = te.compute(
        (alpha, alpha, tiles, out_channels),
        lambda eps, nu, t, co: te.sum(
            data_pack[eps, nu, t, ci] * packed[eps, nu, co // block, ci, co % block], axis=[ci]),
        name="bgemm", attrs={"meta_schedule.write_cache_level": [2]})
    inverse = _two_sided(a, bgemm, "inverse")  # A^T m A
    return te.compute(
        (n, out_h, out_w, out_channels),
        lambda i, y, x, co: inverse[y % tile, x % tile,
                                    (i * tiles_h + y // tile) * tiles_w + x // tile, co],
        name="conv2d_winograd")


def _two_sided(m, tiles, name):
    """M^T X M for each tile X of `tiles` ([rows, columns, tile, channel]),
    as two products: `name`_half = M^T X, then `name` = (M^T X) M."""
    from tvm import te

    size, rows, count, channels = (int(d) for d in tiles.shape)
    out = int(m.shape[1])
    r1 = te.reduce_axis((0, size), "r1")
    half = te.compute((out, rows, count, channels),
                      lambda y, nu, t, c: te.sum(tiles[r1, nu, t, c] * m[r1, y], axis=[r1]),
                      name=f"{name}_half", attrs=NO_GENERIC_RULES)
    r2 = te.reduce_axis((0, rows), "r2")
    return te.compute((out, out, count, channels),
                      lambda y, x, t, c: te.sum(half[y, r2, t, c] * m[r2, x], axis=[r2]),
                      name=name, attrs=NO_GENERIC_RULES)


def _tile_grid(h, w, padding, tile):
    """(out_h, out_w, tiles down, tiles across) of a 3x3 stride-1
    convolution of an h x w image padded (top, left, bottom, right)."""
    top, left, bottom, right = padding
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    return out_h, out_w, -(-out_h // tile), -(-out_w // tile)


def winograd_tile(call, data_shape, weight):
    """The tile size this module computes a relax conv2d call with, given
    the shape of its data and its weight as a numpy array (None when not a
    constant): the largest of TILES that makes MIN_TILES tiles, or None
    for a convolution it does not compute."""
    if not _eligible(call, data_shape, weight):
        return None
    n, h, w, _ = data_shape
    for tile in TILES:
        _, _, tiles_h, tiles_w = _tile_grid(h, w, [int(p) for p in call.attrs.padding], tile)
        if n * tiles_h * tiles_w >= MIN_TILES:
            return tile
    return None


def _eligible(call, data_shape, weight):
    from wasmml.compiler.kernels.packing import nhwc_hwio_float32

    return (nhwc_hwio_float32(call, data_shape, weight) and weight.shape[:2] == (3, 3)
            and [int(s) for s in call.attrs.strides] == [1, 1]
            and min(weight.shape[2], weight.shape[3]) >= MIN_CHANNELS)


def replacement(call, data_shape, weight):
    """packing.rewrite's replacement of an eligible conv2d: the
    Winograd kernel on weights packed into the transform domain."""
    tile = winograd_tile(call, data_shape, weight)
    if tile is None:
        return None
    padding = tuple(int(p) for p in call.attrs.padding)  # top, left, bottom, right
    return conv2d_nhwc, pack_weights(weight, tile), (padding,), "conv2d_winograd"
