//! Whole episodes on the GPU against the f64 reference (`plasticity_kernels::reference`): the
//! forward pass, the gradients of the full backward sweep, and the reverse-and-checkpoint trace
//! recovery against storing every step.

use plasticity_kernels::reference;
use plasticity_runtime::{EpisodeRunner, HostParameters, KernelTuning, Network, NetworkConfig, ParamLayout, TrainerConfig};
use plasticity_tests::*;

/// Random weights of scale ~1/sqrt(N) (a stable, unsaturated regime), random inputs, and +-1
/// targets at the middle and last steps.
fn problem(seed: u64, n: u32, batch: u32, steps: u32, eta: f32) -> Problem {
    let mut r = rng(seed);
    let scale = 1.2 / (n as f32).sqrt();
    let layout = ParamLayout::paper(n);
    let mut values = uniform(&mut r, 2 * (n * n) as usize, scale);
    values.push(eta);
    let data = random_episode(&mut r, n, batch, steps);
    let config = NetworkConfig { neurons: n, eta, ..Default::default() };
    Problem { config, host: HostParameters { layout, values }, data }
}

#[test]
fn forward_episode_matches_reference() {
    let ctx = gpu();
    for (n, batch) in [(1, 1), (63, 3), (64, 1), (65, 3), (257, 2)] {
        let steps = 12;
        let p = problem(n as u64 * 3 + batch as u64, n, batch, steps, 0.1);
        let net = Network::from_parameters(ctx, &p.config, &p.host).unwrap();
        let mut runner = EpisodeRunner::new();
        let metrics = runner.run(ctx, &net, &p.data).unwrap();
        let (net64, ep64) = to_reference(&p);
        let fwd = reference::forward(&net64, &ep64);
        let what = format!("N={n} B={batch} T={steps}");
        // f32 against f64 through 12 recurrent steps of a contracting network: per-step rounding
        // of ~N * 2^-24 is carried forward without growth, far below 2e-4.
        assert_close(&format!("{what} activations"), &runner.read_activations(ctx).unwrap(), &fwd.activations, 2e-4, 1e-4);
        // The runtime's trace after the episode is H(T) (the update with x(T) is never needed).
        assert_close(&format!("{what} trace H(T)"), &runner.read_trace(ctx).unwrap(), &fwd.traces[steps as usize - 1], 2e-4, 1e-4);
        let loss = reference::loss(&ep64, &fwd);
        assert!((metrics.loss as f64 - loss).abs() <= 1e-3 + 1e-4 * loss.abs(), "{what}: loss {} vs reference {loss}", metrics.loss);
        assert_eq!(metrics.eta, 0.1);
    }
}

#[test]
fn gradients_match_reference() {
    // 24 and 64 run the vec4 kernels.
    for (n, batch, steps, eta) in
        [(1, 1, 1, 0.1), (5, 2, 2, 0.3), (63, 3, 7, 0.05), (65, 2, 50, 0.02), (17, 3, 64, 0.2), (24, 3, 40, 0.1), (64, 2, 12, 0.05)]
    {
        let p = problem(11 * n as u64 + steps as u64, n, batch, steps, eta);
        let (net64, ep64) = to_reference(&p);
        let reference = reference::backward(&net64, &ep64, &reference::forward(&net64, &ep64));
        let (gpu_grads, _) = gpu_gradients(&p, TrainerConfig::default());
        assert_gradients_match(&format!("N={n} B={batch} T={steps} eta={eta}"), &gpu_grads, &reference.to_flat());
    }
}

#[test]
fn gradients_with_clamped_neurons_match_reference() {
    use rand::Rng;
    for (n, batch, steps) in [(40, 2, 9), (65, 3, 12)] {
        let mut p = problem(77 + n as u64, n, batch, steps, 0.1);
        let words = plasticity_kernels::clamp_words(n) as usize;
        let mut r = rng(5);
        p.data.clamp = (0..steps as usize * batch as usize * words).map(|_| r.random::<u32>() & r.random::<u32>()).collect();
        let (net64, ep64) = to_reference(&p);
        assert!(ep64.clamp.iter().any(|&c| c) && ep64.clamp.iter().any(|&c| !c));
        let fwd = reference::forward(&net64, &ep64);
        let reference = reference::backward(&net64, &ep64, &fwd);
        // As the kernels run on a CPU adapter, and split as on a GPU (the clamp applied by forward_finish).
        for tuning in [KernelTuning::default(), KernelTuning { forward_splits: Some(4), backward_groups: Some(1), ..Default::default() }] {
            let ctx = &gpu_with(tuning);
            let what = format!("N={n} B={batch} T={steps} clamped {tuning:?}");
            let net = Network::from_parameters(ctx, &p.config, &p.host).unwrap();
            let mut runner = EpisodeRunner::new();
            runner.run(ctx, &net, &p.data).unwrap();
            assert_close(&format!("{what} activations"), &runner.read_activations(ctx).unwrap(), &fwd.activations, 2e-4, 1e-4);
            let (gpu_grads, _) = gpu_gradients_on(ctx, &p, TrainerConfig::default());
            assert_gradients_match(&what, &gpu_grads, &reference.to_flat());
        }
    }
}

#[test]
fn fixed_eta_gets_no_gradient() {
    let mut p = problem(5, 9, 2, 6, 0.2);
    p.config.learn_eta = false;
    let (grads, _) = gpu_gradients(&p, TrainerConfig::default());
    assert_eq!(grads.eta(), 0.0);
    assert!(grads.alpha().iter().any(|g| *g != 0.0));
}

#[test]
fn reversal_with_checkpoints_matches_storing_every_step() {
    for (eta, expected_segment) in [(0.01f32, 300u32), (0.5, 6)] {
        let (n, batch, steps) = (16, 2, 300);
        let p = problem(123, n, batch, steps, eta);
        let (net64, ep64) = to_reference(&p);
        let reference = reference::backward(&net64, &ep64, &reference::forward(&net64, &ep64)).to_flat();
        let (stored, k_stored) = gpu_gradients(&p, TrainerConfig { checkpoint_every: Some(1), ..Default::default() });
        let (reversed, k_reversed) = gpu_gradients(&p, TrainerConfig::default());
        assert_eq!(k_stored, 1);
        // ln(100) / -ln(1 - eta): 458 at 0.01 (capped at T), 6 at 0.5.
        assert_eq!(k_reversed, expected_segment, "segment chosen at eta {eta}");
        let what = format!("T={steps} eta={eta}");
        assert_gradients_match(&format!("{what} stored every step"), &stored, &reference);
        assert_gradients_match(&format!("{what} reversed"), &reversed, &reference);
        // And the two GPU sweeps agree with each other more tightly than with f64.
        let scale = stored.values.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        assert_close(&format!("{what} reversed vs stored"), &reversed.values, &to_f64(&stored.values), 1e-3 * scale, 1e-3);
    }
}

#[test]
fn reversal_segment_follows_the_error_bound() {
    use plasticity_runtime::{checkpoint_steps, reversal_segment};
    assert_eq!(reversal_segment(0.01, 1000, 100.0), 458);
    assert_eq!(reversal_segment(0.5, 1000, 100.0), 6);
    assert_eq!(reversal_segment(0.0, 1000, 100.0), 1000);
    assert_eq!(reversal_segment(0.999, 1000, 100.0), 1);
    assert_eq!(checkpoint_steps(458, 1000), vec![459, 917]);
    assert_eq!(checkpoint_steps(458, 106), Vec::<u32>::new());
    assert_eq!(checkpoint_steps(1, 4), vec![2, 3]);
}
