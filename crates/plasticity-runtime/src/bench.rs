//! The measurements behind `runtime bench`: the adapter's streaming bandwidth (the roofline of
//! these memory-bound kernels), forward and training time per episode, effective bandwidth against
//! the minimum traffic of each kernel, and peak memory, including its growth with episode length.
//!
//! Times are medians of wall-clock time around finished submissions, after warm-up episodes.

use std::time::Instant;

use plasticity_kernels::stream_triad::{self, StreamTriadParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::buffers;
use crate::context::GpuContext;
use crate::episode::{EpisodeData, EpisodeRunner};
use crate::error::Result;
use crate::network::{Network, NetworkConfig};
use crate::trainer::{Trainer, TrainerConfig};

/// One configuration to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchCase {
    pub neurons: u32,
    pub batch: u32,
    pub steps: u32,
}

/// Bytes the forward step must move at least: w and alpha read once, the trace read and written.
pub fn forward_step_min_bytes(neurons: u32, batch: u32) -> u64 {
    let nn = neurons as u64 * neurons as u64;
    (2 * nn + 2 * batch as u64 * nn) * 4
}

/// Bytes one backward step must move at least: w and alpha read, dw and dalpha read and written,
/// the trace and its gradient each read and written per batch element.
pub fn backward_step_min_bytes(neurons: u32, batch: u32) -> u64 {
    let nn = neurons as u64 * neurons as u64;
    (6 * nn + 4 * batch as u64 * nn) * 4
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
    /// The two figures above as a share of the measured streaming bandwidth.
    pub forward_of_ceiling: f64,
    pub backward_of_ceiling: f64,
    pub peak_bytes: u64,
    /// The trace-checkpoint interval K the training episode used.
    pub checkpoint_segment: u32,
}

#[derive(Clone, Debug)]
pub struct MemoryPoint {
    pub steps: u32,
    pub peak_bytes: u64,
    pub train_ms_per_step: f64,
}

/// Peak memory and training time for one size at two episode lengths.
#[derive(Clone, Debug)]
pub struct MemoryScaling {
    pub neurons: u32,
    pub batch: u32,
    pub points: Vec<MemoryPoint>,
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

fn time_median(warmup: u32, repetitions: u32, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::new();
    for _ in 0..repetitions.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// Streaming bandwidth in GB/s (1e9 bytes per second) of `c = a + s * b` over `elements` floats
/// per array, capped so that one array fits one storage binding.
pub fn stream_bandwidth(ctx: &GpuContext, elements: u64, repetitions: u32) -> Result<f64> {
    let limits = ctx.limits();
    let elements = elements.min(limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) / 4).min(u32::MAX as u64) as u32;
    let bytes = elements as u64 * 4;
    let a = buffers::storage(ctx, "stream a", bytes)?;
    let b = buffers::storage(ctx, "stream b", bytes)?;
    let c = buffers::storage(ctx, "stream c", bytes)?;
    let (grid, row_stride) = plasticity_kernels::elementwise_grid(elements, stream_triad::WORKGROUP_SIZE);
    let params = StreamTriadParams { count: elements, row_stride, scale: 0.5, ..Default::default() };
    let seconds = time_median(1, repetitions, || {
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        ctx.record_kernel(&mut encoder, "stream_triad", bytemuck::bytes_of(&params), &[&a, &b, &c], grid)?;
        ctx.submit_and_wait("the streaming benchmark", encoder.finish())
    })?;
    Ok(3.0 * bytes as f64 / seconds / 1e9)
}

/// Forward and training episodes of one configuration.
pub fn bench_case(ctx: &GpuContext, case: BenchCase, warmup: u32, repetitions: u32, ceiling_gbps: f64) -> Result<CaseResult> {
    let data = random_episode(case, 1);
    let config = NetworkConfig { neurons: case.neurons, ..Default::default() };
    let network = Network::new(ctx, &config)?;
    let mut runner = EpisodeRunner::new();
    let forward = time_median(warmup, repetitions, || runner.run(ctx, &network, &data).map(|_| ()))?;
    drop(runner);
    let mut trainer = Trainer::new(ctx, network, TrainerConfig::default())?;
    let train = time_median(warmup, repetitions, || trainer.train_step(ctx, &data).map(|_| ()))?;
    let steps = case.steps as f64;
    let backward = (train - forward).max(f64::MIN_POSITIVE);
    let forward_gbps = forward_step_min_bytes(case.neurons, case.batch) as f64 * steps / forward / 1e9;
    let backward_gbps = backward_step_min_bytes(case.neurons, case.batch) as f64 * steps / backward / 1e9;
    Ok(CaseResult {
        case,
        forward_ms_per_step: forward * 1e3 / steps,
        train_ms_per_episode: train * 1e3,
        train_over_forward: train / forward,
        episodes_per_s: case.batch as f64 / train,
        forward_gbps,
        backward_gbps,
        forward_of_ceiling: forward_gbps / ceiling_gbps,
        backward_of_ceiling: backward_gbps / ceiling_gbps,
        peak_bytes: trainer.allocated_bytes(),
        checkpoint_segment: trainer.last_segment(),
    })
}

/// Peak memory and training time per step of one size at several episode lengths.
pub fn memory_scaling(ctx: &GpuContext, neurons: u32, batch: u32, steps: &[u32], repetitions: u32) -> Result<MemoryScaling> {
    let mut points = Vec::new();
    for &t in steps {
        let case = BenchCase { neurons, batch, steps: t };
        let data = random_episode(case, 2);
        let network = Network::new(ctx, &NetworkConfig { neurons, ..Default::default() })?;
        let mut trainer = Trainer::new(ctx, network, TrainerConfig::default())?;
        let seconds = time_median(0, repetitions, || trainer.train_step(ctx, &data).map(|_| ()))?;
        points.push(MemoryPoint { steps: t, peak_bytes: trainer.allocated_bytes(), train_ms_per_step: seconds * 1e3 / t as f64 });
    }
    Ok(MemoryScaling { neurons, batch, points })
}
