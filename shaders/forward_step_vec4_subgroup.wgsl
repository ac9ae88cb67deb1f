// forward_step_vec4_subgroup: forward_step_vec4.wgsl with the history of the pre-synaptic neurons
// passed between the invocations of a subgroup instead of loaded by each (wgpu::Features::SUBGROUP).
//
// The same step, parameters, bindings and CPU twin (cpu::forward_step) as forward_step.wgsl, which
// gives the math:  H(t) = clip(U_r(H(t-1)))  (formed on the fly),
//   x_j(t) = tanh(sum_i (w_ij + alpha_eff_ij H_ij(t)) x_i(t-1) + u_j(t)).
// As in forward_step_vec4, one invocation owns a quad of post-synaptic neurons j = 4q .. 4q + 3, or
// COLUMN_QUADS neighbouring quads, for BATCH_TILE batch elements, and every trace, w and alpha access
// is a vec4. What differs is where
// x_i(t-1) and x_i(t-2) come from: every invocation of a workgroup needs the same quads of them (its
// batch tile's rows, four i at a time), and forward_step_vec4 has each load them itself. Here the L
// invocations of a subgroup take L pre-synaptic quads at a time: lane l loads quad base + l of both
// rows for the tile, and the sum over those quads gets each one from its lane by subgroupShuffle.
// Loads of the history drop from 2 per element quad and batch element every four rows to 2 / L;
// the trace, w and alpha accesses and the f32 operations of the sum (same order, same values) are
// forward_step_vec4's, so both give the same bits. On lavapipe, where every lane's storage access
// is a loop over the SIMD lanes whatever the address, those history loads were about a sixth of the
// step's accesses (README, "How the kernels were tuned on lavapipe").
//
// The subgroups must be full: the runtime runs this kernel only where the workgroup size is a
// multiple of the adapter's largest subgroup size (KernelTuning::forward_subgroups), and every lane,
// even one whose quad q is past N / 4, takes part in every shuffle.
//
// Bindings as forward_step_vec4: the trace, the history and the partial sums seen as vec4, and
// `params_vec4`, the flat parameters again as quads for w and alpha.

const BATCH_TILE: u32 = 4u;
// Batch elements the tile loops take, min(B, BATCH_TILE), set by the runtime (forward_step::batch_slots):
// unrolled iterations that skip every element still cost lavapipe its per-lane loops.
override BATCH_SLOTS: u32 = 4u;
// tanh(15) == 1 in f32; clamping keeps exp-based tanh implementations from overflowing to inf/inf.
const TANH_CLAMP: f32 = 15.0;

override WORKGROUP_SIZE: u32 = 64u;
// Neighbouring column quads one invocation owns (column_quads() below): 1 on a GPU, where
// neighbouring invocations then read neighbouring quads; more on a CPU adapter (the runtime's
// KernelTuning::forward_column_quads), where each lane's storage access is its own scalar loads and
// a lane that owns a whole 64-byte line of each row puts the lanes' loads in different lines.
override COLUMN_QUADS: u32 = 1u;
const MAX_COLUMN_QUADS: u32 = 4u;
override RULE: u32 = 0u;
override CLIP: f32 = 0.0;
override ALPHA_SHAPE: u32 = 0u;
override RATE: u32 = 0u;
override ETA_PER_NEURON: bool = false;
override RETROACTIVE: bool = false;
override PLASTIC_SELF: bool = true;

