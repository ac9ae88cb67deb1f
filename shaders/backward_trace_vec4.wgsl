// backward_trace_vec4: backward_trace.wgsl for N a multiple of 4, every buffer seen as vec4 and
// every trace, trace-gradient, w, alpha and dalpha access a whole quad.
//
// The same backward step, parameters and CPU twin (cpu::backward_trace with quad columns) as
// backward_trace.wgsl, which gives the math: with ga(t), G(t+1) and H(t) resident,
//   dalpha_ij += sum_b ga_j H_ij(t) x_i(t-1)  (dw: weight_gradient_vec4.wgsl, per window of steps),
//   G_ij(t) = m dU/dH G_ij(t+1) + alpha_eff_ij x_i(t-1) ga_j,  and the row, column and rate sums
//   for gx(t-1) and drate(t-1), H(t-1) recovered by inversion (REVERSE) or read from its slot; when
//   REVERSE, H(t) itself first recovered from H(t+1) where the step after did not store (trace_ahead),
//   and G(t+1) from G(t+2) by step t+1's update where the step after did not store it (grad_ahead).
// One invocation owns TILE rows and TILE columns of (i, j), as there, but its columns are four quads
// of four neighbouring j: lane l of a column group of L = COLUMN_LANES lanes takes quads l, l + L,
// l + 2L, l + 3L (see plasticity_kernels::trace_column_owner with a width of 4), so each access to H,
// E, G and GE moves 16 bytes and, on a GPU, neighbouring invocations still touch neighbouring memory
// (on a CPU adapter L = 1: an invocation's quads are contiguous). Rows come four at a
// time, so x_i(t-1) and x_i(t-2) of four rows are one load each and x_j, ga_j and the rates of a
// column quad, loaded once, serve four rows (about 6 loads and stores per element instead of 8.5;
// see the note on the loop), or, with HOIST_COLUMNS, x_j, ga_j and x_j(t-1) serve the whole pass over
// the block. The rule's derivatives are written on quads (the *_vec4 functions
// below, the same f32 operations per component as the scalar ones); the tile loops run to
// constants so that they unroll and the running sums stay in registers.
//
// Bindings are backward_trace's, every one seen as vec4: the history, the trace slots and their
// gradient (every row of N floats is a whole number of quads, and the slot offsets are multiples of
// 4), and the parameters, their gradient and the partial sums, whose quads this kernel reads and
// accumulates (w, alpha, dalpha, ga, the column and per-neuron eta sums: offsets that are
// multiples of 4, see PartialsLayout) or touches one float at a time (row and rate sums, one eta).
// The runtime uses this kernel whenever N % 4 == 0 and backward_trace.wgsl otherwise.

