//! `cargo bench -p plasticity-benches`: the plastic step's kernels at a few sizes, measured with
//! the same code as `runtime bench` (medians of wall clock around finished submissions).

use plasticity_runtime::GpuContext;
use plasticity_runtime::bench::{self, BenchCase};

fn main() {
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("adapter: {}", ctx.adapter);
    let sizes: &[(u32, u32)] = if ctx.adapter.is_cpu() { &[(64, 4), (256, 4)] } else { &[(256, 16), (1000, 16)] };
    // Measured in every repetition, just before its episodes, as `runtime bench` does.
    let triad = bench::StreamTriad::new(&ctx, 1 << 24).expect("streaming benchmark");
    for &(neurons, batch) in sizes {
        let case = BenchCase { neurons, batch, steps: 106, plasticity: Default::default() };
        let r = bench::bench_case(&ctx, case, 1, 3, Some(&triad)).expect("bench case");
        let ceiling = r.ceiling_gbps;
        println!(
            "plastic_step N={neurons} B={batch} T=106: streaming ceiling {ceiling:.2} GB/s, forward {:.3} ms/step ({:.0}% of ceiling), training {:.1} ms/episode ({:.2}x forward, backward {:.0}% of ceiling)",
            r.forward_ms_per_step,
            100.0 * r.forward_of_ceiling,
            r.train_ms_per_episode,
            r.train_over_forward,
            100.0 * r.backward_of_ceiling
        );
    }
}
