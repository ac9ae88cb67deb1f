//! WGSL kernels of the plastic recurrent step, one descriptor per kernel, and their CPU twins.
//!
//! Every kernel lives in `shaders/<name>.wgsl` with one compute entry point named like the file.
//! Its descriptor here lists the bindings (in order, with access) and the layout of its uniform
//! params struct; `tests/shader_layout.rs` parses each shader with naga and checks it against the
//! descriptor, so the Rust and WGSL sides cannot drift apart silently.
//!
//! [`cpu`] holds a plain twin of each kernel taking its buffers in binding order, and
//! [`mod@reference`] a whole-episode f64 forward and backward pass that stores every step, checked
//! against finite differences.
//!
//! Tensor layouts (all f32, row-major, last index fastest):
//! - flat parameters `[w (N, N), alpha (N, N), eta (1)]`, `w[i * N + j]` connects pre-synaptic `i`
//!   to post-synaptic `j`; the gradient buffer mirrors it.
//! - trace and trace gradient `(B, N, N)`; the history `(T + 1, B, N)` with `x(0) = 0` in row 0,
//!   holding the input `u(t)` in row `t` until step `t` overwrites it with `x(t)`; targets `(L, B, N)`.

pub mod cpu;
pub mod reference;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_grid_covers_every_element_once_within_limits() {
        for count in [1u32, 255, 256, 257, 65_535 * 256, 65_535 * 256 + 1, 300_000_000] {
            let (grid, stride) = elementwise_grid(count, 256);
            assert!(grid[0] <= 65_535 && grid[1] <= 65_535, "{count}: {grid:?}");
            assert_eq!(stride, grid[0] * 256);
            let covered = stride as u64 * grid[1] as u64;
            assert!(covered >= count as u64, "{count}: covers {covered}");
            assert!(covered - (count as u64) < stride as u64 + 256 * grid[1] as u64, "{count}: a whole spare row");
        }
    }
}

use bytemuck::{Pod, Zeroable};

/// How a kernel reads a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

/// One `@group(0) @binding(k)` of a kernel.
#[derive(Clone, Copy, Debug)]
pub struct BindingDesc {
    pub name: &'static str,
    pub kind: BindingKind,
}

/// Everything the runtime needs to build a kernel's pipeline, and the test needs to check it.
/// Binding 0 always holds the kernel's params struct.
#[derive(Clone, Copy, Debug)]
pub struct KernelDescriptor {
    /// File stem in `shaders/` and name of the compute entry point.
    pub name: &'static str,
    pub source: &'static str,
    /// Bindings of group 0 in binding order: `bindings[k]` is `@binding(k)`.
    pub bindings: &'static [BindingDesc],
    /// Name of the WGSL struct bound at binding 0 (the params, with a dynamic offset).
    pub params_struct: &'static str,
    /// `(field name, byte offset)` of the Rust params struct, in declaration order.
    pub params_layout: &'static [(&'static str, usize)],
    pub params_size: usize,
    /// Workgroup size the kernel is dispatched with (the WGSL default of any override).
    pub workgroup_size: [u32; 3],
}

impl KernelDescriptor {
    pub fn storage_binding_count(&self) -> usize {
        self.bindings.iter().filter(|b| b.kind != BindingKind::Uniform).count()
    }
}

/// Indices into the metrics buffer that kernels write and the host reads back.
pub mod metrics {
    pub const LOSS: usize = 0;
    pub const SIGN_ERRORS: usize = 1;
    pub const SIGN_COUNT: usize = 2;
    pub const GRAD_NORM_SQ: usize = 3;
    /// Written by a buffer copy after the optimizer step, so the host learns the new eta.
    pub const ETA: usize = 4;
    pub const COUNT: usize = 8;
}

macro_rules! layout_of {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        &[$((stringify!($field), core::mem::offset_of!($ty, $field))),*]
    };
}

/// Binding 0 of every kernel: its params struct, bound with a dynamic offset so that one buffer
/// holds the params of every step. Read-only storage rather than uniform: lavapipe specialises a
/// shader on the contents of its uniform buffers and would recompile it for every step.
const fn params(name: &'static str) -> BindingDesc {
    BindingDesc { name, kind: BindingKind::StorageRead }
}
const fn read(name: &'static str) -> BindingDesc {
    BindingDesc { name, kind: BindingKind::StorageRead }
}
const fn read_write(name: &'static str) -> BindingDesc {
    BindingDesc { name, kind: BindingKind::StorageReadWrite }
}

