//! Whole-episode reference in f64, deliberately plain: the forward pass stores the traces of every
//! step and the backward pass applies the chain rule step by step (design/plastic-bptt.md). It covers
//! every rule a [`Plasticity`] describes (see its module doc, which is the spec). Its gradients are
//! checked against central finite differences in the tests below; the GPU sweep, which recovers the
//! trace in reverse or recomputes it from checkpoints instead of storing it, is checked against this.
//!
//! With `pre = x_i(t-1)`, `post = x_j(t)`, `x(0) = 0`, `H(1) = E(1) = 0`, for t = 1..=T:
//!
//! ```text
//! a_j(t)      = sum_i (w_ij + alpha_eff_ij H_ij(t)) x_i(t-1) + u_j(t)
//! x_j(t)      = tanh(a_j(t))                  (u_j(t) where the clamp mask is set)
//! M_b(t)      = tanh(sum_k mod_w_k x_bk(t) + mod_b)                     (modulated only)
//! rate_bj(t)  = eta | M_b(t) | mod_u_j M_b(t) + mod_c_j                 (by Modulation)
//! H(t+1)      = clip(U_rate(H(t)))                                      (not retroactive)
//! E(t+1)      = U_eta(E(t)),  H(t+1) = clip(H(t) + rate E(t))           (retroactive)
//! ```

// Index loops on purpose: they read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use crate::{AlphaShape, EtaShape, Modulation, Plasticity, Rule};

/// A plastic network of N neurons. `w[i * n + j]`: pre-synaptic i, post-synaptic j.
#[derive(Clone, Debug, PartialEq)]
pub struct Network64 {
    pub n: usize,
    pub spec: Plasticity,
    /// (N, N)
    pub w: Vec<f64>,
    /// `spec.alpha_len(n)` values: (N, N), (N) or (1) by [`AlphaShape`].
    pub alpha: Vec<f64>,
    /// `spec.eta_len(n)` values: (1) or (N) by [`EtaShape`].
    pub eta: Vec<f64>,
    /// `spec.modulator_len(n)` values: `[mod_w (N), mod_b (1), mod_u (N), mod_c (N)]`, the last two
    /// only for [`Modulation::PerNeuron`]; empty without modulation.
    pub modulator: Vec<f64>,
}

/// Lengths of the four parameter groups `[w, alpha, eta, modulator]` of the flat layout.
fn group_lens(spec: &Plasticity, n: usize) -> [usize; 4] {
    let n32 = u32::try_from(n).expect("n fits in u32");
    [n * n, spec.alpha_len(n32) as usize, spec.eta_len(n32) as usize, spec.modulator_len(n32) as usize]
}

impl Network64 {
    /// The paper's decay rule ([`Plasticity::PAPER`]) with a scalar eta.
    pub fn paper(n: usize, w: Vec<f64>, alpha: Vec<f64>, eta: f64) -> Self {
        let net = Self { n, spec: Plasticity::PAPER, w, alpha, eta: vec![eta], modulator: Vec::new() };
        net.validate();
        net
    }

    /// From a flat parameter vector laid out `[w, alpha, eta, modulator]` (the runtime's layout).
    pub fn from_flat(n: usize, spec: Plasticity, flat: &[f64]) -> Self {
        let [lw, la, le, lm] = group_lens(&spec, n);
        assert_eq!(
            flat.len(),
            lw + la + le + lm,
            "flat parameters of N = {n} with {spec:?}: [w {lw}, alpha {la}, eta {le}, modulator {lm}]"
        );
        let (w, rest) = flat.split_at(lw);
        let (alpha, rest) = rest.split_at(la);
        let (eta, modulator) = rest.split_at(le);
        let net = Self { n, spec, w: w.to_vec(), alpha: alpha.to_vec(), eta: eta.to_vec(), modulator: modulator.to_vec() };
        net.validate();
        net
    }

    /// The flat parameter vector `[w, alpha, eta, modulator]`.
    pub fn to_flat(&self) -> Vec<f64> {
        [&self.w[..], &self.alpha[..], &self.eta[..], &self.modulator[..]].concat()
    }

    /// Panics unless the spec is valid and every parameter group has the length the spec says.
    fn validate(&self) {
        if let Err(e) = self.spec.check() {
            panic!("invalid plasticity spec {:?}: {e}", self.spec);
        }
        let [lw, la, le, lm] = group_lens(&self.spec, self.n);
        let have = [self.w.len(), self.alpha.len(), self.eta.len(), self.modulator.len()];
        assert_eq!(have, [lw, la, le, lm], "lengths of [w, alpha, eta, modulator] for N = {} with {:?}", self.n, self.spec);
    }

    /// Index into `alpha` of connection i -> j, or None where the plastic weight is forced to 0
    /// (the diagonal without plastic self-connections).
    fn alpha_index(&self, i: usize, j: usize) -> Option<usize> {
        if i == j && !self.spec.plastic_self {
            return None;
        }
        Some(match self.spec.alpha {
            AlphaShape::PerConnection => i * self.n + j,
            AlphaShape::PerNeuron => j,
            AlphaShape::Scalar => 0,
        })
    }

    fn alpha_eff(&self, i: usize, j: usize) -> f64 {
        self.alpha_index(i, j).map_or(0.0, |k| self.alpha[k])
    }

    /// Index into `eta` of post-synaptic neuron j's rate.
    fn eta_index(&self, j: usize) -> usize {
        match self.spec.eta {
            EtaShape::Scalar => 0,
            EtaShape::PerNeuron => j,
        }
    }

    fn eta_of(&self, j: usize) -> f64 {
        self.eta[self.eta_index(j)]
    }

    // Offsets of the modulator's parts in `modulator`.
    fn mod_w(&self, k: usize) -> usize {
        k
    }
    fn mod_b(&self) -> usize {
        self.n
    }
    fn mod_u(&self, j: usize) -> usize {
        self.n + 1 + j
    }
    fn mod_c(&self, j: usize) -> usize {
        2 * self.n + 1 + j
    }

    /// rate_bj(t) of H's update, given the modulation `m` = M_b(t) (ignored when not modulated).
    fn rate(&self, m: f64, j: usize) -> f64 {
        match self.spec.modulation {
            Modulation::None => self.eta_of(j),
            Modulation::Simple => m,
            Modulation::PerNeuron => self.modulator[self.mod_u(j)] * m + self.modulator[self.mod_c(j)],
        }
    }

    fn clip(&self, v: f64) -> f64 {
        match self.spec.clip {
            Some(c) => v.clamp(-(c as f64), c as f64),
            None => v,
        }
    }

    /// d clip(v) / dv: 1 strictly inside (-c, c), else 0.
    fn clip_passes(&self, v: f64) -> bool {
        match self.spec.clip {
            Some(c) => -(c as f64) < v && v < c as f64,
            None => true,
        }
    }
}

/// The rule's update U_r(h) of one element.
fn rule_update(rule: Rule, r: f64, h: f64, pre: f64, post: f64) -> f64 {
    match rule {
        Rule::Decay => (1.0 - r) * h + r * pre * post,
        Rule::Oja => h + r * post * (pre - post * h),
        Rule::Additive => h + r * pre * post,
    }
}

/// Partial derivatives of [`rule_update`] with respect to each of its inputs.
struct RulePartials {
    h: f64,
    r: f64,
    pre: f64,
    post: f64,
}

