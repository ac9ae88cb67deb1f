//! `cargo bench -p plasticity-benches --bench loop_bounding [-- N,B ...]`: training episodes with and
//! without wgpu's loop bounding (see `GpuContext::with_wgpu_loop_bounding`), paired in one process
//! (see `paired`); prints the median ratio of each round's two wall-clock times.

mod paired;

use plasticity_runtime::GpuContext;

fn main() {
    let open = |bounding: bool| paired::open(GpuContext::new().and_then(|ctx| ctx.with_wgpu_loop_bounding(bounding)));
    let contexts = [open(true), open(false)];
    println!("adapter: {}", contexts[0].adapter);
    for (neurons, batch) in paired::sizes(&contexts[0], &[(256, 1), (256, 16), (1000, 1)], &[(256, 16), (1000, 1), (1000, 64)]) {
        let (ratio, with, without) = paired::paired(&contexts, neurons, batch, paired::training_episode);
        println!(
            "loop_bounding N={neurons} B={batch} T=106: a training episode without wgpu's loop bounding takes {ratio:.3}x the time with it \
             (median of {} paired rounds; medians {without:.1} ms without, {with:.1} ms with)",
            paired::ROUNDS
        );
    }
}
