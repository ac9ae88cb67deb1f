//! Training: backpropagation through a whole episode on the GPU, then Adam.
//!
//! The trace H and its gradient G are resident (B, N, N) buffers for the whole sweep. The backward
//! sweep recovers H(t-1) from H(t) by inverting the decay update,
//! `H(t-1) = (H(t) - eta x(t-2) x(t-1)^T) / (1 - eta)`, and resets it to an exact checkpoint every
//! K steps, so memory holds `ceil((T - 1) / K) - 1` trace copies (the steps 1 + kK < T) instead of T. Each reversed step
//! multiplies an existing rounding error by `1 / (1 - eta)`; K is the largest segment for which
//! `(1 - eta)^-K <= max_reversal_amplification` (100 by default: K = 458 at eta = 0.01, K = 6 at
//! eta = 0.5), recomputed from the current eta before every episode since eta is learned. A reversed
//! step writes the recovered trace back only every other step: the step after one that did not finds
//! H(t) where it wants H(t-1) and inverts it once more itself; its gradient G(t) likewise, recovered
//! by the step after from G(t+1) with the skipping step's values (`backward_trace::reversal_schedule`;
//! `KernelTuning::backward_store_every_step` stores both every step).
//!
//! Rules that cannot be inverted (a clip, a neuromodulated or per-neuron rate, an eligibility
//! trace; see [`Plasticity::reversible`]) recompute instead: the forward pass stores the traces
//! after steps K, 2K, ... (K = ceil(sqrt(T)) by default), and before the sweep walks a segment
//! backwards, `trace_update` refills a scratch buffer of K + 1 trace slots from the segment's
//! checkpoint. Memory: about (T / K + K + 1) traces, O(sqrt(T)).

use plasticity_kernels::adam_update::{self, AdamParams};
use plasticity_kernels::backward_activation::{self, BackwardActivationParams, LOSS_NONE, MOD_NONE};
use plasticity_kernels::backward_trace::{self, BackwardTraceParams};
use plasticity_kernels::finish_gradients::{FinishGradientsParams, Reduction};
use plasticity_kernels::head_backward::{self, HeadBackwardParams};
use plasticity_kernels::input_projection_backward::{self, InputProjectionBackwardParams};
use plasticity_kernels::modulation_backward::{self, ModulationBackwardParams};
use plasticity_kernels::trace_update::{self, TraceUpdateParams};
use plasticity_kernels::weight_gradient::{self, WeightGradientParams};
use plasticity_kernels::{AlphaShape, EtaShape, Modulation, PartialsLayout, Plasticity, Rule};

use crate::buffers::{self, GpuBuffer};
use crate::context::GpuContext;
use crate::episode::{
    EpisodeData, EpisodeMetrics, EpisodeShape, EpisodeSource, ForwardState, GpuEpisode, ParamSlots, bind_group, dispatch,
    dispatch_pipeline, prepare,
};
use crate::error::{Result, invalid};
use crate::network::{HostParameters, Network};
use crate::tuning::KernelTuning;

/// Adam with optional clipping of the global gradient norm. Defaults are the paper's.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Clip the global gradient norm to this value first (Backpropamine uses 4.0); `None` for off.
    pub clip_norm: Option<f32>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 3e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, clip_norm: None }
    }
}

impl AdamConfig {
    pub fn validate(&self) -> Result<()> {
        let what = "optimizer config";
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid(what, format!("learning rate {} must be > 0", self.lr)));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(invalid(what, format!("{name} = {b} must be in [0, 1)")));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(invalid(what, format!("eps = {} must be > 0", self.eps)));
        }
        if let Some(c) = self.clip_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(invalid(what, format!("clip norm {c} must be > 0")));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainerConfig {
    pub adam: AdamConfig,
    /// Bound on how much the trace reversal may amplify rounding between checkpoints.
    pub max_reversal_amplification: f32,
    /// Force the checkpoint interval K (1 stores the trace of every step); `None` derives it from
    /// eta for reversible rules and uses ceil(sqrt(T)) for the others.
    pub checkpoint_every: Option<u32>,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self { adam: AdamConfig::default(), max_reversal_amplification: 100.0, checkpoint_every: None }
    }
}

/// The longest run of reversed steps whose error amplification `(1 - eta)^-K` stays within `max_amplification`.
pub fn reversal_segment(eta: f32, steps: u32, max_amplification: f32) -> u32 {
    let steps = steps.max(1);
    if eta <= 0.0 {
        return steps; // 1 / (1 - eta) <= 1: reversal does not amplify
    }
    if eta >= 1.0 || max_amplification <= 1.0 {
        return 1;
    }
    let k = (max_amplification as f64).ln() / -(1.0 - eta as f64).ln();
    (k.floor() as u64).clamp(1, steps as u64) as u32
}

/// Steps after which the forward pass stores the trace: 1 + K, 1 + 2K, ... < T (H(T) is
/// still in the trace buffer when the sweep starts, and H(1) = 0 needs no copy).
pub fn checkpoint_steps(segment: u32, steps: u32) -> Vec<u32> {
    (1..).map(|k| 1 + k * segment.max(1)).take_while(|&c| c < steps).collect()
}

/// Whether a reversed sweep replaces the trace with the exact H(s) before step s: at a checkpoint
/// step, and at step 1, where H(1) = 0.
fn resets_reversal(s: u32, mut checkpoint_steps: impl Iterator<Item = u32>) -> bool {
    s == 1 || checkpoint_steps.any(|c| c == s)
}

/// The recompute segment of a rule that cannot be reversed: ceil(sqrt(T)) balances the T / K
/// checkpoints against the K + 1 scratch slots.
pub fn recompute_segment(steps: u32) -> u32 {
    ((steps.max(1) as f64).sqrt().ceil() as u32).max(1)
}