fn rule_partials(rule: Rule, r: f64, h: f64, pre: f64, post: f64) -> RulePartials {
    match rule {
        Rule::Decay => RulePartials { h: 1.0 - r, r: pre * post - h, pre: r * post, post: r * pre },
        Rule::Oja => {
            RulePartials { h: 1.0 - r * post * post, r: post * (pre - post * h), pre: r * post, post: r * pre - 2.0 * r * post * h }
        }
        Rule::Additive => RulePartials { h: 1.0, r: pre * post, pre: r * post, post: r * pre },
    }
}

/// The data of a batch of episodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode64 {
    pub batch: usize,
    pub steps: usize,
    /// (T, B, N): u(t) in row t - 1.
    pub inputs: Vec<f64>,
    /// 1-based steps whose activations enter the loss, one row of `targets` each.
    pub loss_steps: Vec<usize>,
    /// (L, B, N)
    pub targets: Vec<f64>,
    /// (T, B, N): where true, x_j(t) = u_j(t) (the neuron is held at its input). Empty: none.
    pub clamp: Vec<bool>,
    /// loss = loss_scale * sum of squared errors over loss steps, batch and neurons.
    pub loss_scale: f64,
}

/// Everything the forward pass produced.
#[derive(Clone, Debug)]
pub struct Forward64 {
    /// (T + 1, B, N): x(t) in row t, x(0) = 0.
    pub activations: Vec<f64>,
    /// H(t) for t = 1..=T + 1, each (B, N, N); `traces[t - 1]` is H(t).
    pub traces: Vec<Vec<f64>>,
    /// E(t) for t = 1..=T + 1 like `traces` when `spec.retroactive`, else empty.
    pub eligibility: Vec<Vec<f64>>,
    /// (T + 1, B): M_b(t) at `[t * B + b]` when modulated (row 0 is 0), else empty.
    pub modulation: Vec<f64>,
}

/// Gradients of the loss, summed over the batch, shaped like [`Network64`]'s parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients64 {
    pub w: Vec<f64>,
    pub alpha: Vec<f64>,
    pub eta: Vec<f64>,
    pub modulator: Vec<f64>,
    /// dL/du(t), (T, B, N) in the layout of `Episode64::inputs`: the chain rule's way into whatever
    /// produced the inputs (an input layer). Not part of the flat layout.
    pub inputs: Vec<f64>,
}

impl Gradients64 {
    /// The flat layout `[w, alpha, eta, modulator]`, like [`Network64::to_flat`].
    pub fn to_flat(&self) -> Vec<f64> {
        [&self.w[..], &self.alpha[..], &self.eta[..], &self.modulator[..]].concat()
    }
}

fn check_episode(n: usize, ep: &Episode64) {
    let cells = ep.steps * ep.batch * n;
    assert_eq!(ep.inputs.len(), cells, "inputs are (T, B, N)");
    assert_eq!(ep.targets.len(), ep.loss_steps.len() * ep.batch * n, "targets are (L, B, N)");
    assert!(ep.clamp.is_empty() || ep.clamp.len() == cells, "clamp is empty or (T, B, N)");
    assert!(ep.loss_steps.iter().all(|&t| (1..=ep.steps).contains(&t)), "loss steps are in 1..=T");
}

/// The pre-clip value of H_ij(t+1) at one element: `U_rate(H(t))`, or `H(t) + rate E(t)` with a
/// retroactive trace (`e` is then E_ij(t); otherwise it is unused).
fn trace_input(net: &Network64, rate: f64, h: f64, e: f64, pre: f64, post: f64) -> f64 {
    if net.spec.retroactive { h + rate * e } else { rule_update(net.spec.rule, rate, h, pre, post) }
}

pub fn forward(net: &Network64, ep: &Episode64) -> Forward64 {
    net.validate();
    let (n, batch, steps) = (net.n, ep.batch, ep.steps);
    check_episode(n, ep);
    let (row, cells) = (batch * n, batch * n * n);
    let (retro, modulated) = (net.spec.retroactive, net.spec.modulated());
    let mut activations = vec![0.0; (steps + 1) * row];
    let mut traces = vec![vec![0.0; cells]];
    let mut eligibility = if retro { vec![vec![0.0; cells]] } else { Vec::new() };
    let mut modulation = if modulated { vec![0.0; (steps + 1) * batch] } else { Vec::new() };
    for t in 1..=steps {
        let h = &traces[t - 1];
        let mut h_next = vec![0.0; cells];
        let mut e_next = if retro { vec![0.0; cells] } else { Vec::new() };
        for b in 0..batch {
            let x_prev = |i: usize| activations[(t - 1) * row + b * n + i];
            let mut x_now = vec![0.0; n];
            for (j, x_j) in x_now.iter_mut().enumerate() {
                let u = ep.inputs[(t - 1) * row + b * n + j];
                let mut a = u;
                for i in 0..n {
                    a += (net.w[i * n + j] + net.alpha_eff(i, j) * h[(b * n + i) * n + j]) * x_prev(i);
                }
                let held = !ep.clamp.is_empty() && ep.clamp[(t - 1) * row + b * n + j];
                *x_j = if held { u } else { a.tanh() };
            }
            let m = if modulated {
                let s: f64 = (0..n).map(|k| net.modulator[net.mod_w(k)] * x_now[k]).sum::<f64>() + net.modulator[net.mod_b()];
                s.tanh()
            } else {
                0.0
            };
            for i in 0..n {
                for j in 0..n {
                    let idx = (b * n + i) * n + j;
                    let (pre, post) = (x_prev(i), x_now[j]);
                    let e = if retro { eligibility[t - 1][idx] } else { 0.0 };
                    h_next[idx] = net.clip(trace_input(net, net.rate(m, j), h[idx], e, pre, post));
                    if retro {
                        e_next[idx] = rule_update(net.spec.rule, net.eta_of(j), e, pre, post);
                    }
                }
            }
            activations[t * row + b * n..][..n].copy_from_slice(&x_now);
            if modulated {
                modulation[t * batch + b] = m;
            }
        }
        traces.push(h_next);
        if retro {
            eligibility.push(e_next);
        }
    }
    Forward64 { activations, traces, eligibility, modulation }
}

pub fn loss(ep: &Episode64, fwd: &Forward64) -> f64 {
    let row = fwd.activations.len() / (ep.steps + 1);
    let mut sum = 0.0;
    for (s, &t) in ep.loss_steps.iter().enumerate() {
        for e in 0..row {
            sum += (fwd.activations[t * row + e] - ep.targets[s * row + e]).powi(2);
        }
    }
    ep.loss_scale * sum
}

/// Backpropagation through the whole episode, gradients summed over the batch. Every parameter gets
/// its full gradient, including ones the spec leaves unused (their gradient is 0).
///
/// Sweeping t = T down to 1, with `gh` = dL/dH(t+1) and `ge` = dL/dE(t+1) on entry, step t goes back
/// through, in reverse order of the forward: the trace updates (which read x(t), x(t-1), H(t), E(t)
/// and rate(t)), the rate (eta or the modulator, which reads x(t)), and only then, with every path
/// into x(t) collected, through x(t) = tanh(a(t)) into w, alpha, H(t) and x(t-1).
pub fn backward(net: &Network64, ep: &Episode64, fwd: &Forward64) -> Gradients64 {
    let row = fwd.activations.len() / (ep.steps + 1);
    let mut loss_grad = vec![0.0; ep.loss_steps.len() * row];
    for (s, &t) in ep.loss_steps.iter().enumerate() {
        for e in 0..row {
            loss_grad[s * row + e] = 2.0 * ep.loss_scale * (fwd.activations[t * row + e] - ep.targets[s * row + e]);
        }
    }
    backward_with_loss_grad(net, ep, fwd, &loss_grad)
}

