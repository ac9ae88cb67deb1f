//! The command line end to end: a run directory, exact resume, evaluation, and bad input that
//! gets one clear sentence and a non-zero exit, never a panic.

mod common;

use common::*;

use std::path::Path;
use std::process::{Command, Output};

fn losses(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    text.lines().skip(1).map(|l| l.split(',').take(4).collect::<Vec<_>>().join(",")).collect()
}

const SMALL: &[&str] =
    &["--neurons", "16", "--patterns", "2", "--batch", "2", "--lr", "3e-3", "--checkpoint-every", "5", "--quiet", "--seed", "3"];

/// `train` on the small pattern task into `dir`, with `extra` options.
fn train(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--run-dir", dir.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    plasticity(&args)
}

/// Trains `total` episodes into `whole`; trains half of them into `split` and resumes it to `total`:
/// the resumed run's metrics rows must equal the uninterrupted run's.
fn assert_resume_repeats_the_run(whole: &Path, split: &Path, extra: &[&str], total: u32) {
    let (total, half) = (total.to_string(), (total / 2).to_string());
    for (dir, episodes) in [(whole, &total), (split, &half)] {
        let mut args = vec!["--episodes", episodes.as_str()];
        args.extend_from_slice(extra);
        let o = train(dir, &args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = plasticity(&["train", "--resume", split.to_str().unwrap(), "--episodes", &total, "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(split), losses(whole), "resumed run differs from the uninterrupted one");
}

#[test]
fn train_writes_a_run_and_resume_matches_an_uninterrupted_run() {
    let tmp = std::env::temp_dir().join(format!("plasticity-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (whole, split) = (tmp.join("whole"), tmp.join("split"));
    assert_resume_repeats_the_run(&whole, &split, &[], 20);
    for f in ["config.json", "metrics.csv", "loss.png", "checkpoint.safetensors"] {
        assert!(whole.join(f).exists(), "{f} missing");
    }
    assert_eq!(losses(&whole).len(), 20);

    // A second run into the same directory is refused rather than overwriting it.
    assert_clean_failure(&train(&whole, &["--episodes", "20"]), "already holds a run");
    // N = 12 runs the vec4 kernels without a word; N = 10 runs the scalar ones and says so.
    for (n, note) in [("12", false), ("10", true)] {
        let dir = tmp.join(format!("n{n}"));
        let o = plasticity(&["train", "--run-dir", dir.to_str().unwrap(), "--neurons", n, "--episodes", "1", "--quiet"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let said = out.contains("note: N = 10 is not a multiple of 4, so the scalar rule kernels run") && out.contains("N = 12 would run");
        assert_eq!(said, note, "N = {n}: {out}");
    }

    let o = plasticity(&["eval", whole.to_str().unwrap(), "--episodes", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("bit error rate"));

    // A truncated checkpoint is named as such.
    let bytes = std::fs::read(whole.join("checkpoint.safetensors")).unwrap();
    let broken = tmp.join("broken.safetensors");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(&plasticity(&["eval", broken.to_str().unwrap()]), "broken.safetensors");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn bad_options_get_one_sentence_and_a_nonzero_exit() {
    let dir = std::env::temp_dir().join(format!("plasticity-cli-bad-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    assert_clean_failure(&plasticity(&["train", "--run-dir", d, "--batch", "0"]), "--batch must be at least 1");
    assert_clean_failure(&plasticity(&["train", "--run-dir", d, "--patterns", "0"]), "patterns must be at least 1");
    assert_clean_failure(&plasticity(&["train", "--run-dir", d, "--degrade-prob", "1.5"]), "outside [0, 1]");
    assert_clean_failure(&plasticity(&["train", "--run-dir", d, "--lr=-1"]), "learning rate -1 must be > 0");
    assert_clean_failure(&plasticity(&["train", "--run-dir", d, "--eta", "1.5"]), "eta = 1.5 is outside [0, 1)");
    assert_clean_failure(&plasticity(&["eval", "/nonexistent/checkpoint.safetensors"]), "cannot read it");
    assert_clean_failure(&plasticity(&["train", "--resume", "/nonexistent-run"]), "not a run directory");
    assert_clean_failure(&plasticity(&["train", "--run-dir", d, "--retroactive"]), "retroactive neuromodulation needs a modulation");
    assert_clean_failure(&plasticity(&["train", "--run-dir", d, "--trace-clip", "0"]), "clip = 0 must be a positive number");
    assert_clean_failure(&plasticity(&["train", "--run-dir", d, "--neurons", "50000"]), "do not fit the kernels' 32-bit indices");
    let file = std::env::temp_dir().join(format!("plasticity-cli-file-{}", std::process::id()));
    std::fs::write(&file, "not a directory").unwrap();
    assert_clean_failure(&plasticity(&["train", "--run-dir", file.to_str().unwrap()]), "is a file; give a directory");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory", "the file is left alone");
    std::fs::remove_file(&file).ok();
    // Past the device's binding limit (lavapipe's 128 MiB; any device's at this size): refused before the host allocates.
    assert_clean_failure(&plasticity(&["train", "--run-dir", d, "--neurons", "46000"]), "use at most");
    // A trace (B, N, N) of 4.5 GB, past any device's storage binding (Vulkan's range is 32-bit):
    // refused when the trainer reserves its first episode, before the run directory is made.
    assert_clean_failure(&plasticity(&["train", "--run-dir", d, "--neurons", "4000", "--batch", "70"]), "use a batch of at most");
    assert!(!dir.join("config.json").exists(), "a refused config must not start a run");
}

/// A Backpropamine-style rule end to end: it trains, its checkpoint holds the modulator's tensors,
/// and resuming it repeats the uninterrupted run exactly.
#[test]
fn every_command_that_runs_the_kernels_takes_the_kernel_options() {
    let dir = std::env::temp_dir().join(format!("plasticity-cli-kernels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Without options, train says what the adapter's defaults ran: on lavapipe (a CPU adapter) the
    // backward walks blocks of 16 with one column lane.
    let o = train(&dir.join("default"), &["--episodes", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let default = stdout(&o);
    assert!(default.contains("blocks of side 16 (bk), 1 column lane(s)"), "{default}");
    // With them, what they asked for is what ran, and the first episode's loss, which its forward
    // pass alone decides, is the same to the last digit (four column quads give the same bits).
    let options = ["--backward-tile", "8", "--backward-column-lanes", "2", "--forward-column-quads", "2", "--backward-store-every-step"];
    let o = train(&dir.join("tuned"), &[&["--episodes", "1"][..], &options].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let tuned = stdout(&o);
    assert!(tuned.contains("2 column quad(s) per invocation"), "{tuned}");
    assert!(tuned.contains("blocks of side 8 (bk), 2 column lane(s)"), "{tuned}");
    let first_loss = |run: &str| losses(&dir.join(run))[0].split(',').take(2).collect::<Vec<_>>().join(",");
    assert_eq!(first_loss("tuned"), first_loss("default"));
    // eval and export-episode take them too, and every command refuses a value out of range before
    // it opens the device or touches a file, naming the option and its range.
    let run = dir.join("default");
    let r = run.to_str().unwrap();
    let o = plasticity(&["eval", r, "--episodes", "1", "--forward-column-quads", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.join("export");
    let x = out.to_str().unwrap();
    let o = plasticity(&["export-episode", "--neurons", "8", "--batch", "2", "--steps", "4", "--out", x, "--backward-tile", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for args in [
        vec!["train", "--run-dir", dir.join("refused").to_str().unwrap(), "--backward-tile", "5"],
        vec!["eval", r, "--backward-tile", "5"],
        vec!["export-episode", "--out", dir.join("refused").to_str().unwrap(), "--backward-tile", "5"],
        vec!["bench", "--quick", "--backward-tile", "5"],
    ] {
        assert_clean_failure(&plasticity(&args), "--backward-tile must be one of [4, 8, 16] (got 5)");
    }
    assert!(!dir.join("refused").exists(), "a refused option leaves nothing behind");
    assert_clean_failure(&plasticity(&["eval", r, "--forward-column-quads", "9"]), "--forward-column-quads must be 1 to 4 (got 9)");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tune_searches_the_kernel_options_and_names_train_options_that_run() {
    let json = std::env::temp_dir().join(format!("plasticity-cli-tune-{}.json", std::process::id()));
    let j = json.to_str().unwrap();
    let o = plasticity(&["tune", "--neurons", "16", "--batch", "2", "--steps", "4", "--reps", "1", "--margin", "0", "--json", j]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // The JSON holds every value the output lists, and the same verdict.
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(report["complete"], true);
    assert_eq!(report["case"]["neurons"], 16);
    let tried = report["tried"].as_array().unwrap();
    assert_eq!(tried.len(), out.lines().filter(|l| l.starts_with("  --")).count(), "{out}");
    assert!(tried.iter().all(|t| t["train_ms"].as_f64().is_some_and(|ms| ms > 0.0) || t["error"].is_string()), "{report}");
    assert_eq!(report["verdict"]["recommended"].as_bool(), Some(out.contains("train with: ")), "{report}");
    assert!(out.contains("the starting options"), "{out}");
    // Every option the search walks was tried at another value. The vec4 kernels' own options only
    // where they still run: with a margin of 0, a lucky reading of the scalar kernels (tried first)
    // keeps them, and the search then rightly skips what only the vec4 kernels take.
    let scalar_kept = out.lines().any(|l| l.trim_start().starts_with("--scalar-kernels") && l.contains(" kept ("));
    for option in [
        "--scalar-kernels",
        "--backward-groups",
        "--forward-splits",
        "--backward-tile",
        "--forward-column-quads",
        "--trace-stripe",
        "--backward-batch-slots",
        "--backward-store-every-step",
    ] {
        if option == "--forward-column-quads" && scalar_kept {
            assert!(!out.contains(&format!("\n  {option} ")), "{option} tried with the scalar kernels kept: {out}");
            continue;
        }
        assert!(out.contains(&format!("\n  {option} ")), "{option} was not tried: {out}");
    }
    // Its verdict is one of three; where it names options, train takes them.
    let recommended = out.lines().find_map(|l| l.strip_prefix("train with: plasticity "));
    match recommended {
        Some(command) => {
            let dir = std::env::temp_dir().join(format!("plasticity-cli-tune-{}", std::process::id()));
            let mut args: Vec<&str> = command.split(' ').collect();
            let d = dir.to_str().unwrap().to_string();
            args.extend(["--episodes", "1", "--patterns", "2", "--quiet", "--run-dir", &d]);
            let o = plasticity(&args);
            assert!(o.status.success(), "train refused tune's options {command}: {}", stderr(&o));
            let _ = std::fs::remove_dir_all(&dir);
        }
        None => assert!(out.contains("nothing to change") || out.contains("that is not 0% faster than the starting options"), "{out}"),
    }
    assert_clean_failure(&plasticity(&["tune", "--margin", "60"]), "--margin is a percentage from 0 to 50 (got 60)");
    assert_clean_failure(&plasticity(&["tune", "--json", "/nonexistent-dir/t.json"]), "does not exist; create it first");
    assert_clean_failure(&plasticity(&["tune", "--backward-column-lanes", "0"]), "--backward-column-lanes must be 1 to 64 (got 0)");
    assert_clean_failure(&plasticity(&["tune", "--trace-stripe", "6"]), "--trace-stripe must be 0 (rows whole) or a multiple of 4 (got 6)");
    assert_clean_failure(&plasticity(&["tune", "--neurons", "8", "--batch", "0"]), "--batch, --steps and --reps must be at least 1");
}

#[test]
fn a_neuromodulated_rule_trains_checkpoints_and_resumes() {
    let tmp = std::env::temp_dir().join(format!("plasticity-cli-rule-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (whole, split) = (tmp.join("whole"), tmp.join("split"));
    let rule = ["--rule", "additive", "--trace-clip", "1", "--modulation", "per-neuron", "--retroactive", "--eta-shape", "per-neuron"];
    assert_resume_repeats_the_run(&whole, &split, &rule, 12);
    let checkpoint = std::fs::read(whole.join("checkpoint.safetensors")).unwrap();
    let text = String::from_utf8_lossy(&checkpoint[..checkpoint.len().min(4096)]).into_owned();
    for tensor in ["\"mod_w\"", "\"mod_b\"", "\"mod_u\"", "\"mod_c\"", "retroactive\\\":true"] {
        assert!(text.contains(tensor), "{tensor} missing from the checkpoint header: {text}");
    }
    let o = plasticity(&["eval", whole.to_str().unwrap(), "--episodes", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn bench_quick_runs_and_names_the_adapter() {
    let o = plasticity(&["bench", "--quick"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("adapter:") && out.contains("streaming ceiling") && out.contains("memory against episode length"), "{out}");
    let o = plasticity(&["bench", "--quick", "--rule", "oja", "--trace-clip", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rule: oja clip 1"));
    // The work split set by hand shows in the table's S and Z columns.
    let o = plasticity(&["bench", "--quick", "--forward-splits", "3", "--backward-groups", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(set by options)"), "{out}");
    let row = out.lines().find(|l| l.trim_start().starts_with("64     4")).unwrap_or_else(|| panic!("no N = 64, B = 4 row: {out}"));
    // G: the forward step's subgroup shuffles, by default on a CPU adapter with subgroups (lavapipe's
    // Vulkan; llvmpipe's GL has none, as `info` says). bk: blocks of 16 on a CPU adapter; on a GPU
    // two groups at N = 64 are short of invocations: 4. Q: one column quad per forward invocation,
    // a GPU's default and a CPU adapter's for a trace as small as N = 64, B = 4's. ts: the trace's rows
    // whole (a stripe of 128 columns holds N = 64's whole rows).
    let cpu = out.contains(", Cpu,");
    let subgroups = !stdout(&plasticity(&["info"])).contains("subgroups: none");
    let (shuffles, bk) = match (cpu, subgroups) {
        (true, true) => ("s", 16),
        (true, false) => ("-", 16),
        (false, _) => ("-", 4),
    };
    assert!(
        row.trim_end().ends_with(&format!("3   2 {bk:>2}  4 {shuffles} 1    -")),
        "S = 3, Z = 2, bk = {bk}, the vec4 kernels (W = 4), G = {shuffles}, Q = 1 and ts = - in the row: {row}"
    );
    // --scalar-kernels: W = 1 at the same N (a multiple of 4).
    let o = plasticity(&["bench", "--quick", "--scalar-kernels"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(--scalar-kernels)"), "{out}");
    let row = out.lines().find(|l| l.trim_start().starts_with("64     4")).unwrap_or_else(|| panic!("no N = 64, B = 4 row: {out}"));
    assert!(row.trim_end().ends_with(" 1 - -    -"), "W = 1, no subgroup shuffles and no column quads (a vec4 kernel's) in the row: {row}");
    assert_clean_failure(&plasticity(&["bench", "--quick", "--backward-groups", "0"]), "must be at least 1");
    // The forward workgroup: the adapter's choice in the header, a size past the device refused.
    assert!(out.contains("forward workgroups of 8 invocations") || !out.contains("(Vulkan, Cpu,"), "a CPU adapter's 8: {out}");
    // With the trace in stripes of 32 columns too (two at N = 64), shown in the ts column.
    let o = plasticity(&["bench", "--quick", "--no-memory", "--forward-workgroup-size", "16", "--trace-stripe", "32"]);
    let striped = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && striped.contains("forward workgroups of 16 invocations"), "{}", stderr(&o));
    let striped_row =
        striped.lines().find(|l| l.trim_start().starts_with("64     4")).unwrap_or_else(|| panic!("no N = 64, B = 4 row: {striped}"));
    assert!(
        striped_row.trim_end().ends_with(" 1   32") && striped.contains("(set by --trace-stripe;"),
        "ts = 32 in the row: {striped_row}"
    );
    assert_clean_failure(
        &plasticity(&["bench", "--quick", "--trace-stripe", "30"]),
        "--trace-stripe must be 0 (rows whole) or a multiple of 4 (got 30)",
    );
    assert_clean_failure(&plasticity(&["bench", "--quick", "--forward-workgroup-size", "100000"]), "forward_workgroup_size = 100000");
    // Backward passes: the default in the header, a count set by hand, one outside 1..=4 refused.
    assert!(out.contains("backward passes of up to 4 batch elements,"), "{out}");
    // The backward's blocks: chosen for the adapter (16 on a CPU adapter, in the bk column).
    assert!(out.contains("bk the side of the square blocks of the trace it walks (chosen for this adapter)"), "{out}");
    assert!(row.trim_end().ends_with("16  1 - -    -") || !out.contains("(Vulkan, Cpu,"), "bk = 16 on a CPU adapter: {row}");
    // The backward's column values: once per pass by default on a CPU adapter.
    assert!(out.contains("column values loaded once per pass where a pass takes 2 or more") || !out.contains("(Vulkan, Cpu,"), "{out}");
    let o = plasticity(&["bench", "--quick", "--no-memory", "--backward-batch-slots", "2"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("backward passes of 2 batch elements"), "{}", stderr(&o));
    assert_clean_failure(&plasticity(&["bench", "--quick", "--backward-batch-slots", "5"]), "--backward-batch-slots must be 1 to 4");
    assert_clean_failure(&plasticity(&["bench", "--quick", "--backward-tile", "5"]), "--backward-tile must be one of [4, 8, 16] (got 5)");
    // Refused before anything is timed; a size past the 32-bit indices is an error, not an allocation abort.
    assert_clean_failure(&plasticity(&["bench", "--memory-steps", "0"]), "--no-memory skips");
    assert_clean_failure(&plasticity(&["bench", "--batch", "4,0"]), "--batch values must be at least 1");
    assert_clean_failure(&plasticity(&["bench", "--json", "/nonexistent-dir/bench.json"]), "does not exist; create it first");
    assert_clean_failure(&plasticity(&["bench", "--neurons", "100000", "--batch", "1"]), "use at most 46340 neurons");
    // --no-memory: no memory-growth figure, and null for it in the JSON. wgpu's loop bounding: left out
    // of the counted-loop kernels by default, in every kernel with the option, in the header and JSON.
    assert!(out.contains("wgpu's loop bounding only in the kernels whose loops are not all counted"), "{out}");
    assert!(out.contains("the reversed trace and its gradient stored every other step;"), "{out}");
    assert!(
        out.contains("backward trace columns contiguous in each invocation,") || out.contains("interleaved over 32 invocations,"),
        "{out}"
    );
    assert!(out.contains("Q: column quads per invocation of the vec4 forward step (chosen for this adapter and size);"), "{out}");
    let json = std::env::temp_dir().join(format!("plasticity-bench-no-memory-{}.json", std::process::id()));
    // --forward-subgroups off: in the header, the JSON config and every case.
    let o = plasticity(&[
        "bench",
        "--quick",
        "--no-memory",
        "--wgpu-loop-bounding",
        "--forward-subgroups",
        "off",
        "--backward-hoist-columns",
        "off",
        "--backward-store-every-step",
        "--backward-tile",
        "8",
        "--backward-column-lanes",
        "8",
        "--forward-column-quads",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("memory against episode length") && out.contains("wgpu's loop bounding in every kernel"), "{out}");
    assert!(
        out.contains("(--forward-subgroups off)")
            && out.contains("column values loaded once per four rows (--backward-hoist-columns off)")
            && out.contains("the reversed trace and its gradient stored every step (--backward-store-every-step)")
            && out.contains("blocks of the trace it walks (set by --backward-tile)")
            && out.contains("backward trace columns interleaved over 8 invocations (--backward-column-lanes 8)")
            && out.contains("Q: column quads per invocation of the vec4 forward step (set by --forward-column-quads);"),
        "{out}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(doc["memory_scaling"].is_null() && doc["cases"].as_array().is_some_and(|c| c.len() == 2), "{doc}");
    assert_eq!(doc["config"]["wgpu_loop_bounding"], serde_json::json!(true));
    assert_eq!(doc["config"]["forward_subgroups"], serde_json::json!(false));
    assert_eq!(doc["config"]["backward_hoist_columns"], serde_json::json!(false));
    assert_eq!(doc["config"]["backward_store_every_step"], serde_json::json!(true));
    assert_eq!(doc["config"]["backward_tile"], serde_json::json!(8));
    assert_eq!(doc["config"]["backward_column_lanes"], serde_json::json!(8));
    assert_eq!(doc["config"]["forward_column_quads"], serde_json::json!(2));
    assert!(
        doc["cases"].as_array().unwrap().iter().all(|c| c["forward_subgroups"] == false
            && c["backward_hoist_columns"] == false
            && c["backward_tile"] == 8
            && c["backward_column_lanes"] == 8
            && c["forward_column_quads"] == if c["kernel_width"] == 4 { 2 } else { 0 }),
        "{doc}"
    );
    assert_clean_failure(&plasticity(&["bench", "--quick", "--forward-subgroups", "maybe"]), "invalid value 'maybe'");
    for lanes in ["0", "65"] {
        assert_clean_failure(
            &plasticity(&["bench", "--quick", "--backward-column-lanes", lanes]),
            "--backward-column-lanes must be 1 to 64",
        );
    }
    for quads in ["0", "5"] {
        assert_clean_failure(&plasticity(&["bench", "--quick", "--forward-column-quads", quads]), "--forward-column-quads must be 1 to 4");
    }
    std::fs::remove_file(&json).ok();
}

/// `bench --profile` times every kernel of a training episode: each step kernel once per step, the
/// optimizer once, and the same figures in the JSON file.
#[test]
fn bench_profile_times_every_kernel_of_a_training_episode() {
    let json = std::env::temp_dir().join(format!("plasticity-cli-profile-{}.json", std::process::id()));
    let o = plasticity(&["bench", "--quick", "--steps", "20", "--profile", "--json", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("GPU time per kernel"), "{out}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    // The 32-byte triad: measured and printed exactly where the device has 64-bit integers.
    let wide = &doc["stream_ceiling_wide_gbps"];
    assert!(wide.is_null() || wide.as_f64().is_some_and(|v| v > 0.0), "{wide}");
    assert_eq!(out.contains("with 32-byte accesses (vec4<u64>): "), !wide.is_null(), "{out}");
    let cases = doc["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        // Each size's %ceil is against the streaming bandwidth measured just before its episodes; with
        // --quick's single repetition the median of the repetitions' shares is that one share.
        let ceiling = case["stream_ceiling_gbps"].as_f64().unwrap();
        let forward = case["forward_gbps"].as_f64().unwrap();
        assert!(
            ceiling > 0.0 && (case["forward_of_ceiling"].as_f64().unwrap() - forward / ceiling).abs() <= 1e-9 * forward / ceiling,
            "{case}"
        );
        let profile = &case["profile"];
        assert_eq!(profile["untimed_dispatches"], 0, "{case}");
        let kernels = profile["kernels"].as_array().unwrap();
        let dispatches = |name: &str| kernels.iter().find(|k| k["kernel"] == name).map(|k| k["dispatches"].as_u64().unwrap());
        // N = 64 runs the vec4 step kernels: one forward and one backward trace step per time step;
        // the forward one shares the history by subgroup shuffles where the case says so.
        let forward = if case["forward_subgroups"].as_bool().unwrap() { "forward_step_vec4_subgroup" } else { "forward_step_vec4" };
        // The backward's column values: hoisted by default on a CPU adapter at 2 or more batch elements per pass.
        let cpu = doc["adapter"]["device_type"] == "Cpu";
        assert_eq!(case["backward_hoist_columns"], serde_json::json!(cpu && case["batch"].as_u64().unwrap() >= 2), "{case}");
        // Its columns: contiguous in each invocation on a CPU adapter, interleaved over a warp on a GPU.
        assert_eq!(case["backward_column_lanes"], serde_json::json!(if cpu { 1 } else { 32 }), "{case}");
        assert_eq!(dispatches(forward), Some(20), "{case}");
        assert_eq!(dispatches("backward_trace_vec4"), Some(20), "{case}");
        // dw once per window of 16 steps: steps 1-16 and 17-20.
        assert_eq!(dispatches("weight_gradient_vec4"), Some(2), "{case}");
        assert_eq!(dispatches("adam_update"), Some(1), "{case}");
        assert!(kernels.iter().all(|k| k["ms_per_episode"].as_f64().unwrap() >= 0.0), "{case}");
        let total: f64 = kernels.iter().map(|k| k["ms_per_episode"].as_f64().unwrap()).sum();
        assert!(total > 0.0, "{case}");
    }
}

#[test]
fn image_task_trains_from_a_directory_and_eval_draws_the_completion() {
    let tmp = std::env::temp_dir().join(format!("plasticity-cli-img-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (images, run) = (tmp.join("images"), tmp.join("run"));
    std::fs::create_dir_all(&images).unwrap();
    // Colour images of other sizes, converted and resized by the loader; one file that is not an image.
    for k in 0..4u32 {
        image::RgbImage::from_fn(10 + k, 12, |x, y| image::Rgb([(x * 20 + k * 30) as u8, (y * 15) as u8, 90]))
            .save(images.join(format!("im{k}.png")))
            .unwrap();
    }
    std::fs::write(images.join("broken.png"), b"not a png").unwrap();
    let (i, r) = (images.to_str().unwrap(), run.to_str().unwrap());
    let common = ["--side", "4", "--cycles", "1", "--show-steps", "2", "--quiet", "--checkpoint-every", "2"];
    let mut args = vec!["train", "--task", "image", "--images", i, "--run-dir", r, "--episodes", "3", "--batch", "2"];
    args.extend_from_slice(&common);
    let o = plasticity(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: skipping") && stderr(&o).contains("broken.png"), "unreadable files are skipped with a warning");
    // 4 x 4 pixels and the bias neuron, and 3 spare neurons held at 0: N = 20 runs the vec4 kernels.
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!((config["task"]["spare_neurons"].as_u64(), config["network"]["neurons"].as_u64()), (Some(3), Some(20)), "{config}");
    let o = plasticity(&["eval", r, "--episodes", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run.join("completion.png").exists());

    let empty = tmp.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let fresh = tmp.join("fresh");
    let mut args = vec!["train", "--task", "image", "--images", empty.to_str().unwrap(), "--run-dir", fresh.to_str().unwrap()];
    args.extend_from_slice(&common);
    assert_clean_failure(&plasticity(&args), "no usable images");
    assert!(!fresh.exists(), "a refused run leaves no directory behind");
    assert_clean_failure(&plasticity(&["train", "--task", "image", "--run-dir", r]), "--task image needs --images DIR");
    // --neurons may name the model's 17 neurons or the network's 20, nothing else.
    let mut args = vec!["train", "--task", "image", "--images", i, "--run-dir", fresh.to_str().unwrap(), "--neurons", "18"];
    args.extend_from_slice(&common);
    assert_clean_failure(
        &plasticity(&args),
        "--neurons 18 contradicts --side 4: the image task uses side^2 + 1 = 17 neurons (with 3 spare",
    );
    assert!(!fresh.exists());
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn divergence_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = std::env::temp_dir().join(format!("plasticity-cli-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    // A sane first stretch writes a checkpoint; the resumed run with an absurd rate diverges.
    assert!(train(&dir, &["--episodes", "5"]).status.success());
    let before = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        std::fs::read_to_string(dir.join("config.json"))
            .unwrap()
            .replace("\"lr\": 0.003", "\"lr\": 1000.0")
            .replace("\"eta\": 0.01", "\"eta\": 0.5"),
    )
    .unwrap();
    let o = plasticity(&["train", "--resume", d, "--episodes", "200", "--quiet"]);
    assert_clean_failure(&o, "training diverged");
    assert!(stderr(&o).contains("the last good checkpoint (episode 5"), "{}", stderr(&o));
    assert_eq!(std::fs::read(dir.join("checkpoint.safetensors")).unwrap(), before, "the good checkpoint is untouched");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_or_sigterm_saves_a_checkpoint_that_resumes() {
    // SIGTERM is what `timeout`, `kill` and service managers send: it must save like Ctrl-C.
    for signal in ["-INT", "-TERM"] {
        let dir = std::env::temp_dir().join(format!("plasticity-cli-int{signal}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.to_str().unwrap();
        let mut args = vec!["train", "--run-dir", d, "--episodes", "100000", "--checkpoint-every", "100000"];
        args.extend_from_slice(&SMALL[..SMALL.len() - 5]); // without --checkpoint-every and --quiet
        args.extend_from_slice(&["--quiet", "--seed", "3"]);
        let child = Command::new(env!("CARGO_BIN_EXE_plasticity")).args(&args).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let csv = dir.join("metrics.csv");
        let start = std::time::Instant::now();
        while std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count()) < 4 {
            assert!(start.elapsed().as_secs() < 60, "training did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap().success());
        let o = child.wait_with_output().unwrap();
        assert_clean_failure(&o, "interrupted after episode");
        let checkpoint = plasticity_runtime::Checkpoint::load(&dir.join("checkpoint.safetensors")).expect("a checkpoint was saved");
        let done: u64 = checkpoint.metadata["episodes_done"].parse().unwrap();
        assert!(done >= 3);
        let o = plasticity(&["train", "--resume", d, "--episodes", &(done + 2).to_string(), "--quiet"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(losses(&dir).len() as u64, done + 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The f32 tensors of a safetensors file as name -> (shape, values), read with the safetensors
/// crate rather than through the engine's checkpoint code.
fn read_f32_tensors(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == safetensors::Dtype::F32)
        .map(|(name, view)| {
            let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// `export-episode` with a rule: gradients.safetensors holds one gradient per parameter tensor of
/// params.safetensors, same name and shape, and every one the rule uses is finite and not all zero
/// (tools/pytorch_baseline.py check compares them with PyTorch's autograd).
#[test]
fn export_episode_writes_a_gradient_for_every_parameter_of_the_rule() {
    let dir = std::env::temp_dir().join(format!("plasticity-cli-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rule = ["--modulation", "per-neuron", "--retroactive", "--trace-clip", "1", "--alpha", "per-neuron", "--eta-shape", "per-neuron"];
    let mut args = vec!["export-episode", "--neurons", "12", "--batch", "2", "--steps", "6", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(&rule);
    let o = plasticity(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let params = read_f32_tensors(&dir.join("params.safetensors"));
    let grads = read_f32_tensors(&dir.join("gradients.safetensors"));
    let names: Vec<&str> = params.keys().map(String::as_str).collect();
    assert_eq!(names, ["alpha", "eta", "mod_b", "mod_c", "mod_u", "mod_w", "w"], "parameter tensors of the rule");
    for (name, (shape, _)) in &params {
        let (grad_shape, grad) = grads.get(name).unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_eq!(grad_shape, shape, "{name}: gradient shape");
        assert!(grad.iter().all(|g| g.is_finite()) && grad.iter().any(|&g| g != 0.0), "{name}: gradient {grad:?}");
    }
    assert_eq!(grads.len(), params.len() + 1, "the parameters' gradients and the loss");
    assert!(grads["loss"].1[0] > 0.0, "loss {:?}", grads["loss"]);
    assert_clean_failure(
        &plasticity(&["export-episode", "--out", dir.to_str().unwrap(), "--retroactive"]),
        "retroactive neuromodulation needs a modulation",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `info` names the adapter, its limits and whether the forward step uses subgroup shuffles (on a CPU
/// adapter with subgroups, as lavapipe is, it does).
#[test]
fn info_names_the_adapter_and_the_forward_steps_subgroups() {
    let o = plasticity(&["info"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("adapter: ") && out.contains("max_storage_buffer_binding_size: ") && out.contains("largest network: N = "),
        "{out}"
    );
    let subgroups = out.lines().find(|l| l.starts_with("subgroups: ")).unwrap_or_else(|| panic!("no subgroups line: {out}"));
    if out.contains("(Vulkan, Cpu,") {
        assert!(subgroups.contains("shares the history by subgroup shuffles"), "{subgroups}");
    }
}
