//! Shared helpers of the workspace tests: one GPU context per test process (failing loudly when
//! there is no adapter: a GPU test never skips), seeded data, NaN-filled outputs, and a
//! tolerance check that names the worst element.

use std::sync::OnceLock;

use plasticity_runtime::{EpisodeData, GpuContext, buffers, wgpu};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The context every GPU test uses. Panics with the runtime's own explanation when no adapter can
/// be opened, in CI and elsewhere alike.
pub fn gpu() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(ctx) => {
            eprintln!("GPU tests run on {}", ctx.adapter);
            ctx
        }
        Err(e) => panic!("GPU tests need an adapter and will not skip: {e}"),
    })
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform values in [-scale, scale).
pub fn uniform(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| scale * rng.random_range(-1.0f32..1.0)).collect()
}

/// `|gpu - reference| <= atol + rtol * |reference|` everywhere; on failure, names the worst element
/// (largest excess over its tolerance) and how many failed.
#[track_caller]
pub fn assert_close(what: &str, gpu: &[f32], reference: &[f64], atol: f64, rtol: f64) {
    assert_eq!(gpu.len(), reference.len(), "{what}: length");
    let mut worst: Option<(usize, f64)> = None;
    let mut failures = 0;
    for (k, (&g, &r)) in gpu.iter().zip(reference).enumerate() {
        let excess = if g.is_finite() { (g as f64 - r).abs() - (atol + rtol * r.abs()) } else { f64::INFINITY };
        if excess > 0.0 {
            failures += 1;
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((k, excess));
            }
        }
    }
    if let Some((k, _)) = worst {
        panic!(
            "{what}: {failures} of {} elements out of tolerance (atol {atol:e}, rtol {rtol:e}); worst at index {k}: gpu {} vs reference {}",
            gpu.len(),
            gpu[k],
            reference[k]
        );
    }
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// A storage buffer holding `data`, for driving one kernel.
pub fn upload(ctx: &GpuContext, data: &[f32]) -> wgpu::Buffer {
    upload_bytes(ctx, bytemuck::cast_slice(data))
}

/// Sized in whole 16-byte quads, as the runtime allocates (see `buffers::create`): a vec4 kernel sees
/// the last float of `bytes` in bounds.
pub fn upload_bytes(ctx: &GpuContext, bytes: &[u8]) -> wgpu::Buffer {
    let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("test data"),
        size: (bytes.len().max(4) as u64).next_multiple_of(16),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    ctx.queue.write_buffer(&buffer, 0, bytes);
    buffer
}

pub fn download(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    buffers::read_f32(ctx, buffer, 0, len, "test output").expect("readback")
}

/// Runs one kernel on buffers holding `inputs` (binding order after the params) and returns every
/// buffer's contents afterwards.
pub fn run_kernel<P: bytemuck::Pod>(name: &str, params: &P, inputs: &[&[u8]], grid: [u32; 3]) -> Vec<Vec<f32>> {
    let ctx = gpu();
    let buffers: Vec<wgpu::Buffer> = inputs.iter().map(|b| upload_bytes(ctx, b)).collect();
    let refs: Vec<&wgpu::Buffer> = buffers.iter().collect();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    ctx.record_kernel(&mut encoder, name, bytemuck::bytes_of(params), &refs, grid).expect("record kernel");
    ctx.submit_and_wait(name, encoder.finish()).expect("run kernel");
    inputs.iter().zip(&buffers).map(|(b, buf)| download(ctx, buf, b.len() / 4)).collect()
}

/// [`run_kernel`] for a kernel that applies a rule, with `extra` override constants.
pub fn run_rule_kernel<P: bytemuck::Pod>(
    name: &str,
    spec: &plasticity_kernels::Plasticity,
    extra: &[(&str, f64)],
    params: &P,
    inputs: &[&[u8]],
    grid: [u32; 3],
) -> Vec<Vec<f32>> {
    let ctx = gpu();
    let buffers: Vec<wgpu::Buffer> = inputs.iter().map(|b| upload_bytes(ctx, b)).collect();
    let refs: Vec<&wgpu::Buffer> = buffers.iter().collect();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    ctx.record_kernel_specialised(&mut encoder, name, Some((spec, extra)), bytemuck::bytes_of(params), &refs, grid).expect("record kernel");
    ctx.submit_and_wait(name, encoder.finish()).expect("run kernel");
    inputs.iter().zip(&buffers).map(|(b, buf)| download(ctx, buf, b.len() / 4)).collect()
}

pub fn nan_filled(len: usize) -> Vec<f32> {
    vec![f32::NAN; len]
}