/// Workgroups to cover `count` invocations with groups of `size`.
pub fn div_ceil(count: u32, size: u32) -> u32 {
    count.div_ceil(size)
}

/// u32 words per (step, batch) row of a clamp mask over `n` neurons.
pub fn clamp_words(n: u32) -> u32 {
    div_ceil(n, 32)
}

/// Whether bit `j` of a clamp mask row is set.
pub fn is_clamped(row: &[u32], j: usize) -> bool {
    (row[j / 32] >> (j % 32)) & 1 != 0
}

/// Side of the square (i, j) block that one `backward_trace` invocation walks.
pub const TRACE_TILE: u32 = 16;

/// Number of per-tile partial sums each neuron gets from `backward_trace`.
pub fn trace_tiles(n: u32) -> u32 {
    div_ceil(n, TRACE_TILE)
}

/// Length of `backward_trace`'s partials buffer: row and column sums (2, B, N, tiles), then the
/// per-tile eta sums (tiles, tiles), which start at `2 * B * N * tiles`.
pub fn trace_partials_len(n: u32, batch: u32) -> usize {
    let tiles = trace_tiles(n) as usize;
    2 * batch as usize * n as usize * tiles + tiles * tiles
}

pub mod forward_step {
    use super::*;

    /// Batch elements one invocation carries (shares one read of w and alpha among them).
    pub const BATCH_TILE: u32 = 4;
    pub const WORKGROUP_SIZE: u32 = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct ForwardStepParams {
        pub n: u32,
        pub batch: u32,
        pub step: u32,
        pub w_offset: u32,
        pub alpha_offset: u32,
        pub eta_offset: u32,
        pub clamp_words: u32,
        pub _pad0: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "forward_step",
        source: include_str!("../../../shaders/forward_step.wgsl"),
        bindings: &[params("p"), read("params"), read_write("trace"), read_write("activations"), read("clamp_mask")],
        params_struct: "ForwardStepParams",
        params_layout: layout_of!(ForwardStepParams { n, batch, step, w_offset, alpha_offset, eta_offset, clamp_words, _pad0 }),
        params_size: core::mem::size_of::<ForwardStepParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
    };

    pub fn workgroups(n: u32, batch: u32) -> [u32; 3] {
        [div_ceil(n, WORKGROUP_SIZE), div_ceil(batch, BATCH_TILE), 1]
    }
}

pub mod backward_activation {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 64;
    /// `loss_slot` value for a step without a loss term.
    pub const LOSS_NONE: u32 = u32::MAX;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct BackwardActivationParams {
        pub n: u32,
        pub batch: u32,
        pub step: u32,
        pub n_tiles: u32,
        pub loss_slot: u32,
        pub loss_scale: f32,
        pub clamp_words: u32,
        pub _pad0: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "backward_activation",
        source: include_str!("../../../shaders/backward_activation.wgsl"),
        bindings: &[params("p"), read("activations"), read("targets"), read("partials"), read("clamp_mask"), read_write("preact_grad")],
        params_struct: "BackwardActivationParams",
        params_layout: layout_of!(BackwardActivationParams { n, batch, step, n_tiles, loss_slot, loss_scale, clamp_words, _pad0 }),
        params_size: core::mem::size_of::<BackwardActivationParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
    };

    pub fn workgroups(n: u32, batch: u32) -> [u32; 3] {
        [div_ceil(n, WORKGROUP_SIZE), batch, 1]
    }
}

pub mod backward_trace {
    use super::*;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct BackwardTraceParams {
        pub n: u32,
        pub batch: u32,
        pub step: u32,
        pub n_tiles: u32,
        pub w_offset: u32,
        pub alpha_offset: u32,
        pub eta_offset: u32,
        pub _pad0: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "backward_trace",
        source: include_str!("../../../shaders/backward_trace.wgsl"),
        bindings: &[
            params("p"),
            read("params"),
            read("activations"),
            read("preact_grad"),
            read_write("trace"),
            read_write("trace_grad"),
            read_write("grads"),
            read_write("partials"),
        ],
        params_struct: "BackwardTraceParams",
        params_layout: layout_of!(BackwardTraceParams { n, batch, step, n_tiles, w_offset, alpha_offset, eta_offset, _pad0 }),
        params_size: core::mem::size_of::<BackwardTraceParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
    };

    pub const WORKGROUP_SIZE: u32 = 64;

