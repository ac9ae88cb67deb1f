// backward_trace: the elementwise part of backward step t (the sweep runs t = T down to 1), any rule.
// With ga(t) from backward_activation, G(t+1) = dL/dH(t+1) and H(t) resident, and U, r, alpha_eff as in
// forward_step.wgsl (pre = x_i(t-1), post = x_j(t), r = rate_bj(t), m = clip'(U_r(H(t))): 1 inside
// (-CLIP, CLIP), else 0):
//
//   dalpha_ij += sum_b ga_j(t) H_ij(t) x_i(t-1)                  (summed per alpha element later)
//   (dw_ij += sum_b ga_j(t) x_i(t-1) needs no trace: weight_gradient.wgsl forms it per window of steps)
//   G_ij(t)    = m dU/dH G_ij(t+1) + alpha_eff_ij x_i(t-1) ga_j(t)
//   rows, for gx_i(t-1):  sum_j (w_ij + alpha_eff_ij H_ij(t)) ga_j(t) + m G_ij(t+1) r x_j(t)   (dU/dpre = r post)
//   then, with step t-1's update (pre' = x_i(t-2), post' = x_j(t-1), r' = rate_bj(t-1), m' its clip mask):
//   cols, for gx_j(t-1):  sum_i m' G_ij(t) dU/dpost'
//   drate_bj(t-1)       = sum_i m' G_ij(t) dU/dr'      (per tile into the rate partials when the rate is
//                                                      modulated, else summed into eta's partials)
//
//   dU/dH:    decay 1 - r          oja 1 - r post^2             additive 1
//   dU/dpost: decay r pre          oja r (pre - 2 post H)       additive r pre
//   dU/dr:    decay pre post - H   oja post (pre - post H)      additive pre post
//
// Retroactive (E(t+1) = U_eta(E(t)), H(t+1) = clip(H(t) + r E(t)), m = clip'(H(t) + r E(t))), with
// GE(t) = dL/dE(t) resident beside G:
//   G_ij(t)  = m G_ij(t+1) + alpha_eff_ij x_i(t-1) ga_j(t)
//   GE_ij(t) = m r G_ij(t+1) + dU_eta/dE GE_ij(t+1)
//   rows += GE_ij(t+1) eta_j x_j(t);  cols = sum_i GE_ij(t) dU_eta/dpost';  drate_bj(t-1) = sum_i m' G_ij(t) E_ij(t-1)
//   deta_j += sum GE_ij(t) dU_eta/deta'
//
// H(t-1) comes from inverting the update when REVERSE (fixed rate, no clip, see plastic-bptt.md):
//   decay H(t-1) = (H(t) - r' pre' post') / (1 - r');  oja (H(t) - r' post' pre') / (1 - r' post'^2);  additive H(t) - r' pre' post'
// and the runtime overwrites it with an exact checkpoint every K steps, which bounds the growth of
// rounding error. A reversed step need not store H(t-1) (skip_store): the step after it then finds the
// slot one step ahead, H(t) where it wants H(t-1) (trace_ahead), and recovers its own H from it by the
// same inversion with its own pre, post and r: the f32 operations whose result the store would have kept. The
// runtime stores every other step (backward_trace::reversal_schedule). The trace gradient likewise: a
// reversed step need not store G(t) (skip_grad_store), and the step after it, finding G(t+1) where it
// wants G(t) (grad_ahead), first recovers G(t) = dU/dH G(t+1) + alpha_eff x_i(t-1) ga_j(t) with the
// skipping step's x_i(t-1), x_j(t), rate and ga(t) (ga(t+1) and x(t+1) from its own point of view):
// 3 trace and gradient accesses per element and step instead of 4. Otherwise the runtime has
// recomputed the segment's traces (trace_update.wgsl) and H(t-1) is read from the slot before H(t)'s.
// Nothing is written to the trace at t = 1.
//
// One invocation owns TILE rows and TILE columns of (i, j) for every batch element and walks them
// serially, so the row sums (over its TILE columns), the column sums (over its TILE rows) and the eta
// sums are private running sums: no workgroup memory and no barriers. Each invocation writes one
// partial per row and per column, summed later by backward_activation. Its rows are contiguous; its
// columns, on a GPU, are interleaved with its neighbours': the COLUMN_LANES invocations of a column
// group share COLUMN_LANES * TILE columns, invocation l taking columns l, l + L, l + 2L, ...
// (L = COLUMN_LANES, or fewer in the last, narrower group), so at each step of the walk neighbouring
// invocations touch neighbouring elements and every access is coalesced. On a CPU adapter
// COLUMN_LANES is 1: each invocation's TILE columns are contiguous. There are exactly ceil(N / TILE)
// invocations per row of blocks either way, and the row partial an invocation writes is slot
// tile_j = its index along x. w, alpha and dalpha are touched once per CHUNK batch elements, the trace
// and its gradient once per batch element.
// Traffic per step (f32): (2 + 2 + 3*B) * N*N * 4 bytes at B <= CHUNK (decay rule, reversed: H and
// G in, each out every other step), plus O(B*N*N/TILE) for partials.
//
// Batch groups (groups = Z > 1, for GPUs, where ceil(N / TILE)^2 invocations are far too few): the
// grid's third dimension z takes the batch elements z, z + Z, z + 2Z, ..., so Z invocations share a
// block. Each group then accumulates its own dalpha, over the whole sweep, in partials at
// group_grad_offset, (Z, N, N), and its own eta sums; finish_gradients adds the groups up. With
// Z = 1, dalpha goes straight to `grads` (to the alpha accumulator when alpha is not per connection).