/// [`backward`] for any loss of the loss steps' activations: `loss_grad` (L, B, N) is dL/dx(t_s)
/// (output heads give it, see [`heads_backward`]); `ep.targets` is not read.
pub fn backward_with_loss_grad(net: &Network64, ep: &Episode64, fwd: &Forward64, loss_grad: &[f64]) -> Gradients64 {
    net.validate();
    let (n, batch, steps) = (net.n, ep.batch, ep.steps);
    check_episode(n, ep);
    let (row, cells) = (batch * n, batch * n * n);
    let (retro, modulated, rule) = (net.spec.retroactive, net.spec.modulated(), net.spec.rule);
    let x = |t: usize, b: usize, k: usize| fwd.activations[t * row + b * n + k];
    let mut grads = Gradients64 {
        w: vec![0.0; net.w.len()],
        alpha: vec![0.0; net.alpha.len()],
        eta: vec![0.0; net.eta.len()],
        modulator: vec![0.0; net.modulator.len()],
        inputs: vec![0.0; ep.inputs.len()],
    };
    // gx[t]: dL/dx(t) from every path found so far; starts with the direct loss terms.
    let mut gx = vec![vec![0.0; row]; steps + 1];
    for (s, &t) in ep.loss_steps.iter().enumerate() {
        for e in 0..row {
            gx[t][e] += loss_grad[s * row + e];
        }
    }
    let mut gh_next = vec![0.0; cells]; // dL/dH(t+1), zero for H(T+1)
    let mut ge_next = vec![0.0; cells]; // dL/dE(t+1), zero for E(T+1); unused unless retroactive
    for t in (1..=steps).rev() {
        let h = &fwd.traces[t - 1];
        let mut gh = vec![0.0; cells]; // dL/dH(t)
        let mut ge = vec![0.0; cells]; // dL/dE(t)
        for b in 0..batch {
            let m = if modulated { fwd.modulation[t * batch + b] } else { 0.0 };

            // 1. The trace updates of step t. grate[j]: dL/drate_bj(t).
            let mut grate = vec![0.0; n];
            for i in 0..n {
                for j in 0..n {
                    let idx = (b * n + i) * n + j;
                    let (pre, post, r) = (x(t - 1, b, i), x(t, b, j), net.rate(m, j));
                    let e = if retro { fwd.eligibility[t - 1][idx] } else { 0.0 };
                    let v = trace_input(net, r, h[idx], e, pre, post);
                    // dL/dv through H(t+1) = clip(v).
                    let gv = if net.clip_passes(v) { gh_next[idx] } else { 0.0 };
                    if retro {
                        // v = H(t) + r E(t)
                        gh[idx] += gv;
                        ge[idx] += gv * r;
                        grate[j] += gv * e;
                        // E(t+1) = U_eta(E(t)), never clipped.
                        let p = rule_partials(rule, net.eta_of(j), e, pre, post);
                        let g = ge_next[idx];
                        ge[idx] += g * p.h;
                        grads.eta[net.eta_index(j)] += g * p.r;
                        gx[t - 1][b * n + i] += g * p.pre;
                        gx[t][b * n + j] += g * p.post;
                    } else {
                        // v = U_r(H(t))
                        let p = rule_partials(rule, r, h[idx], pre, post);
                        gh[idx] += gv * p.h;
                        grate[j] += gv * p.r;
                        gx[t - 1][b * n + i] += gv * p.pre;
                        gx[t][b * n + j] += gv * p.post;
                    }
                }
            }

            // 2. The rate: eta, or the modulator M_b(t) = tanh(s), s = mod_w . x(t) + mod_b.
            let mut gm = 0.0; // dL/dM_b(t)
            for (j, &g) in grate.iter().enumerate() {
                match net.spec.modulation {
                    Modulation::None => grads.eta[net.eta_index(j)] += g,
                    Modulation::Simple => gm += g,
                    Modulation::PerNeuron => {
                        grads.modulator[net.mod_u(j)] += g * m;
                        grads.modulator[net.mod_c(j)] += g;
                        gm += g * net.modulator[net.mod_u(j)];
                    }
                }
            }
            if modulated {
                let gs = gm * (1.0 - m * m);
                for k in 0..n {
                    grads.modulator[net.mod_w(k)] += gs * x(t, b, k);
                    gx[t][b * n + k] += gs * net.modulator[net.mod_w(k)];
                }
                grads.modulator[net.mod_b()] += gs;
            }

            // 3. gx[t] is complete: through x(t) = tanh(a(t)); a held neuron does not depend on a.
            let held = |j: usize| !ep.clamp.is_empty() && ep.clamp[(t - 1) * row + b * n + j];
            let ga: Vec<f64> = (0..n).map(|j| if held(j) { 0.0 } else { gx[t][b * n + j] * (1.0 - x(t, b, j).powi(2)) }).collect();
            // u(t) enters a(t) directly, or is x(t) itself where the neuron is held.
            for j in 0..n {
                grads.inputs[(t - 1) * row + b * n + j] = if held(j) { gx[t][b * n + j] } else { ga[j] };
            }
            for i in 0..n {
                let pre = x(t - 1, b, i);
                for j in 0..n {
                    let idx = (b * n + i) * n + j;
                    let alpha = net.alpha_eff(i, j);
                    grads.w[i * n + j] += ga[j] * pre;
                    if let Some(k) = net.alpha_index(i, j) {
                        grads.alpha[k] += ga[j] * h[idx] * pre;
                    }
                    gh[idx] += alpha * pre * ga[j];
                    gx[t - 1][b * n + i] += (net.w[i * n + j] + alpha * h[idx]) * ga[j];
                }
            }
        }
        gh_next = gh;
        ge_next = ge;
    }
    grads
}

/// An output head in f64: `y = x W + b`, W (N, K) row-major, read at every loss step; its loss is
/// squared error (linear) or softmax cross-entropy against target probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct Head64 {
    pub width: usize,
    pub softmax: bool,
    pub w: Vec<f64>,
    pub b: Vec<f64>,
}

/// The heads' outputs (L, B, total) at the loss steps, side by side.
pub fn heads_forward(heads: &[Head64], ep: &Episode64, fwd: &Forward64, n: usize) -> Vec<f64> {
    let total: usize = heads.iter().map(|h| h.width).sum();
    let rows = ep.loss_steps.len() * ep.batch;
    let mut y = vec![0.0; rows * total];
    for r in 0..rows {
        let x = &fwd.activations[(ep.loss_steps[r / ep.batch] * ep.batch + r % ep.batch) * n..][..n];
        let mut col0 = 0;
        for h in heads {
            for k in 0..h.width {
                y[r * total + col0 + k] = h.b[k] + (0..n).map(|j| x[j] * h.w[j * h.width + k]).sum::<f64>();
            }
            col0 += h.width;
        }
    }
    y
}

