//! Data-parallel training through burn's collective (`burn-collective`): one replica per device, each in its
//! own thread (and, across machines, its own process), training the same model on its shard of every batch.
//! Gradients are averaged over all replicas before clipping and the optimizer step, so every replica applies
//! the same update and stays bit-identical; the first replica writes checkpoints, logs and validation.
//!
//! burn-collective's operations block until every replica has joined them and know no timeout: a replica or
//! machine that stops would leave the others waiting for ever. A watchdog ends the process with an error
//! instead, once a collective operation has waited longer than [`Topology::timeout`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend, Device, DeviceId, DeviceOps};
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

/// Where this process sits among the replicas of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Replicas (devices) in this process.
    pub devices: usize,
    /// Processes (machines) in the run, one per node.
    pub nodes: usize,
    /// This process's place among them, 0-based; node 0 runs the orchestrator.
    pub node_rank: usize,
    /// `host:port` of the orchestrator (node 0) when `nodes > 1`.
    pub coordinator: Option<String>,
    /// `host:port` at which the other nodes reach this one's tensor service when `nodes > 1`.
    pub node_address: Option<String>,
    /// The longest a collective operation may wait for the other replicas.
    pub timeout: Duration,
}

impl Topology {
    /// One device, one process.
    pub fn single() -> Self {
        Self {
            devices: 1,
            nodes: 1,
            node_rank: 0,
            coordinator: None,
            node_address: None,
            timeout: Duration::from_secs(600),
        }
    }

    /// Replicas in the whole run.
    pub fn world(&self) -> usize {
        self.devices * self.nodes
    }

    /// The checks a command line's values must pass. → what is wrong
    pub fn check(&self) -> Result<(), String> {
        if self.devices == 0 || self.nodes == 0 {
            return Err("--devices and --nodes must be at least 1".into());
        }
        if self.node_rank >= self.nodes {
            return Err(format!(
                "--node-rank {} is not below --nodes {}",
                self.node_rank, self.nodes
            ));
        }
        if self.nodes > 1 {
            let coordinator = self.coordinator.as_deref().ok_or(
                "--nodes above 1 needs --coordinator HOST:PORT (the address of node 0's orchestrator)",
            )?;
            host_port(coordinator, "--coordinator")?;
            host_port(&self.node_address()?, "--node-address")?;
        }
        Ok(())
    }

    /// This node's tensor-service address: `--node-address`, or on one machine (a loopback coordinator) the
    /// coordinator's host with port `coordinator port + 1 + node rank`.
    pub fn node_address(&self) -> Result<String, String> {
        if let Some(a) = &self.node_address {
            return Ok(a.clone());
        }
        let coordinator = self.coordinator.as_deref().unwrap_or_default();
        let (host, port) = host_port(coordinator, "--coordinator")?;
        if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
            return Err(format!(
                "--node-address HOST:PORT is needed when the nodes are on several machines \
                 (--coordinator {coordinator}): the address at which the other nodes reach this one"
            ));
        }
        Ok(format!("{host}:{}", port as usize + 1 + self.node_rank))
    }

    /// The port node 0's orchestrator listens on (`--coordinator`'s), when the run spans several nodes.
    pub fn orchestrator_port(&self) -> Option<u16> {
        let coordinator = self.coordinator.as_deref().filter(|_| self.nodes > 1)?;
        host_port(coordinator, "--coordinator").ok().map(|(_, p)| p)
    }

    /// burn-collective's configuration, the same on every replica of the run.
    fn collective_config(&self) -> Result<CollectiveConfig, String> {
        let config = CollectiveConfig::default()
            .with_num_devices(self.devices)
            .with_local_all_reduce_strategy(burn_collective::AllReduceStrategy::Tree(2));
        if self.nodes == 1 {
            return Ok(config);
        }
        let coordinator = self.coordinator.clone().unwrap_or_default();
        let node = self.node_address()?;
        let (_, port) = host_port(&node, "--node-address")?;
        let ws = |a: &str| {
            format!("ws://{a}")
                .parse()
                .map_err(|e| format!("{a}: not an address: {e:?}"))
        };
        Ok(config
            .with_num_nodes(self.nodes as u32)
            .with_global_address(ws(&coordinator)?)
            .with_node_address(ws(&node)?)
            .with_data_service_port(port)
            // Ring all-reduce refuses tensors smaller than the number of nodes (a bias of one value).
            .with_global_all_reduce_strategy(burn_collective::AllReduceStrategy::Ring))
    }
}

