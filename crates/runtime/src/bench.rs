//! `bench`: the figures behind every speed and memory claim of the project.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use plasticity_runtime::GpuContext;
use plasticity_runtime::bench::{self, BenchCase, CaseResult, MemoryScaling};
use plasticity_runtime::profile::KernelProfile;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Neuron counts to measure (default: 256,1000 on a GPU, 64,256 on a CPU adapter).
    #[arg(long, value_delimiter = ',')]
    neurons: Option<Vec<u32>>,
    /// Batch sizes to measure (default: 1,16,64 on a GPU, 1,16 on a CPU adapter).
    #[arg(long, value_delimiter = ',')]
    batch: Option<Vec<u32>>,
    /// Steps per episode (the pattern task's 106).
    #[arg(long, default_value_t = 106)]
    steps: u32,
    /// Timed repetitions per figure (the median is reported; on lavapipe the forward step's median
    /// of 3 spread over 2x between runs, of 5 within 10%).
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// Untimed warm-up episodes before each figure.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Episode lengths for the memory-growth figure, at --memory-size.
    #[arg(long, value_delimiter = ',', default_values_t = [100u32, 1000])]
    memory_steps: Vec<u32>,
    /// Skip the memory-growth figure (to time a few sizes quickly).
    #[arg(long)]
    no_memory: bool,
    /// Neurons and batch of the memory-growth figure, as N,B (default: the paper's 1000,1 on a GPU,
    /// 512,1 on a CPU adapter).
    #[arg(long, value_delimiter = ',')]
    memory_size: Option<Vec<u32>>,
    /// A smoke run: small sizes, one repetition, no warm-up.
    #[arg(long)]
    quick: bool,
    /// Also write every figure, with the adapter and the configuration, to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Instead of the default set, time every rule at one size (the first --neurons and --batch
    /// values, default 256 and 4) and print each relative to the decay rule.
    #[arg(long)]
    compare_rules: bool,
    /// Chunks S of the forward step's sum over pre-synaptic neurons (default: chosen from the adapter
    /// and size; 1 on a CPU adapter).
    #[arg(long)]
    forward_splits: Option<u32>,
    /// Batch groups Z of the backward trace kernel (default: chosen from the adapter and size; 1 on a
    /// CPU adapter).
    #[arg(long)]
    backward_groups: Option<u32>,
    /// Invocations per forward_step workgroup (default: 64 on a GPU, 8 on a CPU adapter, where each
    /// workgroup runs on one thread).
    #[arg(long)]
    forward_workgroup_size: Option<u32>,
    /// Batch elements per pass of the backward trace kernel, 1 to 4 (default: 4, or ceil(B / Z) when
    /// smaller); fewer take more passes but fewer registers per invocation.
    #[arg(long)]
    backward_batch_slots: Option<u32>,
    /// Run the scalar rule kernels even where N is a multiple of 4 and the vec4 ones could run (the
    /// table's W column says which ran), to compare the two on a device.
    #[arg(long)]
    scalar_kernels: bool,
    /// Whether the vec4 forward step shares x(t-1) and x(t-2) between the invocations of a subgroup
    /// by shuffles instead of having each load them: on or off (default: on for a CPU adapter with
    /// subgroups, off on a GPU, where it has not been measured); the table's G column says where it ran.
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
    forward_subgroups: Option<bool>,
    /// Whether the vec4 backward trace kernel loads each column quad's values once per pass instead
    /// of once per four rows (more registers, fewer loads): on or off (default: on for a CPU adapter
    /// where a pass takes 2 or more batch elements, off on a GPU, where it has not been measured); the
    /// header says which.
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
    backward_hoist_columns: Option<bool>,
    /// Have every step of the reversed backward sweep store the recovered trace and its gradient
    /// instead of every other step (whose next step recovers them once more): two more writes per
    /// element every other step; to compare the two on a device.
    #[arg(long)]
    backward_store_every_step: bool,
    /// Side of the square block of the trace one backward trace invocation walks: 4, 8 or 16
    /// (default: 16 on a CPU adapter, on a GPU smaller where the batch is small); a smaller side
    /// gives (16 / side)^2 times the invocations (for a GPU to hide its load latency with) for more
    /// partial-sum traffic.
    #[arg(long)]
    backward_tile: Option<u32>,
    /// Compile the kernels with wgpu's loop bounding (a 64-bit counter in every loop), which the
    /// runtime leaves out of the kernels whose loops are all counted; to compare the two on a device.
    #[arg(long)]
    wgpu_loop_bounding: bool,
    /// Also time every kernel of one training episode per size (GPU timestamps around each
    /// dispatch; needs the adapter's TIMESTAMP_QUERY_INSIDE_PASSES).
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    rule: crate::rule_args::RuleArgs,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.forward_splits != Some(0) && args.backward_groups != Some(0),
        "--forward-splits and --backward-groups must be at least 1"
    );
    // Refused before the adapter is opened and anything is timed, not after the table.
    for (option, values) in
        [("--neurons", args.neurons.as_deref()), ("--batch", args.batch.as_deref()), ("--memory-steps", Some(&args.memory_steps[..]))]
    {
        anyhow::ensure!(
            values.is_none_or(|v| v.iter().all(|&x| x >= 1)),
            "{option} values must be at least 1 (got {:?}){}",
            values.unwrap_or_default(),
            if option == "--memory-steps" { "; --no-memory skips the memory-growth figure" } else { "" }
        );
    }
    anyhow::ensure!(args.steps >= 1 && args.reps >= 1, "--steps and --reps must be at least 1");
    let tuning = plasticity_runtime::KernelTuning {
        forward_splits: args.forward_splits,
        backward_groups: args.backward_groups,
        forward_workgroup_size: args.forward_workgroup_size,
        backward_batch_slots: args.backward_batch_slots,
        scalar_kernels: args.scalar_kernels,
        forward_subgroups: args.forward_subgroups,
        backward_hoist_columns: args.backward_hoist_columns,
        backward_store_every_step: args.backward_store_every_step,
        backward_tile: args.backward_tile,
    };
    // The trainer's own range check, run now rather than after the ceiling is measured.
    let chunk = plasticity_runtime::kernels::backward_trace::CHUNK;
    if tuning.backward_slots(1, 1).is_err() {
        anyhow::bail!("--backward-batch-slots must be 1 to {chunk} (got {})", args.backward_batch_slots.unwrap_or_default());
    }
    if tuning.checked_backward_tile().is_err() {
        let sides = plasticity_runtime::kernels::TRACE_TILE_SIDES;
        anyhow::bail!("--backward-tile must be one of {sides:?} (got {})", args.backward_tile.unwrap_or_default());
    }
    if let Some(path) = &args.json {
        // Checked now: the file is written after every measurement, and a bad path must not lose them.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        anyhow::ensure!(!path.is_dir(), "--json {} is a directory; give a file name", path.display());
        anyhow::ensure!(dir.is_dir(), "--json {}: the directory {} does not exist; create it first", path.display(), dir.display());
    }
    let mut ctx = GpuContext::new()?.with_wgpu_loop_bounding(args.wgpu_loop_bounding)?;
    ctx.tuning = tuning;
    if args.profile {
        // Refused before anything is measured rather than after the table.
        plasticity_runtime::profile::KernelProfiler::check_supported(&ctx)?;
    }
    let cpu = ctx.adapter.is_cpu();
    println!("adapter: {}", ctx.adapter);
    if cpu {
        println!("note: a CPU (software) adapter: these times are not GPU times; compare ratios, not absolute figures");
    }
    let (neurons, batches, reps, warmup, memory_steps) = if args.quick {
        (vec![64], vec![1, 4], 1, 0, vec![50, 200])
    } else {
        let neurons = args.neurons.clone().unwrap_or(if cpu { vec![64, 256] } else { vec![256, 1000] });
        let batches = args.batch.clone().unwrap_or(if cpu { vec![1, 16] } else { vec![1, 16, 64] });
        (neurons, batches, args.reps, args.warmup, args.memory_steps.clone())
    };
    let plasticity = args.rule.plasticity()?;
    if args.compare_rules {
        return compare_rules(
            &ctx,
            args,
            neurons.first().copied().filter(|_| args.neurons.is_some()).unwrap_or(256),
            batches.first().copied().filter(|_| args.batch.is_some()).unwrap_or(4),
            reps,
            warmup,
        );
    }
    let memory_size = args.memory_size.clone().unwrap_or(if cpu { vec![512, 1] } else { vec![1000, 1] });
    anyhow::ensure!(
        memory_size.len() == 2 && memory_size.iter().all(|&v| v >= 1),
        "--memory-size takes two positive numbers, N,B (got {memory_size:?})"
    );
    let stream_elements = if args.quick { 1 << 22 } else { 1 << 25 };
    let triad = bench::StreamTriad::new(&ctx, stream_elements).context("streaming benchmark")?;
    let ceiling = triad.median_of(&ctx, if args.quick { 2 } else { 5 }).context("streaming benchmark")?;
    println!("streaming ceiling (c = a + s*b): {ceiling:.2} GB/s");
    println!("  and again in every repetition, just before its episodes: ceil is their median, %ceil the median of each one's share");
    println!("timing: medians of {} (the memory-growth times: wall clock)", bench::timing_method(&ctx));
    println!("rule: {}", crate::rule_args::describe(&plasticity));
    println!(
        "work split: S chunks of the forward step's sum over i, Z batch groups of the backward trace kernel ({}), \
         bk the side of the square blocks of the trace it walks ({}); \
         W: 4 where the vec4 rule kernels ran, 1 for the scalar ones{}; G: s where the forward step shared the history \
         by subgroup shuffles{}; forward workgroups of {} invocations; \
         backward passes of {}, column values loaded {}, the reversed trace and its gradient stored {}; \
         wgpu's loop bounding {}\n",
        if args.forward_splits.is_some() || args.backward_groups.is_some() { "set by options" } else { "chosen for this adapter" },
        if args.backward_tile.is_some() { "set by --backward-tile" } else { "chosen for this adapter" },
        if args.scalar_kernels { " (--scalar-kernels)" } else { "" },
        match args.forward_subgroups {
            Some(on) => format!(" (--forward-subgroups {})", if on { "on" } else { "off" }),
            None => String::new(),
        },
        ctx.tuning.forward_workgroup(&ctx.adapter),
        match args.backward_batch_slots {
            Some(k) => format!("{k} batch elements (--backward-batch-slots)"),
            None => format!("up to {chunk} batch elements"),
        },
        match args.backward_hoist_columns {
            Some(true) => "once per pass (--backward-hoist-columns on)",
            Some(false) => "once per four rows (--backward-hoist-columns off)",
            None if ctx.adapter.is_cpu() => "once per pass where a pass takes 2 or more batch elements",
            None => "once per four rows",
        },
        if args.backward_store_every_step { "every step (--backward-store-every-step)" } else { "every other step" },
        if ctx.wgpu_loop_bounding() {
            "in every kernel (--wgpu-loop-bounding)"
        } else {
            "only in the kernels whose loops are not all counted"
        }
    );

    println!(
        "{:>6} {:>5} {:>5} | {:>11} {:>12} {:>7} {:>9} | {:>9} {:>9} {:>6} {:>9} {:>6} | {:>10} {:>4} {:>4} {:>3} {:>2} {:>2} {:>1}",
        "N",
        "B",
        "T",
        "fwd ms/step",
        "train ms/ep",
        "train/f",
        "ep/s",
        "ceil GB/s",
        "fwd GB/s",
        "%ceil",
        "bwd GB/s",
        "%ceil",
        "peak MiB",
        "K",
        "S",
        "Z",
        "bk",
        "W",
        "G"
    );
    let mut results = Vec::new();
    for &n in &neurons {
        for &b in &batches {
            let case = BenchCase { neurons: n, batch: b, steps: args.steps, plasticity };
            let r = bench::bench_case(&ctx, case, warmup, reps, Some(&triad)).with_context(|| format!("N = {n}, B = {b}"))?;
            print_case(&r);
            results.push(r);
        }
    }
    let mut profiles = Vec::new();
    if args.profile {
        println!("\nGPU time per kernel in one training episode (timestamps around each dispatch):");
        for r in &results {
            let profile =
                bench::profile_case(&ctx, r.case).with_context(|| format!("profiling N = {}, B = {}", r.case.neurons, r.case.batch))?;
            print_profile(r, &profile);
            profiles.push(profile);
        }
    }
    let (mn, mb) = if args.quick { (32, 2) } else { (memory_size[0], memory_size[1]) };
    let memory = if args.no_memory {
        None
    } else {
        let memory = bench::memory_scaling(&ctx, mn, mb, &memory_steps, 1, plasticity).context("memory scaling")?;
        print_memory(&memory);
        Some(memory)
    };
    if let Some(path) = &args.json {
        write_json(path, &ctx, ceiling, &results, &profiles, memory.as_ref(), args)?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

/// Every rule at one size, relative to the decay rule: the figures behind the per-rule claims.
fn compare_rules(ctx: &GpuContext, args: &BenchArgs, n: u32, b: u32, reps: u32, warmup: u32) -> anyhow::Result<()> {
    use plasticity_runtime::{AlphaShape, EtaShape, Modulation, Plasticity, Rule};
    let p = Plasticity::PAPER;
    let rules = [
        p,
        Plasticity { rule: Rule::Oja, ..p },
        Plasticity { rule: Rule::Additive, clip: Some(1.0), ..p },
        Plasticity { clip: Some(1.0), ..p },
        Plasticity { eta: EtaShape::PerNeuron, alpha: AlphaShape::PerNeuron, ..p },
        Plasticity { rule: Rule::Additive, clip: Some(1.0), modulation: Modulation::Simple, ..p },
        Plasticity { rule: Rule::Additive, clip: Some(1.0), modulation: Modulation::PerNeuron, ..p },
        Plasticity { clip: Some(1.0), modulation: Modulation::Simple, retroactive: true, ..p },
    ];
    println!("timing: medians of {}; N = {n}, B = {b}, T = {}\n", bench::timing_method(ctx), args.steps);
    println!(
        "{:<32} | {:>11} {:>8} | {:>13} {:>8} | {:>10} {:>9} {:>4}",
        "rule", "fwd ms/step", "vs decay", "train ms/step", "vs decay", "peak MiB", "backward", "K"
    );
    let mut base: Option<(f64, f64)> = None;
    for spec in rules {
        let case = BenchCase { neurons: n, batch: b, steps: args.steps, plasticity: spec };
        let r = bench::bench_case(ctx, case, warmup, reps, None).with_context(|| crate::rule_args::describe(&spec))?;
        let train_per_step = r.train_ms_per_episode / args.steps as f64;
        let (f0, t0) = *base.get_or_insert((r.forward_ms_per_step, train_per_step));
        println!(
            "{:<32} | {:>11.3} {:>7.2}x | {:>13.3} {:>7.2}x | {:>10.2} {:>9} {:>4}",
            crate::rule_args::describe(&spec),
            r.forward_ms_per_step,
            r.forward_ms_per_step / f0,
            train_per_step,
            train_per_step / t0,
            mib(r.peak_bytes),
            if spec.reversible() { "reverse" } else { "recompute" },
            r.checkpoint_segment
        );
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_case(r: &CaseResult) {
    println!(
        "{:>6} {:>5} {:>5} | {:>11.3} {:>12.1} {:>7.2} {:>9.2} | {:>9.2} {:>9.2} {:>5.0}% {:>9.2} {:>5.0}% | {:>10.2} {:>4} {:>4} {:>3} {:>2} {:>2} {:>1}",
        r.case.neurons,
        r.case.batch,
        r.case.steps,
        r.forward_ms_per_step,
        r.train_ms_per_episode,
        r.train_over_forward,
        r.episodes_per_s,
        r.ceiling_gbps,
        r.forward_gbps,
        100.0 * r.forward_of_ceiling,
        r.backward_gbps,
        100.0 * r.backward_of_ceiling,
        mib(r.peak_bytes),
        r.checkpoint_segment,
        r.forward_splits,
        r.backward_groups,
        r.backward_tile,
        r.kernel_width,
        if r.forward_subgroups { "s" } else { "-" }
    );
}

/// One line per kernel, the largest first: ms per episode, share of the timed total, dispatches.
fn print_profile(r: &CaseResult, p: &KernelProfile) {
    let total = p.total_seconds();
    println!(
        "  N = {}, B = {}: {:.1} ms in {} dispatches (the table's median episode: {:.1} ms)",
        r.case.neurons,
        r.case.batch,
        total * 1e3,
        p.kernels.iter().map(|k| k.dispatches).sum::<u32>(),
        r.train_ms_per_episode
    );
    for k in &p.kernels {
        println!("    {:<28} {:>10.3} ms {:>5.1}% {:>6} dispatches", k.kernel, k.seconds * 1e3, 100.0 * k.seconds / total, k.dispatches);
    }
    if p.untimed_dispatches > 0 {
        println!("    ({} more dispatches past the timestamp capacity were not timed)", p.untimed_dispatches);
    }
}

fn print_memory(m: &MemoryScaling) {
    println!("\nmemory against episode length (training, N = {}, B = {}):", m.neurons, m.batch);
    for p in &m.points {
        let b = &p.breakdown;
        println!(
            "  T = {:>5}: peak {:>8.2} MiB, {:.3} ms per step  (history {:.2} MiB, trace checkpoints {:.2} MiB, recompute slots {:.2} MiB, rest {:.2} MiB)",
            p.steps,
            mib(p.peak_bytes),
            p.train_ms_per_step,
            mib(b.history),
            mib(b.checkpoints),
            mib(b.recompute_scratch),
            mib(b.rest)
        );
    }
    if let (Some(first), Some(last)) = (m.points.first(), m.points.last()) {
        println!("  T = {} uses {:.2}x the memory of T = {}", last.steps, last.peak_bytes as f64 / first.peak_bytes as f64, first.steps);
    }
}

fn write_json(
    path: &std::path::Path,
    ctx: &GpuContext,
    ceiling: f64,
    results: &[CaseResult],
    profiles: &[KernelProfile],
    memory: Option<&MemoryScaling>,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let cases: Vec<serde_json::Value> = results
        .iter()
        .enumerate()
        .map(|(c, r)| {
            let profile = profiles.get(c).map(|p| {
                serde_json::json!({
                    "kernels": p.kernels.iter().map(|k| serde_json::json!({
                        "kernel": k.kernel, "dispatches": k.dispatches, "ms_per_episode": k.seconds * 1e3,
                    })).collect::<Vec<_>>(),
                    "untimed_dispatches": p.untimed_dispatches,
                })
            });
            serde_json::json!({
                "neurons": r.case.neurons, "batch": r.case.batch, "steps": r.case.steps,
                "forward_ms_per_step": r.forward_ms_per_step,
                "train_ms_per_episode": r.train_ms_per_episode,
                "train_over_forward": r.train_over_forward,
                "episodes_per_s": r.episodes_per_s,
                "stream_ceiling_gbps": r.ceiling_gbps,
                "forward_gbps": r.forward_gbps, "forward_of_ceiling": r.forward_of_ceiling,
                "backward_gbps": r.backward_gbps, "backward_of_ceiling": r.backward_of_ceiling,
                "peak_bytes": r.peak_bytes,
                "checkpoint_segment": r.checkpoint_segment,
                "forward_splits": r.forward_splits, "backward_groups": r.backward_groups,
                "kernel_width": r.kernel_width,
                "forward_subgroups": r.forward_subgroups,
                "backward_hoist_columns": r.backward_hoist_columns,
                "backward_tile": r.backward_tile,
                "profile": profile,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "adapter": {
            "name": ctx.adapter.name, "backend": format!("{:?}", ctx.adapter.backend),
            "device_type": format!("{:?}", ctx.adapter.device_type), "driver": ctx.adapter.driver,
        },
        "timing": bench::timing_method(ctx),
        "config": {
            "steps": args.steps, "reps": args.reps, "warmup": args.warmup, "quick": args.quick, "scalar_kernels": args.scalar_kernels,
            "wgpu_loop_bounding": ctx.wgpu_loop_bounding(),
            "forward_workgroup_size": ctx.tuning.forward_workgroup(&ctx.adapter),
            // null: the default (on for a CPU adapter with subgroups); each case says where it ran.
            "forward_subgroups": ctx.tuning.forward_subgroups,
            // null: the default (on a CPU adapter at 2 or more batch elements per pass); each case says.
            "backward_hoist_columns": ctx.tuning.backward_hoist_columns,
            "backward_store_every_step": ctx.tuning.backward_store_every_step,
            // null: chosen per case for the adapter; each case says.
            "backward_tile": ctx.tuning.backward_tile,
            // null: the default, min(4, ceil(B / Z)) per case.
            "backward_batch_slots": ctx.tuning.backward_batch_slots,
        },
        "stream_ceiling_gbps": ceiling,
        "cases": cases,
        // null under --no-memory.
        "memory_scaling": memory.map(|memory| serde_json::json!({
            "neurons": memory.neurons, "batch": memory.batch,
            "points": memory.points.iter().map(|p| serde_json::json!({
                "steps": p.steps, "peak_bytes": p.peak_bytes, "train_ms_per_step": p.train_ms_per_step,
                "history_bytes": p.breakdown.history, "checkpoint_bytes": p.breakdown.checkpoints,
                "recompute_scratch_bytes": p.breakdown.recompute_scratch,
            })).collect::<Vec<_>>(),
        })),
    });
    plasticity_runtime::checkpoint::write_atomically(path, serde_json::to_string_pretty(&doc)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
