//! The one place a backend and device are chosen. `--device cpu|wgpu[:N]|cuda[:N]` parses to a
//! [`DeviceSpec`]; [`with_backend`] runs a backend-generic task on it. The CPU backend (burn-flex) is always
//! compiled; `wgpu`, `cuda` and `ndarray` are cargo features of this binary. A GPU device is tried with one
//! small op first, so that a missing driver or device is an error that says so, not a panic in the backend.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::{AutodiffBackend, Backend};

use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::Autodiff;
use codi_core::backend::CpuBackend;
use codi_core::CoreError;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// The burn-ndarray CPU backend (cargo feature `ndarray`), for comparison with burn-flex.
    NdArray,
    Wgpu(usize),
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, index) = match s.split_once(':') {
            Some((n, i)) => (
                n,
                i.parse::<usize>().map_err(|_| CoreError::Invalid {
                    what: "device index",
                    reason: format!("'{i}' in '{s}' is not a number"),
                })?,
            ),
            None => (s, 0),
        };
        match name {
            "cpu" if index == 0 => Ok(Self::Cpu),
            "ndarray" if index == 0 => Ok(Self::NdArray),
            "wgpu" => Ok(Self::Wgpu(index)),
            "cuda" => Ok(Self::Cuda(index)),
            _ => Err(CoreError::UnknownName {
                what: "device",
                value: s.to_string(),
                expected: "cpu, ndarray, wgpu[:N], cuda[:N]",
            }),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::NdArray => write!(f, "ndarray"),
            Self::Wgpu(i) => write!(f, "wgpu:{i}"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// A computation written once for any backend. `B` is an autodiff backend; frozen models and inference use
/// `B::InnerBackend`.
pub trait BackendTask {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

fn not_compiled(spec: DeviceSpec, feature: &str) -> CoreError {
    CoreError::Invalid {
        what: "device",
        reason: format!("'{spec}' needs codi built with the `{feature}` cargo feature"),
    }
}

/// The float type a backend computes in. bf16 runs on CUDA only: burn-flex computes in f32 and WGSL has no
/// bf16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatDType {
    #[default]
    F32,
    Bf16,
}

impl FromStr for FloatDType {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(CoreError::UnknownName {
                what: "float type",
                value: s.to_string(),
                expected: "f32, bf16",
            }),
        }
    }
}

impl FloatDType {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

/// What to install or check when a GPU device cannot be used.
fn hint(spec: DeviceSpec) -> &'static str {
    match spec {
        DeviceSpec::Wgpu(_) => {
            "no Vulkan adapter answered (a GPU driver, or Mesa's software one: \
             `apt-get install mesa-vulkan-drivers`)"
        }
        DeviceSpec::Cuda(_) => "no CUDA driver or no such device",
        _ => "the backend failed to start",
    }
}

/// Runs one small op on `device`: a backend that cannot start panics inside its runtime, which here
/// becomes an error naming the device.
#[allow(dead_code)] // unused when no GPU backend is compiled
fn probe<B: Backend>(spec: DeviceSpec, device: &B::Device) -> Result<(), CoreError> {
    guarded(spec, || {
        burn::tensor::Tensor::<B, 1>::zeros([1], device).into_data();
    })
}

/// Runs `start`, turning a panic (silenced) into an error that names `spec` and what to check.
fn guarded(spec: DeviceSpec, start: impl FnOnce()) -> Result<(), CoreError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(start));
    std::panic::set_hook(previous);
    result.map(|_| ()).map_err(|payload| {
        let detail = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let detail: String = detail
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        CoreError::Invalid {
            what: "device",
            reason: format!("'{spec}' cannot be used: {} ({detail})", hint(spec)),
        }
    })
}

/// Probes `device` ([`probe`]), then runs `task` on it.
#[allow(dead_code)] // unused when no GPU backend is compiled
fn run_probed<B: AutodiffBackend, T: BackendTask>(
    spec: DeviceSpec,
    device: B::Device,
    task: T,
) -> Result<T::Output, CoreError> {
    probe::<B>(spec, &device)?;
    Ok(task.run::<B>(device))
}

/// Runs `task` on the backend and device `spec` names, in f32.
pub fn with_backend<T: BackendTask>(spec: DeviceSpec, task: T) -> Result<T::Output, CoreError> {
    with_backend_as(spec, FloatDType::F32, task)
}

