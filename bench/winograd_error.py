"""Float32 error of Winograd's F(2x2, 3x3) and F(4x4, 3x3) against the direct 3x3 convolution in float64, on
random tiles summed over the input channels (numpy only; run with any Python that has it):

    python bench/winograd_error.py [--channels 640] [--tiles 200]

codi uses F(2x2, 3x3) (codi_kernels::winograd); this is the check behind not using F(4x4, 3x3).
"""
import argparse

import numpy as np

# F(2x2, 3x3): input transform B^T, filter transform G, output transform A^T (Lavin & Gray 2016).
F23 = (
    [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    [[1, 1, 1, 0], [0, 1, -1, -1]],
)
# F(4x4, 3x3) on the points 0, +-1, +-2 and infinity.
F43 = (
    [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
     [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
)


def max_error(transforms, channels, tiles, rng):
    bt, g, at = (np.array(m, np.float32) for m in transforms)
    n = bt.shape[0]
    m = n - 2
    d = rng.standard_normal((tiles, channels, n, n)).astype(np.float32)
    w = (rng.standard_normal((channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
    exact = np.zeros((tiles, m, m))
    for i in range(m):
        for j in range(m):
            exact[:, i, j] = np.einsum("tcab,cab->t", d[:, :, i:i + 3, j:j + 3].astype(np.float64), w.astype(np.float64))
    u = np.einsum("ia,cab,jb->cij", g, w, g).astype(np.float32)
    v = np.einsum("ia,tcab,jb->tcij", bt, d, bt).astype(np.float32)
    y = np.einsum("ai,tij,bj->tab", at, np.einsum("tcij,cij->tij", v, u).astype(np.float32), at)
    return np.abs(y - exact).max(), np.abs(exact).max()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=640)
    p.add_argument("--tiles", type=int, default=200)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    for name, t in (("F(2x2, 3x3)", F23), ("F(4x4, 3x3)", F43)):
        err, scale = max_error(t, args.channels, args.tiles, rng)
        print(f"{name}: max |winograd - direct| = {err:.2e} (outputs up to {scale:.2f})")


if __name__ == "__main__":
    main()
