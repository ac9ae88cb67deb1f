//! Every plasticity rule, whole episodes on the GPU against the f64 reference: activations, the
//! trace after the episode, the loss, and the gradient of every learned parameter through the full
//! backward sweep (reversal for the invertible rules, recomputation from checkpoints for the rest).

use plasticity_kernels::reference;
use plasticity_kernels::{AlphaShape, EtaShape, Modulation, Plasticity, Rule, TRACE_LANES};
use plasticity_runtime::{EpisodeRunner, HostParameters, KernelTuning, Network, NetworkConfig, ParamLayout, Trainer, TrainerConfig};
use plasticity_tests::*;
use rand::Rng;

fn specs() -> Vec<(&'static str, Plasticity)> {
    let p = Plasticity::PAPER;
    vec![
        ("oja", Plasticity { rule: Rule::Oja, ..p }),
        ("additive", Plasticity { rule: Rule::Additive, ..p }),
        ("decay clip", Plasticity { clip: Some(0.05), ..p }),
        ("oja clip", Plasticity { rule: Rule::Oja, clip: Some(0.05), ..p }),
        ("additive clip", Plasticity { rule: Rule::Additive, clip: Some(0.05), ..p }),
        (
            "per-neuron eta and alpha, no self",
            Plasticity { eta: EtaShape::PerNeuron, alpha: AlphaShape::PerNeuron, plastic_self: false, ..p },
        ),
        ("scalar alpha", Plasticity { rule: Rule::Oja, alpha: AlphaShape::Scalar, ..p }),
        ("simple modulation", Plasticity { rule: Rule::Additive, clip: Some(0.1), modulation: Modulation::Simple, ..p }),
        ("fan-out modulation", Plasticity { rule: Rule::Decay, modulation: Modulation::PerNeuron, ..p }),
        ("retroactive", Plasticity { rule: Rule::Decay, clip: Some(0.05), modulation: Modulation::Simple, retroactive: true, ..p }),
        (
            "retroactive fan-out",
            Plasticity { rule: Rule::Oja, modulation: Modulation::PerNeuron, retroactive: true, eta: EtaShape::PerNeuron, ..p },
        ),
    ]
}

/// Random parameters of scale ~1/sqrt(N) (stable, unsaturated), alpha large enough that the
/// plastic term matters, rates in [0.1, 0.4], a modulator that swings M across (-1, 1), random
/// inputs and +-1 targets at the middle and last steps.
fn problem(seed: u64, spec: Plasticity, n: u32, batch: u32, steps: u32) -> Problem {
    let mut r = rng(seed);
    let layout = ParamLayout::new(n, &spec);
    let scale = 1.2 / (n as f32).sqrt();
    let mut values = uniform(&mut r, (n * n) as usize, scale);
    values.extend(uniform(&mut r, spec.alpha_len(n) as usize, 3.0 * scale));
    values.extend((0..spec.eta_len(n)).map(|_| r.random_range(0.1..0.4f32)));
    if spec.modulated() {
        values.extend(uniform(&mut r, n as usize, 2.0 * scale));
        values.push(0.2);
    }
    if spec.modulation == Modulation::PerNeuron {
        values.extend(uniform(&mut r, n as usize, 1.0));
        values.extend(uniform(&mut r, n as usize, 0.2));
    }
    if !spec.plastic_self && spec.alpha == AlphaShape::PerConnection {
        for i in 0..n as usize {
            values[(n * n) as usize + i * n as usize + i] = 0.0;
        }
    }
    let data = random_episode(&mut r, n, batch, steps);
    let config = NetworkConfig { neurons: n, eta: 0.2, plasticity: spec, ..Default::default() };
    Problem { config, host: HostParameters { layout, values }, data }
}

