//! Sizes past the device's limits are refused before anything is allocated, with an error that
//! names the limit, the size and the fix, and the device stays usable afterwards.

use plasticity_runtime::{EpisodeData, EpisodeRunner, Network, NetworkConfig, PlasticityError};
use plasticity_tests::*;

fn episode(neurons: u32, batch: u32) -> EpisodeData {
    constant_episode(neurons, batch, 1)
}

#[test]
fn a_trace_past_the_binding_limit_is_refused_with_the_numbers() {
    let ctx = gpu();
    let limit = ctx.limits().max_storage_buffer_binding_size.min(ctx.limits().max_buffer_size);
    let neurons = 1024u32;
    let per_episode = neurons as u64 * neurons as u64 * 4;
    let batch = (limit / per_episode + 1) as u32; // one episode more than fits
    let net = Network::new(ctx, &NetworkConfig { neurons, ..Default::default() }).unwrap();
    let mut runner = EpisodeRunner::new();
    let err = runner.run(ctx, &net, &episode(neurons, batch)).unwrap_err();
    let message = err.to_string();
    match err {
        PlasticityError::LimitExceeded { needed, allowed, .. } => {
            assert_eq!(needed, batch as u64 * per_episode);
            assert!(allowed < needed);
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert!(message.contains("trace"), "{message}");
    assert!(message.contains(&format!("batch of at most {}", batch - 1)), "the fix names the largest batch that fits: {message}");
    assert_eq!(runner.allocated_bytes(), 0, "nothing was allocated");

    // The same runner and device still work.
    let metrics = runner.run(ctx, &net, &episode(neurons, 1)).unwrap();
    assert!(metrics.loss.is_finite());
}

#[test]
fn backward_batch_groups_past_the_binding_limit_are_refused_with_the_fix() {
    use plasticity_runtime::{KernelTuning, Trainer, TrainerConfig};
    let limit = gpu().limits().max_storage_buffer_binding_size.min(gpu().limits().max_buffer_size);
    // The largest batch whose trace fits, with a batch group per element: their dalpha, B N^2
    // floats, is as large as that trace, and with the sweep's other partial sums (2 B N ceil(N/16)
    // row and column sums alone, far more than the N^2 floats of slack) cannot fit.
    let neurons = 512u32;
    let batch = (limit / (neurons as u64 * neurons as u64 * 4)) as u32;
    let config = NetworkConfig { neurons, ..Default::default() };
    let wide = gpu_with(KernelTuning { backward_groups: Some(batch), ..Default::default() });
    let mut trainer = Trainer::new(&wide, Network::new(&wide, &config).unwrap(), TrainerConfig::default()).unwrap();
    let err = trainer.train_step(&wide, &constant_episode(neurons, batch, 2)).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, PlasticityError::LimitExceeded { .. }), "{err:?}");
    assert!(message.contains("backward partial sums"), "{message}");
    // The fix names a number of groups; that many fit beside the other partial sums, one more does not.
    let named: u32 = message
        .split("use at most ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("the fix names the most groups that fit: {message}"));
    assert!(named >= 1 && named < batch, "{named} of {batch} groups: {message}");
    let data = constant_episode(neurons, batch, 2);
    for (groups, fits) in [(named, true), (named + 1, false)] {
        let ctx = gpu_with(KernelTuning { backward_groups: Some(groups), ..Default::default() });
        let mut trainer = Trainer::new(&ctx, Network::new(&ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
        assert_eq!(trainer.reserve(&ctx, &data).is_ok(), fits, "{groups} backward batch groups at B = {batch}");
    }

    // The device still trains.
    let mut trainer = Trainer::new(gpu(), Network::new(gpu(), &config).unwrap(), TrainerConfig::default()).unwrap();
    assert!(trainer.train_step(gpu(), &constant_episode(neurons, 2, 2)).unwrap().loss.is_finite());
}

#[test]
fn bad_episode_data_is_refused_with_a_reason() {
    let ctx = gpu();
    let net = Network::new(ctx, &NetworkConfig { neurons: 8, ..Default::default() }).unwrap();
    let mut runner = EpisodeRunner::new();
    let mut data = episode(8, 2);
    data.inputs.pop();
    assert!(runner.run(ctx, &net, &data).unwrap_err().to_string().contains("inputs hold 15 values"));
    let mut data = episode(8, 2);
    data.loss_steps = vec![2];
    assert!(runner.run(ctx, &net, &data).unwrap_err().to_string().contains("loss step 2 is outside 1..=1"));
}

#[test]
fn a_wait_past_the_timeout_is_an_error_that_says_so() {
    // A device of its own: wgpu-core 30.0.2 asserts (device/resource.rs, `maintain`) when a wait that
    // timed out reads the fence, another thread's poll of the same device then retires the
    // submissions it waited for, and this poll finds the queue empty with its stale fence value. The
    // other tests of this binary poll the shared device at the same time; CI hit it once.
    let own = plasticity_runtime::GpuContext::new().expect("a second device on the test adapter");
    let ctx = &own;
    let mut impatient = ctx.clone();
    impatient.timeout = std::time::Duration::from_nanos(1);
    let net = Network::new(ctx, &NetworkConfig { neurons: 512, ..Default::default() }).unwrap();
    let data = constant_episode(512, 8, 40);
    let mut runner = EpisodeRunner::new();
    let err = runner.run(&impatient, &net, &data).unwrap_err();
    assert!(matches!(err, PlasticityError::DeviceLost { .. }), "{err:?}");
    // Usually the episode's own wait times out; a fast adapter may finish the episode inside the
    // first poll and time out on the next wait, mapping the metrics. Either way the error names it.
    let message = err.to_string();
    assert!(message.contains("did not finish the forward episode") || message.contains("did not finish mapping metrics"), "{message}");
    // With the ordinary timeout the same device finishes the next episode.
    assert!(runner.run(ctx, &net, &data).unwrap().loss.is_finite());
}

#[test]
fn a_forward_workgroup_past_the_device_limit_is_refused_with_the_range() {
    use plasticity_runtime::KernelTuning;
    let most = gpu().limits().max_compute_invocations_per_workgroup.min(gpu().limits().max_compute_workgroup_size_x);
    let net = Network::new(gpu(), &NetworkConfig { neurons: 8, ..Default::default() }).unwrap();
    for size in [0, most + 1] {
        let ctx = gpu_with(KernelTuning { forward_workgroup_size: Some(size), ..Default::default() });
        let err = EpisodeRunner::new().run(&ctx, &net, &episode(8, 1)).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&format!("forward_workgroup_size = {size}")) && message.contains(&format!("1 to {most}")), "{message}");
    }
    // The largest the device takes runs.
    let ctx = gpu_with(KernelTuning { forward_workgroup_size: Some(most), ..Default::default() });
    assert!(EpisodeRunner::new().run(&ctx, &net, &episode(8, 1)).unwrap().loss.is_finite());
}

#[test]
fn a_backward_workgroup_past_the_device_limit_is_refused_with_the_range() {
    use plasticity_runtime::{KernelTuning, Trainer, TrainerConfig};
    let most = gpu().limits().max_compute_invocations_per_workgroup.min(gpu().limits().max_compute_workgroup_size_x);
    let config = NetworkConfig { neurons: 8, ..Default::default() };
    for size in [0, most + 1] {
        let ctx = gpu_with(KernelTuning { backward_workgroup_size: Some(size), ..Default::default() });
        let mut trainer = Trainer::new(&ctx, Network::new(&ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
        let message = trainer.train_step(&ctx, &episode(8, 1)).unwrap_err().to_string();
        assert!(message.contains(&format!("backward_workgroup_size = {size}")) && message.contains(&format!("1 to {most}")), "{message}");
    }
    // The largest the device takes trains.
    let ctx = gpu_with(KernelTuning { backward_workgroup_size: Some(most), ..Default::default() });
    let mut trainer = Trainer::new(&ctx, Network::new(&ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
    assert!(trainer.train_step(&ctx, &episode(8, 1)).unwrap().loss.is_finite());
    assert_eq!(trainer.backward_workgroup(), Some(most));
}

/// forward_step_vec4_subgroup needs whole subgroups: asked for in workgroups that are not a multiple
/// of the adapter's largest subgroup size, it is refused with the sizes; by default that workgroup
/// size runs forward_step_vec4 instead.
#[test]
fn forward_subgroups_in_workgroups_of_partial_subgroups_are_refused_with_the_sizes() {
    use plasticity_runtime::{KernelTuning, Trainer, TrainerConfig};
    let largest = gpu().adapter.subgroup_max_size;
    assert!(gpu().has_subgroups() && largest > 1, "this test needs an adapter with subgroups (lavapipe has them): {}", gpu().adapter);
    let config = NetworkConfig { neurons: 8, ..Default::default() };
    let size = largest + largest / 2;
    let forced = gpu_with(KernelTuning { forward_workgroup_size: Some(size), forward_subgroups: Some(true), ..Default::default() });
    let err = EpisodeRunner::new().run(&forced, &Network::new(&forced, &config).unwrap(), &episode(8, 1)).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, PlasticityError::InvalidConfig { .. }), "{err:?}");
    assert!(
        message.contains(&format!("forward_workgroup_size = {size}")) && message.contains(&format!("subgroup size, {largest}")),
        "{message}"
    );
    let chosen = gpu_with(KernelTuning { forward_workgroup_size: Some(size), ..Default::default() });
    let mut trainer = Trainer::new(&chosen, Network::new(&chosen, &config).unwrap(), TrainerConfig::default()).unwrap();
    assert!(trainer.train_step(&chosen, &constant_episode(8, 2, 3)).unwrap().loss.is_finite());
    assert_eq!(trainer.forward_subgroups(), Some(false));
}

#[test]
fn backward_batch_slots_outside_the_range_are_refused_with_it() {
    use plasticity_runtime::{KernelTuning, Trainer, TrainerConfig};
    let config = NetworkConfig { neurons: 8, ..Default::default() };
    let chunk = plasticity_runtime::kernels::backward_trace::CHUNK;
    for slots in [0, chunk + 1] {
        let ctx = gpu_with(KernelTuning { backward_batch_slots: Some(slots), ..Default::default() });
        let mut trainer = Trainer::new(&ctx, Network::new(&ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
        let err = trainer.train_step(&ctx, &constant_episode(8, 2, 3)).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, PlasticityError::InvalidConfig { .. }), "{err:?}");
        assert!(message.contains(&format!("backward_batch_slots = {slots}")) && message.contains(&format!("1 to {chunk}")), "{message}");
    }
    // The largest runs.
    let ctx = gpu_with(KernelTuning { backward_batch_slots: Some(chunk), ..Default::default() });
    let mut trainer = Trainer::new(&ctx, Network::new(&ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
    assert!(trainer.train_step(&ctx, &constant_episode(8, 2, 3)).unwrap().loss.is_finite());
}

#[test]
fn backward_tiles_other_than_4_8_or_16_are_refused_with_the_sides() {
    use plasticity_runtime::{KernelTuning, Trainer, TrainerConfig};
    let config = NetworkConfig { neurons: 8, ..Default::default() };
    for side in [0, 2, 5, 12, 32] {
        let ctx = gpu_with(KernelTuning { backward_tile: Some(side), ..Default::default() });
        let mut trainer = Trainer::new(&ctx, Network::new(&ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
        let err = trainer.train_step(&ctx, &constant_episode(8, 2, 3)).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, PlasticityError::InvalidConfig { .. }), "{err:?}");
        assert!(message.contains(&format!("backward_tile = {side}")) && message.contains("[4, 8, 16]"), "{message}");
    }
    for side in plasticity_runtime::kernels::TRACE_TILE_SIDES {
        let ctx = gpu_with(KernelTuning { backward_tile: Some(side), ..Default::default() });
        let mut trainer = Trainer::new(&ctx, Network::new(&ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
        assert!(trainer.train_step(&ctx, &constant_episode(8, 2, 3)).unwrap().loss.is_finite());
        assert_eq!(trainer.backward_tile(), Some(side));
    }
}

#[test]
fn parameters_past_the_binding_limit_are_refused_with_the_largest_size_that_fits() {
    use plasticity_runtime::network::ParamLayout;
    let limit = gpu().limits().max_storage_buffer_binding_size.min(gpu().limits().max_buffer_size);
    let bytes = |neurons: u32| ParamLayout::of(&NetworkConfig { neurons, ..Default::default() }).count as u64 * 4;
    // The first N whose w and alpha (2 N^2 floats) pass the limit, within the 32-bit indices.
    let neurons = (((limit / 8) as f64).sqrt() as u32 + 1).min(46339);
    // Every Vulkan binding is under 4 GiB (a 32-bit range); only one over 16 GiB could hold every
    // network the indices allow, and this test must then fail rather than pass without checking.
    assert!(bytes(neurons) > limit, "a {limit}-byte binding holds N = {neurons}: nothing here to refuse");
    let err = Network::new(gpu(), &NetworkConfig { neurons, ..Default::default() }).err().expect("refused");
    let message = err.to_string();
    assert!(matches!(err, PlasticityError::LimitExceeded { .. }), "{err:?}");
    let most: u32 = message.rsplit("use at most ").next().and_then(|t| t.split(' ').next()?.parse().ok()).expect(&message);
    assert!(bytes(most) <= limit && bytes(most + 1) > limit, "{most} is not the largest N that fits: {message}");
}

#[test]
fn a_batch_past_the_workgroup_grid_is_refused_before_any_dispatch() {
    use plasticity_runtime::{Trainer, TrainerConfig, check_episode_fits};
    let ctx = gpu();
    let most = ctx.limits().max_compute_workgroups_per_dimension;
    let batch = most + 1;
    // N = 4, 2 steps: every buffer fits; only the grids that take a workgroup row per batch
    // element (backward_activation, the modulator's kernels) would pass the limit.
    let config = NetworkConfig { neurons: 4, ..Default::default() };
    let expect_refused = |err: PlasticityError| {
        let message = err.to_string();
        match err {
            PlasticityError::WorkgroupsExceeded { needed, allowed, .. } => assert_eq!((needed, allowed), (batch as u64, most as u64)),
            other => panic!("expected WorkgroupsExceeded, got {other:?}"),
        }
        assert!(message.contains(&format!("use a batch of at most {most}")), "{message}");
    };
    // Before any data is built (what the command line asks first)...
    expect_refused(check_episode_fits(ctx, &config, batch, 2, 1).unwrap_err());
    assert!(check_episode_fits(ctx, &config, most, 2, 1).is_ok(), "the largest batch the grid holds passes");
    // ...and by a trainer given such an episode: an error of ours, not the device's validation error.
    let mut trainer = Trainer::new(ctx, Network::new(ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
    expect_refused(trainer.train_step(ctx, &constant_episode(4, batch, 2)).unwrap_err());
    assert!(trainer.train_step(ctx, &constant_episode(4, 2, 2)).unwrap().loss.is_finite(), "the trainer still works");
}
