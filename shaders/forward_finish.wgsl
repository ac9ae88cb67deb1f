// forward_finish: closes a forward step that forward_step split into S chunks of the sum over i.
//
//   a_j(t) = u_j(t) + sum_{s < S} partial_sums[s, b, j]
//   x_j(t) = tanh(a_j(t)), or u_j(t) where bit j of clamp row (t, b) is set (the neuron is held)
//
// The chunks are added in order s = 0, 1, ..., so the result does not depend on scheduling.
// Row t of the history holds u(t) on entry and x(t) on exit, as in forward_step.wgsl.

// tanh(15) == 1 in f32; clamping keeps exp-based tanh implementations from overflowing to inf/inf.
const TANH_CLAMP: f32 = 15.0;

override WORKGROUP_SIZE: u32 = 64u;

struct ForwardFinishParams {
    n: u32,           // neurons N
    batch: u32,       // batch B
    step: u32,        // t, 1-based
    splits: u32,      // S
    clamp_words: u32, // u32 words per (t, b) row of `clamp_mask`, or 0 when nothing is clamped
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> p: ForwardFinishParams;
@group(0) @binding(1) var<storage, read> partial_sums: array<f32>;      // (S, B, N)
@group(0) @binding(2) var<storage, read_write> activations: array<f32>; // (T + 1, B, N): u(t) in row t, replaced by x(t)
@group(0) @binding(3) var<storage, read> clamp_mask: array<u32>;        // (T, B, clamp_words) bit masks: u(t) in row t - 1

@compute @workgroup_size(WORKGROUP_SIZE)
fn forward_finish(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let j = gid.x;
    let b = gid.y;
    if (j >= n || b >= p.batch) {
        return;
    }
    if (p.clamp_words != 0u && ((clamp_mask[((p.step - 1u) * p.batch + b) * p.clamp_words + j / 32u] >> (j % 32u)) & 1u) != 0u) {
        return;
    }
    let out = p.step * p.batch * n + b * n + j;
    var a = activations[out];
    let stride = p.batch * n;
    for (var s = 0u; s < p.splits; s++) {
        a += partial_sums[s * stride + b * n + j];
    }
    activations[out] = tanh(clamp(a, -TANH_CLAMP, TANH_CLAMP));
}