// Side of the block one invocation walks: 4, 8 or 16, set by the runtime (KernelTuning::
// backward_tile_side: 16 on a CPU adapter, smaller on a GPU where the batch is small). A smaller block
// means (16 / TILE)^2 times the invocations (on a GPU, more of them in flight to hide the latency of
// their loads) and TILE times fewer rows and columns over which x_i, x_j and the partial sums are
// shared: O(B*N*N/TILE) more partials traffic.
override TILE: u32 = 16u;
// The largest TILE: the size of the arrays that hold a block's column sums.
const TILE_MAX: u32 = 16u;
// Invocations of a warp on most GPUs: block rows at least this wide start on whole multiples of it.
const LANES: u32 = 32u;
// Invocations that interleave their columns (see above), set by the runtime
// (KernelTuning::backward_column_lanes): LANES on a GPU, whose warps then load neighbouring elements
// together; 1 on a CPU adapter, where each invocation's columns in one run made a training episode
// take 0.88-0.96x the time on lavapipe (README, "How the kernels were tuned on lavapipe").
override COLUMN_LANES: u32 = 32u;
// Batch elements handled per pass over the block: dalpha is read and written once per chunk.
const CHUNK: u32 = 4u;
// Batch elements per pass, 1 to CHUNK, set by the runtime: min(CHUNK, ceil(B / Z)) unless
// KernelTuning::backward_batch_slots sets fewer (fewer registers, more passes). The loops over a pass
// run to it, so that they unroll and the arrays indexed by k are registers.
override BATCH_SLOTS: u32 = 4u;

override WORKGROUP_SIZE: u32 = 64u;
override RULE: u32 = 0u;
override CLIP: f32 = 0.0;
override ALPHA_SHAPE: u32 = 0u;
override RATE: u32 = 0u;
override ETA_PER_NEURON: bool = false;
override RETROACTIVE: bool = false;
override PLASTIC_SELF: bool = true;
override REVERSE: bool = true;
// Set by the runtime when REVERSE and its schedule leaves the gradient unstored every other step
// (not with KernelTuning::backward_store_every_step): compiles in the recovery of G(t+1) (grad_ahead),
// whose row and column values would otherwise hold registers in every sweep.
override GRAD_AHEAD: bool = true;

