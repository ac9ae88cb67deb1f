//! Training: backpropagation through a whole episode on the GPU, then Adam.
//!
//! The trace H and its gradient G are resident (B, N, N) buffers for the whole sweep. The backward
//! sweep recovers H(t-1) from H(t) by inverting the decay update,
//! `H(t-1) = (H(t) - eta x(t-2) x(t-1)^T) / (1 - eta)`, and resets it to an exact checkpoint every
//! K steps, so memory holds `ceil((T - 1) / K) - 1` trace copies (the steps 1 + kK < T) instead of T. Each reversed step
//! multiplies an existing rounding error by `1 / (1 - eta)`; K is the largest segment for which
//! `(1 - eta)^-K <= max_reversal_amplification` (100 by default: K = 458 at eta = 0.01, K = 6 at
//! eta = 0.5), recomputed from the current eta before every episode since eta is learned.

use plasticity_kernels::adam_update::{self, AdamParams};
use plasticity_kernels::backward_activation::{self, BackwardActivationParams};
use plasticity_kernels::backward_trace::{self, BackwardTraceParams};
use plasticity_kernels::finish_gradients::FinishGradientsParams;
use plasticity_kernels::{trace_partials_len, trace_tiles};

use crate::buffers::{self, GpuBuffer};
use crate::context::GpuContext;
use crate::episode::{
    EpisodeData, EpisodeMetrics, EpisodeShape, EpisodeSource, ForwardState, GpuEpisode, ParamSlots, bind_group, dispatch, prepare,
};
use crate::error::{Result, invalid};
use crate::network::{HostParameters, Network};

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
    /// Force the checkpoint interval K (1 stores the trace of every step); `None` derives it from eta.
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

struct BackwardState {
    shape: EpisodeShape,
    trace_grad: GpuBuffer,
    preact_grad: GpuBuffer,
    partials: GpuBuffer,
    activation_params_slots: ParamSlots,
    trace_params_slots: ParamSlots,
    finish_params_slots: ParamSlots,
    adam_params_slots: ParamSlots,
}

impl BackwardState {
    fn new(ctx: &GpuContext, fwd: &ForwardState, net: &Network) -> Result<Self> {
        let shape = &fwd.shape;
        let (n, batch) = (shape.neurons, shape.batch);
        let tiles = trace_tiles(n);
        let layout = net.layout;
        let activation_params: Vec<BackwardActivationParams> = (1..=shape.steps)
            .map(|step| BackwardActivationParams {
                n,
                batch,
                step,
                n_tiles: tiles,
                loss_slot: shape.loss_slot(step),
                loss_scale: 0.0,
                clamp_words: shape.clamp_words(),
                ..Default::default()
            })
            .collect();
        let trace_params: Vec<BackwardTraceParams> = (1..=shape.steps)
            .map(|step| BackwardTraceParams {
                n,
                batch,
                step,
                n_tiles: tiles,
                w_offset: layout.w_offset,
                alpha_offset: layout.alpha_offset,
                eta_offset: layout.eta_offset,
                ..Default::default()
            })
            .collect();
        let finish = FinishGradientsParams {
            param_count: layout.count,
            eta_offset: layout.eta_offset,
            eta_partials_offset: 2 * batch * n * tiles,
            n_eta_partials: tiles * tiles,
            learn_eta: net.config.learn_eta as u32,
            frozen_begin: if net.config.plastic { 0 } else { layout.alpha_offset },
            frozen_end: if net.config.plastic { 0 } else { layout.eta_offset },
            ..Default::default()
        };
        let partial_bytes = trace_partials_len(n, batch) as u64 * 4;
        buffers::check_storage(ctx, "the backward partial sums (2, B, N, N/16)", partial_bytes, |_| "use a smaller batch".into())?;
        Ok(Self {
            shape: fwd.shape.clone(),
            trace_grad: buffers::storage(ctx, "trace gradient", fwd.trace.bytes)?,
            preact_grad: buffers::storage(ctx, "pre-activation gradient", batch as u64 * n as u64 * 4)?,
            partials: buffers::storage(ctx, "backward partial sums", partial_bytes)?,
            activation_params_slots: ParamSlots::new(ctx, "backward_activation params", &activation_params)?,
            trace_params_slots: ParamSlots::new(ctx, "backward_trace params", &trace_params)?,
            finish_params_slots: ParamSlots::new(ctx, "finish_gradients params", &[finish])?,
            adam_params_slots: ParamSlots::new(ctx, "adam params", &[AdamParams::default()])?,
        })
    }