#[test]
fn every_rule_forward_matches_reference() {
    let ctx = gpu();
    for (name, spec) in specs() {
        // 68: a multiple of 4, run by forward_step_vec4.
        for (n, batch, steps) in [(13, 3, 9), (65, 2, 6), (68, 2, 6)] {
            let p = problem(n as u64 + 7, spec, n, batch, steps);
            let net = Network::from_parameters(ctx, &p.config, &p.host).unwrap();
            let mut runner = EpisodeRunner::new();
            let metrics = runner.run(ctx, &net, &p.data).unwrap();
            let (net64, ep64) = to_reference(&p);
            let fwd = reference::forward(&net64, &ep64);
            let what = format!("{name} N={n} B={batch} T={steps}");
            // f32 against f64 through a few recurrent steps of a contracting network.
            assert_close(&format!("{what} activations"), &runner.read_activations(ctx).unwrap(), &fwd.activations, 2e-4, 1e-4);
            let mut trace = fwd.traces[steps as usize - 1].clone();
            if spec.retroactive {
                trace.extend(&fwd.eligibility[steps as usize - 1]);
            }
            assert_close(&format!("{what} traces after step T"), &runner.read_trace(ctx).unwrap(), &trace, 2e-4, 1e-4);
            let loss = reference::loss(&ep64, &fwd);
            assert!((metrics.loss as f64 - loss).abs() <= 1e-3 + 1e-4 * loss.abs(), "{what}: loss {} vs reference {loss}", metrics.loss);
            if let Some(c) = spec.clip {
                let h = &fwd.traces[steps as usize - 1];
                let at_clip = h.iter().filter(|v| v.abs() >= c as f64 - 1e-9).count();
                assert!(at_clip > 0 && at_clip < h.len(), "{what}: the clip is active for some elements only ({at_clip} of {})", h.len());
            }
        }
    }
}

#[test]
fn every_rule_gradients_match_reference() {
    for (name, spec) in specs() {
        // 20: a multiple of 4, run by the vec4 kernels. At 21 and 20 the trace is stored in stripes of
        // 8 columns (the last 5 and 4 wide), through the forward, the recomputation of the rules that
        // cannot be reversed (trace_update) and the backward; at 13 its rows are whole.
        for (n, batch, steps) in [(13, 3, 9), (21, 2, 17), (20, 2, 17)] {
            let ctx = &gpu_with(KernelTuning { trace_stripe: Some(if n == 13 { 0 } else { 8 }), ..Default::default() });
            let p = problem(3 * n as u64 + steps as u64, spec, n, batch, steps);
            let (net64, ep64) = to_reference(&p);
            let reference = reference::backward(&net64, &ep64, &reference::forward(&net64, &ep64)).to_flat();
            let what = format!("{name} N={n} B={batch} T={steps} {:?}", ctx.tuning.trace_stripe);
            let (grads, segment) = gpu_gradients_on(ctx, &p, TrainerConfig::default());
            if !spec.reversible() {
                assert_eq!(segment, (steps as f64).sqrt().ceil() as u32, "{what}: recompute segment");
            }
            // Every learned tensor has a gradient that is not trivially zero.
            for (tensor, offset, shape) in p.host.layout.tensors() {
                let len: usize = shape.iter().product();
                let unused = tensor == "eta" && spec.modulated() && !spec.retroactive;
                let any = reference[offset as usize..][..len].iter().any(|g| g.abs() > 1e-6);
                assert_eq!(any, !unused, "{what}: d{tensor} nonzero");
            }
            let mut reference = reference;
            if spec.modulated() && !spec.retroactive {
                // eta is not used by the rule: the runtime holds it (gradient 0).
                let l = p.host.layout;
                reference[l.eta_offset as usize..l.mod_offset as usize].fill(0.0);
            }
            assert_gradients_match(&what, &grads, &reference);
            // One segment for the whole episode (no recomputation past the first) and a
            // checkpoint after every step must give the same gradients.
            for k in [1, steps] {
                let (other, _) = gpu_gradients_on(ctx, &p, TrainerConfig { checkpoint_every: Some(k), ..Default::default() });
                assert_gradients_match(&format!("{what} K={k}"), &other, &reference);
            }
        }
    }
}

