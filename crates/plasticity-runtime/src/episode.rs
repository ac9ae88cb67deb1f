//! Episodes: their data, the GPU-resident state of a batch of episodes, and the forward pass.

use plasticity_kernels::backward_activation::LOSS_NONE;
use plasticity_kernels::forward_finish::{self, ForwardFinishParams};
use plasticity_kernels::forward_step::{self, ForwardStepParams};
use plasticity_kernels::head_forward::{self, HeadForwardParams};
use plasticity_kernels::head_loss::{self, HeadLossParams};
use plasticity_kernels::input_projection::{self, InputProjectionParams};
use plasticity_kernels::loss_mse::LossMseParams;
use plasticity_kernels::metrics;
use plasticity_kernels::modulation_forward::{self, ModulationForwardParams};
use plasticity_kernels::{Plasticity, TraceLayout};

use crate::buffers::{self, GpuBuffer};
use crate::context::GpuContext;
use crate::error::{PlasticityError, Result, invalid};
use crate::network::{HeadKind, Network, NetworkConfig, OutputHead, ParamLayout};
use crate::tuning::KernelTuning;

/// The inputs and targets of a batch of `batch` episodes of `steps` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeData {
    pub batch: u32,
    pub steps: u32,
    /// (T, B, N): the external input u(t) added to the drive of step t, in row t - 1; with an input
    /// layer of width D ([`crate::NetworkConfig::input_width`]), (T, B, D) inputs v(t) it projects.
    pub inputs: Vec<f32>,
    /// Distinct 1-based steps whose activations enter the loss.
    pub loss_steps: Vec<u32>,
    /// (L, B, N): the target of each loss step, in the order of `loss_steps`.
    pub targets: Vec<f32>,
    /// loss = loss_scale * sum over loss steps, batch and neurons of (x - y)^2.
    pub loss_scale: f32,
    /// Optional (T, B, ceil(N / 32)) bit masks: where bit j of row (t - 1, b) is set, neuron j is held
    /// at its input, x_j(t) = u_j(t), instead of being driven (the image task's clamping). Empty: none.
    pub clamp: Vec<u32>,
}

impl EpisodeData {
    pub fn validate(&self, neurons: u32) -> Result<()> {
        // The paper's network of that size, refused with its fix where N is past the kernels' u32 indices.
        let config = NetworkConfig { neurons, ..Default::default() };
        config.validate()?;
        self.validate_for(&ParamLayout::of(&config))
    }

    /// As [`EpisodeData::validate`], for a network of this layout: inputs of the input layer's
    /// width, targets of the output heads' summed width.
    pub fn validate_for(&self, layout: &ParamLayout) -> Result<()> {
        let (neurons, input_width) = (layout.neurons, layout.input_width);
        let what = "episode data";
        validate_shape(what, self.batch, self.steps, &self.loss_steps, self.loss_scale)?;
        let row = self.batch as usize * neurons as usize;
        let words = self.steps as usize * self.batch as usize * plasticity_kernels::clamp_words(neurons) as usize;
        let (in_width, in_formula) =
            if input_width == 0 { (neurons, "steps * batch * neurons") } else { (input_width, "steps * batch * input width") };
        if input_width > 0 && !self.clamp.is_empty() {
            return Err(invalid(what, "clamping holds neurons at inputs of width N; it cannot be combined with an input layer"));
        }
        let payloads = [
            ("inputs", self.inputs.len(), self.steps as usize * self.batch as usize * in_width as usize, in_formula),
            if layout.head_count == 0 {
                ("targets", self.targets.len(), self.loss_steps.len() * row, "loss steps * batch * neurons")
            } else {
                let heads = self.loss_steps.len() * self.batch as usize * layout.heads_width() as usize;
                ("targets", self.targets.len(), heads, "loss steps * batch * output heads' width")
            },
            ("clamp", if self.clamp.is_empty() { words } else { self.clamp.len() }, words, "steps * batch * ceil(N / 32) words, or none"),
        ];
        for (name, len, expected, formula) in payloads {
            if len != expected {
                return Err(invalid(what, format!("{name} hold {len} values, expected {formula} = {expected}")));
            }
        }
        Ok(())
    }

    pub(crate) fn shape(&self, config: &NetworkConfig) -> EpisodeShape {
        EpisodeShape::new(config, self.batch, self.steps, &self.loss_steps, !self.clamp.is_empty())
    }
}

/// Checks that a network of `config` fits this device and so do its episodes of `batch` x `steps`
/// with `loss_steps` loss steps, before any of their data is built: the host holds an episode's
/// inputs as (T, B, N) floats, so a size the device refuses could otherwise exhaust the host's
/// memory first. The same checks run again when a network or episode is allocated; this one only
/// lets a caller refuse early, with the same errors.
pub fn check_episode_fits(ctx: &GpuContext, config: &NetworkConfig, batch: u32, steps: u32, loss_steps: u32) -> Result<()> {
    config.validate()?;
    crate::network::check_parameter_size(ctx, config)?;
    // Distinct loss steps in 1..=steps; which ones does not change any limit.
    let loss: Vec<u32> = (steps.saturating_sub(loss_steps.min(steps)) + 1..=steps).collect();
    validate_shape("episode", batch, steps, &loss, 1.0)?;
    ForwardState::check_limits(ctx, &EpisodeShape::new(config, batch, steps, &loss, false))
}

