#![allow(dead_code)] // each bench uses the part it needs

//! Paired timing of two contexts of one adapter in one process, shared by the benches that compare
//! two builds or two kernels of the same step: episodes of the two alternate (the order swapped every
//! round), and the figure is the median ratio of each round's two wall-clock times. Pairing within a
//! process cancels the slow drifts of a shared machine, which moved `runtime bench`'s figures by up to
//! 1.5x between runs on lavapipe.

use std::time::Instant;

use plasticity_runtime::bench::{BenchCase, random_episode};
use plasticity_runtime::{EpisodeData, GpuContext, KernelTuning, Network, NetworkConfig, Trainer, TrainerConfig};

pub const ROUNDS: usize = 11;

/// One episode of a trainer on its context: [`training_episode`] or [`forward_episode`].
pub type Episode = fn(&mut Trainer, &GpuContext, &EpisodeData);

/// A context, or the error printed and the process ended with a failure.
pub fn open(context: plasticity_runtime::Result<GpuContext>) -> GpuContext {
    context.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    })
}

/// A context of the default adapter with `tuning`, or the error printed and the process ended.
pub fn open_with(tuning: KernelTuning) -> GpuContext {
    let mut ctx = open(GpuContext::new());
    ctx.tuning = tuning;
    ctx
}

/// The sizes named on the command line as N,B, else `cpu` on a CPU adapter and `gpu` on a GPU.
pub fn sizes(ctx: &GpuContext, cpu: &[(u32, u32)], gpu: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let named: Vec<(u32, u32)> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.split_once(',').and_then(|(n, b)| Some((n.parse().ok()?, b.parse().ok()?))))
        .collect();
    if !named.is_empty() {
        named
    } else if ctx.adapter.is_cpu() {
        cpu.to_vec()
    } else {
        gpu.to_vec()
    }
}

/// Medians over [`ROUNDS`] paired rounds of one episode (`episode`: a training or a forward episode)
/// of the paper's network at N neurons and batch B on each context: (time of the second over the
/// first, ms of the first, ms of the second).
pub fn paired(contexts: &[GpuContext; 2], neurons: u32, batch: u32, episode: Episode) -> (f64, f64, f64) {
    let case = BenchCase { neurons, batch, steps: 106, plasticity: Default::default() };
    let data = random_episode(case, 1);
    let config = NetworkConfig { neurons, ..Default::default() };
    let mut trainers: Vec<Trainer> = contexts
        .iter()
        .map(|ctx| {
            let mut trainer = Trainer::new(ctx, Network::new(ctx, &config).expect("network"), TrainerConfig::default()).expect("trainer");
            episode(&mut trainer, ctx, &data); // warm-up
            trainer
        })
        .collect();
    let (mut first, mut second, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut ms = [0.0; 2];
        for k in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let start = Instant::now();
            episode(&mut trainers[k], &contexts[k], &data);
            ms[k] = start.elapsed().as_secs_f64() * 1e3;
        }
        first.push(ms[0]);
        second.push(ms[1]);
        ratios.push(ms[1] / ms[0]);
    }
    (median(ratios), median(first), median(second))
}

pub fn training_episode(trainer: &mut Trainer, ctx: &GpuContext, data: &EpisodeData) {
    trainer.compute_gradients(ctx, data).expect("training episode");
}

pub fn forward_episode(trainer: &mut Trainer, ctx: &GpuContext, data: &EpisodeData) {
    trainer.evaluate(ctx, data).expect("forward episode");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
