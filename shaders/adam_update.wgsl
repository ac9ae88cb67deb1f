// adam_update: one Adam step over the flat parameter buffer, with optional clipping of the global
// gradient norm (as torch.nn.utils.clip_grad_norm_ followed by torch.optim.Adam):
//
//   norm  = sqrt(metrics[METRIC_GRAD_NORM_SQ]);  scale = clip / (norm + 1e-6) if clip > 0 and that is < 1, else 1
//   g     = scale * grads[k]
//   m     = beta1 * m + (1 - beta1) * g
//   v     = beta2 * v + (1 - beta2) * g^2
//   param -= lr * (m / bias1) / (sqrt(v / bias2) + eps)          bias1 = 1 - beta1^s, bias2 = 1 - beta2^s
//
// Elementwise; the dispatch may be 2-D when the buffer needs more than 65535 workgroups, so the flat
// index is gid.x + gid.y * row_stride.

const METRIC_GRAD_NORM_SQ: u32 = 3u;

override WORKGROUP_SIZE: u32 = 256u;

struct AdamParams {
    param_count: u32,
    row_stride: u32,   // invocations per dispatch row
    _pad0: u32,
    _pad1: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bias1: f32,
    bias2: f32,
    clip_norm: f32,    // 0 disables clipping
    _pad2: f32,
}

@group(0) @binding(0) var<storage, read> p: AdamParams;
@group(0) @binding(1) var<storage, read> grads: array<f32>;            // flat (P)
@group(0) @binding(2) var<storage, read> metrics: array<f32>;          // (METRIC_COUNT)
@group(0) @binding(3) var<storage, read_write> params: array<f32>;     // flat (P)
@group(0) @binding(4) var<storage, read_write> adam_m: array<f32>;     // flat (P)
@group(0) @binding(5) var<storage, read_write> adam_v: array<f32>;     // flat (P)

@compute @workgroup_size(WORKGROUP_SIZE)
fn adam_update(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x + gid.y * p.row_stride;
    if (k >= p.param_count) {
        return;
    }
    var scale = 1.0;
    if (p.clip_norm > 0.0) {
        let coef = p.clip_norm / (sqrt(metrics[METRIC_GRAD_NORM_SQ]) + 1e-6);
        if (coef < 1.0) {
            scale = coef;
        }
    }
    let g = scale * grads[k];
    let m = p.beta1 * adam_m[k] + (1.0 - p.beta1) * g;
    let v = p.beta2 * adam_v[k] + (1.0 - p.beta2) * g * g;
    adam_m[k] = m;
    adam_v[k] = v;
    params[k] -= p.lr * (m / p.bias1) / (sqrt(v / p.bias2) + p.eps);
}
