// host_readout: an example host application's own pass reading the plastic network's activations
// in place, from the runtime's activation buffer (T + 1, B, N) f32, x(t) in row t:
//
//   correct[b] = #{ j : sign(x_j(T)) == sign(target_j) }

struct Readout {
    n: u32,
    batch: u32,
    last_row: u32,  // T
    _pad: u32,
}

@group(0) @binding(0) var<uniform> r: Readout;
@group(0) @binding(1) var<storage, read> activations: array<f32>; // (T + 1, B, N), the runtime's buffer
@group(0) @binding(2) var<storage, read> targets: array<f32>;     // (1, B, N)
@group(0) @binding(3) var<storage, read_write> correct: array<u32>; // (B)

@compute @workgroup_size(64)
fn host_readout(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= r.batch) {
        return;
    }
    var count = 0u;
    for (var j = 0u; j < r.n; j++) {
        let x = activations[(r.last_row * r.batch + b) * r.n + j];
        if ((x > 0.0) == (targets[b * r.n + j] > 0.0)) {
            count += 1u;
        }
    }
    correct[b] = count;
}
