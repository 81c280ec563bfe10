//! The backward pass of [`crate::attention`]: given the forward's inputs, output and per-row log-sum-exp, and
//! the output's gradient, the gradients of q, k and v. Each block of query rows rebuilds its probabilities
//! from the log-sum-exp (one score matmul and a vectorised exp) instead of keeping the [n, m] probabilities
//! of every head between the passes; the heads are spread over rayon's threads.
//!
//! With P = softmax(S), S = scale · q kᵀ, o = P v and g = ∂L/∂o:
//! dv = Pᵀ g, dP = g vᵀ, dS = P ∘ (dP − rowsum(g ∘ o)), dq = scale · dS k, dk = scale · dSᵀ q.
//! dv and dk are accumulated transposed (dvᵀ = gᵀ P, dkᵀ = scale · qᵀ dS) and transposed once per head.

use rayon::prelude::*;

use crate::attention::{narrow_values, narrow_values_apply, pad_to_8, AttentionShape, ROWS};
use crate::math::{exp_approx_with, has_avx2_fma};
use crate::sgemm::{sgemm, View};
use crate::transpose::transpose;

/// Gradients of q, k and v, shaped like them.
pub struct AttentionGrads {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
}

/// q: [heads, n, d], k: [heads, m, d], v: [heads, m, dv], out and dout: [heads, n, dv], lse: [heads, n].
pub fn attention_backward_f32(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    shape: AttentionShape,
) -> AttentionGrads {
    let AttentionShape { heads, n, m, d, dv } = shape;
    assert_eq!(q.len(), heads * n * d);
    assert_eq!(k.len(), heads * m * d);
    assert_eq!(v.len(), heads * m * dv);
    assert_eq!(out.len(), heads * n * dv);
    assert_eq!(dout.len(), heads * n * dv);
    assert_eq!(lse.len(), heads * n);
    let scale = 1.0 / (d as f32).sqrt();
    let mut grads = AttentionGrads {
        dq: vec![0f32; heads * n * d],
        dk: vec![0f32; heads * m * d],
        dv: vec![0f32; heads * m * dv],
    };
    grads
        .dq
        .par_chunks_mut(n * d)
        .zip(grads.dk.par_chunks_mut(m * d))
        .zip(grads.dv.par_chunks_mut(m * dv))
        .enumerate()
        .for_each(|(hd, ((dqh, dkh), dvh))| {
            let qh = &q[hd * n * d..(hd + 1) * n * d];
            let kh = &k[hd * m * d..(hd + 1) * m * d];
            let vh = &v[hd * m * dv..(hd + 1) * m * dv];
            let oh = &out[hd * n * dv..(hd + 1) * n * dv];
            let gh = &dout[hd * n * dv..(hd + 1) * n * dv];
            let lh = &lse[hd * n..(hd + 1) * n];
            // kᵀ and vᵀ once per head, packed by row copies in every block (see the forward).
            let (mut kt, mut vt) = (vec![0f32; d * m], vec![0f32; dv * m]);
            transpose(kh, m, d, &mut kt);
            transpose(vh, m, dv, &mut vt);
            // Heads of at most 8 floats: dq through the forward's narrow product (see there).
            let k8 = narrow_values_apply(d).then(|| pad_to_8(kh, d));
            let mut p = vec![0f32; ROWS * m];
            let mut ds = vec![0f32; ROWS * m];
            // dv and dk accumulate transposed ([dv, m], [d, m]): the probabilities are then the right operand,
            // packed by plain row copies, and the register tiles run along the m keys rather than the narrow
            // head width.
            let mut dvt = vec![0f32; dv * m];
            let mut dkt = vec![0f32; d * m];
            for r0 in (0..n).step_by(ROWS) {
                let rows = ROWS.min(n - r0);
                let qb = &qh[r0 * d..(r0 + rows) * d];
                let gb = &gh[r0 * dv..(r0 + rows) * dv];
                let ob = &oh[r0 * dv..(r0 + rows) * dv];
                let p = &mut p[..rows * m];
                let ds = &mut ds[..rows * m];
                let first = r0 == 0;
                // SAFETY: every pointer/stride pair addresses inside its slice, sized by the asserts above.
                unsafe {
                    // P = exp(scale · q kᵀ − lse): [rows, m]
                    sgemm(
                        [rows, m, d],
                        p.as_mut_ptr(),
                        m,
                        false,
                        View::row_major(qb, d),
                        View::row_major(&kt, m),
                        scale,
                        false,
                    );
                    // dP = g vᵀ: [rows, m]
                    sgemm(
                        [rows, m, dv],
                        ds.as_mut_ptr(),
                        m,
                        false,
                        View::row_major(gb, dv),
                        View::row_major(&vt, m),
                        1.0,
                        false,
                    );
                }
                for (i, (prow, dsrow)) in p.chunks_mut(m).zip(ds.chunks_mut(m)).enumerate() {
                    let delta: f32 = gb[i * dv..(i + 1) * dv]
                        .iter()
                        .zip(&ob[i * dv..(i + 1) * dv])
                        .map(|(a, b)| a * b)
                        .sum();
                    softmax_grad_row(prow, dsrow, lh[r0 + i], delta, scale);
                }
                // Now ds = scale · dS.
                unsafe {
                    // dvᵀ += gᵀ P: [dv, m]
                    sgemm(
                        [dv, m, rows],
                        dvt.as_mut_ptr(),
                        m,
                        !first,
                        View::row_major(gb, dv).t(),
                        View::row_major(p, m),
                        1.0,
                        false,
                    );
                    // dq = (scale · dS) k: [rows, d]
                    match &k8 {
                        Some(k8) => {
                            narrow_values(ds, m, k8, &mut dqh[r0 * d..(r0 + rows) * d], d, |_| 1.0)
                        }
                        None => sgemm(
                            [rows, d, m],
                            dqh[r0 * d..].as_mut_ptr(),
                            d,
                            false,
                            View::row_major(ds, m),
                            View::row_major(kh, d),
                            1.0,
                            false,
                        ),
                    }
                    // dkᵀ += qᵀ (scale · dS): [d, m]
                    sgemm(
                        [d, m, rows],
                        dkt.as_mut_ptr(),
                        m,
                        !first,
                        View::row_major(qb, d).t(),
                        View::row_major(ds, m),
                        1.0,
                        false,
                    );
                }
            }
            transpose(&dvt, dv, m, dvh);
            transpose(&dkt, d, m, dkh);
        });
    grads
}