/// Batch, steps and loss steps that every episode must satisfy, whatever holds its data.
fn validate_shape(what: &'static str, batch: u32, steps: u32, loss_steps: &[u32], loss_scale: f32) -> Result<()> {
    if batch == 0 || steps == 0 {
        return Err(invalid(what, format!("batch ({batch}) and steps ({steps}) must be at least 1")));
    }
    if loss_steps.is_empty() {
        return Err(invalid(what, "at least one loss step is needed"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for &s in loss_steps {
        if s == 0 || s > steps {
            return Err(invalid(what, format!("loss step {s} is outside 1..={steps}")));
        }
        if !seen.insert(s) {
            return Err(invalid(what, format!("loss step {s} is listed twice")));
        }
    }
    if !loss_scale.is_finite() {
        return Err(invalid(what, "loss_scale must be finite"));
    }
    Ok(())
}

/// An episode whose inputs and targets are already on the GPU, in buffers the host fills in its
/// own passes (they need `COPY_SRC` usage). Layouts, all little-endian and tightly packed from
/// offset 0: `inputs` (T, B, N) f32 with u(t) in row t - 1 ((T, B, D) with an input layer of width D); `targets` (L, B, N) f32 in the order of
/// `loss_steps`; `clamp` (T, B, ceil(N / 32)) u32 bit masks, or `None`.
#[derive(Clone, Copy, Debug)]
pub struct GpuEpisode<'a> {
    pub batch: u32,
    pub steps: u32,
    pub loss_steps: &'a [u32],
    pub loss_scale: f32,
    pub inputs: &'a wgpu::Buffer,
    pub targets: &'a wgpu::Buffer,
    pub clamp: Option<&'a wgpu::Buffer>,
}

/// Where an episode's data comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EpisodeSource<'a> {
    Host(&'a EpisodeData),
    Gpu(&'a GpuEpisode<'a>),
}

impl EpisodeSource<'_> {
    fn shape(&self, config: &NetworkConfig) -> EpisodeShape {
        match self {
            Self::Host(d) => d.shape(config),
            Self::Gpu(g) => EpisodeShape::new(config, g.batch, g.steps, g.loss_steps, g.clamp.is_some()),
        }
    }

    pub fn loss_scale(&self) -> f32 {
        match self {
            Self::Host(d) => d.loss_scale,
            Self::Gpu(g) => g.loss_scale,
        }
    }

    fn validate(&self, layout: &ParamLayout) -> Result<()> {
        let (neurons, input_width) = (layout.neurons, layout.input_width);
        match self {
            Self::Host(d) => d.validate_for(layout),
            Self::Gpu(g) => {
                validate_shape("GPU episode", g.batch, g.steps, g.loss_steps, g.loss_scale)?;
                if input_width > 0 && g.clamp.is_some() {
                    return Err(invalid("GPU episode", "clamping cannot be combined with an input layer"));
                }
                let row = g.batch as u64 * neurons as u64 * 4;
                let in_row = g.batch as u64 * if input_width == 0 { neurons } else { input_width } as u64 * 4;
                let words = plasticity_kernels::clamp_words(neurons) as u64 * 4;
                let needs: [(&str, Option<&wgpu::Buffer>, u64); 3] = [
                    ("inputs", Some(g.inputs), g.steps as u64 * in_row),
                    (
                        "targets",
                        Some(g.targets),
                        if layout.head_count == 0 {
                            g.loss_steps.len() as u64 * row
                        } else {
                            g.loss_steps.len() as u64 * g.batch as u64 * layout.heads_width() as u64 * 4
                        },
                    ),
                    ("clamp", g.clamp, g.steps as u64 * g.batch as u64 * words),
                ];
                for (name, buffer, bytes) in needs {
                    if let Some(b) = buffer {
                        if b.size() < bytes {
                            return Err(invalid(
                                "GPU episode",
                                format!("the {name} buffer holds {} bytes, the episode needs {bytes}", b.size()),
                            ));
                        }
                        if !b.usage().contains(wgpu::BufferUsages::COPY_SRC) {
                            return Err(invalid("GPU episode", format!("the {name} buffer needs COPY_SRC usage")));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// What the host reads back after an episode: scalars only.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpisodeMetrics {
    pub loss: f32,
    /// Loss steps' activations whose sign differs from a nonzero target (the paper's bit errors).
    pub sign_errors: u32,
    /// Nonzero targets compared.
    pub sign_count: u32,
    /// Global gradient norm before clipping (training steps only, else 0).
    pub grad_norm: f32,
    /// eta after the step.
    pub eta: f32,
}

impl EpisodeMetrics {
    pub fn sign_error_rate(&self) -> f32 {
        if self.sign_count == 0 { 0.0 } else { self.sign_errors as f32 / self.sign_count as f32 }
    }

    pub(crate) fn from_raw(raw: &[f32]) -> Self {
        Self {
            loss: raw[metrics::LOSS],
            sign_errors: raw[metrics::SIGN_ERRORS] as u32,
            sign_count: raw[metrics::SIGN_COUNT] as u32,
            grad_norm: raw[metrics::GRAD_NORM_SQ].max(0.0).sqrt(),
            eta: raw[metrics::ETA],
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EpisodeShape {
    pub neurons: u32,
    pub batch: u32,
    pub steps: u32,
    pub loss_steps: Vec<u32>,
    pub clamped: bool,
    /// The network's parameter layout: its rule (which sets the traces held, H or H and E, and
    /// whether a modulator runs), input layer and output heads.
    pub layout: ParamLayout,
    pub heads: Vec<OutputHead>,
}

impl EpisodeShape {
    /// Whether this shape allows the vec4 rule kernels (see `plasticity_kernels::uses_vec4_kernels`);
    /// `KernelTuning::vec4_kernels` decides whether they run.
    pub fn allows_vec4_kernels(&self) -> bool {
        plasticity_kernels::uses_vec4_kernels(self.neurons, self.layout.w_offset, self.layout.alpha_offset)
    }

    fn new(config: &NetworkConfig, batch: u32, steps: u32, loss_steps: &[u32], clamped: bool) -> Self {
        Self {
            neurons: config.neurons,
            batch,
            steps,
            loss_steps: loss_steps.to_vec(),
            clamped,
            layout: ParamLayout::of(config),
            heads: config.heads.clone(),
        }
    }

    /// Targets per episode: (L, B, N) for the neurons' squared error, (L, B, total head width) with heads.
    pub fn target_values(&self) -> u64 {
        if self.heads.is_empty() { self.loss_steps.len() as u64 * self.batch as u64 * self.neurons as u64 } else { self.head_values() }
    }

    pub fn plasticity(&self) -> &Plasticity {
        &self.layout.plasticity
    }

    /// Width D of the inputs an input layer projects, or 0 when inputs drive the neurons directly.
    pub fn input_width(&self) -> u32 {
        self.layout.input_width
    }

    /// Length of a (L, B, total head width) buffer of head outputs.
    pub fn head_values(&self) -> u64 {
        self.loss_steps.len() as u64 * self.batch as u64 * self.layout.heads_width() as u64
    }

    /// The `clamp_words` params value: 0 when nothing is clamped.
    pub fn clamp_words(&self) -> u32 {
        if self.clamped { plasticity_kernels::clamp_words(self.neurons) } else { 0 }
    }

    /// Elements of one trace slot: H (B, N, N), then E (B, N, N) with a retroactive rule.
    pub fn trace_slot_len(&self) -> u64 {
        let one = self.batch as u64 * self.neurons as u64 * self.neurons as u64;
        if self.plasticity().retroactive { 2 * one } else { one }
    }

    /// Offset of E within a trace slot.
    pub fn elig_offset(&self) -> u32 {
        if self.plasticity().retroactive { self.batch * self.neurons * self.neurons } else { 0 }
    }

    pub fn loss_slot(&self, step: u32) -> u32 {
        self.loss_steps.iter().position(|&s| s == step).map_or(LOSS_NONE, |p| p as u32)
    }
}

/// A kernel's params struct for every step in one read-only storage buffer, addressed with
/// dynamic offsets (one slot per dispatch, aligned to the device's offset alignment).
pub(crate) struct ParamSlots {
    pub buffer: GpuBuffer,
    stride: u64,
    size: u64,
}

impl ParamSlots {
    pub fn new<P: bytemuck::Pod>(ctx: &GpuContext, label: &'static str, slots: &[P]) -> Result<Self> {
        let size = std::mem::size_of::<P>() as u64;
        let stride = size.next_multiple_of(ctx.limits().min_storage_buffer_offset_alignment as u64);
        let buffer = buffers::create(ctx, label, stride * slots.len() as u64, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST)?;
        let this = Self { buffer, stride, size };
        this.write(ctx, slots)?;
        Ok(this)
    }

    /// Rewrites the first `slots.len()` slots with one queue write.
    pub fn write<P: bytemuck::Pod>(&self, ctx: &GpuContext, slots: &[P]) -> Result<()> {
        debug_assert_eq!(std::mem::size_of::<P>() as u64, self.size);
        let mut bytes = vec![0u8; (self.stride * slots.len() as u64) as usize];
        for (k, slot) in slots.iter().enumerate() {
            bytes[k * self.stride as usize..][..self.size as usize].copy_from_slice(bytemuck::bytes_of(slot));
        }
        buffers::write(ctx, &self.buffer, 0, &bytes)
    }

    /// One slot holding `bytes`.
    pub fn from_bytes(ctx: &GpuContext, label: &'static str, bytes: &[u8]) -> Result<Self> {
        let buffer = buffers::create(ctx, label, bytes.len() as u64, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST)?;
        buffers::write(ctx, &buffer, 0, bytes)?;
        Ok(Self { stride: bytes.len() as u64, size: bytes.len() as u64, buffer })
    }

    pub fn offset(&self, slot: usize) -> u32 {
        (self.stride * slot as u64) as u32
    }
}

/// A bind group for `kernel`: its uniform slots at binding 0, then `storage` in binding order.
pub(crate) fn bind_group(ctx: &GpuContext, kernel: &str, slots: &ParamSlots, storage: &[&wgpu::Buffer]) -> wgpu::BindGroup {
    let k = ctx.kernels.get(kernel);
    assert_eq!(storage.len() + 1, k.descriptor.bindings.len(), "{kernel}: wrong number of buffers");
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &slots.buffer,
            offset: 0,
            size: std::num::NonZeroU64::new(slots.size),
        }),
    }];
    entries
        .extend(storage.iter().enumerate().map(|(k, b)| wgpu::BindGroupEntry { binding: k as u32 + 1, resource: b.as_entire_binding() }));
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(kernel), layout: &k.layout, entries: &entries })
}

pub(crate) fn dispatch(
    pass: &mut wgpu::ComputePass<'_>,
    ctx: &GpuContext,
    kernel: &str,
    group: &wgpu::BindGroup,
    offset: u32,
    grid: [u32; 3],
) {
    let k = ctx.kernels.get(kernel);
    dispatch_pipeline(pass, ctx, k.descriptor.name, &k.pipeline, group, offset, grid);
}

/// Like [`dispatch`], with a pipeline specialised for a rule. Timed when the context has a profiler.
pub(crate) fn dispatch_pipeline(
    pass: &mut wgpu::ComputePass<'_>,
    ctx: &GpuContext,
    kernel: &'static str,
    pipeline: &wgpu::ComputePipeline,
    group: &wgpu::BindGroup,
    offset: u32,
    grid: [u32; 3],
) {
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, group, &[offset]);
    let run = |pass: &mut wgpu::ComputePass<'_>| pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
    match &ctx.profiler {
        Some(profiler) => profiler.time(pass, kernel, run),
        None => run(pass),
    }
}

/// Buffers resident for a batch of episodes of one shape: targets, the activation history (which
/// holds the inputs until each step replaces them), the trace (and eligibility trace), the
/// modulator's history and the metrics. The traces never leave the GPU.
pub(crate) struct ForwardState {
    pub shape: EpisodeShape,
    pub targets: GpuBuffer,
    pub clamp: GpuBuffer,
    pub loss_steps: GpuBuffer,
    pub activations: GpuBuffer,
    pub trace: GpuBuffer,
    /// (T + 1, B): M_b(t) at row t; 4 bytes when the rule is not neuromodulated.
    pub modulation: GpuBuffer,
    /// (T, B, D) inputs of the input layer; 4 bytes without one.
    pub projected_inputs: GpuBuffer,
    /// (L, B, total) outputs of the output heads and their loss gradient; 4 bytes without heads.
    pub head_outputs: GpuBuffer,
    pub head_grads: GpuBuffer,
    pub metrics: GpuBuffer,
    pub staging: GpuBuffer,
    /// (S, B, N) partial sums of a split forward step (see [`crate::KernelTuning`]); 4 bytes unsplit.
    partial_sums: GpuBuffer,
    /// S: chunks of the forward step's sum over i.
    pub forward_splits: u32,
    /// Invocations per forward_step workgroup.
    pub forward_workgroup: u32,
    /// Column quads per invocation of a vec4 forward step ([`KernelTuning::forward_column_quads`]).
    pub forward_column_quads: u32,
    /// Where the trace keeps its elements ([`KernelTuning::trace_stripe`]); every rule kernel of the
    /// episode, forward and backward, is built with it.
    pub trace_layout: TraceLayout,
    /// The context's work division when this state was built (it fixes S).
    pub tuning: KernelTuning,
    /// Whether the rule kernels run as vec4 (the shape and the tuning's choice).
    pub vec4: bool,
    /// Whether the vec4 forward step shares the history by subgroup shuffles
    /// (`forward_step_vec4_subgroup`; see [`KernelTuning::forward_subgroups`]).
    pub forward_subgroups: bool,
    step_params_slots: ParamSlots,
    finish_params_slots: ParamSlots,
    modulation_params_slots: ParamSlots,
    projection_params_slots: ParamSlots,
    head_forward_slots: ParamSlots,
    pub head_loss_slots: ParamSlots,
    pub loss_params_slots: ParamSlots,
}

impl ForwardState {
    /// Every device limit an episode of this shape must fit, checked before anything is allocated:
    /// the storage bindings of the trace, the activation history and the inputs, and the
    /// dispatches that put the batch (or loss steps x batch) along one workgroup axis.
    pub(crate) fn check_limits(ctx: &GpuContext, shape: &EpisodeShape) -> Result<()> {
        let neurons = shape.neurons;
        let (n, b, t) = (neurons as u64, shape.batch as u64, shape.steps as u64);
        // Saturating: a batch or length far past any device must fail the checks, not wrap past them.
        let traces = if shape.plasticity().retroactive { 2 } else { 1 }; // H, or H and E
        let trace_bytes = b.saturating_mul(n * n).saturating_mul(4 * traces);
        let what = if traces == 2 { "the traces H and E (2, B, N, N)" } else { "the trace (B, N, N)" };
        buffers::check_storage(ctx, &format!("{what} = ({b}, {n}, {n})"), trace_bytes, |limit| {
            let max_batch = limit / (traces * n * n * 4);
            let max_n = ((limit / (traces * b * 4)) as f64).sqrt() as u64;
            if max_batch >= 1 && max_n >= 1 {
                format!("use a batch of at most {max_batch}, or at most {max_n} neurons")
            } else if max_batch >= 1 {
                format!("use a batch of at most {max_batch}")
            } else {
                format!("use at most {max_n} neurons")
            }
        })?;
        let history_bytes = (t + 1).saturating_mul(b).saturating_mul(n * 4);
        buffers::check_storage(ctx, &format!("the activation history (T + 1, B, N) = ({}, {b}, {n})", t + 1), history_bytes, |limit| {
            format!("use at most {} steps at this batch and size", (limit / (b * n * 4)).saturating_sub(1))
        })?;

        if shape.input_width() > 0 {
            let projected_bytes = t.saturating_mul(b).saturating_mul(shape.input_width() as u64 * 4);
            buffers::check_storage(
                ctx,
                &format!("the inputs (T, B, D) = ({t}, {b}, {})", shape.input_width()),
                projected_bytes,
                |limit| format!("use at most {} steps at this batch and input width", limit / (b * shape.input_width() as u64 * 4)),
            )?;
        }
        // backward_activation and the modulator's kernels take one workgroup row per batch element,
        // head_forward one per loss step and batch element.
        let most = ctx.limits().max_compute_workgroups_per_dimension as u64;
        let head_rows = if shape.heads.is_empty() { 0 } else { shape.loss_steps.len() as u64 * b };
        for (what, rows, fix) in [
            (format!("the batch of {b} (one workgroup row per batch element)"), b, format!("use a batch of at most {most}")),
            (
                format!("the output heads' {} loss steps x batch {b} (one workgroup row each)", shape.loss_steps.len()),
                head_rows,
                match most / shape.loss_steps.len().max(1) as u64 {
                    0 => format!("use at most {most} loss steps"),
                    batch => format!("use a batch of at most {batch}"),
                },
            ),
        ] {
            if rows > most {
                return Err(PlasticityError::WorkgroupsExceeded { what, needed: rows, allowed: most, fix });
            }
        }
        Ok(())
    }

    pub fn new(ctx: &GpuContext, shape: EpisodeShape) -> Result<Self> {
        Self::check_limits(ctx, &shape)?;
        let neurons = shape.neurons;
        let (n, b, t) = (neurons as u64, shape.batch as u64, shape.steps as u64);
        let trace_bytes = shape.trace_slot_len() * 4;
        let history_bytes = (t + 1) * b * n * 4;
        let layout = shape.layout;
        let (splits, split_len) = ctx.tuning.forward_split(&ctx.adapter, neurons, shape.batch);
        let forward_workgroup = ctx.tuning.forward_workgroup(&ctx.adapter);
        let limits = ctx.limits();
        let most = limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x);
        if forward_workgroup == 0 || forward_workgroup > most {
            return Err(invalid(
                "kernel tuning",
                format!("forward_workgroup_size = {forward_workgroup}; this device takes 1 to {most} invocations per workgroup"),
            ));
        }
        let vec4 = ctx.tuning.vec4_kernels(shape.allows_vec4_kernels());
        let forward_subgroups = vec4 && ctx.forward_subgroup_kernel()?;
        let forward_column_quads = ctx.tuning.forward_columns(&ctx.adapter, neurons, shape.batch)?;
        let trace_layout = ctx.tuning.trace_layout(&ctx.adapter)?;
        let step_params: Vec<ForwardStepParams> = (1..=shape.steps)
            .map(|step| ForwardStepParams {
                n: neurons,
                batch: shape.batch,
                step,
                w_offset: layout.w_offset,
                alpha_offset: layout.alpha_offset,
                eta_offset: layout.eta_offset,
                mod_offset: layout.mod_offset,
                clamp_words: shape.clamp_words(),
                elig_offset: shape.elig_offset(),
                splits,
                split_len,
                ..Default::default()
            })
            .collect();
        let finish_params: Vec<ForwardFinishParams> = (1..=shape.steps)
            .map(|step| ForwardFinishParams {
                n: neurons,
                batch: shape.batch,
                step,
                splits,
                clamp_words: shape.clamp_words(),
                ..Default::default()
            })
            .collect();
        // At most the trace's size (S <= N), which was checked above.
        let partial_bytes = if splits > 1 { splits as u64 * b * n * 4 } else { 0 };
        let modulation_params: Vec<ModulationForwardParams> = (1..=shape.steps)
            .map(|step| ModulationForwardParams { n: neurons, batch: shape.batch, step, mod_offset: layout.mod_offset })
            .collect();
        let modulation_bytes = if shape.plasticity().modulated() { (t + 1) * b * 4 } else { 4 };
        let projected_bytes = t * b * shape.input_width() as u64 * 4;
        let (_, row_stride) = input_projection::grid(neurons, shape.batch, shape.steps);
        let heads = head_params(&shape, 1.0);
        let head_bytes = shape.head_values() * 4;
        let projection = InputProjectionParams {
            n: neurons,
            batch: shape.batch,
            steps: shape.steps,
            width: shape.input_width(),
            w_in_offset: layout.in_offset,
            row_stride,
            ..Default::default()
        };
        let loss_params = LossMseParams { n: neurons, batch: shape.batch, n_loss_steps: shape.loss_steps.len() as u32, loss_scale: 1.0 };
        let clamp_bytes = if shape.clamped { t * b * plasticity_kernels::clamp_words(neurons) as u64 * 4 } else { 0 };
        Ok(Self {
            targets: buffers::storage(ctx, "targets", shape.target_values() * 4)?,
            clamp: buffers::storage(ctx, "clamp masks", clamp_bytes)?,
            loss_steps: buffers::storage_from(ctx, "loss steps", &shape.loss_steps)?,
            activations: buffers::storage(ctx, "activations", history_bytes)?,
            trace: buffers::storage(ctx, "trace", trace_bytes)?,
            modulation: buffers::storage(ctx, "modulation", modulation_bytes)?,
            projected_inputs: buffers::storage(ctx, "input layer inputs", projected_bytes)?,
            head_outputs: buffers::storage(ctx, "head outputs", head_bytes)?,
            head_grads: buffers::storage(ctx, "head output gradients", head_bytes)?,
            metrics: buffers::storage(ctx, "metrics", metrics::COUNT as u64 * 4)?,
            staging: buffers::create(
                ctx,
                "metrics readback",
                metrics::COUNT as u64 * 4,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            )?,
            partial_sums: buffers::storage(ctx, "forward partial sums", partial_bytes)?,
            forward_splits: splits,
            forward_workgroup,
            forward_column_quads,
            trace_layout,
            tuning: ctx.tuning,
            vec4,
            forward_subgroups,
            step_params_slots: ParamSlots::new(ctx, "forward_step params", &step_params)?,
            finish_params_slots: ParamSlots::new(ctx, "forward_finish params", &finish_params)?,
            modulation_params_slots: ParamSlots::new(ctx, "modulation_forward params", &modulation_params)?,
            projection_params_slots: ParamSlots::new(ctx, "input_projection params", &[projection])?,
            head_forward_slots: ParamSlots::new(ctx, "head_forward params", &heads.iter().map(|h| h.0).collect::<Vec<_>>())?,
            head_loss_slots: ParamSlots::new(ctx, "head_loss params", &heads.iter().map(|h| h.1).collect::<Vec<_>>())?,
            loss_params_slots: ParamSlots::new(ctx, "loss_mse params", &[loss_params])?,
            shape,
        })
    }

    /// Host data: inputs go to rows 1..=T of the history, which the forward pass overwrites with x(t).
    fn upload(&self, ctx: &GpuContext, data: &EpisodeData) -> Result<()> {
        let row_bytes = (self.shape.batch * self.shape.neurons) as u64 * 4;
        if self.shape.input_width() > 0 {
            buffers::write(ctx, &self.projected_inputs, 0, &data.inputs)?;
        } else {
            buffers::write(ctx, &self.activations, row_bytes, &data.inputs)?;
        }
        buffers::write(ctx, &self.clamp, 0, &data.clamp)?;
        buffers::write(ctx, &self.targets, 0, &data.targets)
    }

    /// GPU data: the same placement, as copies recorded before the forward pass.
    pub fn record_copies(&self, encoder: &mut wgpu::CommandEncoder, source: &EpisodeSource<'_>) {
        if let EpisodeSource::Gpu(g) = source {
            let row_bytes = (self.shape.batch * self.shape.neurons) as u64 * 4;
            if self.shape.input_width() > 0 {
                encoder.copy_buffer_to_buffer(g.inputs, 0, &self.projected_inputs, 0, self.projected_inputs.bytes);
            } else {
                encoder.copy_buffer_to_buffer(g.inputs, 0, &self.activations, row_bytes, self.shape.steps as u64 * row_bytes);
            }
            encoder.copy_buffer_to_buffer(g.targets, 0, &self.targets, 0, self.shape.target_values() * 4);
            if let Some(clamp) = g.clamp {
                encoder.copy_buffer_to_buffer(clamp, 0, &self.clamp, 0, self.clamp.bytes);
            }
        }
    }

    pub fn allocated_bytes(&self) -> u64 {
        [
            &self.targets,
            &self.clamp,
            &self.loss_steps,
            &self.activations,
            &self.trace,
            &self.modulation,
            &self.projected_inputs,
            &self.head_outputs,
            &self.head_grads,
            &self.metrics,
            &self.staging,
            &self.partial_sums,
        ]
        .iter()
        .map(|b| b.bytes)
        .sum::<u64>()
            + self.step_params_slots.buffer.bytes
            + self.finish_params_slots.buffer.bytes
            + self.modulation_params_slots.buffer.bytes
            + self.projection_params_slots.buffer.bytes
            + self.head_forward_slots.buffer.bytes
            + self.head_loss_slots.buffer.bytes
            + self.loss_params_slots.buffer.bytes
    }

    /// Records the whole forward episode and the loss. After step `c` of every `(c, buffer)` in
    /// `checkpoints`, the trace H(c) is copied to `buffer`.
    pub fn record_forward(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        net: &Network,
        checkpoints: &[(u32, &wgpu::Buffer)],
    ) {
        let row_bytes = (self.shape.batch * self.shape.neurons) as u64 * 4;
        encoder.clear_buffer(&self.trace, 0, None); // H(1) = 0
        encoder.clear_buffer(&self.activations, 0, Some(row_bytes)); // x(0) = 0
        let spec = self.shape.plasticity();
        let vec4 = self.vec4;
        let step_kernel = forward_step::kernel_name(vec4, self.forward_subgroups);
        let mut constants = forward_step::constants(vec4, self.shape.batch, self.forward_workgroup, self.forward_column_quads);
        constants.push(self.trace_layout.constant());
        let pipeline = ctx.kernels.specialised(&ctx.device, step_kernel, spec, &constants);
        let step_buffers: [&wgpu::Buffer; 7] =
            [&net.params, &self.trace, &self.activations, &self.clamp, &self.modulation, &self.partial_sums, &net.params];
        // forward_step_vec4 binds the parameters a second time, as vec4.
        let group = bind_group(ctx, step_kernel, &self.step_params_slots, &step_buffers[..if vec4 { 7 } else { 6 }]);
        let grid = forward_step::workgroups(
            self.shape.neurons,
            self.shape.batch,
            self.forward_splits,
            vec4,
            self.forward_workgroup,
            self.forward_column_quads,
        );
        let finish_group = (self.forward_splits > 1)
            .then(|| bind_group(ctx, "forward_finish", &self.finish_params_slots, &[&self.partial_sums, &self.activations, &self.clamp]));
        let finish_grid = forward_finish::workgroups(self.shape.neurons, self.shape.batch);
        let modulation_group = spec.modulated().then(|| {
            bind_group(ctx, "modulation_forward", &self.modulation_params_slots, &[&net.params, &self.activations, &self.modulation])
        });
        let modulation_grid = modulation_forward::workgroups(self.shape.batch);
        if self.shape.input_width() > 0 {
            // u(1..T) = v w_in + b_in into the history rows the steps read them from.
            let group = bind_group(
                ctx,
                "input_projection",
                &self.projection_params_slots,
                &[&net.params, &self.projected_inputs, &self.activations],
            );
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("input layer"), timestamp_writes: None });
            let grid = input_projection::grid(self.shape.neurons, self.shape.batch, self.shape.steps).0;
            dispatch(&mut pass, ctx, "input_projection", &group, 0, grid);
        }
        let mut next_checkpoint = checkpoints.iter().peekable();
        let mut step = 1;
        while step <= self.shape.steps {
            let last = next_checkpoint.peek().map_or(self.shape.steps, |(c, _)| *c);
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None });
                for s in step..=last {
                    dispatch_pipeline(&mut pass, ctx, step_kernel, &pipeline, &group, self.step_params_slots.offset(s as usize - 1), grid);
                    if let Some(g) = &finish_group {
                        dispatch(&mut pass, ctx, "forward_finish", g, self.finish_params_slots.offset(s as usize - 1), finish_grid);
                    }
                    if let Some(g) = &modulation_group {
                        // M(s) is the rate of the update that step s + 1 fuses.
                        dispatch(
                            &mut pass,
                            ctx,
                            "modulation_forward",
                            g,
                            self.modulation_params_slots.offset(s as usize - 1),
                            modulation_grid,
                        );
                    }
                }
            }
            if let Some((c, buffer)) = next_checkpoint.next_if(|(c, _)| *c == last) {
                debug_assert_eq!(*c, last);
                encoder.copy_buffer_to_buffer(&self.trace, 0, buffer, 0, self.trace.bytes);
            }
            step = last + 1;
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("loss"), timestamp_writes: None });
        if self.shape.heads.is_empty() {
            let loss_group =
                bind_group(ctx, "loss_mse", &self.loss_params_slots, &[&self.activations, &self.targets, &self.loss_steps, &self.metrics]);
            dispatch(&mut pass, ctx, "loss_mse", &loss_group, 0, [1, 1, 1]);
        } else {
            // Every head's outputs, then every head's loss (the first writes the metrics, the rest add).
            let forward_group = bind_group(
                ctx,
                "head_forward",
                &self.head_forward_slots,
                &[&net.params, &self.activations, &self.loss_steps, &self.head_outputs],
            );
            let rows = self.shape.loss_steps.len() as u32 * self.shape.batch;
            for (h, head) in self.shape.heads.iter().enumerate() {
                dispatch(
                    &mut pass,
                    ctx,
                    "head_forward",
                    &forward_group,
                    self.head_forward_slots.offset(h),
                    head_forward::workgroups(head.width, rows),
                );
            }
            let loss_group =
                bind_group(ctx, "head_loss", &self.head_loss_slots, &[&self.head_outputs, &self.targets, &self.head_grads, &self.metrics]);
            for h in 0..self.shape.heads.len() {
                dispatch(&mut pass, ctx, "head_loss", &loss_group, self.head_loss_slots.offset(h), [1, 1, 1]);
            }
        }
    }

    /// Copies eta into the metrics, then the metrics into the staging buffer.
    pub fn record_metrics_readback(&self, encoder: &mut wgpu::CommandEncoder, net: &Network) {
        encoder.copy_buffer_to_buffer(&net.params, net.layout.eta_offset as u64 * 4, &self.metrics, metrics::ETA as u64 * 4, 4);
        encoder.copy_buffer_to_buffer(&self.metrics, 0, &self.staging, 0, self.metrics.bytes);
    }

    pub fn finish(&self, ctx: &GpuContext, during: &str, encoder: wgpu::CommandEncoder) -> Result<EpisodeMetrics> {
        ctx.submit_and_wait(during, encoder.finish())?;
        self.read_metrics(ctx)
    }

    /// The output heads of the last submitted episode, (L, B, total head width).
    pub fn read_head_outputs(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        if self.shape.heads.is_empty() {
            return Err(invalid("request", "this network has no output heads"));
        }
        buffers::read_f32(ctx, &self.head_outputs, 0, self.shape.head_values() as usize, "head outputs")
    }

    /// The metrics the last submitted episode copied to the staging buffer.
    pub fn read_metrics(&self, ctx: &GpuContext) -> Result<EpisodeMetrics> {
        Ok(EpisodeMetrics::from_raw(&buffers::map_read(ctx, &self.staging, "metrics")?))
    }
}

