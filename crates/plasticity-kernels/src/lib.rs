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
//! - flat parameters `[w (N, N), alpha, eta, modulator]`, `w[i * N + j]` connects pre-synaptic `i`
//!   to post-synaptic `j`; alpha, eta and the modulator have the lengths [`Plasticity`] gives them
//!   (the paper's rule: alpha (N, N), eta (1), no modulator); the gradient buffer mirrors it.
//! - trace and trace gradient `(B, N, N)` (then the eligibility trace and its gradient, retroactive), each N x N
//!   block stored in the order [`TraceLayout`] gives (rows whole, or columns in stripes); the history `(T + 1, B, N)` with `x(0) = 0` in row 0,
//!   holding the input `u(t)` in row `t` until step `t` overwrites it with `x(t)`; targets `(L, B, N)`.

pub mod cpu;
pub mod plasticity;
pub mod reference;
pub mod trace_layout;

pub use plasticity::{AlphaShape, EtaShape, Modulation, Plasticity, Rule};
pub use trace_layout::TraceLayout;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_gradient_windows_cover_every_step_once_in_ring_order() {
        assert_eq!(weight_gradient::windows(50, 16), vec![(1, 16), (17, 16), (33, 16), (49, 2)]);
        assert_eq!(weight_gradient::windows(32, 16), vec![(1, 16), (17, 16)]);
        assert_eq!(weight_gradient::windows(5, 16), vec![(1, 5)]);
        assert_eq!(weight_gradient::windows(1, 1), vec![(1, 1)]);
        // A window's steps sit in ring slots 0 .. S - 1.
        let pl = PartialsLayout::new(8, 3, &Plasticity::PAPER, 1, TRACE_TILE, 16);
        for (first, steps) in weight_gradient::windows(50, 16) {
            for k in 0..steps {
                assert_eq!(pl.ga_of_step(8, 3, first + k), pl.ga_ring + k * 3 * 8, "step {}", first + k);
            }
        }
    }

    /// Walks the sweep with the slot's content as a step number: every step must find H(t) or, when
    /// `ahead`, H(t + 1), never further, whatever the resets, and G(t + 1) or, when `grad_ahead`,
    /// G(t + 2); the alternate schedule stores each at most every other step, and the every-step one
    /// is never ahead.
    #[test]
    fn reversal_schedule_finds_each_steps_trace_at_most_one_step_ahead() {
        for steps in [1u32, 2, 3, 4, 7, 106] {
            for checkpoints in [vec![], vec![2], vec![3], vec![4, 7], (2..steps).collect::<Vec<_>>()] {
                let resets = |s: u32| s == 1 || checkpoints.contains(&s);
                for every_step in [false, true] {
                    let schedule = backward_trace::reversal_schedule(steps, resets, every_step);
                    let what = format!("T={steps} checkpoints {checkpoints:?} every step {every_step}");
                    assert_eq!(schedule.len(), steps as usize, "{what}");
                    let mut slot = steps; // the forward pass leaves H(T)
                    let mut grad_slot = steps + 1; // the sweep starts from G(T + 1) = 0
                    for t in (1..=steps).rev() {
                        let step = schedule[t as usize - 1];
                        assert_eq!(slot, t + step.ahead as u32, "{what}: step {t} finds H({slot}), ahead = {}", step.ahead);
                        let wanted = t + 1 + step.grad_ahead as u32;
                        assert_eq!(grad_slot, wanted, "{what}: step {t} finds G({grad_slot}), grad_ahead = {}", step.grad_ahead);
                        if !step.skip_grad_store {
                            grad_slot = t;
                        }
                        if t >= 2 && !step.skip_store {
                            slot = t - 1;
                        }
                        if t >= 2 && resets(t - 1) {
                            assert!(step.skip_store, "{what}: step {t} stores H({}) that the reset overwrites", t - 1);
                            slot = t - 1;
                        }
                    }
                    let stores = schedule.iter().filter(|s| !s.skip_store).count() as u32;
                    let grad_stores = schedule.iter().filter(|s| !s.skip_grad_store).count() as u32;
                    if every_step {
                        assert!(schedule.iter().all(|s| !s.ahead && !s.grad_ahead), "{what}");
                        assert_eq!(stores, (1..steps).filter(|&s| !resets(s)).count() as u32, "{what}");
                        assert_eq!(grad_stores, steps - 1, "{what}");
                    } else {
                        assert!(stores <= steps / 2, "{what}: {stores} stores");
                        assert!(grad_stores <= steps / 2, "{what}: {grad_stores} gradient stores");
                    }
                }
            }
        }
        // Without checkpoints, T = 6: steps 6 and 4 leave H(t) for 5 and 3 to recover; 2 stores nothing
        // (the sweep clears H(1)). Steps 6, 4 and 2 leave G(t + 1) for 5, 3 and 1; 1 stores nothing.
        let flags: Vec<(bool, bool, bool, bool)> = backward_trace::reversal_schedule(6, |s| s == 1, false)
            .iter()
            .map(|s| (s.ahead, s.skip_store, s.grad_ahead, s.skip_grad_store))
            .collect();
        let (f, t) = (false, true);
        assert_eq!(flags, [(f, t, t, t), (f, t, f, t), (t, f, t, f), (f, t, f, t), (t, f, t, f), (f, t, f, t)]);
    }

    #[test]
    fn each_batch_group_adds_per_group_len_to_the_partials() {
        let modulated = Plasticity { modulation: Modulation::Simple, alpha: AlphaShape::PerNeuron, ..Plasticity::PAPER };
        for spec in [Plasticity::PAPER, modulated] {
            for n in [1u32, 17, 64, 65] {
                for tile in TRACE_TILE_SIDES {
                    for groups in 2..5 {
                        let len = |z: u32| PartialsLayout::new(n, 9, &spec, z, tile, 16).len;
                        let added = len(groups + 1) - len(groups);
                        let what = format!("N={n} tile {tile} Z={groups} {spec:?}: {added} floats");
                        assert!(added.abs_diff(PartialsLayout::per_group_len(n, tile)) < 4, "{what}");
                    }
                }
            }
        }
    }

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
    /// Whether the kernel applies the plasticity rule, selected by the override constants of
    /// [`Plasticity::constants`] (one pipeline per rule).
    pub rule_constants: bool,
    /// Whether every loop of the shader is a counted `for` loop that must end: its counter goes up by
    /// 1 (or by a step of at least 1 below a bound of at most a batch) towards a bound the body cannot
    /// change, or halves down to 0 (`shader_layout`'s `counted_loops_end` test checks the shapes). The
    /// runtime then builds it without wgpu's loop bounding, a 64-bit counter in every loop that proves
    /// to downstream compilers that the loop ends: without it a training episode takes 1-15% less time
    /// on lavapipe (`cargo bench --bench loop_bounding`). False for the reductions that stride by a
    /// workgroup (`k += WORKGROUP_SIZE`), whose end rests on their bound staying clear of `u32::MAX`.
    pub counted_loops: bool,
    /// Whether the shader uses subgroup operations (`wgpu::Features::SUBGROUP`): the runtime builds it
    /// only on a device with that feature, and `shader_layout` validates it with naga's subgroup
    /// capabilities.
    pub subgroups: bool,
    /// Whether the shader uses 64-bit integers (`wgpu::Features::SHADER_INT64`): likewise built only
    /// on a device with that feature and validated with naga's `SHADER_INT64` capability.
    pub int64: bool,
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

