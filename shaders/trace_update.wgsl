// trace_update: recomputes the plastic trace of step t from that of step t-1 (any rule), for the
// backward sweep of rules it cannot invert (a clip, a modulated rate, an eligibility trace).
//
//   H(t) = clip(U_r(H(t-1)))      r = rate_bj(t-1), pre = x_i(t-2), post = x_j(t-1)
//   retroactive: E(t) = U_eta(E(t-1)),  H(t) = clip(H(t-1) + r E(t-1))
//
// with the same update functions as forward_step.wgsl (see there for the rules). The sweep keeps
// exact checkpoints of H (and E) every K steps; before it walks a segment backwards it refills a
// scratch buffer of K + 1 slots, slot s holding the trace of step (segment start - 1 + s), with this
// kernel, so the memory is O(T / K + K) traces instead of T. It applies the same f32 operations in
// the same order as forward_step, so a recomputed trace matches the forward pass's to rounding.
//
// One invocation per element of the (B, N, N) trace, in the order it is stored (TRACE_STRIPE); a 2-D
// grid past 65535 workgroups.

override WORKGROUP_SIZE: u32 = 256u;
override RULE: u32 = 0u;
override CLIP: f32 = 0.0;
override ALPHA_SHAPE: u32 = 0u;
override RATE: u32 = 0u;
override ETA_PER_NEURON: bool = false;
override RETROACTIVE: bool = false;
override PLASTIC_SELF: bool = true;

struct TraceUpdateParams {
    n: u32,           // neurons N
    batch: u32,       // batch B
    step: u32,        // t >= 2: forms H(t)
    row_stride: u32,  // invocations per grid row
    eta_offset: u32,  // offsets into `params`
    mod_offset: u32,
    src_offset: u32,  // element offset of the slot holding H(t-1) (E(t-1) at + elig_offset)
    dst_offset: u32,  // element offset of the slot receiving H(t)
    elig_offset: u32, // offset of E within a slot (RETROACTIVE)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> p: TraceUpdateParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;        // flat parameters [w, alpha, eta, modulator]
@group(0) @binding(2) var<storage, read> activations: array<f32>;   // (T + 1, B, N): x(t) at row t
@group(0) @binding(3) var<storage, read> modulation: array<f32>;    // (T + 1, B): M_b(t) at row t
@group(0) @binding(4) var<storage, read_write> traces: array<f32>;  // (K + 1 slots) of [H (B, N, N), E (B, N, N)]

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
fn trace_update(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let e = gid.y * p.row_stride + gid.x;
    if (e >= p.batch * n * n) {
        return;
    }
    let b = e / (n * n);
    let element = trace_element(e % (n * n), n);
    let i = element.x;
    let j = element.y;
    let row = p.batch * n;
    let pre = activations[(p.step - 2u) * row + b * n + i];
    let post = activations[(p.step - 1u) * row + b * n + j];
    let rate = plastic_rate(b, j, p.step - 1u, n, p.batch, p.eta_offset, p.mod_offset);
    let h = traces[p.src_offset + e];
    if (RETROACTIVE) {
        let old_e = traces[p.src_offset + p.elig_offset + e];
        traces[p.dst_offset + e] = clip_trace(h + rate * old_e);
        traces[p.dst_offset + p.elig_offset + e] = rule_update(old_e, pre, post, eligibility_rate(j, p.eta_offset));
    } else {
        traces[p.dst_offset + e] = clip_trace(rule_update(h, pre, post, rate));
    }
}
