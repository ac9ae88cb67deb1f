// host_inputs: an example host application's own pass, writing a pattern-memorisation episode
// straight into GPU buffers that the plasticity runtime then reads (no CPU round trip).
//
//   bit(b, p, j) = +-1 from a hash of (seed, episode, b, p, j)
//   steps t in block k < patterns:  u_j(t) = gain * bit(b, k, j) for the first `show` steps, then 0 for `gap`
//   last `show` steps:             u_j(t) = gain * bit(b, q, j) or 0 (each bit erased with probability 1/2),
//                                  q = the tested pattern;  target_j = bit(b, q, j)

struct Generate {
    n: u32,
    batch: u32,
    episode: u32,
    seed: u32,
    patterns: u32,
    show: u32,
    gap: u32,
    gain: f32,
}

@group(0) @binding(0) var<uniform> g: Generate;
@group(0) @binding(1) var<storage, read_write> inputs: array<f32>;  // (T, B, N), T = patterns * (show + gap) + show
@group(0) @binding(2) var<storage, read_write> targets: array<f32>; // (1, B, N)

fn hash(x: u32) -> u32 {
    // PCG-style integer hash.
    var h = x * 747796405u + 2891336453u;
    h = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
    return (h >> 22u) ^ h;
}

fn bit(b: u32, p: u32, j: u32) -> f32 {
    let h = hash(g.seed ^ hash(g.episode ^ hash(b ^ hash(p ^ hash(j)))));
    return select(-1.0, 1.0, (h & 1u) == 1u);
}

@compute @workgroup_size(64)
fn host_inputs(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let b = gid.y;
    if (j >= g.n || b >= g.batch) {
        return;
    }
    let row = g.batch * g.n;
    let block = g.show + g.gap;
    let tested = hash(g.seed ^ hash(g.episode ^ hash(b + 7919u))) % g.patterns;
    let kept = (hash(g.seed ^ hash(g.episode ^ hash(b ^ hash(j + 104729u)))) & 1u) == 1u;
    for (var t = 0u; t < g.patterns * block + g.show; t++) {
        var u = 0.0;
        let k = t / block;
        if (k < g.patterns) {
            if (t % block < g.show) {
                u = g.gain * bit(b, k, j);
            }
        } else if (kept) {
            u = g.gain * bit(b, tested, j);
        }
        inputs[t * row + b * g.n + j] = u;
    }
    targets[b * g.n + j] = bit(b, tested, j);
}