struct BackwardTraceParams {
    n: u32,                   // neurons N
    batch: u32,               // batch B
    step: u32,                // t, 1-based
    n_tiles: u32,             // ceil(N / TILE)
    w_offset: u32,            // offsets into `params` and, mirrored, into `grads`
    alpha_offset: u32,
    eta_offset: u32,
    mod_offset: u32,
    cur_offset: u32,          // element offset of H(t) in `trace` (E(t) at + elig_offset)
    prev_offset: u32,         // of H(t-1); equal to cur_offset when REVERSE
    elig_offset: u32,         // offset of E in a trace slot, and of GE in `trace_grad`
    alpha_grad_offset: u32,   // (N, N) dalpha accumulator in `partials` when alpha is not per connection
    rate_partials_offset: u32,// (B, n_tiles, N) drate(t-1) per tile of i, overwritten each step (modulated rates)
    eta_partials_offset: u32, // (Z, n_tiles, N) eta sums per group, tile of i and post neuron j, accumulated over the sweep
    preact_offset: u32,       // (B, N) ga(t) in `partials`, from backward_activation
    groups: u32,              // Z batch groups (0 or 1: one)
    group_grad_offset: u32,   // (Z, N, N) dalpha per group in `partials` when Z > 1
    trace_ahead: u32,         // REVERSE: 1 when the slot holds H(t+1) instead of H(t), which this step recovers first
    skip_store: u32,          // REVERSE: 1 to leave the slot as it is instead of writing H(t-1) over it
    grad_ahead: u32,          // REVERSE: 1 when trace_grad holds G(t+2) instead of G(t+1), which this step recovers first
    skip_grad_store: u32,     // REVERSE: 1 to leave trace_grad as it is instead of writing G(t) over it
    next_preact_offset: u32,  // (B, N) ga(t+1) in `partials`, read when grad_ahead
}

@group(0) @binding(0) var<storage, read> p: BackwardTraceParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;            // flat [w, alpha, eta, modulator]
@group(0) @binding(2) var<storage, read> activations: array<f32>;       // (T + 1, B, N): x(t) at row t
@group(0) @binding(3) var<storage, read> modulation: array<f32>;        // (T + 1, B): M_b(t) at row t
@group(0) @binding(4) var<storage, read_write> trace: array<f32>;       // slots of [H (B, N, N), E (B, N, N)]: H(t) (or H(t+1)) on entry, H(t-1) (or the same) on exit when REVERSE
@group(0) @binding(5) var<storage, read_write> trace_grad: array<f32>;  // [G (B, N, N), GE (B, N, N)]: G(t+1) on entry, G(t) on exit
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;       // flat, mirrors `params`; accumulated
// (B, n_tiles, N) row sums, then (B, n_tiles, N) column sums, for gx(t-1), overwritten each step
// (one layout for every per-tile partial, whose readers then sum with coalesced loads, and in which
// backward_trace_vec4 writes whole quads); then the rate, eta and alpha partials and ga(t) at the
// offsets above.
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

// One parameter of the flat buffer, as the shared functions below read it.
fn param(k: u32) -> f32 {
    return params[k];
}

// ---- shared by every rule kernel (a test keeps the copies identical) ----
fn rule_update(h: f32, pre: f32, post: f32, r: f32) -> f32 {
    if (RULE == 1u) {
        return h + r * post * (pre - post * h);
    } else if (RULE == 2u) {
        return h + r * pre * post;
    }
    return (1.0 - r) * h + r * pre * post;
}

fn clip_trace(v: f32) -> f32 {
    if (CLIP > 0.0) {
        return clamp(v, -CLIP, CLIP);
    }
    return v;
}

// rate_bj(s) of the plastic trace's update at step s.
fn plastic_rate(b: u32, j: u32, s: u32, n: u32, batch: u32, eta_offset: u32, mod_offset: u32) -> f32 {
    if (RATE == 1u) {
        return param(eta_offset + j);
    } else if (RATE == 2u) {
        return modulation[s * batch + b];
    } else if (RATE == 3u) {
        return param(mod_offset + n + 1u + j) * modulation[s * batch + b] + param(mod_offset + 2u * n + 1u + j);
    }
    return param(eta_offset);
}

// eta_j: the rate of the eligibility trace's update.
fn eligibility_rate(j: u32, eta_offset: u32) -> f32 {
    if (ETA_PER_NEURON) {
        return param(eta_offset + j);
    }
    return param(eta_offset);
}