// Side of the block one invocation walks: 4, 8 or 16 (see backward_trace.wgsl), set by the runtime.
override TILE: u32 = 16u;
// Quads per invocation: TILE columns. Follows TILE; the runtime never sets it.
override TILE_QUADS: u32 = TILE / 4u;
// The largest TILE_QUADS: the size of the arrays that hold a block's column values and sums.
const TILE_QUADS_MAX: u32 = 4u;
// Invocations of a warp on most GPUs: block rows at least this wide start on whole multiples of it.
const LANES: u32 = 32u;
// Invocations that interleave their column quads, set by the runtime as in backward_trace.wgsl
// (KernelTuning::backward_column_lanes): LANES on a GPU, 1 on a CPU adapter.
override COLUMN_LANES: u32 = 32u;
// Batch elements handled per pass over the block: dalpha is read and written once per chunk.
const CHUNK: u32 = 4u;
// Batch elements per pass, 1 to CHUNK, set by the runtime: min(CHUNK, ceil(B / Z)) unless
// KernelTuning::backward_batch_slots sets fewer (fewer registers, more passes). Unrolled iterations
// that skip every element would still cost lavapipe its per-lane loops.
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
// Set by the runtime (KernelTuning::backward_hoist_columns; on for a CPU adapter): load each column
// quad's x_j(t), ga_j(t) and x_j(t-1) once per pass over the block instead of once per four rows,
// holding (TILE_QUADS, CHUNK) of each. On lavapipe a register (or a spill to the stack) costs far
// less than a storage load, which is a loop over the SIMD lanes; on a GPU the 48 extra quads per
// invocation would cost occupancy.
override HOIST_COLUMNS: bool = false;

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
@group(0) @binding(1) var<storage, read> params: array<vec4<f32>>;          // flat [w, alpha, eta, modulator], as quads
@group(0) @binding(2) var<storage, read> activations: array<vec4<f32>>;     // (T + 1, B, N/4): x(t) at row t
@group(0) @binding(3) var<storage, read> modulation: array<f32>;            // (T + 1, B): M_b(t) at row t
@group(0) @binding(4) var<storage, read_write> trace: array<vec4<f32>>;     // slots of [H (B, N, N/4), E (B, N, N/4)]: H(t) (or H(t+1)) on entry, H(t-1) (or the same) on exit when REVERSE
@group(0) @binding(5) var<storage, read_write> trace_grad: array<vec4<f32>>; // [G (B, N, N/4), GE (B, N, N/4)]: G(t+1) on entry, G(t) on exit
@group(0) @binding(6) var<storage, read_write> grads: array<vec4<f32>>;     // flat, mirrors `params`, as quads; accumulated
// (B, n_tiles, N) row sums, then (B, n_tiles, N) column sums, for gx(t-1), overwritten each step;
// then the rate, eta and alpha partials and ga(t) at the offsets above. Every write that another
// invocation's write could share a quad with is a whole quad of this invocation's own (a component
// store may be a read-modify-write of the whole vec4 on some backends, a race across invocations).
@group(0) @binding(7) var<storage, read_write> partials: array<vec4<f32>>;  // as quads; offsets below are in floats

