// loss_mse: summed squared error of the activations on the loss steps, and the sign-error count.
//
//   loss   = loss_scale * sum_{s, b, j} (x_j(t_s) - y_j(s))^2          t_s = loss_steps[s]
//   errors = #{ (s, b, j) : y != 0 and sign(x) != sign(y) }           (the paper's bit error count)
//
// One workgroup strides over the L*B*N elements and reduces in shared memory; it writes
// metrics[METRIC_LOSS], metrics[METRIC_SIGN_ERRORS] and metrics[METRIC_SIGN_COUNT] (the number of
// nonzero targets), so the host reads three scalars, never activations.

const METRIC_LOSS: u32 = 0u;
const METRIC_SIGN_ERRORS: u32 = 1u;
const METRIC_SIGN_COUNT: u32 = 2u;
const WORKGROUP_SIZE: u32 = 256u;

struct LossMseParams {
    n: u32,              // neurons N
    batch: u32,          // batch B
    n_loss_steps: u32,   // L
    loss_scale: f32,
}

@group(0) @binding(0) var<storage, read> p: LossMseParams;
@group(0) @binding(1) var<storage, read> activations: array<f32>;  // (T + 1, B, N)
@group(0) @binding(2) var<storage, read> targets: array<f32>;      // (L, B, N)
@group(0) @binding(3) var<storage, read> loss_steps: array<u32>;   // (L): 1-based step of each target row
@group(0) @binding(4) var<storage, read_write> metrics: array<f32>; // (METRIC_COUNT)

var<workgroup> loss_sums: array<f32, WORKGROUP_SIZE>;
var<workgroup> error_sums: array<u32, WORKGROUP_SIZE>;
var<workgroup> count_sums: array<u32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn loss_mse(@builtin(local_invocation_index) lane: u32) {
    let row = p.batch * p.n;
    let total = p.n_loss_steps * row;
    var loss = 0.0;
    var errors = 0u;
    var count = 0u;
    for (var e = lane; e < total; e += WORKGROUP_SIZE) {
        let s = e / row;
        let x = activations[loss_steps[s] * row + e % row];
        let y = targets[e];
        let d = x - y;
        loss += d * d;
        if (y != 0.0) {
            count += 1u;
            if ((x > 0.0) != (y > 0.0)) {
                errors += 1u;
            }
        }
    }
    loss_sums[lane] = loss;
    error_sums[lane] = errors;
    count_sums[lane] = count;
    workgroupBarrier();
    for (var s = WORKGROUP_SIZE / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            loss_sums[lane] += loss_sums[lane + s];
            error_sums[lane] += error_sums[lane + s];
            count_sums[lane] += count_sums[lane + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        metrics[METRIC_LOSS] = p.loss_scale * loss_sums[0];
        metrics[METRIC_SIGN_ERRORS] = f32(error_sums[0]);
        metrics[METRIC_SIGN_COUNT] = f32(count_sums[0]);
    }
}