/// The GPU's division of the step kernels (a split forward sum, batch groups in the backward trace
/// kernel, each with its own dalpha and eta accumulators, fewer batch elements per backward pass,
/// smaller backward blocks, columns interleaved over a warp, one column quad per forward invocation)
/// on every rule, against the reference.
#[test]
fn split_and_grouped_kernels_match_reference() {
    // B = 9: with Z = 2 the first group takes 5 elements, in two passes of CHUNK = 4. N = 20 runs the
    // vec4 kernels.
    let (batch, steps) = (9, 7);
    for (name, spec, n) in
        specs().into_iter().chain([("paper", Plasticity::PAPER)]).flat_map(|(name, spec)| [(name, spec, 21), (name, spec, 20)])
    {
        for tuning in [
            // The GPU's workgroups of 64, backward columns interleaved over a warp and one column
            // quad per forward invocation (elsewhere the CPU adapter's 8 and contiguous columns run;
            // its forward takes one quad per invocation at these sizes too, but three and four below).
            KernelTuning {
                forward_splits: Some(3),
                backward_groups: Some(2),
                forward_workgroup_size: Some(64),
                backward_column_lanes: Some(TRACE_LANES),
                forward_column_quads: Some(1),
                ..Default::default()
            },
            KernelTuning { forward_splits: Some(n), backward_groups: Some(3), forward_workgroup_size: Some(64), ..Default::default() },
            // Passes of two and of one batch element: five passes for Z = 1, three for a group of five.
            // ... with the trace in stripes of 8 and of 12 columns (N = 21: 8, 8, 5; N = 20: 12, 8).
            KernelTuning { backward_batch_slots: Some(2), trace_stripe: Some(8), ..Default::default() },
            KernelTuning { backward_groups: Some(2), backward_batch_slots: Some(1), trace_stripe: Some(12), ..Default::default() },
            // Blocks of 4 x 4 (6 tiles per axis at N = 21; columns interleaved over 3 lanes) and 8 x 8;
            // with them, three and four column quads per forward invocation (N = 20: 5 quads, the
            // second invocation's last one or three past the end).
            KernelTuning {
                backward_tile: Some(4),
                backward_groups: Some(2),
                backward_column_lanes: Some(3),
                forward_column_quads: Some(3),
                ..Default::default()
            },
            KernelTuning { backward_tile: Some(8), forward_column_quads: Some(4), ..Default::default() },
        ] {
            let ctx = &gpu_with(tuning);
            let p = problem(5 * n as u64 + steps as u64, spec, n, batch, steps);
            let (net64, ep64) = to_reference(&p);
            let fwd = reference::forward(&net64, &ep64);
            let what = format!("{name} N={n} B={batch} T={steps} {tuning:?}");
            let net = Network::from_parameters(ctx, &p.config, &p.host).unwrap();
            let mut runner = EpisodeRunner::new();
            runner.run(ctx, &net, &p.data).unwrap();
            assert_close(&format!("{what} activations"), &runner.read_activations(ctx).unwrap(), &fwd.activations, 2e-4, 1e-4);
            // Read back row-major whatever order the GPU stored it in.
            let mut trace = fwd.traces[steps as usize - 1].clone();
            if spec.retroactive {
                trace.extend(&fwd.eligibility[steps as usize - 1]);
            }
            assert_close(&format!("{what} traces after step T"), &runner.read_trace(ctx).unwrap(), &trace, 2e-4, 1e-4);
            let mut reference = reference::backward(&net64, &ep64, &fwd).to_flat();
            if spec.modulated() && !spec.retroactive {
                let l = p.host.layout;
                reference[l.eta_offset as usize..l.mod_offset as usize].fill(0.0);
            }
            let (grads, _) = gpu_gradients_on(ctx, &p, TrainerConfig::default());
            assert_gradients_match(&what, &grads, &reference);
        }
    }
}

