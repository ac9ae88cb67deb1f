// forward_step_vec4_subgroup: forward_step_vec4.wgsl with the history of the pre-synaptic neurons
// passed between the invocations of a subgroup instead of loaded by each (wgpu::Features::SUBGROUP).
//
// The same step, parameters, bindings and CPU twin (cpu::forward_step) as forward_step.wgsl, which
// gives the math:  H(t) = clip(U_r(H(t-1)))  (formed on the fly),
//   x_j(t) = tanh(sum_i (w_ij + alpha_eff_ij H_ij(t)) x_i(t-1) + u_j(t)).
// As in forward_step_vec4, one invocation owns a quad of post-synaptic neurons j = 4q .. 4q + 3 for
// BATCH_TILE batch elements, and every trace, w and alpha access is a vec4. What differs is where
// x_i(t-1) and x_i(t-2) come from: every invocation of a workgroup needs the same quads of them (its
// batch tile's rows, four i at a time), and forward_step_vec4 has each load them itself. Here the L
// invocations of a subgroup take L pre-synaptic quads at a time: lane l loads quad base + l of both
// rows for the tile, and the sum over those quads gets each one from its lane by subgroupShuffle.
// Loads of the history drop from 2 per element quad and batch element every four rows to 2 / L;
// the trace, w and alpha accesses and the f32 operations of the sum (same order, same values) are
// forward_step_vec4's, so both give the same bits. On lavapipe, where every lane's storage access
// is a loop over the SIMD lanes whatever the address, those history loads were about a sixth of the
// step's accesses (README, "Subgroups").
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