/// Runs batches of forward episodes, keeping their state resident between calls of the same shape.
#[derive(Default)]
pub struct EpisodeRunner {
    state: Option<ForwardState>,
}

impl EpisodeRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs one batch of episodes and returns the loss and sign errors; nothing else is read back.
    pub fn run(&mut self, ctx: &GpuContext, net: &Network, data: &EpisodeData) -> Result<EpisodeMetrics> {
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward episode") });
        self.record_source(ctx, net, &mut encoder, &EpisodeSource::Host(data))?;
        self.state.as_ref().expect("recorded").finish(ctx, "the forward episode", encoder)
    }

    /// Records a batch of episodes whose data is on the GPU into the host's `encoder`, between the
    /// host's own passes; nothing is submitted. After the host submits, [`EpisodeRunner::read_metrics`]
    /// returns the loss, and [`EpisodeRunner::activations_buffer`] holds the activations.
    pub fn record(&mut self, ctx: &GpuContext, net: &Network, encoder: &mut wgpu::CommandEncoder, episode: &GpuEpisode<'_>) -> Result<()> {
        self.record_source(ctx, net, encoder, &EpisodeSource::Gpu(episode))
    }

    fn record_source(
        &mut self,
        ctx: &GpuContext,
        net: &Network,
        encoder: &mut wgpu::CommandEncoder,
        source: &EpisodeSource<'_>,
    ) -> Result<()> {
        let state = prepare(&mut self.state, ctx, source, &net.config)?;
        ctx.scoped("recording the forward episode", || {
            state.record_copies(encoder, source);
            state.record_forward(ctx, encoder, net, &[]);
            state.record_metrics_readback(encoder, net);
        })
    }

    /// The metrics of the last recorded episode, once the host has submitted it.
    pub fn read_metrics(&self, ctx: &GpuContext) -> Result<EpisodeMetrics> {
        self.state.as_ref().ok_or_else(|| invalid("request", "no episode has run yet"))?.read_metrics(ctx)
    }

    /// The last episode's activations (T + 1, B, N), for tests and inspection.
    pub fn read_activations(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        let s = self.state.as_ref().ok_or_else(|| invalid("request", "no episode has run yet"))?;
        buffers::read_f32(ctx, &s.activations, 0, (s.activations.bytes / 4) as usize, "activations")
    }

    /// The trace after the last step, H(T) (B, N, N) row-major (then E(T) with a retroactive rule),
    /// for tests and inspection, whatever order the GPU keeps it in.
    pub fn read_trace(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        let s = self.state.as_ref().ok_or_else(|| invalid("request", "no episode has run yet"))?;
        let stored = buffers::read_f32(ctx, &s.trace, 0, (s.trace.bytes / 4) as usize, "trace")?;
        Ok(s.trace_layout.load(s.shape.neurons, &stored))
    }

    pub fn allocated_bytes(&self) -> u64 {
        self.state.as_ref().map_or(0, ForwardState::allocated_bytes)
    }

    /// The last episode's output heads (L, B, total head width): y of every head at every loss step,
    /// the heads side by side in the order of `NetworkConfig::heads` (logits for softmax heads).
    pub fn read_head_outputs(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.state.as_ref().ok_or_else(|| invalid("request", "no episode has run yet"))?.read_head_outputs(ctx)
    }

    /// The activation history, for binding in host shaders: (T + 1, B, N) f32, tightly packed,
    /// element (t, b, j) at byte offset `4 * ((t * B + b) * N + j)`, x(t) in row t and x(0) = 0 in
    /// row 0. Usage STORAGE | COPY_SRC | COPY_DST. Valid once the episode has executed, until the next.
    pub fn activations_buffer(&self) -> Option<&wgpu::Buffer> {
        self.state.as_ref().map(|s| &s.activations.buffer)
    }
}

