//! `train`, `eval` and `export-episode` against a run directory left in a bad state, options that a
//! resumed run cannot honour, and sizes past the device's limits: one clear error and a non-zero
//! exit each, never a panic or an abort, and nothing lost.

mod common;

use common::*;

use std::path::{Path, PathBuf};
use std::process::Output;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plasticity-rundir-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The small pattern task (N = 8, 2 patterns): a few episodes take well under a second.
fn train(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--run-dir", dir.to_str().unwrap(), "--neurons", "8", "--patterns", "2", "--quiet"];
    args.extend_from_slice(extra);
    plasticity(&args)
}

#[test]
fn sizes_past_the_device_are_refused_before_the_host_builds_an_episode() {
    let dir = scratch("sizes");
    let d = dir.to_str().unwrap();
    // A billion episodes of (T, B, N) inputs would be terabytes on the host: the device check
    // must come first (before it, the process aborted on the failed allocation).
    let o = train(&dir, &["--batch", "1000000000", "--episodes", "1"]);
    assert_clean_failure(&o, "a smaller --batch or --neurons fits");
    assert!(stderr(&o).contains("max_storage_buffer_binding_size"), "{}", stderr(&o));
    assert!(!dir.exists(), "a refused size leaves no run directory behind");
    // A batch past the workgroup grid's 65535 rows (and within every binding at N = 4, T = 2).
    let o = plasticity(&[
        "train",
        "--run-dir",
        d,
        "--neurons",
        "4",
        "--batch",
        "70000",
        "--patterns",
        "1",
        "--presentations",
        "1",
        "--show-steps",
        "1",
        "--gap-steps",
        "0",
    ]);
    assert_clean_failure(&o, "max_compute_workgroups_per_dimension");
    assert!(stderr(&o).contains("use a batch of at most"), "{}", stderr(&o));
    assert!(!dir.exists(), "a refused size leaves no run directory behind");
    // Episode lengths that overflow u32 saturate and are refused, rather than wrapping to a small T.
    assert_clean_failure(&train(&dir, &["--show-steps", "4294967295"]), "episodes of 4294967295 steps");
    for args in [
        ["export-episode", "--neurons", "8", "--batch", "100000", "--steps", "5", "--out", d],
        ["export-episode", "--neurons", "8", "--batch", "1", "--steps", "2000000000", "--out", d],
    ] {
        assert_clean_failure(&plasticity(&args), "use ");
        assert!(!dir.exists(), "export-episode creates --out only once the sizes are checked");
    }
}

