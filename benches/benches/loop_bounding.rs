//! `cargo bench -p plasticity-benches --bench loop_bounding [-- N,B ...]`: training episodes with and
//! without wgpu's loop bounding (see `GpuContext::with_wgpu_loop_bounding`), on two contexts of one
//! adapter in one process, alternated episode by episode (the order swapped every round); prints the
//! median ratio of each round's two wall-clock times. Pairing within a process cancels the slow drifts
//! of a shared machine, which moved `runtime bench`'s figures by up to 1.5x between runs on lavapipe.

use std::time::Instant;

use plasticity_runtime::bench::{BenchCase, random_episode};
use plasticity_runtime::{GpuContext, Network, NetworkConfig, Trainer, TrainerConfig};

const ROUNDS: usize = 11;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let open = |bounding: bool| match GpuContext::new().and_then(|ctx| ctx.with_wgpu_loop_bounding(bounding)) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let contexts = [open(true), open(false)];
    println!("adapter: {}", contexts[0].adapter);
    let sizes: Vec<(u32, u32)> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.split_once(',').and_then(|(n, b)| Some((n.parse().ok()?, b.parse().ok()?))))
        .collect();
    let sizes = if !sizes.is_empty() {
        sizes
    } else if contexts[0].adapter.is_cpu() {
        vec![(256, 1), (256, 16), (1000, 1)]
    } else {
        vec![(256, 16), (1000, 1), (1000, 64)]
    };
    for (neurons, batch) in sizes {
        let case = BenchCase { neurons, batch, steps: 106, plasticity: Default::default() };
        let data = random_episode(case, 1);
        let config = NetworkConfig { neurons, ..Default::default() };
        let mut trainers: Vec<Trainer> = contexts
            .iter()
            .map(|ctx| {
                let mut trainer =
                    Trainer::new(ctx, Network::new(ctx, &config).expect("network"), TrainerConfig::default()).expect("trainer");
                trainer.compute_gradients(ctx, &data).expect("warm-up episode");
                trainer
            })
            .collect();
        let (mut with, mut without, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let mut ms = [0.0; 2];
            for k in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                let start = Instant::now();
                trainers[k].compute_gradients(&contexts[k], &data).expect("episode");
                ms[k] = start.elapsed().as_secs_f64() * 1e3;
            }
            with.push(ms[0]);
            without.push(ms[1]);
            ratios.push(ms[1] / ms[0]);
        }
        println!(
            "loop_bounding N={neurons} B={batch} T=106: a training episode without wgpu's loop bounding takes {:.3}x the time with it \
             (median of {ROUNDS} paired rounds; medians {:.1} ms without, {:.1} ms with)",
            median(ratios),
            median(without),
            median(with)
        );
    }
}