/// Whether a network of N neurons whose w and alpha sit at these offsets of the flat parameters runs
/// the vec4 rule kernels (`forward_step_vec4`, `backward_trace_vec4`, `trace_update_vec4`): every
/// row of the traces, the history, w, alpha and their gradients is then a whole number of vec4, and
/// so is every trace slot's offset. One decision for all three, so the step kernels never mix.
pub fn uses_vec4_kernels(n: u32, w_offset: u32, alpha_offset: u32) -> bool {
    n.is_multiple_of(4) && w_offset.is_multiple_of(4) && alpha_offset.is_multiple_of(4)
}

/// Side of the square (i, j) block that one `backward_trace` invocation walks by default (the
/// shaders' TILE default; the runtime's choice unless `KernelTuning::backward_tile` sets another).
pub const TRACE_TILE: u32 = 16;

/// The largest block side: the shaders' arrays of column sums hold TRACE_TILE_MAX columns
/// (their TILE_MAX, and TILE_QUADS_MAX quads).
pub const TRACE_TILE_MAX: u32 = 16;

/// Every block side backward_trace can take: multiples of 4 (the vec4 kernel takes its rows four at
/// a time and its columns as quads) up to TRACE_TILE_MAX. A side of s gives ceil(N / s)^2 invocations
/// per batch group, each writing one partial per row and column: a smaller side gives a GPU more
/// invocations in flight for O(B N^2 / s) more partials traffic.
pub const TRACE_TILE_SIDES: [u32; 3] = [4, 8, 16];
// Every side fits the shaders' arrays and is whole quads.
const _: () = {
    let mut k = 0;
    while k < TRACE_TILE_SIDES.len() {
        assert!(TRACE_TILE_SIDES[k] <= TRACE_TILE_MAX && TRACE_TILE_SIDES[k].is_multiple_of(4));
        k += 1;
    }
};

/// Number of per-tile partial sums each neuron gets from `backward_trace` with blocks of side `tile`:
/// the grid's tiles along each axis.
pub fn trace_tiles(n: u32, tile: u32) -> u32 {
    div_ceil(n, tile)
}

/// Invocations of a warp on most GPUs (the backward trace shaders' LANES): rows of blocks at least
/// this wide start on whole multiples of it ([`backward_trace::block_row_width`]), and on a GPU this
/// many invocations interleave their columns ([`trace_column_owner`]).
pub const TRACE_LANES: u32 = 32;

/// Which backward_trace invocation along x owns column j with blocks of side `tile` when
/// `column_lanes` invocations interleave their columns (the shaders' COLUMN_LANES): `(slot,
/// first_column)`, its index along x (the row partial it writes) and its first column. Columns come
/// in units of `width`: 1 for backward_trace, 4 (quads) for backward_trace_vec4. Column group g
/// covers units `[g * L * TILE / width, + L * TILE / width)` for L = `column_lanes`; of its lanes
/// (L, or fewer in a narrower last group), lane l owns units l, l + L', l + 2L', ... of the group (L'
/// its lane count), so neighbouring lanes touch neighbouring elements. With `column_lanes` = 1 each
/// invocation owns `tile / width` consecutive units.
pub fn trace_column_owner(n: u32, j: u32, width: u32, tile: u32, column_lanes: u32) -> (u32, u32) {
    let per_lane = tile / width;
    let span = column_lanes * per_lane;
    let (units, unit) = (div_ceil(n, width), j / width);
    let start = unit / span * span;
    let lanes = div_ceil((units - start).min(span), per_lane);
    let lane = (unit - start) % lanes;
    (start / per_lane + lane, (start + lane) * width)
}

/// Where each kind of partial sum sits in the backward sweep's `partials` buffer (f32 elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialsLayout {
    /// Tiles along each axis of the backward_trace grid, `trace_tiles(N, tile)`: the partial sums
    /// each neuron gets per batch element.
    pub tiles: u32,
    /// (B, tiles, N) row sums for gx(t-1), at 0; then (B, tiles, N) column sums, overwritten each step.
    pub cols: u32,
    /// (B, tiles, N) drate(t-1) per tile of i, overwritten each step; empty unless the rate is modulated.
    pub rate: u32,
    /// (Z, tiles, N) eta sums per batch group, tile of i and post neuron, accumulated over the sweep
    /// (one eta: each tile's whole sum at its first column, the rest zero).
    pub eta: u32,
    /// (N, N) dalpha accumulator; empty when alpha is per connection (it goes straight to the
    /// gradient) or when there are batch groups (they use `group_grads`).
    pub alpha: u32,
    /// (Z, N, N) dalpha of each of Z > 1 batch groups of backward_trace, accumulated over the sweep;
    /// empty for one group. (dw is not per group: weight_gradient forms it from the ga ring.)
    pub group_grads: u32,
    /// Z, the batch groups of backward_trace.
    pub groups: u32,
    /// (B, modulator_len) modulator gradient accumulators; empty unless modulated.
    pub modulator: u32,
    /// (B) dM (1 - M^2) of the current step; empty unless modulated.
    pub mod_grad: u32,
    /// (K, B, N) ga(s), the pre-activation gradients of the last K steps of the sweep: step s in
    /// slot (s - 1) mod K, K = `ga_window` (see [`weight_gradient`]). Starts on a multiple of 4.
    pub ga_ring: u32,
    /// K, the steps of one weight_gradient window.
    pub ga_window: u32,
    /// (L, B, N) dl/dx at the loss steps through the output heads; empty without heads.
    pub loss_grad: u32,
    pub len: u32,
}