/// The heads' summed loss and its gradient dl/dy (L, B, total); `targets` (L, B, total).
pub fn heads_loss(heads: &[Head64], y: &[f64], targets: &[f64], loss_scale: f64) -> (f64, Vec<f64>) {
    let total: usize = heads.iter().map(|h| h.width).sum();
    let (mut loss, mut dy) = (0.0, vec![0.0; y.len()]);
    for r in 0..y.len() / total {
        let mut col0 = 0;
        for h in heads {
            let (ys, ts) = (&y[r * total + col0..][..h.width], &targets[r * total + col0..][..h.width]);
            if h.softmax {
                let log_z = ys.iter().map(|v| v.exp()).sum::<f64>().ln();
                let mass: f64 = ts.iter().sum();
                for k in 0..h.width {
                    loss -= loss_scale * ts[k] * (ys[k] - log_z);
                    dy[r * total + col0 + k] = loss_scale * ((ys[k] - log_z).exp() * mass - ts[k]);
                }
            } else {
                for k in 0..h.width {
                    loss += loss_scale * (ys[k] - ts[k]).powi(2);
                    dy[r * total + col0 + k] = 2.0 * loss_scale * (ys[k] - ts[k]);
                }
            }
            col0 += h.width;
        }
    }
    (loss, dy)
}

/// One head's gradient: (dW (N, K), db (K)).
pub type HeadGradients64 = (Vec<f64>, Vec<f64>);