struct ForwardStepParams {
    n: u32,            // neurons N, a multiple of 4
    batch: u32,        // batch B
    step: u32,         // t, 1-based
    w_offset: u32,     // offset of w (N, N) in `params`, a multiple of 4
    alpha_offset: u32, // offset of alpha (N, N), (N) or (1), a multiple of 4
    eta_offset: u32,   // offset of eta (1) or (N)
    mod_offset: u32,   // offset of the modulator [mod_w (N), mod_b, mod_u (N), mod_c (N)]
    clamp_words: u32,  // u32 words per (t, b) row of `clamp_mask`: ceil(N / 32), or 0 when nothing is clamped
    elig_offset: u32,  // offset of E (B, N, N) in `trace`, in floats (RETROACTIVE)
    splits: u32,       // S: chunks of the sum over i; 0 or 1 sums everything here and writes x(t)
    split_len: u32,    // i per chunk when S > 1
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> p: ForwardStepParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;                  // flat parameters [w, alpha, eta, modulator]
@group(0) @binding(2) var<storage, read_write> trace: array<vec4<f32>>;       // (B, N, N/4) H: H(t-1) on entry, H(t) on exit; then E likewise
@group(0) @binding(3) var<storage, read_write> activations: array<vec4<f32>>; // (T + 1, B, N/4): x(s) at row s < t, u(s) at row s >= t
@group(0) @binding(4) var<storage, read> clamp_mask: array<u32>;              // (T, B, clamp_words) bit masks: u(t) in row t - 1
@group(0) @binding(5) var<storage, read> modulation: array<f32>;              // (T + 1, B): M_b(s) at row s (RATE 2, 3)
@group(0) @binding(6) var<storage, read_write> partial_sums: array<vec4<f32>>; // (S, B, N/4) when S > 1
@group(0) @binding(7) var<storage, read> params_vec4: array<vec4<f32>>;       // `params` again, as quads

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

// The quad of the history starting at element `at`, a multiple of 4 (rows of B N floats, N % 4 == 0).
fn history_quad(at: u32) -> vec4<f32> {
    return activations[at / 4u];
}

fn div_ceil_u32(a: u32, b: u32) -> u32 {
    return (a + b - 1u) / b;
}

// ---- shared by the vec4 forward kernels (a test keeps the copies identical) ----
// What one invocation holds for its column quad q and batch tile through the sum over i.
struct QuadTile {
    n: u32,
    quads: u32,
    q: u32,
    j0: u32,             // the quad's first post-synaptic neuron, 4 q
    b0: u32,             // the tile's first batch element
    tile: u32,           // its batch elements, min(BATCH_TILE, B - b0)
    slots: u32,          // iterations of the unrolled tile loops (BATCH_SLOTS)
    row: u32,            // one (B, N) row of the history
    x_prev: u32,         // where x(t-1) starts in the history
    update: bool,        // t >= 2: H(t-1) is updated to H(t) on the fly
    split: bool,         // S > 1: the sum is a chunk's, written to partial_sums
    chunk: u32,          // this chunk of the sum (gid.z)
    i_begin: u32,        // the chunk's pre-synaptic neurons [i_begin, i_end)
    i_end: u32,
    // Loaded once: the compiler cannot hoist loads of `p` past the trace stores, which it must
    // assume may alias.
    w_quad: u32,
    trace_quad: u32,      // the quad's element (i, 4q) of batch element b at trace quad b N^2 / 4 + trace_quad + i trace_stride
    trace_stride: u32,
    alpha_quad: u32,
    elig_quad: u32,
    alpha_fixed: vec4<f32>,                // alpha_eff of the quad where it does not depend on i (ALPHA_SHAPE 1, 2)
    eta0: vec4<f32>,                       // one eta (RATE 0): one value for the whole step
    rate_e: vec4<f32>,                     // the eligibility trace's rate
    post: array<vec4<f32>, BATCH_TILE>,    // x_j(t-1)
    rate: array<vec4<f32>, BATCH_TILE>,    // rate_bj(t-1) when it varies (RATE > 0)
}

// The tile of column quad q, batch tile `batch_tile` and chunk `chunk` (q may be past the last quad
// in the subgroup kernel, whose lanes there load values they never use; wgpu bounds-checks those reads).
// Loops over the tile run to the constant `slots` and skip k >= tile, so that they unroll and the
// arrays stay in registers (with an early `break` instead, lavapipe ran the step about 1.3x slower).
fn quad_tile(q: u32, batch_tile: u32, chunk: u32) -> QuadTile {
    var t: QuadTile;
    t.n = p.n;
    t.quads = t.n / 4u;
    t.q = q;
    t.j0 = 4u * q;
    t.b0 = batch_tile * BATCH_TILE;
    t.tile = min(BATCH_TILE, p.batch - t.b0);
    let slots = min(BATCH_SLOTS, BATCH_TILE);
    t.slots = slots;
    t.row = p.batch * t.n;
    t.x_prev = (p.step - 1u) * t.row;
    t.update = p.step >= 2u;
    t.split = p.splits > 1u;
    t.chunk = chunk;
    t.i_begin = select(0u, chunk * p.split_len, t.split);
    t.i_end = select(t.n, min(t.n, t.i_begin + p.split_len), t.split);
    t.w_quad = p.w_offset / 4u;
    // (A lane past the last quad, in the subgroup kernel, gets a place it never uses.)
    let column = trace_column(t.j0, t.n);
    t.trace_quad = column.x / 4u;
    t.trace_stride = column.y / 4u;
    t.alpha_quad = p.alpha_offset / 4u;
    t.elig_quad = p.elig_offset / 4u;
    t.alpha_fixed = vec4(params[p.alpha_offset]);
    if (ALPHA_SHAPE == 1u) {
        t.alpha_fixed = params_vec4[t.alpha_quad + q];
    }
    t.eta0 = vec4(params[p.eta_offset]);
    for (var c = 0u; c < 4u; c++) {
        t.rate_e[c] = eligibility_rate(t.j0 + c, p.eta_offset);
    }
    for (var k = 0u; k < slots; k++) {
        if (k < t.tile && t.update) {
            t.post[k] = history_quad(t.x_prev + (t.b0 + k) * t.n + t.j0);
            for (var c = 0u; c < 4u && RATE != 0u; c++) {
                t.rate[k][c] = plastic_rate(t.b0 + k, t.j0 + c, p.step - 1u, t.n, p.batch, p.eta_offset, p.mod_offset);
            }
        }
    }
    return t;
}

// The sums before any term: u(t) for an unsplit step, 0 for a chunk.
fn initial_sums(t: QuadTile) -> array<vec4<f32>, BATCH_TILE> {
    var acc: array<vec4<f32>, BATCH_TILE>;
    for (var k = 0u; k < t.slots; k++) {
        if (k < t.tile && !t.split) {
            acc[k] = history_quad(p.step * t.row + (t.b0 + k) * t.n + t.j0); // u(t)
        }
    }
    return acc;
}

// The terms of the four pre-synaptic neurons i = 4 i4 .. 4 i4 + 3 (x_quads: their x_i(t-1), pre_quads:
// their x_i(t-2), per batch element), added to `acc`, with H(t) formed from H(t-1) and written back. A
// chunk need not start or end on a quad; the skipped i of an edge quad are another chunk's.
fn add_quad_of_rows(
    t: QuadTile,
    i4: u32,
    x_quads: array<vec4<f32>, BATCH_TILE>,
    pre_quads: array<vec4<f32>, BATCH_TILE>,
    acc_in: array<vec4<f32>, BATCH_TILE>,
) -> array<vec4<f32>, BATCH_TILE> {
    var acc = acc_in;
    for (var c = 0u; c < 4u; c++) {
        let i = 4u * i4 + c;
        if (i < t.i_begin || i >= t.i_end) {
            continue;
        }
        let w_ij = params_vec4[t.w_quad + i * t.quads + t.q];
        var alpha_ij = t.alpha_fixed;
        if (ALPHA_SHAPE == 0u) {
            alpha_ij = params_vec4[t.alpha_quad + i * t.quads + t.q];
        }
        if (!PLASTIC_SELF && i4 == t.q) {
            alpha_ij[c] = 0.0;
        }
        for (var k = 0u; k < t.slots; k++) {
            if (k < t.tile) {
                let h_index = (t.b0 + k) * t.n * t.quads + t.trace_quad + i * t.trace_stride;
                var h = trace[h_index];
                if (t.update) {
                    let r = select(t.rate[k], t.eta0, RATE == 0u);
                    let pre = pre_quads[k][c];
                    if (RETROACTIVE) {
                        let e = trace[t.elig_quad + h_index];
                        h = clip_trace_vec4(h + r * e);
                        trace[t.elig_quad + h_index] = rule_update_vec4(e, pre, t.post[k], t.rate_e);
                    } else {
                        h = clip_trace_vec4(rule_update_vec4(h, pre, t.post[k], r));
                    }
                    trace[h_index] = h;
                }
                acc[k] += (w_ij + alpha_ij * h) * x_quads[k][c];
            }
        }
    }
    return acc;
}

// A chunk's sums to partial_sums; an unsplit step's x(t) = tanh(sum) to the history, except where a
// neuron is held, which keeps u(t).
fn write_sums(t: QuadTile, acc: array<vec4<f32>, BATCH_TILE>) {
    for (var k = 0u; k < t.slots; k++) {
        let b = t.b0 + k;
        if (k < t.tile && t.split) {
            partial_sums[(t.chunk * p.batch + b) * t.quads + t.q] = acc[k];
        } else if (k < t.tile) {
            let out = p.step * t.row + b * t.n + t.j0;
            var x = tanh(clamp(acc[k], vec4(-TANH_CLAMP), vec4(TANH_CLAMP)));
            if (p.clamp_words != 0u) {
                // The quad's four bits lie in one word (32 is a multiple of 4); a held neuron keeps
                // u_j(t), which is still in row t.
                let word = clamp_mask[((p.step - 1u) * p.batch + b) * p.clamp_words + t.j0 / 32u];
                let bits = (vec4(word) >> (vec4(t.j0 % 32u) + vec4(0u, 1u, 2u, 3u))) & vec4(1u);
                x = select(x, history_quad(out), bits != vec4(0u));
            }
            activations[out / 4u] = x;
        }
    }
}

// The invocation's column quads: COLUMN_QUADS (1 to MAX_COLUMN_QUADS) neighbouring quads
// owned = column_quads(), first = owned * gid.x .. first + owned - 1, so that one lane's trace, w and
// alpha quads of a row are one run of 16 * owned bytes. Their tiles and sums are four named members
// of a struct, each passed through add_quad_of_rows and write_sums only where m < owned (a constant
// once COLUMN_QUADS is set) and the quad is not past the last; the tiles and sums of the others are
// never used, and the compiler drops them. A loop over m would not unroll on lavapipe (four times the
// body of add_quad_of_rows), and its arrays of tiles, indexed at run time, made the step 2.7x slower
// there.
fn column_quads() -> u32 {
    return clamp(COLUMN_QUADS, 1u, MAX_COLUMN_QUADS);
}

struct OwnedQuads {
    t0: QuadTile,
    t1: QuadTile,
    t2: QuadTile,
    t3: QuadTile,
    acc0: array<vec4<f32>, BATCH_TILE>,
    acc1: array<vec4<f32>, BATCH_TILE>,
    acc2: array<vec4<f32>, BATCH_TILE>,
    acc3: array<vec4<f32>, BATCH_TILE>,
}

// The tiles of the quads from `first` on, with their sums before any term.
fn owned_quads(first: u32, batch_tile: u32, chunk: u32) -> OwnedQuads {
    var o: OwnedQuads;
    o.t0 = quad_tile(first, batch_tile, chunk);
    o.t1 = quad_tile(first + 1u, batch_tile, chunk);
    o.t2 = quad_tile(first + 2u, batch_tile, chunk);
    o.t3 = quad_tile(first + 3u, batch_tile, chunk);
    o.acc0 = initial_sums(o.t0);
    o.acc1 = initial_sums(o.t1);
    o.acc2 = initial_sums(o.t2);
    o.acc3 = initial_sums(o.t3);
    return o;
}

fn owns(m: u32, t: QuadTile) -> bool {
    return m < column_quads() && t.q < t.quads;
}

// add_quad_of_rows for each owned quad: the four rows i4 with their history quads.
fn add_quad_of_rows_to_owned(
    o_in: OwnedQuads,
    i4: u32,
    x_quads: array<vec4<f32>, BATCH_TILE>,
    pre_quads: array<vec4<f32>, BATCH_TILE>,
) -> OwnedQuads {
    var o = o_in;
    if (owns(0u, o.t0)) {
        o.acc0 = add_quad_of_rows(o.t0, i4, x_quads, pre_quads, o.acc0);
    }
    if (owns(1u, o.t1)) {
        o.acc1 = add_quad_of_rows(o.t1, i4, x_quads, pre_quads, o.acc1);
    }
    if (owns(2u, o.t2)) {
        o.acc2 = add_quad_of_rows(o.t2, i4, x_quads, pre_quads, o.acc2);
    }
    if (owns(3u, o.t3)) {
        o.acc3 = add_quad_of_rows(o.t3, i4, x_quads, pre_quads, o.acc3);
    }
    return o;
}

fn write_owned_sums(o: OwnedQuads) {
    if (owns(0u, o.t0)) {
        write_sums(o.t0, o.acc0);
    }
    if (owns(1u, o.t1)) {
        write_sums(o.t1, o.acc1);
    }
    if (owns(2u, o.t2)) {
        write_sums(o.t2, o.acc2);
    }
    if (owns(3u, o.t3)) {
        write_sums(o.t3, o.acc3);
    }
}
// ---- end of shared vec4 forward functions ----

@compute @workgroup_size(WORKGROUP_SIZE)
fn forward_step_vec4_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) subgroup_size: u32,
) {
    // The batch tile and the chunk are the workgroup's, and so is whether its first quad exists, so
    // whole subgroups return here; a lane past the last quad stays to load and shuffle its share of
    // the history, and writes nothing.
    let first = gid.x * column_quads();
    if (gid.y * BATCH_TILE >= p.batch || gid.z >= max(p.splits, 1u) || workgroup.x * WORKGROUP_SIZE * column_quads() >= p.n / 4u) {
        return;
    }
    var owned = owned_quads(first, gid.y, gid.z);
    let t = owned.t0; // what the owned quads' tiles share: the rows, the batch tile, the chunk
    // The sum over i runs a quad of pre-synaptic neurons at a time, L quads per block: lane l loads
    // x_i(t-1) and x_i(t-2) of quad base + l for the tile, and the quads are then taken in order,
    // each shuffled from its lane, for all the invocation's column quads.
    let lanes = max(subgroup_size, 1u);
    let q_begin = t.i_begin / 4u;
    let q_end = div_ceil_u32(t.i_end, 4u);
    let blocks = div_ceil_u32(q_end - q_begin, lanes);
    for (var block = 0u; block < blocks; block++) {
        let base = q_begin + block * lanes;
        var x_lane: array<vec4<f32>, BATCH_TILE>;    // x_i(t-1), i = 4 (base + lane) .. + 3
        var pre_lane: array<vec4<f32>, BATCH_TILE>;  // x_i(t-2)
        if (base + lane < q_end) {
            for (var k = 0u; k < t.slots; k++) {
                if (k < t.tile) {
                    let b = t.b0 + k;
                    x_lane[k] = activations[(t.x_prev + b * t.n) / 4u + base + lane];
                    if (t.update) {
                        // x(t-2) lives one row below x(t-1).
                        pre_lane[k] = activations[(t.x_prev - t.row + b * t.n) / 4u + base + lane];
                    }
                }
            }
        }
        for (var l = 0u; l < lanes; l++) {
            var x_quads: array<vec4<f32>, BATCH_TILE>;    // x_i(t-1), i = 4 (base + l) .. + 3
            var pre_quads: array<vec4<f32>, BATCH_TILE>;  // x_i(t-2)
            // Every lane shuffles, in the subgroup's uniform control flow.
            for (var k = 0u; k < t.slots; k++) {
                x_quads[k] = subgroupShuffle(x_lane[k], l);
                pre_quads[k] = subgroupShuffle(pre_lane[k], l);
            }
            if (base + l < q_end) {
                owned = add_quad_of_rows_to_owned(owned, base + l, x_quads, pre_quads);
            }
        }
    }
    write_owned_sums(owned);
}
