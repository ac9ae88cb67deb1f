//! The runtime inside a host application: the host's own device (WebGPU's default limits), inputs
//! and targets in the host's GPU buffers, recording into the host's encoder, and errors that come
//! back as values while the host's device stays usable and its error handler never fires.

use std::sync::{Arc, Mutex};

use plasticity_runtime::wgpu;
use plasticity_runtime::{
    EpisodeData, EpisodeRunner, GpuContext, GpuEpisode, HostParameters, Network, NetworkConfig, PlasticityError, Trainer, TrainerConfig,
};
use plasticity_tests::*;

struct Host {
    ctx: GpuContext,
    errors: Arc<Mutex<Vec<String>>>,
}

/// A device made the way a host application makes one, with its own uncaptured-error handler.
fn host() -> Host {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).expect("an adapter (GPU tests never skip)");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).expect("a device");
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| sink.lock().unwrap().push(e.to_string())));
    Host { ctx: GpuContext::from_device(device, queue).expect("wrap the host device"), errors }
}

/// A host buffer holding `bytes`, as if the host's own pass had written it.
fn host_buffer(ctx: &GpuContext, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host data"),
        size: bytes.len() as u64,
        usage,
        mapped_at_creation: false,
    });
    ctx.queue.write_buffer(&buffer, 0, bytes);
    buffer
}

fn problem(neurons: u32, batch: u32, steps: u32) -> (NetworkConfig, HostParameters, EpisodeData) {
    let mut r = rng(42);
    let config = NetworkConfig { neurons, eta: 0.05, ..Default::default() };
    let mut values = uniform(&mut r, 2 * (neurons * neurons) as usize, 1.0 / (neurons as f32).sqrt());
    values.push(0.05);
    let row = (batch * neurons) as usize;
    let data = EpisodeData {
        batch,
        steps,
        inputs: uniform(&mut r, steps as usize * row, 1.0),
        loss_steps: vec![steps / 2, steps],
        targets: uniform(&mut r, 2 * row, 1.0),
        loss_scale: 1.0,
        clamp: Vec::new(),
    };
    (config, HostParameters { layout: plasticity_runtime::ParamLayout::paper(neurons), values }, data)
}

#[test]
fn gpu_resident_episodes_in_the_host_encoder_match_the_upload_path() {
    let host = host();
    let ctx = &host.ctx;
    let (config, params, data) = problem(37, 3, 16);
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let inputs = host_buffer(ctx, bytemuck::cast_slice(&data.inputs), usage);
    let targets = host_buffer(ctx, bytemuck::cast_slice(&data.targets), usage);
    let episode = GpuEpisode {
        batch: data.batch,
        steps: data.steps,
        loss_steps: &data.loss_steps,
        loss_scale: 1.0,
        inputs: &inputs,
        targets: &targets,
        clamp: None,
    };

    // Forward: recorded into the host's encoder after a pass of its own, submitted by the host.
    let net = Network::from_parameters(ctx, &config, &params).unwrap();
    let mut on_gpu = EpisodeRunner::new();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.clear_buffer(&host_buffer(ctx, &[0; 64], usage), 0, None); // the host's own work
    on_gpu.record(ctx, &net, &mut encoder, &episode).unwrap();
    ctx.queue.submit([encoder.finish()]);
    let gpu_metrics = on_gpu.read_metrics(ctx).unwrap();
    let mut uploaded = EpisodeRunner::new();
    let host_metrics = uploaded.run(ctx, &net, &data).unwrap();
    assert_eq!(gpu_metrics, host_metrics);
    assert_eq!(on_gpu.read_activations(ctx).unwrap(), uploaded.read_activations(ctx).unwrap(), "same episode, same bits");
    assert!(on_gpu.activations_buffer().unwrap().usage().contains(wgpu::BufferUsages::STORAGE), "bindable in host shaders");

    // Training: two steps recorded into host encoders equal two ordinary steps.
    let mut recorded = Trainer::new(ctx, Network::from_parameters(ctx, &config, &params).unwrap(), TrainerConfig::default()).unwrap();
    let mut ordinary = Trainer::new(ctx, Network::from_parameters(ctx, &config, &params).unwrap(), TrainerConfig::default()).unwrap();
    for _ in 0..2 {
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        recorded.record_train_step(ctx, &mut encoder, &episode).unwrap();
        ctx.queue.submit([encoder.finish()]);
        let a = recorded.read_metrics(ctx).unwrap();
        let b = ordinary.train_step(ctx, &data).unwrap();
        assert_eq!(a, b);
    }
    assert_eq!(recorded.network.read_parameters(ctx).unwrap(), ordinary.network.read_parameters(ctx).unwrap());
    assert!(host.errors.lock().unwrap().is_empty(), "host error handler fired: {:?}", host.errors.lock().unwrap());
}