/// Runs `task` on the backend and device `spec` names, computing in `dtype`.
pub fn with_backend_as<T: BackendTask>(
    spec: DeviceSpec,
    dtype: FloatDType,
    task: T,
) -> Result<T::Output, CoreError> {
    if dtype == FloatDType::Bf16 {
        return match spec {
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(i) => run_probed::<
                burn::backend::Autodiff<burn::backend::Cuda<burn::tensor::bf16>>,
                T,
            >(
                spec, burn::backend::cuda::CudaDevice::new(i), task
            ),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => Err(not_compiled(spec, "cuda")),
            _ => Err(CoreError::Invalid {
                what: "float type",
                reason: format!("bf16 runs on cuda only, not on '{spec}'"),
            }),
        };
    }
    run_on::<NoCheckpointing, T>(spec, task)
}

/// Runs `task` in f32 on the backend `spec` names with burn-autodiff's balanced checkpointing: the outputs
/// of memory-bound (element-wise) ops are recomputed in the backward pass instead of kept.
pub fn with_checkpointing<T: BackendTask>(
    spec: DeviceSpec,
    task: T,
) -> Result<T::Output, CoreError> {
    run_on::<BalancedCheckpointing, T>(spec, task)
}

/// Runs `task` in f32 on `spec`'s backend, under autodiff with the checkpointing strategy `C`.
fn run_on<C: CheckpointStrategy, T: BackendTask>(
    spec: DeviceSpec,
    task: T,
) -> Result<T::Output, CoreError> {
    match spec {
        DeviceSpec::Cpu => Ok(task.run::<Autodiff<CpuBackend, C>>(Default::default())),
        #[cfg(feature = "ndarray")]
        DeviceSpec::NdArray => {
            Ok(task.run::<Autodiff<burn::backend::NdArray, C>>(Default::default()))
        }
        #[cfg(not(feature = "ndarray"))]
        DeviceSpec::NdArray => Err(not_compiled(spec, "ndarray")),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(i) => run_probed::<Autodiff<burn::backend::Wgpu, C>, T>(
            spec,
            if i == 0 {
                burn::backend::wgpu::WgpuDevice::DefaultDevice
            } else {
                burn::backend::wgpu::WgpuDevice::DiscreteGpu(i)
            },
            task,
        ),
        #[cfg(not(feature = "wgpu"))]
        DeviceSpec::Wgpu(_) => Err(not_compiled(spec, "wgpu")),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(i) => run_probed::<Autodiff<burn::backend::Cuda, C>, T>(
            spec,
            burn::backend::cuda::CudaDevice::new(i),
            task,
        ),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => Err(not_compiled(spec, "cuda")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_parse() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!("bf16".parse(), Ok(FloatDType::Bf16));
        assert!("fp8".parse::<FloatDType>().is_err());
        assert_eq!("wgpu:1".parse(), Ok(DeviceSpec::Wgpu(1)));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cpu:1".parse::<DeviceSpec>().is_err());
    }

    struct Sum;
    impl BackendTask for Sum {
        type Output = f32;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> f32 {
            let t = burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], &device);
            codi_core::tensor_ops::to_vec(t.sum())[0]
        }
    }

    #[test]
    fn a_device_that_cannot_start_is_an_error_naming_it() {
        // What cubecl does without a Vulkan driver: its server thread dies and the caller's receive fails.
        let e = guarded(DeviceSpec::Wgpu(0), || {
            panic!("called `Result::unwrap()` on an `Err` value: RecvError")
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("'wgpu:0' cannot be used"), "{e}");
        assert!(
            e.contains("mesa-vulkan-drivers") && e.contains("RecvError"),
            "{e}"
        );
        let e = guarded(DeviceSpec::Cuda(1), || panic!("no device")).unwrap_err();
        assert!(
            e.to_string().contains("no CUDA driver or no such device"),
            "{e}"
        );
        assert_eq!(guarded(DeviceSpec::Wgpu(0), || {}), Ok(()));
    }

    #[test]
    fn cpu_runs_and_missing_backends_say_which_feature() {
        assert_eq!(with_backend(DeviceSpec::Cpu, Sum), Ok(6.0));
        assert_eq!(with_checkpointing(DeviceSpec::Cpu, Sum), Ok(6.0));
        let e = with_backend_as(DeviceSpec::Cpu, FloatDType::Bf16, Sum).unwrap_err();
        assert!(e.to_string().contains("bf16 runs on cuda only"), "{e}");
        if !cfg!(feature = "cuda") {
            let e = with_backend(DeviceSpec::Cuda(0), Sum).unwrap_err();
            assert!(e.to_string().contains("`cuda` cargo feature"), "{e}");
        }
    }
}
