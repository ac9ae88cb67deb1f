//! How the step kernels divide their work between invocations.
//!
//! A forward step has N * ceil(B / 4) natural invocations (one per post-synaptic neuron and batch
//! tile) and backward_trace has ceil(N / 16)^2 (one per 16 x 16 block of the trace). On a CPU adapter
//! that is plenty, and every extra pass costs time. A GPU hides memory latency only with many times
//! more invocations in flight than that at the paper's sizes (an H200 holds about 270,000 threads,
//! against 16,000 natural forward invocations at N = 1000, B = 64), so there the forward step's sum
//! over i is split into chunks (`forward_finish` adds them) and backward_trace runs batch groups side
//! by side, each with its own dalpha and eta accumulators (`finish_gradients` adds them), and, where
//! the batch is too small for that (at B = 1 there are 256 invocations at N = 256), walks smaller
//! blocks.

use crate::context::AdapterSummary;
use plasticity_kernels::{TRACE_LANES, TRACE_TILE, TRACE_TILE_SIDES, TraceLayout, backward_trace, div_ceil, forward_step, trace_tiles};

/// Invocations a split forward step aims for on a GPU: about one full H200 (132 SMs x 2048). On an
/// H200 at N = 1000, B = 64 a forward step takes 2.03, 0.65, 0.47, 0.35, 0.37 and 0.38 ms at S = 1, 4,
/// 8, 16 (this choice), 32 and 64 (benches/results/h200-2026-11-28.md).
pub const GPU_FORWARD_INVOCATIONS: u32 = 1 << 18;
/// Invocations backward_trace aims for on a GPU through its batch groups.
pub const GPU_BACKWARD_INVOCATIONS: u32 = 1 << 16;
/// Below this many invocations with blocks of side 16 and as many batch groups as the batch allows,
/// backward_trace walks smaller blocks on a GPU (each halving of the side gives 4x the invocations).
pub const GPU_BACKWARD_MIN_INVOCATIONS: u32 = GPU_BACKWARD_INVOCATIONS / 4;
/// The most tiles per axis the GPU's choice of smaller blocks makes: backward_activation adds
/// 2 x tiles partial sums per neuron one after another, with only N B invocations.
pub const GPU_BACKWARD_MAX_TILES: u32 = 128;
/// The shortest chunk of the forward sum worth its own invocation: shorter ones spend more on
/// their partial sum's write and read than they save.
pub const MIN_SPLIT_LEN: u32 = 8;
/// Invocations per forward_step workgroup on a CPU adapter: one SIMD group of lavapipe's 8 lanes.
/// Lavapipe runs each workgroup on one thread, so at B = 1 a step of 64-invocation workgroups
/// (64 vec4 invocations cover 256 neurons) ran on one core; with 8, a training episode at N = 256,
/// B = 1 took 1.8-2.0x less time on 2 cores, and N = 256, B = 16 was unchanged (README).
pub const CPU_FORWARD_WORKGROUP: u32 = 8;
/// Column quads per invocation of the vec4 forward step on a CPU adapter where the trace holds at
/// least [`CPU_FORWARD_COLUMN_QUADS_MIN_TRACE_BYTES`]: a 64-byte line of each trace row per lane.
/// Lavapipe runs a lane's storage access as scalar loads, lane after lane; with one quad per lane the
/// eight lanes' loads of a component fall in two cache lines, with four in eight, which the core can
/// then fetch side by side (the likely reason; this VM has no counters to show it). On lavapipe a
/// forward episode took 0.75x the time at N = 256, B = 16 and 0.84-0.94x wherever the trace held
/// 1 MiB or more (README).
pub const CPU_FORWARD_COLUMN_QUADS: u32 = forward_step::MAX_COLUMN_QUADS;
/// The smallest trace (B N^2 floats) for which a CPU adapter's forward step takes
/// CPU_FORWARD_COLUMN_QUADS quads per invocation. Smaller traces stay in a core's cache, where there
/// is no miss to overlap, and a quarter of the invocations leaves lanes or cores idle: at 256 KiB
/// (N = 256, B = 1; N = 64, B = 16) four quads cost 1.08-1.15x the forward episode's time, at N = 64,
/// B = 1 1.6x; at 1 MiB (N = 512, B = 1; N = 256, B = 4; N = 128, B = 16) they saved 6-16% (README).
/// The crossover on that machine lay between 512 KiB (1.03x) and 576 KiB (0.96x), its cores' L2;
/// 1 MiB leaves a margin for CPUs with larger caches, whose sizes wgpu does not report.
pub const CPU_FORWARD_COLUMN_QUADS_MIN_TRACE_BYTES: u64 = 1 << 20;
/// Columns per stripe of the stored trace on a CPU adapter: one SIMD group of lavapipe's 8 lanes,
/// each owning a 64-byte run of a row ([`CPU_FORWARD_COLUMN_QUADS`] quads in the forward step, a block
/// of 16 columns in backward_trace), covers a stripe, so that walking the rows reads one contiguous
/// stream instead of 512 bytes every 4 N (most likely easier on the CPU's prefetchers; this VM has
/// no counters to show it). On lavapipe (an AMD Zen 4 machine) at N = 1000, B = 16 a forward step
/// took 17.5-18.0 against 29.2-30.4 ms with the rows whole and a training episode 7.0 against
/// 8.5-8.6 s; at N = 256, where the trace fits in the caches, the same within the spread; at
/// N <= 128 the layout is the same (one stripe) (README).
pub const CPU_TRACE_STRIPE: u32 = 128;
/// Invocations per backward_trace workgroup on a CPU adapter: one SIMD group of lavapipe's 8 lanes,
/// so that the few blocks of a small network still make a workgroup per thread (N = 64, side 16:
/// 16 blocks, two workgroups for two threads, against one of 64 before), each with every lane busy.
pub const CPU_BACKWARD_WORKGROUP: u32 = 8;

