//! A packed f32 matrix product: a 6 × 16 register tile (AVX2 + FMA, chosen at run time; a portable tile
//! otherwise), the BLIS loop order and blocks sized for 32 KB of L1 and 512 KB of L2 per core.
//!
//! The left operand is packed once (`PackedLhs`) and can be shared by many products — a convolution's
//! weights serve every sample. The right operand is packed block by block by a caller-supplied function, so a
//! convolution writes its im2col columns straight into the packed layout instead of copying them twice.
//! On the convolution shapes codi runs (c_out × pixels × 9·c_in) the `gemm` crate reached about half of this
//! machine's peak; this kernel reaches 60–80 %.

use rayon::prelude::*;

use crate::math::has_avx2_fma;
use crate::scratch::with_scratch;

/// Rows of the register tile (output channels in a convolution).
pub(crate) const MR: usize = 6;
/// Columns of the register tile (pixels in a convolution): two 8-float vectors.
pub(crate) const NR: usize = 16;
/// Depth of one packed block: an NR-wide panel of it (16 KB) stays in L1 across all row panels.
pub(crate) const KC: usize = 256;
/// Rows of one block of the left operand walked per right panel (MC × KC floats = 144 KB, in L2).
const MC: usize = 144;
/// Columns of one packed block of the right operand.
const NC: usize = 4096;

/// A strided matrix view: element (r, c) at `ptr + r·rs + c·cs`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: a view is only read, and its owner keeps the buffer alive for the product.
unsafe impl Send for View {}
unsafe impl Sync for View {}

impl View {
    /// A row-major [rows, cols] slice.
    pub fn row_major(data: &[f32], cols: usize) -> View {
        View {
            ptr: data.as_ptr(),
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of this view.
    pub fn t(self) -> View {
        View {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// The left operand, alpha-scaled and packed: for each depth block of KC, MR-tall panels of kc × MR floats
/// (rows past m zero).
pub(crate) struct PackedLhs {
    data: Vec<f32>,
    m: usize,
    k: usize,
    m_pad: usize,
}

impl PackedLhs {
    /// Packs alpha · a for a [m, k] product.
    ///
    /// # Safety
    /// `a` must address inside its buffer for [m, k].
    pub unsafe fn new(a: View, m: usize, k: usize, alpha: f32) -> Self {
        let m_pad = m.div_ceil(MR) * MR;
        let mut data = vec![0f32; m_pad * k];
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let block = &mut data[pc * m_pad..pc * m_pad + m_pad * kc];
            for (panel, out) in block.chunks_mut(MR * kc).enumerate() {
                let r0 = panel * MR;
                let rows = MR.min(m - r0);
                let base = a.ptr.add(r0 * a.rs + pc * a.cs);
                if a.cs == 1 {
                    // Rows contiguous along the depth: one row at a time.
                    for i in 0..rows {
                        let src = std::slice::from_raw_parts(base.add(i * a.rs), kc);
                        for (p, &v) in src.iter().enumerate() {
                            out[p * MR + i] = alpha * v;
                        }
                    }
                } else {
                    // A transpose (rows adjacent in memory): one depth step at a time.
                    for (p, dst) in out.chunks_exact_mut(MR).enumerate() {
                        let col = base.add(p * a.cs);
                        for (i, d) in dst[..rows].iter_mut().enumerate() {
                            *d = alpha * *col.add(i * a.rs);
                        }
                    }
                }
            }
        }
        Self { data, m, k, m_pad }
    }

    /// Packs N operands [m, k] at once, row panels over rayon's threads: `f(r, c)` gives element (r, c) of
    /// each. For operands that are computed rather than read: a Winograd filter transform yields all 16
    /// positions of a filter together.
    pub fn build_many<const N: usize>(
        m: usize,
        k: usize,
        f: impl Fn(usize, usize) -> [f32; N] + Sync,
    ) -> Vec<Self> {
        let m_pad = m.div_ceil(MR) * MR;
        let mut data: Vec<Vec<f32>> = (0..N).map(|_| Vec::with_capacity(m_pad * k)).collect();
        let ptrs: [SendPtr; N] = std::array::from_fn(|q| SendPtr(data[q].as_mut_ptr()));
        (0..m_pad / MR).into_par_iter().for_each(|panel| {
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let block = pc * m_pad + panel * MR * kc;
                for c in pc..pc + kc {
                    // The panel's MR rows at depth c are MR consecutive floats of each operand.
                    let at = block + (c - pc) * MR;
                    let values: [[f32; N]; MR] = std::array::from_fn(|i| {
                        let r = panel * MR + i;
                        if r < m {
                            f(r, c)
                        } else {
                            [0.0; N]
                        }
                    });
                    let rows: [[f32; MR]; N] =
                        std::array::from_fn(|q| std::array::from_fn(|i| values[i][q]));
                    for (p, row) in ptrs.iter().zip(&rows) {
                        // SAFETY: MR floats of one operand at depth c; panels own disjoint rows.
                        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), p.get().add(at), MR) };
                    }
                }
            }
        });
        data.into_iter()
            .map(|mut d| {
                // SAFETY: the panels above wrote all m_pad · k floats (padding rows as zeros).
                unsafe { d.set_len(m_pad * k) };
                Self {
                    data: d,
                    m,
                    k,
                    m_pad,
                }
            })
            .collect()
    }

