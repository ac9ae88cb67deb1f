// finish_gradients: closes the backward sweep.
//
//   grads[eta] += sum_k partials[eta_partials_offset + k]    (0 instead when eta is fixed: learn_eta == 0)
//   grads[k] = 0 for frozen_begin <= k < frozen_end          (parameters held fixed, e.g. alpha = 0
//                                                             for the non-plastic baseline)
//   metrics[METRIC_GRAD_NORM_SQ] = sum_k grads[k]^2        over the whole flat gradient
//
// One workgroup strides over the flat gradient: the sweep's per-tile eta sums are tiny, and the norm,
// read by adam_update for clipping, is one pass over 2*N*N + 1 numbers.

const METRIC_GRAD_NORM_SQ: u32 = 3u;
const WORKGROUP_SIZE: u32 = 256u;

struct FinishGradientsParams {
    param_count: u32,          // length of the flat gradient
    eta_offset: u32,
    eta_partials_offset: u32,  // where backward_trace's per-tile eta sums start in `partials`
    n_eta_partials: u32,
    learn_eta: u32,            // 0: eta is fixed, its gradient is forced to 0
    frozen_begin: u32,
    frozen_end: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> p: FinishGradientsParams;
@group(0) @binding(1) var<storage, read> partials: array<f32>;       // backward_trace's partial sums; eta's are (n_eta_partials) at eta_partials_offset
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;    // flat, mirrors the parameters
@group(0) @binding(3) var<storage, read_write> metrics: array<f32>;  // (METRIC_COUNT)

var<workgroup> sums: array<f32, WORKGROUP_SIZE>;
var<workgroup> eta_grad: f32;

@compute @workgroup_size(WORKGROUP_SIZE)
fn finish_gradients(@builtin(local_invocation_index) lane: u32) {
    var partial = 0.0;
    for (var k = lane; k < p.n_eta_partials; k += WORKGROUP_SIZE) {
        partial += partials[p.eta_partials_offset + k];
    }
    sums[lane] = partial;
    workgroupBarrier();
    for (var s = WORKGROUP_SIZE / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            sums[lane] += sums[lane + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        var g = 0.0;
        if (p.learn_eta != 0u) {
            g = grads[p.eta_offset] + sums[0];
        }
        grads[p.eta_offset] = g;
        eta_grad = g;
    }
    workgroupBarrier();

    var square_sum = 0.0;
    for (var k = lane; k < p.param_count; k += WORKGROUP_SIZE) {
        if (k >= p.frozen_begin && k < p.frozen_end) {
            grads[k] = 0.0;
        } else if (k != p.eta_offset) {
            let g = grads[k];
            square_sum += g * g;
        }
    }
    sums[lane] = square_sum;
    workgroupBarrier();
    for (var s = WORKGROUP_SIZE / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            sums[lane] += sums[lane + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        metrics[METRIC_GRAD_NORM_SQ] = sums[0] + eta_grad * eta_grad;
    }
}
