// head_forward: an output head read from the neurons at every loss step (its logits, for a softmax head).
//
//   y_bk(s) = b_k + sum_j x_bj(t_s) W_jk          t_s = loss_steps[s], k < K (this head's width)
//
// Written to columns [col0, col0 + K) of the (L, B, total) head outputs, total being the summed width
// of every head. One invocation per (s, b, k): neighbouring k read neighbouring W columns.

override WORKGROUP_SIZE: u32 = 64u;

struct HeadForwardParams {
    n: u32,            // neurons N
    batch: u32,        // batch B
    n_loss_steps: u32, // L
    width: u32,        // K, this head's outputs
    total: u32,        // summed width of every head: the row length of `outputs`
    col0: u32,         // this head's first column
    w_offset: u32,     // offset of W (N, K) in `params`; b (K) follows it
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> p: HeadForwardParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;         // flat parameters [..., W (N, K), b (K), ...]
@group(0) @binding(2) var<storage, read> activations: array<f32>;    // (T + 1, B, N): x(t) at row t
@group(0) @binding(3) var<storage, read> loss_steps: array<u32>;     // (L): 1-based steps the heads read
@group(0) @binding(4) var<storage, read_write> outputs: array<f32>;  // (L, B, total): y, this head's columns written

@compute @workgroup_size(WORKGROUP_SIZE)
fn head_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x;
    let sb = gid.y; // s * B + b
    if (k >= p.width || sb >= p.n_loss_steps * p.batch) {
        return;
    }
    let n = p.n;
    let s = sb / p.batch;
    let b = sb % p.batch;
    let x = (loss_steps[s] * p.batch + b) * n;
    var y = params[p.w_offset + n * p.width + k];
    for (var j = 0u; j < n; j++) {
        y += activations[x + j] * params[p.w_offset + j * p.width + k];
    }
    outputs[sb * p.total + p.col0 + k] = y;
}
