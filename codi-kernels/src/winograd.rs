//! 3×3 convolutions of stride 1 and padding 1 through Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016). Each 2×2 output tile is Aᵀ[U ⊙ V]A with
//! U = G g Gᵀ (the 3×3 filter, 4×4 after the transform) and V = Bᵀ d B (the 4×4 input tile d), so a layer
//! becomes 16 matrix products [c_out, c_in] × [c_in, tiles]: 16 multiplications per tile and channel pair
//! where the direct convolution takes 36, 2.25× fewer. The transforms' coefficients are 0, ±1 and ±½, which
//! keeps the error at rounding level (tests: against the definition and the im2col kernel).
//!
//! Tiles are taken in blocks of a few dozen: one thread transforms a block's input into V ([16, c_in, tiles]),
//! runs the 16 products into M ([16, c_out, tiles]) on the packed gemm, reading V's panels in place, and
//! transforms M into the output, so the 4× larger transformed tensors never leave the core's caches.
//!
//! The training step's backward uses it twice (`conv::conv2d_backward_f32`): the input gradient is the same
//! kind of convolution (of the output gradient, with the filters turned by 180°), and the weight gradient is
//! accumulated in the transformed domain ([`conv3x3_weight_grad_f32`]).

use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::buffer::as_ptr;
use crate::conv::{per_sample_output, ConvShape};
use crate::math::has_avx2_fma;
use crate::scratch::with_scratch;
use crate::sgemm::{gemm_packed, Lhs, PackRhs, PackedLhs, SendPtr, View, KC, NR};

/// Positions of the 4×4 transformed tile.
const POS: usize = 16;
/// Floats of V and M per block (16 · (c_in + c_out) · tiles): 1 MB, the L2 of a core here (blocks of 16 to 64
/// tiles timed alike in `codi bench ops`).
const BLOCK_FLOATS: usize = 1 << 18;
/// Tiles per block, at least and at most (a multiple of the gemm's panel width NR).
const MIN_TILES: usize = 16;
const MAX_TILES: usize = 256;

/// Tiles of a layer (over the batch) below which the filter transform, paid once per call, costs more than
/// the products save: `codi bench ops` on 1280 → 1280 channels at 8×8, batch 1 (16 tiles), ran slower this
/// way, at 16×16 (64 tiles) faster.
const MIN_LAYER_TILES: usize = 64;

/// Whether `s` can go through here, and gains from it: 3×3, stride 1, padding 1, wide enough on both sides
/// that the products, not the transforms, carry the work, a sample of at least one gemm panel of tiles (blocks
/// do not span samples: 4×4 samples, 4 tiles in a 16-wide panel, ran slower than im2col), and enough tiles to
/// pay for the filter transform.
pub fn applies(s: &ConvShape) -> bool {
    computes(s)
        && s.c_in >= 16
        && s.c_out >= 16
        && s.h.div_ceil(2) * s.w.div_ceil(2) >= NR
        && s.batch * s.h.div_ceil(2) * s.w.div_ceil(2) >= MIN_LAYER_TILES
}

/// Tiles of a layer below which its weight gradient stays on im2col: each block reads and writes all of
/// ∂L/∂U (16 filter-sized matrices) and each thread keeps its own, which only enough tiles amortise. `codi
/// bench ops`, forward + backward: 1,280 channels at 16×16, batch 1 (64 tiles), ran slower this way, 640 at
/// 32×32 (256 tiles) alike, 320 at 64×64 (1,024 tiles) and the mid shapes (512 and more) faster.
const MIN_GRAD_TILES: usize = 512;

/// Whether the weight gradient of `s` goes through here ([`conv3x3_weight_grad_f32`]).
pub fn applies_to_weight_grad(s: &ConvShape) -> bool {
    applies(s) && s.batch * s.h.div_ceil(2) * s.w.div_ceil(2) >= MIN_GRAD_TILES
}

/// Whether `s` is a convolution this computes: 3×3, stride 1, padding 1.
fn computes(s: &ConvShape) -> bool {
    s.kh == 3 && s.kw == 3 && s.stride == [1, 1] && s.pad == [1, 1]
}

/// The tile grid of one sample and the block size.
#[derive(Clone, Copy)]
struct Grid {
    /// Tiles down and across (the last ones reach past an odd edge).
    th: usize,
    tw: usize,
    /// Tiles per block and the padded row length of V and M (a multiple of NR).
    nt: usize,
    ld: usize,
    /// The zero-bordered input plane: [2·th + 2, 2·tw + 2].
    hp: usize,
    wp: usize,
}

