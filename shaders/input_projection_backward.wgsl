// input_projection_backward: the input layer's share of a window of backward steps s0 .. s0 + S - 1,
// run with weight_gradient once the sweep has reached s0 (backward_activation has then written ga(s)
// of every step of the window into the ring, see weight_gradient.wgsl).
//
//   dw_in_dj += sum_s sum_b v_bd(s) ga_bj(s)        (ga(s) = dL/du(s): u(s) enters the drive a(s) directly)
//   db_in_j  += sum_s sum_b ga_bj(s)
//
// One invocation per (d, j), d = D standing for the bias; each owns its gradient element, so the
// accumulation needs no atomics, and reads and writes it once per window. O((D + 1) N B) per step.

override WORKGROUP_SIZE: u32 = 64u;

struct InputProjectionBackwardParams {
    n: u32,           // neurons N
    batch: u32,       // batch B
    first_step: u32,  // s0, 1-based: the window's first step
    steps: u32,       // S, the steps of the window
    width: u32,       // input width D
    w_in_offset: u32, // offset of w_in (D, N) in `grads`; b_in (N) follows it
    ga_offset: u32,   // offset in `partials` of ga(s0) (B, N); ga(s0 + k) follows at + k B N
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> p: InputProjectionBackwardParams;
@group(0) @binding(1) var<storage, read> inputs: array<f32>;       // (T, B, D): v(s) in row s - 1
@group(0) @binding(2) var<storage, read> partials: array<f32>;     // (S, B, N) ga(s0 ..) at ga_offset
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;  // flat, mirrors the parameters; accumulated

@compute @workgroup_size(WORKGROUP_SIZE)
fn input_projection_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let j = gid.x;
    let d = gid.y;
    let width = p.width;
    if (j >= n || d > width) {
        return;
    }
    var g = 0.0;
    for (var s = 0u; s < p.steps; s++) {
        let v_row = (p.first_step + s - 1u) * p.batch * width; // v(s0 + s)
        let ga_row = p.ga_offset + s * p.batch * n;           // ga(s0 + s)
        for (var b = 0u; b < p.batch; b++) {
            var v = 1.0; // the bias
            if (d < width) {
                v = inputs[v_row + b * width + d];
            }
            g += v * partials[ga_row + b * n + j];
        }
    }
    grads[p.w_in_offset + d * n + j] += g;
}