/// Steps after which the forward pass stores the trace for recomputation: K, 2K, ... < T, the
/// trace just before each segment 1 + kK..(k + 1)K.
pub fn recompute_checkpoint_steps(segment: u32, steps: u32) -> Vec<u32> {
    (1..).map(|k| k * segment.max(1)).take_while(|&c| c < steps).collect()
}

/// GPU bytes a trainer holds, by what they are for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryBreakdown {
    /// The activation history (T + 1, B, N), which holds the inputs until each step overwrites them
    /// (plus the input layer's (T, B, D) inputs): grows with T.
    pub history: u64,
    /// Trace checkpoints: T / K of them.
    pub checkpoints: u64,
    /// The recompute sweep's K + 1 trace slots (rules that cannot be reversed).
    pub recompute_scratch: u64,
    /// Parameters, gradients, Adam state, the trace and its gradient, partial sums, params slots.
    pub rest: u64,
}

/// How the backward sweep gets H(t-1) for one episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recovery {
    /// Invert the update, resetting to a checkpoint every `segment` steps.
    Reverse { segment: u32 },
    /// Recompute each segment of `segment` steps from its checkpoint into scratch slots.
    Recompute { segment: u32 },
}

struct BackwardState {
    shape: EpisodeShape,
    /// The context's work division when this state was built (it fixes Z).
    tuning: KernelTuning,
    /// The forward state's kernel choice, which the backward kernels follow.
    vec4: bool,
    /// Batch elements per backward_trace pass (its BATCH_SLOTS).
    batch_slots: u32,
    /// Whether backward_trace_vec4 hoists its column values (its HOIST_COLUMNS); false when the
    /// scalar kernel runs.
    hoist_columns: bool,
    /// Side of the blocks backward_trace walks (its TILE).
    tile: u32,
    /// Invocations of backward_trace that interleave their columns (its COLUMN_LANES).
    column_lanes: u32,
    /// Invocations per backward_trace workgroup.
    workgroup: u32,
    partials_layout: PartialsLayout,
    trace_grad: GpuBuffer,
    partials: GpuBuffer,
    /// Recompute: K + 1 trace slots; allocated for the current K.
    segment_traces: Option<(u32, GpuBuffer)>,
    activation_params_slots: ParamSlots,
    trace_params_slots: ParamSlots,
    update_params_slots: ParamSlots,
    modulation_params_slots: ParamSlots,
    input_params_slots: ParamSlots,
    head_params_slots: ParamSlots,
    /// One weight_gradient window per slot, in the order of `weight_gradient::windows`; likewise
    /// `input_params_slots` for the input layer's gradient.
    weight_params_slots: ParamSlots,
    finish_params_slots: ParamSlots,
    adam_params_slots: ParamSlots,
}

