// weight_gradient_vec4: weight_gradient.wgsl for N a multiple of 4, every load and store a vec4.
//
//   dw_ij += sum_{s = s0}^{s0 + S - 1} sum_b x_bi(s - 1) ga_bj(s)
//
// The same kernel, parameters, grid and CPU twin (cpu::weight_gradient) as weight_gradient.wgsl,
// which explains the window. One invocation owns rows i0 .. i0 + 7 and the two column quads
// 2 gid.x, 2 gid.x + 1; per (s, b) it loads two quads of x and two of ga (four accesses for 64
// multiply-adds), where the scalar kernel makes sixteen. Every row of the history, of the ga ring and
// of dw is a whole number of quads (N % 4 == 0, offsets multiples of 4; see uses_vec4_kernels).

const ROWS: u32 = 8u;

override WORKGROUP_SIZE: u32 = 64u;

struct WeightGradientParams {
    n: u32,          // neurons N, a multiple of 4
    batch: u32,      // batch B
    first_step: u32, // s0, 1-based: the window's first step
    steps: u32,      // S, the steps of the window
    ga_offset: u32,  // offset in `partials` of ga(s0) (B, N), a multiple of 4
    w_offset: u32,   // offset of dw (N, N) in `grads`, a multiple of 4
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> p: WeightGradientParams;
@group(0) @binding(1) var<storage, read> activations: array<vec4<f32>>; // (T + 1, B, N/4): x(s) at row s
@group(0) @binding(2) var<storage, read> partials: array<vec4<f32>>;    // (S, B, N/4) ga(s0 ..) at ga_offset / 4
@group(0) @binding(3) var<storage, read_write> grads: array<vec4<f32>>; // flat, mirrors the parameters, as quads; accumulated

@compute @workgroup_size(WORKGROUP_SIZE)
fn weight_gradient_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let quads = n / 4u;
    let q0 = 2u * gid.x;
    let i0 = gid.y * ROWS;
    if (q0 >= quads || i0 >= n) {
        return;
    }
    // The block's second row quad and second column quad exist unless N ends inside the block.
    let has_hi_rows = i0 + 4u < n;
    let has_hi_cols = q0 + 1u < quads;
    let row = p.batch * quads; // one (B, N) row of the history and of the ring, in quads
    // acc_lo[r]: dw of row i0 + r, column quad q0; acc_hi[r]: column quad q0 + 1.
    var acc_lo: array<vec4<f32>, ROWS>;
    var acc_hi: array<vec4<f32>, ROWS>;
    for (var s = 0u; s < p.steps; s++) {
        let x_row = (p.first_step + s - 1u) * row;   // x(s0 + s - 1)
        let ga_row = p.ga_offset / 4u + s * row;     // ga(s0 + s)
        for (var b = 0u; b < p.batch; b++) {
            let x_lo = activations[x_row + b * quads + i0 / 4u];
            var x_hi = vec4(0.0);
            if (has_hi_rows) {
                x_hi = activations[x_row + b * quads + i0 / 4u + 1u];
            }
            let ga_lo = partials[ga_row + b * quads + q0];
            var ga_hi = vec4(0.0);
            if (has_hi_cols) {
                ga_hi = partials[ga_row + b * quads + q0 + 1u];
            }
            for (var r = 0u; r < 4u; r++) {
                acc_lo[r] += x_lo[r] * ga_lo;
                acc_hi[r] += x_lo[r] * ga_hi;
                acc_lo[r + 4u] += x_hi[r] * ga_lo;
                acc_hi[r + 4u] += x_hi[r] * ga_hi;
            }
        }
    }
    let w_quad = p.w_offset / 4u;
    for (var r = 0u; r < ROWS; r++) {
        let i = i0 + r;
        if (i < n) {
            grads[w_quad + i * quads + q0] += acc_lo[r];
            if (has_hi_cols) {
                grads[w_quad + i * quads + q0 + 1u] += acc_hi[r];
            }
        }
    }
}