fn alpha_eff(i: u32, j: u32, n: u32, alpha_offset: u32) -> f32 {
    if (!PLASTIC_SELF && i == j) {
        return 0.0;
    }
    if (ALPHA_SHAPE == 1u) {
        return param(alpha_offset + j);
    } else if (ALPHA_SHAPE == 2u) {
        return param(alpha_offset);
    }
    return param(alpha_offset + i * n + j);
}

// Where a batch element's (N, N) trace keeps its elements (the trace gradient, E and GE alike): set
// by the runtime for every kernel of an episode (KernelTuning::trace_stripe, plasticity_kernels::
// TraceLayout, its CPU twin). 0: rows whole, element (i, j) at i N + j. S > 0: the columns in
// stripes of S (the last one N mod S wide where S does not divide N), each stripe's N rows stored one
// after another, so element (i, j) of the stripe starting at column c = j - j mod S lies at
// c N + i min(S, N - c) + (j - c). An invocation walking the rows of one column run then reads one
// contiguous stream instead of a run every N floats (on lavapipe at N = 1000, B = 16 the forward step
// then took about 0.6x the time, most likely through the CPU's prefetchers). A multiple of 4 for the
// vec4 kernels.
override TRACE_STRIPE: u32 = 0u;

// Column j's place in the layout: element (i, j) at x + i y of its batch element's trace.
fn trace_column(j: u32, n: u32) -> vec2<u32> {
    let stripe = max(TRACE_STRIPE, 1u); // (naga rejects a division by the constant 0, even unreached)
    if (TRACE_STRIPE == 0u || stripe >= n) {
        return vec2(j, n);
    }
    let start = j - j % stripe;
    return vec2(start * n + (j - start), min(stripe, n - start));
}

// The inverse: (i, j) of the element at offset r < N^2 of a batch element's trace.
fn trace_element(r: u32, n: u32) -> vec2<u32> {
    let stripe = max(TRACE_STRIPE, 1u);
    if (TRACE_STRIPE == 0u || stripe >= n) {
        return vec2(r / n, r % n);
    }
    let start = r / (stripe * n) * stripe;
    let width = min(stripe, n - start);
    let within = r - start * n;
    return vec2(within / width, start + within % width);
}
// ---- end of shared functions ----

fn rule_d_trace(h: f32, post: f32, r: f32) -> f32 {
    if (RULE == 1u) {
        return 1.0 - r * post * post;
    } else if (RULE == 2u) {
        return 1.0;
    }
    return 1.0 - r;
}

fn rule_d_post(h: f32, pre: f32, post: f32, r: f32) -> f32 {
    if (RULE == 1u) {
        return r * (pre - 2.0 * post * h);
    }
    return r * pre;
}

fn rule_d_rate(h: f32, pre: f32, post: f32) -> f32 {
    if (RULE == 1u) {
        return post * (pre - post * h);
    } else if (RULE == 2u) {
        return pre * post;
    }
    return pre * post - h;
}

// H(t-1) from H(t) = U_r(H(t-1)); only used when REVERSE.
fn rule_inverse(v: f32, pre: f32, post: f32, r: f32) -> f32 {
    if (RULE == 1u) {
        return (v - r * post * pre) / (1.0 - r * post * post);
    } else if (RULE == 2u) {
        return v - r * pre * post;
    }
    return (v - r * pre * post) / (1.0 - r);
}

// G(t) = m dU/dH G(t+1) + alpha_eff x_i(t-1) ga_j(t), d_trace = m dU/dH: one expression for the step's
// own update and for the recovery of G(t+1) by a step that finds G(t+2), so that both round alike.
fn grad_update(d_trace: f32, g_next: f32, alpha: f32, pre: f32, ga: f32) -> f32 {
    return d_trace * g_next + alpha * pre * ga;
}

// d clip(v) / dv.
fn clip_pass(v: f32) -> f32 {
    if (CLIP > 0.0) {
        return select(0.0, 1.0, abs(v) < CLIP);
    }
    return 1.0;
}

