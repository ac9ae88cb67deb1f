// forward_step: one fused time step t of a batch of plastic recurrent networks (decay rule).
//
//   H_ij(t) = (1 - eta) * H_ij(t-1) + eta * x_i(t-2) * x_j(t-1)        (trace update of step t-1, fused here)
//   a_j(t)  = sum_i (w_ij + alpha_ij * H_ij(t)) * x_i(t-1) + u_j(t)
//   x_j(t)  = tanh(a_j(t))
//
// Why the trace update is fused one step late: H(t) needs x(t-1), which exists only once step t-1's
// reduction over i has finished, so step t forms H(t) on the fly while it reads H(t-1) for its sum.
// At t = 1 the trace is H(1) = 0 (cleared by the runtime) and is not updated.
//
// Clamping (the image task): where bit j of clamp row (t, b) is set, x_j(t) = u_j(t) instead, the
// neuron being held at its input; its drive is still computed, then discarded.
//
// The inputs live in the activation history itself: row t holds u(t) until step t replaces it with
// x(t). Only invocation (b, j) reads or writes element (t, b, j), and rows t-1 and t-2 are all that
// the sum reads, so the overwrite is safe, and the history costs (T + 1) * B * N floats, not twice that.
//
// Traffic per step (f32): w and alpha read once per batch tile (shared by the whole batch, so cached),
// the trace read once and written once: (2*N*N + 2*B*N*N) * 4 bytes, plus O(B*N) for x and u.
// That is the least any implementation of this step can move.
//
// One invocation owns post-synaptic neuron j for BATCH_TILE batch elements and loops over the
// pre-synaptic index i: neighbouring invocations read neighbouring j, so every row access is
// coalesced, and each trace element has exactly one owner, so the update is in place.

const BATCH_TILE: u32 = 4u;
// tanh(15) == 1 in f32; clamping keeps exp-based tanh implementations from overflowing to inf/inf.
const TANH_CLAMP: f32 = 15.0;

override WORKGROUP_SIZE: u32 = 64u;

struct ForwardStepParams {
    n: u32,            // neurons N
    batch: u32,        // batch B
    step: u32,         // t, 1-based
    w_offset: u32,     // offset of w (N, N) in `params`
    alpha_offset: u32, // offset of alpha (N, N) in `params`
    eta_offset: u32,   // offset of eta (1) in `params`
    clamp_words: u32,  // u32 words per (t, b) row of `clamp_mask`: ceil(N / 32), or 0 when nothing is clamped
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> p: ForwardStepParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;            // flat parameters: w (N, N) row i = pre, alpha (N, N), eta (1)
@group(0) @binding(2) var<storage, read_write> trace: array<f32>;       // (B, N, N): H(t-1) on entry, H(t) on exit
@group(0) @binding(3) var<storage, read_write> activations: array<f32>; // (T + 1, B, N): x(s) at row s < t, u(s) at row s >= t; x(0) = 0
@group(0) @binding(4) var<storage, read> clamp_mask: array<u32>;            // (T, B, clamp_words) bit masks: u(t) in row t - 1

@compute @workgroup_size(WORKGROUP_SIZE)
fn forward_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let j = gid.x;
    let b0 = gid.y * BATCH_TILE;
    if (j >= n || b0 >= p.batch) {
        return;
    }
    let tile = min(BATCH_TILE, p.batch - b0);
    let row = p.batch * n;               // one (B, N) row of activations or inputs
    let x_prev = (p.step - 1u) * row;    // x(t-1)
    let update = p.step >= 2u;
    let eta = params[p.eta_offset];
    let decay = 1.0 - eta;

    var acc: array<f32, BATCH_TILE>;
    var post: array<f32, BATCH_TILE>;    // eta * x_j(t-1)
    for (var k = 0u; k < tile; k++) {
        let b = b0 + k;
        acc[k] = activations[p.step * row + b * n + j]; // u_j(t)
        if (update) {
            post[k] = eta * activations[x_prev + b * n + j];
        }
    }
    for (var i = 0u; i < n; i++) {
        let w_ij = params[p.w_offset + i * n + j];
        let alpha_ij = params[p.alpha_offset + i * n + j];
        for (var k = 0u; k < tile; k++) {
            let b = b0 + k;
            let h_index = (b * n + i) * n + j;
            var h = trace[h_index];
            if (update) {
                // x_i(t-2) lives one row below x(t-1).
                h = decay * h + post[k] * activations[x_prev - row + b * n + i];
                trace[h_index] = h;
            }
            acc[k] += (w_ij + alpha_ij * h) * activations[x_prev + b * n + i];
        }
    }
    for (var k = 0u; k < tile; k++) {
        let b = b0 + k;
        let out = p.step * row + b * n + j;
        var held = false;
        if (p.clamp_words != 0u) {
            held = ((clamp_mask[((p.step - 1u) * p.batch + b) * p.clamp_words + j / 32u] >> (j % 32u)) & 1u) != 0u;
        }
        if (!held) {
            activations[out] = tanh(clamp(acc[k], -TANH_CLAMP, TANH_CLAMP));
        }
    }
}
