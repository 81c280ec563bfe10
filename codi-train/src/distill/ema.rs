//! The EMA target: θ⁻ ← γ·θ⁻ + (1 − γ)·θ after each optimizer step, parameter by parameter.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

/// Collects every float parameter, flattened, in visiting order.
struct Collect<B: Backend>(Vec<Tensor<B, 1>>);

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().flatten(0, D - 1));
    }
}

/// Blends each parameter with the next collected one (same visiting order: same module structure).
struct Blend<B: Backend> {
    online: std::vec::IntoIter<Tensor<B, 1>>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let online = self
            .online
            .next()
            .expect("EMA and online modules have the same parameters");
        let decay = self.decay;
        param.map(|ema| {
            let shape = ema.shape();
            let blended = ema.mul_scalar(decay) + online.reshape(shape).mul_scalar(1.0 - decay);
            blended.detach()
        })
    }
}

/// θ⁻ ← decay·θ⁻ + (1 − decay)·θ. `ema` and `online` must be the same module type and configuration.
pub fn ema_update<B: Backend, M: Module<B>>(ema: M, online: &M, decay: f64) -> M {
    let mut c = Collect(Vec::new());
    online.visit(&mut c);
    let n = c.0.len();
    let mut blend = Blend {
        online: c.0.into_iter(),
        decay,
    };
    let out = ema.map(&mut blend);
    assert!(
        blend.online.next().is_none(),
        "EMA module has fewer than {n} parameters"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    type B = codi_core::backend::CpuBackend;

    #[test]
    fn ema_moves_towards_the_online_parameters() {
        let dev = Default::default();
        let online: Linear<B> = LinearConfig::new(3, 2).init(&dev);
        let ema = codi_models::fresh::copy_with_fresh_ids(&online);
        let zero = ema.clone().map(&mut Zero);
        let blended = ema_update(zero, &online, 0.75);
        let w = codi_core::tensor_ops::to_vec(blended.weight.val());
        let o = codi_core::tensor_ops::to_vec(online.weight.val());
        for (a, b) in w.iter().zip(&o) {
            assert!((a - 0.25 * b).abs() < 1e-6);
        }
        // decay 1 keeps the EMA; decay 0 copies the online model.
        let same = ema_update(ema.clone(), &online, 0.0);
        assert_eq!(codi_core::tensor_ops::to_vec(same.weight.val()), o);
    }

    struct Zero;
    impl ModuleMapper<B> for Zero {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            p.map(|t| t.zeros_like())
        }
    }
}
