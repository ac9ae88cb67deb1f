//! `cargo bench -p plasticity-benches --bench forward_column_quads [-- N,B ...]`: forward and training
//! episodes with one column quad per invocation of the vec4 forward step (a GPU's default) and
//! `MAX_COLUMN_QUADS` (a CPU adapter's) (`KernelTuning::forward_column_quads`), paired in one process
//! (see `paired`); prints the median ratio of each round's two wall-clock times.

mod paired;

use plasticity_runtime::KernelTuning;
use plasticity_runtime::kernels::forward_step::MAX_COLUMN_QUADS;

fn main() {
    let open = |quads: u32| paired::open_with(KernelTuning { forward_column_quads: Some(quads), ..KernelTuning::default() });
    let contexts = [open(1), open(MAX_COLUMN_QUADS)];
    println!("adapter: {}", contexts[0].adapter);
    let sizes = paired::sizes(&contexts[0], &[(64, 1), (256, 1), (256, 16), (1000, 1)], &[(256, 16), (1000, 1), (1000, 64)]);
    for (neurons, batch) in sizes {
        let episodes: [(&str, paired::Episode); 2] = [("forward", paired::forward_episode), ("training", paired::training_episode)];
        for (what, episode) in episodes {
            let (ratio, one, many) = paired::paired(&contexts, neurons, batch, episode);
            println!(
                "forward_column_quads N={neurons} B={batch} T=106: a {what} episode with {MAX_COLUMN_QUADS} column quads per forward \
                 invocation takes {ratio:.3}x the time of one with 1 (median of {} paired rounds; medians {many:.1} ms with \
                 {MAX_COLUMN_QUADS}, {one:.1} ms with 1)",
                paired::ROUNDS
            );
        }
    }
}
