// trace_update_vec4: trace_update.wgsl for N a multiple of 4, one invocation per quad of four
// neighbouring post-synaptic neurons, every trace access a vec4.
//
//   H(t) = clip(U_r(H(t-1)))      r = rate_bj(t-1), pre = x_i(t-2), post = x_j(t-1)
//   retroactive: E(t) = U_eta(E(t-1)),  H(t) = clip(H(t-1) + r E(t-1))
//
// The same step, parameters and CPU twin (cpu::trace_update) as trace_update.wgsl, and the same f32
// operations per component as forward_step_vec4.wgsl, so a recomputed trace matches the forward
// pass's to rounding. The runtime uses this kernel whenever N % 4 == 0 (the slot offsets are then
// multiples of 4), trace_update.wgsl otherwise. A 2-D grid past 65535 workgroups.

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
@group(0) @binding(1) var<storage, read> params: array<f32>;              // flat parameters [w, alpha, eta, modulator]
@group(0) @binding(2) var<storage, read> activations: array<f32>;         // (T + 1, B, N): x(t) at row t
@group(0) @binding(3) var<storage, read> modulation: array<f32>;          // (T + 1, B): M_b(t) at row t
@group(0) @binding(4) var<storage, read_write> traces: array<vec4<f32>>;  // (K + 1 slots) of [H (B, N, N/4), E (B, N, N/4)]

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

@compute @workgroup_size(WORKGROUP_SIZE)
fn trace_update_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.n;
    let quads = n / 4u;
    let e = gid.y * p.row_stride + gid.x;   // quad index in the (B, N, N/4) trace, as stored (TRACE_STRIPE)
    if (e >= p.batch * n * quads) {
        return;
    }
    let b = e / (n * quads);
    let element = trace_element(4u * (e % (n * quads)), n);
    let i = element.x;
    let j0 = element.y;
    let row = p.batch * n;
    let pre = activations[(p.step - 2u) * row + b * n + i];
    let at = (p.step - 1u) * row + b * n + j0;
    let post = vec4(activations[at], activations[at + 1u], activations[at + 2u], activations[at + 3u]);
    var rate: vec4<f32>;
    var rate_e: vec4<f32>;
    for (var c = 0u; c < 4u; c++) {
        rate[c] = plastic_rate(b, j0 + c, p.step - 1u, n, p.batch, p.eta_offset, p.mod_offset);
        rate_e[c] = eligibility_rate(j0 + c, p.eta_offset);
    }
    let src = p.src_offset / 4u;
    let dst = p.dst_offset / 4u;
    let elig = p.elig_offset / 4u;
    let h = traces[src + e];
    if (RETROACTIVE) {
        let old_e = traces[src + elig + e];
        traces[dst + e] = clip_trace_vec4(h + rate * old_e);
        traces[dst + elig + e] = rule_update_vec4(old_e, pre, post, rate_e);
    } else {
        traces[dst + e] = clip_trace_vec4(rule_update_vec4(h, pre, post, rate));
    }
}
