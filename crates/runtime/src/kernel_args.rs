//! The kernel options every command that runs the kernels takes (`bench`, `train`, `eval`,
//! `export-episode`): how the step kernels divide their work (`KernelTuning`) and wgpu's loop
//! bounding. None changes results beyond f32 rounding; `bench` shows what each choice does on a
//! device, and these let a run use what it found.

use clap::Args;
use plasticity_runtime::{GpuContext, KernelTuning};

#[derive(Args, Debug)]
#[command(next_help_heading = "Kernel options (how the step kernels divide their work; `bench` times them)")]
pub struct KernelArgs {
    /// Chunks S of the forward step's sum over pre-synaptic neurons, at most (default: chosen from the
    /// adapter and size; 1 on a CPU adapter): chunks of ceil(N / S) neurons, fewer than S where
    /// that rounding or N leaves fewer (bench and train print what ran).
    #[arg(long)]
    pub(crate) forward_splits: Option<u32>,
    /// Batch groups Z of the backward trace kernel, at most B (default: chosen from the adapter and
    /// size; 1 on a CPU adapter). A smaller batch gives fewer (bench and train print what ran).
    #[arg(long)]
    pub(crate) backward_groups: Option<u32>,
    /// Invocations per forward_step workgroup (default: 64 on a GPU, 8 on a CPU adapter, where each
    /// workgroup runs on one thread).
    #[arg(long)]
    pub(crate) forward_workgroup_size: Option<u32>,
    /// Invocations per workgroup of the backward trace kernel (default: 64 on a GPU, 8 on a CPU
    /// adapter, where the few blocks of a small network then still make a workgroup per thread).
    #[arg(long)]
    pub(crate) backward_workgroup_size: Option<u32>,
    /// Batch elements per pass of the backward trace kernel, 1 to 4 (default: 4, or ceil(B / Z) when
    /// smaller); fewer take more passes but fewer registers per invocation.
    #[arg(long)]
    pub(crate) backward_batch_slots: Option<u32>,
    /// Run the scalar rule kernels even where N is a multiple of 4 and the vec4 ones could run (the
    /// table's W column says which ran), to compare the two on a device.
    #[arg(long)]
    pub(crate) scalar_kernels: bool,
    /// Whether the vec4 forward step shares x(t-1) and x(t-2) between the invocations of a subgroup
    /// by shuffles instead of having each load them: on or off (default: on for a CPU adapter with
    /// subgroups, off on a GPU, where it has not been measured); the table's G column says where it ran.
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) forward_subgroups: Option<bool>,
    /// Whether the vec4 backward trace kernel loads each column quad's values once per pass instead
    /// of once per four rows (more registers, fewer loads): on or off (default: on for a CPU adapter
    /// where a pass takes 2 or more batch elements, off on a GPU, where it has not been measured); the
    /// header says which.
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) backward_hoist_columns: Option<bool>,
    /// Have every step of the reversed backward sweep store the recovered trace and its gradient
    /// instead of every other step (whose next step recovers them once more): two more writes per
    /// element every other step; to compare the two on a device.
    #[arg(long)]
    pub(crate) backward_store_every_step: bool,
    /// Side of the square block of the trace one backward trace invocation walks: 4, 8 or 16
    /// (default: 16 on a CPU adapter, on a GPU smaller where the batch is small); a smaller side
    /// gives (16 / side)^2 times the invocations (for a GPU to hide its load latency with) for more
    /// partial-sum traffic.
    #[arg(long)]
    pub(crate) backward_tile: Option<u32>,
    /// Invocations of the backward trace kernel that interleave their columns, 1 to 64 (default: 32,
    /// a warp, on a GPU, whose loads are then coalesced; 1 on a CPU adapter, where each invocation
    /// then walks its own columns as one run).
    #[arg(long)]
    pub(crate) backward_column_lanes: Option<u32>,
    /// Neighbouring quads of neurons (four each) one invocation of the vec4 forward step owns, 1 to
    /// 4 (default: 1 on a GPU, whose loads are then coalesced; on a CPU adapter 4 where the trace
    /// holds 1 MiB or more, each invocation then reading a 64-byte run of every trace row, else 1);
    /// the table's Q column says what ran.
    #[arg(long)]
    pub(crate) forward_column_quads: Option<u32>,
    /// Columns per stripe of the stored trace, a multiple of 4, or 0 for its rows whole (default: 128
    /// on a CPU adapter, where walking a stripe's rows reads one contiguous stream, most likely easier
    /// on the CPU's prefetchers; rows whole on a GPU, where it has not been measured). The same results, bit
    /// for bit; the table's ts column says what ran.
    #[arg(long)]
    pub(crate) trace_stripe: Option<u32>,
    /// Compile the kernels with wgpu's loop bounding (a 64-bit counter in every loop), which the
    /// runtime leaves out of the kernels whose loops are all counted; to compare the two on a device.
    #[arg(long)]
    pub(crate) wgpu_loop_bounding: bool,
}

