//! The measurements behind `runtime bench`: the adapter's streaming bandwidth (the roofline of
//! these memory-bound kernels), forward and training time per episode, effective bandwidth against
//! the minimum traffic of each kernel, and peak memory, including its growth with episode length.
//!
//! Times are medians after warm-up episodes: of GPU timestamps written before and after the recorded
//! episode where the device has timestamp queries inside encoders, else of wall-clock time around
//! finished submissions.

use std::sync::Arc;
use std::time::Instant;

use plasticity_kernels::stream_triad::{self, StreamTriadParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::buffers;
use crate::context::GpuContext;
use crate::episode::{EpisodeData, EpisodeRunner, GpuEpisode};
use crate::error::Result;
use crate::network::{Network, NetworkConfig};
use crate::profile::{KernelProfile, KernelProfiler};
use crate::trainer::{Trainer, TrainerConfig};
use plasticity_kernels::Plasticity;

/// One configuration to measure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchCase {
    pub neurons: u32,
    pub batch: u32,
    pub steps: u32,
    pub plasticity: Plasticity,
}

impl BenchCase {
    /// The bench's network for this case: the default config but for N and the rule.
    pub fn network_config(&self) -> NetworkConfig {
        NetworkConfig { neurons: self.neurons, plasticity: self.plasticity, ..Default::default() }
    }

    /// Whether this case's network and episodes fit the device ([`crate::check_episode_fits`]),
    /// before anything is built for it.
    pub fn check_fits(&self, ctx: &GpuContext) -> Result<()> {
        crate::check_episode_fits(ctx, &self.network_config(), self.batch, self.steps, 1)
    }
}

/// Bytes the forward step must move at least: w and alpha read once, the trace read and written.
pub fn forward_step_min_bytes(neurons: u32, batch: u32) -> u64 {
    let nn = neurons as u64 * neurons as u64;
    (2 * nn + 2 * batch as u64 * nn) * 4
}

/// Bytes a backward sweep of `steps` steps must move at least: per step w and alpha read, dalpha
/// read and written, per batch element the trace and its gradient read; each written at the steps
/// that store it in a reversed sweep without checkpoints (about every other step,
/// `backward_trace::reversal_schedule`); dw read and written once per window of
/// `weight_gradient::WINDOW` steps (its inputs, x and ga, are O(B N) per step and not counted).
pub fn backward_min_bytes(neurons: u32, batch: u32, steps: u32) -> u64 {
    let nn = neurons as u64 * neurons as u64;
    let windows = steps.div_ceil(plasticity_kernels::weight_gradient::WINDOW) as u64;
    let schedule = plasticity_kernels::backward_trace::reversal_schedule(steps, |s| s == 1, false);
    let stores = schedule.iter().map(|s| !s.skip_store as u64 + !s.skip_grad_store as u64).sum::<u64>();
    (steps as u64 * (4 * nn + 2 * batch as u64 * nn) + stores * batch as u64 * nn + windows * 2 * nn) * 4
}

#[derive(Clone, Debug)]
pub struct CaseResult {
    pub case: BenchCase,
    pub forward_ms_per_step: f64,
    pub train_ms_per_episode: f64,
    pub train_over_forward: f64,
    pub episodes_per_s: f64,
    pub forward_gbps: f64,
    pub backward_gbps: f64,
    /// The two figures above as a share of the streaming ceiling: medians of each round's own share
    /// (see [`bench_case`]); NaN when no ceiling was measured.
    pub forward_of_ceiling: f64,
    pub backward_of_ceiling: f64,
    /// The median streaming bandwidth of the case's rounds (GB/s); NaN when none was measured.
    pub ceiling_gbps: f64,
    pub peak_bytes: u64,
    /// The trace-checkpoint interval K the training episode used.
    pub checkpoint_segment: u32,
    /// S, the chunks of the forward step's sum (see [`crate::KernelTuning`]).
    pub forward_splits: u32,
    /// Z, backward_trace's batch groups.
    pub backward_groups: u32,
    /// 4 when the rule kernels ran as vec4, 1 when scalar (`KernelTuning::scalar_kernels`).
    pub kernel_width: u32,
    /// Whether the forward step shared the history by subgroup shuffles
    /// (`KernelTuning::forward_subgroups`).
    pub forward_subgroups: bool,
    /// Whether backward_trace_vec4 hoisted its column values (`KernelTuning::backward_hoist_columns`).
    pub backward_hoist_columns: bool,
    /// The side of backward_trace's blocks (`KernelTuning::backward_tile`).
    pub backward_tile: u32,
    /// Invocations of backward_trace that interleaved their columns (`KernelTuning::backward_column_lanes`).
    pub backward_column_lanes: u32,
    /// Column quads per invocation of the vec4 forward step (`KernelTuning::forward_column_quads`);
    /// 0 where the scalar kernel ran.
    pub forward_column_quads: u32,
    /// Columns per stripe of the stored trace (`KernelTuning::trace_stripe`); 0 where its rows were
    /// whole (a stripe of N or more columns is that too).
    pub trace_stripe: u32,
}

