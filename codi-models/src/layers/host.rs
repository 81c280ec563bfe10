//! Tensors of the CPU backend to and from plain f32 buffers, for the `codi_kernels` host kernels.

use std::any::{Any, TypeId};

use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, DType, Tensor, TensorData, TensorPrimitive};
use codi_core::device::{CpuAutodiff, CpuBackend};

/// Whether `B` is the CPU backend (burn-flex) and `t` holds f32: the case the host kernels serve. Every
/// other backend, autodiff included, keeps burn's ops.
pub fn on_cpu_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    TypeId::of::<B>() == TypeId::of::<CpuBackend>() && t.dtype() == DType::F32
}

/// The tensor's values, row-major; only for tensors that pass [`on_cpu_f32`].
pub fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().expect("an f32 tensor")
}

/// Whether `B` is the autodiff CPU backend and `t` holds f32: where an op with a host-kernel backward applies.
pub fn on_cpu_autodiff_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    TypeId::of::<B>() == TypeId::of::<CpuAutodiff>() && t.dtype() == DType::F32
}

/// Moves a value between a generic type and the concrete one a `TypeId` test has shown it to be.
pub fn downcast<T: 'static, U: 'static>(t: T) -> U {
    *(Box::new(t) as Box<dyn Any>)
        .downcast::<U>()
        .expect("the backend was checked before the call")
}

/// The values of an f32 primitive of the CPU backend (rank `D`), row-major: what the autodiff ops hand their
/// kernels (an autodiff tensor's `.primitive`, a gradient from `Gradients::consume`).
pub fn primitive_to_host<const D: usize>(t: FloatTensor<CpuBackend>) -> Vec<f32> {
    to_host(Tensor::<CpuBackend, D>::from_primitive(
        TensorPrimitive::Float(t),
    ))
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