impl BackwardState {
    fn new(ctx: &GpuContext, fwd: &ForwardState, net: &Network) -> Result<Self> {
        let shape = &fwd.shape;
        let (n, batch) = (shape.neurons, shape.batch);
        let spec = shape.plasticity();
        let tile = ctx.tuning.backward_tile_side(&ctx.adapter, n, batch)?;
        let workgroup = ctx.tuning.backward_workgroup(&ctx.adapter, &ctx.limits())?;
        let column_lanes = ctx.tuning.backward_columns(&ctx.adapter)?;
        let layout = net.layout;
        let groups = ctx.tuning.backward_groups(&ctx.adapter, n, batch, tile);
        let batch_slots = ctx.tuning.backward_slots(batch, groups)?;
        // Checked before the u32 layout below is formed: each group holds its own dalpha. (Z <= B, so
        // a trace that fits mostly means this fits too; the whole partials buffer is checked below.)
        let per_group = n as u64 * n as u64 * 4;
        if groups > 1 {
            buffers::check_storage(
                ctx,
                &format!("the dalpha of {groups} backward batch groups (Z, N, N)"),
                groups as u64 * per_group,
                |limit| {
                    format!(
                        "use at most {} backward batch groups (KernelTuning::backward_groups, bench --backward-groups)",
                        limit / per_group
                    )
                },
            )?;
        }
        let mut pl = PartialsLayout::new(n, batch, spec, groups, tile, weight_gradient::WINDOW.min(shape.steps));
        if !shape.heads.is_empty() {
            pl = pl.with_heads(n, batch, shape.loss_steps.len() as u32);
        }
        let total = layout.heads_width();
        let mut head_params: Vec<HeadBackwardParams> = layout
            .head_columns()
            .enumerate()
            .map(|(h, (w_offset, width, col0))| HeadBackwardParams {
                n,
                batch,
                n_loss_steps: shape.loss_steps.len() as u32,
                width,
                total,
                col0,
                w_offset,
                accumulate: (h > 0) as u32,
                loss_grad_offset: pl.loss_grad,
                ..Default::default()
            })
            .collect();
        if head_params.is_empty() {
            head_params.push(HeadBackwardParams::default());
        }
        let modulation_params: Vec<ModulationBackwardParams> = (1..=shape.steps)
            .map(|step| ModulationBackwardParams {
                n,
                batch,
                step,
                n_tiles: pl.tiles,
                mod_offset: layout.mod_offset,
                rate_partials_offset: pl.rate,
                acc_offset: pl.modulator,
                mod_grad_offset: pl.mod_grad,
                fan_out: (spec.modulation == Modulation::PerNeuron) as u32,
                mod_len: spec.modulator_len(n),
                ..Default::default()
            })
            .collect();
        let mut finish = FinishGradientsParams { param_count: layout.count, ..Default::default() };
        let eta_used = !spec.modulated() || spec.retroactive;
        // Eta sums are (Z, tiles, N); with Z > 1 batch groups, dalpha is (Z, N, N).
        let eta_job = match (eta_used, spec.eta) {
            (false, _) => Reduction::default(),
            (true, EtaShape::Scalar) => Reduction { dst: layout.eta_offset, len: 1, rows: groups * pl.tiles * n, src: pl.eta },
            (true, EtaShape::PerNeuron) => Reduction { dst: layout.eta_offset, len: n, rows: groups * pl.tiles, src: pl.eta },
        };
        let (alpha_src, alpha_rows) = if groups > 1 { (pl.group_grads, groups) } else { (pl.alpha, 1) };
        let alpha_job = match (spec.alpha, groups > 1) {
            (AlphaShape::PerConnection, false) => Reduction::default(),
            (AlphaShape::PerConnection, true) => Reduction { dst: layout.alpha_offset, len: n * n, rows: alpha_rows, src: alpha_src },
            (AlphaShape::PerNeuron, _) => Reduction { dst: layout.alpha_offset, len: n, rows: alpha_rows * n, src: alpha_src },
            (AlphaShape::Scalar, _) => Reduction { dst: layout.alpha_offset, len: 1, rows: alpha_rows * n * n, src: alpha_src },
        };
        let mod_job = if spec.modulated() {
            Reduction { dst: layout.mod_offset, len: spec.modulator_len(n), rows: batch, src: pl.modulator }
        } else {
            Reduction::default()
        };
        finish.set_reductions([eta_job, alpha_job, mod_job]);
        if !net.config.plastic {
            (finish.frozen0_begin, finish.frozen0_end) = (layout.alpha_offset, layout.eta_offset);
        }
        if !net.config.learn_eta || !eta_used {
            (finish.frozen1_begin, finish.frozen1_end) = (layout.eta_offset, layout.mod_offset);
        }
        let partial_bytes = pl.len as u64 * 4;
        buffers::check_storage(ctx, "the backward partial sums", partial_bytes, |limit| {
            if groups > 1 {
                // What each group adds to the layout; the rest does not depend on Z.
                let group_bytes = PartialsLayout::per_group_len(n, tile) as u64 * 4;
                let fitting = (limit.saturating_sub(partial_bytes - groups as u64 * group_bytes) / group_bytes).max(1);
                format!(
                    "use at most {fitting} backward batch groups (KernelTuning::backward_groups, bench --backward-groups) or a smaller batch"
                )
            } else {
                "use a smaller batch".into()
            }
        })?;
        let steps = shape.steps as usize;
        let windows = weight_gradient::windows(shape.steps, pl.ga_window);
        let input_params: Vec<InputProjectionBackwardParams> = windows
            .iter()
            .map(|&(first_step, steps)| InputProjectionBackwardParams {
                n,
                batch,
                first_step,
                steps,
                width: shape.input_width(),
                w_in_offset: layout.in_offset,
                ga_offset: pl.ga_of_step(n, batch, first_step),
                ..Default::default()
            })
            .collect();
        let weight_params: Vec<WeightGradientParams> = windows
            .iter()
            .map(|&(first_step, steps)| WeightGradientParams {
                n,
                batch,
                first_step,
                steps,
                ga_offset: pl.ga_of_step(n, batch, first_step),
                w_offset: layout.w_offset,
                ..Default::default()
            })
            .collect();
        Ok(Self {
            shape: fwd.shape.clone(),
            tuning: ctx.tuning,
            vec4: fwd.vec4,
            batch_slots,
            hoist_columns: fwd.vec4 && ctx.tuning.backward_hoist(&ctx.adapter, batch_slots),
            tile,
            column_lanes,
            workgroup,
            partials_layout: pl,
            trace_grad: buffers::storage(ctx, "trace gradient", fwd.trace.bytes)?,
            partials: buffers::storage(ctx, "backward partial sums", partial_bytes)?,
            segment_traces: None,
            activation_params_slots: ParamSlots::new(ctx, "backward_activation params", &vec![BackwardActivationParams::default(); steps])?,
            trace_params_slots: ParamSlots::new(ctx, "backward_trace params", &vec![BackwardTraceParams::default(); steps])?,
            update_params_slots: ParamSlots::new(ctx, "trace_update params", &vec![TraceUpdateParams::default(); steps])?,
            modulation_params_slots: ParamSlots::new(ctx, "modulation_backward params", &modulation_params)?,
            input_params_slots: ParamSlots::new(ctx, "input_projection_backward params", &input_params)?,
            head_params_slots: ParamSlots::new(ctx, "head_backward params", &head_params)?,
            weight_params_slots: ParamSlots::new(ctx, "weight_gradient params", &weight_params)?,
            finish_params_slots: ParamSlots::new(ctx, "finish_gradients params", &[finish])?,
            adam_params_slots: ParamSlots::new(ctx, "adam params", &[AdamParams::default()])?,
        })
    }

