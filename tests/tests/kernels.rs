//! Every kernel against its CPU twin (`plasticity_kernels::cpu`), on seeded random inputs at sizes
//! off the workgroup multiple and batch sizes above 1, with outputs pre-filled with NaN where the
//! kernel must write every element.

use plasticity_kernels::adam_update::{self, AdamParams};
use plasticity_kernels::backward_activation::{self, BackwardActivationParams, LOSS_NONE};
use plasticity_kernels::backward_trace::{self, BackwardTraceParams};
use plasticity_kernels::finish_gradients::FinishGradientsParams;
use plasticity_kernels::forward_step::{self, ForwardStepParams};
use plasticity_kernels::loss_mse::LossMseParams;
use plasticity_kernels::stream_triad::{self, StreamTriadParams};
use plasticity_kernels::{cpu, metrics, trace_tiles};
use plasticity_tests::*;

const SIZES: [u32; 5] = [1, 63, 64, 65, 257];
const BATCHES: [u32; 3] = [1, 3, 5]; // 5 crosses forward_step's batch tile of 4

fn bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// Flat parameters [w, alpha, eta] with weights small enough that tanh is not saturated.
fn random_params(seed: u64, n: u32, eta: f32) -> Vec<f32> {
    let mut r = rng(seed);
    let scale = 1.5 / (n as f32).sqrt();
    let mut p = uniform(&mut r, 2 * (n * n) as usize, scale);
    p.push(eta);
    p
}

/// (T, B, ceil(N/32)) masks with about half the bits set, or a single zero word when `on` is false.
fn random_clamp(r: &mut rand_chacha::ChaCha8Rng, on: bool, steps: usize, batch: u32, n: u32) -> (Vec<u32>, u32) {
    use rand::Rng;
    if !on {
        return (vec![0], 0);
    }
    let words = plasticity_kernels::clamp_words(n);
    ((0..steps * (batch * words) as usize).map(|_| r.random::<u32>()).collect(), words)
}

#[test]
fn forward_step_matches_cpu_twin() {
    for n in SIZES {
        for batch in BATCHES {
            for step in [1u32, 2, 4] {
                let steps = 4;
                let (nn, row) = ((n * n) as usize, (batch * n) as usize);
                let mut r = rng(1000 * n as u64 + 10 * batch as u64 + step as u64);
                let params = random_params(n as u64, n, 0.3);
                // H(t-1) is random from step 2 on; at step 1 the runtime has cleared it.
                let trace = if step == 1 { vec![0.0; batch as usize * nn] } else { uniform(&mut r, batch as usize * nn, 1.0) };
                // Rows before `step` hold x(0..t-1), row t holds u(t) (to be replaced by x(t)), later
                // rows are NaN and must not be touched.
                let mut activations = uniform(&mut r, (step as usize + 1) * row, 1.0);
                activations.extend(nan_filled((steps - step as usize) * row));
                // At step 2, hold a random half of the neurons at their inputs.
                let (clamp, clamp_words) = random_clamp(&mut r, step == 2, steps, batch, n);
                let p = ForwardStepParams {
                    n,
                    batch,
                    step,
                    w_offset: 0,
                    alpha_offset: n * n,
                    eta_offset: 2 * n * n,
                    clamp_words,
                    ..Default::default()
                };
                let out = run_kernel(
                    "forward_step",
                    &p,
                    &[bytes(&params), bytes(&trace), bytes(&activations), bytemuck::cast_slice(&clamp)],
                    forward_step::workgroups(n, batch),
                );
                let (mut trace_ref, mut act_ref) = (trace.clone(), activations.clone());
                cpu::forward_step(&p, &params, &mut trace_ref, &mut act_ref, &clamp);
                let ctx = format!("forward_step N={n} B={batch} t={step}");
                // The trace update is the same two f32 operations on both sides (up to FMA contraction).
                assert_close(&format!("{ctx} trace"), &out[1], &to_f64(&trace_ref), 1e-6, 1e-6);
                // x(t): an f32 sum of N <= 257 terms of magnitude <= ~3 against an f64 sum; rounding
                // stays below N * 2^-24 * 3 ~ 5e-5, and tanh' <= 1.
                let done = (step as usize + 1) * row;
                assert_close(&format!("{ctx} activations"), &out[2][..done], &to_f64(&act_ref[..done]), 5e-5, 1e-5);
                if clamp_words == 0 {
                    assert!(act_ref[done - row..done] != activations[done - row..done], "{ctx}: the twin must replace u(t) by x(t)");
                } else {
                    let held = (0..row).filter(|&e| out[2][done - row + e] == activations[done - row + e]).count();
                    assert!(held >= row / 4 && held < row.max(2), "{ctx}: about half the neurons are held, {held} of {row}");
                }
                assert!(out[2][done..].iter().all(|v| v.is_nan()), "{ctx}: wrote past row t");
            }
        }
    }
}