#[derive(Clone, Debug)]
pub struct MemoryPoint {
    pub steps: u32,
    pub peak_bytes: u64,
    pub train_ms_per_step: f64,
    pub breakdown: crate::trainer::MemoryBreakdown,
}

/// Peak memory and training time for one size at two episode lengths.
#[derive(Clone, Debug)]
pub struct MemoryScaling {
    pub neurons: u32,
    pub batch: u32,
    pub points: Vec<MemoryPoint>,
}

/// [`random_episode`] after [`BenchCase::check_fits`]: a size past the device's limits is refused
/// before the host builds (T, B, N) inputs that could exhaust its own memory first.
pub fn checked_random_episode(ctx: &GpuContext, case: BenchCase, seed: u64) -> Result<EpisodeData> {
    case.check_fits(ctx)?;
    Ok(random_episode(case, seed))
}

/// Seeded random inputs in [-1, 1) and +-1 targets at the last step.
pub fn random_episode(case: BenchCase, seed: u64) -> EpisodeData {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let row = (case.batch * case.neurons) as usize;
    EpisodeData {
        batch: case.batch,
        steps: case.steps,
        inputs: (0..case.steps as usize * row).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        loss_steps: vec![case.steps],
        targets: (0..row).map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 }).collect(),
        loss_scale: 1.0,
        clamp: Vec::new(),
    }
}

/// Times GPU work with two timestamps around what a closure records.
struct GpuTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
}

impl GpuTimer {
    fn new(ctx: &GpuContext) -> Option<Self> {
        let needed = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        if !ctx.device.features().contains(needed) {
            return None;
        }
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let buffer = |usage| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench timestamps"),
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        Some(Self {
            queries,
            resolved: buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            readback: buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
            period_ns: ctx.queue.get_timestamp_period() as f64,
        })
    }

    /// Seconds of GPU time between the start and the end of what `record` records.
    fn time(&self, ctx: &GpuContext, record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>) -> Result<f64> {
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        encoder.write_timestamp(&self.queries, 0);
        record(&mut encoder)?;
        encoder.write_timestamp(&self.queries, 1);
        encoder.resolve_query_set(&self.queries, 0..2, &self.resolved, 0);
        encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.readback, 0, 16);
        ctx.submit_and_wait("a timed episode", encoder.finish())?;
        let raw = buffers::map_read(ctx, &self.readback, "timestamps")?;
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * self.period_ns * 1e-9)
    }
}

/// The episode's inputs and targets in GPU buffers, as a host application would hold them.
struct ResidentEpisode {
    inputs: wgpu::Buffer,
    targets: wgpu::Buffer,
}

impl ResidentEpisode {
    fn new(ctx: &GpuContext, data: &EpisodeData) -> Result<Self> {
        Ok(Self {
            inputs: buffers::storage_from(ctx, "bench inputs", &data.inputs)?.buffer,
            targets: buffers::storage_from(ctx, "bench targets", &data.targets)?.buffer,
        })
    }

    fn episode<'a>(&'a self, data: &'a EpisodeData) -> GpuEpisode<'a> {
        GpuEpisode {
            batch: data.batch,
            steps: data.steps,
            loss_steps: &data.loss_steps,
            loss_scale: data.loss_scale,
            inputs: &self.inputs,
            targets: &self.targets,
            clamp: None,
        }
    }
}