    /// Writes the per-step params that depend on the episode's loss scale and on K.
    /// `plan`: the steps whose trace the forward pass stored as checkpoints.
    fn write_step_params(&self, ctx: &GpuContext, net: &Network, loss_scale: f32, recovery: Recovery, plan: &[u32]) -> Result<()> {
        let shape = &self.shape;
        let (n, batch, steps) = (shape.neurons, shape.batch, shape.steps);
        let (layout, pl) = (net.layout, self.partials_layout);
        let modulated = shape.plasticity().modulated();
        let activation: Vec<BackwardActivationParams> = (1..=steps)
            .map(|step| BackwardActivationParams {
                n,
                batch,
                step,
                n_tiles: pl.tiles,
                loss_slot: shape.loss_slot(step),
                loss_scale,
                clamp_words: shape.clamp_words(),
                mod_offset: layout.mod_offset,
                mod_grad_offset: if modulated { pl.mod_grad } else { MOD_NONE },
                preact_offset: pl.ga_of_step(n, batch, step),
                loss_grad_offset: if shape.heads.is_empty() { LOSS_NONE } else { pl.loss_grad },
                ..Default::default()
            })
            .collect();
        let slot = shape.trace_slot_len() as u32;
        // Recompute: step t of the segment starting at s0 sits in slot t - s0 + 1, H(s0 - 1) in slot 0.
        let slot_of = |t: u32, segment: u32| t - ((t - 1) / segment * segment + 1) + 1;
        // Reversal: which steps find H(t+1) in the slot and which leave it (the sweep's resets are
        // record_backward's: a checkpoint, and H(1) = 0).
        let schedule = match recovery {
            Recovery::Reverse { .. } => backward_trace::reversal_schedule(
                steps,
                |s| resets_reversal(s, plan.iter().copied()),
                self.tuning.backward_store_every_step,
            ),
            Recovery::Recompute { .. } => vec![Default::default(); steps as usize],
        };
        let trace: Vec<BackwardTraceParams> = (1..=steps)
            .map(|step| {
                let (cur_offset, prev_offset) = match recovery {
                    Recovery::Reverse { .. } => (0, 0),
                    Recovery::Recompute { segment } => (slot_of(step, segment) * slot, (slot_of(step, segment) - 1) * slot),
                };
                let reversal = schedule[step as usize - 1];
                BackwardTraceParams {
                    n,
                    batch,
                    step,
                    n_tiles: pl.tiles,
                    w_offset: layout.w_offset,
                    alpha_offset: layout.alpha_offset,
                    eta_offset: layout.eta_offset,
                    mod_offset: layout.mod_offset,
                    cur_offset,
                    prev_offset,
                    elig_offset: shape.elig_offset(),
                    alpha_grad_offset: pl.alpha,
                    rate_partials_offset: pl.rate,
                    eta_partials_offset: pl.eta,
                    preact_offset: pl.ga_of_step(n, batch, step),
                    groups: pl.groups,
                    group_grad_offset: pl.group_grads,
                    trace_ahead: reversal.ahead as u32,
                    skip_store: reversal.skip_store as u32,
                    grad_ahead: reversal.grad_ahead as u32,
                    skip_grad_store: reversal.skip_grad_store as u32,
                    // Read only with grad_ahead, which step T never has: ga(t+1) is still in the ring
                    // (K >= 2 slots whenever T >= 2), as step t writes ga(t) into another slot.
                    next_preact_offset: pl.ga_of_step(n, batch, step + 1),
                }
            })
            .collect();
        self.activation_params_slots.write(ctx, &activation)?;
        self.trace_params_slots.write(ctx, &trace)?;
        if let Recovery::Recompute { segment } = recovery {
            let (_, row_stride) = trace_update::grid(n, batch, self.vec4);
            let update: Vec<TraceUpdateParams> = (1..=steps)
                .map(|step| TraceUpdateParams {
                    n,
                    batch,
                    step,
                    row_stride,
                    eta_offset: layout.eta_offset,
                    mod_offset: layout.mod_offset,
                    src_offset: (slot_of(step, segment) - 1) * slot,
                    dst_offset: slot_of(step, segment) * slot,
                    elig_offset: shape.elig_offset(),
                    ..Default::default()
                })
                .collect();
            self.update_params_slots.write(ctx, &update)?;
        }
        Ok(())
    }

    /// The K + 1 scratch slots of the recompute sweep.
    fn ensure_segment_traces(&mut self, ctx: &GpuContext, segment: u32) -> Result<()> {
        if self.segment_traces.as_ref().is_some_and(|(k, _)| *k == segment) {
            return Ok(());
        }
        self.segment_traces = None;
        let bytes = (segment as u64 + 1) * self.shape.trace_slot_len() * 4;
        let slot_bytes = self.shape.trace_slot_len() * 4;
        buffers::check_storage(ctx, &format!("the recompute scratch ({} trace slots)", segment + 1), bytes, |limit| {
            format!(
                "set checkpoint_every to at most {} (fewer slots), or use a smaller batch",
                (limit / slot_bytes).saturating_sub(1).max(1)
            )
        })?;
        self.segment_traces = Some((segment, buffers::storage(ctx, "recompute scratch traces", bytes)?));
        Ok(())
    }

    fn allocated_bytes(&self) -> u64 {
        [&self.trace_grad, &self.partials].iter().map(|b| b.bytes).sum::<u64>()
            + self.segment_traces.as_ref().map_or(0, |(_, b)| b.bytes)
            + [
                &self.activation_params_slots,
                &self.trace_params_slots,
                &self.update_params_slots,
                &self.modulation_params_slots,
                &self.input_params_slots,
                &self.head_params_slots,
                &self.weight_params_slots,
                &self.finish_params_slots,
                &self.adam_params_slots,
            ]
            .iter()
            .map(|u| u.buffer.bytes)
            .sum::<u64>()
    }
}

/// Trains a [`Network`] on batches of episodes. One call of [`Trainer::train_step`] records the
/// forward episode, the loss, the backward sweep and the Adam update into one command buffer, and
/// reads back only the metrics.
pub struct Trainer {
    pub network: Network,
    pub config: TrainerConfig,
    grads: GpuBuffer,
    adam_m: GpuBuffer,
    adam_v: GpuBuffer,
    forward: Option<ForwardState>,
    backward: Option<BackwardState>,
    checkpoints: Vec<GpuBuffer>,
    adam_step: u32,
    /// eta as of the last readback, which sets the checkpoint interval of the next episode.
    eta: f32,
    last_segment: u32,
}