/// A host may change `GpuContext::tuning` between episodes of one shape: the trainer rebuilds its
/// resident state with the new work division, and the gradients stay the reference's.
#[test]
fn changing_the_tuning_rebuilds_the_work_division() {
    let (n, batch, steps) = (20u32, 6u32, 5u32);
    let p = problem(99, Plasticity::PAPER, n, batch, steps);
    let (net64, ep64) = to_reference(&p);
    let reference = reference::backward(&net64, &ep64, &reference::forward(&net64, &ep64)).to_flat();
    let mut ctx = gpu_with(KernelTuning { forward_splits: Some(1), backward_groups: Some(1), ..Default::default() });
    let net = Network::from_parameters(&ctx, &p.config, &p.host).unwrap();
    let mut trainer = Trainer::new(&ctx, net, TrainerConfig::default()).unwrap();
    trainer.compute_gradients(&ctx, &p.data).unwrap();
    assert_gradients_match("S = 1, Z = 1", &trainer.read_gradients(&ctx).unwrap(), &reference);
    let whole = trainer.allocated_bytes();
    ctx.tuning = KernelTuning { forward_splits: Some(4), backward_groups: Some(3), ..Default::default() };
    trainer.compute_gradients(&ctx, &p.data).unwrap();
    // The split step's (S, B, N) partial sums and the groups' (Z, N, N) dalpha now exist.
    let extra = (4 * batch * n + 3 * n * n) as u64 * 4;
    assert!(trainer.allocated_bytes() >= whole + extra, "{} bytes, then {}: the tuning was ignored", whole, trainer.allocated_bytes());
    assert_gradients_match("S = 4, Z = 3", &trainer.read_gradients(&ctx).unwrap(), &reference);
}

#[test]
fn recomputation_keeps_memory_sublinear_in_the_episode_length() {
    let ctx = gpu();
    let spec = Plasticity { rule: Rule::Additive, clip: Some(1.0), ..Plasticity::PAPER };
    let mut bytes = Vec::new();
    for steps in [100u32, 400] {
        let p = problem(1, spec, 32, 2, steps);
        let net = Network::from_parameters(ctx, &p.config, &p.host).unwrap();
        let mut trainer = Trainer::new(ctx, net, TrainerConfig::default()).unwrap();
        trainer.compute_gradients(ctx, &p.data).unwrap();
        assert_eq!(trainer.last_segment(), (steps as f64).sqrt().ceil() as u32);
        bytes.push(trainer.allocated_bytes() as f64);
    }
    // (T/K + K + 1) traces: 21 at T = 100, 41 at T = 400, plus the history that grows with T;
    // storing every trace would grow 4x.
    let ratio = bytes[1] / bytes[0];
    assert!(ratio < 2.5, "memory grew {ratio:.2}x for 4x the steps");
}

