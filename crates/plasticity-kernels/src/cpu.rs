//! CPU twins of the WGSL kernels: one function per kernel, named like it, taking the rule (the
//! kernel's override constants) where it has one, its params and then its buffers in binding order.
//! Elementwise updates are done in f32 like the GPU; sums are accumulated in f64, so a GPU result may
//! differ from its twin only by f32 rounding.

use crate::adam_update::AdamParams;
use crate::backward_activation::{BackwardActivationParams, LOSS_NONE, MOD_NONE};
use crate::backward_trace::BackwardTraceParams;
use crate::finish_gradients::FinishGradientsParams;
use crate::forward_finish::ForwardFinishParams;
use crate::forward_step::ForwardStepParams;
use crate::head_backward::HeadBackwardParams;
use crate::head_forward::HeadForwardParams;
use crate::head_loss::HeadLossParams;
use crate::input_projection::InputProjectionParams;
use crate::input_projection_backward::InputProjectionBackwardParams;
use crate::loss_mse::LossMseParams;
use crate::modulation_backward::ModulationBackwardParams;
use crate::modulation_forward::ModulationForwardParams;
use crate::stream_triad::StreamTriadParams;
use crate::trace_update::TraceUpdateParams;
use crate::weight_gradient::WeightGradientParams;
use crate::{AlphaShape, EtaShape, Modulation, Plasticity, Rule, is_clamped, metrics};

/// Matches the kernel's clamp before tanh (tanh(15) == 1 in f32).
const TANH_CLAMP: f64 = 15.0;

/// The rule's update `U_r(h)` (see `plasticity.rs`), in f32 like the kernels.
pub fn rule_update(rule: Rule, h: f32, pre: f32, post: f32, r: f32) -> f32 {
    match rule {
        Rule::Decay => (1.0 - r) * h + r * pre * post,
        Rule::Oja => h + r * post * (pre - post * h),
        Rule::Additive => h + r * pre * post,
    }
}

fn clip_trace(spec: &Plasticity, v: f32) -> f32 {
    match spec.clip {
        Some(c) => v.clamp(-c, c),
        None => v,
    }
}

/// `d clip(v) / dv`: 1 strictly inside (-c, c).
fn clip_pass(spec: &Plasticity, v: f32) -> f32 {
    match spec.clip {
        Some(c) if v.abs() >= c => 0.0,
        _ => 1.0,
    }
}

/// Where the kernels find each piece of the flat parameters.
#[derive(Clone, Copy)]
struct Offsets {
    n: usize,
    batch: usize,
    alpha: usize,
    eta: usize,
    modulator: usize,
}

impl Offsets {
    /// rate_bj(s) of the plastic trace's update.
    fn plastic_rate(&self, spec: &Plasticity, params: &[f32], modulation: &[f32], b: usize, j: usize, s: usize) -> f32 {
        let m = || modulation[s * self.batch + b];
        match (spec.modulation, spec.eta) {
            (Modulation::None, EtaShape::Scalar) => params[self.eta],
            (Modulation::None, EtaShape::PerNeuron) => params[self.eta + j],
            (Modulation::Simple, _) => m(),
            (Modulation::PerNeuron, _) => params[self.modulator + self.n + 1 + j] * m() + params[self.modulator + 2 * self.n + 1 + j],
        }
    }

    fn eligibility_rate(&self, spec: &Plasticity, params: &[f32], j: usize) -> f32 {
        match spec.eta {
            EtaShape::Scalar => params[self.eta],
            EtaShape::PerNeuron => params[self.eta + j],
        }
    }

    fn alpha_eff(&self, spec: &Plasticity, params: &[f32], i: usize, j: usize) -> f32 {
        if !spec.plastic_self && i == j {
            return 0.0;
        }
        match spec.alpha {
            AlphaShape::PerConnection => params[self.alpha + i * self.n + j],
            AlphaShape::PerNeuron => params[self.alpha + j],
            AlphaShape::Scalar => params[self.alpha],
        }
    }
}

