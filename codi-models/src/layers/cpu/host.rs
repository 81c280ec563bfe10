//! When the host kernels serve a tensor, and tensors of the CPU backend to and from plain f32 buffers for them.

use std::any::{Any, TypeId};
use std::sync::OnceLock;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, DType, Tensor, TensorData, TensorPrimitive};
use codi_core::backend::{CpuAutodiff, CpuAutodiffCheckpointed, CpuBackend};

/// Whether the host kernels serve at all in this process: the CPU runs their AVX2 + FMA builds (without
/// them burn-flex's own kernels are faster than the kernels' portable builds) and `CODI_GENERIC_OPS` does
/// not send every op down burn's generic path, the path CUDA and wgpu run (read once).
pub fn host_kernels_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        codi_kernels::math::has_avx2_fma() && !codi_kernels::env_flag("CODI_GENERIC_OPS")
    })
}

/// Whether `B` is the CPU backend (burn-flex), `t` holds f32 and the host kernels are on: the case the
/// host kernels serve. Every other backend, autodiff included, keeps burn's ops.
pub fn on_cpu_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    TypeId::of::<B>() == TypeId::of::<CpuBackend>() && t.dtype() == DType::F32 && host_kernels_on()
}

/// The tensor's values, row-major; only for tensors that pass [`on_cpu_f32`].
pub fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    flex_values(downcast(t.into_primitive().tensor()))
}

/// A CPU-backend f32 tensor's values for a host kernel: the tensor itself when its storage is already
/// contiguous (read in place, no copy — its buffer is shared, not duplicated, by an op that keeps it for its
/// backward pass), otherwise a row-major copy.
#[derive(Debug, Clone)]
pub enum HostValues {
    /// The tensor itself, read in place (contiguous f32 storage).
    InPlace(FlexTensor),
    /// A row-major copy of the values of a tensor that was not contiguous f32.
    Copied(Vec<f32>),
}

impl HostValues {
    /// The values of `t`: in place when its storage is contiguous f32, else copied row-major.
    pub fn of(t: FlexTensor) -> Self {
        // `as_slice` is None for another dtype or a non-contiguous layout.
        if t.as_slice::<f32>().is_some() {
            HostValues::InPlace(t)
        } else {
            HostValues::Copied(flex_values(t))
        }
    }

    /// The values, row-major.
    pub fn slice(&self) -> &[f32] {
        match self {
            HostValues::InPlace(t) => t.as_slice::<f32>().expect("checked contiguous f32"),
            HostValues::Copied(v) => v,
        }
    }
}

impl std::ops::Deref for HostValues {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.slice()
    }
}

/// [`HostValues`] of a tensor that passes [`on_cpu_f32`].
pub fn host_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostValues {
    HostValues::of(downcast(t.into_primitive().tensor()))
}

/// [`HostValues`] of an f32 primitive of the CPU backend.
pub fn primitive_values(t: FloatTensor<CpuBackend>) -> HostValues {
    HostValues::of(t)
}