@compute @workgroup_size(WORKGROUP_SIZE)
fn forward_step_vec4_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) subgroup_size: u32,
) {
    let n = p.n;
    let quads = n / 4u;
    let q = gid.x;
    let j0 = 4u * q;
    let b0 = gid.y * BATCH_TILE;
    let split = p.splits > 1u;
    // The batch tile and the chunk are the workgroup's, so whole subgroups return here; a lane past
    // the last quad stays for the shuffles and touches nothing else.
    let live = q < quads;
    if (b0 >= p.batch || gid.z >= max(p.splits, 1u)) {
        return;
    }
    let tile = min(BATCH_TILE, p.batch - b0);
    let slots = min(BATCH_SLOTS, BATCH_TILE);
    let row = p.batch * n;               // one (B, N) row of the history
    let x_prev = (p.step - 1u) * row;    // x(t-1)
    let update = p.step >= 2u;
    // Loaded once: the compiler cannot hoist loads of `p` past the trace stores, which it must
    // assume may alias.
    let w_quad = p.w_offset / 4u;
    let alpha_offset = p.alpha_offset;
    let elig_quad = p.elig_offset / 4u;
    let i_begin = select(0u, gid.z * p.split_len, split);
    let i_end = select(n, min(n, i_begin + p.split_len), split);

    // alpha_eff for the quad where it does not depend on i (ALPHA_SHAPE 1, 2).
    var alpha_fixed = vec4(params[alpha_offset]);
    if (ALPHA_SHAPE == 1u && live) {
        alpha_fixed = params_vec4[alpha_offset / 4u + q];
    }
    var acc: array<vec4<f32>, BATCH_TILE>;
    var post: array<vec4<f32>, BATCH_TILE>;    // x_j(t-1)
    var rate: array<vec4<f32>, BATCH_TILE>;    // rate_bj(t-1) when it varies (RATE > 0)
    // One eta (RATE 0) is one scalar for the whole step, not an array of registers.
    let eta0 = vec4(params[p.eta_offset]);
    var rate_e: vec4<f32>;
    for (var c = 0u; c < 4u && live; c++) {
        rate_e[c] = eligibility_rate(j0 + c, p.eta_offset);
    }
    // Loops over the tile run to the constant `slots` and skip k >= tile, so that they unroll
    // and the arrays stay in registers (with an early `break` instead, lavapipe ran the step about
    // 1.3x slower).
    for (var k = 0u; k < slots; k++) {
        let b = b0 + k;
        if (k < tile && live && !split) {
            acc[k] = history_quad(p.step * row + b * n + j0); // u(t)
        }
        if (k < tile && live && update) {
            post[k] = history_quad(x_prev + b * n + j0);
            for (var c = 0u; c < 4u && RATE != 0u; c++) {
                rate[k][c] = plastic_rate(b, j0 + c, p.step - 1u, n, p.batch, p.eta_offset, p.mod_offset);
            }
        }
    }
    // The sum over i runs a quad of pre-synaptic neurons at a time, L quads per block: lane l loads
    // x_i(t-1) and x_i(t-2) of quad base + l for the tile, and the quads are then taken in order,
    // each shuffled from its lane. A split's chunk need not start or end on a quad; the skipped i of
    // an edge quad are another chunk's.
    let lanes = max(subgroup_size, 1u);
    let q_begin = i_begin / 4u;
    let q_end = div_ceil_u32(i_end, 4u);
    let blocks = div_ceil_u32(q_end - q_begin, lanes);
    for (var block = 0u; block < blocks; block++) {
        let base = q_begin + block * lanes;
        var x_lane: array<vec4<f32>, BATCH_TILE>;    // x_i(t-1), i = 4 (base + lane) .. + 3
        var pre_lane: array<vec4<f32>, BATCH_TILE>;  // x_i(t-2)
        if (base + lane < q_end) {
            for (var k = 0u; k < slots; k++) {
                if (k < tile) {
                    let b = b0 + k;
                    x_lane[k] = activations[(x_prev + b * n) / 4u + base + lane];
                    if (update) {
                        // x(t-2) lives one row below x(t-1).
                        pre_lane[k] = activations[(x_prev - row + b * n) / 4u + base + lane];
                    }
                }
            }
        }
        for (var l = 0u; l < lanes; l++) {
            let i4 = base + l;
            var x_quads: array<vec4<f32>, BATCH_TILE>;    // x_i(t-1), i = 4 i4 .. 4 i4 + 3
            var pre_quads: array<vec4<f32>, BATCH_TILE>;  // x_i(t-2)
            // Every lane shuffles, in the subgroup's uniform control flow.
            for (var k = 0u; k < slots; k++) {
                x_quads[k] = subgroupShuffle(x_lane[k], l);
                pre_quads[k] = subgroupShuffle(pre_lane[k], l);
            }
            if (i4 >= q_end || !live) {
                continue;
            }
            for (var c = 0u; c < 4u; c++) {
                let i = 4u * i4 + c;
                if (i < i_begin || i >= i_end) {
                    continue;
                }
                let w_ij = params_vec4[w_quad + i * quads + q];
                var alpha_ij = alpha_fixed;
                if (ALPHA_SHAPE == 0u) {
                    alpha_ij = params_vec4[alpha_offset / 4u + i * quads + q];
                }
                if (!PLASTIC_SELF && i4 == q) {
                    alpha_ij[c] = 0.0;
                }
                for (var k = 0u; k < slots; k++) {
                    if (k < tile) {
                        let b = b0 + k;
                        let h_index = (b * n + i) * quads + q;
                        var h = trace[h_index];
                        if (update) {
                            let r = select(rate[k], eta0, RATE == 0u);
                            let pre = pre_quads[k][c];
                            if (RETROACTIVE) {
                                let e = trace[elig_quad + h_index];
                                h = clip_trace_vec4(h + r * e);
                                trace[elig_quad + h_index] = rule_update_vec4(e, pre, post[k], rate_e);
                            } else {
                                h = clip_trace_vec4(rule_update_vec4(h, pre, post[k], r));
                            }
                            trace[h_index] = h;
                        }
                        acc[k] += (w_ij + alpha_ij * h) * x_quads[k][c];
                    }
                }
            }
        }
    }
    // Past the shuffles, a lane beyond the last quad has nothing left to do.
    if (!live) {
        return;
    }
    for (var k = 0u; k < slots; k++) {
        let b = b0 + k;
        if (k < tile && split) {
            partial_sums[(gid.z * p.batch + b) * quads + q] = acc[k];
        } else if (k < tile) {
            let out = p.step * row + b * n + j0;
            var x = tanh(clamp(acc[k], vec4(-TANH_CLAMP), vec4(TANH_CLAMP)));
            if (p.clamp_words != 0u) {
                // The quad's four bits lie in one word (32 is a multiple of 4); a held neuron keeps
                // u_j(t), which is still in row t.
                let word = clamp_mask[((p.step - 1u) * p.batch + b) * p.clamp_words + j0 / 32u];
                let bits = (vec4(word) >> (vec4(j0 % 32u) + vec4(0u, 1u, 2u, 3u))) & vec4(1u);
                x = select(x, history_quad(out), bits != vec4(0u));
            }
            activations[out / 4u] = x;
        }
    }
}
