// head_backward: one output head's share of the backward pass, before the sweep.
//
//   dL/dx_bj(t_s) (+)= sum_k W_jk dy_bk(s)          into the (L, B, N) loss gradient backward_activation adds
//   dW_jk += sum_{s, b} x_bj(t_s) dy_bk(s)
//   db_k  += sum_{s, b} dy_bk(s)
//
// with dy from head_loss. The first head writes the loss gradient (`accumulate` = 0), the others add.
// One invocation per neuron j, which owns row j of dW and the (s, b, j) loss gradients; invocation
// j = N owns db. O((N + 1) K L B) in all: heads are narrow and L small.

override WORKGROUP_SIZE: u32 = 64u;

struct HeadBackwardParams {
    n: u32,             // neurons N
    batch: u32,         // batch B
    n_loss_steps: u32,  // L
    width: u32,         // K
    total: u32,         // row length of `head_grads`
    col0: u32,          // this head's first column
    w_offset: u32,      // offset of W (N, K) in `params` and `grads`; b (K) follows it
    accumulate: u32,    // 0: write the loss gradient, 1: add to it
    loss_grad_offset: u32, // offset of the (L, B, N) loss gradient in `partials`
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> p: HeadBackwardParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;          // flat parameters
@group(0) @binding(2) var<storage, read> activations: array<f32>;     // (T + 1, B, N)
@group(0) @binding(3) var<storage, read> loss_steps: array<u32>;      // (L)
@group(0) @binding(4) var<storage, read> head_grads: array<f32>;      // (L, B, total): dl/dy
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;  // the (L, B, N) loss gradient at loss_grad_offset
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;     // flat, mirrors the parameters; accumulated

@compute @workgroup_size(WORKGROUP_SIZE)
fn head_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let n = p.n;
    if (j > n) {
        return;
    }
    let rows = p.n_loss_steps * p.batch;
    if (j == n) {
        for (var k = 0u; k < p.width; k++) {
            var g = 0.0;
            for (var r = 0u; r < rows; r++) {
                g += head_grads[r * p.total + p.col0 + k];
            }
            grads[p.w_offset + n * p.width + k] += g;
        }
        return;
    }
    for (var r = 0u; r < rows; r++) {
        let s = r / p.batch;
        let b = r % p.batch;
        let x = activations[(loss_steps[s] * p.batch + b) * n + j];
        var gx = 0.0;
        for (var k = 0u; k < p.width; k++) {
            let dy = head_grads[r * p.total + p.col0 + k];
            gx += params[p.w_offset + j * p.width + k] * dy;
            grads[p.w_offset + j * p.width + k] += x * dy;
        }
        let out = p.loss_grad_offset + r * n + j;
        if (p.accumulate != 0u) {
            partials[out] += gx;
        } else {
            partials[out] = gx;
        }
    }
}