#[test]
fn a_run_that_stopped_before_its_first_checkpoint_starts_again_in_its_directory() {
    let dir = scratch("restart");
    let d = dir.to_str().unwrap();
    // Diverges at once, before any checkpoint: config.json and metrics.csv are already written.
    assert_clean_failure(&train(&dir, &["--lr", "1e30", "--episodes", "3"]), "no checkpoint had been written yet");
    assert!(dir.join("config.json").exists() && !dir.join("checkpoint.safetensors").exists());
    // It cannot be resumed, and says so with the way out, which then works.
    assert_clean_failure(&plasticity(&["train", "--resume", d]), &format!("start it again with --run-dir {d}"));
    let o = train(&dir, &["--episodes", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "the header and the new run's two rows only: {metrics}");
    assert!(std::fs::read_to_string(dir.join("config.json")).unwrap().contains("\"lr\": 0.0003"), "the new run's config");
    // A directory whose run did checkpoint is still refused.
    assert_clean_failure(&train(&dir, &["--episodes", "2"]), "already holds a run");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_refuses_the_options_it_cannot_change_and_takes_a_new_learning_rate() {
    let dir = scratch("resume");
    let d = dir.to_str().unwrap();
    assert!(train(&dir, &["--episodes", "2"]).status.success());
    // Before, these were accepted and silently ignored (the run's own config was used).
    for option in [["--neurons", "16"], ["--batch", "4"], ["--rule", "oja"], ["--seed", "9"]] {
        let o = plasticity(&["train", "--resume", d, "--episodes", "3", option[0], option[1]]);
        assert!(!o.status.success() && stderr(&o).contains("cannot be used with"), "{option:?}: {}", stderr(&o));
    }
    // The optimizer's settings may change from the checkpoint on, as the divergence message advises.
    let o = plasticity(&["train", "--resume", d, "--episodes", "3", "--lr", "0.002", "--clip", "4", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(config.contains("\"lr\": 0.002") && config.contains("\"clip_norm\": 4.0"), "{config}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_runs_never_write_one_run_directory_at_once() {
    let dir = scratch("lock");
    let d = dir.to_str().unwrap();
    assert!(train(&dir, &["--episodes", "2"]).status.success());
    // Another run holds the directory (the lock a running `train` takes).
    let held = std::fs::OpenOptions::new().write(true).open(dir.join(".lock")).expect("train leaves its lock file");
    held.lock().unwrap();
    assert_clean_failure(&plasticity(&["train", "--resume", d, "--episodes", "4", "--quiet"]), "is in use by another train run");
    drop(held);
    // A killed run's temporary file is cleaned up by the next run.
    let stale = dir.join(".checkpoint.safetensors.tmp12345");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let o = plasticity(&["train", "--resume", d, "--episodes", "4", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stale.exists(), "the stale temporary file is removed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_names_the_file_and_refuses_what_it_cannot_read() {
    let dir = scratch("eval");
    std::fs::create_dir_all(&dir).unwrap();
    let run = dir.join("run");
    assert!(train(&run, &["--episodes", "1"]).status.success());
    let r = run.to_str().unwrap();
    // A pattern run has no figure to draw; before, --figure and --images were ignored.
    assert_clean_failure(&plasticity(&["eval", r, "--figure", "f.png"]), "are for image-task runs");
    // An export-episode file is a checkpoint without a run config: say what eval needs, and where.
    let out = dir.join("export");
    let o = plasticity(&["export-episode", "--neurons", "8", "--batch", "1", "--steps", "3", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let params = out.join("params.safetensors");
    assert_clean_failure(&plasticity(&["eval", params.to_str().unwrap()]), "params.safetensors holds no run config");
    assert!(std::fs::read_dir(&out).unwrap().count() == 3, "export-episode leaves its three files and no staging directory");
    // A device file is not read (a checkpoint is a regular file; /dev/zero would be read without end).
    if Path::new("/dev/null").exists() {
        assert_clean_failure(&plasticity(&["eval", "/dev/null"]), "not a regular file");
    }
    // A file longer than its header says is not "truncated".
    let mut bytes = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    bytes.extend_from_slice(b"1234567");
    let padded = dir.join("padded.safetensors");
    std::fs::write(&padded, bytes).unwrap();
    let o = plasticity(&["eval", padded.to_str().unwrap()]);
    assert_clean_failure(&o, "padded.safetensors");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn options_of_the_other_task_or_rule_are_refused_rather_than_ignored() {
    let dir = scratch("ignored");
    let d = dir.to_str().unwrap();
    for (args, expected) in [
        (vec!["--side", "8"], "--side belongs to --task image"),
        (vec!["--cycles", "2"], "--cycles belongs to --task image"),
        (vec!["--task", "image", "--images", d, "--patterns", "3"], "--patterns belongs to --task pattern"),
        (vec!["--task", "image", "--images", d, "--input-gain", "5"], "--input-gain belongs to --task pattern"),
        (vec!["--fixed-eta", "--modulation", "simple"], "--fixed-eta has no effect with --modulation"),
    ] {
        let mut all = vec!["train", "--run-dir", d, "--episodes", "1"];
        all.extend_from_slice(&args);
        assert_clean_failure(&plasticity(&all), expected);
    }
    // The baseline has no rule (the parser refuses the pair).
    let o = plasticity(&["train", "--run-dir", d, "--baseline", "--rule", "oja"]);
    assert!(!o.status.success() && stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    // Where eta is the eligibility trace's rate, fixing it means something.
    let o = train(&dir, &["--episodes", "1", "--fixed-eta", "--modulation", "simple", "--retroactive"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_whose_eta_left_the_stable_range_is_read_with_a_warning() {
    let dir = scratch("eta");
    assert!(train(&dir, &["--episodes", "1"]).status.success());
    let path = dir.join("checkpoint.safetensors");
    let p = path.to_str().unwrap();
    let o = plasticity(&["eval", p, "--episodes", "1"]);
    assert!(o.status.success() && !stderr(&o).contains("warning:"), "a trained eta passes quietly: {}", stderr(&o));
    // eta = 5 under the decay rule: the trace's update (1 - eta) H + eta x x no longer decays.
    let mut checkpoint = plasticity_runtime::Checkpoint::load(&path).unwrap();
    let eta = checkpoint.parameters.layout.eta_offset as usize;
    checkpoint.parameters.values[eta] = 5.0;
    checkpoint.save(&path).unwrap();
    let o = plasticity(&["eval", p, "--episodes", "1"]);
    assert!(o.status.success(), "read, not refused: {}", stderr(&o));
    assert!(stderr(&o).contains("eta = 5 is outside [0, 1)"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_metrics_row_is_refused_on_resume() {
    let dir = scratch("metrics");
    let d = dir.to_str().unwrap();
    assert!(train(&dir, &["--episodes", "3", "--checkpoint-every", "3"]).status.success());
    let path = dir.join("metrics.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "2,NaN,inf,x,,"; // before, accepted and reported as "sign error inf%"
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let o = plasticity(&["train", "--resume", d, "--episodes", "4", "--quiet"]);
    assert_clean_failure(&o, "row 2 ('2,NaN,inf,x,,') is not a metrics row");
    // The intact file resumes.
    std::fs::write(&path, &text).unwrap();
    let o = plasticity(&["train", "--resume", d, "--episodes", "4", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The export set's name in `file`'s safetensors metadata.
fn export_set(file: &Path) -> String {
    let bytes = std::fs::read(file).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap_or_default();
    metadata.get("export_set").unwrap_or_else(|| panic!("{}: no export_set in {metadata:?}", file.display())).clone()
}

/// export-episode names its set in every file (a run killed between its three renames leaves a
/// mixed set, which tools/pytorch_baseline.py check refuses by these names), and removes the
/// staging directories of killed exports (an unlocked lock file, or none for a long time), but not
/// one a live export holds, one a live export has just created and not locked yet, or one it did not
/// name.
#[test]
fn export_episode_names_its_set_and_removes_only_stale_staging() {
    let out = scratch("export-set");
    let export = || plasticity(&["export-episode", "--neurons", "8", "--batch", "1", "--steps", "3", "--out", out.to_str().unwrap()]);
    for name in [".export.tmp1", ".export.tmp2", ".export.tmp3", ".export.tmp4", ".export.tmpx"] {
        std::fs::create_dir_all(out.join(name)).unwrap();
        std::fs::write(out.join(name).join("params.safetensors"), b"partial").unwrap();
    }
    // Killed after locking: its lock file is there, and no one holds it.
    std::fs::File::create(out.join(".export.tmp1/.lock")).unwrap();
    // A live export's staging directory: its lock is held (here by the test).
    let held = std::fs::File::create(out.join(".export.tmp2/.lock")).unwrap();
    held.try_lock().unwrap();
    // No lock file: .export.tmp3 just created by a live export, .export.tmp4 an hour old (killed
    // between creating the directory and its lock).
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(out.join(".export.tmp4")).unwrap().set_modified(hour_ago).unwrap();
    let o = export();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join(".export.tmp1").exists(), "a killed export's staging directory is removed");
    assert!(out.join(".export.tmp2/params.safetensors").exists(), "a live export's staging directory is left alone");
    assert!(out.join(".export.tmp3/params.safetensors").exists(), "a staging directory not yet locked is left alone");
    assert!(!out.join(".export.tmp3/.lock").exists(), "and is given no lock file by another export");
    assert!(!out.join(".export.tmp4").exists(), "an old staging directory that never got its lock is removed");
    assert!(out.join(".export.tmpx").exists(), "a directory not named like a staging one is left alone");
    let sets = ["params", "episode", "gradients"].map(|name| export_set(&out.join(format!("{name}.safetensors"))));
    assert!(sets.iter().all(|s| *s == sets[0]), "one set: {sets:?}");
    assert!(export().status.success());
    let again = export_set(&out.join("episode.safetensors"));
    assert_ne!(again, sets[0], "a second export is another set");
    drop(held);
    let _ = std::fs::remove_dir_all(&out);
}