impl PartialsLayout {
    /// The layout for `groups` batch groups of backward_trace (1: none) walking blocks of side `tile`,
    /// and a ga ring of `ga_window` steps (at least 1).
    pub fn new(n: u32, batch: u32, spec: &Plasticity, groups: u32, tile: u32, ga_window: u32) -> Self {
        let groups = groups.max(1);
        let ga_window = ga_window.max(1);
        let tiles = trace_tiles(n, tile);
        let per_step = batch * n * tiles;
        let modulated = spec.modulated();
        let cols = per_step;
        let rate = cols + per_step;
        let eta = rate + if modulated { per_step } else { 0 };
        let alpha = eta + groups * tiles * n;
        let group_grads = alpha + if spec.alpha == AlphaShape::PerConnection || groups > 1 { 0 } else { n * n };
        let modulator = group_grads + if groups > 1 { groups * n * n } else { 0 };
        let mod_grad = modulator + batch * spec.modulator_len(n);
        // ga starts on a multiple of 4 floats, for the vec4 kernels' reads.
        let ga_ring = (mod_grad + if modulated { batch } else { 0 }).next_multiple_of(4);
        let loss_grad = ga_ring + ga_window * batch * n;
        Self { tiles, cols, rate, eta, alpha, group_grads, groups, modulator, mod_grad, ga_ring, ga_window, loss_grad, len: loss_grad }
    }

    /// Floats each batch group adds to the layout when there are several: its (N, N) dalpha and its
    /// (tiles, N) eta sums (give or take the up to 3 floats that keep the ga ring on a multiple of 4).
    pub fn per_group_len(n: u32, tile: u32) -> u32 {
        n * n + trace_tiles(n, tile) * n
    }

    /// Offset of ga(s) (B, N), step s (1-based) of the sweep, in the ring.
    pub fn ga_of_step(&self, n: u32, batch: u32, step: u32) -> u32 {
        self.ga_ring + (step - 1) % self.ga_window * batch * n
    }

    /// Adds the (L, B, N) loss gradient of output heads read at `loss_steps` steps.
    pub fn with_heads(mut self, n: u32, batch: u32, loss_steps: u32) -> Self {
        self.len = self.loss_grad + loss_steps * batch * n;
        self
    }
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
        pub mod_offset: u32,
        pub clamp_words: u32,
        pub elig_offset: u32,
        /// S: chunks of the sum over i, each its own invocation (0 or 1: no split, x(t) written here).
        pub splits: u32,
        /// i per chunk when S > 1.
        pub split_len: u32,
        pub _pad0: u32,
    }

    const BINDINGS: [BindingDesc; 7] = [
        params("p"),
        read("params"),
        read_write("trace"),
        read_write("activations"),
        read("clamp_mask"),
        read("modulation"),
        read_write("partial_sums"),
    ];

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "forward_step",
        source: include_str!("../../../shaders/forward_step.wgsl"),
        bindings: &BINDINGS,
        params_struct: "ForwardStepParams",
        params_layout: layout_of!(ForwardStepParams {
            n,
            batch,
            step,
            w_offset,
            alpha_offset,
            eta_offset,
            mod_offset,
            clamp_words,
            elig_offset,
            splits,
            split_len,
            _pad0
        }),
        params_size: core::mem::size_of::<ForwardStepParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: true,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    /// The same step with vec4 access for N a multiple of 4 (see `uses_vec4_kernels`): forward_step's
    /// bindings plus the parameters again, as vec4, for w and alpha. Its twin is `cpu::forward_step`.
    pub const KERNEL_VEC4: KernelDescriptor = KernelDescriptor {
        name: "forward_step_vec4",
        source: include_str!("../../../shaders/forward_step_vec4.wgsl"),
        bindings: &[BINDINGS[0], BINDINGS[1], BINDINGS[2], BINDINGS[3], BINDINGS[4], BINDINGS[5], BINDINGS[6], read("params_vec4")],
        ..KERNEL
    };

    /// forward_step_vec4 with the history's pre-synaptic quads shared through subgroup shuffles
    /// instead of loaded by every invocation (`wgpu::Features::SUBGROUP`; full subgroups, see
    /// `KernelTuning::forward_subgroups`). Same bindings, same results bit for bit; its twin is
    /// `cpu::forward_step`.
    pub const KERNEL_VEC4_SUBGROUP: KernelDescriptor = KernelDescriptor {
        name: "forward_step_vec4_subgroup",
        source: include_str!("../../../shaders/forward_step_vec4_subgroup.wgsl"),
        subgroups: true,
        ..KERNEL_VEC4
    };

    /// The kernel that runs a step (see `uses_vec4_kernels`); `subgroups` picks the subgroup form of
    /// the vec4 kernel.
    pub fn kernel_name(vec4: bool, subgroups: bool) -> &'static str {
        match (vec4, subgroups) {
            (false, _) => KERNEL.name,
            (true, false) => KERNEL_VEC4.name,
            (true, true) => KERNEL_VEC4_SUBGROUP.name,
        }
    }

    /// Override constant of both widths: invocations per workgroup, WORKGROUP_SIZE unless the
    /// runtime's tuning chooses otherwise (see `KernelTuning::forward_workgroup`).
    pub const WORKGROUP_SIZE_OVERRIDE: &str = "WORKGROUP_SIZE";

    /// The grid of a step split into `splits` chunks (1: not split) in workgroups of
    /// `workgroup_size`; with `vec4`, an invocation per `column_quads` neighbouring quads of
    /// neurons (1 to [`MAX_COLUMN_QUADS`]; the scalar kernel takes one neuron and ignores it).
    pub fn workgroups(n: u32, batch: u32, splits: u32, vec4: bool, workgroup_size: u32, column_quads: u32) -> [u32; 3] {
        let columns = if vec4 { div_ceil(div_ceil(n, 4), column_quads.clamp(1, MAX_COLUMN_QUADS)) } else { n };
        [div_ceil(columns, workgroup_size.max(1)), div_ceil(batch, BATCH_TILE), splits.max(1)]
    }

    /// Override constant of the vec4 kernels: neighbouring column quads one invocation owns, 1 (the
    /// default: neighbouring invocations read neighbouring quads, as a GPU's loads coalesce) to
    /// [`MAX_COLUMN_QUADS`] (each lane's quads of a row one run; see
    /// `KernelTuning::forward_column_quads`).
    pub const COLUMN_QUADS: &str = "COLUMN_QUADS";

    /// The most column quads one invocation of a vec4 kernel may own: a 64-byte cache line of a row.
    /// The kernels hold each owned quad's tile and sums in a struct member of its own (a loop over
    /// them would not unroll on lavapipe), so a larger value needs more of those written out.
    pub const MAX_COLUMN_QUADS: u32 = 4;

    /// Override constant of both widths: how many batch elements their unrolled tile loops take,
    /// [`batch_slots`]. Its default, BATCH_TILE, is right for any batch.
    pub const BATCH_SLOTS: &str = "BATCH_SLOTS";

    /// min(B, BATCH_TILE): a batch smaller than the tile needs no more unrolled iterations, each of
    /// which lavapipe runs even when it skips every element (at B = 1 the step took about 1.6x longer).
    pub fn batch_slots(batch: u32) -> u32 {
        batch.clamp(1, BATCH_TILE)
    }

    /// The override constants, beyond the rule's, of the kernel that runs a step of batch B (a vec4
    /// one with `vec4`, each invocation owning `column_quads` quads) in workgroups of `workgroup_size`.
    pub fn constants(vec4: bool, batch: u32, workgroup_size: u32, column_quads: u32) -> Vec<(&'static str, f64)> {
        let mut constants = vec![(WORKGROUP_SIZE_OVERRIDE, workgroup_size as f64), (BATCH_SLOTS, batch_slots(batch) as f64)];
        if vec4 {
            constants.push((COLUMN_QUADS, column_quads as f64));
        }
        constants
    }

    /// `(splits, split_len)` for at most `splits` chunks of the sum over N pre-synaptic neurons:
    /// chunks of equal length, none empty.
    pub fn split(n: u32, splits: u32) -> (u32, u32) {
        let split_len = div_ceil(n, splits.clamp(1, n.max(1)));
        (div_ceil(n, split_len), split_len)
    }
}

