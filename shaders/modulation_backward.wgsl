// modulation_backward: the neuromodulator's share of backward step t, run before backward_activation(t).
//
//   drate_bj(t) = sum_it rate_partials[b, j, it]                (written by backward_trace(t+1))
//   simple:     dM_b(t) = sum_j drate_bj(t)
//   per neuron: dM_b(t) = sum_j u_j drate_bj(t);   du_j += M_b(t) drate_bj(t);   dc_j += drate_bj(t)
//   dz_b        = dM_b(t) (1 - M_b(t)^2)                        (z = mod_w . x(t) + mod_b)
//   dmod_w_k   += dz_b x_bk(t);   dmod_b += dz_b;   mod_grad[b] = dz_b   (backward_activation adds dz_b mod_w_j to gx_j(t))
//
// The accumulators are (B, mod_len) rows laid out like the modulator's parameters
// [mod_w (N), mod_b, mod_u (N), mod_c (N)], one row per batch element, so one workgroup owns each row
// and nothing races; finish_gradients sums the rows. At t = T the rate partials are still zero.

const WORKGROUP_SIZE: u32 = 64u;

struct ModulationBackwardParams {
    n: u32,                    // neurons N
    batch: u32,                // batch B
    step: u32,                 // t, 1-based
    n_tiles: u32,              // partial sums per (b, j)
    mod_offset: u32,           // offset of the modulator in `params`
    rate_partials_offset: u32, // (B, n_tiles, N) in `partials`
    acc_offset: u32,           // (B, mod_len) gradient accumulators in `partials`
    mod_grad_offset: u32,      // (B) dz_b in `partials`
    fan_out: u32,              // 1: rate = u_j M + c_j, else M
    mod_len: u32,              // N + 1, or 3 N + 1 with fan-out
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> p: ModulationBackwardParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;         // flat [w, alpha, eta, modulator]
@group(0) @binding(2) var<storage, read> activations: array<f32>;    // (T + 1, B, N): x(t) at row t
@group(0) @binding(3) var<storage, read> modulation: array<f32>;     // (T + 1, B): M_b(t) at row t
@group(0) @binding(4) var<storage, read_write> partials: array<f32>; // rate partials in, accumulators and mod_grad out

var<workgroup> sums: array<f32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn modulation_backward(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let b = group.x;
    let n = p.n;
    let m = modulation[p.step * p.batch + b];
    let acc = p.acc_offset + b * p.mod_len;
    var d_m = 0.0;
    for (var j = lane; j < n; j += WORKGROUP_SIZE) {
        var d_rate = 0.0;
        let base = p.rate_partials_offset + b * p.n_tiles * n + j;
        for (var k = 0u; k < p.n_tiles; k++) {
            d_rate += partials[base + k * n];
        }
        if (p.fan_out != 0u) {
            d_m += params[p.mod_offset + n + 1u + j] * d_rate;
            partials[acc + n + 1u + j] += m * d_rate;
            partials[acc + 2u * n + 1u + j] += d_rate;
        } else {
            d_m += d_rate;
        }
    }
    sums[lane] = d_m;
    workgroupBarrier();
    for (var s = WORKGROUP_SIZE / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            sums[lane] += sums[lane + s];
        }
        workgroupBarrier();
    }
    let d_z = sums[0] * (1.0 - m * m);
    let x = (p.step * p.batch + b) * n;
    for (var k = lane; k < n; k += WORKGROUP_SIZE) {
        partials[acc + k] += d_z * activations[x + k];
    }
    if (lane == 0u) {
        partials[acc + n] += d_z;
        partials[p.mod_grad_offset + b] = d_z;
    }
}