/// Work division of the step kernels; `None` chooses from the adapter and the size (see the module
/// docs). The choice never changes results beyond f32 rounding of the split sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTuning {
    /// Chunks of the forward step's sum over pre-synaptic neurons (1: unsplit), at most: the step
    /// runs chunks of ceil(N / S) neurons (`forward_step::split`), fewer than S where that leaves
    /// fewer (at most N); `Trainer::work_split` says what ran.
    pub forward_splits: Option<u32>,
    /// Batch groups of backward_trace (1: one group walks the whole batch), at most B.
    pub backward_groups: Option<u32>,
    /// Invocations per workgroup of the forward step (64 on a GPU, CPU_FORWARD_WORKGROUP on a CPU
    /// adapter); at most the device's `max_compute_invocations_per_workgroup` and
    /// `max_compute_workgroup_size_x`.
    pub forward_workgroup_size: Option<u32>,
    /// Invocations per workgroup of backward_trace (64 on a GPU, CPU_BACKWARD_WORKGROUP on a CPU
    /// adapter), within the same device limits as the forward's.
    pub backward_workgroup_size: Option<u32>,
    /// Batch elements per pass of backward_trace, 1 to `backward_trace::CHUNK` (default: that, or
    /// ceil(B / Z) when smaller). Fewer mean more passes, each reading w and alpha and updating dalpha
    /// again, but fewer registers per invocation (more of them resident on a GPU); results are the
    /// same up to f32 rounding. Not measured on a GPU yet (`tools/device_check.sh` sweeps it).
    pub backward_batch_slots: Option<u32>,
    /// Run the scalar rule kernels (`forward_step`, `backward_trace`, `trace_update`) even where N
    /// allows their vec4 forms. Which is faster depends on the device: the vec4 kernels move 16 bytes
    /// per access and train about 2.1x faster on lavapipe (README), but hold more registers per
    /// invocation, and on a GPU they have not been measured against the scalar ones yet.
    pub scalar_kernels: bool,
    /// Whether the vec4 forward step shares x(t-1) and x(t-2) between the invocations of a subgroup
    /// by shuffles (`forward_step_vec4_subgroup`) instead of having each invocation load them
    /// (`forward_step_vec4`); the results are the same bits. `None`: on a CPU adapter wherever it can
    /// run, where a training episode takes less time (README, "How the kernels were tuned on
    /// lavapipe"); not on a GPU, where loads of one address by a whole subgroup are already one access
    /// and it has not been measured. It can run where the device has `wgpu::Features::SUBGROUP` and
    /// the forward workgroup size is a multiple of the adapter's largest subgroup size (so that every
    /// subgroup is full); `Some(true)` elsewhere is an error that says which is missing. The scalar
    /// kernel (N not a multiple of 4) has no subgroup form and ignores this.
    pub forward_subgroups: Option<bool>,
    /// Whether backward_trace_vec4 loads each column quad's x_j(t), ga_j(t) and x_j(t-1) once per
    /// pass over its block instead of once per four rows (its `HOIST_COLUMNS`): up to 48 more quads
    /// held per invocation, 0.56 fewer loads per element quad and batch element; the same results.
    /// `None`: on a CPU adapter where a pass takes 2 or more batch elements (on lavapipe a training
    /// episode then takes 4-13% less time, and at one element per pass about 2-4% more; README, "How
    /// the kernels were tuned on lavapipe"); not on a GPU, where the registers would cost occupancy
    /// and it has not been measured.
    pub backward_hoist_columns: Option<bool>,
    /// Have every step of a reversed backward sweep store the recovered H(t-1) over the trace and
    /// G(t) over its gradient (the schedule before 6bfa109) instead of every other step, where the
    /// next step recovers each once more (`backward_trace::reversal_schedule`): one more write of the
    /// trace and one of its gradient per element every other step, one inversion and one gradient
    /// update fewer (and the gradient's recovery compiled out of the kernel, GRAD_AHEAD); the same
    /// results. For comparison on a device: on lavapipe a training episode takes 0-5% longer with it
    /// at N = 256, B = 16 and 3-12% at B = 1 (README).
    pub backward_store_every_step: bool,
    /// Side of the square block of the trace that one backward_trace invocation walks: 4, 8 or 16
    /// (`plasticity_kernels::TRACE_TILE_SIDES`; `None`: see [`KernelTuning::backward_tile_side`],
    /// 16 on a CPU adapter). A side of s makes ceil(N / s)^2 invocations per batch group, each
    /// writing one partial sum per row and column it covers: a smaller side gives a GPU (16 / s)^2
    /// times the invocations to hide load latency with (without the dalpha traffic more batch groups
    /// add), for partial sums of 4 B N^2 / s floats written and read per step (the trace and its
    /// gradient move 3 B N^2) and x_i, x_j shared over fewer elements. The same results up to f32
    /// rounding of the partial sums. On lavapipe smaller blocks only cost (README); not measured on a
    /// GPU yet (`tools/device_check.sh` sweeps it).
    pub backward_tile: Option<u32>,
    /// Invocations of backward_trace that interleave their columns, 1 to
    /// `backward_trace::MAX_COLUMN_LANES` (`plasticity_kernels::trace_column_owner`): with L of them,
    /// lane l of a group owns columns l, l + L, ..., so that a warp's loads of the trace and its
    /// gradient are coalesced; with 1, each invocation owns its block's columns as one run. `None`:
    /// `plasticity_kernels::TRACE_LANES` (a warp) on a GPU, 1 on a CPU adapter, where a training
    /// episode then takes 0.90x the time on lavapipe at N = 256, B = 16, 0.88x at N = 1000, B = 1 and
    /// 0.96x at N = 256, B = 1 (README, "How the kernels were tuned on lavapipe"); not measured on a
    /// GPU (`tools/device_check.sh` sweeps it). The same results up to f32 rounding of the row partial
    /// sums (each invocation sums other columns).
    pub backward_column_lanes: Option<u32>,
    /// Neighbouring column quads (four post-synaptic neurons each) one invocation of the vec4
    /// forward step owns, 1 to `forward_step::MAX_COLUMN_QUADS`: with 1, neighbouring invocations
    /// read neighbouring quads of each trace row, so that a warp's loads are coalesced; with 4, each
    /// invocation reads a 64-byte run of every row it walks, and the history it loads (or shuffles)
    /// serves all its quads. `None`: 1 on a GPU; on a CPU adapter [`CPU_FORWARD_COLUMN_QUADS`] where
    /// the trace holds [`CPU_FORWARD_COLUMN_QUADS_MIN_TRACE_BYTES`] or more, else 1 (see there); not
    /// measured on a GPU (`tools/device_check.sh` sweeps it). The same results, bit for
    /// bit (each quad's sum runs in the same order). The scalar kernel ignores it.
    pub forward_column_quads: Option<u32>,
    /// Columns per stripe of the stored trace (`plasticity_kernels::TraceLayout`; 0: rows whole), a
    /// multiple of 4. `None`: [`CPU_TRACE_STRIPE`] on a CPU adapter, rows whole on a GPU (the order
    /// the H200 measurements used; the GPU's choice is reasoned, not measured: a warp's 32 lanes read
    /// 512 contiguous bytes either way, and `tools/device_check.sh` sweeps it). The same results, bit
    /// for bit (only where each element is stored changes).
    pub trace_stripe: Option<u32>,
}