/// An input layer of width D: inputs v(t) projected as u(t) = v(t) w_in + b_in. The reference runs
/// on u and gives dL/du; the chain rule through the projection is written out here in f64.
#[test]
fn input_layer_forward_and_gradients_match_reference() {
    let ctx = gpu();
    for (name, spec, n, batch, steps, width) in [
        ("paper", Plasticity::PAPER, 17, 3, 8, 5),
        // Three windows of the input layer's gradient (steps 1-16, 17-32, 33-37); vec4 kernels.
        ("paper", Plasticity::PAPER, 20, 2, 37, 3),
        (
            "oja clip mod",
            Plasticity { rule: Rule::Oja, clip: Some(0.05), modulation: Modulation::Simple, ..Plasticity::PAPER },
            13,
            2,
            9,
            20,
        ),
    ] {
        let mut p = problem(9 + width as u64, spec, n, batch, steps);
        let mut r = rng(4);
        p.config.input_width = Some(width);
        let layout = ParamLayout::of(&p.config);
        assert_eq!((layout.input_width, layout.count - p.host.layout.count), (width, (width + 1) * n));
        let w_in = uniform(&mut r, (width * n) as usize, 1.0 / (width as f32).sqrt());
        let b_in = uniform(&mut r, n as usize, 0.3);
        p.host.values.extend(&w_in);
        p.host.values.extend(&b_in);
        p.host.layout = layout;
        let v = uniform(&mut r, (steps * batch * width) as usize, 1.0);
        // The reference sees the projected inputs.
        let rows = (steps * batch) as usize;
        let (nu, du) = (n as usize, width as usize);
        let mut u = vec![0.0f32; rows * nu];
        for row in 0..rows {
            for j in 0..nu {
                u[row * nu + j] = (b_in[j] as f64 + (0..du).map(|d| v[row * du + d] as f64 * w_in[d * nu + j] as f64).sum::<f64>()) as f32;
            }
        }
        p.data.inputs = u;
        let (net64, ep64) = to_reference(&p);
        p.data.inputs = v.clone();
        let what = format!("input layer {name} N={n} B={batch} T={steps} D={width}");

        let net = Network::from_parameters(ctx, &p.config, &p.host).unwrap();
        let mut runner = EpisodeRunner::new();
        runner.run(ctx, &net, &p.data).unwrap();
        let fwd = reference::forward(&net64, &ep64);
        assert_close(&format!("{what} activations"), &runner.read_activations(ctx).unwrap(), &fwd.activations, 2e-4, 1e-4);

        let g64 = reference::backward(&net64, &ep64, &fwd);
        let mut reference = g64.to_flat();
        if spec.modulated() {
            reference[layout.eta_offset as usize..layout.mod_offset as usize].fill(0.0); // eta unused: held
        }
        // dw_in = sum_t,b v^T du, db_in = sum_t,b du.
        let mut d_in = vec![0.0f64; (du + 1) * nu];
        for row in 0..rows {
            for j in 0..nu {
                let g = g64.inputs[row * nu + j];
                for d in 0..du {
                    d_in[d * nu + j] += v[row * du + d] as f64 * g;
                }
                d_in[du * nu + j] += g;
            }
        }
        assert!(d_in.iter().any(|g| g.abs() > 1e-4), "{what}: the input layer's gradient is not trivially zero");
        reference.extend(d_in);
        let (grads, _) = gpu_gradients(&p, TrainerConfig::default());
        assert_gradients_match(&what, &grads, &reference);
    }
    // Clamping holds neurons at N-wide inputs: refused with an input layer.
    let mut p = problem(1, Plasticity::PAPER, 8, 1, 4);
    p.config.input_width = Some(3);
    p.host = HostParameters::init(&p.config).unwrap();
    p.data.inputs = vec![0.0; 4 * 3];
    p.data.clamp = vec![1; 4];
    let net = Network::from_parameters(ctx, &p.config, &p.host).unwrap();
    let err = EpisodeRunner::new().run(ctx, &net, &p.data).unwrap_err().to_string();
    assert!(err.contains("cannot be combined with an input layer"), "{err}");
}