/// Back through the heads: dL/dx at the loss steps (L, B, N), for [`backward_with_loss_grad`], and
/// each head's (dW, db).
pub fn heads_backward(heads: &[Head64], ep: &Episode64, fwd: &Forward64, n: usize, dy: &[f64]) -> (Vec<f64>, Vec<HeadGradients64>) {
    let total: usize = heads.iter().map(|h| h.width).sum();
    let rows = ep.loss_steps.len() * ep.batch;
    let mut dx = vec![0.0; rows * n];
    let mut grads: Vec<HeadGradients64> = heads.iter().map(|h| (vec![0.0; n * h.width], vec![0.0; h.width])).collect();
    for r in 0..rows {
        let x = &fwd.activations[(ep.loss_steps[r / ep.batch] * ep.batch + r % ep.batch) * n..][..n];
        let mut col0 = 0;
        for (h, (dw, db)) in heads.iter().zip(grads.iter_mut()) {
            for k in 0..h.width {
                let g = dy[r * total + col0 + k];
                db[k] += g;
                for j in 0..n {
                    dw[j * h.width + k] += x[j] * g;
                    dx[r * n + j] += h.w[j * h.width + k] * g;
                }
            }
            col0 += h.width;
        }
    }
    (dx, grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const DECAY: Plasticity = Plasticity::PAPER;
    const OJA: Plasticity = Plasticity { rule: Rule::Oja, ..Plasticity::PAPER };
    const ADDITIVE: Plasticity = Plasticity { rule: Rule::Additive, ..Plasticity::PAPER };
    const RULES: [Plasticity; 3] = [DECAY, OJA, ADDITIVE];

    fn clipped(spec: Plasticity, c: f32) -> Plasticity {
        Plasticity { clip: Some(c), ..spec }
    }
    fn modulated(spec: Plasticity, modulation: Modulation) -> Plasticity {
        Plasticity { modulation, ..spec }
    }
    fn retroactive(spec: Plasticity, modulation: Modulation) -> Plasticity {
        Plasticity { modulation, retroactive: true, ..spec }
    }

    /// Random parameters in the flat layout: w and alpha in +-0.8, eta in [0.1, 0.5), mod_w and mod_u
    /// in +-0.8, mod_b and mod_c in +-0.3; inputs and targets in +-1; loss at the middle and last steps.
    fn random_problem(seed: u64, spec: Plasticity, n: usize, batch: usize, steps: usize) -> (Network64, Episode64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v = |len: usize, lo: f64, hi: f64| (0..len).map(|_| rng.random_range(lo..hi)).collect::<Vec<f64>>();
        let [lw, la, le, _] = group_lens(&spec, n);
        let mut flat = [v(lw, -0.8, 0.8), v(la, -0.8, 0.8), v(le, 0.1, 0.5)].concat();
        if spec.modulated() {
            flat.extend(v(n, -0.8, 0.8));
            flat.extend(v(1, -0.3, 0.3));
        }
        if spec.modulation == Modulation::PerNeuron {
            flat.extend(v(n, -0.8, 0.8));
            flat.extend(v(n, -0.3, 0.3));
        }
        let net = Network64::from_flat(n, spec, &flat);
        let loss_steps: Vec<usize> = if steps >= 3 { vec![steps / 2, steps] } else { vec![steps] };
        let ep = Episode64 {
            batch,
            steps,
            inputs: v(steps * batch * n, -1.0, 1.0),
            targets: v(loss_steps.len() * batch * n, -1.0, 1.0),
            loss_steps,
            loss_scale: 1.0,
            clamp: Vec::new(),
        };
        (net, ep)
    }

    /// Holds a third of the neurons at their inputs on every other step.
    fn with_clamp(mut ep: Episode64, n: usize) -> Episode64 {
        let row = ep.batch * n;
        ep.clamp = (0..ep.inputs.len()).map(|k| (k / row).is_multiple_of(2) && (k % n).is_multiple_of(3)).collect();
        ep
    }

    /// Name of flat parameter k: its group and index within the group.
    fn param_name(net: &Network64, k: usize) -> String {
        let n = net.n;
        let [lw, la, le, _] = group_lens(&net.spec, n);
        if k < lw {
            return format!("w[{k}] (i {}, j {})", k / n, k % n);
        }
        let k = k - lw;
        if k < la {
            return format!("alpha[{k}]");
        }
        let k = k - la;
        if k < le {
            return format!("eta[{k}]");
        }
        match k - le {
            m if m < n => format!("mod_w[{m}]"),
            m if m == n => "mod_b".to_string(),
            m if m < 2 * n + 1 => format!("mod_u[{}]", m - n - 1),
            m => format!("mod_c[{}]", m - 2 * n - 1),
        }
    }

    /// Pre-clip values of every trace update of the episode (every H(t+1), t = 1..=T).
    fn trace_inputs(net: &Network64, ep: &Episode64, fwd: &Forward64) -> Vec<f64> {
        let (n, batch) = (net.n, ep.batch);
        let row = batch * n;
        let mut out = Vec::new();
        for t in 1..=ep.steps {
            for b in 0..batch {
                let m = if net.spec.modulated() { fwd.modulation[t * batch + b] } else { 0.0 };
                for i in 0..n {
                    for j in 0..n {
                        let idx = (b * n + i) * n + j;
                        let e = if net.spec.retroactive { fwd.eligibility[t - 1][idx] } else { 0.0 };
                        let (pre, post) = (fwd.activations[(t - 1) * row + b * n + i], fwd.activations[t * row + b * n + j]);
                        out.push(trace_input(net, net.rate(m, j), fwd.traces[t - 1][idx], e, pre, post));
                    }
                }
            }
        }
        out
    }

    /// FD step, small enough that no perturbation moves a pre-clip value across the clip boundary
    /// for the seeds below (`check_gradients` verifies this for every perturbation).
    const FD_STEP: f64 = 1e-6;

    /// Where the clip cuts (|v| >= c) the pre-clip value v of every trace update of the episode.
    fn clip_mask(net: &Network64, ep: &Episode64, fwd: &Forward64) -> Vec<bool> {
        let c = net.spec.clip.map_or(f64::INFINITY, |c| c as f64);
        trace_inputs(net, ep, fwd).iter().map(|v| v.abs() >= c).collect()
    }

    /// With a clip, the test is only meaningful if the clip cuts some updates and passes others.
    fn assert_clip_is_exercised(case: &str, net: &Network64, ep: &Episode64, fwd: &Forward64) {
        let Some(c) = net.spec.clip else { return };
        let values = trace_inputs(net, ep, fwd);
        let active = values.iter().filter(|v| v.abs() >= c as f64).count();
        // Exact zeros are the trivial first updates (x(0) = 0); they do not count as exercising it.
        let inactive = values.iter().filter(|v| v.abs() < c as f64 && **v != 0.0).count();
        assert!(
            active > 0 && inactive > 0,
            "{case}: the clip must be active for some updates and not others: {active} active, {inactive} inactive"
        );
        // check_gradients verifies that no perturbation crosses the boundary; this margin (100 FD
        // steps) keeps the seeds below clear of it with room to spare.
        let margin = values.iter().map(|v| (v.abs() - c as f64).abs()).fold(f64::INFINITY, f64::min);
        assert!(margin > 100.0 * FD_STEP, "{case}: a pre-clip value lies {margin:e} from the clip boundary; choose another seed");
    }

    /// Central differences in f64 with step h = 1e-6: truncation error ~h^2 |f'''| ~ 1e-12, rounding
    /// ~1e-16 |L| / h times the roundoff accumulated over the episode; the worst seen over these
    /// cases is ~1e-8. 1e-7 absolute plus 1e-6 relative is ten times above that and far below any
    /// real bug (a wrong or missing term is of the size of the gradient itself).
    fn assert_close(what: &str, analytic: f64, numeric: f64) {
        let tol = 1e-7 + 1e-6 * numeric.abs();
        assert!((analytic - numeric).abs() <= tol, "{what}: backward {analytic} vs finite difference {numeric}");
    }

    /// Checks backward() against central finite differences for every learned parameter.
    fn check_gradients(case: &str, net: &Network64, ep: &Episode64) {
        let fwd = forward(net, ep);
        assert_clip_is_exercised(case, net, ep, &fwd);
        let mask = clip_mask(net, ep, &fwd);
        let analytic = backward(net, ep, &fwd).to_flat();
        let flat = net.to_flat();
        assert_eq!(analytic.len(), flat.len(), "{case}: gradient layout");
        for k in 0..flat.len() {
            let loss_at = |delta: f64| {
                let mut p = flat.clone();
                p[k] += delta;
                let p = Network64::from_flat(net.n, net.spec, &p);
                let fwd_p = forward(&p, ep);
                // A central difference across a kink of the clip measures neither side's derivative.
                if net.spec.clip.is_some() && clip_mask(&p, ep, &fwd_p) != mask {
                    panic!(
                        "{case}: perturbing {} by {delta:e} moves a trace update across the clip boundary; choose another seed",
                        param_name(net, k)
                    );
                }
                loss(ep, &fwd_p)
            };
            let numeric = (loss_at(FD_STEP) - loss_at(-FD_STEP)) / (2.0 * FD_STEP);
            assert_close(&format!("{case}: d{}", param_name(net, k)), analytic[k], numeric);
        }
    }

    fn check_case(name: &str, spec: Plasticity, seed: u64, n: usize, batch: usize, steps: usize) {
        let (net, ep) = random_problem(seed, spec, n, batch, steps);
        check_gradients(&format!("{name} (seed {seed}, N={n} B={batch} T={steps})"), &net, &ep);
    }

    #[test]
    fn reference_gradients_match_finite_differences() {
        for (seed, n, batch, steps) in [(1, 3, 1, 1), (2, 4, 2, 2), (3, 5, 2, 6), (4, 8, 3, 5)] {
            check_case("paper", DECAY, seed, n, batch, steps);
        }
    }

    #[test]
    fn reference_gradients_with_clamped_neurons_match_finite_differences() {
        let (net, ep) = random_problem(9, DECAY, 6, 2, 5);
        check_gradients("paper with clamping", &net, &with_clamp(ep, 6));
    }

    #[test]
    fn each_rule_matches_finite_differences() {
        check_case("decay", DECAY, 11, 4, 2, 5);
        check_case("oja", OJA, 12, 5, 2, 6);
        check_case("additive", ADDITIVE, 13, 4, 3, 4);
    }

    #[test]
    fn each_clipped_rule_matches_finite_differences() {
        check_case("decay clip 0.1", clipped(DECAY, 0.1), 201, 4, 2, 6);
        check_case("oja clip 0.1", clipped(OJA, 0.1), 22, 5, 2, 6);
        check_case("additive clip 0.1", clipped(ADDITIVE, 0.1), 23, 4, 2, 5);
        check_case("additive clip 0.2", clipped(ADDITIVE, 0.2), 24, 3, 3, 7);
    }

    #[test]
    fn parameter_shapes_match_finite_differences() {
        for (k, rule) in RULES.into_iter().enumerate() {
            let seed = 30 + 10 * k as u64;
            let name = format!("{:?}", rule.rule);
            check_case(&format!("{name} eta per neuron"), Plasticity { eta: EtaShape::PerNeuron, ..rule }, seed, 4, 2, 5);
            check_case(&format!("{name} alpha per neuron"), Plasticity { alpha: AlphaShape::PerNeuron, ..rule }, seed + 1, 5, 2, 5);
            check_case(&format!("{name} scalar alpha"), Plasticity { alpha: AlphaShape::Scalar, ..rule }, seed + 2, 4, 2, 6);
            check_case(&format!("{name} no plastic self"), Plasticity { plastic_self: false, ..rule }, seed + 3, 4, 2, 5);
        }
        let all = Plasticity { alpha: AlphaShape::PerNeuron, eta: EtaShape::PerNeuron, plastic_self: false, ..OJA };
        check_case("oja, alpha and eta per neuron, no plastic self", all, 61, 5, 2, 6);
        check_case("scalar alpha, no plastic self", Plasticity { alpha: AlphaShape::Scalar, plastic_self: false, ..DECAY }, 62, 3, 1, 4);
    }

    #[test]
    fn modulated_rules_match_finite_differences() {
        for (k, rule) in RULES.into_iter().enumerate() {
            let seed = 70 + 10 * k as u64;
            let name = format!("{:?}", rule.rule);
            check_case(&format!("{name} simple modulation"), modulated(rule, Modulation::Simple), seed, 4, 2, 6);
            check_case(&format!("{name} per-neuron modulation"), modulated(rule, Modulation::PerNeuron), seed + 1, 5, 3, 5);
        }
        check_case("additive clip 0.1 simple modulation", clipped(modulated(ADDITIVE, Modulation::Simple), 0.1), 101, 4, 2, 6);
        check_case("oja clip 0.1 per-neuron modulation", clipped(modulated(OJA, Modulation::PerNeuron), 0.1), 102, 4, 2, 6);
        let shapes = Plasticity { alpha: AlphaShape::PerNeuron, eta: EtaShape::PerNeuron, plastic_self: false, ..DECAY };
        check_case(
            "decay per-neuron modulation, alpha and eta per neuron, no plastic self",
            modulated(shapes, Modulation::PerNeuron),
            103,
            4,
            2,
            5,
        );
    }

    #[test]
    fn retroactive_modulation_matches_finite_differences() {
        for (k, rule) in RULES.into_iter().enumerate() {
            let seed = 110 + 10 * k as u64;
            let name = format!("{:?}", rule.rule);
            check_case(&format!("{name} retroactive simple"), retroactive(rule, Modulation::Simple), seed, 4, 2, 6);
            check_case(&format!("{name} retroactive per-neuron"), retroactive(rule, Modulation::PerNeuron), seed + 1, 5, 2, 7);
        }
        // Backpropamine's setting: additive, clipped, retroactive.
        check_case("additive clip 0.05 retroactive simple", clipped(retroactive(ADDITIVE, Modulation::Simple), 0.05), 204, 4, 2, 7);
        check_case("additive clip 0.05 retroactive per-neuron", clipped(retroactive(ADDITIVE, Modulation::PerNeuron), 0.05), 206, 5, 2, 7);
        let eta_per_neuron = Plasticity { eta: EtaShape::PerNeuron, ..DECAY };
        check_case("decay retroactive per-neuron, eta per neuron", retroactive(eta_per_neuron, Modulation::PerNeuron), 143, 4, 3, 6);
    }

    #[test]
    fn clamped_modulated_rules_match_finite_differences() {
        let cases = [
            ("decay simple modulation with clamping", modulated(DECAY, Modulation::Simple), 151),
            ("oja clip 0.1 per-neuron modulation with clamping", clipped(modulated(OJA, Modulation::PerNeuron), 0.1), 201),
            ("additive clip 0.05 retroactive per-neuron with clamping", clipped(retroactive(ADDITIVE, Modulation::PerNeuron), 0.05), 210),
        ];
        for (name, spec, seed) in cases {
            let (net, ep) = random_problem(seed, spec, 6, 2, 6);
            check_gradients(&format!("{name} (seed {seed})"), &net, &with_clamp(ep, 6));
        }
    }

    /// The FD tests would pass vacuously for a parameter the forward ignores; make sure the rate and
    /// modulator parameters actually matter for every rule and modulation.
    #[test]
    fn rate_and_modulator_gradients_are_not_trivially_zero() {
        let nonzero = |g: &[f64]| g.iter().any(|v| v.abs() > 1e-6);
        for rule in RULES {
            for (modulation, retro) in [
                (Modulation::None, false),
                (Modulation::Simple, false),
                (Modulation::PerNeuron, false),
                (Modulation::Simple, true),
                (Modulation::PerNeuron, true),
            ] {
                let spec = Plasticity { modulation, retroactive: retro, eta: EtaShape::PerNeuron, ..rule };
                let case = format!("{:?} {modulation:?} retroactive={retro}", rule.rule);
                let (net, ep) = random_problem(7, spec, 5, 2, 6);
                let g = backward(&net, &ep, &forward(&net, &ep));
                let n = net.n;
                assert!(nonzero(&g.w) && nonzero(&g.alpha), "{case}: w and alpha gradients should be nonzero");
                if modulation == Modulation::None || retro {
                    assert!(g.eta.iter().all(|v| v.abs() > 1e-6), "{case}: every eta gradient should be nonzero: {:?}", g.eta);
                } else {
                    // eta is unused when the modulation sets the rate of a non-retroactive trace.
                    assert!(g.eta.iter().all(|&v| v == 0.0), "{case}: eta is unused, its gradient should be 0: {:?}", g.eta);
                }
                if modulation != Modulation::None {
                    assert!(nonzero(&g.modulator[..n]), "{case}: mod_w gradient should be nonzero");
                    assert!(g.modulator[n].abs() > 1e-6, "{case}: mod_b gradient should be nonzero");
                }
                if modulation == Modulation::PerNeuron {
                    assert!(
                        g.modulator[n + 1..].iter().all(|v| v.abs() > 1e-6),
                        "{case}: every mod_u and mod_c gradient should be nonzero"
                    );
                }
            }
        }
    }

    #[test]
    fn flat_layout_round_trips_and_matches_the_spec() {
        let specs = [
            DECAY,
            Plasticity { alpha: AlphaShape::PerNeuron, eta: EtaShape::PerNeuron, ..OJA },
            Plasticity { alpha: AlphaShape::Scalar, ..ADDITIVE },
            modulated(DECAY, Modulation::Simple),
            retroactive(Plasticity { alpha: AlphaShape::PerNeuron, eta: EtaShape::PerNeuron, ..ADDITIVE }, Modulation::PerNeuron),
        ];
        for spec in specs {
            let n = 5usize;
            let (la, le, lm) = (spec.alpha_len(5) as usize, spec.eta_len(5) as usize, spec.modulator_len(5) as usize);
            let flat: Vec<f64> = (0..n * n + la + le + lm).map(|k| k as f64).collect();
            let net = Network64::from_flat(n, spec, &flat);
            assert_eq!(net.spec, spec);
            assert_eq!((net.w.len(), net.alpha.len(), net.eta.len(), net.modulator.len()), (n * n, la, le, lm), "{spec:?}");
            assert_eq!(net.w, flat[..n * n], "{spec:?}: w first");
            assert_eq!(net.alpha, flat[n * n..][..la], "{spec:?}: alpha after w");
            assert_eq!(net.eta, flat[n * n + la..][..le], "{spec:?}: eta after alpha");
            assert_eq!(net.modulator, flat[n * n + la + le..], "{spec:?}: modulator last");
            assert_eq!(net.to_flat(), flat, "{spec:?}: round trip");
            let grads = Gradients64 {
                w: net.w.clone(),
                alpha: net.alpha.clone(),
                eta: net.eta.clone(),
                modulator: net.modulator.clone(),
                inputs: Vec::new(),
            };
            assert_eq!(grads.to_flat(), flat, "{spec:?}: gradients use the same layout");
        }
        let paper = Network64::paper(2, vec![0.1, 0.2, 0.3, 0.4], vec![0.5, 0.6, 0.7, 0.8], 0.9);
        assert_eq!(paper, Network64::from_flat(2, Plasticity::PAPER, &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]));
    }

    #[test]
    #[should_panic(expected = "flat parameters")]
    fn from_flat_rejects_a_wrong_length() {
        Network64::from_flat(3, modulated(DECAY, Modulation::PerNeuron), &[0.0; 9 + 9 + 1 + 4]);
    }

    #[test]
    fn forward_records_every_trace_and_the_modulation() {
        let spec = clipped(retroactive(ADDITIVE, Modulation::PerNeuron), 0.1);
        let (net, ep) = random_problem(5, spec, 4, 2, 5);
        let fwd = forward(&net, &ep);
        assert_eq!(fwd.traces.len(), ep.steps + 1);
        assert_eq!(fwd.eligibility.len(), ep.steps + 1);
        assert_eq!(fwd.modulation.len(), (ep.steps + 1) * ep.batch);
        assert!(fwd.modulation[..ep.batch].iter().all(|&m| m == 0.0), "row 0 of the modulation is 0");
        assert!(fwd.traces.iter().flatten().all(|h| h.abs() <= 0.1 + 1e-7), "the clip bounds H");
        assert!(fwd.eligibility.iter().flatten().any(|e| e.abs() > 0.1 + 1e-7), "E is never clipped");
        let (net, ep) = random_problem(5, DECAY, 4, 2, 5);
        let fwd = forward(&net, &ep);
        assert!(fwd.eligibility.is_empty() && fwd.modulation.is_empty());
        assert_eq!(fwd.traces.len(), ep.steps + 1);
    }

    /// The forward pass against the spec written out for one neuron (where every shape coincides),
    /// for every rule, modulation, retroactive trace and clip.
    #[test]
    fn forward_matches_the_spec_written_out_for_one_neuron() {
        let modulations = [
            (Modulation::None, false),
            (Modulation::Simple, false),
            (Modulation::PerNeuron, false),
            (Modulation::Simple, true),
            (Modulation::PerNeuron, true),
        ];
        for (seed, rule) in RULES.into_iter().enumerate() {
            for (modulation, retro) in modulations {
                for clip in [None, Some(0.1f32)] {
                    let spec = Plasticity { modulation, retroactive: retro, clip, ..rule };
                    let (mut net, ep) = random_problem(seed as u64, spec, 1, 1, 6);
                    net.w[0] = 1.5; // enough recurrence for the trace to matter
                    let fwd = forward(&net, &ep);
                    let (w, alpha, eta) = (net.w[0], net.alpha[0], net.eta[0]);
                    let m_par = |k: usize| net.modulator.get(k).copied().unwrap_or(f64::NAN);
                    let (mod_w, mod_b, mod_u, mod_c) = (m_par(0), m_par(1), m_par(2), m_par(3));
                    let clip = |v: f64| clip.map_or(v, |c| v.clamp(-(c as f64), c as f64));
                    let (mut x, mut h, mut e) = (0.0, 0.0, 0.0);
                    for t in 1..=ep.steps {
                        let x_new = ((w + alpha * h) * x + ep.inputs[t - 1]).tanh();
                        let m = (mod_w * x_new + mod_b).tanh();
                        let rate = match modulation {
                            Modulation::None => eta,
                            Modulation::Simple => m,
                            Modulation::PerNeuron => mod_u * m + mod_c,
                        };
                        let update = |r: f64, h: f64| match rule.rule {
                            Rule::Decay => (1.0 - r) * h + r * x * x_new,
                            Rule::Oja => h + r * x_new * (x - x_new * h),
                            Rule::Additive => h + r * x * x_new,
                        };
                        if retro {
                            h = clip(h + rate * e);
                            e = update(eta, e);
                        } else {
                            h = clip(update(rate, h));
                        }
                        x = x_new;
                        let case = format!("{spec:?}, step {t}");
                        assert!((fwd.activations[t] - x).abs() < 1e-14, "{case}: x {} vs {x}", fwd.activations[t]);
                        assert!((fwd.traces[t][0] - h).abs() < 1e-14, "{case}: H {} vs {h}", fwd.traces[t][0]);
                        if retro {
                            assert!((fwd.eligibility[t][0] - e).abs() < 1e-14, "{case}: E {} vs {e}", fwd.eligibility[t][0]);
                        }
                        if modulation != Modulation::None {
                            assert!((fwd.modulation[t] - m).abs() < 1e-14, "{case}: M {} vs {m}", fwd.modulation[t]);
                        }
                    }
                    if clip(1.0) < 1.0 {
                        assert!(fwd.traces.iter().flatten().all(|h| h.abs() <= 0.1 + 1e-7), "{spec:?}: the clip bounds H");
                    }
                }
            }
        }
    }

    /// The reduced shapes (and plastic_self = false) index their parameters as the spec says: each
    /// runs exactly like the general network with the parameters broadcast out.
    #[test]
    fn reduced_shapes_are_broadcasts_of_the_general_ones() {
        let n = 4;
        let general = |net: &Network64, spec: Plasticity, alpha: Vec<f64>, eta: Vec<f64>, modulator: Vec<f64>| Network64 {
            n,
            spec: Plasticity { alpha: AlphaShape::PerConnection, eta: spec.eta, modulation: spec.modulation, ..net.spec },
            w: net.w.clone(),
            alpha,
            eta,
            modulator,
        };
        let same = |case: &str, a: &Network64, b: &Network64, ep: &Episode64| {
            let (fa, fb) = (forward(a, ep), forward(b, ep));
            let close = |x: &[f64], y: &[f64]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-14);
            assert!(close(&fa.activations, &fb.activations), "{case}: activations differ");
            assert!(fa.traces.iter().zip(&fb.traces).all(|(p, q)| close(p, q)), "{case}: traces differ");
        };
        for rule in RULES {
            for spec in [rule, modulated(rule, Modulation::Simple), retroactive(rule, Modulation::PerNeuron)] {
                let case = format!("{spec:?}");
                // Alpha per neuron: alpha_ij = alpha[j].
                let s = Plasticity { alpha: AlphaShape::PerNeuron, ..spec };
                let (net, ep) = random_problem(3, s, n, 2, 5);
                let wide = (0..n * n).map(|k| net.alpha[k % n]).collect();
                same(&format!("{case} alpha per neuron"), &net, &general(&net, s, wide, net.eta.clone(), net.modulator.clone()), &ep);
                // Scalar alpha.
                let s = Plasticity { alpha: AlphaShape::Scalar, ..spec };
                let (net, ep) = random_problem(4, s, n, 2, 5);
                same(
                    &format!("{case} scalar alpha"),
                    &net,
                    &general(&net, s, vec![net.alpha[0]; n * n], net.eta.clone(), net.modulator.clone()),
                    &ep,
                );
                // No plastic self-connections: alpha's diagonal is 0.
                let s = Plasticity { plastic_self: false, alpha: AlphaShape::PerNeuron, ..spec };
                let (net, ep) = random_problem(5, s, n, 2, 5);
                let wide = (0..n * n).map(|k| if k / n == k % n { 0.0 } else { net.alpha[k % n] }).collect();
                let mut g = general(&net, s, wide, net.eta.clone(), net.modulator.clone());
                g.spec.plastic_self = true;
                same(&format!("{case} no plastic self"), &net, &g, &ep);
                // Eta per neuron with equal values is the scalar eta.
                let s = Plasticity { eta: EtaShape::PerNeuron, ..spec };
                let (mut net, ep) = random_problem(6, s, n, 2, 5);
                net.eta = vec![net.eta[0]; n];
                let scalar = Plasticity { eta: EtaShape::Scalar, ..s };
                same(
                    &format!("{case} eta per neuron"),
                    &net,
                    &general(&net, scalar, net.alpha.clone(), vec![net.eta[0]], net.modulator.clone()),
                    &ep,
                );
            }
            // Rates are per post-synaptic neuron: a zero rate for neuron j (eta_j, or c_j with u = 0)
            // keeps column j of the trace it drives at zero, and only that column.
            let column_is_zero = |t: &[f64], j: usize| (0..2 * n * n).filter(|k| k % n == j).all(|k| t[k] == 0.0);
            for (what, s) in [
                ("eta_j", Plasticity { eta: EtaShape::PerNeuron, ..rule }),
                ("c_j", modulated(rule, Modulation::PerNeuron)),
                ("retroactive eta_j", retroactive(Plasticity { eta: EtaShape::PerNeuron, ..rule }, Modulation::Simple)),
            ] {
                let (mut net, ep) = random_problem(8, s, n, 2, 5);
                if s.modulation == Modulation::PerNeuron {
                    net.modulator[n + 1..2 * n + 1].fill(0.0);
                    net.modulator[2 * n + 2] = 0.0;
                } else {
                    net.eta[1] = 0.0;
                }
                let fwd = forward(&net, &ep);
                let driven = if s.retroactive { &fwd.eligibility } else { &fwd.traces };
                let case = format!("{:?} {what} = 0 for post-synaptic neuron 1", rule.rule);
                assert!(driven.iter().all(|t| column_is_zero(t, 1)), "{case}: column 1 should stay 0");
                assert!(!column_is_zero(&driven[ep.steps], 0), "{case}: column 0 should move");
            }
            // Per-neuron fan-out with u = 1, c = 0 is the simple modulation.
            for retro in [false, true] {
                let s = Plasticity { modulation: Modulation::PerNeuron, retroactive: retro, ..rule };
                let (mut net, ep) = random_problem(7, s, n, 2, 5);
                net.modulator.truncate(n + 1);
                let simple = Network64 { spec: Plasticity { modulation: Modulation::Simple, ..s }, ..net.clone() };
                net.modulator.extend(vec![1.0; n].into_iter().chain(vec![0.0; n]));
                same(&format!("{:?} retroactive={retro} per-neuron u=1 c=0", rule.rule), &net, &simple, &ep);
            }
        }
    }

    /// dL/du(t) against finite differences of the inputs, with a modulated rule and clamping (where
    /// a held neuron's input is its value).
    #[test]
    fn input_gradients_match_finite_differences() {
        use crate::{Modulation, Rule};
        use rand::{Rng, SeedableRng};
        let (n, batch, steps) = (4, 2, 5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let spec = Plasticity { rule: Rule::Oja, modulation: Modulation::Simple, ..Plasticity::PAPER };
        let flat: Vec<f64> = (0..n * n + n * n + 1 + n + 1).map(|_| rng.random_range(-0.8..0.8)).collect();
        let net = Network64::from_flat(n, spec, &flat);
        let len = steps * batch * n;
        let ep = Episode64 {
            batch,
            steps,
            inputs: (0..len).map(|_| rng.random_range(-1.0..1.0)).collect(),
            loss_steps: vec![3, steps],
            targets: (0..2 * batch * n).map(|_| rng.random_range(-1.0..1.0)).collect(),
            clamp: (0..len).map(|k| k % 5 == 0).collect(),
            loss_scale: 1.0,
        };
        let grads = backward(&net, &ep, &forward(&net, &ep));
        let d = 1e-6;
        for k in 0..len {
            let loss_at = |delta: f64| {
                let mut e = ep.clone();
                e.inputs[k] += delta;
                loss(&e, &forward(&net, &e))
            };
            let numeric = (loss_at(d) - loss_at(-d)) / (2.0 * d);
            // Central differences in f64: truncation ~1e-12, rounding ~1e-10 / d; far below any real error.
            let tol = 1e-7 + 1e-6 * numeric.abs();
            assert!((grads.inputs[k] - numeric).abs() <= tol, "du[{k}]: backward {} vs finite difference {numeric}", grads.inputs[k]);
        }
        assert!(grads.inputs.iter().any(|g| g.abs() > 1e-4));
    }

    /// Output heads (a softmax head and a linear head) on a modulated rule: the heads' own
    /// gradients and the network's, through `backward_with_loss_grad`, against finite differences.
    #[test]
    fn head_gradients_match_finite_differences() {
        use crate::{Modulation, Rule};
        use rand::{Rng, SeedableRng};
        let (n, batch, steps) = (4, 2, 5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
        let spec = Plasticity { rule: Rule::Additive, modulation: Modulation::Simple, clip: Some(0.4), ..Plasticity::PAPER };
        let flat: Vec<f64> = (0..n * n + n * n + 1 + n + 1).map(|_| rng.random_range(-0.8..0.8)).collect();
        let net = Network64::from_flat(n, spec, &flat);
        let mut head = |width: usize, softmax: bool| Head64 {
            width,
            softmax,
            w: (0..n * width).map(|_| rng.random_range(-1.0..1.0)).collect(),
            b: (0..width).map(|_| rng.random_range(-0.5..0.5)).collect(),
        };
        let heads = vec![head(3, true), head(1, false)];
        let loss_steps = vec![3, steps];
        let rows = loss_steps.len() * batch;
        // One-hot classes for the softmax head, a value for the linear one.
        let targets: Vec<f64> =
            (0..rows).flat_map(|r| [(r % 3 == 0) as u8 as f64, (r % 3 == 1) as u8 as f64, (r % 3 == 2) as u8 as f64, 0.3]).collect();
        let ep = Episode64 {
            batch,
            steps,
            inputs: (0..steps * batch * n).map(|_| rng.random_range(-1.0..1.0)).collect(),
            loss_steps,
            targets: vec![0.0; rows * n], // unused: the heads have their own targets
            clamp: Vec::new(),
            loss_scale: 0.5,
        };
        let total_loss = |net: &Network64, heads: &[Head64]| {
            let fwd = forward(net, &ep);
            heads_loss(heads, &heads_forward(heads, &ep, &fwd, n), &targets, ep.loss_scale).0
        };
        let fwd = forward(&net, &ep);
        let (_, dy) = heads_loss(&heads, &heads_forward(&heads, &ep, &fwd, n), &targets, ep.loss_scale);
        let (dx, head_grads) = heads_backward(&heads, &ep, &fwd, n, &dy);
        let grads = backward_with_loss_grad(&net, &ep, &fwd, &dx).to_flat();
        let d = 1e-6;
        // Central differences in f64: truncation ~1e-12, rounding ~1e-10 / d; far below any real error.
        let check = |what: String, analytic: f64, numeric: f64| {
            assert!(
                (analytic - numeric).abs() <= 1e-7 + 1e-6 * numeric.abs(),
                "{what}: backward {analytic} vs finite difference {numeric}"
            );
        };
        for k in 0..flat.len() {
            let at = |delta: f64| {
                let mut f = flat.clone();
                f[k] += delta;
                total_loss(&Network64::from_flat(n, spec, &f), &heads)
            };
            check(format!("network parameter {k}"), grads[k], (at(d) - at(-d)) / (2.0 * d));
        }
        for (h, (dw, db)) in head_grads.iter().enumerate() {
            for k in 0..dw.len() + db.len() {
                let at = |delta: f64| {
                    let mut hs = heads.clone();
                    if k < dw.len() {
                        hs[h].w[k] += delta
                    } else {
                        hs[h].b[k - dw.len()] += delta
                    }
                    total_loss(&net, &hs)
                };
                let analytic = if k < dw.len() { dw[k] } else { db[k - dw.len()] };
                check(format!("head {h} parameter {k}"), analytic, (at(d) - at(-d)) / (2.0 * d));
            }
        }
        assert!(grads.iter().any(|g| g.abs() > 1e-4) && head_grads.iter().all(|(w, _)| w.iter().any(|g| g.abs() > 1e-4)));
    }
}