pub mod forward_finish {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct ForwardFinishParams {
        pub n: u32,
        pub batch: u32,
        pub step: u32,
        pub splits: u32,
        pub clamp_words: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "forward_finish",
        source: include_str!("../../../shaders/forward_finish.wgsl"),
        bindings: &[params("p"), read("partial_sums"), read_write("activations"), read("clamp_mask")],
        params_struct: "ForwardFinishParams",
        params_layout: layout_of!(ForwardFinishParams { n, batch, step, splits, clamp_words, _pad0, _pad1, _pad2 }),
        params_size: core::mem::size_of::<ForwardFinishParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    pub fn workgroups(n: u32, batch: u32) -> [u32; 3] {
        [div_ceil(n, WORKGROUP_SIZE), batch, 1]
    }
}

pub mod backward_activation {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 64;
    /// `loss_slot` value for a step without a loss term.
    pub const LOSS_NONE: u32 = u32::MAX;
    /// `mod_grad_offset` value when the network is not neuromodulated.
    pub const MOD_NONE: u32 = u32::MAX;

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
        pub mod_offset: u32,
        pub mod_grad_offset: u32,
        pub preact_offset: u32,
        pub loss_grad_offset: u32,
        pub _pad1: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "backward_activation",
        source: include_str!("../../../shaders/backward_activation.wgsl"),
        bindings: &[params("p"), read("activations"), read("targets"), read("clamp_mask"), read("params"), read_write("partials")],
        params_struct: "BackwardActivationParams",
        params_layout: layout_of!(BackwardActivationParams {
            n,
            batch,
            step,
            n_tiles,
            loss_slot,
            loss_scale,
            clamp_words,
            mod_offset,
            mod_grad_offset,
            preact_offset,
            loss_grad_offset,
            _pad1
        }),
        params_size: core::mem::size_of::<BackwardActivationParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: true,
        subgroups: false,
        int64: false,
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
        pub mod_offset: u32,
        pub cur_offset: u32,
        pub prev_offset: u32,
        pub elig_offset: u32,
        pub alpha_grad_offset: u32,
        pub rate_partials_offset: u32,
        pub eta_partials_offset: u32,
        pub preact_offset: u32,
        /// Z batch groups (0 or 1: one group walks the whole batch).
        pub groups: u32,
        /// Offset of the groups' (Z, N, N) dalpha accumulators in `partials` when Z > 1.
        pub group_grad_offset: u32,
        /// REVERSE: 1 when the slot holds H(t+1) instead of H(t) (the step after did not store), which
        /// the step recovers first by the same inversion ([`reversal_schedule`]).
        pub trace_ahead: u32,
        /// REVERSE: 1 to leave the slot as it is instead of writing H(t-1) over it.
        pub skip_store: u32,
        /// REVERSE: 1 when `trace_grad` holds G(t+2) instead of G(t+1) (the step after did not store),
        /// which the step recovers first by step t+1's own update of it ([`reversal_schedule`]).
        pub grad_ahead: u32,
        /// REVERSE: 1 to leave `trace_grad` as it is instead of writing G(t) over it.
        pub skip_grad_store: u32,
        /// Offset of ga(t+1) (B, N) in `partials`, which a step with `grad_ahead` reads.
        pub next_preact_offset: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "backward_trace",
        source: include_str!("../../../shaders/backward_trace.wgsl"),
        bindings: &[
            params("p"),
            read("params"),
            read("activations"),
            read("modulation"),
            read_write("trace"),
            read_write("trace_grad"),
            read_write("grads"),
            read_write("partials"),
        ],
        params_struct: "BackwardTraceParams",
        params_layout: layout_of!(BackwardTraceParams {
            n,
            batch,
            step,
            n_tiles,
            w_offset,
            alpha_offset,
            eta_offset,
            mod_offset,
            cur_offset,
            prev_offset,
            elig_offset,
            alpha_grad_offset,
            rate_partials_offset,
            eta_partials_offset,
            preact_offset,
            groups,
            group_grad_offset,
            trace_ahead,
            skip_store,
            grad_ahead,
            skip_grad_store,
            next_preact_offset
        }),
        params_size: core::mem::size_of::<BackwardTraceParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: true,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    /// The same step with vec4 access to the traces for N a multiple of 4 (see `uses_vec4_kernels`), and the
    /// same bindings. Its twin is `cpu::backward_trace` with quad columns.
    pub const KERNEL_VEC4: KernelDescriptor =
        KernelDescriptor { name: "backward_trace_vec4", source: include_str!("../../../shaders/backward_trace_vec4.wgsl"), ..KERNEL };

    /// The kernel that runs a backward step (see `uses_vec4_kernels`).
    pub fn kernel_name(vec4: bool) -> &'static str {
        if vec4 { KERNEL_VEC4.name } else { KERNEL.name }
    }

    /// Width of the column units one lane owns, for `trace_column_owner`.
    pub fn column_width(vec4: bool) -> u32 {
        if vec4 { 4 } else { 1 }
    }

    /// Override constant: recover H(t-1) by inverting the update (else read it from the previous slot).
    pub const REVERSE: &str = "REVERSE";

    /// Override constant of both widths, with REVERSE: compile in the recovery of G(t+1) that a step
    /// with `grad_ahead` makes (off when every step stores the gradient, to free its registers).
    pub const GRAD_AHEAD: &str = "GRAD_AHEAD";

    /// Invocations per workgroup on a GPU (the runtime's default there; see
    /// `KernelTuning::backward_workgroup`).
    pub const WORKGROUP_SIZE: u32 = 64;

    /// Override constant of both widths: invocations per workgroup.
    pub const WORKGROUP_SIZE_OVERRIDE: &str = "WORKGROUP_SIZE";

    /// Batch elements one invocation handles per pass over its block (the shader's CHUNK).
    pub const CHUNK: u32 = 4;

