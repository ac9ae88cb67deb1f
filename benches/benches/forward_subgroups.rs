//! `cargo bench -p plasticity-benches --bench forward_subgroups [-- N,B ...]`: forward and training
//! episodes with the vec4 forward step loading the history in every invocation (`forward_step_vec4`)
//! and sharing it by subgroup shuffles (`forward_step_vec4_subgroup`; see
//! `KernelTuning::forward_subgroups`), paired in one process (see `paired`); prints the median ratio
//! of each round's two wall-clock times. Needs an adapter with subgroups.

mod paired;

use plasticity_runtime::KernelTuning;

fn main() {
    let open = |subgroups: bool| paired::open_with(KernelTuning { forward_subgroups: Some(subgroups), ..KernelTuning::default() });
    let contexts = [open(false), open(true)];
    println!("adapter: {}", contexts[0].adapter);
    if !contexts[1].has_subgroups() {
        eprintln!("error: this adapter has no subgroups (wgpu::Features::SUBGROUP), so forward_step_vec4_subgroup cannot run here");
        std::process::exit(1);
    }
    for (neurons, batch) in paired::sizes(&contexts[0], &[(256, 1), (256, 16), (1000, 1)], &[(256, 16), (1000, 1), (1000, 64)]) {
        let episodes: [(&str, paired::Episode); 2] = [("forward", paired::forward_episode), ("training", paired::training_episode)];
        for (what, episode) in episodes {
            let (ratio, loads, shuffles) = paired::paired(&contexts, neurons, batch, episode);
            println!(
                "forward_subgroups N={neurons} B={batch} T=106: a {what} episode with subgroup shuffles takes {ratio:.3}x the time without \
                 (median of {} paired rounds; medians {shuffles:.1} ms with, {loads:.1} ms without)",
                paired::ROUNDS
            );
        }
    }
}