/// Output heads, a softmax classifier and a linear value head, on the paper's rule and on a
/// modulated one: the loss, the head outputs and every gradient (heads and network) against the
/// f64 reference.
#[test]
fn output_heads_match_reference() {
    use plasticity_kernels::reference::Head64;
    use plasticity_runtime::{HeadKind, OutputHead};
    let ctx = gpu();
    let modulated = Plasticity { rule: Rule::Additive, clip: Some(0.05), modulation: Modulation::Simple, ..Plasticity::PAPER };
    // The last case has more head outputs (7 + 2) than neurons (3).
    let cases = [
        ("paper", Plasticity::PAPER, 15, 3, 8, 4u32),
        ("additive clip mod", modulated, 15, 3, 8, 4),
        ("wide heads", Plasticity::PAPER, 3, 2, 5, 7),
    ];
    for (name, spec, n, batch, steps, classes) in cases {
        let mut p = problem(21, spec, n, batch, steps);
        p.config.heads = vec![OutputHead { width: classes, kind: HeadKind::Softmax }, OutputHead { width: 2, kind: HeadKind::Linear }];
        let layout = ParamLayout::of(&p.config);
        let mut r = rng(8);
        let head_values = uniform(&mut r, (layout.count - p.host.layout.count) as usize, 0.6);
        p.host.values.extend(&head_values);
        p.host.layout = layout;
        let rows = p.data.loss_steps.len() * batch as usize;
        let c = classes as usize;
        p.data.targets = (0..rows)
            .flat_map(|row| {
                let mut t = vec![0.0f32; c + 2];
                t[row % c] = 1.0;
                t[c] = 0.5;
                t[c + 1] = -0.25;
                t
            })
            .collect();
        p.data.loss_scale = 0.7;
        let what = format!("heads {name}");

        // The reference's own (L, B, N) targets are unused here: the heads have theirs.
        let mut data = p.data.clone();
        data.targets = vec![0.0; rows * n as usize];
        let (net64, ep64) = to_reference(&Problem { config: p.config.clone(), host: p.host.clone(), data });
        let heads64: Vec<Head64> = layout
            .heads()
            .iter()
            .zip(&p.config.heads)
            .map(|(&(offset, width), h)| {
                let w = to_f64(&p.host.values[offset as usize..][..(n * width) as usize]);
                let b = to_f64(&p.host.values[(offset + n * width) as usize..][..width as usize]);
                Head64 { width: width as usize, softmax: h.kind == HeadKind::Softmax, w, b }
            })
            .collect();
        let fwd = reference::forward(&net64, &ep64);
        let y = reference::heads_forward(&heads64, &ep64, &fwd, n as usize);
        let (loss, dy) = reference::heads_loss(&heads64, &y, &to_f64(&p.data.targets), ep64.loss_scale);

        let net = Network::from_parameters(ctx, &p.config, &p.host).unwrap();
        let mut runner = EpisodeRunner::new();
        let metrics = runner.run(ctx, &net, &p.data).unwrap();
        // Logits: dot products of 15 terms after a few f32 steps against f64.
        assert_close(&format!("{what} outputs"), &runner.read_head_outputs(ctx).unwrap(), &y, 1e-4, 1e-4);
        assert!((metrics.loss as f64 - loss).abs() <= 1e-3 + 1e-4 * loss, "{what}: loss {} vs reference {loss}", metrics.loss);
        // One classification per (step, batch) row plus the linear head's nonzero targets.
        assert_eq!(metrics.sign_count as usize, rows + 2 * rows, "{what}: samples counted");

        let (dx, head_grads) = reference::heads_backward(&heads64, &ep64, &fwd, n as usize, &dy);
        let mut reference = reference::backward_with_loss_grad(&net64, &ep64, &fwd, &dx).to_flat();
        if spec.modulated() {
            reference[layout.eta_offset as usize..layout.mod_offset as usize].fill(0.0); // eta unused: held
        }
        for (dw, db) in head_grads {
            reference.extend(dw);
            reference.extend(db);
        }
        let (grads, _) = gpu_gradients(&p, TrainerConfig::default());
        assert_gradients_match(&what, &grads, &reference);
    }
}