impl KernelArgs {
    /// The tuning these options ask for, every value checked against its range (an error names the
    /// option and its range).
    pub fn tuning(&self) -> anyhow::Result<KernelTuning> {
        anyhow::ensure!(
            self.forward_splits != Some(0) && self.backward_groups != Some(0),
            "--forward-splits and --backward-groups must be at least 1"
        );
        let tuning = KernelTuning {
            forward_splits: self.forward_splits,
            backward_groups: self.backward_groups,
            forward_workgroup_size: self.forward_workgroup_size,
            backward_workgroup_size: self.backward_workgroup_size,
            backward_batch_slots: self.backward_batch_slots,
            scalar_kernels: self.scalar_kernels,
            forward_subgroups: self.forward_subgroups,
            backward_hoist_columns: self.backward_hoist_columns,
            backward_store_every_step: self.backward_store_every_step,
            backward_tile: self.backward_tile,
            backward_column_lanes: self.backward_column_lanes,
            forward_column_quads: self.forward_column_quads,
            trace_stripe: self.trace_stripe,
        };
        // The runtime's own range checks, run before the adapter is opened.
        let chunk = plasticity_runtime::kernels::backward_trace::CHUNK;
        if tuning.backward_slots(1, 1).is_err() {
            anyhow::bail!("--backward-batch-slots must be 1 to {chunk} (got {})", self.backward_batch_slots.unwrap_or_default());
        }
        if tuning.checked_backward_tile().is_err() {
            let sides = plasticity_runtime::kernels::TRACE_TILE_SIDES;
            anyhow::bail!("--backward-tile must be one of {sides:?} (got {})", self.backward_tile.unwrap_or_default());
        }
        if tuning.checked_backward_column_lanes().is_err() {
            let most = plasticity_runtime::kernels::backward_trace::MAX_COLUMN_LANES;
            anyhow::bail!("--backward-column-lanes must be 1 to {most} (got {})", self.backward_column_lanes.unwrap_or_default());
        }
        if tuning.checked_forward_column_quads().is_err() {
            let most = plasticity_runtime::kernels::forward_step::MAX_COLUMN_QUADS;
            anyhow::bail!("--forward-column-quads must be 1 to {most} (got {})", self.forward_column_quads.unwrap_or_default());
        }
        if tuning.checked_trace_stripe().is_err() {
            anyhow::bail!(
                "--trace-stripe must be 0 (rows whole) or a multiple of 4 (got {}): the vec4 kernels read four columns at once",
                self.trace_stripe.unwrap_or_default()
            );
        }
        Ok(tuning)
    }

    /// The device, with `tuning` (from [`Self::tuning`], checked before anything else is) and the
    /// loop bounding these options ask for.
    pub fn context_with(&self, tuning: KernelTuning) -> anyhow::Result<GpuContext> {
        let mut ctx = GpuContext::new()?.with_wgpu_loop_bounding(self.wgpu_loop_bounding)?;
        ctx.tuning = tuning;
        Ok(ctx)
    }
}

/// The options that ask for `tuning`, as `train` and `bench` take them (what [`KernelArgs::tuning`]
/// reads back): one per choice `tuning` sets, none for those it leaves to the adapter.
pub fn kernel_flags(tuning: &KernelTuning) -> Vec<String> {
    let on_off = |b: bool| if b { "on" } else { "off" };
    let mut flags = Vec::new();
    let mut number = |flag: &str, value: Option<u32>| {
        if let Some(v) = value {
            flags.push(format!("{flag} {v}"));
        }
    };
    number("--forward-splits", tuning.forward_splits);
    number("--backward-groups", tuning.backward_groups);
    number("--forward-workgroup-size", tuning.forward_workgroup_size);
    number("--backward-workgroup-size", tuning.backward_workgroup_size);
    number("--backward-batch-slots", tuning.backward_batch_slots);
    number("--backward-tile", tuning.backward_tile);
    number("--backward-column-lanes", tuning.backward_column_lanes);
    number("--forward-column-quads", tuning.forward_column_quads);
    number("--trace-stripe", tuning.trace_stripe);
    if let Some(b) = tuning.forward_subgroups {
        flags.push(format!("--forward-subgroups {}", on_off(b)));
    }
    if let Some(b) = tuning.backward_hoist_columns {
        flags.push(format!("--backward-hoist-columns {}", on_off(b)));
    }
    if tuning.scalar_kernels {
        flags.push("--scalar-kernels".to_string());
    }
    if tuning.backward_store_every_step {
        flags.push("--backward-store-every-step".to_string());
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        kernels: KernelArgs,
    }

    fn parse(flags: &[String]) -> KernelTuning {
        let words = flags.iter().flat_map(|f| f.split(' ')).map(str::to_string);
        Command::try_parse_from(std::iter::once("plasticity".to_string()).chain(words)).unwrap().kernels.tuning().unwrap()
    }

    #[test]
    fn kernel_flags_read_back_as_the_same_tuning() {
        let every = KernelTuning {
            forward_splits: Some(8),
            backward_groups: Some(4),
            forward_workgroup_size: Some(32),
            backward_workgroup_size: Some(16),
            backward_batch_slots: Some(2),
            scalar_kernels: true,
            forward_subgroups: Some(false),
            backward_hoist_columns: Some(true),
            backward_store_every_step: true,
            backward_tile: Some(8),
            backward_column_lanes: Some(32),
            forward_column_quads: Some(2),
            trace_stripe: Some(64),
        };
        // Each choice alone, all of them, and none: a flag left out or misspelt reads back as the
        // adapter's choice, or fails to parse.
        let mut cases = vec![every, KernelTuning::default(), KernelTuning { forward_subgroups: Some(true), ..Default::default() }];
        let flags = kernel_flags(&every);
        assert_eq!(flags.len(), 13, "one flag per choice: {flags:?}");
        for flag in &flags {
            cases.push(parse(std::slice::from_ref(flag)));
        }
        for tuning in cases {
            assert_eq!(parse(&kernel_flags(&tuning)), tuning, "{:?}", kernel_flags(&tuning));
        }
    }
}