/// How the bench timed its figures.
pub fn timing_method(ctx: &GpuContext) -> &'static str {
    if GpuTimer::new(ctx).is_some() { "GPU timestamps around each recorded episode" } else { "wall clock around finished submissions" }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// Median seconds of `f`, which returns the GPU seconds it measured or `None` for wall clock.
fn time_median(warmup: u32, repetitions: u32, mut f: impl FnMut() -> Result<Option<f64>>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::new();
    for _ in 0..repetitions.max(1) {
        let start = Instant::now();
        let gpu = f()?;
        times.push(gpu.unwrap_or_else(|| start.elapsed().as_secs_f64()));
    }
    Ok(median(times))
}

/// The streaming kernel `c = a + s * b` over arrays of `elements` floats (moved as vec4, capped so
/// that one array fits one storage binding), ready to be timed as often as wanted; where the device
/// has 64-bit integers, also as 32-byte accesses over the same arrays ([`Self::median_wide_of`]).
pub struct StreamTriad {
    buffers: [buffers::GpuBuffer; 3],
    bytes: u64,
    grid: [u32; 3],
    params: StreamTriadParams,
    /// stream_triad_wide's grid and params over the same buffers, where the device has SHADER_INT64.
    wide: Option<([u32; 3], StreamTriadParams)>,
    timer: Option<GpuTimer>,
}

impl StreamTriad {
    pub fn new(ctx: &GpuContext, elements: u64) -> Result<Self> {
        let limits = ctx.limits();
        // An even number of quads, so that the wide kernel's eight-float elements cover the same bytes.
        let quads =
            (elements / 4).min(limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) / 16).min(u32::MAX as u64) as u32 & !1;
        let bytes = quads as u64 * 16;
        let buffers = [
            buffers::storage(ctx, "stream a", bytes)?,
            buffers::storage(ctx, "stream b", bytes)?,
            buffers::storage(ctx, "stream c", bytes)?,
        ];
        let params_of = |elements: u32| {
            let (grid, row_stride) = plasticity_kernels::elementwise_grid(elements, stream_triad::WORKGROUP_SIZE);
            (grid, StreamTriadParams { elements, row_stride, scale: 0.5, ..Default::default() })
        };
        let (grid, params) = params_of(quads);
        let wide = ctx.has_int64().then(|| params_of(quads / 2));
        Ok(Self { buffers, bytes, grid, params, wide, timer: GpuTimer::new(ctx) })
    }

    /// GB/s (1e9 bytes per second) of one pass: three arrays moved.
    pub fn measure(&self, ctx: &GpuContext) -> Result<f64> {
        self.measure_kernel(ctx, stream_triad::KERNEL.name, self.grid, &self.params)
    }

    fn measure_kernel(&self, ctx: &GpuContext, kernel: &str, grid: [u32; 3], params: &StreamTriadParams) -> Result<f64> {
        let [a, b, c] = &self.buffers;
        let record = |encoder: &mut wgpu::CommandEncoder| ctx.record_kernel(encoder, kernel, bytemuck::bytes_of(params), &[a, b, c], grid);
        let start = Instant::now();
        let seconds = match &self.timer {
            Some(t) => t.time(ctx, record)?,
            None => {
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                record(&mut encoder)?;
                ctx.submit_and_wait("the streaming benchmark", encoder.finish())?;
                start.elapsed().as_secs_f64()
            }
        };
        Ok(3.0 * self.bytes as f64 / seconds / 1e9)
    }

    /// The median GB/s of `passes` passes after one warm-up pass.
    pub fn median_of(&self, ctx: &GpuContext, passes: u32) -> Result<f64> {
        median_of_passes(passes, || self.measure(ctx))
    }

    /// [`Self::median_of`] for stream_triad_wide (32 bytes per access) over the same arrays; None
    /// where the device has no 64-bit integers. Where it reads well above the 16-byte figure, the
    /// device's cost is per access rather than per byte (lavapipe: each component of each lane is a
    /// load of its own), and the step kernels, which move at most 16 bytes per access, are measured
    /// against the 16-byte figure.
    pub fn median_wide_of(&self, ctx: &GpuContext, passes: u32) -> Result<Option<f64>> {
        let Some((grid, params)) = &self.wide else { return Ok(None) };
        median_of_passes(passes, || self.measure_kernel(ctx, stream_triad::KERNEL_WIDE.name, *grid, params)).map(Some)
    }
}

