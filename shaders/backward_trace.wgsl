// backward_trace: the elementwise part of backward step t (sweep runs t = T down to 1), decay rule.
// With ga(t) from backward_activation, G(t+1) = dL/dH(t+1) and H(t) resident:
//
//   dw_ij     += sum_b ga_j(t) x_i(t-1)
//   dalpha_ij += sum_b ga_j(t) H_ij(t) x_i(t-1)
//   deta      += sum_b,ij G_ij(t+1) (x_i(t-1) x_j(t) - H_ij(t))
//   G_ij(t)    = (1 - eta) G_ij(t+1) + alpha_ij x_i(t-1) ga_j(t)
//   rows, for gx_i(t-1):  sum_j (w_ij + alpha_ij H_ij(t)) ga_j(t) + eta sum_j G_ij(t+1) x_j(t)
//   cols, for gx_j(t-1):  eta sum_i G_ij(t) x_i(t-2)                       (post term of H(t))
//   H_ij(t-1)  = (H_ij(t) - eta x_i(t-2) x_j(t-1)) / (1 - eta)             (trace recovered in reverse)
//
// The runtime overwrites the recovered H(t-1) with an exact checkpoint every K steps, which bounds the
// growth of rounding error to (1 - eta)^-K (see design/plastic-bptt.md). Nothing is written to the
// trace at t = 1, since H(0) does not exist.
//
// A 16x16 workgroup owns a tile of (i, j) for every batch element: w, alpha, dw and dalpha are touched
// once per step, the trace and its gradient once per batch element. The row and column sums are reduced
// inside the tile, CHUNK batch elements at a time, and written as one partial per tile, summed later by
// backward_activation.
// Traffic per step (f32): (2 + 2 + 2*B + 2*B) * N*N * 4 bytes, plus O(B*N*N/16) for the partials.

const TILE: u32 = 16u;
// Batch elements whose row and column sums are reduced together: two barriers per chunk rather
// than a tree of barriers per batch element (barriers are what software rasterisers pay most for).
const CHUNK: u32 = 4u;

struct BackwardTraceParams {
    n: u32,            // neurons N
    batch: u32,        // batch B
    step: u32,         // t, 1-based
    n_tiles: u32,      // ceil(N / TILE)
    w_offset: u32,     // offsets into `params` and, mirrored, into `grads`
    alpha_offset: u32,
    eta_offset: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> p: BackwardTraceParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;            // flat: w (N, N), alpha (N, N), eta (1)
@group(0) @binding(2) var<storage, read> activations: array<f32>;       // (T + 1, B, N): x(t) at row t
@group(0) @binding(3) var<storage, read> preact_grad: array<f32>;       // (B, N): ga(t)
@group(0) @binding(4) var<storage, read_write> trace: array<f32>;       // (B, N, N): H(t) on entry, H(t-1) on exit
@group(0) @binding(5) var<storage, read_write> trace_grad: array<f32>;  // (B, N, N): G(t+1) on entry, G(t) on exit
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;       // flat, mirrors `params`; accumulated
// (2, B, N, n_tiles): row sums then column sums for gx(t-1), overwritten each step; then
// (n_tiles, n_tiles): each tile's eta sum, accumulated over the sweep (at 2 * B * N * n_tiles).
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

var<workgroup> row_terms: array<f32, 1024>; // (CHUNK, TILE, TILE)
var<workgroup> col_terms: array<f32, 1024>; // (CHUNK, TILE, TILE)

@compute @workgroup_size(16, 16)
fn backward_trace(
    @builtin(workgroup_id) tile: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let n = p.n;
    let tj = local.x;
    let ti = local.y;
    let j = tile.x * TILE + tj;
    let i = tile.y * TILE + ti;
    let valid = i < n && j < n;
    let slot = ti * TILE + tj;
    let row = p.batch * n;
    let x_now = p.step * row;            // x(t)
    let x_prev = x_now - row;            // x(t-1)
    let has_prev2 = p.step >= 2u;        // x(t-2) and H(t-1) exist
    let eta = params[p.eta_offset];
    let decay = 1.0 - eta;
    var w_ij = 0.0;
    var alpha_ij = 0.0;
    if (valid) {
        w_ij = params[p.w_offset + i * n + j];
        alpha_ij = params[p.alpha_offset + i * n + j];
    }

    var d_w = 0.0;
    var d_alpha = 0.0;
    var d_eta = 0.0;
    for (var b0 = 0u; b0 < p.batch; b0 += CHUNK) {
        for (var k = 0u; k < CHUNK; k++) {
            let b = b0 + k;
            var row_term = 0.0;
            var col_term = 0.0;
            if (valid && b < p.batch) {
                let idx = (b * n + i) * n + j;
                let xi_prev = activations[x_prev + b * n + i];
                let xj_now = activations[x_now + b * n + j];
                let ga_j = preact_grad[b * n + j];
                let h = trace[idx];
                let g_next = trace_grad[idx];
                d_w += ga_j * xi_prev;
                d_alpha += ga_j * h * xi_prev;
                d_eta += g_next * (xi_prev * xj_now - h);
                row_term = (w_ij + alpha_ij * h) * ga_j + eta * g_next * xj_now;
                let g = decay * g_next + alpha_ij * xi_prev * ga_j;
                trace_grad[idx] = g;
                if (has_prev2) {
                    let xi_prev2 = activations[x_prev - row + b * n + i];
                    let xj_prev = activations[x_prev + b * n + j];
                    col_term = eta * g * xi_prev2;
                    trace[idx] = (h - eta * xi_prev2 * xj_prev) / decay;
                }
            }
            row_terms[k * TILE * TILE + slot] = row_term;
            col_terms[k * TILE * TILE + slot] = col_term;
        }
        workgroupBarrier();
        // Invocations 0..63 each sum one row of one batch element, 64..127 one column.
        let k = (slot / TILE) % CHUNK;
        let lane = slot % TILE;
        let b = b0 + k;
        if (slot < CHUNK * TILE && b < p.batch) {
            let r = tile.y * TILE + lane;
            var sum = 0.0;
            for (var c = 0u; c < TILE; c++) {
                sum += row_terms[k * TILE * TILE + lane * TILE + c];
            }
            if (r < n) {
                partials[(b * n + r) * p.n_tiles + tile.x] = sum;
            }
        } else if (slot < 2u * CHUNK * TILE && b < p.batch) {
            let c = tile.x * TILE + lane;
            var sum = 0.0;
            for (var q = 0u; q < TILE; q++) {
                sum += col_terms[k * TILE * TILE + q * TILE + lane];
            }
            if (c < n) {
                partials[(p.batch + b) * n * p.n_tiles + c * p.n_tiles + tile.y] = sum;
            }
        }
        workgroupBarrier();
    }

    if (valid) {
        grads[p.w_offset + i * n + j] += d_w;
        grads[p.alpha_offset + i * n + j] += d_alpha;
    }
    row_terms[slot] = d_eta;
    workgroupBarrier();
    if (slot == 0u) {
        var sum = 0.0;
        for (var s = 0u; s < TILE * TILE; s++) {
            sum += row_terms[s];
        }
        partials[2u * p.batch * n * p.n_tiles + tile.y * p.n_tiles + tile.x] += sum;
    }
}
