// forward_step: one fused time step t of a batch of plastic recurrent networks, any rule.
//
//   H(t)    = update of step t-1 (below), formed here from H(t-1), x(t-2), x(t-1)
//   a_j(t)  = sum_i (w_ij + alpha_eff_ij * H_ij(t)) * x_i(t-1) + u_j(t)
//   x_j(t)  = tanh(a_j(t))
//
// The update of step s (pre = x_i(s-1), post = x_j(s), r = rate_bj(s), see plasticity.rs):
//   decay     U_r(H) = (1 - r) H + r pre post            (RULE 0, the paper's)
//   oja       U_r(H) = H + r post (pre - post H)         (RULE 1)
//   additive  U_r(H) = H + r pre post                    (RULE 2)
//   H(s+1) = clip(U_r(H(s)))                             clip to [-CLIP, CLIP] when CLIP > 0
//   retroactive (RETROACTIVE): E(s+1) = U_eta(E(s)),  H(s+1) = clip(H(s) + r E(s))
//   rate_bj(s) = eta[0] | eta[j] | M_b(s) | u_j M_b(s) + c_j                     (RATE 0..3)
//   alpha_eff_ij = alpha[i N + j] | alpha[j] | alpha[0]  (ALPHA_SHAPE 0..2), 0 for i == j unless PLASTIC_SELF
//
// Why the trace update is fused one step late: H(t) needs x(t-1), which exists only once step t-1's
// reduction over i has finished, so step t forms H(t) on the fly while it reads H(t-1) for its sum.
// At t = 1 the trace is H(1) = 0 (cleared by the runtime) and is not updated.
//
// Clamping (the image task): where bit j of clamp row (t, b) is set, x_j(t) = u_j(t) instead, the
// neuron being held at its input; its drive is still computed, then discarded.
//
// The inputs live in the activation history itself: row t holds u(t) until step t replaces it with
// x(t). Only invocation (b, j) reads or writes element (t, b, j), and rows t-1 and t-2 are all that
// the sum reads, so the overwrite is safe, and the history costs (T + 1) * B * N floats, not twice that.
//
// Traffic per step (f32): w and alpha read once per batch tile (shared by the whole batch, so cached),
// the trace read once and written once: (2*N*N + 2*B*N*N) * 4 bytes, plus O(B*N) for x and u
// (twice the trace traffic with a retroactive eligibility trace). That is the least any
// implementation of this step can move.
//
// One invocation owns post-synaptic neuron j for BATCH_TILE batch elements and loops over the
// pre-synaptic index i: neighbouring invocations read neighbouring j, so every row access is
// coalesced, and each trace element has exactly one owner, so the update is in place.
//
// Split steps (splits > 1, for GPUs, whose memory system needs far more invocations in flight than
// N * B / BATCH_TILE): invocation z of the grid's third dimension sums only i in
// [z * split_len, (z + 1) * split_len) and writes that partial sum of a_j(t) - u_j(t) to
// partial_sums (S, B, N); forward_finish.wgsl then forms x(t). Each trace element still has one owner.

const BATCH_TILE: u32 = 4u;
// Batch elements the tile loops run to, min(B, BATCH_TILE), set by the runtime
// (forward_step::batch_slots): loops to a constant unroll, and the arrays indexed by k stay registers
// (bounded by the tile's own size, they were scratch memory on lavapipe).
override BATCH_SLOTS: u32 = 4u;
// tanh(15) == 1 in f32; clamping keeps exp-based tanh implementations from overflowing to inf/inf.
const TANH_CLAMP: f32 = 15.0;

override WORKGROUP_SIZE: u32 = 64u;
override RULE: u32 = 0u;
override CLIP: f32 = 0.0;
override ALPHA_SHAPE: u32 = 0u;
override RATE: u32 = 0u;
override ETA_PER_NEURON: bool = false;
override RETROACTIVE: bool = false;
override PLASTIC_SELF: bool = true;