// ---- shared by the backward trace kernels (a test keeps the copies identical) ----
// What step t of the sweep finds and leaves (plasticity_kernels::backward_trace::reversal_schedule).
// Unless REVERSE nothing is ahead, H(t-1) is not stored (it was read from its own slot) and G(t) is.
struct Reversal {
    ahead: bool,       // the slot holds H(t+1) (the step after did not store H(t)): recover H(t) first
    store_prev: bool,  // write the recovered H(t-1) over the slot
    grad_ahead: bool,  // trace_grad holds G(t+2) (the step after did not store G(t+1)): recover it first
    store_grad: bool,  // write G(t) over trace_grad
}

fn reversal_flags() -> Reversal {
    return Reversal(
        REVERSE && p.trace_ahead != 0u,
        REVERSE && p.skip_store == 0u,
        REVERSE && GRAD_AHEAD && p.grad_ahead != 0u,
        !(REVERSE && p.skip_grad_store != 0u),
    );
}

// Invocations per row of `tiles` blocks (plasticity_kernels::backward_trace::block_row_width): with
// u = min(WORKGROUP_SIZE, LANES), a warp, the row where it is narrower than u, else the row rounded
// up to whole multiples of u.
fn block_row_width(tiles: u32) -> u32 {
    let unit = clamp(WORKGROUP_SIZE, 1u, LANES);
    if (tiles < unit) {
        return tiles;
    }
    return (tiles + unit - 1u) / unit * unit;
}

// The block (row i, column j) of invocation `gid` in a grid of `grid` workgroups: blocks row by row
// over the flat index of the grid's x and y (backward_trace::workgroups), so that a SIMD group or
// warp takes consecutive blocks however few a row has; rows as wide as a warp start on whole warps.
// A row's padding gives j >= n_tiles, and the grid's last workgroups i >= n_tiles: both skipped.
fn block_of_invocation(gid: vec3<u32>, grid: vec3<u32>) -> vec2<u32> {
    let block = gid.x + gid.y * grid.x * WORKGROUP_SIZE;
    let row_width = block_row_width(p.n_tiles);
    return vec2(block / row_width, block % row_width);
}
// ---- end of the backward trace kernels' shared functions ----

