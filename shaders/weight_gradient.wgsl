// weight_gradient: the fixed weights' gradient over a window of backward steps, as one small GEMM.
//
//   dw_ij += sum_{s = s0}^{s0 + S - 1} sum_b x_bi(s - 1) ga_bj(s)
//
// Of the parameters' gradients only dw needs neither the trace nor its gradient, so it is not
// accumulated inside backward_trace's walk, where it would be read and written once per pass of
// CHUNK batch elements (2 N^2 floats each, every step). The backward sweep keeps ga(s) of the last
// K steps in a ring in `partials` (step s in slot (s - 1) mod K) and runs this kernel once per window
// of K steps, when the sweep has reached the window's first step s0 (windows start at steps 1, K + 1,
// 2K + 1, ...; S = K but for the last one): dw is read and written once per window, against
// 2 S B N floats of inputs.
//
// One invocation owns a block of ROWS x COLS (i, j) and forms its outer products from registers:
// per (s, b) it loads ROWS values of x and COLS of ga for ROWS * COLS multiply-adds. Neighbouring
// invocations take neighbouring column blocks. Any N; weight_gradient_vec4.wgsl is the same kernel
// with vec4 loads, for N a multiple of 4.

const ROWS: u32 = 8u;
const COLS: u32 = 8u;

override WORKGROUP_SIZE: u32 = 64u;

struct WeightGradientParams {
    n: u32,          // neurons N
    batch: u32,      // batch B
    first_step: u32, // s0, 1-based: the window's first step
    steps: u32,      // S, the steps of the window
    ga_offset: u32,  // offset in `partials` of ga(s0) (B, N); ga(s0 + k) follows at + k B N
    w_offset: u32,   // offset of dw (N, N) in `grads`
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> p: WeightGradientParams;
@group(0) @binding(1) var<storage, read> activations: array<f32>; // (T + 1, B, N): x(s) at row s
@group(0) @binding(2) var<storage, read> partials: array<f32>;    // (S, B, N) ga(s0 ..) at ga_offset
@group(0) @binding(3) var<storage, read_write> grads: array<f32>; // flat, mirrors the parameters; accumulated

// x_bk(s) for k = j .. j + 3 from `at`, the start of its (N) row; zero past N.
fn x_quad(at: u32, j: u32, n: u32) -> vec4<f32> {
    var v = vec4(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (j + c < n) {
            v[c] = activations[at + j + c];
        }
    }
    return v;
}

// ga_bk(s) for k = j .. j + 3 likewise.
fn ga_quad(at: u32, j: u32, n: u32) -> vec4<f32> {
    var v = vec4(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (j + c < n) {
            v[c] = partials[at + j + c];
        }
    }
    return v;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn weight_gradient(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let j0 = gid.x * COLS;
    let i0 = gid.y * ROWS;
    if (j0 >= n || i0 >= n) {
        return;
    }
    let row = p.batch * n; // one (B, N) row of the history and of the ring
    // acc_lo[r]: dw of row i0 + r, columns j0 .. j0 + 3; acc_hi[r]: columns j0 + 4 .. j0 + 7.
    var acc_lo: array<vec4<f32>, ROWS>;
    var acc_hi: array<vec4<f32>, ROWS>;
    for (var s = 0u; s < p.steps; s++) {
        let x_row = (p.first_step + s - 1u) * row; // x(s0 + s - 1)
        let ga_row = p.ga_offset + s * row;        // ga(s0 + s)
        for (var b = 0u; b < p.batch; b++) {
            let x_lo = x_quad(x_row + b * n, i0, n);
            let x_hi = x_quad(x_row + b * n, i0 + 4u, n);
            let ga_lo = ga_quad(ga_row + b * n, j0, n);
            let ga_hi = ga_quad(ga_row + b * n, j0 + 4u, n);
            for (var r = 0u; r < 4u; r++) {
                acc_lo[r] += x_lo[r] * ga_lo;
                acc_hi[r] += x_lo[r] * ga_hi;
                acc_lo[r + 4u] += x_hi[r] * ga_lo;
                acc_hi[r + 4u] += x_hi[r] * ga_hi;
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        let i = i0 + r;
        for (var c = 0u; c < 4u; c++) {
            if (i < n && j0 + c < n) {
                grads[p.w_offset + i * n + j0 + c] += acc_lo[r][c];
            }
            if (i < n && j0 + 4u + c < n) {
                grads[p.w_offset + i * n + j0 + 4u + c] += acc_hi[r][c];
            }
        }
    }
}
