//! How the step kernels divide their work between invocations.
//!
//! A forward step has N * ceil(B / 4) natural invocations (one per post-synaptic neuron and batch
//! tile) and backward_trace has ceil(N / 16)^2 (one per 16 x 16 block of the trace). On a CPU adapter
//! that is plenty, and every extra pass costs time. A GPU hides memory latency only with many times
//! more invocations in flight than that at the paper's sizes (an H200 holds about 270,000 threads,
//! against 16,000 natural forward invocations at N = 1000, B = 64), so there the forward step's sum
//! over i is split into chunks (`forward_finish` adds them) and backward_trace runs batch groups side
//! by side, each with its own dw, dalpha and eta accumulators (`finish_gradients` adds them).

use crate::context::AdapterSummary;
use plasticity_kernels::{backward_trace, div_ceil, forward_step};

/// Invocations a split forward step aims for on a GPU: about one full H200 (132 SMs x 2048).
pub const GPU_FORWARD_INVOCATIONS: u32 = 1 << 18;
/// The shortest chunk of the forward sum worth its own invocation: shorter ones spend more on
/// their partial sum's write and read than they save.
pub const MIN_SPLIT_LEN: u32 = 8;

/// Work division of the step kernels; `None` chooses from the adapter and the size (see the module
/// docs). The choice never changes results beyond f32 rounding of the split sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTuning {
    /// Chunks of the forward step's sum over pre-synaptic neurons (1: unsplit).
    pub forward_splits: Option<u32>,
    /// Batch groups of backward_trace (1: one group walks the whole batch).
    pub backward_groups: Option<u32>,
}

impl KernelTuning {
    /// `(splits, split_len)` of the forward step at N neurons and batch B.
    pub fn forward_split(&self, adapter: &AdapterSummary, n: u32, batch: u32) -> (u32, u32) {
        let wanted = self.forward_splits.unwrap_or_else(|| {
            if adapter.is_cpu() {
                return 1;
            }
            let natural = forward_step::workgroups(n, batch, 1).iter().product::<u32>() * forward_step::WORKGROUP_SIZE;
            div_ceil(GPU_FORWARD_INVOCATIONS, natural).min(div_ceil(n, MIN_SPLIT_LEN))
        });
        forward_step::split(n, wanted)
    }

    /// Batch groups of backward_trace at batch B: at most one per CHUNK batch elements.
    pub fn backward_groups(&self, adapter: &AdapterSummary, batch: u32) -> u32 {
        let most = div_ceil(batch, backward_trace::CHUNK);
        let wanted = self.backward_groups.unwrap_or(if adapter.is_cpu() { 1 } else { most });
        wanted.clamp(1, most)
    }
}
