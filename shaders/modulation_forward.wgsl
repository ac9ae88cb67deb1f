// modulation_forward: the neuromodulator of step t (Backpropamine), run right after forward_step(t).
//
//   M_b(t) = tanh(sum_k mod_w_k x_bk(t) + mod_b)
//
// Step t+1's forward_step reads M_b(t) as the rate of the trace update it fuses (or, fanned out,
// u_j M_b(t) + c_j). One invocation per batch element walks the N neurons: O(B N) work per step
// against the step's O(B N^2), so a serial sum costs nothing that matters.

const TANH_CLAMP: f32 = 15.0;

override WORKGROUP_SIZE: u32 = 64u;

struct ModulationForwardParams {
    n: u32,          // neurons N
    batch: u32,      // batch B
    step: u32,       // t, 1-based
    mod_offset: u32, // offset of [mod_w (N), mod_b, ...] in `params`
}

@group(0) @binding(0) var<storage, read> p: ModulationForwardParams;
@group(0) @binding(1) var<storage, read> params: array<f32>;            // flat parameters [w, alpha, eta, modulator]
@group(0) @binding(2) var<storage, read> activations: array<f32>;       // (T + 1, B, N): x(t) at row t
@group(0) @binding(3) var<storage, read_write> modulation: array<f32>;  // (T + 1, B): M_b(t) written at row t

@compute @workgroup_size(WORKGROUP_SIZE)
fn modulation_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= p.batch) {
        return;
    }
    let n = p.n;
    let x = (p.step * p.batch + b) * n;
    var drive = params[p.mod_offset + n];
    for (var k = 0u; k < n; k++) {
        drive += params[p.mod_offset + k] * activations[x + k];
    }
    modulation[p.step * p.batch + b] = tanh(clamp(drive, -TANH_CLAMP, TANH_CLAMP));
}
