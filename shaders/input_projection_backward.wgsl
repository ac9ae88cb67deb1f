// input_projection_backward: the input layer's share of backward step t, after backward_activation(t).
//
//   dw_in_dj += sum_b v_bd(t) ga_bj(t)        (ga(t) = dL/du(t): u(t) enters the drive a(t) directly)
//   db_in_j  += sum_b ga_bj(t)
//
// One invocation per (d, j), d = D standing for the bias; each owns its gradient element, so the
// accumulation needs no atomics. O((D + 1) N B) per step.

override WORKGROUP_SIZE: u32 = 64u;

struct InputProjectionBackwardParams {
    n: u32,             // neurons N
    batch: u32,         // batch B
    step: u32,          // t, 1-based
    width: u32,         // input width D
    w_in_offset: u32,   // offset of w_in (D, N) in `grads`; b_in (N) follows it
    preact_offset: u32, // offset of ga(t) (B, N) in `partials`
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> p: InputProjectionBackwardParams;
@group(0) @binding(1) var<storage, read> inputs: array<f32>;       // (T, B, D): v(t) in row t - 1
@group(0) @binding(2) var<storage, read> partials: array<f32>;     // ga(t) (B, N) at preact_offset
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
    for (var b = 0u; b < p.batch; b++) {
        var v = 1.0; // the bias
        if (d < width) {
            v = inputs[((p.step - 1u) * p.batch + b) * width + d];
        }
        g += v * partials[p.preact_offset + b * n + j];
    }
    grads[p.w_in_offset + d * n + j] += g;
}