/// Twin of `shaders/forward_step.wgsl`: row t of `activations` holds u(t) on entry and x(t) on exit
/// (u(t) itself where the clamp mask is set); `trace` holds H, then E at `elig_offset` (retroactive).
/// A split step (`splits` > 1) instead writes chunk z's sum over i of (w + alpha H) x_i(t-1) to
/// `partial_sums[z, b, j]` and leaves row t alone; [`forward_finish`] completes it.
#[allow(clippy::too_many_arguments)]
pub fn forward_step(
    spec: &Plasticity,
    p: &ForwardStepParams,
    params: &[f32],
    trace: &mut [f32],
    activations: &mut [f32],
    clamp: &[u32],
    modulation: &[f32],
    partial_sums: &mut [f32],
) {
    let (n, batch, t) = (p.n as usize, p.batch as usize, p.step as usize);
    let row = batch * n;
    let off = Offsets { n, batch, alpha: p.alpha_offset as usize, eta: p.eta_offset as usize, modulator: p.mod_offset as usize };
    let w = &params[p.w_offset as usize..][..n * n];
    let eo = p.elig_offset as usize;
    for b in 0..batch {
        let x_prev: Vec<f32> = activations[(t - 1) * row + b * n..][..n].to_vec();
        if t >= 2 {
            let x_prev2 = activations[(t - 2) * row + b * n..][..n].to_vec();
            for (i, &pre) in x_prev2.iter().enumerate() {
                for (j, &post) in x_prev.iter().enumerate() {
                    let idx = (b * n + i) * n + j;
                    let r = off.plastic_rate(spec, params, modulation, b, j, t - 1);
                    if spec.retroactive {
                        let e = trace[eo + idx];
                        trace[idx] = clip_trace(spec, trace[idx] + r * e);
                        trace[eo + idx] = rule_update(spec.rule, e, pre, post, off.eligibility_rate(spec, params, j));
                    } else {
                        trace[idx] = clip_trace(spec, rule_update(spec.rule, trace[idx], pre, post, r));
                    }
                }
            }
        }
        let drive = |j: usize, is: std::ops::Range<usize>| -> f64 {
            is.map(|i| {
                let h = trace[(b * n + i) * n + j];
                (w[i * n + j] + off.alpha_eff(spec, params, i, j) * h) as f64 * x_prev[i] as f64
            })
            .sum()
        };
        for j in 0..n {
            if p.splits > 1 {
                let len = p.split_len as usize;
                for z in 0..p.splits as usize {
                    partial_sums[(z * batch + b) * n + j] = drive(j, (z * len).min(n)..((z + 1) * len).min(n)) as f32;
                }
                continue;
            }
            let a = activations[t * row + b * n + j] as f64 + drive(j, 0..n);
            let words = p.clamp_words as usize;
            let held = words != 0 && is_clamped(&clamp[((t - 1) * batch + b) * words..][..words], j);
            if !held {
                activations[t * row + b * n + j] = a.clamp(-TANH_CLAMP, TANH_CLAMP).tanh() as f32;
            }
        }
    }
}

/// Twin of `shaders/forward_finish.wgsl`: x_j(t) = tanh(u_j(t) + sum_z partial_sums[z, b, j]) in row t,
/// except where the clamp mask holds neuron j at u_j(t).
pub fn forward_finish(p: &ForwardFinishParams, partial_sums: &[f32], activations: &mut [f32], clamp: &[u32]) {
    let (n, batch, t) = (p.n as usize, p.batch as usize, p.step as usize);
    for b in 0..batch {
        for j in 0..n {
            let words = p.clamp_words as usize;
            if words != 0 && is_clamped(&clamp[((t - 1) * batch + b) * words..][..words], j) {
                continue;
            }
            let out = (t * batch + b) * n + j;
            let a = activations[out] as f64 + (0..p.splits as usize).map(|z| partial_sums[(z * batch + b) * n + j] as f64).sum::<f64>();
            activations[out] = a.clamp(-TANH_CLAMP, TANH_CLAMP).tanh() as f32;
        }
    }
}

/// Twin of `shaders/modulation_forward.wgsl`: M_b(t) = tanh(mod_w . x_b(t) + mod_b).
pub fn modulation_forward(p: &ModulationForwardParams, params: &[f32], activations: &[f32], modulation: &mut [f32]) {
    let (n, batch, t, m) = (p.n as usize, p.batch as usize, p.step as usize, p.mod_offset as usize);
    for b in 0..batch {
        let x = &activations[(t * batch + b) * n..][..n];
        let drive = params[m + n] as f64 + (0..n).map(|k| params[m + k] as f64 * x[k] as f64).sum::<f64>();
        modulation[t * batch + b] = drive.clamp(-TANH_CLAMP, TANH_CLAMP).tanh() as f32;
    }
}