fn div_ceil_u32(a: u32, b: u32) -> u32 {
    return (a + b - 1u) / b;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_trace(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) grid: vec3<u32>) {
    let n = p.n;
    let block = block_of_invocation(gid, grid);
    let tile_i = block.x;
    let tile_j = block.y;
    let z = gid.z; // the batch group
    let groups = max(p.groups, 1u);
    if (tile_j >= p.n_tiles || tile_i >= p.n_tiles || z >= groups || z >= p.batch) {
        return;
    }
    let i0 = tile_i * TILE;
    let i_end = min(i0 + TILE, n);
    // Column group g covers [g * COLUMN_LANES * TILE, + width); lane l of its L lanes takes
    // j = start + l + m L.
    let group_start = (tile_j / COLUMN_LANES) * COLUMN_LANES * TILE;
    let lanes = div_ceil_u32(min(COLUMN_LANES * TILE, n - group_start), TILE);
    let j0 = group_start + tile_j % COLUMN_LANES;  // this invocation's first column
    let j_end = min(group_start + COLUMN_LANES * TILE, n);
    let row = p.batch * n;
    let x_now = p.step * row;            // x(t)
    let x_prev = x_now - row;            // x(t-1)
    let has_prev2 = p.step >= 2u;        // x(t-2) and H(t-1) exist
    let col_base = p.batch * n * p.n_tiles; // column sums follow the row sums in `partials`
    // Everything loop-invariant is loaded once: the compiler cannot hoist loads from `params` or `p`
    // past the stores to the other buffers, which it must assume may alias them.
    let eo = p.elig_offset;
    let cur = p.cur_offset;
    let prev = p.prev_offset;
    let preact = p.preact_offset;
    let w_offset = p.w_offset;
    let alpha_offset = p.alpha_offset;
    let eta_offset = p.eta_offset;
    let mod_offset = p.mod_offset;
    let step = p.step;
    // What the reversed sweep's schedule left in the slot and the trace gradient (see reversal_flags).
    let rev = reversal_flags();
    let next_preact = p.next_preact_offset;
    let x_next = x_now + row;            // x(t+1), read when grad_ahead
    let grouped = groups > 1u;
    let nn = n * n;
    let dalpha_base = p.group_grad_offset + z * nn;
    // (Z, n_tiles, N): this group's eta sums.
    let eta_base = p.eta_partials_offset + z * p.n_tiles * n;
    // A fixed rate (RATE 0: one eta) is read once; per-neuron rates once per column; modulated
    // rates per (b, j).
    let eta0 = params[eta_offset];
    // The eta gradient is per post neuron (eta per neuron, directly or as E's rate), else one sum.
    let eta_per_neuron = RATE == 1u || (RETROACTIVE && ETA_PER_NEURON);

    var eta_sums: array<f32, TILE_MAX>;
    var eta_total = 0.0;
    // Group z takes batch elements b = z, z + Z, z + 2Z, ..., CHUNK of them per pass: element k of
    // the pass starting at m0 is b = z + (m0 + k) Z.
    let group_batch = (p.batch - z + groups - 1u) / groups;
    // At least 1, so that the passes below (m0 += slots) always advance.
    let slots = clamp(BATCH_SLOTS, 1u, CHUNK);
    for (var m0 = 0u; m0 < group_batch; m0 += slots) {
        let chunk = min(slots, group_batch - m0);
        let b0 = z + m0 * groups;
        var col_sums: array<f32, 64>;    // (CHUNK, TILE) in the first CHUNK * TILE (TILE_MAX)
        var rate_sums: array<f32, 64>;   // likewise
        for (var i = i0; i < i_end; i++) {
            var row_sums: array<f32, CHUNK>;
            // x_i(t-1) and x_i(t-2) per batch element, loaded once for the row's columns.
            var pres: array<f32, CHUNK>;
            var pres2: array<f32, CHUNK>;
            var pres_next: array<f32, CHUNK>;  // x_i(t), when grad_ahead
            for (var k = 0u; k < slots; k++) {
                if (k < chunk) {
                    let b = b0 + k * groups;
                    pres[k] = activations[x_prev + b * n + i];
                    if (has_prev2) {
                        pres2[k] = activations[x_prev - row + b * n + i];
                    }
                    if (rev.grad_ahead) {
                        pres_next[k] = activations[x_now + b * n + i];
                    }
                }
            }
            for (var jj = 0u; jj < TILE; jj++) {
                let j = j0 + jj * lanes;
                if (j >= j_end) {
                    break;
                }
                let w_ij = params[w_offset + i * n + j];
                let alpha_ij = alpha_eff(i, j, n, alpha_offset);
                let column = trace_column(j, n);
                var rate_e = eta0;
                if (RETROACTIVE && ETA_PER_NEURON) {
                    rate_e = params[eta_offset + j];
                }
                var rate_fixed = eta0;
                if (RATE == 1u) {
                    rate_fixed = params[eta_offset + j];
                }
                var d_alpha = 0.0;
                for (var k = 0u; k < slots; k++) {
                    if (k < chunk) {
                        let b = b0 + k * groups;
                        let idx = b * nn + column.x + i * column.y;
                        let pre = pres[k];
                        let post = activations[x_now + b * n + j];
                        let ga_j = partials[preact + b * n + j];
                        var r = rate_fixed;
                        if (RATE >= 2u) {
                            r = plastic_rate(b, j, step, n, p.batch, eta_offset, mod_offset);
                        }
                        var h = trace[cur + idx];
                        if (rev.ahead) {
                            h = rule_inverse(h, pre, post, r);  // H(t) from H(t+1)
                        }
                        var g_next = trace_grad[idx];
                        if (rev.grad_ahead) {
                            // G(t+1) from G(t+2): step t+1's update (no clip when REVERSE, one fixed rate).
                            let d_next = rule_d_trace(h, activations[x_next + b * n + j], r);
                            g_next = grad_update(d_next, g_next, alpha_ij, pres_next[k], partials[next_preact + b * n + j]);
                        }
                        d_alpha += ga_j * h * pre;
                        var g = 0.0;
                        var ge = 0.0;
                        if (RETROACTIVE) {
                            let e = trace[cur + eo + idx];
                            let ge_next = trace_grad[eo + idx];
                            let m = clip_pass(h + r * e);
                            g = m * g_next + alpha_ij * pre * ga_j;
                            ge = m * r * g_next + rule_d_trace(e, post, rate_e) * ge_next;
                            row_sums[k] += (w_ij + alpha_ij * h) * ga_j + ge_next * rate_e * post;
                            trace_grad[eo + idx] = ge;
                        } else {
                            let m = clip_pass(rule_update(h, pre, post, r));
                            g = grad_update(m * rule_d_trace(h, post, r), g_next, alpha_ij, pre, ga_j);
                            row_sums[k] += (w_ij + alpha_ij * h) * ga_j + m * g_next * r * post;
                        }
                        if (rev.store_grad) {
                            trace_grad[idx] = g;
                        }
                        if (has_prev2) {
                            let pre2 = pres2[k];
                            let post2 = activations[x_prev + b * n + j];
                            var r2 = rate_fixed;
                            if (RATE >= 2u) {
                                r2 = plastic_rate(b, j, step - 1u, n, p.batch, eta_offset, mod_offset);
                            }
                            let c = k * TILE + jj;
                            if (RETROACTIVE) {
                                let h_prev = trace[prev + idx];
                                let e_prev = trace[prev + eo + idx];
                                let m2 = clip_pass(h_prev + r2 * e_prev);
                                col_sums[c] += ge * rule_d_post(e_prev, pre2, post2, rate_e);
                                rate_sums[c] += m2 * g * e_prev;
                                let d_eta = ge * rule_d_rate(e_prev, pre2, post2);
                                if (eta_per_neuron) {
                                    eta_sums[jj] += d_eta;
                                } else {
                                    eta_total += d_eta;
                                }
                            } else {
                                var h_prev: f32;
                                if (REVERSE) {
                                    h_prev = rule_inverse(h, pre2, post2, r2);
                                    if (rev.store_prev) {
                                        trace[cur + idx] = h_prev;
                                    }
                                } else {
                                    h_prev = trace[prev + idx];
                                }
                                let m2 = clip_pass(rule_update(h_prev, pre2, post2, r2));
                                col_sums[c] += m2 * g * rule_d_post(h_prev, pre2, post2, r2);
                                let d_rate = m2 * g * rule_d_rate(h_prev, pre2, post2);
                                if (RATE >= 2u) {
                                    rate_sums[c] += d_rate;
                                } else if (eta_per_neuron) {
                                    eta_sums[jj] += d_rate;
                                } else {
                                    eta_total += d_rate;
                                }
                            }
                        }
                    }
                }
                if (PLASTIC_SELF || i != j) {
                    if (grouped) {
                        partials[dalpha_base + i * n + j] += d_alpha;
                    } else if (ALPHA_SHAPE == 0u) {
                        grads[alpha_offset + i * n + j] += d_alpha;
                    } else {
                        partials[p.alpha_grad_offset + i * n + j] += d_alpha;
                    }
                }
            }
            for (var k = 0u; k < slots; k++) {
                if (k < chunk) {
                    partials[((b0 + k * groups) * p.n_tiles + tile_j) * n + i] = row_sums[k];
                }
            }
        }
        for (var k = 0u; k < chunk; k++) {
            for (var jj = 0u; jj < TILE && j0 + jj * lanes < j_end; jj++) {
                let j = j0 + jj * lanes;
                partials[col_base + ((b0 + k * groups) * p.n_tiles + tile_i) * n + j] = col_sums[k * TILE + jj];
                if (RATE >= 2u) {
                    partials[p.rate_partials_offset + ((b0 + k * groups) * p.n_tiles + tile_i) * n + j] = rate_sums[k * TILE + jj];
                }
            }
        }
    }
    // (n_tiles, N) per group: per post neuron, or, for one eta, the invocation's whole sum at its first column.
    if (eta_per_neuron) {
        for (var jj = 0u; jj < TILE && j0 + jj * lanes < j_end; jj++) {
            partials[eta_base + tile_i * n + j0 + jj * lanes] += eta_sums[jj];
        }
    } else {
        partials[eta_base + tile_i * n + j0] += eta_total;
    }
}