/// The devices of `n` replicas from `first` on: consecutive devices of its kind, or, for a backend with one
/// device (the CPU), that device `n` times.
pub fn replica_devices<B: Backend>(first: &B::Device, n: usize) -> Result<Vec<B::Device>, String> {
    let id = first.id();
    let available = B::device_count(id.type_id);
    if available <= 1 {
        return Ok(vec![first.clone(); n]);
    }
    if id.index_id as usize + n > available {
        return Err(format!(
            "--devices {n} from device {} needs {} devices; this machine has {available}",
            id.index_id,
            id.index_id as usize + n
        ));
    }
    Ok((0..n as u16)
        .map(|i| {
            <B::Device as Device>::from_id(DeviceId {
                type_id: id.type_id,
                index_id: id.index_id + i,
            })
        })
        .collect())
}

/// `host:port` split, naming the flag on error.
fn host_port<'a>(address: &'a str, flag: &str) -> Result<(&'a str, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{flag} {address}: expected HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{flag} {address}: the port is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err(format!("{flag} {address}: no host"));
    }
    Ok((host, port))
}

/// One replica of a data-parallel run: its place, and the collective it reduces through.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Global rank: `node_rank × devices + local`; replica 0 writes the checkpoints and validates.
    pub rank: usize,
    /// Replicas in the run.
    pub world: usize,
    /// This replica's index in its process.
    pub local: usize,
    pub topology: Topology,
    waiting: Arc<Watchdog>,
}

impl Replica {
    /// Replica `local` of this process.
    pub fn new(topology: &Topology, local: usize) -> Self {
        Self {
            rank: topology.node_rank * topology.devices + local,
            world: topology.world(),
            local,
            topology: topology.clone(),
            waiting: Watchdog::start(
                topology.node_rank * topology.devices + local,
                topology.timeout,
            ),
        }
    }

    /// Whether this replica writes checkpoints, logs and the export.
    pub fn is_primary(&self) -> bool {
        self.rank == 0
    }

    fn peer(&self) -> PeerId {
        PeerId::from(self.rank)
    }

    /// Joins the collective on `device` (the inner backend's); blocks until every replica of the run has.
    pub fn register<B: Backend>(&self, device: &B::Device) -> Result<(), String> {
        let config = self.topology.collective_config()?;
        self.waiting.guard("joining the other replicas", || {
            burn_collective::register::<B>(self.peer(), device.clone(), config)
        })
    }

    /// Leaves the collective (after the last step).
    pub fn finish<B: Backend>(&self) -> Result<(), String> {
        self.waiting.guard("leaving the collective", || {
            burn_collective::finish_collective::<B>(self.peer())
        })
    }

    /// The mean of `values` over the replicas (one all-reduce; `codi bench allreduce` times it).
    pub fn all_reduce_mean<B: Backend>(
        &self,
        values: Tensor<B, 1>,
    ) -> Result<Tensor<B, 1>, String> {
        self.all_reduce(values, ReduceOperation::Mean)
    }

    fn all_reduce<B: Backend, const D: usize>(
        &self,
        tensor: Tensor<B, D>,
        op: ReduceOperation,
    ) -> Result<Tensor<B, D>, String> {
        let reduced = self.waiting.guard("an all-reduce", || {
            burn_collective::all_reduce::<B>(self.peer(), tensor.into_primitive().tensor(), op)
        })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
    }