impl KernelTuning {
    /// Whether the rule kernels run as vec4 for a shape that allows it
    /// (`plasticity_kernels::uses_vec4_kernels`). One decision for the forward and backward kernels.
    pub fn vec4_kernels(&self, shape_allows: bool) -> bool {
        shape_allows && !self.scalar_kernels
    }

    /// Invocations per forward_step workgroup.
    pub fn forward_workgroup(&self, adapter: &AdapterSummary) -> u32 {
        self.forward_workgroup_size.unwrap_or(if adapter.is_cpu() { CPU_FORWARD_WORKGROUP } else { forward_step::WORKGROUP_SIZE })
    }

    /// Column quads per invocation of the vec4 forward step at N neurons and batch B (see
    /// [`KernelTuning::forward_column_quads`]), or an error naming the range.
    pub fn forward_columns(&self, adapter: &AdapterSummary, n: u32, batch: u32) -> crate::Result<u32> {
        let trace_bytes = batch as u64 * n as u64 * n as u64 * 4;
        let cpu_quads = if trace_bytes >= CPU_FORWARD_COLUMN_QUADS_MIN_TRACE_BYTES { CPU_FORWARD_COLUMN_QUADS } else { 1 };
        Ok(self.checked_forward_column_quads()?.unwrap_or(if adapter.is_cpu() { cpu_quads } else { 1 }))
    }

