//! 2-D convolution (groups 1, dilation 1) on contiguous NCHW f32 buffers, forward and backward, as im2col +
//! gemm per sample. The backward recomputes each sample's im2col buffer rather than keeping it (k² times the
//! input), runs the weight gradient as one gemm against it and the input gradient as one gemm and a col2im
//! scatter, so no axis of an activation is ever transposed in memory.

use rayon::prelude::*;

use crate::buffer::{as_ptr, written};
use crate::scratch::with_scratch;
use crate::sgemm::{copy_run, gemm_packed, Lhs, PackRhs, PackedLhs, View, KC, NR};
use crate::winograd;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
}

impl ConvShape {
    /// Floating-point operations of the definition: 2 per multiply-add (codi bench's convention, also for
    /// the Winograd kernels, which do fewer).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.c_out * self.pixels_out() * self.patch()) as f64
    }

    /// The layer-type name [`crate::profile`] files it under.
    pub fn profile_name(&self) -> &'static str {
        match (self.kh, self.kw, self.stride) {
            (3, 3, [1, 1]) => "conv 3×3",
            (1, 1, [1, 1]) => "conv 1×1",
            _ => "conv, other",
        }
    }

    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.pad[0] - self.kh) / self.stride[0] + 1
    }
    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.pad[1] - self.kw) / self.stride[1] + 1
    }
    /// Rows of the im2col buffer: c_in · kh · kw.
    fn patch(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    fn pixels_out(&self) -> usize {
        self.h_out() * self.w_out()
    }
    /// A 1×1, stride-1, unpadded convolution reads its input as the im2col buffer itself.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }
    /// Floats of one sample's im2col buffer (none for a pointwise convolution).
    fn col_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.patch() * self.pixels_out()
        }
    }
}

/// Gradients of a convolution's input, weight and bias.
pub struct ConvGrads {
    /// None when not asked for.
    pub dx: Option<Vec<f32>>,
    /// None when not asked for.
    pub dw: Option<Vec<f32>>,
    pub db: Vec<f32>,
}

/// Which gradients the backward pass computes (a frozen backbone's convolutions need no weight gradient, the
/// first convolution on data no input gradient). The bias gradient is always computed; it is one row sum.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub input: bool,
    pub weight: bool,
}

/// Runs `f` on each (index, chunk), on rayon's threads if `par`.
fn for_each_chunk(
    buf: &mut [f32],
    chunk: usize,
    par: bool,
    f: impl Fn((usize, &mut [f32])) + Sync + Send,
) {
    if par {
        buf.par_chunks_mut(chunk).enumerate().for_each(f);
    } else {
        buf.chunks_mut(chunk).enumerate().for_each(f);
    }
}

/// Whether to spread the samples over the threads (each sample's work on one thread) rather than each
/// sample's gemms: small per-sample problems pay the threads' start-up on every gemm otherwise.
fn sample_parallel(s: &ConvShape) -> bool {
    s.batch >= rayon::current_num_threads()
}

/// For stride 1 along x: the output columns [lo, hi) whose input column xo + j − pad lies inside the row.
fn valid_run(s: &ConvShape, j: usize) -> (usize, usize) {
    let wo = s.w_out();
    let lo = s.pad[1].saturating_sub(j).min(wo);
    let hi = (s.w + s.pad[1]).saturating_sub(j).clamp(lo, wo);
    (lo, hi)
}

/// The input row that output row `y` reads at kernel row `i` of one channel `xc` ([h, w]); None in the padding.
fn input_row<'a>(xc: &'a [f32], s: &ConvShape, y: usize, i: usize) -> Option<&'a [f32]> {
    let iy = (y * s.stride[0] + i).checked_sub(s.pad[0])?;
    (iy < s.h).then(|| &xc[iy * s.w..(iy + 1) * s.w])
}

