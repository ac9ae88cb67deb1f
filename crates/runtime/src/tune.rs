//! `tune`: searches the kernel options for the fastest training episode at one size on this device,
//! and prints the `train` options that use it.
//!
//! The defaults were chosen on two devices (lavapipe on two CPUs, one H200), and several have not
//! been measured on any GPU at all; a device of another kind may want others. The search is
//! coordinate descent, one pass: each option in turn takes each of its other values with the rest
//! at the best found so far. Every value is timed right after the best is timed again, and one
//! that trains at least `--margin` faster is timed once more in the other order before it is kept,
//! so that a machine whose speed drifts (lavapipe here read 500 to 2000 ms for one configuration
//! within minutes) does not decide the result. None of the options changes results beyond f32
//! rounding.

use anyhow::Context;
use clap::Args;
use plasticity_runtime::bench::{BenchCase, CaseResult, bench_training_case};
use plasticity_runtime::{GpuContext, KernelTuning};

use crate::kernel_args::{KernelArgs, kernel_flags};

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Neurons N (default: 1000 on a GPU, 256 on a CPU adapter).
    #[arg(long)]
    neurons: Option<u32>,
    /// Batch size B.
    #[arg(long, default_value_t = 16)]
    batch: u32,
    /// Steps per episode (the pattern task's 106).
    #[arg(long, default_value_t = 106)]
    steps: u32,
    /// Timed training episodes per measurement, after one untimed; the median counts.
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Keep a value only if it trains at least this many percent faster than the best so far, twice
    /// (default: 3 on a GPU; 10 on a CPU adapter, whose times spread far more between runs on a
    /// shared machine): smaller differences are taken for spread.
    #[arg(long)]
    margin: Option<f64>,
    /// Also write every measurement, with the adapter and the size, to this JSON file; it is
    /// rewritten after each one, so a run stopped early keeps what it measured ("complete" says
    /// whether it finished).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[command(flatten)]
    rule: crate::rule_args::RuleArgs,
    /// The search starts from these (the adapter's defaults where none is given) and, where one is
    /// given, tries its other values too.
    #[command(flatten)]
    kernels: KernelArgs,
}

/// What `--json` writes: the search so far, rewritten after every measurement.
struct Report {
    path: Option<std::path::PathBuf>,
    head: serde_json::Value,
    tried: Vec<serde_json::Value>,
    verdict: serde_json::Value,
}