/// Twin of `shaders/trace_update.wgsl`: the slot at `dst_offset` receives the trace of step t
/// formed from the slot at `src_offset` (H, then E at `elig_offset`).
pub fn trace_update(spec: &Plasticity, p: &TraceUpdateParams, params: &[f32], activations: &[f32], modulation: &[f32], traces: &mut [f32]) {
    let (n, batch, t) = (p.n as usize, p.batch as usize, p.step as usize);
    let row = batch * n;
    let off = Offsets { n, batch, alpha: 0, eta: p.eta_offset as usize, modulator: p.mod_offset as usize };
    let (src, dst, eo) = (p.src_offset as usize, p.dst_offset as usize, p.elig_offset as usize);
    for b in 0..batch {
        for i in 0..n {
            for j in 0..n {
                let e = (b * n + i) * n + j;
                let (pre, post) = (activations[(t - 2) * row + b * n + i], activations[(t - 1) * row + b * n + j]);
                let r = off.plastic_rate(spec, params, modulation, b, j, t - 1);
                let h = traces[src + e];
                if spec.retroactive {
                    let old_e = traces[src + eo + e];
                    traces[dst + e] = clip_trace(spec, h + r * old_e);
                    traces[dst + eo + e] = rule_update(spec.rule, old_e, pre, post, off.eligibility_rate(spec, params, j));
                } else {
                    traces[dst + e] = clip_trace(spec, rule_update(spec.rule, h, pre, post, r));
                }
            }
        }
    }
}

/// Twin of `shaders/backward_activation.wgsl`.
pub fn backward_activation(
    p: &BackwardActivationParams,
    activations: &[f32],
    targets: &[f32],
    clamp: &[u32],
    params: &[f32],
    partials: &mut [f32],
) {
    let (n, batch, tiles) = (p.n as usize, p.batch as usize, p.n_tiles as usize);
    for b in 0..batch {
        for j in 0..n {
            let x = activations[p.step as usize * batch * n + b * n + j];
            let mut gx = 0.0f64;
            if p.loss_slot != LOSS_NONE {
                if p.loss_grad_offset != LOSS_NONE {
                    gx = partials[p.loss_grad_offset as usize + (p.loss_slot as usize * batch + b) * n + j] as f64;
                } else {
                    let y = targets[p.loss_slot as usize * batch * n + b * n + j];
                    gx = 2.0 * p.loss_scale as f64 * (x as f64 - y as f64);
                }
            }
            let rows = b * tiles * n + j;
            let cols = batch * n * tiles + rows;
            for k in 0..tiles {
                gx += partials[rows + k * n] as f64 + partials[cols + k * n] as f64;
            }
            if p.mod_grad_offset != MOD_NONE {
                gx += partials[p.mod_grad_offset as usize + b] as f64 * params[p.mod_offset as usize + j] as f64;
            }
            let words = p.clamp_words as usize;
            let held = words != 0 && is_clamped(&clamp[((p.step as usize - 1) * batch + b) * words..][..words], j);
            partials[p.preact_offset as usize + b * n + j] = if held { 0.0 } else { (gx * (1.0 - x as f64 * x as f64)) as f32 };
        }
    }
}

fn rule_d_trace(rule: Rule, post: f32, r: f32) -> f32 {
    match rule {
        Rule::Decay => 1.0 - r,
        Rule::Oja => 1.0 - r * post * post,
        Rule::Additive => 1.0,
    }
}

fn rule_d_post(rule: Rule, h: f32, pre: f32, post: f32, r: f32) -> f32 {
    match rule {
        Rule::Oja => r * (pre - 2.0 * post * h),
        _ => r * pre,
    }
}

fn rule_d_rate(rule: Rule, h: f32, pre: f32, post: f32) -> f32 {
    match rule {
        Rule::Decay => pre * post - h,
        Rule::Oja => post * (pre - post * h),
        Rule::Additive => pre * post,
    }
}

/// G(t) = d_trace G(t+1) + alpha_eff x_i(t-1) ga_j(t) (d_trace = m dU/dH): the step's own update and
/// the recovery of G(t+1) by a step that finds G(t+2), one expression as in the kernels.
fn grad_update(d_trace: f32, g_next: f32, alpha: f32, pre: f32, ga: f32) -> f32 {
    d_trace * g_next + alpha * pre * ga
}

