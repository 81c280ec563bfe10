//! Copies of modules with new parameter ids, so a copy (a ControlNet made from a UNet, an EMA target) is a
//! separate set of parameters for optimisers and checkpoints.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{backend::Backend, Tensor};

struct FreshIds;

impl<B: Backend> ModuleMapper<B> for FreshIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(ParamId::new(), tensor, mapper)
    }
}

/// A deep copy of `module` whose parameters have new ids (tensor values are shared until written).
pub fn copy_with_fresh_ids<B: Backend, M: Module<B>>(module: &M) -> M {
    module.clone().map(&mut FreshIds)
}