impl Report {
    fn write(&self, complete: bool) -> anyhow::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut json = self.head.clone();
        json["tried"] = serde_json::Value::from(self.tried.clone());
        json["verdict"] = self.verdict.clone();
        json["complete"] = serde_json::Value::from(complete);
        plasticity_runtime::checkpoint::write_atomically(path, serde_json::to_string_pretty(&json)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// One training measurement: the median training episode, in milliseconds, and what ran.
fn measure(ctx: &mut GpuContext, case: BenchCase, tuning: KernelTuning, reps: u32) -> anyhow::Result<(f64, CaseResult)> {
    ctx.tuning = tuning;
    let result = bench_training_case(ctx, case, 1, reps)?;
    Ok((result.train_ms_per_episode, result))
}

/// The options the search walks: the kernels' width first (the vec4 kernels' options follow only
/// where they run), then the work split, then the finer choices.
const OPTIONS: [&str; 13] = [
    "--scalar-kernels",
    "--backward-groups",
    "--forward-splits",
    "--backward-tile",
    "--backward-column-lanes",
    "--forward-column-quads",
    "--trace-stripe",
    "--forward-subgroups",
    "--backward-hoist-columns",
    "--backward-batch-slots",
    "--backward-store-every-step",
    "--forward-workgroup-size",
    "--backward-workgroup-size",
];

/// `best` with `option` at each of its other values (where this device and size allow it), from
/// what `best` ran with (`ran`).
fn values_of(option: &str, ctx: &GpuContext, case: BenchCase, best: &KernelTuning, ran: &CaseResult) -> anyhow::Result<Vec<KernelTuning>> {
    let b = *best;
    let limits = ctx.limits();
    let most_invocations = limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x);
    let workgroups = [8, 16, 32, 64, 128, 256].into_iter().filter(|&w| w <= most_invocations);
    let vec4 = ran.kernel_width == 4;
    Ok(match option {
        // Only where N allows the vec4 kernels (else the scalar ones run either way).
        "--scalar-kernels" if vec4 || b.scalar_kernels => vec![KernelTuning { scalar_kernels: !b.scalar_kernels, ..b }],
        "--backward-groups" => [1, 2, 4, 8, 16, 32, 64]
            .into_iter()
            .filter(|&z| z <= case.batch && z != ran.backward_groups)
            .map(|z| KernelTuning { backward_groups: Some(z), ..b })
            .collect(),
        "--forward-splits" => {
            let most = (case.neurons / plasticity_runtime::tuning::MIN_SPLIT_LEN).max(1);
            [1, 2, 4, 8, 16, 32, 64]
                .into_iter()
                .filter(|&s| s <= most && s != ran.forward_splits)
                .map(|s| KernelTuning { forward_splits: Some(s), ..b })
                .collect()
        }
        "--backward-tile" => plasticity_runtime::kernels::TRACE_TILE_SIDES
            .into_iter()
            .filter(|&side| side != ran.backward_tile)
            .map(|side| KernelTuning { backward_tile: Some(side), ..b })
            .collect(),
        "--backward-column-lanes" if vec4 => [1, 8, 32]
            .into_iter()
            .filter(|&l| l != ran.backward_column_lanes)
            .map(|l| KernelTuning { backward_column_lanes: Some(l), ..b })
            .collect(),
        "--forward-column-quads" if vec4 => [1, 2, 4]
            .into_iter()
            .filter(|&q| q != ran.forward_column_quads)
            .map(|q| KernelTuning { forward_column_quads: Some(q), ..b })
            .collect(),
        // Rows whole (0) and the stripes narrower than N; a stripe of N or more is rows whole too.
        "--trace-stripe" => [0, 8, 32, 128, 512]
            .into_iter()
            .filter(|&s| s < case.neurons && s != ran.trace_stripe)
            .map(|s| KernelTuning { trace_stripe: Some(s), ..b })
            .collect(),
        "--forward-subgroups" if vec4 && ctx.has_subgroups() => vec![KernelTuning { forward_subgroups: Some(!ran.forward_subgroups), ..b }],
        "--backward-hoist-columns" if vec4 => vec![KernelTuning { backward_hoist_columns: Some(!ran.backward_hoist_columns), ..b }],
        "--backward-batch-slots" => {
            let slots = b.backward_slots(case.batch, ran.backward_groups)?;
            (1..=plasticity_runtime::kernels::backward_trace::CHUNK)
                .filter(|&k| k != slots)
                .map(|k| KernelTuning { backward_batch_slots: Some(k), ..b })
                .collect()
        }
        "--backward-store-every-step" => vec![KernelTuning { backward_store_every_step: !b.backward_store_every_step, ..b }],
        "--forward-workgroup-size" => {
            let now = b.forward_workgroup(&ctx.adapter);
            workgroups.filter(|&w| w != now).map(|w| KernelTuning { forward_workgroup_size: Some(w), ..b }).collect()
        }
        "--backward-workgroup-size" => {
            let now = b.backward_workgroup(&ctx.adapter, &limits)?;
            workgroups.filter(|&w| w != now).map(|w| KernelTuning { backward_workgroup_size: Some(w), ..b }).collect()
        }
        _ => Vec::new(),
    })
}

/// How `tuning` differs from `from`, as options: those it sets otherwise, and "without" those of
/// `from` it leaves out ("the same" where nothing).
fn difference(tuning: &KernelTuning, from: &KernelTuning) -> String {
    let (before, after) = (kernel_flags(from), kernel_flags(tuning));
    let option = |flag: &str| flag.split(' ').next().unwrap_or_default().to_string();
    let mut words: Vec<String> = after.iter().filter(|f| !before.contains(f)).cloned().collect();
    let set: Vec<String> = after.iter().map(|f| option(f)).collect();
    words.extend(before.iter().filter(|f| !set.contains(&option(f))).map(|f| format!("without {f}")));
    if words.is_empty() { "the same".to_string() } else { words.join(" ") }
}

pub fn run(args: &TuneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch >= 1 && args.steps >= 1 && args.reps >= 1, "--batch, --steps and --reps must be at least 1");
    anyhow::ensure!(args.neurons != Some(0), "--neurons must be at least 1");
    if let Some(margin) = args.margin {
        anyhow::ensure!(margin.is_finite() && (0.0..50.0).contains(&margin), "--margin is a percentage from 0 to 50 (got {margin})");
    }
    let start = args.kernels.tuning()?;
    let plasticity = args.rule.plasticity()?;
    if let Some(path) = &args.json {
        crate::bench::check_json_path(path)?;
    }
    let mut ctx = args.kernels.context_with(start)?;
    let neurons = args.neurons.unwrap_or(if ctx.adapter.is_cpu() { 256 } else { 1000 });
    let case = BenchCase { neurons, batch: args.batch, steps: args.steps, plasticity };
    plasticity_runtime::NetworkConfig { neurons, plasticity, ..Default::default() }
        .validate()
        .map_err(|e| anyhow::anyhow!("--neurons {neurons}: {e}"))?;
    case.check_fits(&ctx)?;
    let margin = args.margin.unwrap_or(if ctx.adapter.is_cpu() { 10.0 } else { 3.0 });
    let keep = 1.0 - margin / 100.0;
    println!("adapter: {}", ctx.adapter);
    if ctx.adapter.is_cpu() {
        println!("note: a CPU (software) adapter: these times are not GPU times, and what is fastest here says nothing about a GPU");
    }
    println!(
        "tuning N = {neurons}, B = {}, T = {}: training ms per episode, the median of {} after one untimed, and its speed \
         against the best so far measured just before it; a value is kept where it is at least {}% faster, and again in the \
         other order",
        args.batch, args.steps, args.reps, margin
    );
    // What the starting options run with (the adapter's choices where they leave them open).
    let started = std::time::Instant::now();
    let (start_ms, mut ran) = measure(&mut ctx, case, start, args.reps)?;
    let per_measurement = started.elapsed().as_secs_f64();
    let mut best = start;
    let mut report = Report {
        path: args.json.clone(),
        head: serde_json::json!({
            "adapter": crate::bench::adapter_json(&ctx),
            "timing": plasticity_runtime::bench::timing_method(&ctx),
            "case": { "neurons": neurons, "batch": args.batch, "steps": args.steps, "rule": plasticity },
            "reps": args.reps,
            "margin_percent": margin,
            "start": { "options": kernel_flags(&start), "train_ms": start_ms },
        }),
        tried: Vec::new(),
        verdict: serde_json::Value::Null,
    };
    report.write(false)?;
    // Two measurements per value (the best again, then the value), more where one is confirmed.
    let values: usize = OPTIONS.iter().map(|o| values_of(o, &ctx, case, &best, &ran).map_or(0, |v| v.len())).sum();
    let seconds = (2 * values + 6) as f64 * per_measurement;
    println!(
        "{values} values to try, two measurements each (four where one is confirmed) of about {per_measurement:.1} s: about {}",
        if seconds < 120.0 { format!("{seconds:.0} s") } else { format!("{:.0} minutes", seconds / 60.0) }
    );
    println!("  {:<48} {:>10}  {:>5}", "options (beyond the best so far)", "ms", "speed");
    println!("  {:<48} {start_ms:>10.1}", "the starting options");
    for option in OPTIONS {
        // Each option's values around the best so far (a kept value moves the rest).
        for candidate in values_of(option, &ctx, case, &best, &ran)? {
            let label = difference(&candidate, &best);
            // Side by side with the best, which is measured again just before: this machine's speed
            // may have drifted since its last measurement.
            let (incumbent, _) = measure(&mut ctx, case, best, args.reps)?;
            let mut entry = serde_json::json!({ "options": label, "best_ms_before": incumbent });
            match measure(&mut ctx, case, candidate, args.reps) {
                Err(e) => {
                    println!("  {label:<48} {:>10}  not run: {e:#}", "-");
                    entry["error"] = format!("{e:#}").into();
                }
                Ok((ms, _)) if ms >= incumbent * keep => {
                    println!("  {label:<48} {ms:>10.1}  {:>5.2}x", incumbent / ms);
                    entry["train_ms"] = ms.into();
                    entry["kept"] = false.into();
                }
                Ok((ms, _)) => {
                    // Confirmed in the other order before it is kept.
                    let (confirm, result) = measure(&mut ctx, case, candidate, args.reps)?;
                    let (again, _) = measure(&mut ctx, case, best, args.reps)?;
                    let kept = confirm < again * keep;
                    println!(
                        "  {label:<48} {ms:>10.1}  {:>5.2}x  {} ({confirm:.1} against {again:.1} measured again)",
                        incumbent / ms,
                        if kept { "kept" } else { "not kept" }
                    );
                    entry["train_ms"] = ms.into();
                    entry["confirm_ms"] = confirm.into();
                    entry["best_ms_again"] = again.into();
                    entry["kept"] = kept.into();
                    if kept {
                        (best, ran) = (candidate, result);
                    }
                }
            }
            report.tried.push(entry);
            report.write(false)?;
        }
    }
    if best == start {
        println!("the starting options train fastest here: nothing to change");
        report.verdict = serde_json::json!({ "recommended": false, "best_options": kernel_flags(&best) });
        return report.write(true);
    }
    // The final comparison, alternating so that drift falls on both; the faster of each side's
    // three measurements, as interference on a shared machine only ever slows one down.
    let (mut starts, mut bests) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        starts.push(measure(&mut ctx, case, start, args.reps)?.0);
        bests.push(measure(&mut ctx, case, best, args.reps)?.0);
    }
    let (s, b) = (starts.iter().copied().fold(f64::INFINITY, f64::min), bests.iter().copied().fold(f64::INFINITY, f64::min));
    println!(
        "best: {} trains an episode in {b:.1} ms against {s:.1} with the starting options ({:.2}x; the fastest of three \
         alternating measurements each)",
        difference(&best, &start),
        s / b
    );
    report.verdict = serde_json::json!({
        "recommended": false, "best_options": kernel_flags(&best), "start_ms": starts, "best_ms": bests,
    });
    if b > s * keep {
        println!(
            "that is not {margin}% faster than the starting options: keep them (the gains the search saw were within this \
             machine's spread; more --reps or a larger --margin)"
        );
        return report.write(true);
    }
    let mut flags = kernel_flags(&best);
    if ctx.wgpu_loop_bounding() {
        flags.push("--wgpu-loop-bounding".to_string());
    }
    let command = format!("plasticity train --neurons {neurons} --batch {} {}", args.batch, flags.join(" "));
    println!("train with: {command}");
    if plasticity != plasticity_runtime::Plasticity::default() {
        println!("(and the rule options given here: the search timed that rule)");
    }
    report.verdict["recommended"] = true.into();
    report.verdict["train_command"] = command.into();
    report.write(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_names_the_options_set_otherwise_and_those_left_out() {
        let from = KernelTuning { backward_tile: Some(16), backward_store_every_step: true, ..Default::default() };
        let to = KernelTuning { backward_tile: Some(8), forward_splits: Some(2), ..Default::default() };
        assert_eq!(difference(&to, &from), "--forward-splits 2 --backward-tile 8 without --backward-store-every-step");
        assert_eq!(difference(&from, &from), "the same");
    }
}
