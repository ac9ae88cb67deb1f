// input_projection: an input layer that projects inputs of any width D into the N neurons, for
// every step of the episode at once, before the forward pass.
//
//   u_bj(t) = b_in_j + sum_d v_bd(t) w_in_dj          t = 1..T
//
// u(t) is written to row t of the activation history, where forward_step reads it (and replaces it
// with x(t)), exactly as inputs added directly would sit there.
//
// One invocation per (t, b, j): neighbouring invocations read neighbouring columns of w_in (coalesced)
// and the same v_b(t) (cached). A 2-D grid past 65535 workgroups.

override WORKGROUP_SIZE: u32 = 256u;

struct InputProjectionParams {
    n: u32,           // neurons N
    batch: u32,       // batch B
    steps: u32,       // T
    width: u32,       // input width D
    w_in_offset: u32, // offset of w_in (D, N) in `params`; b_in (N) follows it
    row_stride: u32,  // invocations per grid row
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> p: InputProjectionParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;            // flat parameters [..., w_in (D, N), b_in (N)]
@group(0) @binding(2) var<storage, read> inputs: array<f32>;            // (T, B, D): v(t) in row t - 1
@group(0) @binding(3) var<storage, read_write> activations: array<f32>; // (T + 1, B, N): u(t) written to row t

@compute @workgroup_size(WORKGROUP_SIZE)
fn input_projection(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let e = gid.y * p.row_stride + gid.x;
    if (e >= p.steps * p.batch * n) {
        return;
    }
    let row = e / n;   // (t - 1) * B + b
    let j = e % n;
    let w_in = p.w_in_offset;
    let width = p.width;
    var u = params[w_in + width * n + j];
    for (var d = 0u; d < width; d++) {
        u += inputs[row * width + d] * params[w_in + d * n + j];
    }
    activations[p.batch * n + e] = u;
}
