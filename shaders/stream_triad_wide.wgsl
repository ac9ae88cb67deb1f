// stream_triad_wide: stream_triad.wgsl with 32 bytes per access, for devices with 64-bit integers.
//
//   c[k] = a[k] + scale * b[k]          on eight floats per vec4<u64> element: reads 2 * 32 bytes
//                                       and writes 32 bytes per element
//
// Each u64 holds two f32 bit patterns (the lower float in the low 32 bits, as the bytes lie in
// memory), unpacked, added and packed again, so the arrays are plain f32 arrays to the host and the
// result is stream_triad's, float for float. The bench prints this figure beside stream_triad's:
// where a device's cost is per load instruction and lane rather than per byte (lavapipe's SSBO loads
// fetch each component of each lane on its own), a 64-bit component moves twice the bytes for the
// same cost, and this reads well above the 16-byte triad; on a GPU bound by its memory the two agree.
// The grid may be 2-D (more than 65535 workgroups), so the flat index is gid.x + gid.y * row_stride.

override WORKGROUP_SIZE: u32 = 256u;

struct StreamTriadParams {
    elements: u32,     // vec4<u64> elements per array (8 floats each)
    row_stride: u32,   // invocations per dispatch row
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> p: StreamTriadParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<u64>>;      // (elements, 8) f32
@group(0) @binding(2) var<storage, read> b: array<vec4<u64>>;      // (elements, 8) f32
@group(0) @binding(3) var<storage, read_write> c: array<vec4<u64>>; // (elements, 8) f32

// Floats 0-3 and 4-7 of an element.
fn low_quad(v: vec4<u64>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(u32(v.x), u32(v.x >> 32u), u32(v.y), u32(v.y >> 32u)));
}

fn high_quad(v: vec4<u64>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(u32(v.z), u32(v.z >> 32u), u32(v.w), u32(v.w >> 32u)));
}

fn pack_quads(low: vec4<f32>, high: vec4<f32>) -> vec4<u64> {
    let l = vec4<u64>(bitcast<vec4<u32>>(low));
    let h = vec4<u64>(bitcast<vec4<u32>>(high));
    return vec4<u64>(l.x | (l.y << 32u), l.z | (l.w << 32u), h.x | (h.y << 32u), h.z | (h.w << 32u));
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn stream_triad_wide(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x + gid.y * p.row_stride;
    if (k < p.elements) {
        let x = a[k];
        let y = b[k];
        c[k] = pack_quads(low_quad(x) + p.scale * low_quad(y), high_quad(x) + p.scale * high_quad(y));
    }
}
