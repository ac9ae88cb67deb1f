//! Every kernel against its CPU twin (`plasticity_kernels::cpu`), on seeded random inputs at sizes
//! off the workgroup multiple and batch sizes above 1, with outputs pre-filled with NaN where the
//! kernel must write every element.

use plasticity_kernels::adam_update::{self, AdamParams};
use plasticity_kernels::backward_activation::{self, BackwardActivationParams, LOSS_NONE, MOD_NONE};
use plasticity_kernels::backward_trace::{self, BackwardTraceParams, ReversalStep};
use plasticity_kernels::finish_gradients::{FinishGradientsParams, Reduction};
use plasticity_kernels::forward_finish::{self, ForwardFinishParams};
use plasticity_kernels::forward_step::{self, ForwardStepParams};
use plasticity_kernels::head_backward::{self, HeadBackwardParams};
use plasticity_kernels::head_forward::{self, HeadForwardParams};
use plasticity_kernels::head_loss::{self, HeadLossParams};
use plasticity_kernels::input_projection::{self, InputProjectionParams};
use plasticity_kernels::input_projection_backward::{self, InputProjectionBackwardParams};
use plasticity_kernels::loss_mse::LossMseParams;
use plasticity_kernels::modulation_backward::{self, ModulationBackwardParams};
use plasticity_kernels::modulation_forward::{self, ModulationForwardParams};
use plasticity_kernels::stream_triad::{self, StreamTriadParams};
use plasticity_kernels::trace_update::{self, TraceUpdateParams};
use plasticity_kernels::weight_gradient::{self, WeightGradientParams};
use plasticity_kernels::{
    AlphaShape, EtaShape, Modulation, PartialsLayout, Plasticity, Rule, TRACE_LANES, TRACE_TILE, TRACE_TILE_SIDES, TraceLayout, cpu,
    metrics, trace_tiles,
};
use plasticity_runtime::ParamLayout;
use plasticity_tests::*;

const SIZES: [u32; 5] = [1, 63, 64, 65, 257];
const BATCHES: [u32; 3] = [1, 3, 5]; // 5 crosses forward_step's batch tile of 4

fn bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// Rules that exercise every branch of the rule kernels between them: each rule, a clip, every
/// rate source, every alpha shape, no plastic self-connections and the eligibility trace.
fn rule_specs() -> Vec<(&'static str, Plasticity)> {
    let p = Plasticity::PAPER;
    vec![
        ("paper", p),
        ("oja clip 0.3", Plasticity { rule: Rule::Oja, clip: Some(0.3), ..p }),
        (
            "additive alpha per neuron eta per neuron",
            Plasticity { rule: Rule::Additive, alpha: AlphaShape::PerNeuron, eta: EtaShape::PerNeuron, ..p },
        ),
        ("decay simple modulation", Plasticity { modulation: Modulation::Simple, ..p }),
        (
            "additive clip 0.5 fan-out, scalar alpha, no self",
            Plasticity {
                rule: Rule::Additive,
                clip: Some(0.5),
                modulation: Modulation::PerNeuron,
                alpha: AlphaShape::Scalar,
                plastic_self: false,
                ..p
            },
        ),
        (
            "retroactive oja clip 0.4 fan-out, eta per neuron",
            Plasticity {
                rule: Rule::Oja,
                clip: Some(0.4),
                modulation: Modulation::PerNeuron,
                retroactive: true,
                eta: EtaShape::PerNeuron,
                ..p
            },
        ),
    ]
}

/// Flat parameters [w, alpha, eta, modulator] for `spec`, with weights small enough that tanh is
/// not saturated, rates in [0.1, 0.4], mod_u in +-1 and mod_c in +-0.2.
fn random_rule_params(seed: u64, n: u32, spec: &Plasticity) -> (ParamLayout, Vec<f32>) {
    use rand::Rng;
    let mut r = rng(seed);
    let layout = ParamLayout::new(n, spec);
    let scale = 1.5 / (n as f32).sqrt();
    let mut p = uniform(&mut r, (n * n + spec.alpha_len(n)) as usize, scale);
    p.extend((0..spec.eta_len(n)).map(|_| r.random_range(0.1..0.4f32)));
    if spec.modulated() {
        p.extend(uniform(&mut r, n as usize, scale));
        p.push(0.1);
    }
    if spec.modulation == Modulation::PerNeuron {
        p.extend(uniform(&mut r, n as usize, 1.0));
        p.extend(uniform(&mut r, n as usize, 0.2));
    }
    assert_eq!(p.len(), layout.count as usize);
    (layout, p)
}

/// Whether the runtime runs the vec4 rule kernels for N neurons with `spec`'s parameter layout.
fn runs_vec4_kernels(n: u32, spec: &Plasticity) -> bool {
    let layout = ParamLayout::new(n, spec);
    plasticity_kernels::uses_vec4_kernels(n, layout.w_offset, layout.alpha_offset)
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

/// Inputs of one forward step t of `steps`, in binding order after the params: flat parameters, the
/// trace, the history (rows past t NaN), clamp masks (a random half held at t = 2) and modulation.
struct ForwardStepInputs {
    p: ForwardStepParams,
    params: Vec<f32>,
    trace: Vec<f32>,
    activations: Vec<f32>,
    clamp: Vec<u32>,
    modulation: Vec<f32>,
}

impl ForwardStepInputs {
    /// The step kernels that can run these inputs: forward_step always, forward_step_vec4 and
    /// forward_step_vec4_subgroup too where the runtime would pick a vec4 kernel. The GPU of these
    /// tests must have subgroups (lavapipe has), so that the subgroup kernel never goes untested.
    fn kernels(&self) -> Vec<&'static str> {
        assert!(gpu().has_subgroups(), "the kernel tests need an adapter with subgroups (lavapipe has them): {}", gpu().adapter);
        let vec4 = plasticity_kernels::uses_vec4_kernels(self.p.n, self.p.w_offset, self.p.alpha_offset);
        let mut kernels = vec![forward_step::kernel_name(false, false)];
        if vec4 {
            kernels.extend([forward_step::kernel_name(true, false), forward_step::kernel_name(true, true)]);
        }
        kernels
    }

    /// `kernel` (one of [`Self::kernels`]) on the GPU over these inputs and `partial_sums`, in
    /// `layout` (see [`ForwardLayout`]); the buffers as it left them, without the vec4 kernels' second
    /// view of the parameters.
    fn run_on_gpu(&self, spec: &Plasticity, partial_sums: &[f32], kernel: &str, layout: ForwardLayout) -> Vec<Vec<f32>> {
        let vec4 = kernel != forward_step::KERNEL.name;
        let stored_trace = layout.trace.store(self.p.n, &self.trace);
        let mut buffers = vec![
            bytes(&self.params),
            bytes(&stored_trace),
            bytes(&self.activations),
            bytemuck::cast_slice(&self.clamp),
            bytes(&self.modulation),
            bytes(partial_sums),
        ];
        if vec4 {
            buffers.push(bytes(&self.params));
        }
        let ForwardLayout { workgroup_size, column_quads, trace } = layout;
        let grid = forward_step::workgroups(self.p.n, self.p.batch, self.p.splits, vec4, workgroup_size, column_quads);
        let mut constants = forward_step::constants(vec4, self.p.batch, workgroup_size, column_quads);
        constants.push(trace.constant());
        let mut out = run_rule_kernel(kernel, spec, &constants, &self.p, &buffers, grid);
        out.truncate(6);
        // Back in row-major order, as the twin keeps it.
        out[1] = trace.load(self.p.n, &out[1]);
        out
    }
}

/// How a forward step divides its columns: invocations per workgroup, and column quads per
/// invocation of the vec4 kernels (the scalar kernel ignores them); and the order the trace is
/// stored in.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ForwardLayout {
    workgroup_size: u32,
    column_quads: u32,
    trace: TraceLayout,
}

/// A GPU's forward layout (workgroups of 64, one quad per invocation, the trace's rows whole) and a
/// CPU adapter's for a trace of 1 MiB or more (one SIMD group of 8, four quads per invocation, the
/// trace in stripes of 128 columns, which only N = 257 and 260 here have more than one of).
const GPU_FORWARD: ForwardLayout = ForwardLayout { workgroup_size: 64, column_quads: 1, trace: TraceLayout::ROWS };
const CPU_FORWARD: ForwardLayout = ForwardLayout {
    workgroup_size: 8,
    column_quads: forward_step::MAX_COLUMN_QUADS,
    trace: TraceLayout::striped(plasticity_runtime::tuning::CPU_TRACE_STRIPE),
};

