//! `cargo bench -p plasticity-benches --bench backward_column_lanes [-- N,B ...]`: training episodes
//! with backward_trace's columns interleaved over a warp (`TRACE_LANES` invocations, a GPU's default)
//! and contiguous in each invocation (1, a CPU adapter's) (`KernelTuning::backward_column_lanes`),
//! paired in one process (see `paired`); prints the median ratio of each round's two wall-clock
//! times.

mod paired;

use plasticity_runtime::KernelTuning;
use plasticity_runtime::kernels::TRACE_LANES;

fn main() {
    let open = |lanes: u32| paired::open_with(KernelTuning { backward_column_lanes: Some(lanes), ..KernelTuning::default() });
    let contexts = [open(TRACE_LANES), open(1)];
    println!("adapter: {}", contexts[0].adapter);
    for (neurons, batch) in paired::sizes(&contexts[0], &[(256, 1), (256, 16), (1000, 1)], &[(256, 16), (1000, 1), (1000, 64)]) {
        let (ratio, interleaved, contiguous) = paired::paired(&contexts, neurons, batch, paired::training_episode);
        println!(
            "backward_column_lanes N={neurons} B={batch} T=106: a training episode with contiguous backward columns takes {ratio:.3}x \
             the time of one with columns interleaved over {TRACE_LANES} lanes (median of {} paired rounds; medians {contiguous:.1} ms \
             contiguous, {interleaved:.1} ms interleaved)",
            paired::ROUNDS
        );
    }
}