#[test]
fn backward_activation_matches_cpu_twin() {
    for n in SIZES {
        for batch in BATCHES {
            for loss_slot in [LOSS_NONE, 1] {
                let (steps, tiles) = (3u32, trace_tiles(n));
                let row = (batch * n) as usize;
                let mut r = rng(7 + 100 * n as u64 + batch as u64);
                let activations = uniform(&mut r, (steps as usize + 1) * row, 1.0);
                let targets = uniform(&mut r, 2 * row, 1.0);
                let partials = uniform(&mut r, 2 * row * tiles as usize, 1.0);
                let (clamp, clamp_words) = random_clamp(&mut r, loss_slot == 1, steps as usize, batch, n);
                let p = BackwardActivationParams {
                    n,
                    batch,
                    step: 2,
                    n_tiles: tiles,
                    loss_slot,
                    loss_scale: 0.5,
                    clamp_words,
                    ..Default::default()
                };
                let grad = nan_filled(row);
                let out = run_kernel(
                    "backward_activation",
                    &p,
                    &[bytes(&activations), bytes(&targets), bytes(&partials), bytemuck::cast_slice(&clamp), bytes(&grad)],
                    backward_activation::workgroups(n, batch),
                );
                let mut grad_ref = grad.clone();
                cpu::backward_activation(&p, &activations, &targets, &partials, &clamp, &mut grad_ref);
                // A sum of 2 * ceil(N/16) <= 34 values of magnitude <= 1 in f32 order vs f64.
                let ctx = format!("backward_activation N={n} B={batch} slot={loss_slot} clamped={}", clamp_words != 0);
                assert_close(&ctx, &out[4], &to_f64(&grad_ref), 1e-5, 1e-5);
            }
        }
    }
}