    /// Every gradient of `module` averaged over the replicas. The gradients travel flattened into buckets
    /// of at most [`BUCKET`] values, in the module's parameter order (the same on every replica; parameter
    /// ids are not): a few large all-reduces instead of one per parameter.
    pub fn mean_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
        mut grads: GradientsParams,
    ) -> Result<GradientsParams, String> {
        let mut gather = Gather::<B::InnerBackend>::default();
        module.visit(&mut GatherGradients::<B> {
            grads: &mut grads,
            gather: &mut gather,
        });
        let reduced = self.reduce_buckets(gather.values, ReduceOperation::Mean)?;
        let mut pieces = reduced.into_iter();
        for (id, shape) in gather.params {
            let piece = pieces.next().expect("one piece per gradient");
            register_shaped::<B::InnerBackend>(&mut grads, id, piece, &shape);
        }
        Ok(grads)
    }

    /// `module` with replica 0's parameter values on every replica (a sum in which the others add zeros:
    /// burn-collective broadcasts on one machine only).
    pub fn share_parameters<B: AutodiffBackend, M: Module<B>>(
        &self,
        module: M,
    ) -> Result<M, String> {
        let mut gather = Gather::<B::InnerBackend>::default();
        module.visit(&mut GatherParameters {
            gather: &mut gather,
        });
        let values = match self.is_primary() {
            true => gather.values,
            false => gather.values.into_iter().map(|v| v.zeros_like()).collect(),
        };
        let shared = self.reduce_buckets(values, ReduceOperation::Sum)?;
        Ok(module.map(&mut SetParameters {
            values: shared.into_iter(),
        }))
    }

    /// All-reduces `values` (flattened tensors) in buckets of at most [`BUCKET`] values. → the reduced
    /// tensors, in order
    fn reduce_buckets<B: Backend>(
        &self,
        values: Vec<Tensor<B, 1>>,
        op: ReduceOperation,
    ) -> Result<Vec<Tensor<B, 1>>, String> {
        let mut out = Vec::with_capacity(values.len());
        let mut bucket: Vec<Tensor<B, 1>> = Vec::new();
        let mut filled = 0;
        let mut values = values.into_iter().peekable();
        while let Some(v) = values.next() {
            filled += v.dims()[0];
            bucket.push(v);
            let full = values
                .peek()
                .is_none_or(|next| filled + next.dims()[0] > BUCKET);
            if full {
                let lengths: Vec<usize> = bucket.iter().map(|t| t.dims()[0]).collect();
                let reduced = self.all_reduce(Tensor::cat(std::mem::take(&mut bucket), 0), op)?;
                let mut start = 0;
                for n in lengths {
                    out.push(reduced.clone().slice(start..start + n));
                    start += n;
                }
                filled = 0;
            }
        }
        Ok(out)
    }
}

/// The most values one all-reduce carries (64 MiB of f32).
pub const BUCKET: usize = 1 << 24;

/// Flattened tensors in module order, with the id and shape of each.
struct Gather<B: Backend> {
    values: Vec<Tensor<B, 1>>,
    params: Vec<(burn::module::ParamId, Vec<usize>)>,
}

impl<B: Backend> Default for Gather<B> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            params: Vec::new(),
        }
    }
}

impl<B: Backend> Gather<B> {
    fn push<const D: usize>(&mut self, id: burn::module::ParamId, t: Tensor<B, D>) {
        let shape = t.dims().to_vec();
        let n: usize = shape.iter().product();
        self.values.push(t.reshape([n]));
        self.params.push((id, shape));
    }
}

/// Takes every gradient out of `grads`, flattened, in module order.
struct GatherGradients<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    gather: &'a mut Gather<B::InnerBackend>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GatherGradients<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.gather.push(param.id, g);
        }
    }
}

/// Puts a flattened gradient back under `id` with its shape.
fn register_shaped<B: Backend>(
    grads: &mut GradientsParams,
    id: burn::module::ParamId,
    flat: Tensor<B, 1>,
    shape: &[usize],
) {
    macro_rules! rank {
        ($($d:literal),*) => {
            match shape.len() {
                $($d => grads.register(id, flat.reshape(<[usize; $d]>::try_from(shape).unwrap())),)*
                d => unreachable!("a parameter of rank {d}"),
            }
        };
    }
    rank!(1, 2, 3, 4, 5, 6);
}

/// Every parameter's value (inner backend), flattened, in module order.
struct GatherParameters<'a, B: Backend> {
    gather: &'a mut Gather<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GatherParameters<'_, B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.gather.push(param.id, param.val().inner());
    }
}

/// Replaces every parameter's value by the next of `values`, in module order, keeping whether it is trained.
struct SetParameters<I> {
    values: I,
}