fn forward_step_inputs(spec: &Plasticity, n: u32, batch: u32, step: u32, steps: usize, seed: u64) -> ForwardStepInputs {
    let (nn, row) = ((n * n) as usize, (batch * n) as usize);
    let mut r = rng(seed);
    let (layout, params) = random_rule_params(n as u64, n, spec);
    let slot = if spec.retroactive { 2 * batch as usize * nn } else { batch as usize * nn };
    // H(t-1) (and E(t-1)) are random from step 2 on; at step 1 the runtime has cleared them.
    let trace = if step == 1 { vec![0.0; slot] } else { uniform(&mut r, slot, 1.0) };
    // Rows before `step` hold x(0..t-1), row t holds u(t) (to be replaced by x(t)), later rows are
    // NaN and must not be touched.
    let mut activations = uniform(&mut r, (step as usize + 1) * row, 1.0);
    activations.extend(nan_filled((steps - step as usize) * row));
    let modulation = uniform(&mut r, (steps + 1) * batch as usize, 0.9);
    let (clamp, clamp_words) = random_clamp(&mut r, step == 2, steps, batch, n);
    let p = ForwardStepParams {
        n,
        batch,
        step,
        w_offset: layout.w_offset,
        alpha_offset: layout.alpha_offset,
        eta_offset: layout.eta_offset,
        mod_offset: layout.mod_offset,
        clamp_words,
        elig_offset: if spec.retroactive { batch * n * n } else { 0 },
        ..Default::default()
    };
    ForwardStepInputs { p, params, trace, activations, clamp, modulation }
}

/// forward_step at every size, and forward_step_vec4 and forward_step_vec4_subgroup too where N is
/// a multiple of 4: 4, 8, 64 and 68 (fewer quads than a workgroup of 64 invocations) and 260 (65
/// quads, one more than a workgroup), in a GPU's layout and a CPU adapter's for large traces
/// (workgroups of 8, four column quads per vec4 invocation); the paper's rule also in workgroups of 8 with one quad per
/// invocation and of 64 with three. So 63, 65, 257 and 260 columns or quads end inside a workgroup,
/// and 1, 17 and 65 quads inside an invocation's quads (for the subgroup kernel: lanes past the last
/// quad, which must still shuffle). Every vec4 kernel in every layout does the same f32 operations
/// per quad in the same order, so they must all agree bit for bit.
#[test]
fn forward_step_matches_cpu_twin() {
    let (mut vec4_cases, mut subgroup_cases) = (0, 0);
    for (name, spec) in rule_specs() {
        // The paper's rule at every size; the others at sizes around the workgroup.
        let sizes: &[u32] = if name == "paper" { &[1, 4, 63, 64, 65, 257, 260] } else { &[1, 8, 65, 68] };
        let layouts: &[ForwardLayout] = if name == "paper" {
            &[
                GPU_FORWARD,
                CPU_FORWARD,
                ForwardLayout { workgroup_size: 8, column_quads: 1, trace: TraceLayout::striped(12) },
                ForwardLayout { workgroup_size: 64, column_quads: 3, trace: TraceLayout::striped(8) },
            ]
        } else {
            &[GPU_FORWARD, CPU_FORWARD, ForwardLayout { trace: TraceLayout::striped(8), ..CPU_FORWARD }]
        };
        for &n in sizes {
            for batch in BATCHES {
                for step in [1u32, 2, 4] {
                    let seed = 1000 * n as u64 + 10 * batch as u64 + step as u64;
                    let mut vec4_outputs = Vec::new();
                    for &layout in layouts {
                        for kernel in forward_step_inputs(&spec, n, batch, step, 4, seed).kernels() {
                            if kernel == forward_step::KERNEL.name && layout.column_quads != 1 {
                                continue; // the scalar kernel has no column quads
                            }
                            let out = check_forward_step(name, &spec, forward_step_inputs(&spec, n, batch, step, 4, seed), kernel, layout);
                            if kernel != forward_step::KERNEL.name {
                                vec4_outputs.push((format!("{kernel} {layout:?}"), out));
                            }
                            vec4_cases += (kernel == forward_step::KERNEL_VEC4.name && layout == GPU_FORWARD) as u32;
                            subgroup_cases += (kernel == forward_step::KERNEL_VEC4_SUBGROUP.name && layout == GPU_FORWARD) as u32;
                        }
                    }
                    if let Some(((first, first_out), others)) = vec4_outputs.split_first() {
                        for (other, out) in others {
                            let what = format!("{name} N={n} B={batch} t={step}: {first} and {other}");
                            assert!(same_bits(&first_out[1], &out[1]), "{what}: the traces differ");
                            assert!(same_bits(&first_out[2], &out[2]), "{what}: the activations differ");
                        }
                    }
                }
            }
        }
    }
    assert_eq!(vec4_cases, 3 * 3 * (3 + 2 * 5), "forward_step_vec4 ran at every size that is a multiple of 4");
    assert_eq!(subgroup_cases, vec4_cases, "forward_step_vec4_subgroup ran wherever forward_step_vec4 did");
}

/// Whether two outputs hold the same bits (NaN where both are NaN).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

/// One unsplit step of `kernel` on the GPU, in `layout`, against cpu::forward_step; returns the
/// buffers as the kernel left them.
fn check_forward_step(name: &str, spec: &Plasticity, inputs: ForwardStepInputs, kernel: &str, layout: ForwardLayout) -> Vec<Vec<f32>> {
    let out = inputs.run_on_gpu(spec, &[0.0; 4], kernel, layout);
    let ForwardStepInputs { p, params, trace, activations, clamp, modulation } = inputs;
    let (n, batch, step) = (p.n, p.batch, p.step);
    let (nn, row) = ((n * n) as usize, (batch * n) as usize);
    let (mut trace_ref, mut act_ref) = (trace.clone(), activations.clone());
    cpu::forward_step(spec, &p, &params, &mut trace_ref, &mut act_ref, &clamp, &modulation, &mut []);
    let ctx = format!("{kernel} {name} N={n} B={batch} t={step} {layout:?}");
    // The trace update is the same few f32 operations on both sides (up to FMA contraction).
    assert_close(&format!("{ctx} trace"), &out[1], &to_f64(&trace_ref), 1e-6, 1e-6);
    // x(t): an f32 sum of N <= 260 terms of magnitude <= ~3 against an f64 sum; rounding
    // stays below N * 2^-24 * 3 ~ 5e-5, and tanh' <= 1.
    let done = (step as usize + 1) * row;
    assert_close(&format!("{ctx} activations"), &out[2][..done], &to_f64(&act_ref[..done]), 5e-5, 1e-5);
    if p.clamp_words == 0 {
        assert!(act_ref[done - row..done] != activations[done - row..done], "{ctx}: the twin must replace u(t) by x(t)");
    } else {
        let held = (0..row).filter(|&e| out[2][done - row + e] == activations[done - row + e]).count();
        assert!(held >= row / 4 && held < row.max(2), "{ctx}: about half the neurons are held, {held} of {row}");
    }
    assert!(out[2][done..].iter().all(|v| v.is_nan()), "{ctx}: wrote past row t");
    if let (Some(c), true) = (spec.clip, step >= 2 && n > 1) {
        let clipped = trace_ref[..batch as usize * nn].iter().filter(|v| v.abs() == c).count();
        assert!(clipped > 0 && clipped < batch as usize * nn, "{ctx}: the clip is active for some elements only ({clipped})");
    }
    out
}