    /// One invocation per TRACE_TILE x TRACE_TILE block.
    pub fn workgroups(n: u32) -> [u32; 3] {
        let tiles = trace_tiles(n);
        [div_ceil(tiles, WORKGROUP_SIZE), tiles, 1]
    }
}

pub mod loss_mse {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 256;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct LossMseParams {
        pub n: u32,
        pub batch: u32,
        pub n_loss_steps: u32,
        pub loss_scale: f32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "loss_mse",
        source: include_str!("../../../shaders/loss_mse.wgsl"),
        bindings: &[params("p"), read("activations"), read("targets"), read("loss_steps"), read_write("metrics")],
        params_struct: "LossMseParams",
        params_layout: layout_of!(LossMseParams { n, batch, n_loss_steps, loss_scale }),
        params_size: core::mem::size_of::<LossMseParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
    };
}

pub mod finish_gradients {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 256;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct FinishGradientsParams {
        pub param_count: u32,
        pub eta_offset: u32,
        pub eta_partials_offset: u32,
        pub n_eta_partials: u32,
        pub learn_eta: u32,
        pub frozen_begin: u32,
        pub frozen_end: u32,
        pub _pad0: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "finish_gradients",
        source: include_str!("../../../shaders/finish_gradients.wgsl"),
        bindings: &[params("p"), read("partials"), read_write("grads"), read_write("metrics")],
        params_struct: "FinishGradientsParams",
        params_layout: layout_of!(FinishGradientsParams {
            param_count,
            eta_offset,
            eta_partials_offset,
            n_eta_partials,
            learn_eta,
            frozen_begin,
            frozen_end,
            _pad0
        }),
        params_size: core::mem::size_of::<FinishGradientsParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
    };
}

pub mod adam_update {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 256;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct AdamParams {
        pub param_count: u32,
        pub row_stride: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub lr: f32,
        pub beta1: f32,
        pub beta2: f32,
        pub eps: f32,
        pub bias1: f32,
        pub bias2: f32,
        pub clip_norm: f32,
        pub _pad2: f32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "adam_update",
        source: include_str!("../../../shaders/adam_update.wgsl"),
        bindings: &[params("p"), read("grads"), read("metrics"), read_write("params"), read_write("adam_m"), read_write("adam_v")],
        params_struct: "AdamParams",
        params_layout: layout_of!(AdamParams {
            param_count,
            row_stride,
            _pad0,
            _pad1,
            lr,
            beta1,
            beta2,
            eps,
            bias1,
            bias2,
            clip_norm,
            _pad2
        }),
        params_size: core::mem::size_of::<AdamParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
    };

    /// The grid covering `count` parameters, and its row stride.
    pub fn grid(count: u32) -> ([u32; 3], u32) {
        elementwise_grid(count, WORKGROUP_SIZE)
    }
}

pub mod stream_triad {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 256;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct StreamTriadParams {
        pub count: u32,
        pub row_stride: u32,
        pub scale: f32,
        pub _pad0: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "stream_triad",
        source: include_str!("../../../shaders/stream_triad.wgsl"),
        bindings: &[params("p"), read("a"), read("b"), read_write("c")],
        params_struct: "StreamTriadParams",
        params_layout: layout_of!(StreamTriadParams { count, row_stride, scale, _pad0 }),
        params_size: core::mem::size_of::<StreamTriadParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
    };
}

/// A 1-D or, past 65535 workgroups, 2-D grid of `workgroup_size`-wide groups covering `count`
/// elements, and its row stride (invocations per grid row).
pub fn elementwise_grid(count: u32, workgroup_size: u32) -> ([u32; 3], u32) {
    const MAX_GROUPS_PER_DIMENSION: u32 = 65_535;
    let groups = div_ceil(count.max(1), workgroup_size);
    if groups <= MAX_GROUPS_PER_DIMENSION {
        ([groups, 1, 1], groups * workgroup_size)
    } else {
        let rows = div_ceil(groups, MAX_GROUPS_PER_DIMENSION);
        let cols = div_ceil(groups, rows);
        ([cols, rows, 1], cols * workgroup_size)
    }
}

/// Every kernel, for pipeline creation and the layout test.
pub const ALL_KERNELS: &[KernelDescriptor] = &[
    forward_step::KERNEL,
    backward_activation::KERNEL,
    backward_trace::KERNEL,
    loss_mse::KERNEL,
    finish_gradients::KERNEL,
    adam_update::KERNEL,
    stream_triad::KERNEL,
];