    /// Panel `ir` (a multiple of MR) of depth block `pc`, kc deep.
    fn panel(&self, pc: usize, kc: usize, ir: usize) -> *const f32 {
        self.data[pc * self.m_pad + ir * kc..].as_ptr()
    }
}

/// The left operand of [`gemm_packed`]: packed, or read in place when its rows are contiguous — packing a
/// [tokens, features] activation would cost a pass over it for every product.
#[derive(Clone, Copy)]
pub(crate) enum Lhs<'a> {
    Packed(&'a PackedLhs),
    /// A row-major [m, k] matrix with row stride `rs` (column stride 1).
    Rows {
        ptr: *const f32,
        rs: usize,
        m: usize,
        k: usize,
    },
}

// SAFETY: read only; the caller keeps the buffer alive for the product.
unsafe impl Send for Lhs<'_> {}
unsafe impl Sync for Lhs<'_> {}

impl Lhs<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Lhs::Packed(p) => (p.m, p.k),
            Lhs::Rows { m, k, .. } => (*m, *k),
        }
    }

    /// The tile's MR row pointers at rows ir.., depth pc (rows past the end repeat the last one; their results
    /// are not stored) and the step between depth entries.
    unsafe fn rows(&self, pc: usize, kc: usize, ir: usize) -> ([*const f32; MR], usize) {
        match self {
            Lhs::Packed(p) => {
                let panel = p.panel(pc, kc, ir);
                (std::array::from_fn(|i| panel.add(i)), MR)
            }
            Lhs::Rows { ptr, rs, m, .. } => (
                std::array::from_fn(|i| ptr.add((ir + i).min(m - 1) * rs + pc)),
                1,
            ),
        }
    }
}

/// Fills `out` with the right operand's block rows pc..pc+kc, columns jc..jc+nc, as NR-wide panels of kc × NR
/// floats (columns past nc zero): `pack(out, pc, kc, jc, nc)`.
pub(crate) trait PackRhs: Sync {
    fn pack(&self, out: &mut [f32], pc: usize, kc: usize, jc: usize, nc: usize);

    /// For an operand whose panels can be read in place (a convolution's columns over a zero-bordered
    /// input): writes each block row's offset, so that row p of the full panel at column j is the NR floats
    /// at `panel_start(j) + offsets[p]`, and returns true. False (the default): every panel is packed.
    fn row_offsets(&self, _pc: usize, _offsets: &mut [usize]) -> bool {
        false
    }

    /// Where the full panel at columns j..j+NR starts, when it can be read in place (see `row_offsets`).
    fn panel_start(&self, _j: usize) -> Option<*const f32> {
        None
    }
}