/// A burn-flex f32 tensor's values, row-major. burn-flex copies a view it cannot fold to two axes (the
/// [b, heads, n, d] head split of attention) one element at a time through a generic index walk; here the
/// runs along a unit-stride last axis are copied whole.
fn flex_values(t: FlexTensor) -> Vec<f32> {
    let layout = t.layout();
    let dims = layout.shape().as_slice();
    let strides = layout.strides();
    let rank = dims.len();
    let n = layout.num_elements();
    if let Some(batches) = batched_transpose(dims, strides) {
        // A [.., C, R] buffer seen as [.., R, C] (an NCHW activation as tokens × channels).
        let (r, c) = (dims[rank - 2], dims[rank - 1]);
        let src = &t.storage::<f32>()[layout.start_offset()..][..n];
        return codi_kernels::transpose::transpose_batched(src, batches, c, r);
    }
    let strided_rows = rank >= 3
        && !layout.is_contiguous()
        && strides[rank - 1] == 1
        && strides.iter().all(|&s| s >= 0)
        && dims[rank - 1] >= 8;
    if !strided_rows {
        return t.into_data().into_vec::<f32>().expect("an f32 tensor");
    }
    let src: &[f32] = t.storage::<f32>();
    let row = dims[rank - 1];
    let mut out = Vec::with_capacity(n);
    let mut index = vec![0usize; rank - 1];
    for _ in 0..n / row {
        let start = layout.start_offset()
            + index
                .iter()
                .zip(strides)
                .map(|(&i, &s)| i * s as usize)
                .sum::<usize>();
        out.extend_from_slice(&src[start..start + row]);
        for axis in (0..rank - 1).rev() {
            index[axis] += 1;
            if index[axis] < dims[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// For a view [.., R, C] of a contiguous [.., C, R] buffer (the last two axes swapped, the others in order):
/// the number of [R, C] matrices.
fn batched_transpose(dims: &[usize], strides: &[isize]) -> Option<usize> {
    let rank = dims.len();
    if rank < 2 || dims[rank - 2] < 2 || dims[rank - 1] < 2 {
        return None;
    }
    let (r, c) = (dims[rank - 2], dims[rank - 1]);
    if strides[rank - 2] != 1 || strides[rank - 1] != r as isize {
        return None;
    }
    let mut expected = (r * c) as isize;
    for axis in (0..rank - 2).rev() {
        if dims[axis] > 1 && strides[axis] != expected {
            return None;
        }
        expected *= dims[axis] as isize;
    }
    Some(dims[..rank - 2].iter().product())
}

/// [b, h, n, d] ↔ [b, n, h, d] on the host (the same permutation both ways).
pub fn swap_heads_and_tokens(values: &[f32], [b, h, n, d]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0.0f32; values.len()];
    for bi in 0..b {
        for hi in 0..h {
            for ni in 0..n {
                let src = ((bi * h + hi) * n + ni) * d;
                let dst = ((bi * n + ni) * h + hi) * d;
                out[dst..dst + d].copy_from_slice(&values[src..src + d]);
            }
        }
    }
    out
}

/// Values laid out [b, n, h, d] as a [b, h, n, d] primitive (a view with heads and tokens swapped), so that
/// the usual merge of heads, swap_dims(1, 2) then reshape, costs no copy.
pub fn token_major_to_primitive(
    values: Vec<f32>,
    [b, h, n, d]: [usize; 4],
) -> FloatTensor<CpuBackend> {
    use burn::tensor::ops::FloatTensorOps;
    CpuBackend::float_swap_dims(host_to_primitive(values, [b, n, h, d]), 1, 2)
}

/// Whether `B` is the autodiff CPU backend (with or without checkpointing), `t` holds f32 and the host
/// kernels are on: where an op with a host-kernel backward applies. Both autodiff backends share one tensor
/// type. A host op keeps what its backward needs in its own state, so it is recorded as compute-bound under
/// either strategy; the checkpointing strategy then acts on burn's own (memory-bound) ops around it, which
/// back up the host ops' outputs they may have to recompute from.
pub fn on_cpu_autodiff_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    let b = TypeId::of::<B>();
    (b == TypeId::of::<CpuAutodiff>() || b == TypeId::of::<CpuAutodiffCheckpointed>())
        && t.dtype() == DType::F32
        && host_kernels_on()
}

/// A tensor that passed [`on_cpu_autodiff_f32`] as the autodiff backend's primitive.
pub fn autodiff_primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<CpuAutodiff> {
    downcast(t.into_primitive().tensor())
}

/// An autodiff primitive back as the caller's tensor type (the inverse of [`autodiff_primitive`]).
pub fn from_autodiff_primitive<B: Backend, const D: usize>(
    p: FloatTensor<CpuAutodiff>,
) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(downcast(p)))
}