fn rule_inverse(rule: Rule, v: f32, pre: f32, post: f32, r: f32) -> f32 {
    match rule {
        Rule::Decay => (v - r * pre * post) / (1.0 - r),
        Rule::Oja => (v - r * post * pre) / (1.0 - r * post * post),
        Rule::Additive => v - r * pre * post,
    }
}

/// Twin of `shaders/backward_trace.wgsl`: partial sums are formed per invocation (`tile` rows by
/// `tile` columns, interleaved over `column_lanes` invocations, see [`crate::trace_column_owner`])
/// exactly as the kernel lays them out. `reverse`, `tile` and `column_lanes` are the kernel's
/// REVERSE, TILE and COLUMN_LANES override constants; `column_width` is 1 for backward_trace and 4
/// for backward_trace_vec4, whose lanes own quads of columns (the only difference the partial sums
/// show). With Z = `groups` > 1, batch element b belongs to group b mod Z, whose dalpha and eta
/// sums go to its own accumulators in `partials`. dw is not formed here: see [`weight_gradient`].
/// When `reverse`, `p.trace_ahead` says the slot holds H(t+1), inverted first with step t's own
/// values, and `p.skip_store` leaves the slot unwritten; `p.grad_ahead` says `trace_grad` holds
/// G(t+2), from which step t+1's update (its x_i(t), x_j(t+1), rate and ga(t+1) at
/// `p.next_preact_offset`) recovers G(t+1) first, and `p.skip_grad_store` leaves it unwritten (see
/// `backward_trace::reversal_schedule`).
#[allow(clippy::too_many_arguments)]
pub fn backward_trace(
    spec: &Plasticity,
    reverse: bool,
    column_width: u32,
    tile: u32,
    column_lanes: u32,
    p: &BackwardTraceParams,
    params: &[f32],
    activations: &[f32],
    modulation: &[f32],
    trace: &mut [f32],
    trace_grad: &mut [f32],
    grads: &mut [f32],
    partials: &mut [f32],
) {
    assert_eq!(p.n_tiles, crate::trace_tiles(p.n, tile), "n_tiles is ceil(N / tile)");
    let (n, batch, t, tiles) = (p.n as usize, p.batch as usize, p.step as usize, p.n_tiles as usize);
    let row = batch * n;
    let rule = spec.rule;
    let off = Offsets { n, batch, alpha: p.alpha_offset as usize, eta: p.eta_offset as usize, modulator: p.mod_offset as usize };
    let (w_off, a_off) = (p.w_offset as usize, p.alpha_offset as usize);
    let (cur, prev, eo) = (p.cur_offset as usize, p.prev_offset as usize, p.elig_offset as usize);
    let modulated = spec.modulated();
    // One eta: each invocation's sum sits at its first column (as the kernel writes it).
    let eta_per_neuron = spec.eta == EtaShape::PerNeuron && (!modulated || spec.retroactive);
    let groups = p.groups.max(1) as usize;
    let group_of = |b: usize| b % groups;
    // Row partials and single-eta sums belong to the invocation that owns column j.
    let owner = |j: usize| crate::trace_column_owner(n as u32, j as u32, column_width, tile, column_lanes);
    let tile = tile as usize;
    let eta_index = |z: usize, i: usize, j: usize| (z * tiles + i / tile) * n + if eta_per_neuron { j } else { owner(j).1 as usize };
    let x = |step: usize, b: usize, k: usize| activations[step * row + b * n + k];
    let grad_ahead = reverse && p.grad_ahead != 0;
    // Only the reversed rules (one fixed rate, no clip) skip the gradient's store.
    assert!(!grad_ahead || (spec.clip.is_none() && !modulated && !spec.retroactive), "grad_ahead needs a reversible rule");
    let mut row_sums = vec![0.0f64; batch * n * tiles];
    let mut col_sums = vec![0.0f64; batch * n * tiles];
    let mut rate_sums = vec![0.0f64; batch * n * tiles];
    let mut eta_sums = vec![0.0f64; groups * tiles * n];
    for i in 0..n {
        for j in 0..n {
            let (w_ij, alpha_ij) = (params[w_off + i * n + j], off.alpha_eff(spec, params, i, j));
            let rate_e = off.eligibility_rate(spec, params, j);
            let mut d_alpha = vec![0.0f64; groups];
            for b in 0..batch {
                let z = group_of(b);
                let idx = (b * n + i) * n + j;
                let (pre, post, ga_j) = (x(t - 1, b, i), x(t, b, j), partials[p.preact_offset as usize + b * n + j]);
                let r = off.plastic_rate(spec, params, modulation, b, j, t);
                let (mut h, mut g_next) = (trace[cur + idx], trace_grad[idx]);
                if reverse && p.trace_ahead != 0 {
                    h = rule_inverse(rule, h, pre, post, r); // H(t) from H(t+1)
                }
                if grad_ahead {
                    // G(t+1) from G(t+2): step t+1's update of the gradient (no clip, so its mask is 1).
                    let (pre_next, post_next) = (x(t, b, i), x(t + 1, b, j));
                    let (r_next, ga_next) =
                        (off.plastic_rate(spec, params, modulation, b, j, t + 1), partials[p.next_preact_offset as usize + b * n + j]);
                    g_next = grad_update(rule_d_trace(rule, post_next, r_next), g_next, alpha_ij, pre_next, ga_next);
                }
                d_alpha[z] += ga_j as f64 * h as f64 * pre as f64;
                let (g, ge);
                let row_term;
                if spec.retroactive {
                    let (e, ge_next) = (trace[cur + eo + idx], trace_grad[eo + idx]);
                    let m = clip_pass(spec, h + r * e);
                    g = m * g_next + alpha_ij * pre * ga_j;
                    ge = m * r * g_next + rule_d_trace(rule, post, rate_e) * ge_next;
                    row_term = ge_next as f64 * rate_e as f64 * post as f64;
                    trace_grad[eo + idx] = ge;
                } else {
                    let m = clip_pass(spec, rule_update(rule, h, pre, post, r));
                    g = grad_update(m * rule_d_trace(rule, post, r), g_next, alpha_ij, pre, ga_j);
                    ge = 0.0;
                    row_term = m as f64 * g_next as f64 * r as f64 * post as f64;
                }
                row_sums[(b * tiles + owner(j).0 as usize) * n + i] += (w_ij as f64 + alpha_ij as f64 * h as f64) * ga_j as f64 + row_term;
                if !(reverse && p.skip_grad_store != 0) {
                    trace_grad[idx] = g;
                }
                if t >= 2 {
                    let (pre2, post2) = (x(t - 2, b, i), x(t - 1, b, j));
                    let r2 = off.plastic_rate(spec, params, modulation, b, j, t - 1);
                    let c = (b * tiles + i / tile) * n + j; // column and rate sums: (B, tiles, N)
                    if spec.retroactive {
                        let (h_prev, e_prev) = (trace[prev + idx], trace[prev + eo + idx]);
                        let m2 = clip_pass(spec, h_prev + r2 * e_prev);
                        col_sums[c] += ge as f64 * rule_d_post(rule, e_prev, pre2, post2, rate_e) as f64;
                        rate_sums[c] += m2 as f64 * g as f64 * e_prev as f64;
                        eta_sums[eta_index(z, i, j)] += ge as f64 * rule_d_rate(rule, e_prev, pre2, post2) as f64;
                    } else {
                        let h_prev = if reverse {
                            let v = rule_inverse(rule, h, pre2, post2, r2);
                            if p.skip_store == 0 {
                                trace[cur + idx] = v;
                            }
                            v
                        } else {
                            trace[prev + idx]
                        };
                        let m2 = clip_pass(spec, rule_update(rule, h_prev, pre2, post2, r2));
                        col_sums[c] += m2 as f64 * g as f64 * rule_d_post(rule, h_prev, pre2, post2, r2) as f64;
                        let d_rate = m2 as f64 * g as f64 * rule_d_rate(rule, h_prev, pre2, post2) as f64;
                        if modulated {
                            rate_sums[c] += d_rate;
                        } else {
                            eta_sums[eta_index(z, i, j)] += d_rate;
                        }
                    }
                }
            }
            // alpha_ij is 0 where a self-connection is not plastic, and so is its gradient.
            if !(spec.plastic_self || i != j) {
                continue;
            }
            if groups > 1 {
                let (base, nn) = (p.group_grad_offset as usize, n * n);
                for (z, d) in d_alpha.iter().enumerate() {
                    partials[base + z * nn + i * n + j] += *d as f32;
                }
            } else {
                match spec.alpha {
                    AlphaShape::PerConnection => grads[a_off + i * n + j] += d_alpha[0] as f32,
                    _ => partials[p.alpha_grad_offset as usize + i * n + j] += d_alpha[0] as f32,
                }
            }
        }
    }
    for (k, v) in row_sums.iter().enumerate() {
        partials[k] = *v as f32;
    }
    for (k, v) in col_sums.iter().enumerate() {
        partials[batch * n * tiles + k] = *v as f32;
    }
    if modulated {
        for (k, v) in rate_sums.iter().enumerate() {
            partials[p.rate_partials_offset as usize + k] = *v as f32;
        }
    }
    for (k, v) in eta_sums.iter().enumerate() {
        partials[p.eta_partials_offset as usize + k] += *v as f32;
    }
}