impl Trainer {
    pub fn new(ctx: &GpuContext, network: Network, config: TrainerConfig) -> Result<Self> {
        config.adam.validate()?;
        if let Some(0) = config.checkpoint_every {
            return Err(invalid("trainer config", "checkpoint_every must be at least 1"));
        }
        let bytes = network.params.bytes;
        // The parameters may come from a checkpoint with a learned eta, which sets K.
        let eta = buffers::read_f32(ctx, &network.params, network.layout.eta_offset as u64 * 4, 1, "eta")?[0];
        Ok(Self {
            grads: buffers::storage(ctx, "gradients", bytes)?,
            adam_m: buffers::storage(ctx, "adam m", bytes)?,
            adam_v: buffers::storage(ctx, "adam v", bytes)?,
            network,
            config,
            forward: None,
            backward: None,
            checkpoints: Vec::new(),
            adam_step: 0,
            eta,
            last_segment: 0,
        })
    }

    /// Forward, backward and one Adam step on a batch of episodes.
    pub fn train_step(&mut self, ctx: &GpuContext, data: &EpisodeData) -> Result<EpisodeMetrics> {
        self.run(ctx, data, true)
    }

    /// Forward and backward only: leaves the summed gradients in the gradient buffer.
    pub fn compute_gradients(&mut self, ctx: &GpuContext, data: &EpisodeData) -> Result<EpisodeMetrics> {
        self.run(ctx, data, false)
    }