/// p ← exp(p − lse); ds ← scale · p ∘ (ds − delta).
fn softmax_grad_row(p: &mut [f32], ds: &mut [f32], lse: f32, delta: f32, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { softmax_grad_row_avx2(p, ds, lse, delta, scale) };
        }
    }
    softmax_grad_row_generic::<false>(p, ds, lse, delta, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_grad_row_avx2(p: &mut [f32], ds: &mut [f32], lse: f32, delta: f32, scale: f32) {
    softmax_grad_row_generic::<true>(p, ds, lse, delta, scale)
}

#[inline(always)]
fn softmax_grad_row_generic<const FUSED: bool>(
    p: &mut [f32],
    ds: &mut [f32],
    lse: f32,
    delta: f32,
    scale: f32,
) {
    for (x, g) in p.iter_mut().zip(ds.iter_mut()) {
        let e = exp_approx_with::<FUSED>(*x - lse);
        *x = e;
        *g = scale * e * (*g - delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::attention_f32_lse;
    use crate::attention::tests::pseudo_normal;

    /// The loss Σ w ∘ attention(q, k, v) in f64, for finite differences.
    fn loss(q: &[f32], k: &[f32], v: &[f32], w: &[f32], shape: AttentionShape) -> f64 {
        let out = crate::attention::tests::naive(q, k, v, shape);
        out.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    #[test]
    fn gradients_match_finite_differences_on_ragged_sizes() {
        let (heads, n, m, d, dv) = (2, ROWS + 3, 13, 4, 5);
        let shape = AttentionShape { heads, n, m, d, dv };
        let q = pseudo_normal(heads * n * d, 1, 1.5);
        let k = pseudo_normal(heads * m * d, 2, 1.0);
        let v = pseudo_normal(heads * m * dv, 3, 1.0);
        let w = pseudo_normal(heads * n * dv, 4, 1.0);
        let (out, lse) = attention_f32_lse(&q, &k, &v, shape);
        let g = attention_backward_f32(&q, &k, &v, &out, &lse, &w, shape);
        let eps = 1e-2f32;
        let check = |name: &str, x: &[f32], grad: &[f32], at: &dyn Fn(&[f32]) -> f64| {
            for i in (0..x.len()).step_by(7) {
                let mut hi = x.to_vec();
                hi[i] += eps;
                let mut lo = x.to_vec();
                lo[i] -= eps;
                let fd = (at(&hi) - at(&lo)) / (2.0 * eps as f64);
                let err = (fd - grad[i] as f64).abs();
                assert!(
                    err < 2e-3 * (1.0 + fd.abs()),
                    "{name}[{i}]: kernel {} vs finite difference {fd}",
                    grad[i]
                );
            }
        };
        check("dq", &q, &g.dq, &|x| loss(x, &k, &v, &w, shape));
        check("dk", &k, &g.dk, &|x| loss(&q, x, &v, &w, shape));
        check("dv", &v, &g.dv, &|x| loss(&q, &k, x, &w, shape));
    }
}