/// Twin of `shaders/modulation_backward.wgsl`.
pub fn modulation_backward(p: &ModulationBackwardParams, params: &[f32], activations: &[f32], modulation: &[f32], partials: &mut [f32]) {
    let (n, batch, t, tiles) = (p.n as usize, p.batch as usize, p.step as usize, p.n_tiles as usize);
    let (mo, len) = (p.mod_offset as usize, p.mod_len as usize);
    for b in 0..batch {
        let m = modulation[t * batch + b];
        let acc = p.acc_offset as usize + b * len;
        let mut d_m = 0.0f64;
        for j in 0..n {
            let base = p.rate_partials_offset as usize + b * tiles * n + j;
            let d_rate: f64 = (0..tiles).map(|k| partials[base + k * n] as f64).sum();
            if p.fan_out != 0 {
                d_m += params[mo + n + 1 + j] as f64 * d_rate;
                partials[acc + n + 1 + j] += (m as f64 * d_rate) as f32;
                partials[acc + 2 * n + 1 + j] += d_rate as f32;
            } else {
                d_m += d_rate;
            }
        }
        let d_z = (d_m * (1.0 - m as f64 * m as f64)) as f32;
        for k in 0..n {
            partials[acc + k] += d_z * activations[(t * batch + b) * n + k];
        }
        partials[acc + n] += d_z;
        partials[p.mod_grad_offset as usize + b] = d_z;
    }
}