/// A split step: forward_step writes S partial sums and leaves the history alone, forward_finish
/// adds them to u(t) and applies tanh and the clamp; both against their twins. The vec4 kernels in
/// a GPU's layout and a CPU adapter's (each invocation's quads share the chunk).
#[test]
fn split_forward_step_and_finish_match_cpu_twins() {
    for (name, spec) in rule_specs() {
        // 8 and 260 also run the vec4 kernels.
        for n in [2u32, 8, 65, 257, 260] {
            for batch in [1u32, 5] {
                // S = 2, an uneven split (65 = 7 * 10 - 5), and one neuron per chunk.
                for wanted in [2u32, 7, n] {
                    let kernels = [
                        (forward_step::KERNEL.name, GPU_FORWARD),
                        (forward_step::KERNEL_VEC4.name, GPU_FORWARD),
                        (forward_step::KERNEL_VEC4_SUBGROUP.name, GPU_FORWARD),
                        (forward_step::KERNEL_VEC4.name, CPU_FORWARD),
                        (forward_step::KERNEL_VEC4_SUBGROUP.name, CPU_FORWARD),
                    ];
                    for (step, (kernel, layout)) in [1u32, 2, 3].into_iter().flat_map(|s| kernels.map(|k| (s, k))) {
                        if kernel != forward_step::KERNEL.name && n % 4 != 0 {
                            continue;
                        }
                        let steps = 3;
                        let (splits, split_len) = forward_step::split(n, wanted);
                        if splits < 2 {
                            continue; // N = 1 cannot be split
                        }
                        let row = (batch * n) as usize;
                        let seed = 500 + 1000 * n as u64 + 10 * batch as u64 + step as u64 + 3 * wanted as u64;
                        let mut inputs = forward_step_inputs(&spec, n, batch, step, steps, seed);
                        (inputs.p.splits, inputs.p.split_len) = (splits, split_len);
                        let partial_sums = nan_filled(splits as usize * row);
                        assert_eq!(inputs.kernels().contains(&kernel), kernel == forward_step::KERNEL.name || n % 4 == 0);
                        let out = inputs.run_on_gpu(&spec, &partial_sums, kernel, layout);
                        let ForwardStepInputs { p, params, trace, activations, clamp, modulation } = inputs;
                        let clamp_words = p.clamp_words;
                        let (mut trace_ref, mut act_ref, mut sums_ref) = (trace.clone(), activations.clone(), partial_sums.clone());
                        cpu::forward_step(&spec, &p, &params, &mut trace_ref, &mut act_ref, &clamp, &modulation, &mut sums_ref);
                        let ctx = format!("split {kernel} {layout:?} {name} N={n} B={batch} S={splits} t={step}");
                        assert_close(&format!("{ctx} trace"), &out[1], &to_f64(&trace_ref), 1e-6, 1e-6);
                        // Chunks of <= 130 terms of magnitude <= ~3 in f32 against f64.
                        assert_close(&format!("{ctx} partial sums"), &out[5], &to_f64(&sums_ref), 5e-5, 1e-5);
                        let same = out[2].iter().zip(&activations).all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
                        assert!(same, "{ctx}: a split step leaves the history to forward_finish");

                        let fp = ForwardFinishParams { n, batch, step, splits, clamp_words, ..Default::default() };
                        let out = run_kernel(
                            "forward_finish",
                            &fp,
                            &[bytes(&sums_ref), bytes(&activations), bytemuck::cast_slice(&clamp)],
                            forward_finish::workgroups(n, batch),
                        );
                        let mut finished = activations.clone();
                        cpu::forward_finish(&fp, &sums_ref, &mut finished, &clamp);
                        let done = (step as usize + 1) * row;
                        // S f32 additions against f64, then tanh (slope <= 1).
                        assert_close(&format!("{ctx} finish"), &out[1][..done], &to_f64(&finished[..done]), 1e-5, 1e-5);
                        assert!(out[1][done..].iter().all(|v| v.is_nan()), "{ctx}: finish wrote past row t");
                        // Split and finished equals the unsplit twin.
                        let (mut t_whole, mut x_whole) = (trace.clone(), activations.clone());
                        let whole = ForwardStepParams { splits: 1, split_len: 0, ..p };
                        cpu::forward_step(&spec, &whole, &params, &mut t_whole, &mut x_whole, &clamp, &modulation, &mut []);
                        assert_close(&format!("{ctx} split = unsplit"), &finished[..done], &to_f64(&x_whole[..done]), 1e-5, 1e-5);
                    }
                }
            }
        }
    }
}

#[test]
fn modulation_forward_matches_cpu_twin() {
    for n in SIZES {
        for batch in [1u32, 3, 65] {
            let (steps, row) = (3usize, (batch * n) as usize);
            let mut r = rng(3 + 17 * n as u64 + batch as u64);
            let spec = Plasticity { modulation: Modulation::PerNeuron, ..Plasticity::PAPER };
            let (layout, params) = random_rule_params(n as u64, n, &spec);
            let activations = uniform(&mut r, (steps + 1) * row, 1.0);
            // Row 2 must be written for every batch element; the other rows must not be touched.
            let modulation = nan_filled((steps + 1) * batch as usize);
            let p = ModulationForwardParams { n, batch, step: 2, mod_offset: layout.mod_offset };
            let out = run_kernel(
                "modulation_forward",
                &p,
                &[bytes(&params), bytes(&activations), bytes(&modulation)],
                modulation_forward::workgroups(batch),
            );
            let mut m_ref = modulation.clone();
            cpu::modulation_forward(&p, &params, &activations, &mut m_ref);
            let ctx = format!("modulation_forward N={n} B={batch}");
            let row2 = 2 * batch as usize..3 * batch as usize;
            // A dot product of N <= 257 terms of magnitude <= 1/sqrt(N) in f32 vs f64, then tanh.
            assert_close(&ctx, &out[2][row2.clone()], &to_f64(&m_ref[row2.clone()]), 1e-5, 1e-5);
            assert!(out[2].iter().enumerate().all(|(k, v)| row2.contains(&k) != v.is_nan()), "{ctx}: wrote only row t");
        }
    }
}

/// trace_update at every size, trace_update_vec4 too at 4, 64 and 68 (4, 1024 and 1156 quads at B = 1:
/// less than one, exactly four and four and a half workgroups of 256); the trace's rows whole and in
/// stripes of 8 columns (one stripe at N = 4, a last one of 1 at N = 17 and 65).
#[test]
fn trace_update_matches_cpu_twin() {
    let mut vec4_cases = 0;
    for (name, spec) in rule_specs() {
        for n in [1u32, 4, 17, 64, 65, 68] {
            let cases = [1u32, 3].into_iter().flat_map(|b| [(b, false), (b, true)]);
            for ((batch, vec4), trace_layout) in cases.flat_map(|c| [(c, TraceLayout::ROWS), (c, TraceLayout::striped(8))]) {
                if vec4 && !runs_vec4_kernels(n, &spec) {
                    continue;
                }
                vec4_cases += vec4 as u32;
                let step = 3u32;
                let (nn, row) = ((n * n) as usize, (batch * n) as usize);
                let mut r = rng(5 + 13 * n as u64 + batch as u64);
                let (layout, params) = random_rule_params(n as u64 + 1, n, &spec);
                let activations = uniform(&mut r, 4 * row, 1.0);
                let modulation = uniform(&mut r, 4 * batch as usize, 0.9);
                let slot = if spec.retroactive { 2 * batch as usize * nn } else { batch as usize * nn };
                // Three slots: the source in slot 1, the destination slot 2 must be written in full,
                // slot 0 must stay as it is.
                let mut traces = uniform(&mut r, 2 * slot, 1.0);
                traces.extend(nan_filled(slot));
                let (grid, row_stride) = trace_update::grid(n, batch, vec4);
                let p = TraceUpdateParams {
                    n,
                    batch,
                    step,
                    row_stride,
                    eta_offset: layout.eta_offset,
                    mod_offset: layout.mod_offset,
                    src_offset: slot as u32,
                    dst_offset: 2 * slot as u32,
                    elig_offset: if spec.retroactive { batch * n * n } else { 0 },
                    ..Default::default()
                };
                let out = run_rule_kernel(
                    trace_update::kernel_name(vec4),
                    &spec,
                    &[trace_layout.constant()],
                    &p,
                    &[bytes(&params), bytes(&activations), bytes(&modulation), bytes(&trace_layout.store(n, &traces))],
                    grid,
                );
                let out_traces = trace_layout.load(n, &out[3]);
                let mut t_ref = traces.clone();
                cpu::trace_update(&spec, &p, &params, &activations, &modulation, &mut t_ref);
                let ctx = format!("{} {name} N={n} B={batch} {trace_layout:?}", trace_update::kernel_name(vec4));
                // The same f32 operations on both sides, up to FMA contraction.
                assert_close(&ctx, &out_traces, &to_f64(&t_ref), 1e-6, 1e-6);
                assert_eq!(out_traces[..2 * slot], traces[..2 * slot], "{ctx}: other slots untouched");
            }
        }
    }
    assert_eq!(vec4_cases, 6 * 3 * 2 * 2, "trace_update_vec4 ran at every size that is a multiple of 4, in both layouts");
}

#[test]
fn backward_activation_matches_cpu_twin() {
    for n in SIZES {
        for batch in BATCHES {
            for (loss_slot, modulated, heads) in [(LOSS_NONE, false, false), (1, false, false), (1, true, false), (1, false, true)] {
                let (steps, tiles) = (3u32, trace_tiles(n, TRACE_TILE));
                let row = (batch * n) as usize;
                let mut r = rng(7 + 100 * n as u64 + batch as u64);
                let spec = if modulated { Plasticity { modulation: Modulation::Simple, ..Plasticity::PAPER } } else { Plasticity::PAPER };
                let (layout, params) = random_rule_params(n as u64, n, &spec);
                let pl = PartialsLayout::new(n, batch, &spec, 1, TRACE_TILE, 1).with_heads(n, batch, 2);
                let activations = uniform(&mut r, (steps as usize + 1) * row, 1.0);
                let targets = uniform(&mut r, 2 * row, 1.0);
                // Row and column sums, dz_b and the heads' loss gradient are inputs; ga(t) must be
                // written in full.
                let mut partials = uniform(&mut r, pl.len as usize, 1.0);
                partials[pl.ga_ring as usize..pl.loss_grad as usize].fill(f32::NAN);
                let (clamp, clamp_words) = random_clamp(&mut r, loss_slot == 1, steps as usize, batch, n);
                let p = BackwardActivationParams {
                    n,
                    batch,
                    step: 2,
                    n_tiles: tiles,
                    loss_slot,
                    loss_scale: 0.5,
                    clamp_words,
                    mod_offset: layout.mod_offset,
                    mod_grad_offset: if modulated { pl.mod_grad } else { MOD_NONE },
                    preact_offset: pl.ga_ring,
                    loss_grad_offset: if heads { pl.loss_grad } else { LOSS_NONE },
                    ..Default::default()
                };
                let out = run_kernel(
                    "backward_activation",
                    &p,
                    &[bytes(&activations), bytes(&targets), bytemuck::cast_slice(&clamp), bytes(&params), bytes(&partials)],
                    backward_activation::workgroups(n, batch),
                );
                let mut p_ref = partials.clone();
                cpu::backward_activation(&p, &activations, &targets, &clamp, &params, &mut p_ref);
                // A sum of 2 * ceil(N/16) <= 34 values of magnitude <= 1 in f32 order vs f64.
                let ctx =
                    format!("backward_activation N={n} B={batch} slot={loss_slot} clamped={} modulated={modulated}", clamp_words != 0);
                assert_close(&ctx, &out[4], &to_f64(&p_ref), 1e-5, 1e-5);
            }
        }
    }
}