#[test]
fn backward_trace_matches_cpu_twin() {
    for n in SIZES {
        for batch in [1u32, 3] {
            for step in [1u32, 2, 3] {
                let (steps, tiles) = (3usize, trace_tiles(n) as usize);
                let (nn, row) = ((n * n) as usize, (batch * n) as usize);
                let mut r = rng(31 + 1000 * n as u64 + 10 * batch as u64 + step as u64);
                let params = random_params(n as u64 + 5, n, 0.2);
                let activations = uniform(&mut r, (steps + 1) * row, 1.0);
                let preact = uniform(&mut r, row, 1.0);
                let trace = uniform(&mut r, batch as usize * nn, 1.0);
                let trace_grad = uniform(&mut r, batch as usize * nn, 1.0);
                let grads = uniform(&mut r, 2 * nn + 1, 1.0); // accumulated into
                // Row and column sums: every element must be written; eta sums: accumulated into.
                let mut partials = nan_filled(2 * row * tiles);
                partials.extend(uniform(&mut r, tiles * tiles, 1.0));
                assert_eq!(partials.len(), plasticity_kernels::trace_partials_len(n, batch));
                let p = BackwardTraceParams {
                    n,
                    batch,
                    step,
                    n_tiles: tiles as u32,
                    w_offset: 0,
                    alpha_offset: n * n,
                    eta_offset: 2 * n * n,
                    ..Default::default()
                };
                let out = run_kernel(
                    "backward_trace",
                    &p,
                    &[
                        bytes(&params),
                        bytes(&activations),
                        bytes(&preact),
                        bytes(&trace),
                        bytes(&trace_grad),
                        bytes(&grads),
                        bytes(&partials),
                    ],
                    backward_trace::workgroups(n),
                );
                let (mut t_ref, mut g_ref, mut gr_ref, mut p_ref) = (trace.clone(), trace_grad.clone(), grads.clone(), partials.clone());
                cpu::backward_trace(&p, &params, &activations, &preact, &mut t_ref, &mut g_ref, &mut gr_ref, &mut p_ref);
                let ctx = format!("backward_trace N={n} B={batch} t={step}");
                // Elementwise f32 updates, identical up to FMA contraction; the reversal divides by
                // 1 - eta = 0.8, so allow a few ulps.
                assert_close(&format!("{ctx} trace"), &out[3], &to_f64(&t_ref), 1e-6, 1e-6);
                assert_close(&format!("{ctx} trace_grad"), &out[4], &to_f64(&g_ref), 1e-6, 1e-6);
                // Batch sums of <= 3 products, accumulated onto O(1) values.
                assert_close(&format!("{ctx} grads"), &out[5], &to_f64(&gr_ref), 1e-5, 1e-5);
                let sums = 2 * row * tiles;
                // Tile sums of 16 terms of magnitude <= ~4 in a tree vs f64.
                assert_close(&format!("{ctx} row and column partials"), &out[6][..sums], &to_f64(&p_ref[..sums]), 2e-5, 1e-5);
                // 256 * B terms per tile, magnitude <= ~2.
                assert_close(&format!("{ctx} eta partials"), &out[6][sums..], &to_f64(&p_ref[sums..]), 1e-4, 1e-5);
            }
        }
    }
}

#[test]
fn loss_mse_matches_cpu_twin() {
    for n in SIZES {
        for batch in BATCHES {
            let (steps, row) = (5usize, (batch * n) as usize);
            let mut r = rng(55 + n as u64 * 7 + batch as u64);
            let activations = uniform(&mut r, (steps + 1) * row, 1.0);
            let mut targets = uniform(&mut r, 2 * row, 1.0);
            targets[0] = 0.0; // zero targets are not counted as bits
            let loss_steps: Vec<u32> = vec![2, 5];
            let metrics_buf = nan_filled(metrics::COUNT);
            let p = LossMseParams { n, batch, n_loss_steps: 2, loss_scale: 0.5 };
            let out = run_kernel(
                "loss_mse",
                &p,
                &[bytes(&activations), bytes(&targets), bytemuck::cast_slice(&loss_steps), bytes(&metrics_buf)],
                [1, 1, 1],
            );
            let mut m_ref = metrics_buf.clone();
            cpu::loss_mse(&p, &activations, &targets, &loss_steps, &mut m_ref);
            let ctx = format!("loss_mse N={n} B={batch}");
            // A sum of up to 2 * 5 * 257 squares <= 4 in f32: relative rounding ~1e-5.
            assert_close(&format!("{ctx} loss"), &out[3][..1], &[m_ref[0] as f64], 1e-5, 2e-5);
            assert_eq!(out[3][1..3], m_ref[1..3], "{ctx}: sign error and bit counts are exact");
        }
    }
}

