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
// One invocation owns a TILE x TILE block of (i, j) for every batch element and walks it serially, so
// both the row sums (over its TILE columns) and the column sums (over its TILE rows) are private
// running sums: no workgroup memory and no barriers. Each block writes one partial per row and per
// column, summed later by backward_activation. w, alpha, dw and dalpha are touched once per CHUNK
// batch elements, the trace and its gradient once per batch element.
// Traffic per step (f32): (2 + 4 + 4*B) * N*N * 4 bytes at B <= CHUNK, plus O(B*N*N/TILE) for partials.

const TILE: u32 = 16u;
// Batch elements handled per pass over the block: dw and dalpha are read and written once per chunk.
const CHUNK: u32 = 4u;

override WORKGROUP_SIZE: u32 = 64u;

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

@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_trace(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let tile_j = gid.x;
    let tile_i = gid.y;
    if (tile_j >= p.n_tiles || tile_i >= p.n_tiles) {
        return;
    }
    let i0 = tile_i * TILE;
    let j0 = tile_j * TILE;
    let i_end = min(i0 + TILE, n);
    let j_end = min(j0 + TILE, n);
    let row = p.batch * n;
    let x_now = p.step * row;            // x(t)
    let x_prev = x_now - row;            // x(t-1)
    let has_prev2 = p.step >= 2u;        // x(t-2) and H(t-1) exist
    let eta = params[p.eta_offset];
    let decay = 1.0 - eta;
    let col_base = p.batch * n * p.n_tiles; // column sums follow the row sums in `partials`

    var d_eta = 0.0;
    for (var b0 = 0u; b0 < p.batch; b0 += CHUNK) {
        let chunk = min(CHUNK, p.batch - b0);
        var col_sums: array<f32, 64>;    // (CHUNK, TILE)
        for (var i = i0; i < i_end; i++) {
            var row_sums: array<f32, CHUNK>;
            for (var j = j0; j < j_end; j++) {
                let w_ij = params[p.w_offset + i * n + j];
                let alpha_ij = params[p.alpha_offset + i * n + j];
                var d_w = 0.0;
                var d_alpha = 0.0;
                for (var k = 0u; k < chunk; k++) {
                    let b = b0 + k;
                    let idx = (b * n + i) * n + j;
                    let xi_prev = activations[x_prev + b * n + i];
                    let xj_now = activations[x_now + b * n + j];
                    let ga_j = preact_grad[b * n + j];
                    let h = trace[idx];
                    let g_next = trace_grad[idx];
                    d_w += ga_j * xi_prev;
                    d_alpha += ga_j * h * xi_prev;
                    d_eta += g_next * (xi_prev * xj_now - h);
                    row_sums[k] += (w_ij + alpha_ij * h) * ga_j + eta * g_next * xj_now;
                    let g = decay * g_next + alpha_ij * xi_prev * ga_j;
                    trace_grad[idx] = g;
                    if (has_prev2) {
                        let xi_prev2 = activations[x_prev - row + b * n + i];
                        let xj_prev = activations[x_prev + b * n + j];
                        col_sums[k * TILE + j - j0] += eta * g * xi_prev2;
                        trace[idx] = (h - eta * xi_prev2 * xj_prev) / decay;
                    }
                }
                grads[p.w_offset + i * n + j] += d_w;
                grads[p.alpha_offset + i * n + j] += d_alpha;
            }
            for (var k = 0u; k < chunk; k++) {
                partials[((b0 + k) * n + i) * p.n_tiles + tile_j] = row_sums[k];
            }
        }
        for (var k = 0u; k < chunk; k++) {
            for (var j = j0; j < j_end; j++) {
                partials[col_base + ((b0 + k) * n + j) * p.n_tiles + tile_i] = col_sums[k * TILE + j - j0];
            }
        }
    }
    partials[2u * col_base + tile_i * p.n_tiles + tile_j] += d_eta;
}