/// The forward and loss params of each output head (one default slot when there are none).
fn head_params(shape: &EpisodeShape, loss_scale: f32) -> Vec<(HeadForwardParams, HeadLossParams)> {
    let total = shape.layout.heads_width();
    let n_loss_steps = shape.loss_steps.len() as u32;
    let mut out: Vec<_> = shape
        .layout
        .head_columns()
        .zip(&shape.heads)
        .enumerate()
        .map(|(h, ((w_offset, width, col0), head))| {
            (
                HeadForwardParams {
                    n: shape.neurons,
                    batch: shape.batch,
                    n_loss_steps,
                    width,
                    total,
                    col0,
                    w_offset,
                    ..Default::default()
                },
                HeadLossParams {
                    batch: shape.batch,
                    n_loss_steps,
                    width,
                    total,
                    col0,
                    kind: match head.kind {
                        HeadKind::Linear => head_loss::LINEAR,
                        HeadKind::Softmax => head_loss::SOFTMAX,
                    },
                    accumulate: (h > 0) as u32,
                    loss_scale,
                },
            )
        })
        .collect();
    if out.is_empty() {
        out.push(Default::default());
    }
    out
}

/// Validates `data` and (re)allocates the resident state when its shape or the context's work division
/// (`GpuContext::tuning`) changed, then uploads it.
pub(crate) fn prepare<'a>(
    slot: &'a mut Option<ForwardState>,
    ctx: &GpuContext,
    source: &EpisodeSource<'_>,
    config: &NetworkConfig,
) -> Result<&'a ForwardState> {
    let neurons = config.neurons;
    let shape = source.shape(config);
    source.validate(&shape.layout)?;
    if slot.as_ref().is_none_or(|s| s.shape != shape || s.tuning != ctx.tuning) {
        *slot = None; // release the old buffers before allocating new ones
        *slot = Some(ForwardState::new(ctx, shape)?);
    }
    let state = slot.as_ref().expect("just allocated");
    let loss = LossMseParams {
        n: neurons,
        batch: state.shape.batch,
        n_loss_steps: state.shape.loss_steps.len() as u32,
        loss_scale: source.loss_scale(),
    };
    state.loss_params_slots.write(ctx, &[loss])?;
    if !state.shape.heads.is_empty() {
        let heads: Vec<HeadLossParams> = head_params(&state.shape, source.loss_scale()).into_iter().map(|h| h.1).collect();
        state.head_loss_slots.write(ctx, &heads)?;
    }
    if let EpisodeSource::Host(data) = source {
        state.upload(ctx, data)?;
    }
    Ok(state)
}