#[test]
fn finish_gradients_matches_cpu_twin() {
    for n in SIZES {
        for learn_eta in [0u32, 1] {
            let tiles = trace_tiles(n) as usize;
            let count = 2 * n * n + 1;
            let mut r = rng(77 + n as u64);
            // The eta sums sit behind 40 unrelated values, as they sit behind the row and column sums.
            let partials = uniform(&mut r, 40 + tiles * tiles, 1.0);
            let grads = uniform(&mut r, count as usize, 1.0);
            let metrics_buf = nan_filled(metrics::COUNT);
            let p = FinishGradientsParams {
                param_count: count,
                eta_offset: count - 1,
                eta_partials_offset: 40,
                n_eta_partials: (tiles * tiles) as u32,
                learn_eta,
                // With eta fixed, also hold alpha (the non-plastic baseline's setting).
                frozen_begin: if learn_eta == 0 { n * n } else { 0 },
                frozen_end: if learn_eta == 0 { 2 * n * n } else { 0 },
                ..Default::default()
            };
            let out = run_kernel("finish_gradients", &p, &[bytes(&partials), bytes(&grads), bytes(&metrics_buf)], [1, 1, 1]);
            let (mut g_ref, mut m_ref) = (grads.clone(), metrics_buf.clone());
            cpu::finish_gradients(&p, &partials, &mut g_ref, &mut m_ref);
            let ctx = format!("finish_gradients N={n} learn_eta={learn_eta}");
            // Sums of <= 289 (eta) and <= 132099 (norm) terms in f32 strided order against f64.
            assert_close(&format!("{ctx} grads"), &out[1], &to_f64(&g_ref), 1e-5, 1e-5);
            assert!(out[1][p.frozen_begin as usize..p.frozen_end as usize].iter().all(|&g| g == 0.0), "{ctx}: frozen range");
            assert_close(&format!("{ctx} norm"), &out[2][metrics::GRAD_NORM_SQ..][..1], &[m_ref[metrics::GRAD_NORM_SQ] as f64], 1e-4, 1e-5);
        }
    }
}

#[test]
fn adam_update_matches_cpu_twin() {
    for count in [1u32, 255, 256, 257, 2 * 65 * 65 + 1] {
        for clip in [0.0f32, 0.5] {
            let mut r = rng(99 + count as u64);
            let grads = uniform(&mut r, count as usize, 1.0);
            let mut metrics_buf = nan_filled(metrics::COUNT);
            metrics_buf[metrics::GRAD_NORM_SQ] = grads.iter().map(|g| g * g).sum();
            let params = uniform(&mut r, count as usize, 1.0);
            let m = uniform(&mut r, count as usize, 0.1);
            let v: Vec<f32> = uniform(&mut r, count as usize, 0.1).iter().map(|x| x.abs()).collect();
            let (grid, row_stride) = adam_update::grid(count);
            let p = AdamParams {
                param_count: count,
                row_stride,
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                bias1: 1.0 - 0.9f32.powi(3),
                bias2: 1.0 - 0.999f32.powi(3),
                clip_norm: clip,
                ..Default::default()
            };
            let out = run_kernel("adam_update", &p, &[bytes(&grads), bytes(&metrics_buf), bytes(&params), bytes(&m), bytes(&v)], grid);
            let (mut p_ref, mut m_ref, mut v_ref) = (params.clone(), m.clone(), v.clone());
            cpu::adam_update(&p, &grads, &metrics_buf, &mut p_ref, &mut m_ref, &mut v_ref);
            let ctx = format!("adam_update P={count} clip={clip}");
            // The same f32 expression on both sides; sqrt and division may differ by an ulp or two.
            assert_close(&format!("{ctx} params"), &out[2], &to_f64(&p_ref), 1e-6, 1e-5);
            assert_close(&format!("{ctx} m"), &out[3], &to_f64(&m_ref), 1e-7, 1e-5);
            assert_close(&format!("{ctx} v"), &out[4], &to_f64(&v_ref), 1e-7, 1e-5);
        }
    }
}

#[test]
fn stream_triad_matches_cpu_twin() {
    for count in [1u32, 255, 256, 257, 100_003] {
        let mut r = rng(5 + count as u64);
        let (a, b, c) = (uniform(&mut r, count as usize, 1.0), uniform(&mut r, count as usize, 1.0), nan_filled(count as usize));
        let (grid, row_stride) = plasticity_kernels::elementwise_grid(count, stream_triad::WORKGROUP_SIZE);
        let p = StreamTriadParams { count, row_stride, scale: 3.0, ..Default::default() };
        let out = run_kernel("stream_triad", &p, &[bytes(&a), bytes(&b), bytes(&c)], grid);
        let mut c_ref = c.clone();
        cpu::stream_triad(&p, &a, &b, &mut c_ref);
        // One f32 multiply-add on both sides; FMA contraction may differ by an ulp.
        assert_close(&format!("stream_triad count={count}"), &out[2], &to_f64(&c_ref), 1e-6, 1e-6);
    }
}