// One parameter of the flat buffer, as the shared functions below read it.
fn param(k: u32) -> f32 {
    return params[k / 4u][k % 4u];
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

// ---- shared by every vec4 rule kernel (a test keeps the copies identical) ----
// rule_update and clip_trace on a quad of post-synaptic neurons: the same f32 operations per
// component as the scalar functions above.
fn rule_update_vec4(h: vec4<f32>, pre: f32, post: vec4<f32>, r: vec4<f32>) -> vec4<f32> {
    if (RULE == 1u) {
        return h + r * post * (pre - post * h);
    } else if (RULE == 2u) {
        return h + r * pre * post;
    }
    return (1.0 - r) * h + r * pre * post;
}

fn clip_trace_vec4(v: vec4<f32>) -> vec4<f32> {
    if (CLIP > 0.0) {
        return clamp(v, vec4(-CLIP), vec4(CLIP));
    }
    return v;
}
// ---- end of shared vec4 functions ----

fn rule_d_trace_vec4(post: vec4<f32>, r: vec4<f32>) -> vec4<f32> {
    if (RULE == 1u) {
        return 1.0 - r * post * post;
    } else if (RULE == 2u) {
        return vec4(1.0);
    }
    return 1.0 - r;
}

fn rule_d_post_vec4(h: vec4<f32>, pre: f32, post: vec4<f32>, r: vec4<f32>) -> vec4<f32> {
    if (RULE == 1u) {
        return r * (pre - 2.0 * post * h);
    }
    return r * pre;
}

fn rule_d_rate_vec4(h: vec4<f32>, pre: f32, post: vec4<f32>) -> vec4<f32> {
    if (RULE == 1u) {
        return post * (pre - post * h);
    } else if (RULE == 2u) {
        return pre * post;
    }
    return pre * post - h;
}

// H(t-1) from H(t) = U_r(H(t-1)); only used when REVERSE.
fn rule_inverse_vec4(v: vec4<f32>, pre: f32, post: vec4<f32>, r: vec4<f32>) -> vec4<f32> {
    if (RULE == 1u) {
        return (v - r * post * pre) / (1.0 - r * post * post);
    } else if (RULE == 2u) {
        return v - r * pre * post;
    }
    return (v - r * pre * post) / (1.0 - r);
}

// G(t) = m dU/dH G(t+1) + alpha_eff x_i(t-1) ga_j(t), d_trace = m dU/dH: one expression for the step's
// own update and for the recovery of G(t+1) by a step that finds G(t+2), so that both round alike.
fn grad_update_vec4(d_trace: vec4<f32>, g_next: vec4<f32>, alpha: vec4<f32>, pre: f32, ga: vec4<f32>) -> vec4<f32> {
    return d_trace * g_next + alpha * pre * ga;
}

// d clip(v) / dv.
fn clip_pass_vec4(v: vec4<f32>) -> vec4<f32> {
    if (CLIP > 0.0) {
        return select(vec4(0.0), vec4(1.0), abs(v) < vec4(CLIP));
    }
    return vec4(1.0);
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

// Four parameters at k .. k + 3, k a multiple of 4 (w and alpha rows; see uses_vec4_kernels).
fn param_quad(k: u32) -> vec4<f32> {
    return params[k / 4u];
}

// Four parameters at any k .. k + 3 (eta follows alpha, whose length need not be a multiple of 4).
fn param_quad_unaligned(k: u32) -> vec4<f32> {
    return vec4(param(k), param(k + 1u), param(k + 2u), param(k + 3u));
}

// alpha_eff for the quad of columns j0 .. j0 + 3 of row i.
fn alpha_quad(i: u32, j0: u32, n: u32, alpha_offset: u32) -> vec4<f32> {
    var a: vec4<f32>;
    if (ALPHA_SHAPE == 1u) {
        a = param_quad(alpha_offset + j0);
    } else if (ALPHA_SHAPE == 2u) {
        a = vec4(param(alpha_offset));
    } else {
        a = param_quad(alpha_offset + i * n + j0);
    }
    if (!PLASTIC_SELF && i >= j0 && i < j0 + 4u) {
        a[i - j0] = 0.0;
    }
    return a;
}

// rate_bj(s) for the quad j0 .. j0 + 3 when it is modulated (RATE 2, 3).
fn modulated_rate_quad(b: u32, j0: u32, s: u32, n: u32, batch: u32, eta_offset: u32, mod_offset: u32) -> vec4<f32> {
    var r: vec4<f32>;
    for (var c = 0u; c < 4u; c++) {
        r[c] = plastic_rate(b, j0 + c, s, n, batch, eta_offset, mod_offset);
    }
    return r;
}

// Adds a quad to the four floats of `grads` or `partials` at k, a multiple of 4.
fn add_to_grads(k: u32, v: vec4<f32>) {
    grads[k / 4u] += v;
}

fn add_to_partials(k: u32, v: vec4<f32>) {
    partials[k / 4u] += v;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_trace_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) grid: vec3<u32>) {
    let n = p.n;
    let quads = n / 4u;
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
    // Column group g covers quads [g * COLUMN_LANES * TILE_QUADS, + width); lane l of its L lanes
    // takes quads start + l + m L.
    let group_start = (tile_j / COLUMN_LANES) * COLUMN_LANES * TILE_QUADS;
    let lanes = div_ceil_u32(min(COLUMN_LANES * TILE_QUADS, quads - group_start), TILE_QUADS);
    let q0 = group_start + tile_j % COLUMN_LANES;  // this invocation's first quad
    let q_end = min(group_start + COLUMN_LANES * TILE_QUADS, quads);
    let row = p.batch * quads;           // one (B, N) row of the history, in quads
    let x_now = p.step * row;            // x(t)
    let x_prev = x_now - row;            // x(t-1)
    let has_prev2 = p.step >= 2u;        // x(t-2) and H(t-1) exist
    let col_base = p.batch * n * p.n_tiles; // column sums follow the row sums in `partials`
    // Everything loop-invariant is loaded once: the compiler cannot hoist loads from `params` or `p`
    // past the stores to the other buffers, which it must assume may alias them.
    let eo = p.elig_offset / 4u;
    let cur = p.cur_offset / 4u;
    let prev = p.prev_offset / 4u;
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
    let eta0 = vec4(param(eta_offset));
    // The eta gradient is per post neuron (eta per neuron, directly or as E's rate), else one sum.
    let eta_per_neuron = RATE == 1u || (RETROACTIVE && ETA_PER_NEURON);

    var eta_sums: array<vec4<f32>, TILE_QUADS_MAX>;
    var eta_total = vec4(0.0);
    // Group z takes batch elements b = z, z + Z, z + 2Z, ..., `slots` of them per pass: element k of
    // the pass starting at m0 is b = z + (m0 + k) Z.
    let group_batch = (p.batch - z + groups - 1u) / groups;
    // At least 1, so that the passes below (m0 += slots) always advance.
    let slots = clamp(BATCH_SLOTS, 1u, CHUNK);
    for (var m0 = 0u; m0 < group_batch; m0 += slots) {
        let chunk = min(slots, group_batch - m0);
        let b0 = z + m0 * groups;
        var col_sums: array<vec4<f32>, 16>;    // (CHUNK, TILE_QUADS) in the first CHUNK * TILE_QUADS
        var rate_sums: array<vec4<f32>, 16>;   // likewise
        // HOIST_COLUMNS: every column quad's values for the pass, (TILE_QUADS, CHUNK), loaded here and
        // picked below by `select` (the loop over mq stays rolled, and an index by mq would put them
        // in scratch memory; see the note on the column sums below).
        var posts_all: array<vec4<f32>, 16>;   // x_j(t)
        var gas_all: array<vec4<f32>, 16>;     // ga_j(t)
        var posts2_all: array<vec4<f32>, 16>;  // x_j(t-1)
        var gas_next_all: array<vec4<f32>, 16>;   // ga_j(t+1), when grad_ahead
        var posts_next_all: array<vec4<f32>, 16>; // x_j(t+1), when grad_ahead and the rule's dU/dH needs it (Oja)
        if (HOIST_COLUMNS) {
            for (var m = 0u; m < TILE_QUADS; m++) {
                let q = q0 + m * lanes;
                for (var k = 0u; k < slots; k++) {
                    if (k < chunk && q < q_end) {
                        let b = b0 + k * groups;
                        posts_all[m * CHUNK + k] = activations[x_now + b * quads + q];
                        gas_all[m * CHUNK + k] = partials[(preact + b * n + 4u * q) / 4u];
                        if (has_prev2) {
                            posts2_all[m * CHUNK + k] = activations[x_prev + b * quads + q];
                        }
                        if (rev.grad_ahead) {
                            gas_next_all[m * CHUNK + k] = partials[(next_preact + b * n + 4u * q) / 4u];
                            if (RULE == 1u) {
                                posts_next_all[m * CHUNK + k] = activations[x_next + b * quads + q];
                            }
                        }
                    }
                }
            }
        }
        // Rows come four at a time (i0 and the block's end are multiples of 4): x_i(t-1) and x_i(t-2)
        // of four rows are one load each, and every column quad's x_j, ga_j and rates, loaded once,
        // serve four rows. Per element that leaves H, G in and out (4, or 3 when reversed: each stored
        // every other step, the step after then loading x_i(t), ga_j(t+1) too) plus w, alpha and dalpha
        // (4 per CHUNK elements) and x_j, ga_j, x_j(t-1) (3 per four rows). The rows themselves are
        // then taken one at a time, each row's w, alpha and dalpha read and written before the
        // next: holding four rows' of them at once made N = 1000, B = 1 about 1.4x slower on lavapipe.
        for (var i4 = i0 / 4u; i4 < i_end / 4u; i4++) {
            var pre_quads: array<vec4<f32>, CHUNK>;   // x_i(t-1), i = 4 i4 .. 4 i4 + 3
            var pre2_quads: array<vec4<f32>, CHUNK>;  // x_i(t-2)
            var pre_next_quads: array<vec4<f32>, CHUNK>;  // x_i(t), when grad_ahead
            // Component c: the row sum of row 4 i4 + c, one quad of the (B, n_tiles, N) row partials.
            var row_quads: array<vec4<f32>, CHUNK>;
            for (var k = 0u; k < slots; k++) {
                if (k < chunk) {
                    let b = b0 + k * groups;
                    pre_quads[k] = activations[x_prev + b * quads + i4];
                    if (has_prev2) {
                        pre2_quads[k] = activations[x_prev - row + b * quads + i4];
                    }
                    if (rev.grad_ahead) {
                        pre_next_quads[k] = activations[x_now + b * quads + i4];
                    }
                }
            }
            for (var mq = 0u; mq < TILE_QUADS; mq++) {
                let q = q0 + mq * lanes;
                if (q < q_end) {
                    let j0 = 4u * q;
                    // Element (i, j0) of batch element b at trace quad b N^2 / 4 + column.x / 4 + i column.y / 4.
                    let column = trace_column(j0, n) / 4u;
                    var rate_e = eta0;
                    if (RETROACTIVE && ETA_PER_NEURON) {
                        rate_e = param_quad_unaligned(eta_offset + j0);
                    }
                    var rate_fixed = eta0;
                    if (RATE == 1u) {
                        rate_fixed = param_quad_unaligned(eta_offset + j0);
                    }
                    // The column quad's values per batch element, loaded once for the four rows.
                    var posts: array<vec4<f32>, CHUNK>;   // x_j(t)
                    var gas: array<vec4<f32>, CHUNK>;     // ga_j(t)
                    var posts2: array<vec4<f32>, CHUNK>;  // x_j(t-1)
                    var rates: array<vec4<f32>, CHUNK>;   // rate_bj(t) when modulated
                    var rates2: array<vec4<f32>, CHUNK>;  // rate_bj(t-1) when modulated
                    var gas_next: array<vec4<f32>, CHUNK>;    // ga_j(t+1), when grad_ahead
                    var posts_next: array<vec4<f32>, CHUNK>;  // x_j(t+1), when grad_ahead (Oja)
                    for (var k = 0u; k < slots; k++) {
                        if (HOIST_COLUMNS) {
                            for (var m = 0u; m < TILE_QUADS; m++) {
                                let here = m == mq;
                                posts[k] = select(posts[k], posts_all[m * CHUNK + k], here);
                                gas[k] = select(gas[k], gas_all[m * CHUNK + k], here);
                                posts2[k] = select(posts2[k], posts2_all[m * CHUNK + k], here);
                                if (REVERSE && GRAD_AHEAD) {
                                    gas_next[k] = select(gas_next[k], gas_next_all[m * CHUNK + k], here);
                                    if (RULE == 1u) {
                                        posts_next[k] = select(posts_next[k], posts_next_all[m * CHUNK + k], here);
                                    }
                                }
                            }
                        }
                        if (k < chunk) {
                            let b = b0 + k * groups;
                            if (!HOIST_COLUMNS) {
                                posts[k] = activations[x_now + b * quads + q];
                                gas[k] = partials[(preact + b * n + j0) / 4u];
                                if (rev.grad_ahead) {
                                    gas_next[k] = partials[(next_preact + b * n + j0) / 4u];
                                    if (RULE == 1u) {
                                        posts_next[k] = activations[x_next + b * quads + q];
                                    }
                                }
                            }
                            if (RATE >= 2u) {
                                rates[k] = modulated_rate_quad(b, j0, step, n, p.batch, eta_offset, mod_offset);
                            }
                            if (has_prev2) {
                                if (!HOIST_COLUMNS) {
                                    posts2[k] = activations[x_prev + b * quads + q];
                                }
                                if (RATE >= 2u) {
                                    rates2[k] = modulated_rate_quad(b, j0, step - 1u, n, p.batch, eta_offset, mod_offset);
                                }
                            }
                        }
                    }
                    // This quad's column, rate and eta sums over the four rows, folded into the
                    // invocation's sums below with constant indices only.
                    var col_quad: array<vec4<f32>, CHUNK>;
                    var rate_quad: array<vec4<f32>, CHUNK>;
                    var eta_quad = vec4(0.0);
                    for (var c = 0u; c < 4u; c++) {
                        let i = 4u * i4 + c;
                        let w_ij = param_quad(w_offset + i * n + j0);
                        let alpha_ij = alpha_quad(i, j0, n, alpha_offset);
                        var d_alpha = vec4(0.0);
                        for (var k = 0u; k < slots; k++) {
                            if (k < chunk) {
                                let b = b0 + k * groups;
                                let idx = b * (nn / 4u) + column.x + i * column.y;
                                let pre = pre_quads[k][c];
                                let post = posts[k];
                                let ga_j = gas[k];
                                var r = rate_fixed;
                                var r2 = rate_fixed;
                                if (RATE >= 2u) {
                                    r = rates[k];
                                    r2 = rates2[k];
                                }
                                var h = trace[cur + idx];
                                if (rev.ahead) {
                                    h = rule_inverse_vec4(h, pre, post, r);  // H(t) from H(t+1)
                                }
                                var g_next = trace_grad[idx];
                                if (rev.grad_ahead) {
                                    // G(t+1) from G(t+2): step t+1's update (no clip when REVERSE).
                                    let d_next = rule_d_trace_vec4(posts_next[k], r);
                                    g_next = grad_update_vec4(d_next, g_next, alpha_ij, pre_next_quads[k][c], gas_next[k]);
                                }
                                d_alpha += ga_j * h * pre;
                                var g: vec4<f32>;
                                var ge = vec4(0.0);
                                var row_terms: vec4<f32>;
                                if (RETROACTIVE) {
                                    let e = trace[cur + eo + idx];
                                    let ge_next = trace_grad[eo + idx];
                                    let m = clip_pass_vec4(h + r * e);
                                    g = m * g_next + alpha_ij * pre * ga_j;
                                    ge = m * r * g_next + rule_d_trace_vec4(post, rate_e) * ge_next;
                                    row_terms = (w_ij + alpha_ij * h) * ga_j + ge_next * rate_e * post;
                                    trace_grad[eo + idx] = ge;
                                } else {
                                    let m = clip_pass_vec4(rule_update_vec4(h, pre, post, r));
                                    g = grad_update_vec4(m * rule_d_trace_vec4(post, r), g_next, alpha_ij, pre, ga_j);
                                    row_terms = (w_ij + alpha_ij * h) * ga_j + m * g_next * r * post;
                                }
                                row_quads[k][c] += (row_terms.x + row_terms.y) + (row_terms.z + row_terms.w);
                                if (rev.store_grad) {
                                    trace_grad[idx] = g;
                                }
                                if (has_prev2) {
                                    let pre2 = pre2_quads[k][c];
                                    let post2 = posts2[k];
                                    if (RETROACTIVE) {
                                        let h_prev = trace[prev + idx];
                                        let e_prev = trace[prev + eo + idx];
                                        let m2 = clip_pass_vec4(h_prev + r2 * e_prev);
                                        col_quad[k] += ge * rule_d_post_vec4(e_prev, pre2, post2, rate_e);
                                        rate_quad[k] += m2 * g * e_prev;
                                        let d_eta = ge * rule_d_rate_vec4(e_prev, pre2, post2);
                                        if (eta_per_neuron) {
                                            eta_quad += d_eta;
                                        } else {
                                            eta_total += d_eta;
                                        }
                                    } else {
                                        var h_prev: vec4<f32>;
                                        if (REVERSE) {
                                            h_prev = rule_inverse_vec4(h, pre2, post2, r2);
                                            if (rev.store_prev) {
                                                trace[cur + idx] = h_prev;
                                            }
                                        } else {
                                            h_prev = trace[prev + idx];
                                        }
                                        let m2 = clip_pass_vec4(rule_update_vec4(h_prev, pre2, post2, r2));
                                        col_quad[k] += m2 * g * rule_d_post_vec4(h_prev, pre2, post2, r2);
                                        let d_rate = m2 * g * rule_d_rate_vec4(h_prev, pre2, post2);
                                        if (RATE >= 2u) {
                                            rate_quad[k] += d_rate;
                                        } else if (eta_per_neuron) {
                                            eta_quad += d_rate;
                                        } else {
                                            eta_total += d_rate;
                                        }
                                    }
                                }
                            }
                        }
                        // alpha_ij is 0 where a self-connection is not plastic, and so is its gradient.
                        var d_alpha_eff = d_alpha;
                        if (!PLASTIC_SELF && i >= j0 && i < j0 + 4u) {
                            d_alpha_eff[i - j0] = 0.0;
                        }
                        if (grouped) {
                            add_to_partials(dalpha_base + i * n + j0, d_alpha_eff);
                        } else if (ALPHA_SHAPE == 0u) {
                            add_to_grads(alpha_offset + i * n + j0, d_alpha_eff);
                        } else {
                            add_to_partials(p.alpha_grad_offset + i * n + j0, d_alpha_eff);
                        }
                    }
                    // NIR keeps this loop over mq rolled (its body is 16 copies of the rule's), so
                    // indexing the sums by mq would put them in scratch memory, which lavapipe
                    // reaches by a loop over the SIMD lanes on every access (this kernel ran 1.1-1.7x
                    // slower so at N = 256, B = 16). Selecting into every slot keeps every index constant.
                    for (var m = 0u; m < TILE_QUADS; m++) {
                        let here = m == mq;
                        for (var k = 0u; k < slots; k++) {
                            col_sums[k * TILE_QUADS + m] += select(vec4(0.0), col_quad[k], here);
                            if (RATE >= 2u) {
                                rate_sums[k * TILE_QUADS + m] += select(vec4(0.0), rate_quad[k], here);
                            }
                        }
                        if (eta_per_neuron) {
                            eta_sums[m] += select(vec4(0.0), eta_quad, here);
                        }
                    }
                }
            }
            for (var k = 0u; k < slots; k++) {
                if (k < chunk) {
                    // This invocation's quad of the (B, n_tiles, N) row partials: rows 4 i4 .. 4 i4 + 3.
                    partials[(((b0 + k * groups) * p.n_tiles + tile_j) * n) / 4u + i4] = row_quads[k];
                }
            }
        }
        for (var k = 0u; k < slots; k++) {
            for (var mq = 0u; mq < TILE_QUADS; mq++) {
                let q = q0 + mq * lanes;
                if (k < chunk && q < q_end) {
                    let b = b0 + k * groups;
                    let sums = col_sums[k * TILE_QUADS + mq];
                    let rates = rate_sums[k * TILE_QUADS + mq];
                    partials[(col_base + (b * p.n_tiles + tile_i) * n + 4u * q) / 4u] = sums;
                    if (RATE >= 2u) {
                        partials[(p.rate_partials_offset + (b * p.n_tiles + tile_i) * n + 4u * q) / 4u] = rates;
                    }
                }
            }
        }
    }
    // (n_tiles, N) per group: per post neuron, or, for one eta, the invocation's whole sum at its first column.
    if (eta_per_neuron) {
        for (var mq = 0u; mq < TILE_QUADS; mq++) {
            let q = q0 + mq * lanes;
            if (q < q_end) {
                add_to_partials(eta_base + tile_i * n + 4u * q, eta_sums[mq]);
            }
        }
    } else {
        // The quad at the first column is this invocation's alone; the sum goes to its first float.
        let total = (eta_total.x + eta_total.y) + (eta_total.z + eta_total.w);
        add_to_partials(eta_base + tile_i * n + 4u * q0, vec4(total, 0.0, 0.0, 0.0));
    }
}