/// `KernelTuning::scalar_kernels` runs the scalar rule kernels where N allows the vec4 ones (for
/// comparing the two on a device): every rule's gradients stay the reference's, the trainer reports
/// the width that ran, and switching the choice on a live trainer rebuilds it.
#[test]
fn scalar_kernels_at_a_multiple_of_four_match_the_reference() {
    let (n, batch, steps) = (20u32, 5u32, 6u32);
    for (name, spec) in specs().into_iter().chain([("paper", Plasticity::PAPER)]) {
        let p = problem(31 + steps as u64, spec, n, batch, steps);
        let (net64, ep64) = to_reference(&p);
        let mut reference = reference::backward(&net64, &ep64, &reference::forward(&net64, &ep64)).to_flat();
        if spec.modulated() && !spec.retroactive {
            let l = p.host.layout;
            reference[l.eta_offset as usize..l.mod_offset as usize].fill(0.0);
        }
        let mut ctx = gpu_with(KernelTuning::default());
        let net = Network::from_parameters(&ctx, &p.config, &p.host).unwrap();
        let mut trainer = Trainer::new(&ctx, net, TrainerConfig::default()).unwrap();
        for (scalar, width) in [(false, 4), (true, 1), (false, 4)] {
            ctx.tuning.scalar_kernels = scalar;
            trainer.compute_gradients(&ctx, &p.data).unwrap();
            let what = format!("{name} N={n} B={batch} T={steps} scalar_kernels={scalar}");
            assert_eq!(trainer.kernel_width(), Some(width), "{what}: the kernels that ran");
            assert_gradients_match(&what, &trainer.read_gradients(&ctx).unwrap(), &reference);
        }
    }
    // The kernels that ran, by name, for a reversing and a recomputing rule (trace_update).
    for spec in [Plasticity::PAPER, Plasticity { clip: Some(0.05), ..Plasticity::PAPER }] {
        for scalar in [false, true] {
            let ctx = gpu_with(KernelTuning { scalar_kernels: scalar, ..Default::default() });
            let case = plasticity_runtime::bench::BenchCase { neurons: n, batch, steps, plasticity: spec };
            let profile = plasticity_runtime::bench::profile_case(&ctx, case).unwrap();
            let ran: Vec<&str> = profile.kernels.iter().map(|k| k.kernel).collect();
            // The vec4 forward step may be its subgroup form, as the tuning chooses for this device.
            let forward = plasticity_runtime::kernels::forward_step::kernel_name(!scalar, ctx.forward_subgroup_kernel().unwrap());
            assert!(ran.contains(&forward), "scalar_kernels={scalar} {spec:?}: ran {ran:?}, not {forward}");
            let mut expected = vec!["backward_trace"];
            if spec.clip.is_some() {
                expected.push("trace_update");
            }
            for kernel in expected {
                let (wanted, unwanted) = (
                    if scalar { kernel.to_string() } else { format!("{kernel}_vec4") },
                    if scalar { format!("{kernel}_vec4") } else { kernel.to_string() },
                );
                assert!(
                    ran.contains(&wanted.as_str()) && !ran.contains(&unwanted.as_str()),
                    "scalar_kernels={scalar} {spec:?}: ran {ran:?}"
                );
            }
        }
    }
    // Where N is not a multiple of 4 only the scalar kernels exist, whatever the tuning says.
    let p = problem(3, Plasticity::PAPER, 21, 2, 4);
    let ctx = gpu_with(KernelTuning::default());
    let net = Network::from_parameters(&ctx, &p.config, &p.host).unwrap();
    let mut trainer = Trainer::new(&ctx, net, TrainerConfig::default()).unwrap();
    trainer.compute_gradients(&ctx, &p.data).unwrap();
    assert_eq!(trainer.kernel_width(), Some(1));
}

/// The model's part of a padded network's parameters: every tensor with its N-long dimensions cut to
/// the first `model` neurons; and, for each padded flat index, whether it belongs to that part.
fn model_part(padded: &HostParameters, model: u32) -> (HostParameters, Vec<bool>) {
    let layout = ParamLayout::new(model, &padded.layout.plasticity);
    let (n, m) = (padded.layout.neurons as usize, model as usize);
    let mut values = vec![0.0; layout.count as usize];
    let mut in_model = vec![false; padded.values.len()];
    for ((name, from, shape), (small_name, to, _)) in padded.layout.tensors().into_iter().zip(layout.tensors()) {
        assert_eq!(name, small_name);
        // Shapes are (N, N), (N) or (1); a dimension of N keeps its first m entries.
        let (rows, cols) = match shape[..] {
            [r, c] => (r, c),
            [c] => (1, c),
            _ => unreachable!("{name} {shape:?}"),
        };
        let keep = |len: usize| if len == n { m } else { len };
        for i in 0..keep(rows) {
            for j in 0..keep(cols) {
                let at = from as usize + i * cols + j;
                values[to as usize + i * keep(cols) + j] = padded.values[at];
                in_model[at] = true;
            }
        }
    }
    (HostParameters { layout, values }, in_model)
}