/// The median of `passes` calls of `measure` after one warm-up call.
fn median_of_passes(passes: u32, measure: impl Fn() -> Result<f64>) -> Result<f64> {
    measure()?;
    Ok(median((0..passes.max(1)).map(|_| measure()).collect::<Result<Vec<_>>>()?))
}

/// Forward and training episodes of one configuration: `warmup` of each, then `repetitions` rounds of
/// one streaming pass of `ceiling` (when given), one forward episode and one training episode, so
/// that each round's share of the ceiling compares figures taken within seconds of each other. The
/// times are medians over the rounds, and so are the shares (of each round's own ratio): on a
/// machine whose speed drifts, a ceiling taken at another time can be off by 2x (lavapipe here read
/// 2.8 to 6.8 GB/s between runs, sometimes within one).
pub fn bench_case(ctx: &GpuContext, case: BenchCase, warmup: u32, repetitions: u32, ceiling: Option<&StreamTriad>) -> Result<CaseResult> {
    run_case(ctx, case, warmup, repetitions, ceiling, true)
}

/// [`bench_case`] with training episodes only, for a search that compares training times (`tune`):
/// the forward figures (`forward_ms_per_step`, `train_over_forward`, the GB/s and shares) are NaN.
pub fn bench_training_case(ctx: &GpuContext, case: BenchCase, warmup: u32, repetitions: u32) -> Result<CaseResult> {
    run_case(ctx, case, warmup, repetitions, None, false)
}

fn run_case(
    ctx: &GpuContext,
    case: BenchCase,
    warmup: u32,
    repetitions: u32,
    ceiling: Option<&StreamTriad>,
    time_forward: bool,
) -> Result<CaseResult> {
    let data = checked_random_episode(ctx, case, 1)?;
    let network = Network::new(ctx, &case.network_config())?;
    let timer = GpuTimer::new(ctx);
    let resident = ResidentEpisode::new(ctx, &data)?;
    let episode = resident.episode(&data);
    let mut runner = EpisodeRunner::new();
    let mut trainer = Trainer::new(ctx, network, TrainerConfig::default())?;
    // GPU seconds where the device has timestamps, else wall clock around the finished submission.
    let forward_once = |runner: &mut EpisodeRunner, network: &Network| -> Result<f64> {
        let start = Instant::now();
        match &timer {
            Some(t) => t.time(ctx, |encoder| runner.record(ctx, network, encoder, &episode)),
            None => runner.run(ctx, network, &data).map(|_| start.elapsed().as_secs_f64()),
        }
    };
    let train_once = |trainer: &mut Trainer| -> Result<f64> {
        let start = Instant::now();
        match &timer {
            Some(t) => {
                let seconds = t.time(ctx, |encoder| trainer.record_train_step(ctx, encoder, &episode))?;
                trainer.read_metrics(ctx)?; // tells the trainer the new eta
                Ok(seconds)
            }
            None => trainer.train_step(ctx, &data).map(|_| start.elapsed().as_secs_f64()),
        }
    };
    for _ in 0..warmup {
        if time_forward {
            forward_once(&mut runner, &trainer.network)?;
        }
        train_once(&mut trainer)?;
    }
    let (mut ceilings, mut forwards, mut trains) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repetitions.max(1) {
        if let Some(triad) = ceiling {
            ceilings.push(triad.measure(ctx)?);
        }
        forwards.push(if time_forward { forward_once(&mut runner, &trainer.network)? } else { f64::NAN });
        trains.push(train_once(&mut trainer)?);
    }
    drop(runner);
    let steps = case.steps as f64;
    // An eligibility trace doubles the per-batch-element traffic, as if the batch were twice as large.
    let trace_copies = if case.plasticity.retroactive { 2 * case.batch } else { case.batch };
    let forward_bytes = forward_step_min_bytes(case.neurons, trace_copies) as f64 * steps;
    let backward_bytes = backward_min_bytes(case.neurons, trace_copies, case.steps) as f64;
    let gbps = |bytes: f64, seconds: f64| bytes / seconds.max(f64::MIN_POSITIVE) / 1e9;
    // Each round's own shares of its own ceiling, then their medians.
    let shares = |of: &dyn Fn(usize) -> f64| {
        if ceilings.is_empty() { f64::NAN } else { median((0..ceilings.len()).map(|r| of(r) / ceilings[r]).collect()) }
    };
    let forward_of_ceiling = shares(&|r| gbps(forward_bytes, forwards[r]));
    let backward_of_ceiling = shares(&|r| gbps(backward_bytes, trains[r] - forwards[r]));
    let ceiling_gbps = if ceilings.is_empty() { f64::NAN } else { median(ceilings.clone()) };
    let (forward, train) = (median(forwards), median(trains));
    let forward_gbps = gbps(forward_bytes, forward);
    let backward_gbps = gbps(backward_bytes, train - forward);
    // What the trainer ran with, not a second evaluation of the tuning rule.
    let (forward_splits, backward_groups) = trainer.work_split().expect("the timed episodes ran");
    Ok(CaseResult {
        case,
        forward_ms_per_step: forward * 1e3 / steps,
        train_ms_per_episode: train * 1e3,
        train_over_forward: train / forward,
        episodes_per_s: case.batch as f64 / train,
        forward_gbps,
        backward_gbps,
        forward_of_ceiling,
        backward_of_ceiling,
        ceiling_gbps,
        peak_bytes: trainer.allocated_bytes(),
        checkpoint_segment: trainer.last_segment(),
        forward_splits,
        backward_groups,
        kernel_width: trainer.kernel_width().expect("the timed episodes ran"),
        forward_subgroups: trainer.forward_subgroups().expect("the timed episodes ran"),
        backward_hoist_columns: trainer.backward_hoist_columns().expect("the timed episodes ran"),
        backward_tile: trainer.backward_tile().expect("the timed episodes ran"),
        backward_column_lanes: trainer.backward_column_lanes().expect("the timed episodes ran"),
        forward_column_quads: trainer.forward_column_quads().expect("the timed episodes ran"),
        trace_stripe: trainer.trace_stripe().expect("the timed episodes ran"),
    })
}

