//! `cargo bench -p plasticity-benches --bench reversal_stores [-- N,B ...]`: training episodes whose
//! reversed backward sweep stores the trace every other step (the default,
//! `backward_trace::reversal_schedule`) against every step (`KernelTuning::backward_store_every_step`),
//! paired in one process (see `paired`); prints the median ratio of each round's two wall-clock times.

mod paired;

use plasticity_runtime::KernelTuning;

fn main() {
    let open = |every_step: bool| paired::open_with(KernelTuning { backward_store_every_step: every_step, ..KernelTuning::default() });
    let contexts = [open(true), open(false)];
    println!("adapter: {}", contexts[0].adapter);
    for (neurons, batch) in paired::sizes(&contexts[0], &[(256, 1), (256, 16), (1000, 1)], &[(256, 16), (1000, 1), (1000, 64)]) {
        let (ratio, every_step, alternate) = paired::paired(&contexts, neurons, batch, paired::training_episode);
        println!(
            "reversal_stores N={neurons} B={batch} T=106: a training episode storing the reversed trace every other step takes \
             {ratio:.3}x the time of one storing it every step (median of {} paired rounds; medians {alternate:.1} ms and {every_step:.1} ms)",
            paired::ROUNDS
        );
    }
}
