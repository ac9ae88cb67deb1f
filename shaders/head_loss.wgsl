// head_loss: the loss of one output head over every loss step and batch element, and its gradient.
//
//   linear (KIND 0):  l = scale * sum_k (y_k - t_k)^2                 dl/dy_k = 2 scale (y_k - t_k)
//   softmax (KIND 1): q = softmax(y), l = -scale * sum_k t_k log q_k   dl/dy_k = scale (q_k sum_k' t_k' - t_k)
//
// per (s, b) row of this head's columns of `outputs` and `targets` (L, B, total). Errors: for a
// linear head, outputs whose sign differs from a nonzero target (the bit errors of the pattern
// task); for a softmax head, rows whose argmax differs from the target's. The metrics are written
// by the first head (`accumulate` = 0) and added to by the others.
//
// One workgroup; each lane takes whole rows (a head is narrow), then a tree reduction.

const METRIC_LOSS: u32 = 0u;
const METRIC_SIGN_ERRORS: u32 = 1u;
const METRIC_SIGN_COUNT: u32 = 2u;
const WORKGROUP_SIZE: u32 = 256u;

struct HeadLossParams {
    batch: u32,        // batch B
    n_loss_steps: u32, // L
    width: u32,        // K
    total: u32,        // row length of `outputs`, `targets` and `grads`
    col0: u32,         // this head's first column
    kind: u32,         // 0 linear (squared error), 1 softmax (cross-entropy)
    accumulate: u32,   // 0: write the metrics, 1: add to them
    loss_scale: f32,
}

@group(0) @binding(0) var<storage, read> p: HeadLossParams;
@group(0) @binding(1) var<storage, read> outputs: array<f32>;        // (L, B, total): y
@group(0) @binding(2) var<storage, read> targets: array<f32>;        // (L, B, total): t
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;    // (L, B, total): dl/dy, this head's columns written
@group(0) @binding(4) var<storage, read_write> metrics: array<f32>;  // (METRIC_COUNT)

var<workgroup> loss_sums: array<f32, WORKGROUP_SIZE>;
var<workgroup> error_sums: array<u32, WORKGROUP_SIZE>;
var<workgroup> count_sums: array<u32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn head_loss(@builtin(local_invocation_index) lane: u32) {
    var loss = 0.0;
    var errors = 0u;
    var count = 0u;
    for (var r = lane; r < p.n_loss_steps * p.batch; r += WORKGROUP_SIZE) {
        let base = r * p.total + p.col0;
        if (p.kind == 1u) {
            var top = outputs[base];
            var arg_y = 0u;
            var best_t = targets[base];
            var arg_t = 0u;
            var mass = 0.0;
            for (var k = 0u; k < p.width; k++) {
                let y = outputs[base + k];
                let t = targets[base + k];
                mass += t;
                if (y > top) {
                    top = y;
                    arg_y = k;
                }
                if (t > best_t) {
                    best_t = t;
                    arg_t = k;
                }
            }
            var z = 0.0;
            for (var k = 0u; k < p.width; k++) {
                z += exp(outputs[base + k] - top);
            }
            let log_z = top + log(z);
            for (var k = 0u; k < p.width; k++) {
                let y = outputs[base + k];
                let t = targets[base + k];
                loss -= t * (y - log_z);
                grads[base + k] = p.loss_scale * (exp(y - log_z) * mass - t);
            }
            count += 1u;
            if (arg_y != arg_t) {
                errors += 1u;
            }
        } else {
            for (var k = 0u; k < p.width; k++) {
                let y = outputs[base + k];
                let t = targets[base + k];
                let d = y - t;
                loss += d * d;
                grads[base + k] = 2.0 * p.loss_scale * d;
                if (t != 0.0) {
                    count += 1u;
                    if ((y > 0.0) != (t > 0.0)) {
                        errors += 1u;
                    }
                }
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
        var before = vec3<f32>(0.0);
        if (p.accumulate != 0u) {
            before = vec3<f32>(metrics[METRIC_LOSS], metrics[METRIC_SIGN_ERRORS], metrics[METRIC_SIGN_COUNT]);
        }
        metrics[METRIC_LOSS] = before.x + p.loss_scale * loss_sums[0];
        metrics[METRIC_SIGN_ERRORS] = before.y + f32(error_sums[0]);
        metrics[METRIC_SIGN_COUNT] = before.z + f32(count_sums[0]);
    }
}
