//! Training end to end on the GPU: a small pattern-memorisation run learns, and is repeatable.

use plasticity_runtime::{AdamConfig, Network, NetworkConfig, PatternTask, Trainer, TrainerConfig};
use plasticity_tests::*;

/// N = 64, 2 patterns shown twice for 6 steps with 4 silent steps, then a half-erased one: 46
/// steps. (With 3 patterns the loss still falls, but only ~8x within a minute of lavapipe.)
fn pattern_run(seed: u64, episodes: usize) -> Vec<f32> {
    let ctx = gpu();
    let task = PatternTask { neurons: 64, patterns: 2, ..Default::default() };
    let config = NetworkConfig { neurons: 64, seed, ..Default::default() };
    let adam = AdamConfig { lr: 3e-3, ..Default::default() };
    let mut trainer = Trainer::new(ctx, Network::new(ctx, &config).unwrap(), TrainerConfig { adam, ..Default::default() }).unwrap();
    let mut r = rng(seed);
    (0..episodes).map(|_| trainer.train_step(ctx, &task.generate(8, &mut r).unwrap()).unwrap().loss).collect()
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn pattern_memorisation_loss_falls_tenfold() {
    let losses = pattern_run(1, 160);
    let (first, last) = (mean(&losses[..10]), mean(&losses[losses.len() - 10..]));
    eprintln!("pattern memorisation N=64, 2 patterns, B=8, 160 episodes: loss {first:.2} -> {last:.4}");
    assert!(last * 10.0 <= first, "loss fell only from {first} to {last}");
}

#[test]
fn same_seed_gives_same_losses() {
    let (a, b) = (pattern_run(7, 5), pattern_run(7, 5));
    assert_eq!(a, b);
    assert_ne!(a, pattern_run(8, 5), "a different seed should give different episodes");
}

/// The input layer and a softmax head learn too: a cue (one of 4 classes on 4 input channels) at
/// step 1, a silent delay, and a "go" channel at the last step, where the head must name the class.
/// With a Backpropamine rule (additive, clipped, neuromodulated), so the whole chain trains.
#[test]
fn input_layer_and_softmax_head_learn_a_delayed_cue() {
    use plasticity_runtime::{EpisodeData, HeadKind, Modulation, OutputHead, Plasticity, Rule};
    use rand::Rng;
    let ctx = gpu();
    let (classes, width, batch, steps) = (4usize, 5u32, 16u32, 8u32);
    let config = NetworkConfig {
        neurons: 32,
        seed: 2,
        input_width: Some(width),
        heads: vec![OutputHead { width: classes as u32, kind: HeadKind::Softmax }],
        plasticity: Plasticity { rule: Rule::Additive, clip: Some(1.0), modulation: Modulation::Simple, ..Plasticity::PAPER },
        w_init_std: 0.1,
        ..Default::default()
    };
    let adam = AdamConfig { lr: 1e-2, ..Default::default() };
    let mut trainer = Trainer::new(ctx, Network::new(ctx, &config).unwrap(), TrainerConfig { adam, ..Default::default() }).unwrap();
    let mut r = rng(3);
    let episode = |r: &mut rand_chacha::ChaCha8Rng| {
        let (b, d) = (batch as usize, width as usize);
        let mut inputs = vec![0.0f32; steps as usize * b * d];
        let mut targets = vec![0.0f32; b * classes];
        for e in 0..b {
            let class = r.random_range(0..classes);
            inputs[e * d + class] = 1.0; // step 1: the cue
            inputs[((steps as usize - 1) * b + e) * d + classes] = 1.0; // last step: go
            targets[e * classes + class] = 1.0;
        }
        EpisodeData { batch, steps, inputs, loss_steps: vec![steps], targets, loss_scale: 1.0 / batch as f32, clamp: Vec::new() }
    };
    let metrics: Vec<_> = (0..150).map(|_| trainer.train_step(ctx, &episode(&mut r)).unwrap()).collect();
    let mean = |m: &[plasticity_runtime::EpisodeMetrics], f: fn(&plasticity_runtime::EpisodeMetrics) -> f32| {
        m.iter().map(f).sum::<f32>() / m.len() as f32
    };
    let (first, last) = (mean(&metrics[..10], |m| m.loss), mean(&metrics[140..], |m| m.loss));
    let error = mean(&metrics[140..], |m| m.sign_error_rate());
    eprintln!("delayed cue, 4 classes: cross-entropy {first:.3} -> {last:.3}, error rate {error:.3}");
    // Chance is ln 4 = 1.39 per episode and 75% errors.
    assert!(last * 5.0 <= first && error < 0.1, "cross-entropy {first} -> {last}, error rate {error}");
}

/// The runtime builds the kernels whose loops are all counted without wgpu's loop bounding
/// (`KernelDescriptor::counted_loops`); built with it, every kernel must give the same bits.
#[test]
fn wgpu_loop_bounding_changes_no_result() {
    let unbounded = gpu();
    let bounded = gpu().clone().with_wgpu_loop_bounding(true).unwrap();
    assert!(!unbounded.wgpu_loop_bounding() && bounded.wgpu_loop_bounding());
    assert_same_training(unbounded, &bounded, "with and without loop bounding");
}

/// forward_step_vec4_subgroup shares the history by shuffles but sums the same terms in the same
/// order as forward_step_vec4, so training with either gives the same bits.
#[test]
fn forward_subgroups_change_no_result() {
    use plasticity_runtime::KernelTuning;
    assert!(gpu().has_subgroups(), "this test needs an adapter with subgroups (lavapipe has them): {}", gpu().adapter);
    let loads = gpu_with(KernelTuning { forward_subgroups: Some(false), ..Default::default() });
    let shuffles = gpu_with(KernelTuning { forward_subgroups: Some(true), ..Default::default() });
    assert_same_training(&loads, &shuffles, "with and without subgroup shuffles");
}

/// The vec4 forward step with one column quad per invocation (a GPU's) and four (a CPU adapter's for
/// large traces): each quad's sum takes the same terms in the same order, so training gives the same
/// bits.
#[test]
fn forward_column_quads_change_no_result() {
    use plasticity_runtime::KernelTuning;
    let one = gpu_with(KernelTuning { forward_column_quads: Some(1), ..Default::default() });
    let four = gpu_with(KernelTuning { forward_column_quads: Some(4), ..Default::default() });
    assert_same_training(&one, &four, "with one and four column quads per forward invocation");
    // What ran, as the trainer reports it: the set count at N = 24 (vec4), none at N = 13 (scalar).
    for (config, data) in training_cases().into_iter().take(2) {
        for (ctx, quads) in [(&one, 1), (&four, 4)] {
            let mut trainer = Trainer::new(ctx, Network::new(ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
            assert_eq!(trainer.forward_column_quads(), None, "nothing has run yet");
            trainer.train_step(ctx, &data).unwrap();
            let expected = if config.neurons % 4 == 0 { quads } else { 0 };
            assert_eq!(trainer.forward_column_quads(), Some(expected), "N = {}", config.neurons);
        }
    }
}

/// backward_trace_vec4 with its column values hoisted per pass (HOIST_COLUMNS) computes the same
/// values in the same order as with them loaded per four rows, so training gives the same bits.
#[test]
fn backward_hoist_columns_changes_no_result() {
    use plasticity_runtime::KernelTuning;
    let loads = gpu_with(KernelTuning { backward_hoist_columns: Some(false), ..Default::default() });
    let hoisted = gpu_with(KernelTuning { backward_hoist_columns: Some(true), ..Default::default() });
    assert_same_training(&loads, &hoisted, "with the backward's column values hoisted and not");
}

/// A reversed sweep that stores the trace and its gradient every step, and one that stores them every
/// other step and recovers the skipped ones once more by the same inversion and the same gradient
/// update, compute the same values, so training gives the same bits (the decay rule reverses at both
/// kernel widths here; the other configurations recompute and must not notice).
#[test]
fn backward_store_every_step_changes_no_result() {
    use plasticity_runtime::KernelTuning;
    let alternate = gpu_with(KernelTuning::default());
    let every_step = gpu_with(KernelTuning { backward_store_every_step: true, ..Default::default() });
    assert_same_training(&alternate, &every_step, "with the reversed trace and its gradient stored every step and every other step");
}

/// backward_trace with its columns contiguous in each invocation (a CPU adapter's) and interleaved over
/// a warp (a GPU's): each invocation's row sums then cover other columns, so the row partials and
/// everything after them round differently, and the gradients must agree to f32 rounding. They are
/// compared directly, not after Adam steps, which move each parameter by about the learning rate
/// whatever its gradient's size. (At N = 13 and 16 a row has one block and both layouts coincide; the
/// networks of 20 and 24 neurons differ.)
#[test]
fn backward_column_lanes_agree_to_rounding() {
    use plasticity_runtime::KernelTuning;
    let contiguous = gpu_with(KernelTuning { backward_column_lanes: Some(1), ..Default::default() });
    let interleaved = gpu_with(KernelTuning { backward_column_lanes: Some(plasticity_kernels::TRACE_LANES), ..Default::default() });
    for (config, data) in training_cases() {
        let gradients = |ctx: &plasticity_runtime::GpuContext| {
            let mut trainer = Trainer::new(ctx, Network::new(ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
            let loss = trainer.compute_gradients(ctx, &data).unwrap().loss;
            assert_eq!(trainer.backward_column_lanes(), ctx.tuning.backward_column_lanes, "the column lanes ran as set");
            (loss, trainer.read_gradients(ctx).unwrap())
        };
        let ((loss_a, a), (loss_b, b)) = (gradients(&contiguous), gradients(&interleaved));
        // The forward pass is the same kernels either way.
        assert_eq!(loss_a.to_bits(), loss_b.to_bits(), "N = {}: the loss", config.neurons);
        for (name, offset, shape) in a.layout.tensors() {
            let len: usize = shape.iter().product();
            let (x, y) = (&a.values[offset as usize..][..len], &b.values[offset as usize..][..len]);
            // Sums of a few hundred f32 terms grouped differently: a few ulps of the tensor's scale.
            let scale = y.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            assert_close(
                &format!("N = {}: d{name} with contiguous and interleaved columns", config.neurons),
                x,
                &to_f64(y),
                1e-5 * scale,
                1e-4,
            );
        }
    }
}

/// backward_trace in workgroups of 8 (a CPU adapter's) and of 64 (a GPU's): every invocation walks
/// the same block whichever workgroup holds it, so training gives the same bits.
#[test]
fn backward_workgroup_size_changes_no_result() {
    use plasticity_runtime::KernelTuning;
    let eight = gpu_with(KernelTuning { backward_workgroup_size: Some(8), ..Default::default() });
    let sixty_four = gpu_with(KernelTuning { backward_workgroup_size: Some(64), ..Default::default() });
    assert_same_training(&eight, &sixty_four, "with backward trace workgroups of 8 and of 64");
}

/// Four small networks and their episodes: both rule kernel widths, modulation, the eligibility trace,
/// the input layer and a softmax head.
fn training_cases() -> Vec<(NetworkConfig, plasticity_runtime::EpisodeData)> {
    use plasticity_runtime::{EpisodeData, EtaShape, HeadKind, Modulation, OutputHead, Plasticity, Rule};
    use rand::Rng;
    let retroactive =
        Plasticity { rule: Rule::Oja, modulation: Modulation::PerNeuron, retroactive: true, eta: EtaShape::PerNeuron, ..Plasticity::PAPER };
    let cued = Plasticity { rule: Rule::Additive, clip: Some(1.0), modulation: Modulation::Simple, ..Plasticity::PAPER };
    let head = vec![OutputHead { width: 3, kind: HeadKind::Softmax }];
    let configs = [
        NetworkConfig { neurons: 24, seed: 1, ..Default::default() },
        NetworkConfig { neurons: 13, seed: 2, ..Default::default() },
        NetworkConfig { neurons: 20, seed: 3, plasticity: retroactive, ..Default::default() },
        NetworkConfig { neurons: 16, seed: 4, input_width: Some(5), heads: head, plasticity: cued, ..Default::default() },
    ];
    let (batch, steps) = (3u32, 9u32);
    configs
        .into_iter()
        .map(|config| {
            let mut r = rng(config.seed);
            let data = if config.input_width.is_some() {
                let inputs = uniform(&mut r, (steps * batch * 5) as usize, 1.0);
                let mut targets = vec![0.0; (batch * 3) as usize];
                for e in 0..batch as usize {
                    targets[e * 3 + r.random_range(0..3)] = 1.0; // one class per batch element
                }
                EpisodeData { batch, steps, inputs, loss_steps: vec![steps], targets, loss_scale: 1.0, clamp: Vec::new() }
            } else {
                random_episode(&mut r, config.neurons, batch, steps)
            };
            (config, data)
        })
        .collect()
}

/// The same losses and parameters after three Adam steps on both contexts, for every
/// [`training_cases`] network.
fn assert_same_training(a: &plasticity_runtime::GpuContext, b: &plasticity_runtime::GpuContext, what: &str) {
    for (config, data) in training_cases() {
        let run = |ctx: &plasticity_runtime::GpuContext| {
            let mut trainer = Trainer::new(ctx, Network::new(ctx, &config).unwrap(), TrainerConfig::default()).unwrap();
            let losses: Vec<u32> = (0..3).map(|_| trainer.train_step(ctx, &data).unwrap().loss.to_bits()).collect();
            let params: Vec<u32> = trainer.network.read_parameters(ctx).unwrap().values.iter().map(|v| v.to_bits()).collect();
            (losses, params)
        };
        let (on_a, on_b) = (run(a), run(b));
        assert_eq!(on_a.0, on_b.0, "N = {}: losses {what}", config.neurons);
        assert!(on_a.1 == on_b.1, "N = {}: parameters after training {what} differ", config.neurons);
    }
}
