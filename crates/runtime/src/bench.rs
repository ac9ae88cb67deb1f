//! `bench`: the figures behind every speed and memory claim of the project.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use plasticity_runtime::bench::{self, BenchCase, CaseResult, MemoryScaling};
use plasticity_runtime::profile::KernelProfile;
use plasticity_runtime::{GpuContext, NetworkConfig, Plasticity};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Neuron counts to measure (default: 256,1000 on a GPU, 64,256 on a CPU adapter, 64 under --quick).
    #[arg(long, value_delimiter = ',')]
    neurons: Option<Vec<u32>>,
    /// Batch sizes to measure (default: 1,16,64 on a GPU, 1,16 on a CPU adapter, 1,4 under --quick).
    #[arg(long, value_delimiter = ',')]
    batch: Option<Vec<u32>>,
    /// Steps per episode (the pattern task's 106).
    #[arg(long, default_value_t = 106)]
    steps: u32,
    /// Timed repetitions per figure (default: 5, 1 under --quick; the median is reported; on lavapipe
    /// the forward step's median of 3 spread over 2x between runs, of 5 within 10%).
    #[arg(long)]
    reps: Option<u32>,
    /// Untimed warm-up episodes before each figure (default: 1, none under --quick).
    #[arg(long)]
    warmup: Option<u32>,
    /// Episode lengths for the memory-growth figure, at --memory-size (default: 100,1000; 50,200
    /// under --quick).
    #[arg(long, value_delimiter = ',', conflicts_with = "no_memory")]
    memory_steps: Option<Vec<u32>>,
    /// Skip the memory-growth figure (to time a few sizes quickly).
    #[arg(long)]
    no_memory: bool,
    /// Neurons and batch of the memory-growth figure, as N,B (default: the paper's 1000,1 on a GPU,
    /// 512,1 on a CPU adapter, 32,2 under --quick).
    #[arg(long, value_delimiter = ',', conflicts_with = "no_memory")]
    memory_size: Option<Vec<u32>>,
    /// A smoke run: small sizes, one repetition, no warm-up, a shorter streaming measurement; where
    /// --neurons, --batch, --reps, --warmup, --memory-size or --memory-steps is given, it is kept.
    #[arg(long)]
    quick: bool,
    /// Also write every figure, with the adapter and the configuration, to this JSON file; it is
    /// rewritten after every measurement, so a later failure keeps the figures before it ("complete"
    /// says whether the run finished).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Instead of the default set, time every rule at one size (the first --neurons and --batch
    /// values, default 256 and 4) and print each relative to the decay rule; it writes no JSON, no
    /// profile and no memory-growth figure, and its rules are its own, so it takes no rule options.
    // The rule options one by one (rule_args::RuleArgs's fields; keep in step): naming their group
    // instead would have clap list all of them in the error, not the one given.
    #[arg(long, conflicts_with_all = [
        "rule", "trace_clip", "modulation", "retroactive", "alpha", "eta_shape", "no_plastic_self",
        "json", "profile", "memory_steps", "memory_size",
    ])]
    compare_rules: bool,
    #[command(flatten)]
    kernels: crate::kernel_args::KernelArgs,
    /// Also time every kernel of one training episode per size (GPU timestamps around each
    /// dispatch; needs the adapter's TIMESTAMP_QUERY_INSIDE_PASSES).
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    rule: crate::rule_args::RuleArgs,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    // --quick's choices where the options leave them open.
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 5 });
    let warmup = args.warmup.unwrap_or(if args.quick { 0 } else { 1 });
    let memory_steps = args.memory_steps.clone().unwrap_or(if args.quick { vec![50, 200] } else { vec![100, 1000] });
    // Refused before the adapter is opened and anything is timed, not after the table.
    for (option, values) in
        [("--neurons", args.neurons.as_deref()), ("--batch", args.batch.as_deref()), ("--memory-steps", Some(&memory_steps[..]))]
    {
        anyhow::ensure!(
            values.is_none_or(|v| v.iter().all(|&x| x >= 1)),
            "{option} values must be at least 1 (got {:?}){}",
            values.unwrap_or_default(),
            if option == "--memory-steps" { "; --no-memory skips the memory-growth figure" } else { "" }
        );
    }
    anyhow::ensure!(args.steps >= 1 && reps >= 1, "--steps and --reps must be at least 1");
    let tuning = args.kernels.tuning()?;
    let plasticity = args.rule.plasticity()?;
    // The network's own checks of every size given (its parameters' 32-bit indices), now rather than
    // when the size's turn comes after the sizes before it; the device's limits need the adapter.
    for &n in args.neurons.iter().flatten() {
        check_network(&format!("--neurons {n}"), n, plasticity)?;
    }
    // Explicit, or --quick's, or the adapter's default (known only once it is open, and valid).
    let memory_size = match &args.memory_size {
        Some(size) => {
            anyhow::ensure!(
                size.len() == 2 && size.iter().all(|&v| v >= 1),
                "--memory-size takes two positive numbers, N,B (got {size:?}); --no-memory skips the memory-growth figure"
            );
            let given = format!("--memory-size {},{}", size[0], size[1]);
            check_network(&given, size[0], plasticity)?;
            Some((size[0], size[1]))
        }
        None if args.quick => Some((32, 2)),
        None => None,
    };
    if let Some(path) = &args.json {
        check_json_path(path)?;
    }
    let ctx = args.kernels.context_with(tuning)?;
    if args.profile {
        // Refused before anything is measured rather than after the table.
        plasticity_runtime::profile::KernelProfiler::check_supported(&ctx)?;
    }
    let cpu = ctx.adapter.is_cpu();
    println!("adapter: {}", ctx.adapter);
    if cpu {
        println!("note: a CPU (software) adapter: these times are not GPU times; compare ratios, not absolute figures");
    }
    if args.compare_rules {
        let first = |values: &Option<Vec<u32>>| values.as_ref().and_then(|v| v.first().copied());
        return compare_rules(&ctx, args, first(&args.neurons).unwrap_or(256), first(&args.batch).unwrap_or(4), reps, warmup);
    }
    let (neurons, batches) = if args.quick {
        (vec![64], vec![1, 4])
    } else if cpu {
        (vec![64, 256], vec![1, 16])
    } else {
        (vec![256, 1000], vec![1, 16, 64])
    };
    let neurons = args.neurons.clone().unwrap_or(neurons);
    let batches = args.batch.clone().unwrap_or(batches);
    let (memory_neurons, memory_batch) = memory_size.unwrap_or(if cpu { (512, 1) } else { (1000, 1) });
    // Every size against the device's limits before the first measurement, so that none is spent
    // on the sizes before one the device cannot hold; and the workgroup sizes asked for.
    ctx.tuning.backward_workgroup(&ctx.adapter, &ctx.limits()).context("--backward-workgroup-size")?;
    for &n in &neurons {
        for &b in &batches {
            BenchCase { neurons: n, batch: b, steps: args.steps, plasticity }
                .check_fits(&ctx)
                .with_context(|| format!("N = {n}, B = {b}"))?;
        }
    }
    if !args.no_memory {
        for &t in &memory_steps {
            BenchCase { neurons: memory_neurons, batch: memory_batch, steps: t, plasticity }
                .check_fits(&ctx)
                .with_context(|| format!("the memory-growth figure at N = {memory_neurons}, B = {memory_batch}, T = {t}"))?;
        }
    }
    let stream_elements = if args.quick { 1 << 22 } else { 1 << 25 };
    let triad = bench::StreamTriad::new(&ctx, stream_elements).context("streaming benchmark")?;
    let ceiling = triad.median_of(&ctx, if args.quick { 2 } else { 5 }).context("streaming benchmark")?;
    println!("streaming ceiling (c = a + s*b): {ceiling:.2} GB/s");
    println!("  and again in every repetition, just before its episodes: ceil is their median, %ceil the median of each one's share");
    // The same triad with 32 bytes per access where the device has 64-bit integers: on a device whose
    // cost is per load instruction rather than per byte it reads higher, and says so.
    let wide_ceiling = triad.median_wide_of(&ctx, if args.quick { 2 } else { 5 }).context("streaming benchmark (32-byte accesses)")?;
    if let Some(wide) = wide_ceiling {
        println!(
            "  with 32-byte accesses (vec4<u64>): {wide:.2} GB/s, {:.2}x{}",
            wide / ceiling,
            if wide > 1.25 * ceiling {
                "; this adapter pays per access rather than per byte, and the kernels move at most 16 bytes per access, \
                 so %ceil below is against the 16-byte figure"
            } else {
                ""
            }
        );
    }
    println!("timing: medians of {} (the memory-growth times: wall clock)", bench::timing_method(&ctx));
    println!("rule: {}", crate::rule_args::describe(&plasticity));
    println!(
        "work split: S chunks of the forward step's sum over i, Z batch groups of the backward trace kernel ({}), \
         bk the side of the square blocks of the trace it walks ({}); \
         W: 4 where the vec4 rule kernels ran, 1 for the scalar ones{}; G: s where the forward step shared the history \
         by subgroup shuffles{}; Q: column quads per invocation of the vec4 forward step ({}); ts: columns per stripe of the stored trace \
         ({}; -: rows whole); forward workgroups of {} invocations, backward trace workgroups of {}; \
         backward passes of {}, column values loaded {}, backward trace columns {}, the reversed trace and its gradient stored {}; \
         wgpu's loop bounding {}\n",
        if args.kernels.forward_splits.is_some() || args.kernels.backward_groups.is_some() {
            "set by options"
        } else {
            "chosen for this adapter"
        },
        if args.kernels.backward_tile.is_some() { "set by --backward-tile" } else { "chosen for this adapter" },
        if args.kernels.scalar_kernels { " (--scalar-kernels)" } else { "" },
        match args.kernels.forward_subgroups {
            Some(on) => format!(" (--forward-subgroups {})", if on { "on" } else { "off" }),
            None => String::new(),
        },
        if args.kernels.forward_column_quads.is_some() { "set by --forward-column-quads" } else { "chosen for this adapter and size" },
        if args.kernels.trace_stripe.is_some() { "set by --trace-stripe" } else { "chosen for this adapter" },
        ctx.tuning.forward_workgroup(&ctx.adapter),
        ctx.tuning.backward_workgroup(&ctx.adapter, &ctx.limits())?,
        match args.kernels.backward_batch_slots {
            Some(k) => format!("{k} batch elements (--backward-batch-slots)"),
            None => format!("up to {} batch elements", plasticity_runtime::kernels::backward_trace::CHUNK),
        },
        match args.kernels.backward_hoist_columns {
            Some(true) => "once per pass (--backward-hoist-columns on)",
            Some(false) => "once per four rows (--backward-hoist-columns off)",
            None if ctx.adapter.is_cpu() => "once per pass where a pass takes 2 or more batch elements",
            None => "once per four rows",
        },
        {
            let lanes = ctx.tuning.backward_columns(&ctx.adapter)?;
            let set =
                if args.kernels.backward_column_lanes.is_some() { format!(" (--backward-column-lanes {lanes})") } else { String::new() };
            if lanes == 1 { format!("contiguous in each invocation{set}") } else { format!("interleaved over {lanes} invocations{set}") }
        },
        if args.kernels.backward_store_every_step { "every step (--backward-store-every-step)" } else { "every other step" },
        if ctx.wgpu_loop_bounding() {
            "in every kernel (--wgpu-loop-bounding)"
        } else {
            "only in the kernels whose loops are not all counted"
        }
    );

    println!(
        "{:>6} {:>5} {:>5} | {:>11} {:>12} {:>7} {:>9} | {:>9} {:>9} {:>6} {:>9} {:>6} | {:>10} {:>4} {:>4} {:>3} {:>2} {:>2} {:>1} {:>1} {:>4}",
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
        "G",
        "Q",
        "ts"
    );
    let mut report =
        Report { ctx: &ctx, args, reps, warmup, ceiling, wide_ceiling, results: Vec::new(), profiles: Vec::new(), memory: None };
    for &n in &neurons {
        for &b in &batches {
            let case = BenchCase { neurons: n, batch: b, steps: args.steps, plasticity };
            let r = bench::bench_case(&ctx, case, warmup, reps, Some(&triad))
                .with_context(|| format!("N = {n}, B = {b}{}", report.kept_before_failure()))?;
            print_case(&r);
            print_work_split_taken(args, &r);
            report.results.push(r);
            report.save(false)?;
        }
    }
    if args.profile {
        println!("\nGPU time per kernel in one training episode (timestamps around each dispatch):");
        for c in 0..report.results.len() {
            let case = report.results[c].case;
            let profile = bench::profile_case(&ctx, case)
                .with_context(|| format!("profiling N = {}, B = {}{}", case.neurons, case.batch, report.kept_before_failure()))?;
            print_profile(&report.results[c], &profile);
            report.profiles.push(profile);
            report.save(false)?;
        }
    }
    if !args.no_memory {
        let memory = bench::memory_scaling(&ctx, memory_neurons, memory_batch, &memory_steps, 1, plasticity)
            .with_context(|| format!("memory scaling{}", report.kept_before_failure()))?;
        print_memory(&memory);
        report.memory = Some(memory);
    }
    report.save(true)?;
    if let Some(path) = &args.json {
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

/// The network's own checks of a size (the 32-bit indices of its parameters), which need no adapter.
fn check_network(given: &str, neurons: u32, plasticity: Plasticity) -> anyhow::Result<()> {
    NetworkConfig { neurons, plasticity, ..Default::default() }.validate().with_context(|| given.to_string())?;
    Ok(())
}

/// Checked before anything is measured: the file is rewritten after every measurement, and a path it
/// cannot be written to must not cost them.
/// The adapter as the JSON files of `bench` and `tune` name it.
pub(crate) fn adapter_json(ctx: &GpuContext) -> serde_json::Value {
    serde_json::json!({
        "name": ctx.adapter.name, "backend": format!("{:?}", ctx.adapter.backend),
        "device_type": format!("{:?}", ctx.adapter.device_type), "driver": ctx.adapter.driver,
    })
}

pub(crate) fn check_json_path(path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    anyhow::ensure!(!path.is_dir(), "--json {} is a directory; give a file name", path.display());
    if !dir.is_dir() {
        // The nearest existing ancestor says which: a missing directory, or a file where one should be.
        if let Some(file) = dir.ancestors().find(|a| !a.as_os_str().is_empty() && a.exists()).filter(|a| !a.is_dir()) {
            anyhow::bail!("--json {}: {} is a file, not a directory; give a path in a directory", path.display(), file.display());
        }
        anyhow::bail!("--json {}: the directory {} does not exist; create it first", path.display(), dir.display());
    }
    // write_atomically creates a temporary file beside the target and renames it over the target: try
    // the first half, in the same directory, now.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let probe = dir.join(format!(".{name}.write-check{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| format!("--json {}: cannot create a file in {}; give a writable directory", path.display(), dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Every rule at one size, relative to the decay rule: the figures behind the per-rule claims.
fn compare_rules(ctx: &GpuContext, args: &BenchArgs, n: u32, b: u32, reps: u32, warmup: u32) -> anyhow::Result<()> {
    use plasticity_runtime::{AlphaShape, EtaShape, Modulation, Rule};
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
    // Every rule's network checked before the first is timed, not when its turn comes.
    for spec in rules {
        BenchCase { neurons: n, batch: b, steps: args.steps, plasticity: spec }
            .check_fits(ctx)
            .with_context(|| format!("--neurons {n} with {}", crate::rule_args::describe(&spec)))?;
    }
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

/// Says where a size ran fewer forward chunks or batch groups than the options asked for: they are
/// upper bounds (`forward_step::split`: chunks of ceil(N / S) neurons; at most B groups).
fn print_work_split_taken(args: &BenchArgs, r: &CaseResult) {
    if let Some(asked) = args.kernels.forward_splits.filter(|&s| s != r.forward_splits) {
        println!(
            "  (N = {}: --forward-splits {asked} ran as S = {}, chunks of ceil(N / {asked}) = {} neuron(s))",
            r.case.neurons,
            r.forward_splits,
            plasticity_runtime::kernels::forward_step::split(r.case.neurons, asked).1
        );
    }
    if let Some(asked) = args.kernels.backward_groups.filter(|&z| z != r.backward_groups) {
        println!(
            "  (B = {}: --backward-groups {asked} ran as Z = {}, at most one group per batch element)",
            r.case.batch, r.backward_groups
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_case(r: &CaseResult) {
    println!(
        "{:>6} {:>5} {:>5} | {:>11.3} {:>12.1} {:>7.2} {:>9.2} | {:>9.2} {:>9.2} {:>5.0}% {:>9.2} {:>5.0}% | {:>10.2} {:>4} {:>4} {:>3} {:>2} {:>2} {:>1} {:>1} {:>4}",
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
        if r.forward_subgroups { "s" } else { "-" },
        // 0: the scalar kernel, one neuron per invocation.
        if r.forward_column_quads == 0 { "-".to_string() } else { r.forward_column_quads.to_string() },
        // 0: the trace's rows whole.
        if r.trace_stripe == 0 { "-".to_string() } else { r.trace_stripe.to_string() }
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

/// Everything measured so far, and what it was measured with: what --json's file holds.
struct Report<'a> {
    ctx: &'a GpuContext,
    args: &'a BenchArgs,
    /// The repetitions and warm-up that ran (--quick's where the options left them open).
    reps: u32,
    warmup: u32,
    ceiling: f64,
    /// stream_triad_wide's GB/s; None where the device has no 64-bit integers.
    wide_ceiling: Option<f64>,
    results: Vec<CaseResult>,
    profiles: Vec<KernelProfile>,
    memory: Option<MemoryScaling>,
}

impl Report<'_> {
    /// What a failed measurement's message adds: where the figures before it were kept.
    fn kept_before_failure(&self) -> String {
        match &self.args.json {
            Some(path) if !self.results.is_empty() => format!(" (the figures measured before it are in {})", path.display()),
            _ => String::new(),
        }
    }

    /// Rewrites --json's file, if one was asked for, with everything measured so far: after every
    /// measurement, so that a later failure or an interrupted run keeps them; `complete` once the
    /// last figure is in.
    fn save(&self, complete: bool) -> anyhow::Result<()> {
        let Some(path) = &self.args.json else { return Ok(()) };
        plasticity_runtime::checkpoint::write_atomically(path, serde_json::to_string_pretty(&self.to_json(complete))?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    fn to_json(&self, complete: bool) -> serde_json::Value {
        let Report { ctx, args, reps, warmup, ceiling, wide_ceiling, results, profiles, memory } = self;
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
                    "backward_column_lanes": r.backward_column_lanes,
                    "forward_column_quads": r.forward_column_quads,
                    // 0: the trace's rows whole.
                    "trace_stripe": r.trace_stripe,
                    "profile": profile,
                })
            })
            .collect();
        serde_json::json!({
            "adapter": adapter_json(ctx),
            "timing": bench::timing_method(ctx),
            "config": {
                "steps": args.steps, "reps": reps, "warmup": warmup, "quick": args.quick, "scalar_kernels": args.kernels.scalar_kernels,
                "wgpu_loop_bounding": ctx.wgpu_loop_bounding(),
                "forward_workgroup_size": ctx.tuning.forward_workgroup(&ctx.adapter),
                "backward_workgroup_size": ctx.tuning.backward_workgroup(&ctx.adapter, &ctx.limits()).ok(),
                // null: the default (on for a CPU adapter with subgroups); each case says where it ran.
                "forward_subgroups": ctx.tuning.forward_subgroups,
                // null: the default (on a CPU adapter at 2 or more batch elements per pass); each case says.
                "backward_hoist_columns": ctx.tuning.backward_hoist_columns,
                "backward_store_every_step": ctx.tuning.backward_store_every_step,
                // null: chosen per case for the adapter; each case says.
                "backward_tile": ctx.tuning.backward_tile,
                "backward_column_lanes": ctx.tuning.backward_column_lanes,
                // null: the default (on a CPU adapter 4 where the trace holds 1 MiB or more, else 1; 1 on
                // a GPU); each case says.
                "forward_column_quads": ctx.tuning.forward_column_quads,
                // null: the default (128 on a CPU adapter, rows whole on a GPU); each case says.
                "trace_stripe": ctx.tuning.trace_stripe,
                // null: the default, min(4, ceil(B / Z)) per case.
                "backward_batch_slots": ctx.tuning.backward_batch_slots,
            },
            "stream_ceiling_gbps": ceiling,
            // The same triad with 32-byte accesses (vec4<u64>); null where the device has no 64-bit integers.
            "stream_ceiling_wide_gbps": wide_ceiling,
            "cases": cases,
            // false in the file rewritten after each measurement until the last: a run that failed or was
            // stopped leaves the figures measured before it, and its later ones null or missing.
            "complete": complete,
            // null under --no-memory (and until it is measured).
            "memory_scaling": memory.as_ref().map(|memory| serde_json::json!({
                "neurons": memory.neurons, "batch": memory.batch,
                "points": memory.points.iter().map(|p| serde_json::json!({
                    "steps": p.steps, "peak_bytes": p.peak_bytes, "train_ms_per_step": p.train_ms_per_step,
                    "history_bytes": p.breakdown.history, "checkpoint_bytes": p.breakdown.checkpoints,
                    "recompute_scratch_bytes": p.breakdown.recompute_scratch,
                })).collect::<Vec<_>>(),
            })),
        })
    }
}
