//! Whole-episode reference in f64, deliberately plain: the forward pass stores the trace of every
//! step and the backward pass applies the chain rule step by step (design/plastic-bptt.md). Its
//! gradients are checked against central finite differences in the tests below; the GPU sweep,
//! which recovers the trace in reverse instead of storing it, is checked against this.

/// A plastic network of N neurons (decay rule). `w[i * n + j]`: pre-synaptic i, post-synaptic j.
#[derive(Clone, Debug, PartialEq)]
pub struct Network64 {
    pub n: usize,
    pub w: Vec<f64>,
    pub alpha: Vec<f64>,
    pub eta: f64,
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
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gradients64 {
    pub w: Vec<f64>,
    pub alpha: Vec<f64>,
    pub eta: f64,
}

/// x_j(t) = tanh(sum_i (w_ij + alpha_ij H_ij(t)) x_i(t-1) + u_j(t));
/// H_ij(t+1) = (1 - eta) H_ij(t) + eta x_i(t-1) x_j(t).
pub fn forward(net: &Network64, ep: &Episode64) -> Forward64 {
    let (n, batch) = (net.n, ep.batch);
    let row = batch * n;
    let mut activations = vec![0.0; (ep.steps + 1) * row];
    let mut traces = vec![vec![0.0; batch * n * n]];
    for t in 1..=ep.steps {
        let h = &traces[t - 1];
        let mut h_next = vec![0.0; batch * n * n];
        for b in 0..batch {
            for j in 0..n {
                let mut a = ep.inputs[(t - 1) * row + b * n + j];
                for i in 0..n {
                    let idx = (b * n + i) * n + j;
                    a += (net.w[i * n + j] + net.alpha[i * n + j] * h[idx]) * activations[(t - 1) * row + b * n + i];
                }
                let held = !ep.clamp.is_empty() && ep.clamp[(t - 1) * row + b * n + j];
                activations[t * row + b * n + j] = if held { ep.inputs[(t - 1) * row + b * n + j] } else { a.tanh() };
            }
            for i in 0..n {
                for j in 0..n {
                    let idx = (b * n + i) * n + j;
                    let (pre, post) = (activations[(t - 1) * row + b * n + i], activations[t * row + b * n + j]);
                    h_next[idx] = (1.0 - net.eta) * h[idx] + net.eta * pre * post;
                }
            }
        }
        traces.push(h_next);
    }
    Forward64 { activations, traces }
}

pub fn loss(ep: &Episode64, fwd: &Forward64) -> f64 {
    let row = ep.batch * (fwd.activations.len() / (ep.steps + 1) / ep.batch);
    let mut sum = 0.0;
    for (s, &t) in ep.loss_steps.iter().enumerate() {
        for e in 0..row {
            sum += (fwd.activations[t * row + e] - ep.targets[s * row + e]).powi(2);
        }
    }
    ep.loss_scale * sum
}

/// Backpropagation through the whole episode, gradients summed over the batch.
pub fn backward(net: &Network64, ep: &Episode64, fwd: &Forward64) -> Gradients64 {
    let (n, batch, steps) = (net.n, ep.batch, ep.steps);
    let row = batch * n;
    let x = |t: usize, b: usize, k: usize| fwd.activations[t * row + b * n + k];
    let mut grads = Gradients64 { w: vec![0.0; n * n], alpha: vec![0.0; n * n], eta: 0.0 };
    // gx[t]: dL/dx(t) from every path found so far; starts with the direct loss terms.
    let mut gx = vec![vec![0.0; row]; steps + 1];
    for (s, &t) in ep.loss_steps.iter().enumerate() {
        for e in 0..row {
            gx[t][e] += 2.0 * ep.loss_scale * (fwd.activations[t * row + e] - ep.targets[s * row + e]);
        }
    }
    let mut g_next = vec![0.0; batch * n * n]; // G(t+1) = dL/dH(t+1), zero at t = T
    for t in (1..=steps).rev() {
        let h = &fwd.traces[t - 1];
        let mut g = vec![0.0; batch * n * n];
        for b in 0..batch {
            // x(t) is the post term of H(t+1).
            for j in 0..n {
                for i in 0..n {
                    gx[t][b * n + j] += net.eta * g_next[(b * n + i) * n + j] * x(t - 1, b, i);
                }
            }
            // A held neuron's value does not depend on its drive.
            let held = |j: usize| !ep.clamp.is_empty() && ep.clamp[(t - 1) * row + b * n + j];
            let ga: Vec<f64> = (0..n).map(|j| if held(j) { 0.0 } else { gx[t][b * n + j] * (1.0 - x(t, b, j).powi(2)) }).collect();
            for i in 0..n {
                let mut to_prev = 0.0;
                for j in 0..n {
                    let idx = (b * n + i) * n + j;
                    grads.w[i * n + j] += ga[j] * x(t - 1, b, i);
                    grads.alpha[i * n + j] += ga[j] * h[idx] * x(t - 1, b, i);
                    grads.eta += g_next[idx] * (x(t - 1, b, i) * x(t, b, j) - h[idx]);
                    // x(t-1) fed step t's sum and was the pre term of H(t+1).
                    to_prev += (net.w[i * n + j] + net.alpha[i * n + j] * h[idx]) * ga[j] + net.eta * g_next[idx] * x(t, b, j);
                    g[idx] = (1.0 - net.eta) * g_next[idx] + net.alpha[i * n + j] * x(t - 1, b, i) * ga[j];
                }
                gx[t - 1][b * n + i] += to_prev;
            }
        }
        g_next = g;
    }
    grads
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_problem(seed: u64, n: usize, batch: usize, steps: usize, eta: f64) -> (Network64, Episode64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v = |len: usize, scale: f64| (0..len).map(|_| scale * rng.random_range(-1.0..1.0)).collect::<Vec<f64>>();
        let net = Network64 { n, w: v(n * n, 0.8), alpha: v(n * n, 0.8), eta };
        let loss_steps: Vec<usize> = if steps >= 3 { vec![steps / 2, steps] } else { vec![steps] };
        let ep = Episode64 {
            batch,
            steps,
            inputs: v(steps * batch * n, 1.0),
            targets: v(loss_steps.len() * batch * n, 1.0),
            loss_steps,
            loss_scale: 1.0,
            clamp: Vec::new(),
        };
        (net, ep)
    }

    fn loss_of(net: &Network64, ep: &Episode64) -> f64 {
        loss(ep, &forward(net, ep))
    }

    /// Central differences with step 1e-5 in f64 have truncation error ~1e-10 * |f'''| and rounding
    /// ~1e-11 / 1e-5; 1e-6 absolute plus 1e-5 relative is far above both and far below any real bug.
    fn assert_close(what: &str, analytic: f64, numeric: f64) {
        let tol = 1e-6 + 1e-5 * numeric.abs();
        assert!((analytic - numeric).abs() <= tol, "{what}: backward {analytic} vs finite difference {numeric}");
    }

    #[test]
    fn reference_gradients_match_finite_differences() {
        for (seed, n, batch, steps, eta) in [(1, 3, 1, 1, 0.1), (2, 4, 2, 2, 0.3), (3, 5, 2, 6, 0.05), (4, 8, 3, 5, 0.5)] {
            let (net, ep) = random_problem(seed, n, batch, steps, eta);
            let grads = backward(&net, &ep, &forward(&net, &ep));
            let d = 1e-5;
            for k in 0..n * n {
                for which in ["w", "alpha"] {
                    let perturbed = |delta: f64| {
                        let mut p = net.clone();
                        if which == "w" {
                            p.w[k] += delta
                        } else {
                            p.alpha[k] += delta
                        }
                        loss_of(&p, &ep)
                    };
                    let numeric = (perturbed(d) - perturbed(-d)) / (2.0 * d);
                    let analytic = if which == "w" { grads.w[k] } else { grads.alpha[k] };
                    assert_close(&format!("d{which}[{k}] (N={n} B={batch} T={steps})"), analytic, numeric);
                }
            }
            let eta_loss = |delta: f64| loss_of(&Network64 { eta: net.eta + delta, ..net.clone() }, &ep);
            assert_close(&format!("deta (N={n} B={batch} T={steps})"), grads.eta, (eta_loss(d) - eta_loss(-d)) / (2.0 * d));
        }
    }

    #[test]
    fn reference_gradients_with_clamped_neurons_match_finite_differences() {
        let (net, mut ep) = random_problem(9, 6, 2, 5, 0.2);
        // Hold a third of the neurons at their inputs on every other step.
        ep.clamp = (0..ep.inputs.len()).map(|k| (k / (2 * 6)) % 2 == 0 && k % 3 == 0).collect();
        let grads = backward(&net, &ep, &forward(&net, &ep));
        let d = 1e-5;
        for k in 0..36 {
            let mut p = net.clone();
            p.alpha[k] += d;
            let up = loss_of(&p, &ep);
            p.alpha[k] -= 2.0 * d;
            let numeric = (up - loss_of(&p, &ep)) / (2.0 * d);
            assert_close(&format!("dalpha[{k}] with clamping"), grads.alpha[k], numeric);
            let mut p = net.clone();
            p.w[k] += d;
            let up = loss_of(&p, &ep);
            p.w[k] -= 2.0 * d;
            assert_close(&format!("dw[{k}] with clamping"), grads.w[k], (up - loss_of(&p, &ep)) / (2.0 * d));
        }
        let eta_loss = |delta: f64| loss_of(&Network64 { eta: net.eta + delta, ..net.clone() }, &ep);
        assert_close("deta with clamping", grads.eta, (eta_loss(d) - eta_loss(-d)) / (2.0 * d));
    }

    #[test]
    fn eta_gradient_is_not_trivially_zero() {
        let (net, ep) = random_problem(7, 5, 2, 6, 0.2);
        let grads = backward(&net, &ep, &forward(&net, &ep));
        assert!(grads.eta.abs() > 1e-6, "eta gradient {} should be nonzero on a random problem", grads.eta);
        assert!(grads.alpha.iter().any(|g| g.abs() > 1e-6));
    }
}
