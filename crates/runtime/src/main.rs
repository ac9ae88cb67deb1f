//! `plasticity`: the command line of the plasticity engine (`cargo run -p runtime --release -- <command>`).

mod bench;

use std::process::ExitCode;

use anyhow::Context;
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
    /// Measure the adapter's bandwidth ceiling, forward and training speed, and peak memory.
    Bench(bench::BenchArgs),
    /// Show the adapter, its limits, and the largest networks that fit.
    Info,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
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
    let binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    println!("the trace (B, N, N) must fit one binding: for example");
    for n in [256u64, 1000, 2048, 4096] {
        let max_batch = binding / (n * n * 4);
        println!("  N = {n:>5}: batch up to {max_batch}");
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`, so that
/// a reader never sees a half-written file.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}