/// Twin of `shaders/input_projection.wgsl`: u(t) = b_in + v(t) w_in into row t of the history.
pub fn input_projection(p: &InputProjectionParams, params: &[f32], inputs: &[f32], activations: &mut [f32]) {
    let (n, batch, steps, width) = (p.n as usize, p.batch as usize, p.steps as usize, p.width as usize);
    let w_in = &params[p.w_in_offset as usize..][..(width + 1) * n];
    for row in 0..steps * batch {
        for j in 0..n {
            let u = w_in[width * n + j] as f64 + (0..width).map(|d| inputs[row * width + d] as f64 * w_in[d * n + j] as f64).sum::<f64>();
            activations[batch * n + row * n + j] = u as f32;
        }
    }
}

/// Twin of `shaders/input_projection_backward.wgsl`: the window's sum over steps and batch of
/// v_bd(s) ga_bj(s) (v = 1 for the bias, d = D).
pub fn input_projection_backward(p: &InputProjectionBackwardParams, inputs: &[f32], partials: &[f32], grads: &mut [f32]) {
    let (n, batch, width) = (p.n as usize, p.batch as usize, p.width as usize);
    for d in 0..=width {
        for j in 0..n {
            let mut g = 0.0f64;
            for s in 0..p.steps as usize {
                let v_row = (p.first_step as usize + s - 1) * batch * width;
                let ga = &partials[p.ga_offset as usize + s * batch * n..][..batch * n];
                g += (0..batch)
                    .map(|b| {
                        let v = if d < width { inputs[v_row + b * width + d] } else { 1.0 };
                        v as f64 * ga[b * n + j] as f64
                    })
                    .sum::<f64>();
            }
            grads[p.w_in_offset as usize + d * n + j] += g as f32;
        }
    }
}