    /// Override constant of both widths: batch elements per pass, [`batch_slots`]. Its
    /// default, CHUNK, is right for any batch.
    pub const BATCH_SLOTS: &str = "BATCH_SLOTS";

    /// min(CHUNK, ceil(B / Z)), the most batch elements one of Z groups has: fewer than CHUNK need
    /// fewer unrolled iterations, which lavapipe runs even when they skip every element. The default;
    /// any value from 1 to CHUNK gives the same results (fewer elements per pass, more passes, and
    /// fewer registers per invocation).
    pub fn batch_slots(batch: u32, groups: u32) -> u32 {
        div_ceil(batch.max(1), groups.max(1)).clamp(1, CHUNK)
    }

    /// Override constant of the vec4 kernel: load each column quad's x_j(t), ga_j(t) and x_j(t-1)
    /// once per pass instead of once per four rows (more registers, fewer loads; the same results).
    pub const HOIST_COLUMNS: &str = "HOIST_COLUMNS";

    /// Override constant of both widths: the side of the block one invocation walks, one of
    /// [`crate::TRACE_TILE_SIDES`] (default [`crate::TRACE_TILE`]).
    pub const TILE: &str = "TILE";

    /// Override constant of both widths: invocations that interleave their columns (see
    /// [`crate::trace_column_owner`]); default [`crate::TRACE_LANES`], 1 for contiguous columns.
    pub const COLUMN_LANES: &str = "COLUMN_LANES";

    /// The most invocations that may interleave their columns (`KernelTuning::backward_column_lanes`):
    /// a warp of 64 on some GPUs.
    pub const MAX_COLUMN_LANES: u32 = 64;

    /// The override constants, beyond the rule's, of the kernel that runs a backward step (the vec4
    /// one with `vec4`) in workgroups of `workgroup_size`, with `slots` (1 to CHUNK) batch elements
    /// per pass over blocks of side `tile` (one of TRACE_TILE_SIDES), the gradient's recovery compiled
    /// in with `grad_ahead`, `column_lanes` invocations interleaving their columns (1 to
    /// MAX_COLUMN_LANES) and, in the vec4 kernel, the column values hoisted or not.
    #[allow(clippy::too_many_arguments)]
    pub fn constants(
        vec4: bool,
        workgroup_size: u32,
        reverse: bool,
        slots: u32,
        tile: u32,
        grad_ahead: bool,
        column_lanes: u32,
        hoist_columns: bool,
    ) -> Vec<(&'static str, f64)> {
        let mut constants = vec![
            (WORKGROUP_SIZE_OVERRIDE, workgroup_size as f64),
            (REVERSE, reverse as u32 as f64),
            (BATCH_SLOTS, slots as f64),
            (TILE, tile as f64),
            (GRAD_AHEAD, grad_ahead as u32 as f64),
            (COLUMN_LANES, column_lanes as f64),
        ];
        if vec4 {
            constants.push((HOIST_COLUMNS, hoist_columns as u32 as f64));
        }
        constants
    }

    /// One invocation per `tile` x `tile` block and batch group, in workgroups of `workgroup_size`.
    /// The blocks are numbered row by row, block (i, j) by invocation i w + j of the flat index
    /// gid.x + gid.y (grid width) ([`crate::elementwise_grid`]), w = [`block_row_width`], so that the
    /// invocations of a SIMD group or warp take consecutive blocks however few blocks a row has (a
    /// row of 4 blocks left half of lavapipe's 8 lanes idle at N = 64); the batch groups are the
    /// grid's z.
    pub fn workgroups(n: u32, groups: u32, tile: u32, workgroup_size: u32) -> [u32; 3] {
        let tiles = trace_tiles(n, tile);
        let ([x, y, _], _) = crate::elementwise_grid(tiles * block_row_width(tiles, workgroup_size), workgroup_size.max(1));
        [x, y, groups.max(1)]
    }

    /// Invocations per row of `tiles` blocks in the flat numbering, with u = min(workgroup size,
    /// [`crate::TRACE_LANES`]), a warp or SIMD group: the row itself where it is narrower than u (rows
    /// share warps, every lane busy), else the row rounded up to whole multiples of u, so that every
    /// warp stays in one row and its column group, the layout the kernels had before the flat
    /// numbering (N = 1000 on a GPU: 63 blocks, two warps of one workgroup of 64; on lavapipe, 64
    /// blocks in eight SIMD groups of 8). The shaders' `block_row_width` is the same function.
    pub fn block_row_width(tiles: u32, workgroup_size: u32) -> u32 {
        let unit = workgroup_size.clamp(1, crate::TRACE_LANES);
        if tiles < unit { tiles } else { tiles.next_multiple_of(unit) }
    }

    /// What one step of a reversed sweep (REVERSE) finds in the trace slot and in the trace gradient,
    /// and leaves there.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ReversalStep {
        /// The slot holds H(t+1), not H(t): the params' `trace_ahead`.
        pub ahead: bool,
        /// The step leaves the slot as it is instead of storing H(t-1): the params' `skip_store`.
        pub skip_store: bool,
        /// The trace gradient holds G(t+2), not G(t+1): the params' `grad_ahead`.
        pub grad_ahead: bool,
        /// The step leaves the trace gradient as it is instead of storing G(t): `skip_grad_store`.
        pub skip_grad_store: bool,
    }

    /// The reversed sweep's steps T down to 1 (element t - 1 for step t), after a forward pass that
    /// left H(T) in the slot, where the runtime writes the exact H(s) over the slot between steps
    /// s + 1 and s wherever `resets(s)` (a checkpoint, and H(1) = 0).
    ///
    /// A step stores H(t-1) only where the next one could not recover its own H otherwise: a step that
    /// found H(t) leaves it, and the next one, finding H(t) where it wants H(t-1), inverts it once more
    /// with its own x_i(t-2), x_j(t-1) and rate, the values the store would have been computed from, and
    /// then stores. Nothing is stored before a reset, which overwrites it. So the trace is written
    /// about every other step, for one more inversion every other step.
    ///
    /// The trace gradient likewise: steps T, T - 2, ... leave G(t+1) in place of G(t), and the step
    /// after each recovers G(t) = dU/dH(t) G(t+1) + alpha_eff x_i(t-1) ga_j(t) with step t's x_i(t-1),
    /// x_j(t), rate and ga(t) (still in the ring), the f32 operations the store would have kept, before
    /// its own update (no reset touches the gradient, so it strictly alternates; nothing reads G(1),
    /// which step 1 never stores). Together: 3 accesses per element and step instead of 4. With
    /// `every_step`, each step stores both (the trace except before a reset) and nothing is ever
    /// ahead.
    pub fn reversal_schedule(steps: u32, resets: impl Fn(u32) -> bool, every_step: bool) -> Vec<ReversalStep> {
        let mut schedule = vec![ReversalStep::default(); steps as usize];
        let (mut ahead, mut grad_ahead) = (false, false);
        for t in (1..=steps).rev() {
            // Step 1 has no H(0) to store.
            let reset_next = t == 1 || resets(t - 1);
            let skip_store = reset_next || (!every_step && !ahead);
            // Nothing reads G(1).
            let skip_grad_store = t == 1 || (!every_step && !grad_ahead);
            schedule[t as usize - 1] = ReversalStep { ahead, skip_store, grad_ahead, skip_grad_store };
            ahead = !reset_next && skip_store;
            grad_ahead = skip_grad_store;
        }
        schedule
    }
}