/// Packs a strided view.
impl PackRhs for View {
    fn pack(&self, out: &mut [f32], pc: usize, kc: usize, jc: usize, nc: usize) {
        for (panel, jr) in (0..nc).step_by(NR).enumerate() {
            let cols = NR.min(nc - jr);
            let out = &mut out[panel * NR * kc..(panel + 1) * NR * kc];
            // SAFETY: the product's caller vouched for the view over its [k, n].
            unsafe {
                let base = self.ptr.add(pc * self.rs + (jc + jr) * self.cs);
                if self.cs == 1 {
                    for (p, dst) in out.chunks_exact_mut(NR).enumerate() {
                        let src = std::slice::from_raw_parts(base.add(p * self.rs), cols);
                        copy_run(&mut dst[..cols], src);
                        dst[cols..].fill(0.0);
                    }
                } else {
                    #[cfg(target_arch = "x86_64")]
                    if self.rs == 1 && cols == NR && has_avx2_fma() {
                        // Columns contiguous along the depth (a transposed matrix): 8 × 8 blocks through
                        // registers instead of one float at a time.
                        x86::pack_transposed(out, base, self.cs, kc);
                        continue;
                    }
                    // Each column is strided along the depth: read it once, write it across the rows.
                    for j in 0..NR {
                        if j < cols {
                            let col = base.add(j * self.cs);
                            for p in 0..kc {
                                out[p * NR + j] = *col.add(p * self.rs);
                            }
                        } else {
                            for p in 0..kc {
                                out[p * NR + j] = 0.0;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// dst ← src for runs of at most NR floats: a full run as one fixed-size move the compiler inlines (a
/// `memcpy` call per 64 bytes was a visible share of the packing time).
#[inline]
pub(crate) fn copy_run(dst: &mut [f32], src: &[f32]) {
    match (
        <&mut [f32; NR]>::try_from(&mut *dst),
        <&[f32; NR]>::try_from(src),
    ) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => dst.copy_from_slice(src),
    }
}

#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the threads write disjoint parts of the buffer behind it.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    // A method, so closures capture the wrapper rather than its raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// dst[r, c] = Σ_i a[r, i] b[i, c] (+ dst[r, c] if `acc`) for c in 0..n, dst row-major with row stride `ldc`;
/// the columns split over rayon's threads if `par`.
///
/// # Safety
/// dst must address [a.m, n] with row stride ldc and not alias the operands; `b` must pack inside its buffer
/// for [a.k, n].
pub(crate) unsafe fn gemm_packed(
    n: usize,
    dst: *mut f32,
    ldc: usize,
    acc: bool,
    a: Lhs,
    b: &impl PackRhs,
    par: bool,
) {
    let (m, k) = a.dims();
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            for r in 0..m {
                std::slice::from_raw_parts_mut(dst.add(r * ldc), n).fill(0.0);
            }
        }
        return;
    }
    let dst = SendPtr(dst);
    // Columns j0..j0+nn of the product, on the calling thread.
    let columns = |j0: usize, nn: usize| {
        let need = NC.min(nn).div_ceil(NR) * NR * KC.min(k);
        with_scratch(need, |bp| {
            for jc in (j0..j0 + nn).step_by(NC) {
                let nc = NC.min(j0 + nn - jc);
                let mut offsets = [0usize; KC];
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    // Panels read in place need no packing: only the others are packed, each at its place.
                    let direct = has_avx2_fma() && b.row_offsets(pc, &mut offsets[..kc]);
                    let start = |jr: usize| {
                        let full = direct && jr + NR <= nc;
                        full.then(|| b.panel_start(jc + jr)).flatten()
                    };
                    if direct {
                        for jr in (0..nc).step_by(NR).filter(|&jr| start(jr).is_none()) {
                            let cols = NR.min(nc - jr);
                            b.pack(&mut bp[jr * kc..(jr + NR) * kc], pc, kc, jc + jr, cols);
                        }
                    } else {
                        b.pack(bp, pc, kc, jc, nc);
                    }
                    let first = pc == 0 && !acc;
                    for ic in (0..m).step_by(MC) {
                        let mc = MC.min(m - ic);
                        for jr in (0..nc).step_by(NR) {
                            let bpanel = bp[jr * kc..].as_ptr();
                            let cols = NR.min(nc - jr);
                            let at = start(jr);
                            for ir in (ic..ic + mc).step_by(MR) {
                                let c = dst.get().add(ir * ldc + jc + jr);
                                let rows = MR.min(m - ir);
                                let (arows, step) = a.rows(pc, kc, ir);
                                match at {
                                    #[cfg(target_arch = "x86_64")]
                                    Some(base) => x86::tile_direct(
                                        kc,
                                        arows,
                                        step,
                                        base,
                                        offsets.as_ptr(),
                                        c,
                                        ldc,
                                        rows,
                                        first,
                                    ),
                                    _ => tile(kc, arows, step, bpanel, c, ldc, rows, cols, first),
                                }
                            }
                        }
                    }
                }
            }
        })
    };
    let threads = if par { rayon::current_num_threads() } else { 1 };
    if threads > 1 && n > NR {
        let chunk = n.div_ceil(threads).div_ceil(NR) * NR;
        (0..n)
            .step_by(chunk)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|j0| columns(j0, chunk.min(n - j0)));
    } else {
        columns(0, n);
    }
}

/// dst[r, c] = alpha · Σ_i a[r, i] b[i, c] (+ dst[r, c] if `acc`), both operands strided views.
///
/// # Safety
/// As [`gemm_packed`], with `a` addressing [m, k] and `b` [k, n].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    ldc: usize,
    acc: bool,
    a: View,
    b: View,
    alpha: f32,
    par: bool,
) {
    if a.cs == 1 && alpha == 1.0 {
        let rows = Lhs::Rows {
            ptr: a.ptr,
            rs: a.rs,
            m,
            k,
        };
        return gemm_packed(n, dst, ldc, acc, rows, &b, par);
    }
    let a = PackedLhs::new(a, m, k, alpha);
    gemm_packed(n, dst, ldc, acc, Lhs::Packed(&a), &b, par);
}

/// One register tile: c[0..rows, 0..cols] (=|+=) Σ_p a[i][p·step] b[p, 0..NR] over kc steps, b packed.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile(
    kc: usize,
    a: [*const f32; MR],
    step: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    first: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        return x86::tile(kc, a, step, b, c, ldc, rows, cols, first);
    }
    portable_tile(kc, a, step, b, c, ldc, rows, cols, first)
}