/// The image task's spare neurons (held at 0, target 0) change nothing, under every rule: with the
/// model's parameters embedded in the padded network and random values on every connection of a
/// spare, the loss and each model parameter's gradient equal those of the network without spares,
/// and each gradient of a spare's own parameters is exactly 0 (x = 0 drives nothing, a held neuron
/// passes no gradient back, a trace with a silent end stays 0). Side 3: the model's 10 neurons run
/// the scalar kernels, the 12 of the padded network the vec4 ones.
#[test]
fn image_task_spare_neurons_are_inert_under_every_rule() {
    use plasticity_runtime::ImageTask;
    let ctx = gpu();
    let padded_task = ImageTask { images_per_episode: 2, cycles: 1, show_steps: 2, gap_steps: 1, test_steps: 2, ..ImageTask::with_side(3) };
    let bare_task = ImageTask { spare_neurons: 0, ..padded_task.clone() };
    let (m, n, batch) = (bare_task.neurons(), padded_task.neurons(), 3);
    assert_eq!((m, n), (10, 12));
    let mut r = rng(41);
    let pool: Vec<Vec<f32>> = (0..3).map(|_| uniform(&mut r, 9, 1.0)).collect();
    let (padded_data, _) = padded_task.generate(&pool, batch, &mut rng(8)).unwrap();
    let (bare_data, _) = bare_task.generate(&pool, batch, &mut rng(8)).unwrap();
    let run = |config: &NetworkConfig, host: &HostParameters, data| {
        let mut trainer = Trainer::new(ctx, Network::from_parameters(ctx, config, host).unwrap(), TrainerConfig::default()).unwrap();
        let metrics = trainer.compute_gradients(ctx, data).unwrap();
        (metrics, trainer.read_gradients(ctx).unwrap(), trainer.kernel_width())
    };
    for (name, spec) in specs() {
        let padded = problem(5, spec, n, batch, padded_data.steps);
        let (bare_host, in_model) = model_part(&padded.host, m);
        let bare_config = NetworkConfig { neurons: m, ..padded.config.clone() };
        let (p_metrics, p_grads, p_width) = run(&padded.config, &padded.host, &padded_data);
        let (b_metrics, b_grads, b_width) = run(&bare_config, &bare_host, &bare_data);
        assert_eq!((p_width, b_width), (Some(4), Some(1)), "{name}: the kernels each network runs");
        // Both in f32 on the GPU, summed in other orders by the vec4 and scalar kernels.
        let loss_gap = (p_metrics.loss - b_metrics.loss).abs();
        assert!(loss_gap <= 1e-5 * b_metrics.loss.abs() + 1e-6, "{name}: loss {} with spares, {} without", p_metrics.loss, b_metrics.loss);
        assert_eq!((p_metrics.sign_errors, p_metrics.sign_count), (b_metrics.sign_errors, b_metrics.sign_count), "{name}");
        let (model_grads, _) = model_part(&p_grads, m);
        let scale = b_grads.values.iter().fold(0.0f32, |s, g| s.max(g.abs())) as f64;
        assert!(scale > 0.0, "{name}: no gradient at all");
        assert_close(&format!("{name}: model gradients with spares"), &model_grads.values, &to_f64(&b_grads.values), 1e-5 * scale, 1e-4);
        let (tensor_of, spare_grads): (Vec<_>, Vec<_>) = p_grads
            .layout
            .tensors()
            .into_iter()
            .flat_map(|(t, offset, shape)| (offset as usize..offset as usize + shape.iter().product::<usize>()).map(move |k| (t, k)))
            .filter(|&(_, k)| !in_model[k] && p_grads.values[k] != 0.0)
            .map(|(t, k)| (t, (k, p_grads.values[k])))
            .unzip();
        assert!(spare_grads.is_empty(), "{name}: nonzero gradients of spare parameters in {tensor_of:?}: {spare_grads:?}");
        // So Adam (no weight decay) leaves them where they started, while the model's parameters move.
        let mut trainer =
            Trainer::new(ctx, Network::from_parameters(ctx, &padded.config, &padded.host).unwrap(), TrainerConfig::default()).unwrap();
        for _ in 0..2 {
            trainer.train_step(ctx, &padded_data).unwrap();
        }
        let trained = trainer.network.read_parameters(ctx).unwrap();
        let moved = |k: usize| trained.values[k].to_bits() != padded.host.values[k].to_bits();
        assert!((0..in_model.len()).any(|k| in_model[k] && moved(k)), "{name}: Adam moved nothing");
        let spare_moved: Vec<usize> = (0..in_model.len()).filter(|&k| !in_model[k] && moved(k)).collect();
        assert!(spare_moved.is_empty(), "{name}: Adam moved spare parameters at {spare_moved:?}");
    }
}