    /// `forward_column_quads` where it is set within 1 to `forward_step::MAX_COLUMN_QUADS` (`None`
    /// where unset), or an error naming the range.
    pub fn checked_forward_column_quads(&self) -> crate::Result<Option<u32>> {
        match self.forward_column_quads {
            Some(quads) if !(1..=forward_step::MAX_COLUMN_QUADS).contains(&quads) => Err(crate::error::invalid(
                "kernel tuning",
                format!(
                    "forward_column_quads = {quads}; an invocation of the forward step owns 1 to {} neighbouring quads of neurons",
                    forward_step::MAX_COLUMN_QUADS
                ),
            )),
            set => Ok(set),
        }
    }

    /// The stored order of the trace (see [`KernelTuning::trace_stripe`]), or an error naming the
    /// values it takes.
    pub fn trace_layout(&self, adapter: &AdapterSummary) -> crate::Result<TraceLayout> {
        Ok(TraceLayout::striped(self.checked_trace_stripe()?.unwrap_or(if adapter.is_cpu() { CPU_TRACE_STRIPE } else { 0 })))
    }

    /// `trace_stripe` where it is set to 0 or a multiple of 4 (`None` where unset), or an error
    /// naming the values it takes.
    pub fn checked_trace_stripe(&self) -> crate::Result<Option<u32>> {
        match self.trace_stripe {
            Some(stripe) if stripe % 4 != 0 => Err(crate::error::invalid(
                "kernel tuning",
                format!(
                    "trace_stripe = {stripe}; the trace's columns are stored in stripes of a multiple of 4 (the vec4 kernels read four \
                     columns at once), or 0 for rows whole"
                ),
            )),
            set => Ok(set),
        }
    }