/// GPU time per kernel of one training episode (forward, backward and Adam) of `case`, after a
/// warm-up episode: two timestamps around every dispatch (see [`crate::profile`]). An error names
/// the missing device feature where timestamps cannot be written inside passes.
pub fn profile_case(ctx: &GpuContext, case: BenchCase) -> Result<KernelProfile> {
    let profiler = Arc::new(KernelProfiler::new(ctx)?);
    let mut ctx = ctx.clone();
    ctx.profiler = Some(profiler.clone());
    let data = checked_random_episode(&ctx, case, 1)?;
    let network = Network::new(&ctx, &case.network_config())?;
    let resident = ResidentEpisode::new(&ctx, &data)?;
    let episode = resident.episode(&data);
    let mut trainer = Trainer::new(&ctx, network, TrainerConfig::default())?;
    for _ in 0..2 {
        // The first pass warms up (pipelines, allocation); the second is the one reported.
        profiler.reset();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        trainer.record_train_step(&ctx, &mut encoder, &episode)?;
        profiler.resolve(&mut encoder);
        ctx.submit_and_wait("a profiled training episode", encoder.finish())?;
        trainer.read_metrics(&ctx)?;
    }
    profiler.read(&ctx)
}

/// Peak memory and training time per step of one size at several episode lengths.
pub fn memory_scaling(
    ctx: &GpuContext,
    neurons: u32,
    batch: u32,
    steps: &[u32],
    repetitions: u32,
    plasticity: Plasticity,
) -> Result<MemoryScaling> {
    let mut points = Vec::new();
    for &t in steps {
        let case = BenchCase { neurons, batch, steps: t, plasticity };
        let data = checked_random_episode(ctx, case, 2)?;
        let network = Network::new(ctx, &case.network_config())?;
        let mut trainer = Trainer::new(ctx, network, TrainerConfig::default())?;
        let seconds = time_median(0, repetitions, || trainer.train_step(ctx, &data).map(|_| None))?;
        points.push(MemoryPoint {
            steps: t,
            peak_bytes: trainer.allocated_bytes(),
            train_ms_per_step: seconds * 1e3 / t as f64,
            breakdown: trainer.memory_breakdown(),
        });
    }
    Ok(MemoryScaling { neurons, batch, points })
}