/// The tile in plain Rust (the compiler vectorises it for the baseline instruction set).
#[allow(clippy::too_many_arguments)]
unsafe fn portable_tile(
    kc: usize,
    a: [*const f32; MR],
    step: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    first: bool,
) {
    let mut acc = [[0f32; NR]; MR];
    let b = std::slice::from_raw_parts(b, kc * NR);
    for (p, bp) in b.chunks_exact(NR).enumerate() {
        for (row, ai) in acc.iter_mut().zip(a) {
            let ai = *ai.add(p * step);
            for (v, &bj) in row.iter_mut().zip(bp) {
                *v += ai * bj;
            }
        }
    }
    store(&acc, c, ldc, rows, cols, first);
}

/// Writes (or adds) the valid part of a finished tile.
#[inline]
unsafe fn store(
    acc: &[[f32; NR]; MR],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    first: bool,
) {
    for (i, row) in acc.iter().enumerate().take(rows) {
        let out = std::slice::from_raw_parts_mut(c.add(i * ldc), cols);
        if first {
            out.copy_from_slice(&row[..cols]);
        } else {
            out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// out[p·NR + j] = col_j\[p\] for the NR columns col_j = base + j·cs (each contiguous) and p < kc.
    ///
    /// # Safety
    /// AVX2 present; each column holds kc floats; out holds kc·NR.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pack_transposed(out: &mut [f32], base: *const f32, cs: usize, kc: usize) {
        let dst = out.as_mut_ptr();
        let full = kc / 8 * 8;
        for half in 0..NR / 8 {
            let cols = base.add(half * 8 * cs);
            for p0 in (0..full).step_by(8) {
                let r: [__m256; 8] =
                    std::array::from_fn(|j| _mm256_loadu_ps(cols.add(j * cs + p0)));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let rows = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (i, row) in rows.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((p0 + i) * NR + half * 8), row);
                }
            }
            for p in full..kc {
                for j in 0..8 {
                    *dst.add(p * NR + half * 8 + j) = *cols.add(j * cs + p);
                }
            }
        }
    }

    /// [`super::tile`] with the 12 accumulators in registers.
    ///
    /// # Safety
    /// AVX2 and FMA present; a holds kc·MR floats, b kc·NR, c addresses rows × cols with row stride ldc.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        kc: usize,
        a: [*const f32; MR],
        step: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        // The tile's rows of c lie a whole row stride apart, out of the prefetchers' reach: ask for them now so
        // that the misses overlap the products.
        if kc >= 32 {
            for i in 0..rows {
                let row = c.add(i * ldc) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(row);
                _mm_prefetch::<_MM_HINT_T0>(row.add(4 * cols - 4));
            }
        }
        let mut acc = [_mm256_setzero_ps(); 2 * MR];
        // The six row pointers share one offset register after strength reduction, packed (step MR) or not.
        let (mut a, mut b) = (a, b);
        if cols <= 8 {
            // A narrow product (attention's values at head width 8): the right half of the panel is padding.
            for _ in 0..kc {
                let b0 = _mm256_loadu_ps(b);
                for i in 0..MR {
                    let ai = _mm256_broadcast_ss(&*a[i]);
                    acc[2 * i] = _mm256_fmadd_ps(ai, b0, acc[2 * i]);
                    a[i] = a[i].add(step);
                }
                b = b.add(NR);
            }
        } else {
            for _ in 0..kc {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for i in 0..MR {
                    let ai = _mm256_broadcast_ss(&*a[i]);
                    acc[2 * i] = _mm256_fmadd_ps(ai, b0, acc[2 * i]);
                    acc[2 * i + 1] = _mm256_fmadd_ps(ai, b1, acc[2 * i + 1]);
                    a[i] = a[i].add(step);
                }
                b = b.add(NR);
            }
        }
        finish(&acc, c, ldc, rows, cols, first);
    }

    /// [`tile`] for a full panel read in place: row p of b is the NR floats at `b + offsets[p]`.
    ///
    /// # Safety
    /// As [`tile`], with offsets holding kc entries and each row of b NR floats readable.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_direct(
        kc: usize,
        a: [*const f32; MR],
        step: usize,
        b: *const f32,
        offsets: *const usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        first: bool,
    ) {
        if kc >= 32 {
            for i in 0..rows {
                let row = c.add(i * ldc) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(row);
                _mm_prefetch::<_MM_HINT_T0>(row.add(4 * NR - 4));
            }
        }
        let mut acc = [_mm256_setzero_ps(); 2 * MR];
        let mut a = a;
        for p in 0..kc {
            let bp = b.add(*offsets.add(p));
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for i in 0..MR {
                let ai = _mm256_broadcast_ss(&*a[i]);
                acc[2 * i] = _mm256_fmadd_ps(ai, b0, acc[2 * i]);
                acc[2 * i + 1] = _mm256_fmadd_ps(ai, b1, acc[2 * i + 1]);
                a[i] = a[i].add(step);
            }
        }
        finish(&acc, c, ldc, rows, NR, first);
    }

    /// Writes (or adds) the valid part of a finished tile.
    #[inline(always)]
    unsafe fn finish(
        acc: &[__m256; 2 * MR],
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        if rows == MR && cols == NR {
            for i in 0..MR {
                let row = c.add(i * ldc);
                let (mut v0, mut v1) = (acc[2 * i], acc[2 * i + 1]);
                if !first {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
                }
                _mm256_storeu_ps(row, v0);
                _mm256_storeu_ps(row.add(8), v1);
            }
        } else {
            let mut tmp = [[0f32; NR]; MR];
            for (i, row) in tmp.iter_mut().enumerate() {
                _mm256_storeu_ps(row.as_mut_ptr(), acc[2 * i]);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[2 * i + 1]);
            }
            super::store(&tmp, c, ldc, rows, cols, first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::pseudo_normal;

    fn naive(
        [m, n, k]: [usize; 3],
        a: &[f32],
        (ars, acs): (usize, usize),
        b: &[f32],
        (brs, bcs): (usize, usize),
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            for c in 0..n {
                out[r * n + c] = (0..k)
                    .map(|i| a[r * ars + i * acs] as f64 * b[i * brs + c * bcs] as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn operands_built_together_equal_packed_ones() {
        // Rows past a panel (padding), depth past KC.
        let (m, k) = (13, 300);
        let a = pseudo_normal(m * k, 7, 1.0);
        let built = PackedLhs::build_many::<2>(m, k, |r, c| [a[r * k + c], -2.0 * a[r * k + c]]);
        for (p, alpha) in built.iter().zip([1.0, -2.0]) {
            // SAFETY: a holds [m, k].
            let want = unsafe { PackedLhs::new(View::row_major(&a, k), m, k, alpha) };
            assert_eq!((p.m, p.k, p.m_pad), (want.m, want.k, want.m_pad));
            assert_eq!(p.data, want.data, "alpha {alpha}");
        }
    }

    #[test]
    fn matches_the_definition_for_every_layout_and_edge() {
        // Sizes that cross every block edge: rows past MR and MC, columns past NR and NC, depth past KC.
        let sizes = [
            (1, 1, 1),
            (7, 17, 3),
            (6, 16, 256),
            (150, 40, 300),
            (13, 4100, 20),
            (64, 96, 577),
        ];
        for &(m, n, k) in &sizes {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = pseudo_normal(m * k, 1, 1.0);
                let b = pseudo_normal(k * n, 2, 1.0);
                let av = if ta { (1, m) } else { (k, 1) };
                let bv = if tb { (1, k) } else { (n, 1) };
                let want = naive([m, n, k], &a, av, &b, bv);
                for (acc, par) in [(false, false), (true, true)] {
                    let ldc = n + 3;
                    let mut c = vec![0.5f32; m * ldc];
                    // SAFETY: the views and dst cover the sizes above.
                    unsafe {
                        sgemm(
                            [m, n, k],
                            c.as_mut_ptr(),
                            ldc,
                            acc,
                            View {
                                ptr: a.as_ptr(),
                                rs: av.0,
                                cs: av.1,
                            },
                            View {
                                ptr: b.as_ptr(),
                                rs: bv.0,
                                cs: bv.1,
                            },
                            2.0,
                            par,
                        );
                    }
                    for r in 0..m {
                        for col in 0..ldc {
                            let got = c[r * ldc + col] as f64;
                            let expect = if col >= n {
                                0.5
                            } else {
                                2.0 * want[r * n + col] + if acc { 0.5 } else { 0.0 }
                            };
                            assert!(
                                (got - expect).abs() < 1e-4 * (1.0 + expect.abs()),
                                "{m}x{n}x{k} ta {ta} tb {tb} acc {acc}: [{r}, {col}] {got} vs {expect}"
                            );
                        }
                    }
                }
            }
        }
    }

    type Tile =
        unsafe fn(usize, [*const f32; MR], usize, *const f32, *mut f32, usize, usize, usize, bool);

    #[test]
    fn portable_tile_equals_the_vector_tile() {
        let kc = 37;
        let a = pseudo_normal(kc * MR, 3, 1.0);
        let b = pseudo_normal(kc * NR, 4, 1.0);
        for (rows, cols, first) in [
            (MR, NR, true),
            (MR, NR, false),
            (4, 9, true),
            (1, 16, false),
            (MR, 8, false),
            (3, 5, true),
        ] {
            let run = |f: Tile, a: [*const f32; MR], step: usize| {
                let mut out = vec![0.25f32; MR * NR];
                // SAFETY: a and b hold kc steps, out one full tile.
                unsafe {
                    f(
                        kc,
                        a,
                        step,
                        b.as_ptr(),
                        out.as_mut_ptr(),
                        NR,
                        rows,
                        cols,
                        first,
                    )
                };
                out
            };
            // The buffer read as packed steps of MR, and as MR rows of kc.
            let packed: [*const f32; MR] = std::array::from_fn(|i| a[i..].as_ptr());
            let by_rows: [*const f32; MR] = std::array::from_fn(|i| a[i * kc..].as_ptr());
            for (a, step) in [(packed, MR), (by_rows, 1)] {
                let (want, got) = (run(portable_tile, a, step), run(tile, a, step));
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() < 1e-4,
                        "{rows}x{cols} first {first} step {step}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
