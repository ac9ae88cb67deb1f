//! `cargo bench -p plasticity-benches --bench backward_hoist_columns [-- N,B ...]`: training episodes
//! with backward_trace_vec4's column values loaded once per four rows and hoisted once per pass
//! (`KernelTuning::backward_hoist_columns`), paired in one process (see `paired`); prints the median
//! ratio of each round's two wall-clock times.

mod paired;

use plasticity_runtime::KernelTuning;

fn main() {
    let open = |hoist: bool| paired::open_with(KernelTuning { backward_hoist_columns: Some(hoist), ..KernelTuning::default() });
    let contexts = [open(false), open(true)];
    println!("adapter: {}", contexts[0].adapter);
    for (neurons, batch) in paired::sizes(&contexts[0], &[(256, 1), (256, 16), (1000, 1)], &[(256, 16), (1000, 1), (1000, 64)]) {
        let (ratio, loads, hoisted) = paired::paired(&contexts, neurons, batch, paired::training_episode);
        println!(
            "backward_hoist_columns N={neurons} B={batch} T=106: a training episode with the column values hoisted takes {ratio:.3}x the \
             time without (median of {} paired rounds; medians {hoisted:.1} ms hoisted, {loads:.1} ms per four rows)",
            paired::ROUNDS
        );
    }
}
