//! `cargo bench -p plasticity-benches --bench backward_workgroup [-- N,B ...]`: training episodes whose
//! backward trace kernel runs in workgroups of 64 (a GPU's default) against the adapter's default
//! (`KernelTuning::backward_workgroup`: 8 on a CPU adapter), each pair in one process (see `paired`);
//! prints the median ratio of each round's two wall-clock times.

mod paired;

use plasticity_runtime::KernelTuning;
use plasticity_runtime::kernels::backward_trace;

fn main() {
    let default = paired::open_with(KernelTuning::default());
    let gpu_size = backward_trace::WORKGROUP_SIZE;
    let chosen = default.tuning.backward_workgroup(&default.adapter, &default.limits()).expect("the default size fits the device");
    println!("adapter: {} (default backward workgroup: {chosen})", default.adapter);
    let sizes = paired::sizes(&default, &[(64, 1), (64, 4), (64, 16), (256, 16)], &[(256, 1), (1000, 1), (1000, 64)]);
    let contexts = [paired::open_with(KernelTuning { backward_workgroup_size: Some(gpu_size), ..KernelTuning::default() }), default];
    for &(neurons, batch) in &sizes {
        let (ratio, wide, chosen_ms) = paired::paired(&contexts, neurons, batch, paired::training_episode);
        println!(
            "backward_workgroup N={neurons} B={batch} T=106: a training episode with backward workgroups of {chosen} takes \
             {ratio:.3}x the time of one with {gpu_size} (median of {} paired rounds; medians {chosen_ms:.1} ms and {wide:.1} ms)",
            paired::ROUNDS
        );
    }
}
