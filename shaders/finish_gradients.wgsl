// finish_gradients: closes the backward sweep.
//
// Three reductions of partial sums into the flat gradient, one per job (dst, len, rows, src):
//
//   grads[dst + k] += sum_{r < rows} partials[src + r * len + k]        for k < len
//
//   eta:       backward_trace's (n_tiles, N) eta sums: len N (eta per neuron) or 1 (one eta, rows = n_tiles * N)
//   alpha:     the (N, N) dalpha accumulator when alpha is per neuron (len N, rows N) or one scalar (len 1);
//              with Z > 1 batch groups in backward_trace, their (Z, N, N) dalpha, whatever alpha's shape
//   modulator: modulation_backward's (B, mod_len) rows (len mod_len, rows B)
//
// then zeroes the gradient of parameters held fixed (alpha for the non-plastic baseline, a fixed eta),
// and writes metrics[METRIC_GRAD_NORM_SQ] = sum_k grads[k]^2, which adam_update reads for clipping.
// A job with len 0 does nothing.
//
// One workgroup: lanes split the outputs when a job has many, and split the rows, with a tree
// reduction, when it has few (one eta, one alpha).

const METRIC_GRAD_NORM_SQ: u32 = 3u;
const WORKGROUP_SIZE: u32 = 256u;

struct FinishGradientsParams {
    param_count: u32,   // length of the flat gradient
    frozen0_begin: u32, // grads[k] = 0 for frozen0_begin <= k < frozen0_end, and likewise range 1
    frozen0_end: u32,
    frozen1_begin: u32,
    frozen1_end: u32,
    eta_dst: u32,
    eta_len: u32,
    eta_rows: u32,
    eta_src: u32,
    alpha_dst: u32,
    alpha_len: u32,
    alpha_rows: u32,
    alpha_src: u32,
    mod_dst: u32,
    mod_len: u32,
    mod_rows: u32,
    mod_src: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> p: FinishGradientsParams;
@group(0) @binding(1) var<storage, read> partials: array<f32>;       // the sweep's partial sums, at each job's src
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;    // flat, mirrors the parameters
@group(0) @binding(3) var<storage, read_write> metrics: array<f32>;  // (METRIC_COUNT)

var<workgroup> sums: array<f32, WORKGROUP_SIZE>;

fn tree_sum(lane: u32, value: f32) -> f32 {
    sums[lane] = value;
    workgroupBarrier();
    for (var s = WORKGROUP_SIZE / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            sums[lane] += sums[lane + s];
        }
        workgroupBarrier();
    }
    let total = sums[0];
    workgroupBarrier();
    return total;
}

fn reduce_job(lane: u32, dst: u32, len: u32, rows: u32, src: u32) {
    if (len >= WORKGROUP_SIZE) {
        for (var k = lane; k < len; k += WORKGROUP_SIZE) {
            var s = 0.0;
            for (var r = 0u; r < rows; r++) {
                s += partials[src + r * len + k];
            }
            grads[dst + k] += s;
        }
    } else {
        for (var k = 0u; k < len; k++) {
            var s = 0.0;
            for (var r = lane; r < rows; r += WORKGROUP_SIZE) {
                s += partials[src + r * len + k];
            }
            let total = tree_sum(lane, s);
            if (lane == 0u) {
                grads[dst + k] += total;
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn finish_gradients(@builtin(local_invocation_index) lane: u32) {
    reduce_job(lane, p.eta_dst, p.eta_len, p.eta_rows, p.eta_src);
    reduce_job(lane, p.alpha_dst, p.alpha_len, p.alpha_rows, p.alpha_src);
    reduce_job(lane, p.mod_dst, p.mod_len, p.mod_rows, p.mod_src);
    storageBarrier();
    workgroupBarrier();

    var square_sum = 0.0;
    for (var k = lane; k < p.param_count; k += WORKGROUP_SIZE) {
        if ((k >= p.frozen0_begin && k < p.frozen0_end) || (k >= p.frozen1_begin && k < p.frozen1_end)) {
            grads[k] = 0.0;
        } else {
            let g = grads[k];
            square_sum += g * g;
        }
    }
    let total = tree_sum(lane, square_sum);
    if (lane == 0u) {
        metrics[METRIC_GRAD_NORM_SQ] = total;
    }
}
