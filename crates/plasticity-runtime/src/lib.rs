//! # plasticity-runtime
//!
//! Trains and runs *differentiable plasticity* networks (Miconi, Clune & Stanley, 2018) on any GPU
//! through wgpu. Each connection has a fixed weight `w_ij` and a plastic part `alpha_ij * Hebb_ij`,
//! whose Hebbian trace starts at zero every episode and follows the decay rule
//! `Hebb(t+1) = (1 - eta) Hebb(t) + eta x(t-1) x(t)^T`; `w`, `alpha` and `eta` are learned by
//! backpropagation through the whole episode. The trace and its gradient stay on the GPU; the host
//! reads back scalars.
//!
//! The types that matter: [`GpuContext`] (a device, opened here or handed over by a host
//! application), [`NetworkConfig`] and [`Network`] (parameters in one GPU buffer),
//! [`EpisodeData`] (inputs and targets of a batch of episodes), [`EpisodeRunner`] (forward
//! episodes) and [`Trainer`] (forward, backward and Adam).
//!
//! ```no_run
//! use plasticity_runtime::{EpisodeData, GpuContext, Network, NetworkConfig, Trainer, TrainerConfig};
//!
//! # fn main() -> Result<(), plasticity_runtime::PlasticityError> {
//! let ctx = GpuContext::new()?;
//! let config = NetworkConfig { neurons: 16, ..Default::default() };
//! let mut trainer = Trainer::new(&ctx, Network::new(&ctx, &config)?, TrainerConfig::default())?;
//! let (batch, steps) = (2, 10);
//! let data = EpisodeData {
//!     batch,
//!     steps,
//!     inputs: vec![0.5; (steps * batch * 16) as usize],
//!     loss_steps: vec![steps],
//!     targets: vec![1.0; (batch * 16) as usize],
//!     loss_scale: 1.0,
//!     clamp: Vec::new(),
//! };
//! let metrics = trainer.train_step(&ctx, &data)?;
//! println!("loss {} eta {}", metrics.loss, metrics.eta);
//! # Ok(()) }
//! ```

pub mod bench;
pub mod buffers;
pub mod checkpoint;
pub mod context;
pub mod episode;
pub mod error;
pub mod network;
mod pipelines;
pub mod profile;
pub mod tasks;
pub mod trainer;
pub mod tuning;

pub use checkpoint::{Checkpoint, OptimizerState};
pub use context::{AdapterSummary, GpuContext};
pub use episode::{EpisodeData, EpisodeMetrics, EpisodeRunner, GpuEpisode, check_episode_fits};
pub use error::{PlasticityError, Result};
pub use network::{HeadKind, HostParameters, MAX_HEADS, Network, NetworkConfig, OutputHead, ParamLayout};
/// The kernel descriptors, CPU twins and f64 reference (for [`GpuContext::record_kernel`]).
pub use plasticity_kernels as kernels;
pub use plasticity_kernels::{AlphaShape, EtaShape, Modulation, Plasticity, Rule};
pub use tasks::{ImageEpisode, ImageTask, PatternTask, spare_neurons_for_quads};
pub use trainer::{AdamConfig, Trainer, TrainerConfig, checkpoint_steps, recompute_checkpoint_steps, recompute_segment, reversal_segment};
pub use tuning::KernelTuning;
/// The wgpu this runtime is built on, so that embedders use the same version.
pub use wgpu;