/// One backward_trace step (the vec4 kernel with `vec4`, its column values hoisted with `hoist`) at
/// `batch_slots` batch elements per pass over blocks of side `tile`, in workgroups of `workgroup`
/// invocations, `column_lanes` of which interleave their columns, the trace and its gradient stored
/// in `trace_layout`'s order, against the twin; a reversed step finds the trace where `reversal` says
/// (the slot's values are random either way).
#[allow(clippy::too_many_arguments)]
fn check_backward_trace(
    name: &str,
    spec: &Plasticity,
    n: u32,
    batch: u32,
    groups: u32,
    step: u32,
    vec4: bool,
    batch_slots: u32,
    hoist: bool,
    tile: u32,
    (workgroup, column_lanes, trace_layout): (u32, u32, TraceLayout),
    reversal: ReversalStep,
) {
    let spec = *spec;
    let (steps, tiles) = (3usize, trace_tiles(n, tile) as usize);
    let (nn, row) = ((n * n) as usize, (batch * n) as usize);
    let mut r = rng(31 + 1000 * n as u64 + 10 * batch as u64 + step as u64 + 7 * groups as u64);
    let (layout, params) = random_rule_params(n as u64 + 5, n, &spec);
    // A ring of three ga rows: step t reads the one in slot t - 1.
    let pl = PartialsLayout::new(n, batch, &spec, groups, tile, 3);
    // x(0) .. x(steps + 1): a step that finds the gradient ahead reads x(t + 1).
    let activations = uniform(&mut r, (steps + 2) * row, 1.0);
    let modulation = uniform(&mut r, (steps + 1) * batch as usize, 0.9);
    let reverse = spec.reversible();
    // Reversal works in place on one slot; otherwise H(t-1) is in slot 0 and H(t) in slot 1.
    let slot = if spec.retroactive { 2 * batch as usize * nn } else { batch as usize * nn };
    let slots = if reverse { 1 } else { 2 };
    let trace = uniform(&mut r, slots * slot, 1.0);
    let trace_grad = uniform(&mut r, slot, 1.0);
    let grads = uniform(&mut r, layout.count as usize, 1.0); // accumulated into
    // Row, column (and rate) sums: every element must be written; eta and alpha sums:
    // accumulated into; ga(t) is an input.
    let mut partials = uniform(&mut r, pl.len as usize, 1.0);
    partials[..pl.rate as usize].fill(f32::NAN);
    partials[pl.rate as usize..pl.eta as usize].fill(f32::NAN);
    let p = BackwardTraceParams {
        n,
        batch,
        step,
        n_tiles: tiles as u32,
        w_offset: layout.w_offset,
        alpha_offset: layout.alpha_offset,
        eta_offset: layout.eta_offset,
        mod_offset: layout.mod_offset,
        cur_offset: ((slots - 1) * slot) as u32,
        prev_offset: 0,
        elig_offset: if spec.retroactive { batch * n * n } else { 0 },
        alpha_grad_offset: pl.alpha,
        rate_partials_offset: pl.rate,
        eta_partials_offset: pl.eta,
        preact_offset: pl.ga_of_step(n, batch, step),
        groups,
        group_grad_offset: pl.group_grads,
        trace_ahead: reversal.ahead as u32,
        skip_store: reversal.skip_store as u32,
        grad_ahead: reversal.grad_ahead as u32,
        skip_grad_store: reversal.skip_grad_store as u32,
        // The ring of three: ga(t + 1) sits in another slot than ga(t).
        next_preact_offset: pl.ga_of_step(n, batch, step + 1),
    };
    let mut constants = backward_trace::constants(vec4, workgroup, reverse, batch_slots, tile, true, column_lanes, hoist);
    constants.push(trace_layout.constant());
    let (stored_trace, stored_grad) = (trace_layout.store(n, &trace), trace_layout.store(n, &trace_grad));
    let mut out = run_rule_kernel(
        backward_trace::kernel_name(vec4),
        &spec,
        &constants,
        &p,
        &[
            bytes(&params),
            bytes(&activations),
            bytes(&modulation),
            bytes(&stored_trace),
            bytes(&stored_grad),
            bytes(&grads),
            bytes(&partials),
        ],
        backward_trace::workgroups(n, groups, tile, workgroup),
    );
    // Back in row-major order, as the twin keeps them.
    out[3] = trace_layout.load(n, &out[3]);
    out[4] = trace_layout.load(n, &out[4]);
    let (mut t_ref, mut g_ref, mut gr_ref, mut p_ref) = (trace.clone(), trace_grad.clone(), grads.clone(), partials.clone());
    cpu::backward_trace(
        &spec,
        reverse,
        backward_trace::column_width(vec4),
        tile,
        column_lanes,
        &p,
        &params,
        &activations,
        &modulation,
        &mut t_ref,
        &mut g_ref,
        &mut gr_ref,
        &mut p_ref,
    );
    let ctx = format!(
        "{} {name} N={n} B={batch} Z={groups} t={step} batch slots {batch_slots}{} tile {tile} workgroup {workgroup} column lanes {column_lanes} {trace_layout:?} {reversal:?}",
        backward_trace::kernel_name(vec4),
        if hoist { " hoisted columns" } else { "" }
    );
    // Elementwise f32 updates, identical up to FMA contraction; the reversal divides by
    // 1 - r >= 0.6, so allow a few ulps.
    assert_close(&format!("{ctx} trace"), &out[3], &to_f64(&t_ref), 1e-6, 1e-6);
    assert_close(&format!("{ctx} trace_grad"), &out[4], &to_f64(&g_ref), 1e-6, 1e-6);
    // Batch sums of <= 5 products, accumulated onto O(1) values.
    assert_close(&format!("{ctx} grads"), &out[5], &to_f64(&gr_ref), 2e-5, 1e-5);
    // Tile sums of <= 16 terms of magnitude <= ~4 in a tree vs f64 (rows, columns, rates);
    // the eta sums gather 16 * B terms per element, the rest is untouched input.
    assert_close(&format!("{ctx} partials"), &out[6], &to_f64(&p_ref), 1e-4, 1e-5);
    if (!reverse || reversal.skip_store) && step >= 2 {
        assert_eq!(out[3], trace, "{ctx}: the trace slots are read-only when recomputing or skipping the store");
    }
    if reverse && !reversal.skip_store && step >= 2 {
        assert!(out[3] != trace, "{ctx}: the reversed step stored nothing");
    }
    if reverse && reversal.skip_grad_store {
        assert_eq!(out[4], trace_grad, "{ctx}: the trace gradient is read-only when skipping its store");
    } else if reverse {
        // (Elsewhere a rule may leave it as it was: a clip, or no plastic self-connection at N = 1.)
        assert!(out[4] != trace_grad, "{ctx}: the reversed step stored no trace gradient");
    }
    if groups > 1 {
        assert_eq!(out[5], grads, "{ctx}: batch groups accumulate in partials, not in grads");
    }
}

/// The backward trace kernels' workgroup size, column lanes and trace order in the tests that vary
/// the rest, as a CPU adapter runs them (8 invocations, contiguous columns, the trace in stripes,
/// here of 8 columns so that the small sizes have several; the vec4 kernel's column values hoisted
/// too) or as a GPU does (64, columns interleaved over a warp, rows whole), so that no new pipeline
/// variant is compiled for each (`backward_trace_blocks_map_to_invocations_at_any_workgroup_size`
/// crosses the sizes with both kernels).
fn layout_for(cpu: bool) -> (u32, u32, TraceLayout) {
    if cpu { (8, 1, TraceLayout::striped(8)) } else { (64, TRACE_LANES, TraceLayout::ROWS) }
}