    /// Allocates what an episode of `data`'s shape needs, without running it, so that a size past
    /// the device's limits is refused before the caller commits to anything (a run directory, say).
    /// The trace checkpoints can still grow later: their number follows the learned eta.
    pub fn reserve(&mut self, ctx: &GpuContext, data: &EpisodeData) -> Result<()> {
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("reserve") });
        // Recorded only for its allocations; the encoder is dropped unsubmitted.
        self.record(ctx, &mut encoder, &EpisodeSource::Host(data), false)
    }

    /// Forward only, for evaluation on fresh episodes.
    pub fn evaluate(&mut self, ctx: &GpuContext, data: &EpisodeData) -> Result<EpisodeMetrics> {
        let net = &self.network;
        let fwd = prepare(&mut self.forward, ctx, &EpisodeSource::Host(data), &net.config)?;
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("evaluate") });
        ctx.scoped("recording an evaluation episode", || {
            fwd.record_forward(ctx, &mut encoder, net, &[]);
            fwd.record_metrics_readback(&mut encoder, net);
        })?;
        fwd.finish(ctx, "an evaluation episode", encoder)
    }

    /// The gradient of the last [`Trainer::compute_gradients`] or [`Trainer::train_step`], in the parameters' layout.
    pub fn read_gradients(&self, ctx: &GpuContext) -> Result<HostParameters> {
        let layout = self.network.layout;
        let values = buffers::read_f32(ctx, &self.grads, 0, layout.count as usize, "gradients")?;
        Ok(HostParameters { layout, values })
    }

    /// Bytes of every GPU buffer the trainer holds now (parameters, gradients, Adam state,
    /// episode state and trace checkpoints): its peak, since all are allocated before a step runs.
    pub fn allocated_bytes(&self) -> u64 {
        self.network.params.bytes
            + self.grads.bytes
            + self.adam_m.bytes
            + self.adam_v.bytes
            + self.forward.as_ref().map_or(0, ForwardState::allocated_bytes)
            + self.backward.as_ref().map_or(0, BackwardState::allocated_bytes)
            + self.checkpoints.iter().map(|c| c.bytes).sum::<u64>()
    }

    /// Where [`Trainer::allocated_bytes`] goes: the parts that grow with the episode length and the rest.
    pub fn memory_breakdown(&self) -> MemoryBreakdown {
        let history = self.forward.as_ref().map_or(0, |f| f.activations.bytes + f.projected_inputs.bytes);
        let checkpoints = self.checkpoints.iter().map(|c| c.bytes).sum();
        let recompute_scratch = self.backward.as_ref().and_then(|b| b.segment_traces.as_ref()).map_or(0, |(_, s)| s.bytes);
        let rest = self.allocated_bytes() - history - checkpoints - recompute_scratch;
        MemoryBreakdown { history, checkpoints, recompute_scratch, rest }
    }

    /// Adam's state, for checkpoints that resume training exactly.
    pub fn read_optimizer_state(&self, ctx: &GpuContext) -> Result<crate::checkpoint::OptimizerState> {
        let count = self.network.layout.count as usize;
        Ok(crate::checkpoint::OptimizerState {
            adam_m: buffers::read_f32(ctx, &self.adam_m, 0, count, "adam m")?,
            adam_v: buffers::read_f32(ctx, &self.adam_v, 0, count, "adam v")?,
            steps: self.adam_step,
        })
    }

    /// Restores Adam's state saved by [`Trainer::read_optimizer_state`].
    pub fn write_optimizer_state(&mut self, ctx: &GpuContext, state: &crate::checkpoint::OptimizerState) -> Result<()> {
        let count = self.network.layout.count as usize;
        if state.adam_m.len() != count || state.adam_v.len() != count {
            return Err(invalid("optimizer state", format!("expected {count} values per moment for this network")));
        }
        buffers::write(ctx, &self.adam_m, 0, &state.adam_m)?;
        buffers::write(ctx, &self.adam_v, 0, &state.adam_v)?;
        self.adam_step = state.steps;
        Ok(())
    }

    /// Parameters and optimizer state, ready to save.
    pub fn checkpoint(&self, ctx: &GpuContext) -> Result<crate::checkpoint::Checkpoint> {
        Ok(crate::checkpoint::Checkpoint {
            network: self.network.config.clone(),
            parameters: self.network.read_parameters(ctx)?,
            optimizer: Some(self.read_optimizer_state(ctx)?),
            metadata: Default::default(),
        })
    }

    /// The last episode's output heads (L, B, total head width), as [`crate::EpisodeRunner::read_head_outputs`].
    pub fn read_head_outputs(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.forward.as_ref().ok_or_else(|| invalid("request", "no episode has run yet"))?.read_head_outputs(ctx)
    }

    /// The last episode's activation history (T + 1, B, N): x(t) in row t. For figures and tests.
    pub fn read_activations(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        let f = self.forward.as_ref().ok_or_else(|| invalid("request", "no episode has run yet"))?;
        buffers::read_f32(ctx, &f.activations, 0, (f.activations.bytes / 4) as usize, "activations")
    }

    /// The checkpoint interval K used by the last episode.
    pub fn last_segment(&self) -> u32 {
        self.last_segment
    }

    /// `(S, Z)` the last episode ran with: chunks of the forward step's sum and batch groups of the
    /// backward trace kernel (see [`crate::KernelTuning`]); `None` before the first episode.
    pub fn work_split(&self) -> Option<(u32, u32)> {
        Some((self.forward.as_ref()?.forward_splits, self.backward.as_ref()?.partials_layout.groups))
    }

    /// 4 when the last episode ran the vec4 rule kernels, 1 when it ran the scalar ones (see
    /// [`crate::KernelTuning::scalar_kernels`]); `None` before the first episode.
    pub fn kernel_width(&self) -> Option<u32> {
        Some(if self.backward.as_ref()?.vec4 { 4 } else { 1 })
    }

    /// Whether the last episode's forward step shared the history by subgroup shuffles (see
    /// [`crate::KernelTuning::forward_subgroups`]); `None` before the first episode.
    pub fn forward_subgroups(&self) -> Option<bool> {
        Some(self.forward.as_ref()?.forward_subgroups)
    }

    /// Column quads per invocation of the last episode's vec4 forward step (see
    /// [`crate::KernelTuning::forward_column_quads`]; 0 where the scalar kernel ran, one neuron per
    /// invocation); `None` before the first episode.
    pub fn forward_column_quads(&self) -> Option<u32> {
        let forward = self.forward.as_ref()?;
        Some(if forward.vec4 { forward.forward_column_quads } else { 0 })
    }

    /// Columns per stripe of the last episode's stored trace (see
    /// [`crate::KernelTuning::trace_stripe`]), 0 where its rows were whole (a stripe of N or more
    /// columns is that too); `None` before the first episode.
    pub fn trace_stripe(&self) -> Option<u32> {
        let forward = self.forward.as_ref()?;
        Some(if forward.trace_layout.is_row_major(forward.shape.neurons) { 0 } else { forward.trace_layout.stripe })
    }

    /// Whether the last episode's backward_trace_vec4 hoisted its column values (see
    /// [`crate::KernelTuning::backward_hoist_columns`]; false for the scalar kernel); `None` before
    /// the first episode.
    pub fn backward_hoist_columns(&self) -> Option<bool> {
        Some(self.backward.as_ref()?.hoist_columns)
    }

    /// Invocations of the last episode's backward_trace that interleaved their columns (see
    /// [`crate::KernelTuning::backward_column_lanes`]); `None` before the first episode.
    pub fn backward_column_lanes(&self) -> Option<u32> {
        Some(self.backward.as_ref()?.column_lanes)
    }

    /// The side of the blocks the last episode's backward_trace walked (see
    /// [`crate::KernelTuning::backward_tile`]); `None` before the first episode.
    pub fn backward_tile(&self) -> Option<u32> {
        Some(self.backward.as_ref()?.tile)
    }

    /// Invocations per workgroup of the last episode's backward_trace (see
    /// [`crate::KernelTuning::backward_workgroup_size`]); `None` before the first episode.
    pub fn backward_workgroup(&self) -> Option<u32> {
        Some(self.backward.as_ref()?.workgroup)
    }

    /// Adam steps taken so far.
    pub fn steps_taken(&self) -> u32 {
        self.adam_step
    }

    fn run(&mut self, ctx: &GpuContext, data: &EpisodeData, update: bool) -> Result<EpisodeMetrics> {
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("training episode") });
        self.record(ctx, &mut encoder, &EpisodeSource::Host(data), update)?;
        let fwd = self.forward.as_ref().expect("recorded");
        let metrics = fwd.finish(ctx, if update { "a training step" } else { "a gradient computation" }, encoder)?;
        self.eta = metrics.eta;
        Ok(metrics)
    }

    /// Records forward, backward and one Adam step on episodes whose data is on the GPU into the
    /// host's `encoder`; nothing is submitted. Submit each recorded step before recording the next
    /// (their optimizer params are written through the queue), then [`Trainer::read_metrics`] returns
    /// its loss. Reading the metrics also tells the trainer the new eta, which sets the next
    /// episode's checkpoint interval; without it, the interval of the last known eta is kept.
    pub fn record_train_step(&mut self, ctx: &GpuContext, encoder: &mut wgpu::CommandEncoder, episode: &GpuEpisode<'_>) -> Result<()> {
        self.record(ctx, encoder, &EpisodeSource::Gpu(episode), true)
    }

    /// The metrics of the last recorded step, once the host has submitted it.
    pub fn read_metrics(&mut self, ctx: &GpuContext) -> Result<EpisodeMetrics> {
        let metrics = self.forward.as_ref().ok_or_else(|| invalid("request", "no episode has run yet"))?.read_metrics(ctx)?;
        self.eta = metrics.eta;
        Ok(metrics)
    }

    /// The activation history of the last episode, for binding in host shaders; layout as
    /// [`crate::EpisodeRunner::activations_buffer`].
    pub fn activations_buffer(&self) -> Option<&wgpu::Buffer> {
        self.forward.as_ref().map(|f| &f.activations.buffer)
    }

    fn record(&mut self, ctx: &GpuContext, encoder: &mut wgpu::CommandEncoder, source: &EpisodeSource<'_>, update: bool) -> Result<()> {
        let spec = self.network.config.plasticity;
        prepare(&mut self.forward, ctx, source, &self.network.config)?;
        let fwd = self.forward.as_ref().expect("prepared");
        // A host may change `ctx.tuning` between episodes of the same shape: that rebuilds too.
        let reshaped = self.backward.as_ref().is_none_or(|b| b.shape != fwd.shape || b.tuning != ctx.tuning);
        if reshaped {
            self.backward = None;
            self.checkpoints.clear();
        }
        if self.backward.is_none() {
            self.backward = Some(BackwardState::new(ctx, fwd, &self.network)?);
        }
        let steps = fwd.shape.steps;
        let (recovery, plan) = if spec.reversible() {
            let segment = self.config.checkpoint_every.unwrap_or_else(|| {
                if spec.rule == Rule::Additive {
                    steps // H(t-1) = H(t) - eta pre post amplifies nothing
                } else {
                    reversal_segment(self.eta, steps, self.config.max_reversal_amplification)
                }
            });
            (Recovery::Reverse { segment }, checkpoint_steps(segment, steps))
        } else {
            let segment = self.config.checkpoint_every.unwrap_or_else(|| recompute_segment(steps)).min(steps);
            (Recovery::Recompute { segment }, recompute_checkpoint_steps(segment, steps))
        };
        let (Recovery::Reverse { segment } | Recovery::Recompute { segment }) = recovery;
        while self.checkpoints.len() < plan.len() {
            self.checkpoints.push(buffers::storage(ctx, "trace checkpoint", fwd.trace.bytes)?);
        }
        self.last_segment = segment;
        let bwd = self.backward.as_mut().expect("allocated");
        if let Recovery::Recompute { segment } = recovery {
            bwd.ensure_segment_traces(ctx, segment)?;
        }
        // The loss scale lives in the per-step params, and may differ from the last episode's.
        bwd.write_step_params(ctx, &self.network, source.loss_scale(), recovery, &plan)?;
        let bwd = self.backward.as_ref().expect("allocated");
        if update {
            let step = self.adam_step + 1;
            let a = self.config.adam;
            let (grid, row_stride) = adam_update::grid(self.network.layout.count);
            let params = AdamParams {
                param_count: self.network.layout.count,
                row_stride,
                lr: a.lr,
                beta1: a.beta1,
                beta2: a.beta2,
                eps: a.eps,
                bias1: 1.0 - a.beta1.powi(step as i32),
                bias2: 1.0 - a.beta2.powi(step as i32),
                clip_norm: a.clip_norm.unwrap_or(0.0),
                ..Default::default()
            };
            debug_assert!(grid[0] > 0);
            bwd.adam_params_slots.write(ctx, &[params])?;
        }

        let checkpoints: Vec<(u32, &wgpu::Buffer)> = plan.iter().zip(&self.checkpoints).map(|(&c, b)| (c, &b.buffer)).collect();
        let net = &self.network;
        ctx.scoped("recording a training episode", || {
            fwd.record_copies(encoder, source);
            fwd.record_forward(ctx, encoder, net, &checkpoints);
            record_backward(ctx, encoder, net, fwd, bwd, &self.grads, &checkpoints, recovery);
            if update {
                let group = bind_group(
                    ctx,
                    "adam_update",
                    &bwd.adam_params_slots,
                    &[&self.grads, &fwd.metrics, &net.params, &self.adam_m, &self.adam_v],
                );
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("adam"), timestamp_writes: None });
                dispatch(&mut pass, ctx, "adam_update", &group, 0, adam_update::grid(net.layout.count).0);
            }
            fwd.record_metrics_readback(encoder, net);
        })?;
        if update {
            self.adam_step += 1;
        }
        Ok(())
    }
}