pub mod weight_gradient {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 64;

    /// K: backward steps per window. dw is read and written once per window instead of once per
    /// backward_trace pass; the ring of ga holds K (B, N) rows whatever the episode's length.
    pub const WINDOW: u32 = 16;

    /// Rows and columns of the block one invocation owns (both shaders' ROWS and COLS).
    pub const BLOCK: u32 = 8;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct WeightGradientParams {
        pub n: u32,
        pub batch: u32,
        /// s0, 1-based: the window's first step.
        pub first_step: u32,
        /// S: the window's steps, s0 .. s0 + S - 1.
        pub steps: u32,
        /// Offset of ga(s0) (B, N) in `partials`; ga(s0 + k) follows at + k B N.
        pub ga_offset: u32,
        /// Offset of dw (N, N) in `grads`.
        pub w_offset: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "weight_gradient",
        source: include_str!("../../../shaders/weight_gradient.wgsl"),
        bindings: &[params("p"), read("activations"), read("partials"), read_write("grads")],
        params_struct: "WeightGradientParams",
        params_layout: layout_of!(WeightGradientParams { n, batch, first_step, steps, ga_offset, w_offset, _pad0, _pad1 }),
        params_size: core::mem::size_of::<WeightGradientParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    /// The same kernel with vec4 loads and stores for N a multiple of 4 (see `uses_vec4_kernels`);
    /// the same bindings, grid and twin (`cpu::weight_gradient`).
    pub const KERNEL_VEC4: KernelDescriptor =
        KernelDescriptor { name: "weight_gradient_vec4", source: include_str!("../../../shaders/weight_gradient_vec4.wgsl"), ..KERNEL };

    pub fn kernel_name(vec4: bool) -> &'static str {
        if vec4 { KERNEL_VEC4.name } else { KERNEL.name }
    }

    /// The windows of a sweep over `steps` steps, as `(first_step, steps)`: [1, K], [K + 1, 2K], ...,
    /// the last one ending at `steps`. Step s is in ring slot (s - 1) mod K, so a window's slots are
    /// 0 .. S - 1 in order.
    pub fn windows(steps: u32, window: u32) -> Vec<(u32, u32)> {
        let window = window.max(1);
        (0..steps.div_ceil(window)).map(|w| (1 + w * window, window.min(steps - w * window))).collect()
    }

    /// One invocation per BLOCK x BLOCK block of (i, j), neighbouring invocations along j.
    pub fn workgroups(n: u32) -> [u32; 3] {
        [div_ceil(div_ceil(n, BLOCK), WORKGROUP_SIZE), div_ceil(n, BLOCK), 1]
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
        rule_constants: false,
        counted_loops: false,
        subgroups: false,
        int64: false,
    };
}

pub mod finish_gradients {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 256;

    /// `grads[dst + k] += sum_{r < rows} partials[src + r * len + k]` for `k < len`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Reduction {
        pub dst: u32,
        pub len: u32,
        pub rows: u32,
        pub src: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct FinishGradientsParams {
        pub param_count: u32,
        pub frozen0_begin: u32,
        pub frozen0_end: u32,
        pub frozen1_begin: u32,
        pub frozen1_end: u32,
        pub eta_dst: u32,
        pub eta_len: u32,
        pub eta_rows: u32,
        pub eta_src: u32,
        pub alpha_dst: u32,
        pub alpha_len: u32,
        pub alpha_rows: u32,
        pub alpha_src: u32,
        pub mod_dst: u32,
        pub mod_len: u32,
        pub mod_rows: u32,
        pub mod_src: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }

    impl FinishGradientsParams {
        /// The three reductions in the kernel's order: eta, alpha, modulator.
        pub fn reductions(&self) -> [Reduction; 3] {
            [
                Reduction { dst: self.eta_dst, len: self.eta_len, rows: self.eta_rows, src: self.eta_src },
                Reduction { dst: self.alpha_dst, len: self.alpha_len, rows: self.alpha_rows, src: self.alpha_src },
                Reduction { dst: self.mod_dst, len: self.mod_len, rows: self.mod_rows, src: self.mod_src },
            ]
        }

        pub fn set_reductions(&mut self, [eta, alpha, modulator]: [Reduction; 3]) {
            (self.eta_dst, self.eta_len, self.eta_rows, self.eta_src) = (eta.dst, eta.len, eta.rows, eta.src);
            (self.alpha_dst, self.alpha_len, self.alpha_rows, self.alpha_src) = (alpha.dst, alpha.len, alpha.rows, alpha.src);
            (self.mod_dst, self.mod_len, self.mod_rows, self.mod_src) = (modulator.dst, modulator.len, modulator.rows, modulator.src);
        }
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "finish_gradients",
        source: include_str!("../../../shaders/finish_gradients.wgsl"),
        bindings: &[params("p"), read("partials"), read_write("grads"), read_write("metrics")],
        params_struct: "FinishGradientsParams",
        params_layout: layout_of!(FinishGradientsParams {
            param_count,
            frozen0_begin,
            frozen0_end,
            frozen1_begin,
            frozen1_end,
            eta_dst,
            eta_len,
            eta_rows,
            eta_src,
            alpha_dst,
            alpha_len,
            alpha_rows,
            alpha_src,
            mod_dst,
            mod_len,
            mod_rows,
            mod_src,
            _pad0,
            _pad1,
            _pad2
        }),
        params_size: core::mem::size_of::<FinishGradientsParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: false,
        subgroups: false,
        int64: false,
    };
}