impl<B: AutodiffBackend, I: Iterator<Item = Tensor<B::InnerBackend, 1>>> ModuleMapper<B>
    for SetParameters<I>
{
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let flat = self.values.next().expect("one value per parameter");
        let shared = Tensor::from_inner(flat.reshape(tensor.dims()));
        Param::from_mapped_value(
            id,
            shared.set_require_grad(tensor.is_require_grad()),
            mapper,
        )
    }
}

/// Ends the process when a collective operation waits longer than `timeout`: its peers have stopped.
#[derive(Debug)]
struct Watchdog {
    /// Milliseconds since `epoch` at which the current wait began; 0 while not waiting.
    since_ms: AtomicU64,
    epoch: Instant,
    what: std::sync::Mutex<&'static str>,
}

impl Watchdog {
    fn start(rank: usize, timeout: Duration) -> Arc<Self> {
        let dog = Arc::new(Self {
            since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            what: std::sync::Mutex::new(""),
        });
        let watched = Arc::downgrade(&dog);
        std::thread::Builder::new()
            .name(format!("codi-replica-{rank}-watchdog"))
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200).min(timeout));
                let Some(dog) = watched.upgrade() else { return };
                let since = dog.since_ms.load(Ordering::SeqCst);
                if since == 0 {
                    continue;
                }
                let waited = dog.epoch.elapsed().saturating_sub(Duration::from_millis(since));
                if waited > timeout {
                    let what = *dog.what.lock().unwrap_or_else(|e| e.into_inner());
                    eprintln!(
                        "error: replica {rank}: {what} waited {:.0} s for the other replicas (the limit is \
                         --peer-timeout {:.0} s): a replica or node has stopped or cannot be reached; ending \
                         the run (its last checkpoint is intact: resume it with --resume)",
                        waited.as_secs_f64(),
                        timeout.as_secs_f64()
                    );
                    std::process::exit(3);
                }
            })
            .expect("the watchdog thread starts");
        dog
    }

    /// Runs the blocking collective call `f` under the watchdog. → its result, or its error as text
    fn guard<T, E: std::fmt::Debug>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, String> {
        *self.what.lock().unwrap_or_else(|e| e.into_inner()) = what;
        let now = self.epoch.elapsed().as_millis() as u64;
        self.since_ms.store(now.max(1), Ordering::SeqCst);
        let result = f();
        self.since_ms.store(0, Ordering::SeqCst);
        result.map_err(|e| format!("burn-collective: {what} failed: {e:?}"))
    }
}

/// Starts burn-collective's global orchestrator on `port` (all interfaces) in a thread of its own; it serves
/// until the process ends.
pub fn start_orchestrator(port: u16) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the orchestrator's runtime: {e}"))?;
    std::thread::Builder::new()
        .name("codi-orchestrator".into())
        .spawn(move || runtime.block_on(burn_collective::start_global_orchestrator(port)))
        .map_err(|e| format!("cannot start the orchestrator: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(coordinator: &str, node_address: Option<&str>) -> Topology {
        Topology {
            nodes: 2,
            node_rank: 1,
            coordinator: Some(coordinator.into()),
            node_address: node_address.map(Into::into),
            ..Topology::single()
        }
    }

    #[test]
    fn a_loopback_coordinator_gives_each_node_its_own_port() {
        assert_eq!(
            nodes("127.0.0.1:4100", None).node_address().unwrap(),
            "127.0.0.1:4102"
        );
        assert!(nodes("127.0.0.1:4100", None).check().is_ok());
    }

    #[test]
    fn several_machines_need_the_node_address() {
        let e = nodes("10.0.0.1:4100", None).check().unwrap_err();
        assert!(e.contains("--node-address"), "{e}");
        assert!(nodes("10.0.0.1:4100", Some("10.0.0.2:4101"))
            .check()
            .is_ok());
        let e = nodes("10.0.0.1", None).check().unwrap_err();
        assert!(e.contains("HOST:PORT"), "{e}");
        let e = Topology {
            node_rank: 2,
            ..nodes("127.0.0.1:1", None)
        }
        .check()
        .unwrap_err();
        assert!(e.contains("--node-rank"), "{e}");
    }
}