impl Grid {
    /// The forward's blocks: as many tiles as keep V and M in L2.
    fn new(s: &ConvShape) -> Self {
        let fit = BLOCK_FLOATS / (POS * (s.c_in + s.c_out)) / NR * NR;
        Self::with_tiles(s, fit.clamp(MIN_TILES, MAX_TILES))
    }

    /// Blocks of `nt` tiles (fewer if the sample has fewer).
    fn with_tiles(s: &ConvShape, nt: usize) -> Self {
        let (th, tw) = (s.h.div_ceil(2), s.w.div_ceil(2));
        let nt = nt.min(th * tw);
        Self {
            th,
            tw,
            nt,
            ld: nt.div_ceil(NR) * NR,
            hp: 2 * th + 2,
            wp: 2 * tw + 2,
        }
    }

    fn tiles(&self) -> usize {
        self.th * self.tw
    }

    /// Floats between the 16 positions of a block's V ([c_in, ld] each) and of its M ([c_out, ld]): one
    /// cache line more than the matrix, since at a power-of-two stride the 16 streams of a transform would
    /// all fall into the same L1 set.
    fn position_strides(&self, s: &ConvShape) -> (usize, usize) {
        (s.c_in * self.ld + NR, s.c_out * self.ld + NR)
    }

    /// The tiles t0..t0+n as runs along one tile row: (tile row, first tile column, length, offset in block).
    fn runs(&self, t0: usize, n: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        let mut t = t0;
        std::iter::from_fn(move || {
            (t < t0 + n).then(|| {
                let (ty, tx) = (t / self.tw, t % self.tw);
                let len = (self.tw - tx).min(t0 + n - t);
                let run = (ty, tx, len, t - t0);
                t += len;
                run
            })
        })
    }
}

/// U = G g Gᵀ for every filter, packed per position: 16 left operands [c_out, c_in].
fn transform_weights(weight: &[f32], s: &ConvShape) -> Vec<PackedLhs> {
    PackedLhs::build_many::<POS>(s.c_out, s.c_in, |o, c| {
        let g = &weight[(o * s.c_in + c) * 9..][..9];
        // G applied to three values: (a, (a + b + c)/2, (a − b + c)/2, c). G g column by column, then each
        // row of that the same way: (G g) Gᵀ.
        let combine = |r: [f32; 3]| {
            [
                r[0],
                0.5 * (r[0] + r[1] + r[2]),
                0.5 * (r[0] - r[1] + r[2]),
                r[2],
            ]
        };
        let cols: [[f32; 4]; 3] = std::array::from_fn(|j| combine([g[j], g[3 + j], g[6 + j]]));
        let u: [[f32; 4]; 4] =
            std::array::from_fn(|a| combine([cols[0][a], cols[1][a], cols[2][a]]));
        std::array::from_fn(|p| u[p / 4][p % 4])
    })
}

/// One position's V ([c_in, ld], row-major), read in place by the gemm: row p of the panel at column j is
/// the NR floats at j + p·ld.
struct InPlace {
    ptr: *const f32,
    ld: usize,
}

// SAFETY: read only, by the thread that owns the block.
unsafe impl Sync for InPlace {}

impl PackRhs for InPlace {
    fn pack(&self, out: &mut [f32], pc: usize, kc: usize, jc: usize, nc: usize) {
        // Only reached without AVX2 (or for a narrow tail, which `ld` rules out): a plain view packs it.
        View {
            ptr: self.ptr,
            rs: self.ld,
            cs: 1,
        }
        .pack(out, pc, kc, jc, nc)
    }

    fn row_offsets(&self, pc: usize, offsets: &mut [usize]) -> bool {
        for (p, o) in offsets.iter_mut().enumerate() {
            *o = (pc + p) * self.ld;
        }
        true
    }

    fn panel_start(&self, j: usize) -> Option<*const f32> {
        // SAFETY: j < ld, inside the position's rows.
        Some(unsafe { self.ptr.add(j) })
    }
}