struct ForwardStepParams {
    n: u32,            // neurons N
    batch: u32,        // batch B
    step: u32,         // t, 1-based
    w_offset: u32,     // offset of w (N, N) in `params`
    alpha_offset: u32, // offset of alpha (N, N), (N) or (1)
    eta_offset: u32,   // offset of eta (1) or (N)
    mod_offset: u32,   // offset of the modulator [mod_w (N), mod_b, mod_u (N), mod_c (N)]
    clamp_words: u32,  // u32 words per (t, b) row of `clamp_mask`: ceil(N / 32), or 0 when nothing is clamped
    elig_offset: u32,  // offset of E (B, N, N) in `trace` (RETROACTIVE)
    splits: u32,       // S: chunks of the sum over i; 0 or 1 sums everything here and writes x(t)
    split_len: u32,    // i per chunk when S > 1
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> p: ForwardStepParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;            // flat parameters [w, alpha, eta, modulator]
@group(0) @binding(2) var<storage, read_write> trace: array<f32>;       // (B, N, N) H: H(t-1) on entry, H(t) on exit; then E likewise
@group(0) @binding(3) var<storage, read_write> activations: array<f32>; // (T + 1, B, N): x(s) at row s < t, u(s) at row s >= t; x(0) = 0
@group(0) @binding(4) var<storage, read> clamp_mask: array<u32>;        // (T, B, clamp_words) bit masks: u(t) in row t - 1
@group(0) @binding(5) var<storage, read> modulation: array<f32>;        // (T + 1, B): M_b(s) at row s (RATE 2, 3)
@group(0) @binding(6) var<storage, read_write> partial_sums: array<f32>; // (S, B, N) when S > 1

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

@compute @workgroup_size(WORKGROUP_SIZE)
fn forward_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let j = gid.x;
    let b0 = gid.y * BATCH_TILE;
    let split = p.splits > 1u;
    if (j >= n || b0 >= p.batch || gid.z >= max(p.splits, 1u)) {
        return;
    }
    let tile = min(BATCH_TILE, p.batch - b0);
    let column = trace_column(j, n);     // element (i, j) of batch element b at b N^2 + column.x + i column.y
    let slots = min(BATCH_SLOTS, BATCH_TILE);
    let row = p.batch * n;               // one (B, N) row of activations or inputs
    let x_prev = (p.step - 1u) * row;    // x(t-1)
    let update = p.step >= 2u;
    // Loaded once: the compiler cannot hoist loads of `p` past the trace stores, which it must
    // assume may alias.
    let w_offset = p.w_offset;
    let alpha_offset = p.alpha_offset;
    let elig_offset = p.elig_offset;
    let i_begin = select(0u, gid.z * p.split_len, split);
    let i_end = select(n, min(n, i_begin + p.split_len), split);

    var acc: array<f32, BATCH_TILE>;
    var post: array<f32, BATCH_TILE>;    // x_j(t-1)
    var rate: array<f32, BATCH_TILE>;    // rate_bj(t-1)
    let rate_e = eligibility_rate(j, p.eta_offset);
    for (var k = 0u; k < slots; k++) {
        let b = b0 + k;
        if (k < tile && !split) {
            acc[k] = activations[p.step * row + b * n + j]; // u_j(t)
        }
        if (k < tile && update) {
            post[k] = activations[x_prev + b * n + j];
            rate[k] = plastic_rate(b, j, p.step - 1u, n, p.batch, p.eta_offset, p.mod_offset);
        }
    }
    for (var i = i_begin; i < i_end; i++) {
        let w_ij = params[w_offset + i * n + j];
        let alpha_ij = alpha_eff(i, j, n, alpha_offset);
        for (var k = 0u; k < slots; k++) {
            if (k < tile) {
                let b = b0 + k;
                let h_index = b * n * n + column.x + i * column.y;
                var h = trace[h_index];
                if (update) {
                    // x_i(t-2) lives one row below x(t-1).
                    let pre = activations[x_prev - row + b * n + i];
                    if (RETROACTIVE) {
                        let e = trace[elig_offset + h_index];
                        h = clip_trace(h + rate[k] * e);
                        trace[elig_offset + h_index] = rule_update(e, pre, post[k], rate_e);
                    } else {
                        h = clip_trace(rule_update(h, pre, post[k], rate[k]));
                    }
                    trace[h_index] = h;
                }
                acc[k] += (w_ij + alpha_ij * h) * activations[x_prev + b * n + i];
            }
        }
    }
    for (var k = 0u; k < slots; k++) {
        let b = b0 + k;
        if (k < tile && split) {
            partial_sums[(gid.z * p.batch + b) * n + j] = acc[k];
        } else if (k < tile) {
            let out = p.step * row + b * n + j;
            var held = false;
            if (p.clamp_words != 0u) {
                held = ((clamp_mask[((p.step - 1u) * p.batch + b) * p.clamp_words + j / 32u] >> (j % 32u)) & 1u) != 0u;
            }
            if (!held) {
                activations[out] = tanh(clamp(acc[k], -TANH_CLAMP, TANH_CLAMP));
            }
        }
    }
}