/// Records `output` as the result of a host op with backward pass `op` over `parents`, keeping `state`
/// for that pass when a parent is tracked: the bookkeeping every host op under autodiff shares.
pub fn record_op<Op: Backward<CpuBackend, N>, const N: usize>(
    op: Op,
    parents: [&FloatTensor<CpuAutodiff>; N],
    state: Op::State,
    output: FloatTensor<CpuBackend>,
) -> FloatTensor<CpuAutodiff> {
    match op
        .prepare::<NoCheckpointing>(parents.map(|p| p.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// Whether a test can take the host path on this machine and in this process; tests of that path return
/// early (and say so) where it cannot.
#[cfg(test)]
pub fn host_path_testable() -> bool {
    let on = host_kernels_on();
    if !on {
        eprintln!("host kernels off (no AVX2 + FMA, or CODI_GENERIC_OPS): host-path test skipped");
    }
    on
}

/// Moves a value between a generic type and the concrete one a `TypeId` test has shown it to be.
pub fn downcast<T: 'static, U: 'static>(t: T) -> U {
    *(Box::new(t) as Box<dyn Any>)
        .downcast::<U>()
        .expect("the backend was checked before the call")
}

/// The values of an f32 primitive of the CPU backend (any rank and layout), row-major: what the autodiff ops
/// hand their kernels (an autodiff tensor's `.primitive`, a gradient from `Gradients::consume`).
pub fn primitive_to_host(t: FloatTensor<CpuBackend>) -> Vec<f32> {
    flex_values(t)
}

/// In an autodiff op's backward pass: registers `values`, shaped `shape`, as the gradient of the parent
/// `node` when the parent is tracked and the gradient was computed.
pub fn register_grad<const D: usize>(
    grads: &mut Gradients,
    node: Option<NodeId>,
    values: Option<Vec<f32>>,
    shape: [usize; D],
) {
    if let (Some(node), Some(values)) = (node, values) {
        grads.register::<CpuBackend>(node, host_to_primitive(values, shape));
    }
}

/// Host values as a primitive of the CPU backend, for an autodiff op's output or gradients.
pub fn host_to_primitive<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
) -> FloatTensor<CpuBackend> {
    Tensor::<CpuBackend, D>::from_data(TensorData::new(values, shape), &Default::default())
        .into_primitive()
        .tensor()
}

#[cfg(test)]
mod tests {
    use super::*;
    use codi_core::NoiseSource;

    #[test]
    fn strided_views_come_to_the_host_in_row_major_order() {
        let mut noise = codi_core::SeededNoise::new(8);
        let t = noise.sample::<CpuBackend, 4>([2, 9, 3, 10], &Default::default());
        let views = [
            t.clone().swap_dims(1, 2),
            t.clone().permute([2, 0, 1, 3]),
            t.clone().narrow(3, 1, 8).swap_dims(0, 1),
            t.clone().swap_dims(2, 3),
            t.clone().narrow(1, 2, 5),
            // NCHW as [N, HW, C]: the batched transpose, across several of its 32 × 32 tiles.
            noise
                .sample::<CpuBackend, 3>([2, 33, 70], &Default::default())
                .swap_dims(1, 2)
                .unsqueeze_dim::<4>(0),
            t.clone()
                .reshape([2, 9, 30])
                .swap_dims(1, 2)
                .unsqueeze_dim::<4>(0),
        ];
        for (i, v) in views.into_iter().enumerate() {
            let want = v.clone().into_data().into_vec::<f32>().unwrap();
            assert_eq!(to_host(v), want, "view {i}");
        }
    }

    #[test]
    fn the_head_swap_is_its_own_inverse_and_a_free_view() {
        let shape = [2, 3, 5, 4];
        let values: Vec<f32> = (0..120).map(|i| i as f32).collect();
        let swapped = swap_heads_and_tokens(&values, shape);
        assert_eq!(swap_heads_and_tokens(&swapped, [2, 5, 3, 4]), values);
        let t = Tensor::<CpuBackend, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(
            token_major_to_primitive(swapped, shape),
        ));
        assert_eq!(t.dims(), shape);
        assert_eq!(t.into_data().into_vec::<f32>().unwrap(), values);
    }
}