/// x: [batch, c_in, h, w], weight: [c_out, c_in, 3, 3], bias: \[c_out\] → [batch, c_out, h, w], for a 3×3
/// convolution of stride 1 and padding 1 (any sizes; [`applies`] says where it pays).
pub fn conv3x3_f32(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: ConvShape) -> Vec<f32> {
    assert!(
        computes(&s),
        "{s:?} is not a 3×3, stride-1, padding-1 convolution"
    );
    assert_eq!(x.len(), s.batch * s.c_in * s.h * s.w);
    assert_eq!(weight.len(), s.c_out * s.c_in * 9);
    let u = transform_weights(weight, &s);
    let grid = Grid::new(&s);
    let plane = s.h * s.w;
    let blocks = grid.tiles().div_ceil(grid.nt);
    let sample = |n: usize, on: &mut [MaybeUninit<f32>], par: bool| {
        let xn = &x[n * s.c_in * plane..(n + 1) * s.c_in * plane];
        let out = SendPtr(as_ptr(on));
        with_bordered(xn, &s, &grid, |xp| {
            let block = |b: usize| {
                let t0 = b * grid.nt;
                // SAFETY: blocks write disjoint output tiles of this sample.
                unsafe {
                    run_block(
                        xp,
                        &u,
                        bias,
                        &s,
                        &grid,
                        t0,
                        grid.nt.min(grid.tiles() - t0),
                        out,
                    )
                }
            };
            if par {
                (0..blocks).into_par_iter().for_each(block);
            } else {
                (0..blocks).for_each(block);
            }
        });
    };
    // SAFETY: the blocks of a sample cover all its tiles, and each tile writes its output pixels.
    unsafe { per_sample_output(&s, s.c_out * plane, sample) }
}

/// Runs `f` on the sample copied into a zero-bordered [c_in, hp, wp] plane (one row and column of zeros
/// before, the rest after), so that every 4×4 input tile lies inside it.
fn with_bordered<R>(xn: &[f32], s: &ConvShape, g: &Grid, f: impl FnOnce(&[f32]) -> R) -> R {
    let (hp, wp) = (g.hp, g.wp);
    with_scratch(s.c_in * hp * wp, |xp| {
        for (xc, pc) in xn.chunks(s.h * s.w).zip(xp.chunks_mut(hp * wp)) {
            pc[..wp].fill(0.0);
            pc[(s.h + 1) * wp..].fill(0.0);
            for (row, prow) in xc.chunks(s.w).zip(pc[wp..].chunks_mut(wp)) {
                prow[0] = 0.0;
                prow[1..1 + s.w].copy_from_slice(row);
                prow[1 + s.w..].fill(0.0);
            }
        }
        f(xp)
    })
}

/// Tiles t0..t0+nt of one sample: input transform, the 16 products, output transform into `out` ([c_out, h, w]).
///
/// # Safety
/// `out` addresses the sample's output; no other thread writes these tiles.
#[allow(clippy::too_many_arguments)]
unsafe fn run_block(
    xp: &[f32],
    u: &[PackedLhs],
    bias: Option<&[f32]>,
    s: &ConvShape,
    g: &Grid,
    t0: usize,
    nt: usize,
    out: SendPtr,
) {
    let ld = g.ld;
    let (v_pos, m_pos) = g.position_strides(s);
    let (v_len, m_len) = (POS * v_pos, POS * m_pos);
    with_scratch(v_len + m_len, |buf| {
        let (v, m) = buf.split_at_mut(v_len);
        transform_input(xp, s, g, t0, nt, v, v_pos);
        for (p, up) in u.iter().enumerate() {
            let b = InPlace {
                ptr: v[p * v_pos..].as_ptr(),
                ld,
            };
            gemm_packed(
                ld,
                m[p * m_pos..].as_mut_ptr(),
                ld,
                false,
                Lhs::Packed(up),
                &b,
                false,
            );
        }
        let plane = s.h * s.w;
        for o in 0..s.c_out {
            let mo = m[o * ld..].as_ptr();
            let bo = bias.map_or(0.0, |b| b[o]);
            let oc = out.get().add(o * plane);
            for (ty, tx, len, j) in g.runs(t0, nt) {
                let (y, x0) = (2 * ty, 2 * tx);
                // The second row of an odd-height sample's last tile row lies outside.
                let rows = [
                    Some(oc.add(y * s.w)),
                    (y + 1 < s.h).then(|| oc.add((y + 1) * s.w)),
                ];
                let vec = vector_tiles(tx, len, s.w);
                #[cfg(target_arch = "x86_64")]
                for k in (0..vec).step_by(8) {
                    x86::output8(
                        mo.add(j + k),
                        m_pos,
                        bo,
                        rows.map(|r| r.map(|r| r.add(x0 + 2 * k))),
                    );
                }
                for k in vec..len {
                    let x = x0 + 2 * k;
                    let cols = (s.w - x).min(2);
                    output1(
                        mo.add(j + k),
                        m_pos,
                        bo,
                        rows.map(|r| r.map(|r| r.add(x))),
                        cols,
                    );
                }
            }
        }
    })
}