    fn allocated_bytes(&self) -> u64 {
        [&self.trace_grad, &self.preact_grad, &self.partials].iter().map(|b| b.bytes).sum::<u64>()
            + [&self.activation_params_slots, &self.trace_params_slots, &self.finish_params_slots, &self.adam_params_slots]
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

    /// Forward only, for evaluation on fresh episodes.
    pub fn evaluate(&mut self, ctx: &GpuContext, data: &EpisodeData) -> Result<EpisodeMetrics> {
        let net = &self.network;
        let fwd = prepare(&mut self.forward, ctx, &EpisodeSource::Host(data), net.config.neurons)?;
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

    /// The last episode's activation history (T + 1, B, N): x(t) in row t. For figures and tests.
    pub fn read_activations(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        let f = self.forward.as_ref().ok_or_else(|| invalid("request", "no episode has run yet"))?;
        buffers::read_f32(ctx, &f.activations, 0, (f.activations.bytes / 4) as usize, "activations")
    }

    /// The checkpoint interval K used by the last episode.
    pub fn last_segment(&self) -> u32 {
        self.last_segment
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
        let neurons = self.network.config.neurons;
        prepare(&mut self.forward, ctx, source, neurons)?;
        let fwd = self.forward.as_ref().expect("prepared");
        let reshaped = self.backward.as_ref().is_none_or(|b| b.shape != fwd.shape);
        if reshaped {
            self.backward = None;
            self.checkpoints.clear();
        }
        if self.backward.is_none() {
            self.backward = Some(BackwardState::new(ctx, fwd, &self.network)?);
        }
        let steps = fwd.shape.steps;
        let segment =
            self.config.checkpoint_every.unwrap_or_else(|| reversal_segment(self.eta, steps, self.config.max_reversal_amplification));
        let plan = checkpoint_steps(segment, steps);
        while self.checkpoints.len() < plan.len() {
            self.checkpoints.push(buffers::storage(ctx, "trace checkpoint", fwd.trace.bytes)?);
        }
        self.last_segment = segment;
        let bwd = self.backward.as_ref().expect("allocated");

        // The loss scale lives in the per-step params, and may differ from the last episode's.
        let activation_params: Vec<BackwardActivationParams> = (1..=steps)
            .map(|step| BackwardActivationParams {
                n: neurons,
                batch: fwd.shape.batch,
                step,
                n_tiles: trace_tiles(neurons),
                loss_slot: fwd.shape.loss_slot(step),
                loss_scale: source.loss_scale(),
                clamp_words: fwd.shape.clamp_words(),
                ..Default::default()
            })
            .collect();
        bwd.activation_params_slots.write(ctx, &activation_params)?;
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
            record_backward(ctx, encoder, net, fwd, bwd, &self.grads, &checkpoints);
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

/// The backward sweep t = T..1, then the eta reduction and gradient norm.
fn record_backward(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    net: &Network,
    fwd: &ForwardState,
    bwd: &BackwardState,
    grads: &wgpu::Buffer,
    checkpoints: &[(u32, &wgpu::Buffer)],
) {
    let shape = &fwd.shape;
    for b in [grads, &bwd.trace_grad.buffer, &bwd.partials.buffer] {
        encoder.clear_buffer(b, 0, None);
    }
    let activation_group = bind_group(
        ctx,
        "backward_activation",
        &bwd.activation_params_slots,
        &[&fwd.activations, &fwd.targets, &bwd.partials, &fwd.clamp, &bwd.preact_grad],
    );
    let trace_group = bind_group(
        ctx,
        "backward_trace",
        &bwd.trace_params_slots,
        &[&net.params, &fwd.activations, &bwd.preact_grad, &fwd.trace, &bwd.trace_grad, grads, &bwd.partials],
    );
    let activation_grid = backward_activation::workgroups(shape.neurons, shape.batch);
    let trace_grid = backward_trace::workgroups(shape.neurons);
    // The sweep recovers H(t-1) by reversal; at a checkpoint step, and at step 1 where H(1) = 0,
    // the exact value replaces it.
    let resets_at = |s: u32| s == 1 || checkpoints.iter().any(|(c, _)| *c == s);
    let mut t = shape.steps;
    loop {
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("backward"), timestamp_writes: None });
            loop {
                let slot = t as usize - 1;
                dispatch(
                    &mut pass,
                    ctx,
                    "backward_activation",
                    &activation_group,
                    bwd.activation_params_slots.offset(slot),
                    activation_grid,
                );
                dispatch(&mut pass, ctx, "backward_trace", &trace_group, bwd.trace_params_slots.offset(slot), trace_grid);
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
    let finish_group = bind_group(ctx, "finish_gradients", &bwd.finish_params_slots, &[&bwd.partials, grads, &fwd.metrics]);
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("finish gradients"), timestamp_writes: None });
    dispatch(&mut pass, ctx, "finish_gradients", &finish_group, 0, [1, 1, 1]);
}
