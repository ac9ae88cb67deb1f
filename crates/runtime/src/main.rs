//! `plasticity`: the command line of the plasticity engine (`cargo run -p runtime --release -- <command>`).

mod bench;
mod images;
mod kernel_args;
mod plot;
mod rule_args;
mod train;
mod tune;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plasticity_runtime::GpuContext;

#[derive(Parser)]
#[command(name = "plasticity", version, about = "Train and benchmark differentiable-plasticity networks on the GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on the paper's pattern-memorisation or image-completion task, writing a run directory.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on fresh episodes.
    Eval(train::EvalArgs),
    /// Write a random network, episode and this engine's gradients for an independent check.
    ExportEpisode(train::ExportArgs),
    /// Measure the adapter's bandwidth ceiling, forward and training speed, and peak memory.
    Bench(bench::BenchArgs),
    /// Search the kernel options for the fastest training episode at one size on this device.
    Tune(tune::TuneArgs),
    /// Show the adapter, its limits, and the largest networks that fit.
    Info,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::train(&args),
        Command::Eval(args) => train::eval(&args),
        Command::ExportEpisode(args) => train::export_episode(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Tune(args) => tune::run(&args),
        Command::Info => info(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> anyhow::Result<()> {
    let ctx = GpuContext::new()?;
    let limits = ctx.limits();
    println!("adapter: {}", ctx.adapter);
    if ctx.adapter.is_cpu() {
        println!("note: this is a CPU (software) adapter; its timings are not GPU timings");
    }
    println!("max_storage_buffer_binding_size: {} bytes", limits.max_storage_buffer_binding_size);
    println!("max_buffer_size: {} bytes", limits.max_buffer_size);
    println!("max_storage_buffers_per_shader_stage: {}", limits.max_storage_buffers_per_shader_stage);
    let shuffles = ctx.forward_subgroup_kernel()?;
    let forward = if shuffles { "shares the history by subgroup shuffles" } else { "loads the history in every invocation" };
    if ctx.has_subgroups() {
        let (min, max) = (ctx.adapter.subgroup_min_size, ctx.adapter.subgroup_max_size);
        println!("subgroups: {min} to {max} lanes; the vec4 forward step {forward} (bench --forward-subgroups on|off)");
    } else {
        println!("subgroups: none on this device; the vec4 forward step {forward}");
    }
    let binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    // The flat parameters (w and alpha: 2 N^2 floats, and their gradient and Adam's moments beside
    // them) bound N; the trace (B, N, N) bounds the batch; the activation history (T + 1, B, N) is next.
    let largest = plasticity_runtime::NetworkConfig::default().largest_neurons_within(binding) as u64;
    println!("largest network: N = {largest} (the paper's: w and alpha, 2 N^2 floats, fill one binding)");
    println!("largest batch for the trace (B, N, N) to fit one binding:");
    for n in [256u64, 1000, 2048, 4096] {
        if n > largest {
            println!("  N = {n:>5}: too large (its parameters exceed one binding)");
            continue;
        }
        let max_batch = binding / (n * n * 4);
        println!(
            "  N = {n:>5}: batch up to {max_batch} (then at most {} steps for the history)",
            (binding / (max_batch.max(1) * n * 4)).saturating_sub(1)
        );
    }
    Ok(())
}
