// stream_triad: the memory-bandwidth ceiling that the bench compares the plastic kernels with.
//
//   c[k] = a[k] + scale * b[k]          reads 2 * 16 bytes and writes 16 bytes per vec4 element
//
// Arrays far larger than any cache make this a pure streaming test, the roofline for memory-bound
// kernels such as forward_step and backward_trace. Each invocation moves one vec4, as those kernels
// do: a scalar stream undercounts what the memory system can deliver wherever the cost is per
// access rather than per byte (lavapipe's per-lane loads are 4x slower per byte in f32 than in vec4;
// stream_triad_wide.wgsl measures 32-byte accesses where the device has 64-bit integers).
// The grid may be 2-D (more than 65535 workgroups), so the flat index is gid.x + gid.y * row_stride.

override WORKGROUP_SIZE: u32 = 256u;

struct StreamTriadParams {
    elements: u32,     // vec4 elements per array (4 floats each)
    row_stride: u32,   // invocations per dispatch row
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> p: StreamTriadParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;      // (elements, 4)
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;      // (elements, 4)
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>; // (elements, 4)

@compute @workgroup_size(WORKGROUP_SIZE)
fn stream_triad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x + gid.y * p.row_stride;
    if (k < p.elements) {
        c[k] = a[k] + p.scale * b[k];
    }
}
