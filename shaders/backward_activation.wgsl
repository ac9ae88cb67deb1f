// backward_activation: the gradient at the pre-activation of step t (sweep runs t = T down to 1).
//
//   gx_j(t) = dl_t/dx_j(t)                                        (2 * (x_j(t) - y_j) on a loss step, or
//                                                                  what head_backward left, with output heads)
//           + sum_jt partials[0, b, j, jt]     = sum_k (w_jk + alpha_jk H_jk(t+1)) ga_k(t+1)
//                                               + eta * sum_k G_jk(t+2) x_k(t+1)
//           + sum_it partials[1, b, it, j]     = eta * sum_i G_ij(t+1) x_i(t-1)
//           + dM_b(t) (1 - M_b(t)^2) mod_w_j        (when modulated: x(t) drives M(t); the factor
//                                               dM(1 - M^2) was reduced by modulation_backward)
//   ga_j(t) = gx_j(t) * (1 - x_j(t)^2), or 0 where neuron j was clamped at step t (x_j(t) = u_j(t)
//             does not depend on its drive)
//
// The partial sums were written by backward_trace of step t+1, one per 16-wide tile of the reduced
// index, so this kernel only adds O(N / 16) numbers per neuron. They are zero before step T.
// `loss_slot` picks the row of `targets` for this step; LOSS_NONE means no loss at step t.

const LOSS_NONE: u32 = 0xffffffffu;
const MOD_NONE: u32 = 0xffffffffu;

override WORKGROUP_SIZE: u32 = 64u;

struct BackwardActivationParams {
    n: u32,           // neurons N
    batch: u32,       // batch B
    step: u32,        // t, 1-based
    n_tiles: u32,     // ceil(N / TILE) partial sums per neuron in each partials buffer
    loss_slot: u32,   // row of `targets` holding y(t), or LOSS_NONE
    loss_scale: f32,  // multiplies the squared error (1 for a plain sum)
    clamp_words: u32, // u32 words per (t, b) row of `clamp_mask`, or 0 when nothing is clamped
    mod_offset: u32,  // offset of mod_w (N) in `params`
    mod_grad_offset: u32, // offset of (B) dM (1 - M^2) in `partials`, or MOD_NONE when not modulated
    preact_offset: u32,   // offset of ga (B, N) in `partials`
    loss_grad_offset: u32, // offset of the output heads' (L, B, N) dl/dx in `partials`, or LOSS_NONE: squared error on x
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> p: BackwardActivationParams;
@group(0) @binding(1) var<storage, read> activations: array<f32>;      // (T + 1, B, N): x(t) at row t
@group(0) @binding(2) var<storage, read> targets: array<f32>;          // (L, B, N): y for each loss step
@group(0) @binding(3) var<storage, read> clamp_mask: array<u32>;       // (T, B, clamp_words) bit masks, row t - 1 for step t
@group(0) @binding(4) var<storage, read> params: array<f32>;           // flat [w, alpha, eta, modulator]
// (B, n_tiles, N) row sums, then (B, n_tiles, N) column sums, read; ga(t) (B, N) written at preact_offset
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_activation(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let j = gid.x;
    let b = gid.y;
    if (j >= n || b >= p.batch) {
        return;
    }
    let x = activations[p.step * p.batch * n + b * n + j];
    var gx = 0.0;
    if (p.loss_slot != LOSS_NONE) {
        if (p.loss_grad_offset != LOSS_NONE) {
            gx = partials[p.loss_grad_offset + (p.loss_slot * p.batch + b) * n + j]; // through the output heads
        } else {
            gx = 2.0 * p.loss_scale * (x - targets[p.loss_slot * p.batch * n + b * n + j]);
        }
    }
    let rows = b * p.n_tiles * n + j;
    let cols = p.batch * n * p.n_tiles + rows;
    for (var k = 0u; k < p.n_tiles; k++) {
        gx += partials[rows + k * n] + partials[cols + k * n];
    }
    if (p.mod_grad_offset != MOD_NONE) {
        gx += partials[p.mod_grad_offset + b] * params[p.mod_offset + j];
    }
    var ga = gx * (1.0 - x * x);
    if (p.clamp_words != 0u && ((clamp_mask[((p.step - 1u) * p.batch + b) * p.clamp_words + j / 32u] >> (j % 32u)) & 1u) != 0u) {
        ga = 0.0;
    }
    partials[p.preact_offset + b * n + j] = ga;
}