/// out[lo..hi] ← row[from..], zeros elsewhere in out (a run of one im2col row, `from` ≥ 0 when lo < hi).
fn copy_shifted(out: &mut [f32], row: &[f32], lo: usize, hi: usize, from: isize) {
    out[..lo].fill(0.0);
    out[hi..].fill(0.0);
    if lo < hi {
        let from = from as usize;
        copy_run(&mut out[lo..hi], &row[from..from + (hi - lo)]);
    }
}

/// col[(c, i, j), (y, x)] = x[c, y·s − p + i, x·s − p + j] (0 outside), one sample: [patch, h_out · w_out].
fn im2col(x: &[f32], s: &ConvShape, col: &mut [f32], par: bool) {
    let (ho, wo) = (s.h_out(), s.w_out());
    for_each_chunk(col, s.kh * s.kw * ho * wo, par, |(c, cc)| {
        let xc = &x[c * s.h * s.w..(c + 1) * s.h * s.w];
        for i in 0..s.kh {
            for j in 0..s.kw {
                let row = &mut cc[(i * s.kw + j) * ho * wo..(i * s.kw + j + 1) * ho * wo];
                let (lo, hi) = valid_run(s, j);
                for y in 0..ho {
                    let out = &mut row[y * wo..(y + 1) * wo];
                    let Some(xrow) = input_row(xc, s, y, i) else {
                        out.fill(0.0);
                        continue;
                    };
                    if s.stride[1] == 1 {
                        copy_shifted(out, xrow, lo, hi, (lo + j) as isize - s.pad[1] as isize);
                        continue;
                    }
                    for (xo, o) in out.iter_mut().enumerate() {
                        let ix = (xo * s.stride[1] + j) as isize - s.pad[1] as isize;
                        *o = if ix >= 0 && ix < s.w as isize {
                            xrow[ix as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    });
}

/// The adjoint of [`im2col`]: dx[c, ·, ·] = Σ of the col entries that read it, one sample.
fn col2im(col: &[f32], s: &ConvShape, dx: &mut [f32], par: bool) {
    let (ho, wo) = (s.h_out(), s.w_out());
    for_each_chunk(dx, s.h * s.w, par, |(c, dxc)| {
        dxc.fill(0.0);
        let cc = &col[c * s.kh * s.kw * ho * wo..(c + 1) * s.kh * s.kw * ho * wo];
        for i in 0..s.kh {
            for j in 0..s.kw {
                let row = &cc[(i * s.kw + j) * ho * wo..(i * s.kw + j + 1) * ho * wo];
                let (lo, hi) = valid_run(s, j);
                for y in 0..ho {
                    let iy = (y * s.stride[0] + i) as isize - s.pad[0] as isize;
                    if iy < 0 || iy >= s.h as isize {
                        continue;
                    }
                    let drow = &mut dxc[iy as usize * s.w..(iy as usize + 1) * s.w];
                    let grow = &row[y * wo..(y + 1) * wo];
                    if s.stride[1] == 1 {
                        let from = lo + j - s.pad[1];
                        drow[from..from + (hi - lo)]
                            .iter_mut()
                            .zip(&grow[lo..hi])
                            .for_each(|(d, g)| *d += g);
                        continue;
                    }
                    for (xo, &g) in grow.iter().enumerate() {
                        let ix = (xo * s.stride[1] + j) as isize - s.pad[1] as isize;
                        if ix >= 0 && ix < s.w as isize {
                            drow[ix as usize] += g;
                        }
                    }
                }
            }
        }
    });
}

/// One sample's im2col columns ([patch, h_out · w_out]) written straight into the packed right-operand layout
/// of the product, so the columns are never stored whole.
struct Columns<'a> {
    /// The sample: [c_in, h, w].
    x: &'a [f32],
    s: ConvShape,
}

impl Columns<'_> {
    /// Stride 1 and no padding (a padded input comes zero-bordered from `with_columns`).
    fn is_inside(&self) -> bool {
        self.s.stride == [1, 1] && self.s.pad == [0, 0]
    }

    /// Any stride and padding: each entry is bounds-checked against the input.
    fn pack_general(&self, out: &mut [f32], pc: usize, kc: usize, jc: usize, nc: usize) {
        let s = &self.s;
        let (wo, khw) = (s.w_out(), s.kh * s.kw);
        for (panel, jr) in (0..nc).step_by(NR).enumerate() {
            let out = &mut out[panel * NR * kc..(panel + 1) * NR * kc];
            let (p0, cols) = (jc + jr, NR.min(nc - jr));
            // The panel's pixels as runs within one output row: (y, first x, length, offset in the panel).
            let mut runs = [(0usize, 0usize, 0usize, 0usize); NR];
            let (mut nruns, mut p) = (0, p0);
            while p < p0 + cols {
                let (y, x0) = (p / wo, p % wo);
                let len = (wo - x0).min(p0 + cols - p);
                runs[nruns] = (y, x0, len, p - p0);
                nruns += 1;
                p += len;
            }
            let (mut c, mut ij) = (pc / khw, pc % khw);
            for dst in out.chunks_exact_mut(NR) {
                let (i, j) = (ij / s.kw, ij % s.kw);
                let xc = &self.x[c * s.h * s.w..(c + 1) * s.h * s.w];
                dst[cols..].fill(0.0);
                for &(y, x0, len, off) in &runs[..nruns] {
                    let d = &mut dst[off..off + len];
                    let Some(row) = input_row(xc, s, y, i) else {
                        d.fill(0.0);
                        continue;
                    };
                    if s.stride[1] == 1 {
                        // Input columns start + t for t in 0..len; the valid ones form one range.
                        let start = x0 as isize + j as isize - s.pad[1] as isize;
                        let lo = (-start).clamp(0, len as isize) as usize;
                        let hi = (s.w as isize - start).clamp(lo as isize, len as isize) as usize;
                        copy_shifted(d, row, lo, hi, start + lo as isize);
                    } else {
                        for (t, v) in d.iter_mut().enumerate() {
                            let ix = ((x0 + t) * s.stride[1] + j) as isize - s.pad[1] as isize;
                            *v = if ix >= 0 && ix < s.w as isize {
                                row[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
                ij += 1;
                if ij == khw {
                    ij = 0;
                    c += 1;
                }
            }
        }
    }

    /// Stride 1, no padding: every entry lies inside the input, at the pixel's offset y·w + x plus an offset
    /// that depends only on the block row, so each panel row is one straight copy.
    fn pack_inside(&self, out: &mut [f32], pc: usize, kc: usize, jc: usize, nc: usize) {
        let s = &self.s;
        let (wo, khw, plane) = (s.w_out(), s.kh * s.kw, s.h * s.w);
        let mut shift = [0usize; KC];
        let (mut c, mut ij) = (pc / khw, pc % khw);
        for sh in &mut shift[..kc] {
            *sh = c * plane + (ij / s.kw) * s.w + ij % s.kw;
            ij += 1;
            if ij == khw {
                ij = 0;
                c += 1;
            }
        }
        let shift = &shift[..kc];
        for (panel, jr) in (0..nc).step_by(NR).enumerate() {
            let out = &mut out[panel * NR * kc..(panel + 1) * NR * kc];
            let (p0, cols) = (jc + jr, NR.min(nc - jr));
            if cols == NR && p0 % wo + NR <= wo {
                let base = (p0 / wo) * s.w + p0 % wo;
                for (dst, &sh) in out.chunks_exact_mut(NR).zip(shift) {
                    copy_run(dst, &self.x[base + sh..base + sh + NR]);
                }
                continue;
            }
            // The panel's pixels as runs within one output row: (input offset, length, offset in the panel).
            let mut runs = [(0usize, 0usize, 0usize); NR];
            let (mut nruns, mut p) = (0, p0);
            while p < p0 + cols {
                let (y, x0) = (p / wo, p % wo);
                let len = (wo - x0).min(p0 + cols - p);
                runs[nruns] = (y * s.w + x0, len, p - p0);
                nruns += 1;
                p += len;
            }
            for (dst, &sh) in out.chunks_exact_mut(NR).zip(shift) {
                dst[cols..].fill(0.0);
                for &(base, len, off) in &runs[..nruns] {
                    copy_run(
                        &mut dst[off..off + len],
                        &self.x[base + sh..base + sh + len],
                    );
                }
            }
        }
    }
}

impl PackRhs for Columns<'_> {
    fn pack(&self, out: &mut [f32], pc: usize, kc: usize, jc: usize, nc: usize) {
        if self.is_inside() {
            self.pack_inside(out, pc, kc, jc, nc)
        } else {
            self.pack_general(out, pc, kc, jc, nc)
        }
    }

    /// Inside the input, a panel of NR pixels of one output row is, for every block row (c, i, j), NR
    /// consecutive input values: the gemm reads them in place instead of copying them into a packed panel
    /// (which cost as much as a tenth of a VAE decode).
    fn row_offsets(&self, pc: usize, offsets: &mut [usize]) -> bool {
        let s = &self.s;
        if !self.is_inside() || s.is_pointwise() {
            return false;
        }
        let (khw, plane) = (s.kh * s.kw, s.h * s.w);
        let (mut c, mut ij) = (pc / khw, pc % khw);
        for o in offsets {
            *o = c * plane + (ij / s.kw) * s.w + ij % s.kw;
            ij += 1;
            if ij == khw {
                ij = 0;
                c += 1;
            }
        }
        true
    }

    fn panel_start(&self, j: usize) -> Option<*const f32> {
        let wo = self.s.w_out();
        (j % wo + NR <= wo).then(|| self.x[(j / wo) * self.s.w + j % wo..].as_ptr())
    }
}

/// Runs `f` on the columns of one sample `xn` ([c_in, h, w]); a padded stride-1 convolution first copies the
/// sample into a zero-bordered buffer, so that packing needs no bounds checks.
fn with_columns<R>(xn: &[f32], s: &ConvShape, f: impl FnOnce(&Columns) -> R) -> R {
    if s.stride != [1, 1] || s.pad == [0, 0] {
        return f(&Columns { x: xn, s: *s });
    }
    let (hp, wp) = (s.h + 2 * s.pad[0], s.w + 2 * s.pad[1]);
    with_scratch(s.c_in * hp * wp, |xp| {
        // Only the border is zeroed: the scratch buffer is overwritten inside it.
        let (top, left) = (s.pad[0] * wp, s.pad[1]);
        for (xc, pc) in xn.chunks(s.h * s.w).zip(xp.chunks_mut(hp * wp)) {
            pc[..top].fill(0.0);
            pc[top + s.h * wp..].fill(0.0);
            for (row, prow) in xc.chunks(s.w).zip(pc[top..].chunks_mut(wp)) {
                prow[..left].fill(0.0);
                prow[left..left + s.w].copy_from_slice(row);
                prow[left + s.w..].fill(0.0);
            }
        }
        let inside = ConvShape {
            h: hp,
            w: wp,
            pad: [0, 0],
            ..*s
        };
        f(&Columns { x: xp, s: inside })
    })
}

/// Whether 3×3 convolutions may go through Winograd's F(2×2, 3×3) (`crate::winograd`): on unless the
/// environment sets `CODI_WINOGRAD=0`, for comparisons with the im2col kernel.
fn winograd_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("CODI_WINOGRAD").map_or(true, |v| v.trim() != "0"))
}

/// x: [batch, c_in, h, w], weight: [c_out, c_in, kh, kw], bias: \[c_out\] → [batch, c_out, h_out, w_out].
/// 3×3 convolutions of stride 1 and padding 1 go through Winograd's F(2×2, 3×3), all others through im2col.
pub fn conv2d_f32(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: ConvShape) -> Vec<f32> {
    if winograd_enabled() && winograd::applies(&s) {
        return winograd::conv3x3_f32(x, weight, bias, s);
    }
    conv2d_im2col_f32(x, weight, bias, s)
}

/// [`conv2d_f32`] as im2col + gemm per sample, for every shape.
pub(crate) fn conv2d_im2col_f32(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: ConvShape,
) -> Vec<f32> {
    let (patch, pix) = (s.patch(), s.pixels_out());
    assert_eq!(x.len(), s.batch * s.c_in * s.h * s.w);
    assert_eq!(weight.len(), s.c_out * patch);
    if s.batch * s.c_out * pix == 0 || patch == 0 {
        return vec![0f32; s.batch * s.c_out * pix];
    }
    // SAFETY: weight holds [c_out, patch] (asserted above).
    let w = unsafe { PackedLhs::new(View::row_major(weight, patch), s.c_out, patch, 1.0) };
    let sample = |n: usize, on: &mut [MaybeUninit<f32>], par: bool| {
        let xn = &x[n * s.c_in * s.h * s.w..(n + 1) * s.c_in * s.h * s.w];
        // SAFETY: `on` is this sample's [c_out, pix] output, written in full by the product (patch > 0);
        // the columns stay inside the sample.
        let on = unsafe {
            with_columns(xn, &s, |cols| {
                gemm_packed(pix, as_ptr(on), pix, false, Lhs::Packed(&w), cols, par)
            });
            std::slice::from_raw_parts_mut(as_ptr(on), on.len())
        };
        if let Some(b) = bias {
            for (row, &bc) in on.chunks_mut(pix).zip(b) {
                row.iter_mut().for_each(|v| *v += bc);
            }
        }
    };
    // SAFETY: `sample` writes every output of its sample.
    unsafe { per_sample_output(&s, s.c_out * pix, sample) }
}

/// The output of a convolution, [batch, per_sample] floats, written by `sample(n, output of sample n, par)`:
/// the samples spread over the threads when there are enough of them, else each sample's work (`par`).
///
/// # Safety
/// `sample` must write every element of the chunk it gets.
pub(crate) unsafe fn per_sample_output(
    s: &ConvShape,
    per_sample: usize,
    sample: impl Fn(usize, &mut [MaybeUninit<f32>], bool) + Sync,
) -> Vec<f32> {
    written(s.batch * per_sample, |out| {
        if sample_parallel(s) {
            out.par_chunks_mut(per_sample)
                .enumerate()
                .for_each(|(n, on)| sample(n, on, false));
        } else {
            for (n, on) in out.chunks_mut(per_sample).enumerate() {
                sample(n, on, true);
            }
        }
    })
}

/// Per-thread accumulators of the backward pass: dW and db.
struct Accumulators {
    dw: Vec<f32>,
    db: Vec<f32>,
}

impl Accumulators {
    fn new(s: &ConvShape, weight: bool) -> Self {
        Self {
            dw: vec![0f32; if weight { s.c_out * s.patch() } else { 0 }],
            db: vec![0f32; s.c_out],
        }
    }
    fn merge(mut self, other: Self) -> Self {
        self.dw.iter_mut().zip(&other.dw).for_each(|(a, b)| *a += b);
        self.db.iter_mut().zip(&other.db).for_each(|(a, b)| *a += b);
        self
    }
}

/// Gradients of [`conv2d_f32`] given the output gradient `g`: [batch, c_out, h_out, w_out].
///
/// For a 3×3 convolution of stride 1 and padding 1, both gradients go through Winograd's F(2×2, 3×3) where
/// the forward would: the input gradient is itself such a convolution — of g with the filters turned by 180°
/// and their channel axes swapped — and the weight gradient is accumulated in the transformed domain
/// (`winograd::conv3x3_weight_grad_f32`).
pub fn conv2d_backward_f32(
    x: &[f32],
    weight: &[f32],
    g: &[f32],
    s: ConvShape,
    wanted: Wanted,
) -> ConvGrads {
    let t = ConvShape {
        c_in: s.c_out,
        c_out: s.c_in,
        ..s
    };
    // `applies` is symmetric in the channel counts, so it holds for t exactly when for s.
    let on = winograd_enabled() && winograd::applies(&s);
    let wino_dx = on && wanted.input;
    let wino_dw = on && wanted.weight && winograd::applies_to_weight_grad(&s);
    // The rest (and the bias gradient, always) through im2col.
    let rest = Wanted {
        input: wanted.input && !wino_dx,
        weight: wanted.weight && !wino_dw,
    };
    let mut grads = conv2d_backward_im2col_f32(x, weight, g, s, rest);
    if wino_dx {
        grads.dx = Some(winograd::conv3x3_f32(g, &turned(weight, &s), None, t));
    }
    if wino_dw {
        grads.dw = Some(winograd::conv3x3_weight_grad_f32(x, g, s));
    }
    grads
}

/// The filters [c_out, c_in, kh, kw] turned by 180° with their channel axes swapped: [c_in, c_out, kh, kw].
fn turned(weight: &[f32], s: &ConvShape) -> Vec<f32> {
    let k = s.kh * s.kw;
    let mut out = vec![0f32; weight.len()];
    for (o, filters) in weight.chunks_exact(s.c_in * k).enumerate() {
        for (c, f) in filters.chunks_exact(k).enumerate() {
            let dst = &mut out[(c * s.c_out + o) * k..][..k];
            dst.iter_mut()
                .zip(f.iter().rev())
                .for_each(|(d, v)| *d = *v);
        }
    }
    out
}

/// [`conv2d_backward_f32`] through im2col for every gradient.
pub(crate) fn conv2d_backward_im2col_f32(
    x: &[f32],
    weight: &[f32],
    g: &[f32],
    s: ConvShape,
    wanted: Wanted,
) -> ConvGrads {
    let (patch, pix) = (s.patch(), s.pixels_out());
    assert_eq!(x.len(), s.batch * s.c_in * s.h * s.w);
    assert_eq!(weight.len(), s.c_out * patch);
    assert_eq!(g.len(), s.batch * s.c_out * pix);
    // The samples are walked as chunks of dx; without an input gradient each chunk is one unused float.
    let per_sample = if wanted.input { s.c_in * s.h * s.w } else { 1 };
    let mut dx = vec![0f32; per_sample * s.batch];
    // SAFETY: weight holds [c_out, patch]; its transpose is the left operand of dcol = Wᵀ g.
    let wt = wanted.input.then(|| unsafe {
        PackedLhs::new(View::row_major(weight, patch).t(), patch, s.c_out, 1.0)
    });
    let sample = |n: usize, dxn: &mut [f32], acc: &mut Accumulators, par: bool| {
        let gn = &g[n * s.c_out * pix..(n + 1) * s.c_out * pix];
        // SAFETY: every view below is a buffer of this sample with its row-major strides (transposes as
        // swapped strides), and each dst is a separate buffer.
        if wanted.weight {
            let xn = &x[n * s.c_in * s.h * s.w..(n + 1) * s.c_in * s.h * s.w];
            with_scratch(s.col_len(), |col| {
                let cols = if s.is_pointwise() {
                    xn
                } else {
                    im2col(xn, &s, col, par);
                    &*col
                };
                // dW += g colᵀ: [c_out, patch]
                unsafe {
                    let g_rows = Lhs::Rows {
                        ptr: gn.as_ptr(),
                        rs: pix,
                        m: s.c_out,
                        k: pix,
                    };
                    let col_t = View::row_major(cols, pix).t();
                    gemm_packed(patch, acc.dw.as_mut_ptr(), patch, true, g_rows, &col_t, par);
                }
            });
        }
        if let Some(wt) = &wt {
            // dcol = Wᵀ g: [patch, pix], written into dx itself for a pointwise convolution.
            let g_view = View::row_major(gn, pix);
            if s.is_pointwise() {
                unsafe {
                    gemm_packed(
                        pix,
                        dxn.as_mut_ptr(),
                        pix,
                        false,
                        Lhs::Packed(wt),
                        &g_view,
                        par,
                    )
                };
            } else {
                with_scratch(s.col_len(), |dcol| {
                    unsafe {
                        gemm_packed(
                            pix,
                            dcol.as_mut_ptr(),
                            pix,
                            false,
                            Lhs::Packed(wt),
                            &g_view,
                            par,
                        )
                    };
                    col2im(dcol, &s, dxn, par);
                });
            }
        }
        for (d, row) in acc.db.iter_mut().zip(gn.chunks(pix)) {
            *d += row.iter().sum::<f32>();
        }
    };
    let acc = if sample_parallel(&s) {
        // One accumulator per thread: a split of its own would cost a dW-sized buffer and a merge.
        let per_thread = s.batch.div_ceil(rayon::current_num_threads());
        dx.par_chunks_mut(per_sample)
            .with_min_len(per_thread)
            .enumerate()
            .fold(
                || Accumulators::new(&s, wanted.weight),
                |mut acc, (n, dxn)| {
                    sample(n, dxn, &mut acc, false);
                    acc
                },
            )
            .reduce_with(Accumulators::merge)
            .unwrap_or_else(|| Accumulators::new(&s, wanted.weight))
    } else {
        let mut acc = Accumulators::new(&s, wanted.weight);
        for (n, dxn) in dx.chunks_mut(per_sample).enumerate() {
            sample(n, dxn, &mut acc, true);
        }
        acc
    };
    ConvGrads {
        dx: wanted.input.then_some(dx),
        dw: wanted.weight.then_some(acc.dw),
        db: acc.db,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::pseudo_normal;

    /// The definition, in f64.
    fn naive(x: &[f32], w: &[f32], b: &[f32], s: &ConvShape) -> Vec<f64> {
        let (ho, wo) = (s.h_out(), s.w_out());
        let mut out = vec![0f64; s.batch * s.c_out * ho * wo];
        for n in 0..s.batch {
            for o in 0..s.c_out {
                for y in 0..ho {
                    for xo in 0..wo {
                        let mut acc = b[o] as f64;
                        for c in 0..s.c_in {
                            for i in 0..s.kh {
                                for j in 0..s.kw {
                                    let iy = (y * s.stride[0] + i) as isize - s.pad[0] as isize;
                                    let ix = (xo * s.stride[1] + j) as isize - s.pad[1] as isize;
                                    if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < s.h
                                        && (ix as usize) < s.w
                                    {
                                        acc += x[((n * s.c_in + c) * s.h + iy as usize) * s.w
                                            + ix as usize]
                                            as f64
                                            * w[((o * s.c_in + c) * s.kh + i) * s.kw + j] as f64;
                                    }
                                }
                            }
                        }
                        out[((n * s.c_out + o) * ho + y) * wo + xo] = acc;
                    }
                }
            }
        }
        out
    }

    fn shapes() -> Vec<ConvShape> {
        let base = ConvShape {
            batch: 2,
            c_in: 3,
            h: 7,
            w: 6,
            c_out: 4,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pad: [1, 1],
        };
        // Batch 1 runs each sample's gemms on the threads, batch 2 spreads the samples (on 2+ threads).
        vec![
            ConvShape { batch: 1, ..base },
            // Rows of 20 pixels: whole 16-pixel panels within a row, and panels across rows.
            ConvShape {
                batch: 1,
                c_in: 2,
                h: 5,
                w: 20,
                ..base
            },
            ConvShape {
                pad: [0, 0],
                ..base
            },
            base,
            ConvShape {
                stride: [2, 2],
                ..base
            },
            ConvShape {
                kh: 1,
                kw: 1,
                pad: [0, 0],
                ..base
            },
            ConvShape {
                kh: 3,
                kw: 1,
                pad: [1, 0],
                stride: [2, 1],
                ..base
            },
        ]
    }

    /// Seeded input, weight and bias for `s`.
    fn inputs(s: &ConvShape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        (
            pseudo_normal(s.batch * s.c_in * s.h * s.w, 1, 1.0),
            pseudo_normal(s.c_out * s.c_in * s.kh * s.kw, 2, 1.0),
            pseudo_normal(s.c_out, 3, 1.0),
        )
    }

    #[test]
    fn forward_matches_the_definition() {
        for s in shapes() {
            assert_forward_matches(s, 1e-5);
        }
    }

    /// The im2col kernel (which serves every shape) against the definition.
    fn assert_forward_matches(s: ConvShape, tolerance: f64) {
        let (x, w, b) = inputs(&s);
        let got = conv2d_im2col_f32(&x, &w, Some(&b), s);
        let want = naive(&x, &w, &b, &s);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(err < tolerance, "{s:?}: max |kernel − definition| = {err}");
    }

    #[test]
    fn in_place_panels_cross_depth_and_row_blocks() {
        // Depth 270 > KC, 150 output channels > MC, rows of two whole panels: the in-place tile over several
        // depth and row blocks, the packed tile on the panels of the 8-pixel rows of the second shape.
        let base = ConvShape {
            batch: 2,
            c_in: 30,
            h: 5,
            w: 32,
            c_out: 150,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pad: [1, 1],
        };
        for s in [base, ConvShape { w: 24, ..base }] {
            assert_forward_matches(s, 1e-4);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for s in shapes() {
            let (x, w, b) = inputs(&s);
            let g = pseudo_normal(s.batch * s.c_out * s.h_out() * s.w_out(), 4, 1.0);
            let all = Wanted {
                input: true,
                weight: true,
            };
            let grads = conv2d_backward_f32(&x, &w, &g, s, all);
            let (dx, dw) = (grads.dx.expect("dx"), grads.dw.expect("dw"));
            // Asking for one gradient gives the same values (up to the order of the per-thread sums), and not
            // the other.
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-5);
            for (input, weight) in [(true, false), (false, true)] {
                let one = conv2d_backward_f32(&x, &w, &g, s, Wanted { input, weight });
                assert_eq!(one.dx.is_some(), input);
                assert_eq!(one.dw.is_some(), weight);
                assert!(one.dx.is_none_or(|d| close(&d, &dx)), "{s:?}: dx alone");
                assert!(one.dw.is_none_or(|d| close(&d, &dw)), "{s:?}: dw alone");
                assert!(close(&one.db, &grads.db), "{s:?}: db");
            }
            // The loss Σ g ∘ conv is linear in each argument, so a central difference is exact up to rounding.
            let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
                naive(x, w, b, &s)
                    .iter()
                    .zip(&g)
                    .map(|(o, g)| o * *g as f64)
                    .sum()
            };
            let eps = 0.5f32;
            let check = |name: &str, v: &[f32], grad: &[f32], at: &dyn Fn(&[f32]) -> f64| {
                for i in (0..v.len()).step_by(5) {
                    let (mut hi, mut lo) = (v.to_vec(), v.to_vec());
                    hi[i] += eps;
                    lo[i] -= eps;
                    let fd = (at(&hi) - at(&lo)) / (2.0 * eps as f64);
                    assert!(
                        (fd - grad[i] as f64).abs() < 1e-4 * (1.0 + fd.abs()),
                        "{s:?} {name}[{i}]: {} vs {fd}",
                        grad[i]
                    );
                }
            };
            check("dx", &x, &dx, &|v| loss(v, &w, &b));
            check("dw", &w, &dw, &|v| loss(&x, v, &b));
            check("db", &b, &grads.db, &|v| loss(&x, &w, v));
        }
    }
}