pub mod modulation_forward {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct ModulationForwardParams {
        pub n: u32,
        pub batch: u32,
        pub step: u32,
        pub mod_offset: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "modulation_forward",
        source: include_str!("../../../shaders/modulation_forward.wgsl"),
        bindings: &[params("p"), read("params"), read("activations"), read_write("modulation")],
        params_struct: "ModulationForwardParams",
        params_layout: layout_of!(ModulationForwardParams { n, batch, step, mod_offset }),
        params_size: core::mem::size_of::<ModulationForwardParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    pub fn workgroups(batch: u32) -> [u32; 3] {
        [div_ceil(batch, WORKGROUP_SIZE), 1, 1]
    }
}

pub mod modulation_backward {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct ModulationBackwardParams {
        pub n: u32,
        pub batch: u32,
        pub step: u32,
        pub n_tiles: u32,
        pub mod_offset: u32,
        pub rate_partials_offset: u32,
        pub acc_offset: u32,
        pub mod_grad_offset: u32,
        pub fan_out: u32,
        pub mod_len: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "modulation_backward",
        source: include_str!("../../../shaders/modulation_backward.wgsl"),
        bindings: &[params("p"), read("params"), read("activations"), read("modulation"), read_write("partials")],
        params_struct: "ModulationBackwardParams",
        params_layout: layout_of!(ModulationBackwardParams {
            n,
            batch,
            step,
            n_tiles,
            mod_offset,
            rate_partials_offset,
            acc_offset,
            mod_grad_offset,
            fan_out,
            mod_len,
            _pad0,
            _pad1
        }),
        params_size: core::mem::size_of::<ModulationBackwardParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: false,
        subgroups: false,
        int64: false,
    };

    /// One workgroup per batch element.
    pub fn workgroups(batch: u32) -> [u32; 3] {
        [batch, 1, 1]
    }
}

pub mod trace_update {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 256;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct TraceUpdateParams {
        pub n: u32,
        pub batch: u32,
        pub step: u32,
        pub row_stride: u32,
        pub eta_offset: u32,
        pub mod_offset: u32,
        pub src_offset: u32,
        pub dst_offset: u32,
        pub elig_offset: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "trace_update",
        source: include_str!("../../../shaders/trace_update.wgsl"),
        bindings: &[params("p"), read("params"), read("activations"), read("modulation"), read_write("traces")],
        params_struct: "TraceUpdateParams",
        params_layout: layout_of!(TraceUpdateParams {
            n,
            batch,
            step,
            row_stride,
            eta_offset,
            mod_offset,
            src_offset,
            dst_offset,
            elig_offset,
            _pad0,
            _pad1,
            _pad2
        }),
        params_size: core::mem::size_of::<TraceUpdateParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: true,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    /// The same update with vec4 access for N a multiple of 4 (see `uses_vec4_kernels`): one invocation per
    /// quad of four neighbouring post-synaptic neurons. Same bindings and twin (`cpu::trace_update`).
    pub const KERNEL_VEC4: KernelDescriptor =
        KernelDescriptor { name: "trace_update_vec4", source: include_str!("../../../shaders/trace_update_vec4.wgsl"), ..KERNEL };

    /// The kernel that updates a trace (see `uses_vec4_kernels`).
    pub fn kernel_name(vec4: bool) -> &'static str {
        if vec4 { KERNEL_VEC4.name } else { KERNEL.name }
    }

    /// The grid covering a (B, N, N) trace, an invocation per element (per quad with `vec4`), and
    /// its row stride.
    pub fn grid(n: u32, batch: u32, vec4: bool) -> ([u32; 3], u32) {
        let per_row = if vec4 { n / 4 } else { n };
        elementwise_grid(batch * n * per_row, WORKGROUP_SIZE)
    }
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
        rule_constants: false,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    /// The grid covering `count` parameters, and its row stride.
    pub fn grid(count: u32) -> ([u32; 3], u32) {
        elementwise_grid(count, WORKGROUP_SIZE)
    }
}

pub mod stream_triad {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 256;

    /// The params of both streaming kernels.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct StreamTriadParams {
        /// Vector elements per array: `vec4<f32>` (4 floats) in stream_triad, `vec4<u64>` (8 floats)
        /// in stream_triad_wide.
        pub elements: u32,
        pub row_stride: u32,
        pub scale: f32,
        pub _pad0: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "stream_triad",
        source: include_str!("../../../shaders/stream_triad.wgsl"),
        bindings: &[params("p"), read("a"), read("b"), read_write("c")],
        params_struct: "StreamTriadParams",
        params_layout: layout_of!(StreamTriadParams { elements, row_stride, scale, _pad0 }),
        params_size: core::mem::size_of::<StreamTriadParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    /// The same triad with 32 bytes per access (eight floats as a `vec4<u64>`), on devices with
    /// `SHADER_INT64`: where an adapter's cost is per load instruction rather than per byte (lavapipe
    /// loads each component of each lane on its own), it streams faster than 16-byte accesses.
    pub const KERNEL_WIDE: KernelDescriptor = KernelDescriptor {
        name: "stream_triad_wide",
        source: include_str!("../../../shaders/stream_triad_wide.wgsl"),
        int64: true,
        ..KERNEL
    };
}

pub mod input_projection {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 256;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct InputProjectionParams {
        pub n: u32,
        pub batch: u32,
        pub steps: u32,
        pub width: u32,
        pub w_in_offset: u32,
        pub row_stride: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "input_projection",
        source: include_str!("../../../shaders/input_projection.wgsl"),
        bindings: &[params("p"), read("params"), read("inputs"), read_write("activations")],
        params_struct: "InputProjectionParams",
        params_layout: layout_of!(InputProjectionParams { n, batch, steps, width, w_in_offset, row_stride, _pad0, _pad1 }),
        params_size: core::mem::size_of::<InputProjectionParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    /// The grid covering every (t, b, j), and its row stride.
    pub fn grid(n: u32, batch: u32, steps: u32) -> ([u32; 3], u32) {
        elementwise_grid(steps * batch * n, WORKGROUP_SIZE)
    }
}

pub mod input_projection_backward {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct InputProjectionBackwardParams {
        pub n: u32,
        pub batch: u32,
        /// s0, 1-based: the first step of the window (see `weight_gradient::windows`).
        pub first_step: u32,
        /// S: the window's steps.
        pub steps: u32,
        pub width: u32,
        pub w_in_offset: u32,
        /// Offset of ga(s0) (B, N) in `partials`; ga(s0 + k) follows at + k B N.
        pub ga_offset: u32,
        pub _pad0: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "input_projection_backward",
        source: include_str!("../../../shaders/input_projection_backward.wgsl"),
        bindings: &[params("p"), read("inputs"), read("partials"), read_write("grads")],
        params_struct: "InputProjectionBackwardParams",
        params_layout: layout_of!(InputProjectionBackwardParams { n, batch, first_step, steps, width, w_in_offset, ga_offset, _pad0 }),
        params_size: core::mem::size_of::<InputProjectionBackwardParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    /// One invocation per (j, d), d = D being the bias.
    pub fn workgroups(n: u32, width: u32) -> [u32; 3] {
        [div_ceil(n, WORKGROUP_SIZE), width + 1, 1]
    }
}

pub mod head_forward {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct HeadForwardParams {
        pub n: u32,
        pub batch: u32,
        pub n_loss_steps: u32,
        pub width: u32,
        pub total: u32,
        pub col0: u32,
        pub w_offset: u32,
        pub _pad0: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "head_forward",
        source: include_str!("../../../shaders/head_forward.wgsl"),
        bindings: &[params("p"), read("params"), read("activations"), read("loss_steps"), read_write("outputs")],
        params_struct: "HeadForwardParams",
        params_layout: layout_of!(HeadForwardParams { n, batch, n_loss_steps, width, total, col0, w_offset, _pad0 }),
        params_size: core::mem::size_of::<HeadForwardParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    /// One invocation per (k, (s, b)).
    pub fn workgroups(width: u32, rows: u32) -> [u32; 3] {
        [div_ceil(width, WORKGROUP_SIZE), rows, 1]
    }
}

pub mod head_loss {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 256;
    pub const LINEAR: u32 = 0;
    pub const SOFTMAX: u32 = 1;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct HeadLossParams {
        pub batch: u32,
        pub n_loss_steps: u32,
        pub width: u32,
        pub total: u32,
        pub col0: u32,
        pub kind: u32,
        pub accumulate: u32,
        pub loss_scale: f32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "head_loss",
        source: include_str!("../../../shaders/head_loss.wgsl"),
        bindings: &[params("p"), read("outputs"), read("targets"), read_write("grads"), read_write("metrics")],
        params_struct: "HeadLossParams",
        params_layout: layout_of!(HeadLossParams { batch, n_loss_steps, width, total, col0, kind, accumulate, loss_scale }),
        params_size: core::mem::size_of::<HeadLossParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: false,
        subgroups: false,
        int64: false,
    };
}

pub mod head_backward {
    use super::*;