/// The weight gradient of [`conv3x3_f32`] given the output gradient `gy` ([batch, c_out, h, w]):
/// [c_out, c_in, 3, 3]. Since y = Aᵀ[U ⊙ V]A per tile, ∂L/∂U = Σ over tiles of (A ∂y Aᵀ) ⊙ V, one product
/// [c_out, tiles] × [tiles, c_in] per position, accumulated block by block; then ∂L/∂g = Gᵀ (∂L/∂U) G.
pub fn conv3x3_weight_grad_f32(x: &[f32], gy: &[f32], s: ConvShape) -> Vec<f32> {
    assert!(
        computes(&s),
        "{s:?} is not a 3×3, stride-1, padding-1 convolution"
    );
    let plane = s.h * s.w;
    assert_eq!(x.len(), s.batch * s.c_in * plane);
    assert_eq!(gy.len(), s.batch * s.c_out * plane);
    // The tiles are the products' depth here, and every block reads and writes all of ∂L/∂U (16 filter-sized
    // matrices): blocks as deep as one depth block of the gemm.
    let grid = Grid::with_tiles(&s, KC);
    let blocks = grid.tiles().div_ceil(grid.nt);
    let du_len = POS * s.c_out * s.c_in;
    let add = |mut a: Vec<f32>, b: Vec<f32>| {
        a.iter_mut().zip(&b).for_each(|(p, q)| *p += q);
        a
    };
    // Block b of sample n (bordered: xp), added into du.
    let block = |n: usize, xp: &[f32], du: &mut [f32], b: usize| {
        let t0 = b * grid.nt;
        let gyn = &gy[n * s.c_out * plane..(n + 1) * s.c_out * plane];
        // SAFETY: du holds [16, c_out, c_in]; the block reads its own tiles.
        unsafe { grad_block(xp, gyn, &s, &grid, t0, grid.nt.min(grid.tiles() - t0), du) }
    };
    let threads = rayon::current_num_threads();
    let du = if s.batch >= threads {
        (0..s.batch)
            .into_par_iter()
            .with_min_len(s.batch.div_ceil(threads))
            .fold(
                || vec![0f32; du_len],
                |mut du, n| {
                    let xn = &x[n * s.c_in * plane..(n + 1) * s.c_in * plane];
                    with_bordered(xn, &s, &grid, |xp| {
                        (0..blocks).for_each(|b| block(n, xp, &mut du, b))
                    });
                    du
                },
            )
            .reduce_with(add)
            .unwrap_or_else(|| vec![0f32; du_len])
    } else {
        let mut total = vec![0f32; du_len];
        for n in 0..s.batch {
            let xn = &x[n * s.c_in * plane..(n + 1) * s.c_in * plane];
            let part = with_bordered(xn, &s, &grid, |xp| {
                (0..blocks)
                    .into_par_iter()
                    .with_min_len(blocks.div_ceil(threads))
                    .fold(
                        || vec![0f32; du_len],
                        |mut du, b| {
                            block(n, xp, &mut du, b);
                            du
                        },
                    )
                    .reduce_with(add)
            });
            if let Some(part) = part {
                total = add(total, part);
            }
        }
        total
    };
    // ∂L/∂g = Gᵀ (∂L/∂U) G for every filter: along each row then each column, (u0 + (u1 + u2)/2,
    // (u1 − u2)/2, (u1 + u2)/2 + u3).
    let back = |u: [f32; 4]| {
        [
            u[0] + 0.5 * (u[1] + u[2]),
            0.5 * (u[1] - u[2]),
            0.5 * (u[1] + u[2]) + u[3],
        ]
    };
    let filters = s.c_out * s.c_in;
    let mut dw = vec![0f32; filters * 9];
    dw.par_chunks_mut(9).enumerate().for_each(|(f, out)| {
        let u: [[f32; 4]; 4] =
            std::array::from_fn(|a| std::array::from_fn(|b| du[(4 * a + b) * filters + f]));
        // Columns of u first (over a), then rows (over b).
        let cols: [[f32; 3]; 4] =
            std::array::from_fn(|b| back([u[0][b], u[1][b], u[2][b], u[3][b]]));
        for i in 0..3 {
            let row = back([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
            out[3 * i..3 * i + 3].copy_from_slice(&row);
        }
    });
    dw
}

/// Tile columns of a vector group in the kernels' lane order (`x86::deinterleave`): tile k of the group sits
/// in column LANE\[k\].
const LANE: [usize; 8] = [0, 1, 4, 5, 2, 3, 6, 7];

/// One block's share of ∂L/∂U, added into du ([16, c_out, c_in]).
///
/// # Safety
/// du holds 16 · c_out · c_in floats; `xp` is the bordered sample and `gy` its output gradient.
unsafe fn grad_block(
    xp: &[f32],
    gy: &[f32],
    s: &ConvShape,
    g: &Grid,
    t0: usize,
    nt: usize,
    du: &mut [f32],
) {
    let ld = g.ld;
    let (v_pos, m_pos) = g.position_strides(s);
    with_scratch(POS * (v_pos + m_pos), |buf| {
        let (v, m) = buf.split_at_mut(POS * v_pos);
        transform_input(xp, s, g, t0, nt, v, v_pos);
        // A ∂y Aᵀ per tile, in V's column order, zeros past the block's tiles and the sample's edges.
        let plane = s.h * s.w;
        for o in 0..s.c_out {
            let go = &gy[o * plane..(o + 1) * plane];
            let at = |y: usize, x: usize| {
                if y < s.h && x < s.w {
                    go[y * s.w + x]
                } else {
                    0.0
                }
            };
            let mo = m[o * ld..].as_mut_ptr();
            for (ty, tx, len, j) in g.runs(t0, nt) {
                let vec = vector_tiles(tx, len, s.w);
                for k in 0..len {
                    let col = if k < vec {
                        j + k / 8 * 8 + LANE[k % 8]
                    } else {
                        j + k
                    };
                    let (y, x) = (2 * ty, 2 * (tx + k));
                    let r0 = [at(y, x), at(y, x + 1)];
                    let r1 = [at(y + 1, x), at(y + 1, x + 1)];
                    // A r: the rows r0, r0 + r1, r0 − r1, −r1; then the same along each row.
                    let rows: [[f32; 2]; 4] = [
                        r0,
                        [r0[0] + r1[0], r0[1] + r1[1]],
                        [r0[0] - r1[0], r0[1] - r1[1]],
                        [-r1[0], -r1[1]],
                    ];
                    for (a, [p, q]) in rows.into_iter().enumerate() {
                        for (b, val) in [p, p + q, p - q, -q].into_iter().enumerate() {
                            *mo.add((4 * a + b) * m_pos + col) = val;
                        }
                    }
                }
            }
            if nt < ld {
                for p in 0..POS {
                    std::slice::from_raw_parts_mut(mo.add(p * m_pos + nt), ld - nt).fill(0.0);
                }
            }
        }
        let (co, ci) = (s.c_out, s.c_in);
        for p in 0..POS {
            let grad = Lhs::Rows {
                ptr: m[p * m_pos..].as_ptr(),
                rs: ld,
                m: co,
                k: ld,
            };
            // Vᵀ: tile i, channel c at c·ld + i.
            let vt = View {
                ptr: v[p * v_pos..].as_ptr(),
                rs: 1,
                cs: ld,
            };
            gemm_packed(
                ci,
                du[p * co * ci..].as_mut_ptr(),
                ci,
                true,
                grad,
                &vt,
                false,
            );
        }
    })
}

/// V = Bᵀ d B for the tiles t0..t0+nt of the bordered sample `xp` into `v`: position ξ of channel c at
/// v[ξ·v_pos + c·ld], tile j of the block in column j (a vector group's tiles in lane order), columns past nt
/// zero.
///
/// # Safety
/// `v` holds 16 · v_pos floats with v_pos ≥ c_in · ld.
unsafe fn transform_input(
    xp: &[f32],
    s: &ConvShape,
    g: &Grid,
    t0: usize,
    nt: usize,
    v: &mut [f32],
    v_pos: usize,
) {
    let ld = g.ld;
    for c in 0..s.c_in {
        let xc = &xp[c * g.hp * g.wp..(c + 1) * g.hp * g.wp];
        let vc = v[c * ld..].as_mut_ptr();
        for (ty, tx, len, j) in g.runs(t0, nt) {
            let row = |r: usize, tx: usize| xc[(2 * ty + r) * g.wp + 2 * tx..].as_ptr();
            let vec = vector_tiles(tx, len, s.w);
            #[cfg(target_arch = "x86_64")]
            for k in (0..vec).step_by(8) {
                x86::input8([0, 1, 2, 3].map(|r| row(r, tx + k)), vc.add(j + k), v_pos);
            }
            for k in vec..len {
                input1([0, 1, 2, 3].map(|r| row(r, tx + k)), vc.add(j + k), v_pos);
            }
        }
        // Columns past the block's tiles: zeros, so the products stay finite (their results are unused) and
        // add nothing to a weight gradient.
        if nt < ld {
            for p in 0..POS {
                std::slice::from_raw_parts_mut(vc.add(p * v_pos + nt), ld - nt).fill(0.0);
            }
        }
    }
}

/// How many of the `len` tiles from tile column `tx` go through the 8-wide kernels: whole groups of 8 whose
/// 16 output columns lie inside the row. Both transforms split a run alike, since a group's tiles sit in V and M
/// in the vector kernels' lane order (`x86::input8`).
fn vector_tiles(tx: usize, len: usize, w: usize) -> usize {
    if !has_avx2_fma() {
        return 0;
    }
    let inside = (w / 2).saturating_sub(tx).min(len);
    inside / 8 * 8
}

/// V = Bᵀ d B for one tile, d's rows at `rows` (4 floats each); V's position ξ goes to `v + ξ·stride`.
#[inline]
#[allow(clippy::needless_range_loop)] // b walks the columns of t
unsafe fn input1(rows: [*const f32; 4], v: *mut f32, stride: usize) {
    // Along each row: (d0 − d2, d1 + d2, d2 − d1, d1 − d3).
    let t = rows.map(|r| {
        let d = std::slice::from_raw_parts(r, 4);
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
    });
    for b in 0..4 {
        let col = [
            t[0][b] - t[2][b],
            t[1][b] + t[2][b],
            t[2][b] - t[1][b],
            t[1][b] - t[3][b],
        ];
        for (a, val) in col.into_iter().enumerate() {
            *v.add((4 * a + b) * stride) = val;
        }
    }
}

/// y = Aᵀ M A + bias for one tile, M's position ξ at `m + ξ·stride`; writes the first `cols` columns of each
/// present output row.
#[inline]
unsafe fn output1(
    m: *const f32,
    stride: usize,
    bias: f32,
    rows: [Option<*mut f32>; 2],
    cols: usize,
) {
    let at = |p: usize| *m.add(p * stride);
    // Along each row of M: (m0 + m1 + m2, m1 − m2 − m3).
    let s: [[f32; 2]; 4] = std::array::from_fn(|a| {
        let r = [at(4 * a), at(4 * a + 1), at(4 * a + 2), at(4 * a + 3)];
        [r[0] + r[1] + r[2], r[1] - r[2] - r[3]]
    });
    for (i, row) in rows.into_iter().enumerate() {
        let Some(row) = row else { continue };
        for (b, sb) in (0..cols).map(|b| (b, [s[0][b], s[1][b], s[2][b], s[3][b]])) {
            let y = if i == 0 {
                sb[0] + sb[1] + sb[2]
            } else {
                sb[1] - sb[2] - sb[3]
            };
            *row.add(b) = y + bias;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::POS;
    use std::arch::x86_64::*;

    /// The even and the odd floats of the 16 at `p`, in lane order: tiles 0 1 4 5 | 2 3 6 7 of the 8 whose
    /// first columns these are. Both transforms keep that order (V and M hold a group's tiles in it, and
    /// `output8`'s interleave puts them back in place), which saves a lane-crossing permute per vector.
    #[inline(always)]
    unsafe fn deinterleave(p: *const f32) -> (__m256, __m256) {
        let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
        (
            _mm256_shuffle_ps::<0x88>(a, b),
            _mm256_shuffle_ps::<0xDD>(a, b),
        )
    }

    /// [`super::input1`] for 8 adjacent tiles (rows of 18 floats from each pointer), stored in lane order.
    ///
    /// # Safety
    /// AVX2 present; each row holds 18 readable floats; v's 16 positions hold 8 floats each.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)] // b walks the columns of t
    pub(super) unsafe fn input8(rows: [*const f32; 4], v: *mut f32, stride: usize) {
        let t = rows.map(|r| {
            let (d0, d1) = deinterleave(r);
            let (d2, d3) = deinterleave(r.add(2));
            [
                _mm256_sub_ps(d0, d2),
                _mm256_add_ps(d1, d2),
                _mm256_sub_ps(d2, d1),
                _mm256_sub_ps(d1, d3),
            ]
        });
        for b in 0..4 {
            let col = [
                _mm256_sub_ps(t[0][b], t[2][b]),
                _mm256_add_ps(t[1][b], t[2][b]),
                _mm256_sub_ps(t[2][b], t[1][b]),
                _mm256_sub_ps(t[1][b], t[3][b]),
            ];
            for (a, val) in col.into_iter().enumerate() {
                _mm256_storeu_ps(v.add((4 * a + b) * stride), val);
            }
        }
    }

    /// [`super::output1`] for 8 adjacent tiles in lane order whose 16 output columns all lie inside the rows.
    ///
    /// # Safety
    /// AVX2 present; M's positions hold 8 floats each; each present row holds 16 writable floats.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn output8(
        m: *const f32,
        stride: usize,
        bias: f32,
        rows: [Option<*mut f32>; 2],
    ) {
        let mv: [__m256; POS] = std::array::from_fn(|p| _mm256_loadu_ps(m.add(p * stride)));
        let s: [[__m256; 2]; 4] = std::array::from_fn(|a| {
            let r = &mv[4 * a..4 * a + 4];
            [
                _mm256_add_ps(_mm256_add_ps(r[0], r[1]), r[2]),
                _mm256_sub_ps(_mm256_sub_ps(r[1], r[2]), r[3]),
            ]
        });
        let bias = _mm256_set1_ps(bias);
        for (i, row) in rows.into_iter().enumerate() {
            let Some(row) = row else { continue };
            let y: [__m256; 2] = std::array::from_fn(|b| {
                let v = if i == 0 {
                    _mm256_add_ps(_mm256_add_ps(s[0][b], s[1][b]), s[2][b])
                } else {
                    _mm256_sub_ps(_mm256_sub_ps(s[1][b], s[2][b]), s[3][b])
                };
                _mm256_add_ps(v, bias)
            });
            // Interleave the tiles' two columns: from lanes 0 1 4 5 | 2 3 6 7, lo holds tiles 0 1 | 2 3 and hi
            // tiles 4 5 | 6 7, each as its two output columns.
            _mm256_storeu_ps(row, _mm256_unpacklo_ps(y[0], y[1]));
            _mm256_storeu_ps(row.add(8), _mm256_unpackhi_ps(y[0], y[1]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::pseudo_normal;
    use crate::conv::conv2d_im2col_f32;

    fn shape(batch: usize, c_in: usize, c_out: usize, h: usize, w: usize) -> ConvShape {
        ConvShape {
            batch,
            c_in,
            h,
            w,
            c_out,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pad: [1, 1],
        }
    }

    /// Largest |got − want|, relative to the largest |want|.
    fn relative_diff(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
        err / scale
    }

    /// Largest |winograd − im2col| over the output, relative to the largest |output|.
    fn relative_error(s: ConvShape, with_bias: bool) -> f32 {
        let x = pseudo_normal(s.batch * s.c_in * s.h * s.w, 11, 1.0);
        let w = pseudo_normal(s.c_out * s.c_in * 9, 12, 0.1);
        let b = pseudo_normal(s.c_out, 13, 1.0);
        let b = with_bias.then_some(&b[..]);
        relative_diff(&conv3x3_f32(&x, &w, b, s), &conv2d_im2col_f32(&x, &w, b, s))
    }

    #[test]
    fn matches_the_im2col_convolution() {
        for (s, bias) in [
            // Even sides, one block per sample, samples over the threads.
            (shape(2, 16, 24, 8, 8), true),
            // Odd sides (the last tiles reach past the edge), rows of 13 tiles: vector and scalar tiles.
            (shape(1, 20, 17, 9, 25), true),
            // Depth past the gemm's depth block, rows past its row block, several blocks per sample.
            (shape(1, 300, 150, 12, 40), false),
            // Blocks that start and end inside tile rows, samples over the threads.
            (shape(3, 32, 32, 21, 34), true),
            // Odd width, blocks of 32 tiles in rows of 20: groups of 8 that start inside a row.
            (shape(1, 200, 200, 10, 39), true),
            // A single column of tiles, odd.
            (shape(2, 16, 16, 33, 3), true),
            // Narrower than the dispatch takes (one channel in, 1×1 samples): still exact.
            (shape(2, 1, 5, 1, 1), true),
            (shape(1, 3, 2, 2, 17), false),
        ] {
            let err = relative_error(s, bias);
            assert!(err < 2e-6, "{s:?}: relative error {err}");
        }
    }

    #[test]
    fn gradients_match_the_im2col_backward() {
        use crate::conv::{conv2d_backward_f32, conv2d_backward_im2col_f32, Wanted};
        // Wide enough for the dispatch of both gradients; odd sides; c_in ≠ c_out so a swapped axis would show.
        let s = shape(2, 24, 40, 31, 33);
        assert!(applies(&s) && applies_to_weight_grad(&s));
        let x = pseudo_normal(s.batch * s.c_in * s.h * s.w, 21, 1.0);
        let w = pseudo_normal(s.c_out * s.c_in * 9, 22, 0.1);
        let g = pseudo_normal(s.batch * s.c_out * s.h * s.w, 23, 1.0);
        let all = Wanted {
            input: true,
            weight: true,
        };
        let got = conv2d_backward_f32(&x, &w, &g, s, all);
        let want = conv2d_backward_im2col_f32(&x, &w, &g, s, all);
        for (name, got, want) in [("dx", got.dx, want.dx), ("dw", got.dw, want.dw)] {
            let err = relative_diff(&got.expect(name), &want.expect(name));
            assert!(err < 2e-6, "{name}: relative error {err}");
        }
        assert_eq!(got.db, want.db);
    }

    #[test]
    fn weight_gradient_matches_the_im2col_backward() {
        use crate::conv::{conv2d_backward_im2col_f32, Wanted};
        let only_weight = Wanted {
            input: false,
            weight: true,
        };
        for s in [
            // Samples over the threads; odd sides; rows of vector groups and scalar tiles.
            shape(3, 20, 24, 9, 37),
            // One sample (blocks over the threads), several blocks, depth past KC in the products.
            shape(1, 300, 40, 12, 40),
            // Tiny, odd.
            shape(2, 3, 5, 3, 5),
        ] {
            let x = pseudo_normal(s.batch * s.c_in * s.h * s.w, 31, 1.0);
            let gy = pseudo_normal(s.batch * s.c_out * s.h * s.w, 32, 1.0);
            let w = vec![0f32; s.c_out * s.c_in * 9];
            let got = conv3x3_weight_grad_f32(&x, &gy, s);
            let want = conv2d_backward_im2col_f32(&x, &w, &gy, s, only_weight)
                .dw
                .expect("dw");
            let err = relative_diff(&got, &want);
            assert!(err < 2e-6, "{s:?}: relative error {err}");
        }
    }

    #[test]
    fn dispatch_takes_wide_layers_with_enough_tiles() {
        assert!(applies(&shape(8, 256, 256, 8, 8)));
        assert!(applies(&shape(1, 1280, 1280, 16, 16)));
        // Too few tiles to pay for the filter transform, too few channels, another kernel size or stride.
        assert!(!applies(&shape(1, 1280, 1280, 8, 8)));
        assert!(!applies(&shape(32, 96, 96, 4, 4)));
        assert!(applies_to_weight_grad(&shape(1, 320, 320, 64, 64)));
        assert!(!applies_to_weight_grad(&shape(1, 640, 640, 32, 32)));
        assert!(!applies(&shape(8, 4, 64, 32, 32)));
        assert!(!applies(&ConvShape {
            stride: [2, 2],
            ..shape(8, 64, 64, 32, 32)
        }));
        assert!(!applies(&ConvShape {
            kh: 1,
            kw: 1,
            pad: [0, 0],
            ..shape(8, 64, 64, 32, 32)
        }));
    }

    #[test]
    fn blocks_split_samples_as_sized() {
        // Wide layers get small blocks, narrow ones large; never past the sample.
        let g = Grid::new(&shape(1, 512, 512, 64, 64));
        assert_eq!((g.nt, g.ld), (16, 16));
        let g = Grid::new(&shape(1, 64, 64, 64, 64));
        assert_eq!((g.nt, g.ld), (128, 128));
        let g = Grid::new(&shape(1, 64, 64, 5, 5));
        assert_eq!((g.nt, g.ld), (9, 16));
        let runs: Vec<_> = Grid::new(&shape(1, 64, 64, 5, 7)).runs(2, 7).collect();
        assert_eq!(runs, vec![(0, 2, 2, 0), (1, 0, 4, 2), (2, 0, 1, 6)]);
    }
}