    /// Invocations per backward_trace workgroup, or the error that says the device's range.
    pub fn backward_workgroup(&self, adapter: &AdapterSummary, limits: &wgpu::Limits) -> crate::Result<u32> {
        let size =
            self.backward_workgroup_size.unwrap_or(if adapter.is_cpu() { CPU_BACKWARD_WORKGROUP } else { backward_trace::WORKGROUP_SIZE });
        let most = limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x);
        if size == 0 || size > most {
            return Err(crate::error::invalid(
                "kernel tuning",
                format!("backward_workgroup_size = {size}; this device takes 1 to {most} invocations per workgroup"),
            ));
        }
        Ok(size)
    }

    /// Whether the vec4 forward step runs as `forward_step_vec4_subgroup` on this device, in
    /// workgroups of `workgroup` invocations (see [`KernelTuning::forward_subgroups`]);
    /// `GpuContext::forward_subgroup_kernel` asks it with the context's own adapter and device.
    pub fn forward_subgroup_kernel(&self, adapter: &AdapterSummary, device_has_subgroups: bool, workgroup: u32) -> crate::Result<bool> {
        let largest = adapter.subgroup_max_size;
        let missing = if !device_has_subgroups {
            Some("the device was created without wgpu::Features::SUBGROUP".to_string())
        } else if largest == 0 || !workgroup.is_multiple_of(largest) {
            Some(format!(
                "forward_workgroup_size = {workgroup} is not a multiple of this adapter's largest subgroup size, {largest}, so some subgroups would not be full"
            ))
        } else {
            None
        };
        match (self.forward_subgroups, missing) {
            (Some(false), _) => Ok(false),
            (None, missing) => Ok(missing.is_none() && adapter.is_cpu()),
            (Some(true), None) => Ok(true),
            (Some(true), Some(why)) => Err(crate::error::invalid(
                "kernel tuning",
                format!("forward_subgroups is on, but {why}; turn it off, or give the forward step whole subgroups"),
            )),
        }
    }

    /// Whether backward_trace_vec4 hoists its column values with `slots` batch elements per pass (see
    /// [`KernelTuning::backward_hoist_columns`]).
    pub fn backward_hoist(&self, adapter: &AdapterSummary, slots: u32) -> bool {
        self.backward_hoist_columns.unwrap_or(adapter.is_cpu() && slots > 1)
    }

    /// `(splits, split_len)` of the forward step at N neurons and batch B.
    pub fn forward_split(&self, adapter: &AdapterSummary, n: u32, batch: u32) -> (u32, u32) {
        let wanted = self.forward_splits.unwrap_or_else(|| {
            if adapter.is_cpu() {
                return 1;
            }
            // Counted per neuron column whichever kernel runs: forward_step_vec4 has a quarter of the
            // invocations, each moving four times the bytes, so the same S keeps the same bytes in
            // flight. (Chosen on an H200 before the vec4 kernel existed; not re-measured since.)
            let size = forward_step::WORKGROUP_SIZE;
            let natural = forward_step::workgroups(n, batch, 1, false, size, 1).iter().product::<u32>() * size;
            div_ceil(GPU_FORWARD_INVOCATIONS, natural).min(div_ceil(n, MIN_SPLIT_LEN))
        });
        forward_step::split(n, wanted)
    }

    /// Batch groups of backward_trace at N neurons and batch B (at most B), walking blocks of side
    /// `tile` ([`KernelTuning::backward_tile_side`]). On a GPU, enough groups
    /// for about GPU_BACKWARD_INVOCATIONS invocations: each group re-reads and re-writes its own
    /// dalpha every step, so past that point more groups add traffic faster than they hide
    /// latency. Measured on an H200 (benches/results/h200-2026-11-28.md), when each group also had
    /// its own dw (not re-measured since): at N = 1000, B = 64 a training episode takes 251, 257, 306
    /// and 389 ms at Z = 17 (this choice), 32, 8 and 64; at N = 256, B = 64, 59, 66 and 90 ms at
    /// Z = 64 (this choice), 32 and 16 (blocks of side 16). The accumulators, Z N^2 floats, stay
    /// under about 2^16 * tile^2 * 4 bytes (64 MiB at side 16) at any N.
    pub fn backward_groups(&self, adapter: &AdapterSummary, n: u32, batch: u32, tile: u32) -> u32 {
        let wanted = self.backward_groups.unwrap_or_else(|| {
            if adapter.is_cpu() {
                return 1;
            }
            let natural = trace_tiles(n, tile) * trace_tiles(n, tile);
            div_ceil(GPU_BACKWARD_INVOCATIONS, natural)
        });
        wanted.clamp(1, batch.max(1))
    }

    /// The side of backward_trace's blocks at N neurons and batch B (see
    /// [`KernelTuning::backward_tile`]), or an error naming the sides it can take. Unset: 16 on a CPU
    /// adapter; on a GPU the largest side whose blocks, with as many batch groups as the batch allows
    /// (or `backward_groups`), make at least GPU_BACKWARD_MIN_INVOCATIONS invocations, else the
    /// smallest side that leaves at most GPU_BACKWARD_MAX_TILES tiles per axis (16 at any rate). That
    /// keeps 16 wherever batch groups reach that count (N = 1000 at B = 16 and 64, N = 256 at B = 64)
    /// and walks blocks of 8 at N = 256, B = 16 and at N = 1000, B = 1, and of 4 at N = 256, B = 1.
    /// A choice reasoned from the H200's batch-group measurements (more invocations paid up to about
    /// 2^16; see `backward_groups`), not measured itself yet.
    pub fn backward_tile_side(&self, adapter: &AdapterSummary, n: u32, batch: u32) -> crate::Result<u32> {
        match self.checked_backward_tile()? {
            Some(side) => Ok(side),
            None if adapter.is_cpu() => Ok(TRACE_TILE),
            None => {
                let groups = self.backward_groups.unwrap_or(batch).clamp(1, batch.max(1)) as u64;
                let invocations = |side: u32| (trace_tiles(n, side) as u64).pow(2) * groups;
                // TRACE_TILE_SIDES ascends: the largest side that reaches the count, else the smallest
                // allowed.
                let allowed: Vec<u32> = TRACE_TILE_SIDES
                    .into_iter()
                    .filter(|&side| side == TRACE_TILE || trace_tiles(n, side) <= GPU_BACKWARD_MAX_TILES)
                    .collect();
                let side = allowed.iter().rev().find(|&&side| invocations(side) >= GPU_BACKWARD_MIN_INVOCATIONS as u64);
                Ok(*side.unwrap_or(&allowed[0]))
            }
        }
    }

    /// `backward_tile` where it is set to a side backward_trace can take (`None` where unset), or an
    /// error naming the sides.
    pub fn checked_backward_tile(&self) -> crate::Result<Option<u32>> {
        match self.backward_tile {
            Some(side) if !TRACE_TILE_SIDES.contains(&side) => Err(crate::error::invalid(
                "kernel tuning",
                format!("backward_tile = {side}; backward_trace walks square blocks of side {TRACE_TILE_SIDES:?}, pick one of those"),
            )),
            set => Ok(set),
        }
    }

    /// Invocations of backward_trace that interleave their columns (see
    /// [`KernelTuning::backward_column_lanes`]), or an error naming the range.
    pub fn backward_columns(&self, adapter: &AdapterSummary) -> crate::Result<u32> {
        Ok(self.checked_backward_column_lanes()?.unwrap_or(if adapter.is_cpu() { 1 } else { TRACE_LANES }))
    }

    /// `backward_column_lanes` where it is set within 1 to `backward_trace::MAX_COLUMN_LANES`
    /// (`None` where unset), or an error naming the range.
    pub fn checked_backward_column_lanes(&self) -> crate::Result<Option<u32>> {
        match self.backward_column_lanes {
            Some(lanes) if !(1..=backward_trace::MAX_COLUMN_LANES).contains(&lanes) => Err(crate::error::invalid(
                "kernel tuning",
                format!(
                    "backward_column_lanes = {lanes}; 1 to {} invocations of backward_trace may interleave their columns (1: each its own run of columns)",
                    backward_trace::MAX_COLUMN_LANES
                ),
            )),
            set => Ok(set),
        }
    }

    /// Batch elements per pass of backward_trace for a batch of B in Z groups, or an error naming
    /// the range when `backward_batch_slots` is outside it.
    pub fn backward_slots(&self, batch: u32, groups: u32) -> crate::Result<u32> {
        match self.backward_batch_slots {
            None => Ok(backward_trace::batch_slots(batch, groups)),
            Some(k) if (1..=backward_trace::CHUNK).contains(&k) => Ok(k),
            Some(k) => Err(crate::error::invalid(
                "kernel tuning",
                format!("backward_batch_slots = {k}; backward_trace takes 1 to {} batch elements per pass", backward_trace::CHUNK),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(device_type: wgpu::DeviceType) -> AdapterSummary {
        AdapterSummary {
            name: "test".into(),
            backend: wgpu::Backend::Vulkan,
            device_type,
            driver: String::new(),
            subgroup_min_size: 32,
            subgroup_max_size: 32,
        }
    }

    /// backward_trace runs in workgroups of one SIMD group on a CPU adapter and of 64 on a GPU,
    /// unless set; a size the device does not take is refused with its range.
    #[test]
    fn backward_workgroups_are_small_on_a_cpu_adapter() {
        let (gpu, cpu) = (adapter(wgpu::DeviceType::DiscreteGpu), adapter(wgpu::DeviceType::Cpu));
        let limits = wgpu::Limits::default();
        let auto = KernelTuning::default();
        assert_eq!(auto.backward_workgroup(&cpu, &limits).unwrap(), CPU_BACKWARD_WORKGROUP);
        assert_eq!(auto.backward_workgroup(&gpu, &limits).unwrap(), backward_trace::WORKGROUP_SIZE);
        let set = KernelTuning { backward_workgroup_size: Some(32), ..auto };
        assert_eq!((set.backward_workgroup(&cpu, &limits).unwrap(), set.backward_workgroup(&gpu, &limits).unwrap()), (32, 32));
        let most = limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x);
        for size in [0, most + 1] {
            let err = KernelTuning { backward_workgroup_size: Some(size), ..auto }.backward_workgroup(&gpu, &limits).unwrap_err();
            assert!(err.to_string().contains(&format!("1 to {most}")), "{err}");
        }
    }

    /// Columns are interleaved over a warp on a GPU and contiguous on a CPU adapter, unless set; a
    /// count outside 1 to MAX_COLUMN_LANES is refused with its range.
    #[test]
    fn backward_columns_are_contiguous_on_a_cpu_adapter() {
        let (gpu, cpu) = (adapter(wgpu::DeviceType::DiscreteGpu), adapter(wgpu::DeviceType::Cpu));
        let auto = KernelTuning::default();
        assert_eq!((auto.backward_columns(&gpu).unwrap(), auto.backward_columns(&cpu).unwrap()), (TRACE_LANES, 1));
        for lanes in [1, 8, backward_trace::MAX_COLUMN_LANES] {
            let set = KernelTuning { backward_column_lanes: Some(lanes), ..auto };
            assert_eq!((set.backward_columns(&gpu).unwrap(), set.backward_columns(&cpu).unwrap()), (lanes, lanes));
        }
        for lanes in [0, backward_trace::MAX_COLUMN_LANES + 1] {
            let err = KernelTuning { backward_column_lanes: Some(lanes), ..auto }.backward_columns(&gpu).unwrap_err().to_string();
            assert!(err.contains(&format!("backward_column_lanes = {lanes}")) && err.contains("1 to 64"), "{err}");
        }
    }

    /// One column quad per forward invocation on a GPU; on a CPU adapter a cache line's four where
    /// the trace holds 1 MiB or more, else one; as set where set, and a count outside 1 to
    /// MAX_COLUMN_QUADS is refused with its range.
    #[test]
    fn forward_column_quads_fill_a_line_on_a_cpu_adapter_for_large_traces() {
        let (gpu, cpu) = (adapter(wgpu::DeviceType::DiscreteGpu), adapter(wgpu::DeviceType::Cpu));
        let auto = KernelTuning::default();
        // (N, B, CPU's choice): 1 MiB is 256 x 256 x 4 floats, or 512 x 512 x 1.
        for (n, batch, cpu_quads) in
            [(256, 16, 4), (256, 4, 4), (512, 1, 4), (1000, 1, 4), (256, 3, 1), (256, 1, 1), (64, 16, 1), (508, 1, 1)]
        {
            assert_eq!(auto.forward_columns(&cpu, n, batch).unwrap(), cpu_quads, "CPU N={n} B={batch}");
            assert_eq!(auto.forward_columns(&gpu, n, batch).unwrap(), 1, "GPU N={n} B={batch}");
        }
        for quads in 1..=forward_step::MAX_COLUMN_QUADS {
            let set = KernelTuning { forward_column_quads: Some(quads), ..auto };
            assert_eq!((set.forward_columns(&gpu, 64, 1).unwrap(), set.forward_columns(&cpu, 1000, 16).unwrap()), (quads, quads));
        }
        for quads in [0, forward_step::MAX_COLUMN_QUADS + 1] {
            let err = KernelTuning { forward_column_quads: Some(quads), ..auto }.forward_columns(&cpu, 64, 1).unwrap_err().to_string();
            assert!(err.contains(&format!("forward_column_quads = {quads}")) && err.contains("1 to 4"), "{err}");
        }
    }

    /// On a GPU the blocks shrink only where batch groups cannot give the backward enough
    /// invocations, and then only as far as needed; on a CPU adapter and when set they are as given.
    #[test]
    fn backward_blocks_shrink_on_a_gpu_only_where_the_batch_is_too_small() {
        let (gpu, cpu) = (adapter(wgpu::DeviceType::DiscreteGpu), adapter(wgpu::DeviceType::Cpu));
        let auto = KernelTuning::default();
        let sizes = [
            (1000, 64, 16),
            (1000, 16, 16),
            (256, 64, 16),
            (256, 16, 8),
            (1000, 1, 8),
            (256, 1, 4),
            (8, 1, 4),
            (2048, 1, 16),
            (4096, 1, 16),
        ];
        for (n, batch, side) in sizes {
            assert_eq!(auto.backward_tile_side(&gpu, n, batch).unwrap(), side, "GPU N={n} B={batch}");
            assert_eq!(auto.backward_tile_side(&cpu, n, batch).unwrap(), TRACE_TILE, "CPU N={n} B={batch}");
        }
        // Every choice: the side reaches the minimum with groups up to the batch, or is the smallest
        // that keeps at most GPU_BACKWARD_MAX_TILES tiles; the next larger side does not reach it.
        for n in [1u32, 4, 17, 64, 100, 256, 257, 512, 1000, 2048, 4096] {
            for batch in [1u32, 2, 4, 16, 64, 256] {
                let side = auto.backward_tile_side(&gpu, n, batch).unwrap();
                let invocations = |s: u32| trace_tiles(n, s) * trace_tiles(n, s) * batch;
                assert!(TRACE_TILE_SIDES.contains(&side), "N={n} B={batch}: {side}");
                let smallest =
                    TRACE_TILE_SIDES.into_iter().find(|&s| s == TRACE_TILE || trace_tiles(n, s) <= GPU_BACKWARD_MAX_TILES).unwrap();
                assert!(invocations(side) >= GPU_BACKWARD_MIN_INVOCATIONS || side == smallest, "N={n} B={batch}: {side}");
                assert!(side == TRACE_TILE || trace_tiles(n, side) <= GPU_BACKWARD_MAX_TILES, "N={n} B={batch}: {side}");
                if side < TRACE_TILE {
                    assert!(invocations(side * 2) < GPU_BACKWARD_MIN_INVOCATIONS, "N={n} B={batch}: {side} where {} would do", side * 2);
                }
            }
        }
        // Batch groups set by hand count instead of the batch: one group at N = 256, B = 64 has 256
        // blocks of 16 and 1024 of 8, both short.
        let one_group = KernelTuning { backward_groups: Some(1), ..KernelTuning::default() };
        assert_eq!(one_group.backward_tile_side(&gpu, 256, 64).unwrap(), 4);
        // Set by hand: taken as it is anywhere, and refused outside 4, 8, 16.
        for side in TRACE_TILE_SIDES {
            let set = KernelTuning { backward_tile: Some(side), ..KernelTuning::default() };
            assert_eq!(set.backward_tile_side(&gpu, 256, 1).unwrap(), side);
            assert_eq!(set.backward_tile_side(&cpu, 1000, 64).unwrap(), side);
        }
        let message =
            KernelTuning { backward_tile: Some(6), ..KernelTuning::default() }.backward_tile_side(&gpu, 64, 1).unwrap_err().to_string();
        assert!(message.contains("backward_tile = 6") && message.contains("[4, 8, 16]"), "{message}");
        // The groups then chosen at N = 256, B = 16 with blocks of 8: the whole batch, 16384 invocations.
        assert_eq!(auto.backward_groups(&gpu, 256, 16, 8), 16);
    }
}