    pub const WORKGROUP_SIZE: u32 = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
    pub struct HeadBackwardParams {
        pub n: u32,
        pub batch: u32,
        pub n_loss_steps: u32,
        pub width: u32,
        pub total: u32,
        pub col0: u32,
        pub w_offset: u32,
        pub accumulate: u32,
        pub loss_grad_offset: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }

    pub const KERNEL: KernelDescriptor = KernelDescriptor {
        name: "head_backward",
        source: include_str!("../../../shaders/head_backward.wgsl"),
        bindings: &[
            params("p"),
            read("params"),
            read("activations"),
            read("loss_steps"),
            read("head_grads"),
            read_write("partials"),
            read_write("grads"),
        ],
        params_struct: "HeadBackwardParams",
        params_layout: layout_of!(HeadBackwardParams {
            n,
            batch,
            n_loss_steps,
            width,
            total,
            col0,
            w_offset,
            accumulate,
            loss_grad_offset,
            _pad0,
            _pad1,
            _pad2
        }),
        params_size: core::mem::size_of::<HeadBackwardParams>(),
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        rule_constants: false,
        counted_loops: true,
        subgroups: false,
        int64: false,
    };

    /// One invocation per neuron, and one for the bias.
    pub fn workgroups(n: u32) -> [u32; 3] {
        [div_ceil(n + 1, WORKGROUP_SIZE), 1, 1]
    }
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
    forward_step::KERNEL_VEC4,
    forward_step::KERNEL_VEC4_SUBGROUP,
    forward_finish::KERNEL,
    backward_activation::KERNEL,
    backward_trace::KERNEL,
    backward_trace::KERNEL_VEC4,
    weight_gradient::KERNEL,
    weight_gradient::KERNEL_VEC4,
    loss_mse::KERNEL,
    finish_gradients::KERNEL,
    modulation_forward::KERNEL,
    modulation_backward::KERNEL,
    trace_update::KERNEL,
    trace_update::KERNEL_VEC4,
    input_projection::KERNEL,
    input_projection_backward::KERNEL,
    head_forward::KERNEL,
    head_loss::KERNEL,
    head_backward::KERNEL,
    adam_update::KERNEL,
    stream_triad::KERNEL,
    stream_triad::KERNEL_WIDE,
];

#[cfg(test)]
mod column_owner_tests {
    use super::*;

    #[test]
    fn every_trace_column_has_one_owner_and_lanes_are_adjacent() {
        let scalar = [1u32, 3, 4, 5, 7, 8, 9, 15, 16, 17, 127, 128, 129, 511, 512, 513, 530, 1000, 1024, 1100].map(|n| (n, 1));
        let quads = [4u32, 8, 12, 16, 20, 124, 128, 132, 508, 512, 516, 532, 1000, 1024, 1100].map(|n| (n, 4));
        for ((n, width), lanes) in scalar.into_iter().chain(quads).flat_map(|nw| [1, 3, 8, TRACE_LANES, 64].map(|l| (nw, l))) {
            for tile in TRACE_TILE_SIDES {
                let what = format!("N={n} width {width} tile {tile} column lanes {lanes}");
                let tiles = trace_tiles(n, tile);
                let mut columns_of = vec![Vec::new(); tiles as usize];
                for j in 0..n {
                    let (slot, first) = trace_column_owner(n, j, width, tile, lanes);
                    assert!(slot < tiles, "{what} j={j}: slot {slot} of {tiles}");
                    columns_of[slot as usize].push((j, first));
                }
                for (slot, cols) in columns_of.iter().enumerate() {
                    // Every invocation owns 1..=tile columns, starting at its first column.
                    assert!(!cols.is_empty() && cols.len() <= tile as usize, "{what} slot {slot}: {} columns", cols.len());
                    assert!(cols.iter().all(|&(_, f)| f == cols[0].0), "{what} slot {slot}: first column");
                }
                // Neighbouring lanes of a column group start at neighbouring units (coalesced access);
                // with one lane per group, each invocation's units are consecutive, after the last
                // one's. Every unit of `width` columns has one owner.
                for slot in 1..tiles {
                    let (a, b) = (columns_of[slot as usize - 1][0].0, columns_of[slot as usize][0].0);
                    assert!(slot % lanes == 0 || b == a + width, "{what}: slots {} and {slot} start at {a} and {b}", slot - 1);
                    if lanes == 1 {
                        assert_eq!(b, slot * tile, "{what}: slot {slot} starts at {b}");
                        let cols: Vec<u32> = columns_of[slot as usize].iter().map(|&(j, _)| j).collect();
                        assert!(cols.windows(2).all(|w| w[1] == w[0] + 1), "{what}: slot {slot} owns {cols:?}");
                    }
                }
                for j in (0..n).step_by(width as usize) {
                    let owners: Vec<u32> = (j..j + width).map(|c| trace_column_owner(n, c, width, tile, lanes).0).collect();
                    assert!(owners.iter().all(|&o| o == owners[0]), "{what}: the quad at {j} is split between {owners:?}");
                }
            }
        }
    }
}
