//! CPU twins of the WGSL kernels: one function per kernel, named like it, taking its uniform params
//! and then its buffers in binding order. Elementwise updates are done in f32 like the GPU; sums are
//! accumulated in f64, so a GPU result may differ from its twin only by f32 summation rounding.

use crate::adam_update::AdamParams;
use crate::backward_activation::{BackwardActivationParams, LOSS_NONE};
use crate::backward_trace::BackwardTraceParams;
use crate::finish_gradients::FinishGradientsParams;
use crate::forward_step::ForwardStepParams;
use crate::loss_mse::LossMseParams;
use crate::stream_triad::StreamTriadParams;
use crate::{TRACE_TILE, is_clamped, metrics};

/// Matches the kernel's clamp before tanh (tanh(15) == 1 in f32).
const TANH_CLAMP: f64 = 15.0;

/// Twin of `shaders/forward_step.wgsl`: row t of `activations` holds u(t) on entry and x(t) on exit
/// (u(t) itself where the clamp mask is set).
pub fn forward_step(p: &ForwardStepParams, params: &[f32], trace: &mut [f32], activations: &mut [f32], clamp: &[u32]) {
    let (n, batch, t) = (p.n as usize, p.batch as usize, p.step as usize);
    let row = batch * n;
    let eta = params[p.eta_offset as usize];
    let decay = 1.0 - eta;
    let w = &params[p.w_offset as usize..][..n * n];
    let alpha = &params[p.alpha_offset as usize..][..n * n];
    for b in 0..batch {
        let x_prev: Vec<f32> = activations[(t - 1) * row + b * n..][..n].to_vec();
        let h = &mut trace[b * n * n..][..n * n];
        if t >= 2 {
            let x_prev2 = &activations[(t - 2) * row + b * n..][..n];
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] = decay * h[i * n + j] + (eta * x_prev[j]) * x_prev2[i];
                }
            }
        }
        for j in 0..n {
            let mut a = activations[t * row + b * n + j] as f64;
            for i in 0..n {
                a += (w[i * n + j] + alpha[i * n + j] * h[i * n + j]) as f64 * x_prev[i] as f64;
            }
            let words = p.clamp_words as usize;
            let held = words != 0 && is_clamped(&clamp[((t - 1) * batch + b) * words..][..words], j);
            if !held {
                activations[t * row + b * n + j] = a.clamp(-TANH_CLAMP, TANH_CLAMP).tanh() as f32;
            }
        }
    }
}

/// Twin of `shaders/backward_activation.wgsl`.
pub fn backward_activation(
    p: &BackwardActivationParams,
    activations: &[f32],
    targets: &[f32],
    partials: &[f32],
    clamp: &[u32],
    preact_grad: &mut [f32],
) {
    let (n, batch, tiles) = (p.n as usize, p.batch as usize, p.n_tiles as usize);
    for b in 0..batch {
        for j in 0..n {
            let x = activations[p.step as usize * batch * n + b * n + j];
            let mut gx = 0.0f64;
            if p.loss_slot != LOSS_NONE {
                let y = targets[p.loss_slot as usize * batch * n + b * n + j];
                gx = 2.0 * p.loss_scale as f64 * (x as f64 - y as f64);
            }
            let rows = (b * n + j) * tiles;
            let cols = rows + batch * n * tiles;
            for k in 0..tiles {
                gx += partials[rows + k] as f64 + partials[cols + k] as f64;
            }
            let words = p.clamp_words as usize;
            let held = words != 0 && is_clamped(&clamp[((p.step as usize - 1) * batch + b) * words..][..words], j);
            preact_grad[b * n + j] = if held { 0.0 } else { (gx * (1.0 - x as f64 * x as f64)) as f32 };
        }
    }
}

/// Twin of `shaders/backward_trace.wgsl`: partial sums are formed per 16x16 tile exactly as the
/// kernel lays them out.
#[allow(clippy::too_many_arguments)]
pub fn backward_trace(
    p: &BackwardTraceParams,
    params: &[f32],
    activations: &[f32],
    preact_grad: &[f32],
    trace: &mut [f32],
    trace_grad: &mut [f32],
    grads: &mut [f32],
    partials: &mut [f32],
) {
    let (n, batch, t, tiles) = (p.n as usize, p.batch as usize, p.step as usize, p.n_tiles as usize);
    let tile = TRACE_TILE as usize;
    let row = batch * n;
    let eta = params[p.eta_offset as usize];
    let decay = 1.0 - eta;
    let (w_off, a_off) = (p.w_offset as usize, p.alpha_offset as usize);
    let x = |step: usize, b: usize, k: usize| activations[step * row + b * n + k];
    let mut row_sums = vec![0.0f64; batch * n * tiles];
    let mut col_sums = vec![0.0f64; batch * n * tiles];
    let mut eta_sums = vec![0.0f64; tiles * tiles];
    for i in 0..n {
        for j in 0..n {
            let (w_ij, alpha_ij) = (params[w_off + i * n + j], params[a_off + i * n + j]);
            let (mut d_w, mut d_alpha) = (0.0f64, 0.0f64);
            for b in 0..batch {
                let idx = (b * n + i) * n + j;
                let (xi_prev, xj_now, ga_j) = (x(t - 1, b, i), x(t, b, j), preact_grad[b * n + j]);
                let (h, g_next) = (trace[idx], trace_grad[idx]);
                d_w += ga_j as f64 * xi_prev as f64;
                d_alpha += ga_j as f64 * h as f64 * xi_prev as f64;
                eta_sums[(i / tile) * tiles + j / tile] += g_next as f64 * (xi_prev as f64 * xj_now as f64 - h as f64);
                row_sums[(b * n + i) * tiles + j / tile] +=
                    (w_ij as f64 + alpha_ij as f64 * h as f64) * ga_j as f64 + eta as f64 * g_next as f64 * xj_now as f64;
                let g = decay * g_next + alpha_ij * xi_prev * ga_j;
                trace_grad[idx] = g;
                if t >= 2 {
                    let (xi_prev2, xj_prev) = (x(t - 2, b, i), x(t - 1, b, j));
                    col_sums[(b * n + j) * tiles + i / tile] += eta as f64 * g as f64 * xi_prev2 as f64;
                    trace[idx] = (h - eta * xi_prev2 * xj_prev) / decay;
                }
            }
            grads[w_off + i * n + j] += d_w as f32;
            grads[a_off + i * n + j] += d_alpha as f32;
        }
    }
    for (k, v) in row_sums.iter().enumerate() {
        partials[k] = *v as f32;
    }
    for (k, v) in col_sums.iter().enumerate() {
        partials[batch * n * tiles + k] = *v as f32;
    }
    let eta_start = 2 * batch * n * tiles;
    for (k, v) in eta_sums.iter().enumerate() {
        partials[eta_start + k] += *v as f32;
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
    let eta = p.eta_offset as usize;
    let eta_partials = &partials[p.eta_partials_offset as usize..][..p.n_eta_partials as usize];
    let partial_sum: f64 = eta_partials.iter().map(|&v| v as f64).sum();
    grads[eta] = if p.learn_eta != 0 { (grads[eta] as f64 + partial_sum) as f32 } else { 0.0 };
    grads[p.frozen_begin as usize..p.frozen_end as usize].fill(0.0);
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

/// Twin of `shaders/stream_triad.wgsl`.
pub fn stream_triad(p: &StreamTriadParams, a: &[f32], b: &[f32], c: &mut [f32]) {
    for k in 0..p.count as usize {
        c[k] = a[k] + p.scale * b[k];
    }
}
