//! Copies of modules with new parameter ids, so a copy (a ControlNet made from a UNet, an EMA target) is a
//! separate set of parameters for optimisers and checkpoints.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{backend::Backend, Tensor};

struct FreshIds;

impl<B: Backend> ModuleMapper<B> for FreshIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(ParamId::new(), tensor, mapper)
    }
}

/// Burn initialises parameters lazily, and a clone of a not-yet-initialised parameter would draw its own
/// random values: reading every value first makes the copy hold the source's values.
struct Materialise;

impl<B: Backend> ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// A deep copy of `module` whose parameters have new ids and the same values.
pub fn copy_with_fresh_ids<B: Backend, M: Module<B>>(module: &M) -> M {
    module.visit(&mut Materialise);
    module.clone().map(&mut FreshIds)
}
