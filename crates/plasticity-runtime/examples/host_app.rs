//! A host application that owns its wgpu device and runs a plastic network inside its own frame:
//! its compute shader writes each episode's inputs and targets into GPU buffers, the runtime trains
//! on them recorded into the host's command encoder, and another shader of the host reads the
//! network's activations in place. No episode data crosses to the CPU; the host reads back the
//! loss (a scalar) and, at the end, its own per-episode score.
//!
//! `cargo run -p plasticity-runtime --release --example host_app`

use std::sync::Arc;

use plasticity_runtime::wgpu::{self, util::DeviceExt};
use plasticity_runtime::{AdamConfig, GpuContext, GpuEpisode, Network, NetworkConfig, Trainer, TrainerConfig};

const N: u32 = 48;
const BATCH: u32 = 8;
const PATTERNS: u32 = 2;
const SHOW: u32 = 6;
const GAP: u32 = 4;
const STEPS: u32 = PATTERNS * (SHOW + GAP) + SHOW;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Generate {
    n: u32,
    batch: u32,
    episode: u32,
    seed: u32,
    patterns: u32,
    show: u32,
    gap: u32,
    gain: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Readout {
    n: u32,
    batch: u32,
    last_row: u32,
    _pad: u32,
}

fn pipeline(device: &wgpu::Device, name: &str, source: &str) -> wgpu::ComputePipeline {
    let module =
        device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(source.into()) });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: None,
        module: &module,
        entry_point: Some(name),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// Records one dispatch of a host pipeline whose bindings are a uniform struct, then `buffers`.
fn host_pass<P: bytemuck::Pod>(
    device: &wgpu::Device,
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    params: &P,
    buffers: &[&wgpu::Buffer],
    groups: [u32; 3],
) {
    let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::bytes_of(params),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
    entries
        .extend(buffers.iter().enumerate().map(|(k, b)| wgpu::BindGroupEntry { binding: k as u32 + 1, resource: b.as_entire_binding() }));
    let group =
        device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipeline.get_bind_group_layout(0), entries: &entries });
    let mut pass = encoder.begin_compute_pass(&Default::default());
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, &group, &[]);
    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host's own device, as any wgpu application creates it.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;
    device.on_uncaptured_error(Arc::new(|e: wgpu::Error| eprintln!("host: wgpu error: {e}")));
    println!("host device: {}", adapter.get_info().name);

    // The runtime shares it.
    let ctx = GpuContext::from_device(device.clone(), queue.clone())?;
    let config = NetworkConfig { neurons: N, seed: 1, ..Default::default() };
    let adam = AdamConfig { lr: 3e-3, ..Default::default() };
    let mut trainer = Trainer::new(&ctx, Network::new(&ctx, &config)?, TrainerConfig { adam, ..Default::default() })?;

    // The host's buffers and passes.
    let data_usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let inputs = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("inputs"),
        size: (STEPS * BATCH * N * 4) as u64,
        usage: data_usage,
        mapped_at_creation: false,
    });
    let targets = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("targets"),
        size: (BATCH * N * 4) as u64,
        usage: data_usage,
        mapped_at_creation: false,
    });
    let generate = pipeline(&device, "host_inputs", include_str!("../../../shaders/examples/host_inputs.wgsl"));
    let readout = pipeline(&device, "host_readout", include_str!("../../../shaders/examples/host_readout.wgsl"));
    let loss_steps = [STEPS];
    let episode = GpuEpisode {
        batch: BATCH,
        steps: STEPS,
        loss_steps: &loss_steps,
        loss_scale: 1.0,
        inputs: &inputs,
        targets: &targets,
        clamp: None,
    };

    for e in 0..300u32 {
        let params = Generate { n: N, batch: BATCH, episode: e, seed: 12345, patterns: PATTERNS, show: SHOW, gap: GAP, gain: 20.0 };
        // One command buffer: the host's pass, then the network's training step.
        let mut encoder = device.create_command_encoder(&Default::default());
        host_pass(&device, &mut encoder, &generate, &params, &[&inputs, &targets], [N.div_ceil(64), BATCH, 1]);
        trainer.record_train_step(&ctx, &mut encoder, &episode)?;
        queue.submit([encoder.finish()]);
        let metrics = trainer.read_metrics(&ctx)?;
        if e % 50 == 49 {
            println!("episode {:>3}: loss {:>8.3}, sign errors {:.2}%", e + 1, metrics.loss, 100.0 * metrics.sign_error_rate());
        }
    }

    // The host's readout shader binds the network's activations directly.
    let activations = trainer.activations_buffer().expect("an episode has run");
    let correct = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("correct"),
        size: (BATCH * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (BATCH * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let params = Readout { n: N, batch: BATCH, last_row: STEPS, _pad: 0 };
    let mut encoder = device.create_command_encoder(&Default::default());
    host_pass(&device, &mut encoder, &readout, &params, &[activations, &targets, &correct], [1, 1, 1]);
    encoder.copy_buffer_to_buffer(&correct, 0, &staging, 0, (BATCH * 4) as u64);
    queue.submit([encoder.finish()]);
    staging.slice(..).map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let counts: Vec<u32> = bytemuck::cast_slice(&staging.get_mapped_range(..)?).to_vec();
    println!("host readout of the last episode: bits recalled per episode {counts:?} of {N}");
    Ok(())
}