/// Twin of `shaders/weight_gradient.wgsl` and `shaders/weight_gradient_vec4.wgsl`:
/// dw_ij += sum over the window's steps s and the batch of x_bi(s - 1) ga_bj(s).
pub fn weight_gradient(p: &WeightGradientParams, activations: &[f32], partials: &[f32], grads: &mut [f32]) {
    let (n, batch) = (p.n as usize, p.batch as usize);
    let row = batch * n;
    for i in 0..n {
        for j in 0..n {
            let mut d_w = 0.0f64;
            for s in 0..p.steps as usize {
                let x = &activations[(p.first_step as usize + s - 1) * row..][..row];
                let ga = &partials[p.ga_offset as usize + s * row..][..row];
                d_w += (0..batch).map(|b| x[b * n + i] as f64 * ga[b * n + j] as f64).sum::<f64>();
            }
            grads[p.w_offset as usize + i * n + j] += d_w as f32;
        }
    }
}

/// Twin of `shaders/head_forward.wgsl`.
pub fn head_forward(p: &HeadForwardParams, params: &[f32], activations: &[f32], loss_steps: &[u32], outputs: &mut [f32]) {
    let (n, batch, width) = (p.n as usize, p.batch as usize, p.width as usize);
    let (w, bias) = (&params[p.w_offset as usize..][..n * width], &params[p.w_offset as usize + n * width..][..width]);
    for r in 0..p.n_loss_steps as usize * batch {
        let x = &activations[(loss_steps[r / batch] as usize * batch + r % batch) * n..][..n];
        for k in 0..width {
            let y = bias[k] as f64 + (0..n).map(|j| x[j] as f64 * w[j * width + k] as f64).sum::<f64>();
            outputs[r * p.total as usize + p.col0 as usize + k] = y as f32;
        }
    }
}

/// Twin of `shaders/head_loss.wgsl`.
pub fn head_loss(p: &HeadLossParams, outputs: &[f32], targets: &[f32], grads: &mut [f32], metrics_out: &mut [f32]) {
    let width = p.width as usize;
    let scale = p.loss_scale as f64;
    let (mut loss, mut errors, mut count) = (0.0f64, 0u32, 0u32);
    for r in 0..(p.n_loss_steps * p.batch) as usize {
        let base = r * p.total as usize + p.col0 as usize;
        let (y, t) = (&outputs[base..][..width], &targets[base..][..width]);
        if p.kind == crate::head_loss::SOFTMAX {
            // The first maximum, as the kernel's strict comparison finds it.
            let argmax = |v: &[f32]| (0..v.len()).fold(0, |best, k| if v[k] > v[best] { k } else { best });
            let top = y[argmax(y)] as f64;
            let log_z = top + y.iter().map(|&v| (v as f64 - top).exp()).sum::<f64>().ln();
            let mass: f64 = t.iter().map(|&v| v as f64).sum();
            for k in 0..width {
                loss -= t[k] as f64 * (y[k] as f64 - log_z);
                grads[base + k] = (scale * ((y[k] as f64 - log_z).exp() * mass - t[k] as f64)) as f32;
            }
            count += 1;
            errors += (argmax(y) != argmax(t)) as u32;
        } else {
            for k in 0..width {
                let d = y[k] as f64 - t[k] as f64;
                loss += d * d;
                grads[base + k] = (2.0 * scale * d) as f32;
                if t[k] != 0.0 {
                    count += 1;
                    errors += ((y[k] > 0.0) != (t[k] > 0.0)) as u32;
                }
            }
        }
    }
    let before = if p.accumulate != 0 {
        [metrics_out[metrics::LOSS], metrics_out[metrics::SIGN_ERRORS], metrics_out[metrics::SIGN_COUNT]]
    } else {
        [0.0; 3]
    };
    metrics_out[metrics::LOSS] = before[0] + (scale * loss) as f32;
    metrics_out[metrics::SIGN_ERRORS] = before[1] + errors as f32;
    metrics_out[metrics::SIGN_COUNT] = before[2] + count as f32;
}

