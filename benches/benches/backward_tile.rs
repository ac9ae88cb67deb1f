//! `cargo bench -p plasticity-benches --bench backward_tile [-- N,B ...]`: training episodes whose
//! backward trace kernel walks blocks of side 8 and 4 (`KernelTuning::backward_tile`) against the
//! default 16, each pair in one process (see `paired`); prints the median ratio of each round's two
//! wall-clock times.

mod paired;

use plasticity_runtime::KernelTuning;
use plasticity_runtime::kernels::TRACE_TILE;

fn main() {
    let open = |side: u32| paired::open_with(KernelTuning { backward_tile: Some(side), ..KernelTuning::default() });
    let default = open(TRACE_TILE);
    println!("adapter: {}", default.adapter);
    let sizes = paired::sizes(&default, &[(64, 1), (256, 1), (256, 16)], &[(1000, 1), (1000, 64), (256, 16)]);
    for side in [8, 4] {
        let contexts = [default.clone(), open(side)];
        for &(neurons, batch) in &sizes {
            let (ratio, base, smaller) = paired::paired(&contexts, neurons, batch, paired::training_episode);
            println!(
                "backward_tile N={neurons} B={batch} T=106: a training episode with backward blocks of {side} x {side} takes \
                 {ratio:.3}x the time of one with {TRACE_TILE} x {TRACE_TILE} (median of {} paired rounds; medians {smaller:.1} ms \
                 and {base:.1} ms)",
                paired::ROUNDS
            );
        }
    }
}