#[test]
fn errors_on_a_host_device_are_values_and_the_device_stays_usable() {
    let host = host();
    let ctx = &host.ctx;
    // WebGPU's default binding limit is 128 MiB: a (33, 1024, 1024) trace does not fit.
    let neurons = 1024;
    let net = Network::new(ctx, &NetworkConfig { neurons, ..Default::default() }).unwrap();
    let batch = (ctx.limits().max_storage_buffer_binding_size / (neurons as u64 * neurons as u64 * 4) + 1) as u32;
    let too_big = constant_episode(neurons, batch, 1);
    let mut runner = EpisodeRunner::new();
    assert!(matches!(runner.run(ctx, &net, &too_big), Err(PlasticityError::LimitExceeded { .. })));

    // A host buffer the runtime cannot copy from is refused before anything is recorded.
    let (config, params, data) = problem(8, 2, 4);
    let small_net = Network::from_parameters(ctx, &config, &params).unwrap();
    let no_copy = host_buffer(ctx, bytemuck::cast_slice(&data.inputs), wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST);
    let targets = host_buffer(ctx, bytemuck::cast_slice(&data.targets), wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST);
    let episode =
        GpuEpisode { batch: 2, steps: 4, loss_steps: &data.loss_steps, loss_scale: 1.0, inputs: &no_copy, targets: &targets, clamp: None };
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let err = runner.record(ctx, &small_net, &mut encoder, &episode).unwrap_err();
    assert!(err.to_string().contains("inputs buffer needs COPY_SRC"), "{err}");
    drop(encoder);

    // The device still runs episodes, and the host's handler saw nothing.
    assert!(runner.run(ctx, &small_net, &data).unwrap().loss.is_finite());
    assert!(host.errors.lock().unwrap().is_empty(), "host error handler fired: {:?}", host.errors.lock().unwrap());
}

/// A host device created without `wgpu::Features::SUBGROUP`: the runtime builds no subgroup kernel,
/// its default runs forward_step_vec4 and trains to the same bits as our own device (which has
/// subgroups, and on a CPU adapter runs forward_step_vec4_subgroup); asking for the subgroup kernel
/// there is an error that names the missing feature.
#[test]
fn a_host_device_without_subgroups_runs_the_kernels_that_need_none() {
    use plasticity_runtime::KernelTuning;
    let Host { ctx: host_ctx, errors } = host();
    assert!(gpu().has_subgroups(), "this test needs an adapter with subgroups (lavapipe has them): {}", gpu().adapter);
    assert!(!host_ctx.has_subgroups(), "the host's device was made without subgroups");
    let (config, params, data) = problem(16, 2, 6);
    let train = |ctx: &GpuContext| {
        let net = Network::new(ctx, &config).unwrap();
        net.write_parameters(ctx, &params).unwrap();
        let mut trainer = Trainer::new(ctx, net, TrainerConfig::default()).unwrap();
        let loss = trainer.train_step(ctx, &data).unwrap().loss;
        let values = trainer.network.read_parameters(ctx).unwrap().values;
        (loss.to_bits(), values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), trainer.forward_subgroups())
    };
    let (on_host, on_ours) = (train(&host_ctx), train(gpu()));
    assert_eq!(on_host.2, Some(false), "the host device has no subgroups");
    assert_eq!(on_ours.2, Some(gpu().adapter.is_cpu()), "subgroup shuffles by default on a CPU adapter only");
    assert!(on_host.0 == on_ours.0 && on_host.1 == on_ours.1, "the same training step on both devices");

    let mut forced = host_ctx.clone();
    forced.tuning = KernelTuning { forward_subgroups: Some(true), ..Default::default() };
    let err = EpisodeRunner::new().run(&forced, &Network::new(&forced, &config).unwrap(), &data).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, PlasticityError::InvalidConfig { .. }), "{err:?}");
    assert!(message.contains("forward_subgroups") && message.contains("wgpu::Features::SUBGROUP"), "{message}");
    assert!(errors.lock().unwrap().is_empty(), "the host's error handler never fired: {:?}", errors.lock().unwrap());
}