/// Twin of `shaders/head_backward.wgsl`.
pub fn head_backward(
    p: &HeadBackwardParams,
    params: &[f32],
    activations: &[f32],
    loss_steps: &[u32],
    head_grads: &[f32],
    partials: &mut [f32],
    grads: &mut [f32],
) {
    let (n, batch, width, total, col0) = (p.n as usize, p.batch as usize, p.width as usize, p.total as usize, p.col0 as usize);
    let wo = p.w_offset as usize;
    let rows = p.n_loss_steps as usize * batch;
    let dy = |r: usize, k: usize| head_grads[r * total + col0 + k] as f64;
    for k in 0..width {
        grads[wo + n * width + k] += (0..rows).map(|r| dy(r, k)).sum::<f64>() as f32;
    }
    for j in 0..n {
        let mut dw = vec![0.0f64; width];
        for r in 0..rows {
            let x = activations[(loss_steps[r / batch] as usize * batch + r % batch) * n + j] as f64;
            let gx: f64 = (0..width).map(|k| params[wo + j * width + k] as f64 * dy(r, k)).sum();
            for (k, d) in dw.iter_mut().enumerate() {
                *d += x * dy(r, k);
            }
            let out = p.loss_grad_offset as usize + r * n + j;
            partials[out] = if p.accumulate != 0 { (partials[out] as f64 + gx) as f32 } else { gx as f32 };
        }
        for k in 0..width {
            grads[wo + j * width + k] += dw[k] as f32;
        }
    }
}

/// Twin of `shaders/loss_mse.wgsl`.
pub fn loss_mse(p: &LossMseParams, activations: &[f32], targets: &[f32], loss_steps: &[u32], metrics_out: &mut [f32]) {
    let row = (p.batch * p.n) as usize;
    let (mut loss, mut errors, mut count) = (0.0f64, 0u32, 0u32);
    for (s, &step) in loss_steps.iter().enumerate().take(p.n_loss_steps as usize) {
        for e in 0..row {
            let (x, y) = (activations[step as usize * row + e], targets[s * row + e]);
            loss += (x as f64 - y as f64).powi(2);
            if y != 0.0 {
                count += 1;
                errors += ((x > 0.0) != (y > 0.0)) as u32;
            }
        }
    }
    metrics_out[metrics::LOSS] = (p.loss_scale as f64 * loss) as f32;
    metrics_out[metrics::SIGN_ERRORS] = errors as f32;
    metrics_out[metrics::SIGN_COUNT] = count as f32;
}

/// Twin of `shaders/finish_gradients.wgsl`.
pub fn finish_gradients(p: &FinishGradientsParams, partials: &[f32], grads: &mut [f32], metrics_out: &mut [f32]) {
    for job in p.reductions() {
        let (dst, len, rows, src) = (job.dst as usize, job.len as usize, job.rows as usize, job.src as usize);
        for k in 0..len {
            let sum: f64 = (0..rows).map(|r| partials[src + r * len + k] as f64).sum();
            grads[dst + k] = (grads[dst + k] as f64 + sum) as f32;
        }
    }
    grads[p.frozen0_begin as usize..p.frozen0_end as usize].fill(0.0);
    grads[p.frozen1_begin as usize..p.frozen1_end as usize].fill(0.0);
    let norm_sq: f64 = grads[..p.param_count as usize].iter().map(|&g| g as f64 * g as f64).sum();
    metrics_out[metrics::GRAD_NORM_SQ] = norm_sq as f32;
}

/// Twin of `shaders/adam_update.wgsl`.
pub fn adam_update(p: &AdamParams, grads: &[f32], metrics_in: &[f32], params: &mut [f32], adam_m: &mut [f32], adam_v: &mut [f32]) {
    let mut scale = 1.0f32;
    if p.clip_norm > 0.0 {
        let coef = p.clip_norm / (metrics_in[metrics::GRAD_NORM_SQ].sqrt() + 1e-6);
        if coef < 1.0 {
            scale = coef;
        }
    }
    for k in 0..p.param_count as usize {
        let g = scale * grads[k];
        let m = p.beta1 * adam_m[k] + (1.0 - p.beta1) * g;
        let v = p.beta2 * adam_v[k] + (1.0 - p.beta2) * g * g;
        adam_m[k] = m;
        adam_v[k] = v;
        params[k] -= p.lr * (m / p.bias1) / ((v / p.bias2).sqrt() + p.eps);
    }
}

/// Twin of `shaders/stream_triad.wgsl`: `p.elements` quads.
pub fn stream_triad(p: &StreamTriadParams, a: &[f32], b: &[f32], c: &mut [f32]) {
    for k in 0..4 * p.elements as usize {
        c[k] = a[k] + p.scale * b[k];
    }
}

/// Twin of `shaders/stream_triad_wide.wgsl`: the same triad over `p.elements` runs of eight floats.
pub fn stream_triad_wide(p: &StreamTriadParams, a: &[f32], b: &[f32], c: &mut [f32]) {
    for k in 0..8 * p.elements as usize {
        c[k] = a[k] + p.scale * b[k];
    }
}