/// backward_trace at every size, and backward_trace_vec4 too where N is a multiple of 4, with its
/// column values loaded per four rows and hoisted per pass (HOIST_COLUMNS), both laid out as on a
/// GPU and as on a CPU adapter (`layout_for`): 4 and 8 (one and two quads), 64, 68 and 260 (65
/// quads over 17 lanes, the last three with three quads), 532 (a second column group of 512
/// columns, two lanes wide).
#[test]
fn backward_trace_matches_cpu_twin() {
    let mut vec4_cases = 0;
    for (name, spec) in rule_specs() {
        // 530: two column groups, the second two lanes wide.
        let sizes: &[u32] = if name == "paper" { &[1, 4, 63, 64, 65, 257, 260, 530, 532] } else { &[1, 8, 17, 65, 68] };
        for &n in sizes {
            // Batch groups: one; two, the first taking 5 elements in two passes of CHUNK = 4; three of
            // three; as many as the batch.
            for (batch, groups) in [(1u32, 1u32), (5, 1), (9, 2), (9, 3), (6, 6)] {
                let cases = [(false, false), (false, true), (true, false), (true, true)];
                for (step, vec4, cpu) in [1u32, 2, 3].into_iter().flat_map(|s| cases.map(|(v, c)| (s, v, c))) {
                    if vec4 && !runs_vec4_kernels(n, &spec) {
                        continue;
                    }
                    vec4_cases += vec4 as u32;
                    let slots = backward_trace::batch_slots(batch, groups);
                    let (hoist, reversal) = (vec4 && cpu, ReversalStep::default());
                    check_backward_trace(name, &spec, n, batch, groups, step, vec4, slots, hoist, TRACE_TILE, layout_for(cpu), reversal);
                }
            }
        }
    }
    assert_eq!(vec4_cases, 2 * 3 * 5 * (4 + 5 * 2), "backward_trace_vec4 ran both ways at every size that is a multiple of 4");
}

/// Fewer batch elements per pass than the default (KernelTuning::backward_batch_slots): more passes
/// over each block, the same results.
#[test]
fn backward_trace_with_fewer_batch_slots_matches_cpu_twin() {
    let specs = rule_specs();
    // The paper's rule, per-element modulated rates, and the eligibility trace (two traces per element).
    for (name, spec) in
        specs.iter().filter(|(name, _)| ["paper", "decay simple modulation"].contains(name) || name.starts_with("retroactive"))
    {
        for (n, vec4) in [(64, false), (64, true), (65, false)] {
            for (batch, groups) in [(5u32, 1u32), (9, 2)] {
                for slots in 1..backward_trace::CHUNK {
                    // The vec4 kernel with its column values loaded per four rows and hoisted.
                    for hoist in [false, true] {
                        if (hoist && !vec4) || (vec4 && !runs_vec4_kernels(n, spec)) {
                            continue;
                        }
                        let (layout, reversal) = (layout_for(false), ReversalStep::default());
                        check_backward_trace(name, spec, n, batch, groups, 2, vec4, slots, hoist, TRACE_TILE, layout, reversal);
                    }
                }
            }
        }
    }
}

/// Blocks of side 4 and 8 (KernelTuning::backward_tile): more invocations, each owning fewer rows and
/// columns, so more partial sums per neuron; every rule, both kernels, a column group narrower than
/// the rest (N = 132 at side 4, 260 at side 8) and reversed steps that find the trace ahead.
#[test]
fn backward_trace_with_smaller_tiles_matches_cpu_twin() {
    let mut cases = 0;
    for (name, spec) in rule_specs() {
        for tile in TRACE_TILE_SIDES.into_iter().filter(|&t| t != TRACE_TILE) {
            for n in [1u32, 5, 8, 9, 64, 65, 132, 260] {
                for (batch, groups) in [(1u32, 1u32), (9, 2)] {
                    let variants = [(2u32, false, false), (3, false, false), (3, false, true), (2, true, true), (3, true, false)];
                    for (step, vec4, cpu) in variants {
                        if vec4 && !runs_vec4_kernels(n, &spec) {
                            continue;
                        }
                        let slots = backward_trace::batch_slots(batch, groups);
                        // At step 3 a reversed step finds H(t+1) and G(t+2) and stores both.
                        let ahead = step == 3 && spec.reversible();
                        let reversal = ReversalStep { ahead, grad_ahead: ahead, ..ReversalStep::default() };
                        // Rows of 1 to 65 blocks: workgroups of 8 take blocks of several rows at once.
                        let hoist = vec4 && cpu;
                        check_backward_trace(name, &spec, n, batch, groups, step, vec4, slots, hoist, tile, layout_for(cpu), reversal);
                        cases += 1;
                    }
                }
            }
        }
    }
    assert!(cases >= 6 * 2 * 8 * 2 * 3, "{cases} cases");
}

/// The blocks of the trace map to invocations through a flat index over the grid's x and y
/// (`backward_trace::workgroups`): both kernels at workgroup sizes of 1, 8 and 64 and rows of 1 to
/// 33 blocks, and a grid of more than 65535 workgroups, whose flat index crosses into a second row.
#[test]
fn backward_trace_blocks_map_to_invocations_at_any_workgroup_size() {
    let (name, spec) = ("paper", Plasticity::PAPER);
    for workgroup in [1u32, 8, 64] {
        for n in [4u32, 63, 64, 260, 520] {
            for vec4 in [false, true] {
                if vec4 && !runs_vec4_kernels(n, &spec) {
                    continue;
                }
                let reversal = ReversalStep { ahead: true, grad_ahead: true, ..ReversalStep::default() };
                check_backward_trace(
                    name,
                    &spec,
                    n,
                    9,
                    2,
                    3,
                    vec4,
                    backward_trace::batch_slots(9, 2),
                    vec4,
                    TRACE_TILE,
                    // Contiguous columns and stripes of 8 in the CPU adapter's workgroups of 8;
                    // interleaved columns over stripes of 12 (whose edges split a lane group) in
                    // workgroups of 1, with the rows whole in workgroups of 64.
                    match workgroup {
                        8 => layout_for(true),
                        1 => (1, TRACE_LANES, TraceLayout::striped(12)),
                        _ => layout_for(false),
                    },
                    reversal,
                );
            }
        }
    }
    // 725^2 blocks of side 4 in workgroups of 8: 65704 workgroups, a grid of two rows (and a row
    // width that is not a whole number of block rows).
    assert_eq!(backward_trace::workgroups(2900, 1, 4, 8)[1], 2, "a two-row grid");
    check_backward_trace(name, &spec, 2900, 1, 1, 2, true, 1, true, 4, layout_for(true), ReversalStep::default());
}

/// The rules a backward sweep reverses (`Plasticity::reversible`): each update rule with one eta and
/// no clip.
fn reversible_specs() -> Vec<(&'static str, Plasticity)> {
    let p = Plasticity::PAPER;
    let specs = vec![
        ("paper", p),
        ("oja", Plasticity { rule: Rule::Oja, ..p }),
        ("additive alpha per neuron", Plasticity { rule: Rule::Additive, alpha: AlphaShape::PerNeuron, ..p }),
    ];
    assert!(specs.iter().all(|(_, spec)| spec.reversible()));
    specs
}