/// The backward sweep t = T..1, then the reductions and the gradient norm.
#[allow(clippy::too_many_arguments)]
fn record_backward(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    net: &Network,
    fwd: &ForwardState,
    bwd: &BackwardState,
    grads: &wgpu::Buffer,
    checkpoints: &[(u32, &wgpu::Buffer)],
    recovery: Recovery,
) {
    let shape = &fwd.shape;
    let spec: &Plasticity = shape.plasticity();
    for b in [grads, &bwd.trace_grad.buffer, &bwd.partials.buffer] {
        encoder.clear_buffer(b, 0, None);
    }
    if !shape.heads.is_empty() {
        // dl/dx at the loss steps, and the heads' own gradients, before the sweep needs them.
        let group = bind_group(
            ctx,
            "head_backward",
            &bwd.head_params_slots,
            &[&net.params, &fwd.activations, &fwd.loss_steps, &fwd.head_grads, &bwd.partials, grads],
        );
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("heads backward"), timestamp_writes: None });
        for h in 0..shape.heads.len() {
            dispatch(&mut pass, ctx, "head_backward", &group, bwd.head_params_slots.offset(h), head_backward::workgroups(shape.neurons));
        }
    }
    let reverse = matches!(recovery, Recovery::Reverse { .. });
    let traces: &wgpu::Buffer = match (&bwd.segment_traces, reverse) {
        (Some((_, scratch)), false) => scratch,
        _ => &fwd.trace,
    };
    let activation_group = bind_group(
        ctx,
        "backward_activation",
        &bwd.activation_params_slots,
        &[&fwd.activations, &fwd.targets, &fwd.clamp, &net.params, &bwd.partials],
    );
    let trace_kernel = backward_trace::kernel_name(bwd.vec4);
    // The gradient's recovery is compiled in only where the schedule uses it.
    let grad_ahead = reverse && !bwd.tuning.backward_store_every_step;
    let mut trace_constants = backward_trace::constants(
        bwd.vec4,
        bwd.workgroup,
        reverse,
        bwd.batch_slots,
        bwd.tile,
        grad_ahead,
        bwd.column_lanes,
        bwd.hoist_columns,
    );
    // The order the forward pass stored the trace in.
    trace_constants.push(fwd.trace_layout.constant());
    let trace_pipeline = ctx.kernels.specialised(&ctx.device, trace_kernel, spec, &trace_constants);
    let trace_group = bind_group(
        ctx,
        trace_kernel,
        &bwd.trace_params_slots,
        &[&net.params, &fwd.activations, &fwd.modulation, traces, &bwd.trace_grad, grads, &bwd.partials],
    );
    let modulation_group = spec.modulated().then(|| {
        bind_group(
            ctx,
            "modulation_backward",
            &bwd.modulation_params_slots,
            &[&net.params, &fwd.activations, &fwd.modulation, &bwd.partials],
        )
    });
    let input_group = (shape.input_width() > 0)
        .then(|| bind_group(ctx, "input_projection_backward", &bwd.input_params_slots, &[&fwd.projected_inputs, &bwd.partials, grads]));
    let weight_kernel = weight_gradient::kernel_name(bwd.vec4);
    let weight_group = bind_group(ctx, weight_kernel, &bwd.weight_params_slots, &[&fwd.activations, &bwd.partials, grads]);
    let window = bwd.partials_layout.ga_window;
    let weight_grid = weight_gradient::workgroups(shape.neurons);
    let activation_grid = backward_activation::workgroups(shape.neurons, shape.batch);
    let trace_grid = backward_trace::workgroups(shape.neurons, bwd.partials_layout.groups, bwd.tile, bwd.workgroup);
    let modulation_grid = modulation_backward::workgroups(shape.batch);
    let input_grid = input_projection_backward::workgroups(shape.neurons, shape.input_width());
    // One backward step: the modulator's share of gx(t), then ga(t), then the trace part; at the first
    // step of a window of K (steps 1, K + 1, ...; the sweep runs down, so the window's other steps
    // are done and their ga is in the ring), dw and the input layer's gradient of the window.
    let step = |pass: &mut wgpu::ComputePass<'_>, t: u32| {
        let slot = t as usize - 1;
        if let Some(group) = &modulation_group {
            dispatch(pass, ctx, "modulation_backward", group, bwd.modulation_params_slots.offset(slot), modulation_grid);
        }
        dispatch(pass, ctx, "backward_activation", &activation_group, bwd.activation_params_slots.offset(slot), activation_grid);
        dispatch_pipeline(pass, ctx, trace_kernel, &trace_pipeline, &trace_group, bwd.trace_params_slots.offset(slot), trace_grid);
        if (t - 1).is_multiple_of(window) {
            let window_slot = ((t - 1) / window) as usize;
            dispatch(pass, ctx, weight_kernel, &weight_group, bwd.weight_params_slots.offset(window_slot), weight_grid);
            if let Some(group) = &input_group {
                dispatch(pass, ctx, "input_projection_backward", group, bwd.input_params_slots.offset(window_slot), input_grid);
            }
        }
    };
    match recovery {
        Recovery::Reverse { .. } => {
            // The sweep recovers H(t-1) by reversal; at a checkpoint step, and at step 1 where H(1) = 0,
            // the exact value replaces it.
            let resets_at = |s: u32| resets_reversal(s, checkpoints.iter().map(|(c, _)| *c));
            let mut t = shape.steps;
            loop {
                {
                    let mut pass =
                        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("backward"), timestamp_writes: None });
                    loop {
                        step(&mut pass, t);
                        if t == 1 || resets_at(t - 1) {
                            break;
                        }
                        t -= 1;
                    }
                }
                if t == 1 {
                    break;
                }
                match checkpoints.iter().find(|(c, _)| *c == t - 1) {
                    Some((_, buffer)) => encoder.copy_buffer_to_buffer(buffer, 0, &fwd.trace, 0, fwd.trace.bytes),
                    None => encoder.clear_buffer(&fwd.trace, 0, None),
                }
                t -= 1;
            }
        }
        Recovery::Recompute { segment } => {
            let slot_bytes = shape.trace_slot_len() * 4;
            let vec4 = bwd.vec4;
            let update_kernel = trace_update::kernel_name(vec4);
            let update_pipeline = ctx.kernels.specialised(&ctx.device, update_kernel, spec, &[fwd.trace_layout.constant()]);
            let update_group =
                bind_group(ctx, update_kernel, &bwd.update_params_slots, &[&net.params, &fwd.activations, &fwd.modulation, traces]);
            let update_grid = trace_update::grid(shape.neurons, shape.batch, vec4).0;
            let starts: Vec<u32> = (0..).map(|k| 1 + k * segment).take_while(|&s| s <= shape.steps).collect();
            for &start in starts.iter().rev() {
                let end = (start + segment - 1).min(shape.steps);
                // Slot 0 holds H(start - 1); at the first segment H(0) does not exist and H(1) = 0.
                let first_update = if start == 1 {
                    encoder.clear_buffer(traces, 0, Some(2 * slot_bytes));
                    2
                } else {
                    let (_, checkpoint) = checkpoints.iter().find(|(c, _)| *c == start - 1).expect("a checkpoint before every segment");
                    encoder.copy_buffer_to_buffer(checkpoint, 0, traces, 0, slot_bytes);
                    start
                };
                let mut pass =
                    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("recompute"), timestamp_writes: None });
                for s in first_update..=end {
                    dispatch_pipeline(
                        &mut pass,
                        ctx,
                        update_kernel,
                        &update_pipeline,
                        &update_group,
                        bwd.update_params_slots.offset(s as usize - 1),
                        update_grid,
                    );
                }
                for t in (start..=end).rev() {
                    step(&mut pass, t);
                }
            }
        }
    }
    let finish_group = bind_group(ctx, "finish_gradients", &bwd.finish_params_slots, &[&bwd.partials, grads, &fwd.metrics]);
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("finish gradients"), timestamp_writes: None });
    dispatch(&mut pass, ctx, "finish_gradients", &finish_group, 0, [1, 1, 1]);
}