/// `steps` steps of constant input 0.1 and a target of 1 at the last step: for tests about sizes
/// and errors rather than values.
pub fn constant_episode(neurons: u32, batch: u32, steps: u32) -> EpisodeData {
    let row = (neurons * batch) as usize;
    EpisodeData {
        batch,
        steps,
        inputs: vec![0.1; steps as usize * row],
        loss_steps: vec![steps],
        targets: vec![1.0; row],
        loss_scale: 1.0,
        clamp: Vec::new(),
    }
}

/// Inputs uniform in +-1 and +-1 targets at the middle and last steps (only the last for T < 3).
pub fn random_episode(rng: &mut ChaCha8Rng, neurons: u32, batch: u32, steps: u32) -> EpisodeData {
    let row = (batch * neurons) as usize;
    let loss_steps: Vec<u32> = if steps >= 3 { vec![steps / 2, steps] } else { vec![steps] };
    let targets = uniform(rng, loss_steps.len() * row, 1.0).iter().map(|v| v.signum()).collect();
    EpisodeData { batch, steps, inputs: uniform(rng, steps as usize * row, 1.0), loss_steps, targets, loss_scale: 1.0, clamp: Vec::new() }
}

/// A network and a batch of episodes for the whole-episode tests.
pub struct Problem {
    pub config: plasticity_runtime::NetworkConfig,
    pub host: plasticity_runtime::HostParameters,
    pub data: EpisodeData,
}

/// The f64 reference's view of a problem: the core network (without input layer or heads, whose
/// tests do the projection themselves) and the episode, clamp masks unpacked.
pub fn to_reference(p: &Problem) -> (plasticity_kernels::reference::Network64, plasticity_kernels::reference::Episode64) {
    use plasticity_kernels::reference::{Episode64, Network64};
    let n = p.config.neurons as usize;
    let core = &p.host.values[..p.host.layout.in_offset as usize];
    let net = Network64::from_flat(n, p.config.plasticity, &to_f64(core));
    let ep = Episode64 {
        batch: p.data.batch as usize,
        steps: p.data.steps as usize,
        inputs: to_f64(&p.data.inputs),
        loss_steps: p.data.loss_steps.iter().map(|&s| s as usize).collect(),
        targets: to_f64(&p.data.targets),
        loss_scale: p.data.loss_scale as f64,
        clamp: if p.data.clamp.is_empty() {
            Vec::new()
        } else {
            let words = plasticity_kernels::clamp_words(p.config.neurons) as usize;
            (0..p.data.inputs.len()).map(|e| plasticity_kernels::is_clamped(&p.data.clamp[e / n * words..][..words], e % n)).collect()
        },
    };
    (net, ep)
}

/// The shared adapter with its step kernels' work divided as `tuning` says (on a CPU adapter the
/// default divides nothing, so tests force the GPU's splits and batch groups through this).
pub fn gpu_with(tuning: plasticity_runtime::KernelTuning) -> GpuContext {
    let mut ctx = gpu().clone();
    ctx.tuning = tuning;
    ctx
}

/// The GPU trainer's summed gradients for a problem, and the checkpoint interval K it used.
pub fn gpu_gradients(p: &Problem, config: plasticity_runtime::TrainerConfig) -> (plasticity_runtime::HostParameters, u32) {
    gpu_gradients_on(gpu(), p, config)
}

/// [`gpu_gradients`] on a given context.
pub fn gpu_gradients_on(
    ctx: &GpuContext,
    p: &Problem,
    config: plasticity_runtime::TrainerConfig,
) -> (plasticity_runtime::HostParameters, u32) {
    use plasticity_runtime::{Network, Trainer};
    let net = Network::from_parameters(ctx, &p.config, &p.host).unwrap();
    let mut trainer = Trainer::new(ctx, net, config).unwrap();
    trainer.compute_gradients(ctx, &p.data).unwrap();
    (trainer.read_gradients(ctx).unwrap(), trainer.last_segment())
}

/// Each tensor against `atol = 2e-3 * max(|tensor|, 1e-2 * |largest gradient|)` plus `rtol = 2e-3`:
/// the GPU works in f32 through T forward and T backward steps and sums T*B*N terms per entry, which
/// leaves errors near 1e-5..1e-4 of an entry's scale; the floor covers tensors whose entries are
/// sums with heavy cancellation (one eta). A missing or wrong chain-rule term is off by O(1).
pub fn assert_gradients_match(what: &str, gpu: &plasticity_runtime::HostParameters, reference: &[f64]) {
    let global = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (name, offset, shape) in gpu.layout.tensors() {
        let len: usize = shape.iter().product();
        let (g, r) = (&gpu.values[offset as usize..][..len], &reference[offset as usize..][..len]);
        let scale = r.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-2 * global);
        assert_close(&format!("{what} d{name}"), g, r, 2e-3 * scale, 2e-3);
    }
}