/// A reversed step that finds H(t+1) in the slot (`trace_ahead`) or leaves the slot as it is
/// (`skip_store`), or finds G(t+2) in the trace gradient (`grad_ahead`) or leaves it as it is
/// (`skip_grad_store`), both kernels against the twin, for each rule that reverses.
#[test]
fn backward_trace_ahead_or_skipping_its_store_matches_cpu_twin() {
    let mut cases = 0;
    let (t, f) = (true, false);
    // (ahead, skip_store, grad_ahead, skip_grad_store): each flag alone, and pairs the schedule makes.
    let flags = [(t, f, f, f), (f, t, f, f), (t, t, f, f), (f, f, t, f), (f, f, f, t), (f, f, t, t), (t, f, t, f), (f, t, f, t)];
    for (name, spec) in reversible_specs() {
        for n in [1u32, 8, 63, 64, 65, 260] {
            for (batch, groups) in [(1u32, 1u32), (5, 1), (9, 2)] {
                for step in [1u32, 2, 3] {
                    for vec4 in [false, true] {
                        if vec4 && !runs_vec4_kernels(n, &spec) {
                            continue;
                        }
                        let slots = backward_trace::batch_slots(batch, groups);
                        // Laid out as on a CPU adapter (the vec4 kernel's column values hoisted) at
                        // steps 1 and 3, as on a GPU at step 2.
                        let cpu = step != 2;
                        let hoist = vec4 && cpu;
                        for (ahead, skip_store, grad_ahead, skip_grad_store) in flags {
                            let reversal = ReversalStep { ahead, skip_store, grad_ahead, skip_grad_store };
                            let layout = layout_for(cpu);
                            check_backward_trace(name, &spec, n, batch, groups, step, vec4, slots, hoist, TRACE_TILE, layout, reversal);
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    // Six sizes of the scalar kernel and three of the vec4 one, three batches, three steps, eight flag sets.
    assert_eq!(cases, 3 * 9 * 3 * 3 * 8, "every rule ran at every size");
}

/// A reversed step of one batch group over one slot (trace and gradient at offset 0) and blocks of
/// side 16, no flags set: what the twin-only tests below start from.
fn twin_step_params(n: u32, batch: u32, step: u32, layout: &ParamLayout, pl: &PartialsLayout) -> BackwardTraceParams {
    BackwardTraceParams {
        n,
        batch,
        step,
        n_tiles: trace_tiles(n, TRACE_TILE),
        w_offset: layout.w_offset,
        alpha_offset: layout.alpha_offset,
        eta_offset: layout.eta_offset,
        mod_offset: layout.mod_offset,
        alpha_grad_offset: pl.alpha,
        rate_partials_offset: pl.rate,
        eta_partials_offset: pl.eta,
        preact_offset: pl.ga_of_step(n, batch, step),
        next_preact_offset: pl.ga_of_step(n, batch, step + 1),
        ..Default::default()
    }
}

/// One reversed step of the scalar twin (blocks of TRACE_TILE, columns interleaved over a warp) on
/// `[trace, trace_grad, grads, partials]`, returned updated.
fn twin_scalar_step(
    spec: &Plasticity,
    p: &BackwardTraceParams,
    params: &[f32],
    activations: &[f32],
    modulation: &[f32],
    [mut t, mut g, mut gr, mut pa]: [Vec<f32>; 4],
) -> [Vec<f32>; 4] {
    cpu::backward_trace(spec, true, 1, TRACE_TILE, TRACE_LANES, p, params, activations, modulation, &mut t, &mut g, &mut gr, &mut pa);
    [t, g, gr, pa]
}

/// The twin's `trace_ahead` against its own definition: a step that finds U(H(t)) (step t's update
/// of H(t), as the forward pass formed H(t+1)) gives what the step that finds H(t) gives, up to the
/// rounding of the update and its inversion.
#[test]
fn backward_trace_twin_ahead_recovers_the_trace_of_its_step() {
    for (name, spec) in reversible_specs() {
        let (n, batch, step) = (9u32, 3u32, 2u32);
        let mut r = rng(77 + n as u64);
        let (layout, params) = random_rule_params(n as u64 + 9, n, &spec);
        let pl = PartialsLayout::new(n, batch, &spec, 1, TRACE_TILE, 3);
        let row = (batch * n) as usize;
        let activations = uniform(&mut r, 4 * row, 1.0);
        let modulation = uniform(&mut r, 4 * batch as usize, 0.9);
        let slot = (batch * n * n) as usize;
        let h_t = uniform(&mut r, slot, 1.0);
        // H(t+1) = U(H(t)) with pre = x_i(t-1), post = x_j(t), step t's rate: trace_update's step t + 1.
        let mut both = [h_t.clone(), vec![f32::NAN; slot]].concat();
        let (_, row_stride) = trace_update::grid(n, batch, false);
        let update = TraceUpdateParams {
            n,
            batch,
            step: step + 1,
            row_stride,
            eta_offset: layout.eta_offset,
            mod_offset: layout.mod_offset,
            src_offset: 0,
            dst_offset: slot as u32,
            ..Default::default()
        };
        cpu::trace_update(&spec, &update, &params, &activations, &modulation, &mut both);
        let h_next = both[slot..].to_vec();
        let trace_grad = uniform(&mut r, slot, 1.0);
        let grads = uniform(&mut r, layout.count as usize, 1.0);
        let partials = uniform(&mut r, pl.len as usize, 1.0);
        let run = |trace: &[f32], ahead: bool| {
            let p = BackwardTraceParams { trace_ahead: ahead as u32, ..twin_step_params(n, batch, step, &layout, &pl) };
            let state = [trace.to_vec(), trace_grad.clone(), grads.clone(), partials.clone()];
            twin_scalar_step(&spec, &p, &params, &activations, &modulation, state)
        };
        let (stored, ahead) = (run(&h_t, false), run(&h_next, true));
        // H(t) through an update and its inversion: a few ulps of values <= ~3, carried through
        // products of O(1) terms into every output.
        for (k, what) in ["trace", "trace_grad", "grads", "partials"].iter().enumerate() {
            assert_close(&format!("{name}: the twin ahead of its step, {what}"), &ahead[k], &to_f64(&stored[k]), 1e-5, 1e-5);
        }
    }
}

/// The twin's `grad_ahead` against its own definition: a step that finds G(t+2) and step t+1's
/// ga(t+1) gives the same bits as the step fed the G(t+1) that step t+1 stored (the same f32
/// operations), and a step that skips the store leaves the gradient as it found it.
#[test]
fn backward_trace_twin_grad_ahead_recovers_the_gradient_of_the_step_after() {
    for (name, spec) in reversible_specs() {
        let (n, batch, step) = (9u32, 3u32, 2u32);
        let mut r = rng(91 + n as u64);
        let (layout, params) = random_rule_params(n as u64 + 11, n, &spec);
        let pl = PartialsLayout::new(n, batch, &spec, 1, TRACE_TILE, 3);
        let row = (batch * n) as usize;
        let activations = uniform(&mut r, 4 * row, 1.0);
        let modulation = uniform(&mut r, 4 * batch as usize, 0.9);
        let slot = (batch * n * n) as usize;
        let (trace, g_after) = (uniform(&mut r, slot, 1.0), uniform(&mut r, slot, 1.0));
        let grads = uniform(&mut r, layout.count as usize, 1.0);
        let partials = uniform(&mut r, pl.len as usize, 1.0); // the ring holds ga(2) and ga(3)
        let run = |step: u32, trace_grad: &[f32], grad_ahead: bool, skip_grad_store: bool| {
            let p = BackwardTraceParams {
                grad_ahead: grad_ahead as u32,
                skip_grad_store: skip_grad_store as u32,
                ..twin_step_params(n, batch, step, &layout, &pl)
            };
            let state = [trace.clone(), trace_grad.to_vec(), grads.clone(), partials.clone()];
            twin_scalar_step(&spec, &p, &params, &activations, &modulation, state)
        };
        // Step t + 1 stores G(t+1) from G(t+2); step t from it, and step t ahead from G(t+2) itself.
        let g_next = run(step + 1, &g_after, false, false)[1].clone();
        let (stored, ahead) = (run(step, &g_next, false, false), run(step, &g_after, true, false));
        assert!(g_next != g_after && stored[1] != g_next, "{name}: each step updated the gradient");
        for (k, what) in ["trace", "trace_grad", "grads", "partials"].iter().enumerate() {
            assert!(ahead[k] == stored[k], "{name}: the twin with the gradient ahead differs in {what}");
        }
        assert_eq!(run(step, &g_after, true, true)[1], g_after, "{name}: skipping the store leaves the gradient");
    }
}

/// weight_gradient at every size, and weight_gradient_vec4 where N is a multiple of 4 (12: one
/// block with one column quad in its second half; 68: a last block of one row quad and one column
/// quad): windows of one step, of five from step 1, and of three further in.
#[test]
fn weight_gradient_matches_cpu_twin() {
    let mut vec4_cases = 0;
    for n in [1u32, 4, 12, 63, 64, 65, 68, 257] {
        for batch in [1u32, 3] {
            for (first_step, steps) in [(1u32, 1u32), (1, 5), (4, 3)] {
                for vec4 in [false, true] {
                    if vec4 && n % 4 != 0 {
                        continue;
                    }
                    vec4_cases += vec4 as u32;
                    let row = (batch * n) as usize;
                    let mut r = rng(53 + 1000 * n as u64 + 10 * batch as u64 + first_step as u64);
                    // The history up to x(first_step + steps - 1), one row more than the window reads.
                    let activations = uniform(&mut r, (first_step + steps) as usize * row, 1.0);
                    // The window's ga rows behind 12 unrelated floats (PartialsLayout keeps the ring on a
                    // multiple of 4), and dw behind 8 other parameters with 3 after it.
                    let (ga_offset, w_offset) = (12u32, 8u32);
                    let partials = uniform(&mut r, ga_offset as usize + steps as usize * row + 5, 1.0);
                    let grads = uniform(&mut r, (w_offset + n * n + 3) as usize, 1.0); // accumulated into
                    let p = WeightGradientParams { n, batch, first_step, steps, ga_offset, w_offset, ..Default::default() };
                    let kernel = weight_gradient::kernel_name(vec4);
                    let out =
                        run_kernel(kernel, &p, &[bytes(&activations), bytes(&partials), bytes(&grads)], weight_gradient::workgroups(n));
                    let mut g_ref = grads.clone();
                    cpu::weight_gradient(&p, &activations, &partials, &mut g_ref);
                    let ctx = format!("{kernel} N={n} B={batch} steps {first_step}..{}", first_step + steps - 1);
                    // Sums of <= 15 products of magnitude <= 1 in f32 against f64, added to O(1) values.
                    assert_close(&ctx, &out[2], &to_f64(&g_ref), 1e-5, 1e-5);
                    let w_end = (w_offset + n * n) as usize;
                    assert_eq!(out[2][..w_offset as usize], grads[..w_offset as usize], "{ctx}: parameters before w untouched");
                    assert_eq!(out[2][w_end..], grads[w_end..], "{ctx}: parameters after w untouched");
                }
            }
        }
    }
    assert_eq!(vec4_cases, 4 * 2 * 3, "weight_gradient_vec4 ran at every size that is a multiple of 4");
}

#[test]
fn modulation_backward_matches_cpu_twin() {
    for n in SIZES {
        for batch in [1u32, 3] {
            for fan_out in [false, true] {
                let spec = Plasticity { modulation: if fan_out { Modulation::PerNeuron } else { Modulation::Simple }, ..Plasticity::PAPER };
                let (layout, params) = random_rule_params(n as u64 + 9, n, &spec);
                let pl = PartialsLayout::new(n, batch, &spec, 1, TRACE_TILE, 1);
                let mut r = rng(41 + n as u64 + batch as u64);
                let row = (batch * n) as usize;
                let activations = uniform(&mut r, 4 * row, 1.0);
                let modulation = uniform(&mut r, 4 * batch as usize, 0.9);
                // Rate partials are inputs, the accumulators are added to, dz_b must be written.
                let mut partials = uniform(&mut r, pl.len as usize, 1.0);
                partials[pl.mod_grad as usize..(pl.mod_grad + batch) as usize].fill(f32::NAN);
                let p = ModulationBackwardParams {
                    n,
                    batch,
                    step: 2,
                    n_tiles: trace_tiles(n, TRACE_TILE),
                    mod_offset: layout.mod_offset,
                    rate_partials_offset: pl.rate,
                    acc_offset: pl.modulator,
                    mod_grad_offset: pl.mod_grad,
                    fan_out: fan_out as u32,
                    mod_len: spec.modulator_len(n),
                    ..Default::default()
                };
                let out = run_kernel(
                    "modulation_backward",
                    &p,
                    &[bytes(&params), bytes(&activations), bytes(&modulation), bytes(&partials)],
                    modulation_backward::workgroups(batch),
                );
                let mut p_ref = partials.clone();
                cpu::modulation_backward(&p, &params, &activations, &modulation, &mut p_ref);
                // dM sums N * ceil(N/16) <= 4369 partials of magnitude <= 1 (times |u| <= 1) in a
                // tree, f32 vs f64: ~1e-4 relative to sqrt of that count.
                let ctx = format!("modulation_backward N={n} B={batch} fan_out={fan_out}");
                assert_close(&ctx, &out[3], &to_f64(&p_ref), 1e-3, 1e-4);
            }
        }
    }
}

#[test]
fn input_projection_matches_cpu_twin() {
    for n in SIZES {
        for (batch, width) in [(1u32, 1u32), (3, 7), (2, 65)] {
            let (steps, row) = (3u32, (batch * n) as usize);
            let mut r = rng(91 + n as u64 + width as u64);
            // [unrelated values, w_in (D, N), b_in (N)]
            let params = uniform(&mut r, 5 + ((width + 1) * n) as usize, 1.0);
            let inputs = uniform(&mut r, (steps * batch * width) as usize, 1.0);
            // Row 0 (x(0)) must stay, rows 1..=T must all be written.
            let mut activations = vec![0.25; row];
            activations.extend(nan_filled(steps as usize * row));
            let (grid, row_stride) = input_projection::grid(n, batch, steps);
            let p = InputProjectionParams { n, batch, steps, width, w_in_offset: 5, row_stride, ..Default::default() };
            let out = run_kernel("input_projection", &p, &[bytes(&params), bytes(&inputs), bytes(&activations)], grid);
            let mut a_ref = activations.clone();
            cpu::input_projection(&p, &params, &inputs, &mut a_ref);
            // A sum of D + 1 <= 66 products of magnitude <= 1 in f32 vs f64.
            assert_close(&format!("input_projection N={n} B={batch} D={width}"), &out[2], &to_f64(&a_ref), 1e-5, 1e-5);
        }
    }
}

#[test]
fn input_projection_backward_matches_cpu_twin() {
    for n in SIZES {
        for (batch, width) in [(1u32, 1u32), (3, 7), (5, 65)] {
            // A window of one step, and one of three steps from step 2 (inputs of four steps).
            for (first_step, steps) in [(1u32, 1u32), (2, 3)] {
                let mut r = rng(93 + n as u64 + width as u64 + first_step as u64);
                let inputs = uniform(&mut r, (4 * batch * width) as usize, 1.0);
                // The window's ga rows behind 11 unrelated floats.
                let partials = uniform(&mut r, 11 + (steps * batch * n) as usize, 1.0);
                let grads = uniform(&mut r, 3 + ((width + 1) * n) as usize, 1.0); // accumulated into
                let p = InputProjectionBackwardParams {
                    n,
                    batch,
                    first_step,
                    steps,
                    width,
                    w_in_offset: 3,
                    ga_offset: 11,
                    ..Default::default()
                };
                let out = run_kernel(
                    "input_projection_backward",
                    &p,
                    &[bytes(&inputs), bytes(&partials), bytes(&grads)],
                    input_projection_backward::workgroups(n, width),
                );
                let mut g_ref = grads.clone();
                cpu::input_projection_backward(&p, &inputs, &partials, &mut g_ref);
                let what = format!("input_projection_backward N={n} B={batch} D={width} steps {first_step}..{}", first_step + steps - 1);
                // Sums of <= 15 products of magnitude <= 1, added to O(1) values.
                assert_close(&what, &out[2], &to_f64(&g_ref), 1e-5, 1e-5);
                assert_eq!(out[2][..3], grads[..3], "{what}: parameters before w_in untouched");
            }
        }
    }
}

#[test]
fn head_forward_matches_cpu_twin() {
    for n in SIZES {
        for (batch, width) in [(1u32, 1u32), (3, 10), (2, 65)] {
            let mut r = rng(101 + n as u64 + width as u64);
            let params = uniform(&mut r, 7 + ((n + 1) * width) as usize, 1.0 / (n as f32).sqrt());
            let activations = uniform(&mut r, (5 * batch * n) as usize, 1.0);
            let loss_steps = vec![2u32, 4];
            // This head's columns [3, 3 + K) of a row of K + 5 must all be written, the rest untouched.
            let total = width + 5;
            let outputs = nan_filled((2 * batch * total) as usize);
            let p = HeadForwardParams { n, batch, n_loss_steps: 2, width, total, col0: 3, w_offset: 7, ..Default::default() };
            let out = run_kernel(
                "head_forward",
                &p,
                &[bytes(&params), bytes(&activations), bytemuck::cast_slice(&loss_steps), bytes(&outputs)],
                head_forward::workgroups(width, 2 * batch),
            );
            let mut o_ref = outputs.clone();
            cpu::head_forward(&p, &params, &activations, &loss_steps, &mut o_ref);
            let ctx = format!("head_forward N={n} B={batch} K={width}");
            for (e, (&g, &c)) in out[3].iter().zip(&o_ref).enumerate() {
                let col = e as u32 % total;
                let mine = (3..3 + width).contains(&col);
                assert_eq!(g.is_nan(), !mine, "{ctx}: element {e}");
                // A dot product of N <= 257 terms of magnitude <= 1/sqrt(N) in f32 vs f64.
                assert!(!mine || (g - c).abs() <= 1e-5 + 1e-5 * c.abs(), "{ctx}: element {e}: gpu {g} vs cpu {c}");
            }
        }
    }
}

#[test]
fn head_loss_matches_cpu_twin() {
    for (kind, accumulate) in [(head_loss::LINEAR, 0u32), (head_loss::SOFTMAX, 0), (head_loss::SOFTMAX, 1)] {
        for (batch, width) in [(1u32, 1u32), (3, 10), (70, 4)] {
            let mut r = rng(103 + batch as u64 + width as u64);
            let total = width + 2;
            let rows = (2 * batch) as usize;
            let outputs = uniform(&mut r, rows * total as usize, 3.0);
            let targets: Vec<f32> = if kind == head_loss::SOFTMAX {
                // One-hot classes in this head's columns.
                (0..rows * total as usize)
                    .map(|e| ((e % total as usize) as u32 == 2 + (e / total as usize) as u32 % width) as u8 as f32)
                    .collect()
            } else {
                uniform(&mut r, rows * total as usize, 1.0)
            };
            let grads = uniform(&mut r, rows * total as usize, 1.0);
            let metrics_buf = vec![1.5f32; metrics::COUNT];
            let p = HeadLossParams { batch, n_loss_steps: 2, width, total, col0: 2, kind, accumulate, loss_scale: 0.5 };
            let out = run_kernel("head_loss", &p, &[bytes(&outputs), bytes(&targets), bytes(&grads), bytes(&metrics_buf)], [1, 1, 1]);
            let (mut g_ref, mut m_ref) = (grads.clone(), metrics_buf.clone());
            cpu::head_loss(&p, &outputs, &targets, &mut g_ref, &mut m_ref);
            let ctx = format!("head_loss kind={kind} accumulate={accumulate} B={batch} K={width}");
            // exp/log in f32 vs f64 on logits of magnitude <= 3: a few ulps per element.
            assert_close(&format!("{ctx} grads"), &out[2], &to_f64(&g_ref), 1e-5, 1e-5);
            assert_close(&format!("{ctx} loss"), &out[3][..1], &[m_ref[0] as f64], 1e-4, 1e-5);
            assert_eq!(out[3][1..3], m_ref[1..3], "{ctx}: error and sample counts are exact");
        }
    }
}

#[test]
fn head_backward_matches_cpu_twin() {
    for n in SIZES {
        for (batch, width, accumulate) in [(1u32, 1u32, 0u32), (3, 10, 1)] {
            let mut r = rng(107 + n as u64 + width as u64);
            let params = uniform(&mut r, 7 + ((n + 1) * width) as usize, 1.0);
            let activations = uniform(&mut r, (5 * batch * n) as usize, 1.0);
            let loss_steps = vec![2u32, 4];
            let total = width + 3;
            let head_grads = uniform(&mut r, (2 * batch * total) as usize, 1.0);
            let partials = uniform(&mut r, 9 + (2 * batch * n) as usize, 1.0);
            let grads = uniform(&mut r, 7 + ((n + 1) * width) as usize, 1.0);
            let p = HeadBackwardParams {
                n,
                batch,
                n_loss_steps: 2,
                width,
                total,
                col0: 1,
                w_offset: 7,
                accumulate,
                loss_grad_offset: 9,
                ..Default::default()
            };
            let out = run_kernel(
                "head_backward",
                &p,
                &[
                    bytes(&params),
                    bytes(&activations),
                    bytemuck::cast_slice(&loss_steps),
                    bytes(&head_grads),
                    bytes(&partials),
                    bytes(&grads),
                ],
                head_backward::workgroups(n),
            );
            let (mut p_ref, mut g_ref) = (partials.clone(), grads.clone());
            cpu::head_backward(&p, &params, &activations, &loss_steps, &head_grads, &mut p_ref, &mut g_ref);
            let ctx = format!("head_backward N={n} B={batch} K={width} accumulate={accumulate}");
            // Sums of <= K = 10 products (dx) and <= L * B = 6 products (dW, db), accumulated.
            assert_close(&format!("{ctx} loss gradient"), &out[4], &to_f64(&p_ref), 1e-5, 1e-5);
            assert_close(&format!("{ctx} grads"), &out[5], &to_f64(&g_ref), 1e-5, 1e-5);
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
        for (case, frozen) in [("eta per neuron, three batch groups' dalpha", false), ("one eta, one alpha, frozen ranges", true)] {
            let count = n * n + 2 * n + 1 + 3 * n + 1;
            let mut r = rng(77 + n as u64);
            let (tiles, batch) = (trace_tiles(n, TRACE_TILE), 3u32);
            // Sources sit behind 40 unrelated values, as they sit behind the row and column sums.
            let eta_src = 40;
            let alpha_src = eta_src + tiles * n;
            let mod_src = alpha_src + n * n;
            // Three batch groups' dalpha (Z, N, N), for an alpha per connection.
            let (groups_src, groups) = (mod_src + batch * (3 * n + 1), 3);
            let partials = uniform(&mut r, (groups_src + groups * n * n) as usize, 1.0);
            let grads = uniform(&mut r, count as usize, 1.0);
            let metrics_buf = nan_filled(metrics::COUNT);
            // Layout [alpha (N*N), w (N), eta (N), modulator (3N + 1)] or, frozen, [w (N*N), alpha, eta, ...]
            // with one alpha and one eta: the kernel sees only offsets.
            let (eta_dst, mod_dst) = (n * n + n, n * n + 2 * n);
            let mut p = FinishGradientsParams { param_count: count, ..Default::default() };
            let modulator = Reduction { dst: mod_dst, len: 3 * n + 1, rows: batch, src: mod_src };
            if frozen {
                p.set_reductions([
                    Reduction { dst: eta_dst, len: 1, rows: tiles * n, src: eta_src },
                    Reduction { dst: n * n, len: 1, rows: n * n, src: alpha_src },
                    modulator,
                ]);
                (p.frozen0_begin, p.frozen0_end) = (0, (n * n / 2).max(1));
                (p.frozen1_begin, p.frozen1_end) = (eta_dst, eta_dst + 1);
            } else {
                p.set_reductions([
                    Reduction { dst: eta_dst, len: n, rows: tiles, src: eta_src },
                    Reduction { dst: 0, len: n * n, rows: groups, src: groups_src },
                    modulator,
                ]);
            }
            let out = run_kernel("finish_gradients", &p, &[bytes(&partials), bytes(&grads), bytes(&metrics_buf)], [1, 1, 1]);
            let (mut g_ref, mut m_ref) = (grads.clone(), metrics_buf.clone());
            cpu::finish_gradients(&p, &partials, &mut g_ref, &mut m_ref);
            let ctx = format!("finish_gradients N={n} {case}");
            // Sums of <= N * N = 66049 terms of magnitude <= 1 in f32 strided order against f64:
            // rounding ~sqrt(66049) * 2^-24 * 257, well under 1e-3.
            assert_close(&format!("{ctx} grads"), &out[1], &to_f64(&g_ref), 1e-3, 1e-5);
            assert!(out[1][p.frozen0_begin as usize..p.frozen0_end as usize].iter().all(|&g| g == 0.0), "{ctx}: frozen range 0");
            assert!(out[1][p.frozen1_begin as usize..p.frozen1_end as usize].iter().all(|&g| g == 0.0), "{ctx}: frozen range 1");
            assert_close(&format!("{ctx} norm"), &out[2][metrics::GRAD_NORM_SQ..][..1], &[m_ref[metrics::GRAD_NORM_SQ] as f64], 1e-3, 1e-5);
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
    for quads in [1u32, 255, 256, 257, 100_003] {
        let count = 4 * quads as usize;
        let mut r = rng(5 + quads as u64);
        let (a, b, c) = (uniform(&mut r, count, 1.0), uniform(&mut r, count, 1.0), nan_filled(count));
        let (grid, row_stride) = plasticity_kernels::elementwise_grid(quads, stream_triad::WORKGROUP_SIZE);
        let p = StreamTriadParams { elements: quads, row_stride, scale: 3.0, ..Default::default() };
        let out = run_kernel("stream_triad", &p, &[bytes(&a), bytes(&b), bytes(&c)], grid);
        let mut c_ref = c.clone();
        cpu::stream_triad(&p, &a, &b, &mut c_ref);
        // One f32 multiply-add on both sides; FMA contraction may differ by an ulp.
        assert_close(&format!("stream_triad quads={quads}"), &out[2], &to_f64(&c_ref), 1e-6, 1e-6);
    }
}

/// The 32-byte triad: its u64 packing must put every float back where it came from. The arrays hold
/// one element more than the grid covers, NaN in c, so a write past `elements` fails too.
#[test]
fn stream_triad_wide_matches_cpu_twin() {
    assert!(
        gpu().has_int64(),
        "stream_triad_wide needs an adapter with 64-bit integers in shaders (wgpu::Features::SHADER_INT64), as lavapipe has; \
         run the tests on one (WGPU_ADAPTER_NAME, or tools/setup-gpu.sh for lavapipe)"
    );
    for elements in [1u32, 255, 256, 257, 50_001] {
        let count = 8 * (elements as usize + 1);
        let mut r = rng(7 + elements as u64);
        let (a, b, c) = (uniform(&mut r, count, 1.0), uniform(&mut r, count, 1.0), nan_filled(count));
        let (grid, row_stride) = plasticity_kernels::elementwise_grid(elements, stream_triad::WORKGROUP_SIZE);
        let p = StreamTriadParams { elements, row_stride, scale: 3.0, ..Default::default() };
        let out = run_kernel("stream_triad_wide", &p, &[bytes(&a), bytes(&b), bytes(&c)], grid);
        let mut c_ref = c.clone();
        cpu::stream_triad_wide(&p, &a, &b, &mut c_ref);
        // One f32 multiply-add per float on both sides; FMA contraction may differ by an ulp.
        let done = count - 8;
        assert_close(&format!("stream_triad_wide elements={elements}"), &out[2][..done], &to_f64(&c_ref[..done]), 1e-6, 1e-6);
        assert!(out[2][count - 8..].iter().all(|v| v.is_nan()), "stream_triad_wide elements={elements}: wrote past the last element");
    }
}
