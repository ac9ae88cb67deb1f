//! `bench` given bad input: refused before anything is measured where it can be, and otherwise
//! keeping in its --json file every figure measured before the failure; options that would be
//! ignored are refused or kept, never silently dropped.

mod common;

use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A clean failure before the adapter was opened, so before anything was measured.
#[track_caller]
fn assert_refused_before_measuring(o: &Output, expected: &str) {
    assert_clean_failure(o, expected);
    let out = stdout(o);
    assert!(!out.contains("adapter:") && !out.contains("streaming ceiling"), "measured before refusing: {out}");
}

/// The smallest run: one tiny size, one repetition, no warm-up.
const TINY: &[&str] = &["--batch", "1", "--steps", "5", "--reps", "1", "--warmup", "0"];

fn bench(extra: &[&str]) -> Output {
    let mut args = vec!["bench"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    plasticity(&args)
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plasticity-bench-bad-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// A run stopped after its first size keeps that size in the JSON file, marked incomplete; a run
/// that finishes is marked complete.
#[test]
fn a_stopped_run_keeps_the_sizes_measured_before_it_in_the_json_file() {
    let dir = scratch("partial");
    let json = dir.join("bj.json");
    // Twelve sizes of a few hundred ms each: killed (as an out-of-memory killer or a closed session
    // would) as soon as the file first appears, after the first size.
    let sizes = ["8"; 12].join(",");
    let mut args = vec!["bench", "--neurons", &sizes, "--no-memory", "--json", json.to_str().unwrap()];
    args.extend_from_slice(TINY);
    let mut child = Command::new(env!("CARGO_BIN_EXE_plasticity")).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = std::time::Instant::now();
    while !json.exists() {
        assert!(start.elapsed().as_secs() < 120, "no JSON file after the first size");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let doc = read_json(&json);
    let cases = doc["cases"].as_array().unwrap_or_else(|| panic!("no cases: {doc}"));
    assert!(!cases.is_empty() && cases.len() < 12, "{doc}");
    assert_eq!((&cases[0]["neurons"], &cases[0]["batch"]), (&serde_json::json!(8), &serde_json::json!(1)), "{doc}");
    assert!(cases[0]["forward_ms_per_step"].as_f64().is_some_and(|ms| ms > 0.0), "{doc}");
    assert_eq!(doc["complete"], serde_json::json!(false), "{doc}");

    let o = bench(&["--neurons", "8", "--no-memory", "--json", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc = read_json(&json);
    assert_eq!(doc["complete"], serde_json::json!(true), "{doc}");
    assert!(doc["cases"].as_array().is_some_and(|c| c.len() == 1) && doc["memory_scaling"].is_null(), "{doc}");
    // Only the file itself: no temporary file left beside it by the atomic writes or the write check.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["bj.json"], "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A size past the device's limits is refused once the adapter is open, before the first
/// measurement: none is spent on the sizes before it.
#[test]
fn sizes_past_the_device_are_refused_before_the_first_measurement() {
    // N = 40000 passes the kernels' 32-bit indices, but its 12.8 GB of parameters exceed any
    // device's storage binding (a 32-bit byte count).
    let o = bench(&["--neurons", "8,40000", "--no-memory"]);
    assert_clean_failure(&o, "N = 40000, B = 1");
    assert_clean_failure(&o, "use at most");
    assert!(!stdout(&o).contains("streaming ceiling"), "measured before refusing: {}", stdout(&o));
    let o = bench(&["--neurons", "8", "--memory-size", "8,100000", "--memory-steps", "5"]);
    assert_clean_failure(&o, "the memory-growth figure at N = 8, B = 100000");
    assert!(!stdout(&o).contains("streaming ceiling"), "measured before refusing: {}", stdout(&o));
}

/// A --json path that cannot be written is refused before anything is measured, naming the path.
#[test]
fn an_unwritable_json_path_is_refused_before_measuring() {
    let dir = scratch("unwritable");
    let file = dir.join("some_file");
    std::fs::write(&file, "not a directory").unwrap();
    for json in [file.join("x.json"), file.join("sub").join("x.json")] {
        let o = bench(&["--neurons", "8", "--no-memory", "--json", json.to_str().unwrap()]);
        assert_refused_before_measuring(&o, &format!("{} is a file, not a directory", file.display()));
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory", "the file is left alone");

    // /proc takes no new files, not even from root.
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        let o = bench(&["--neurons", "8", "--no-memory", "--json", "/proc/bench.json"]);
        assert_refused_before_measuring(&o, "--json /proc/bench.json: cannot create a file in /proc; give a writable directory");
    }

    // A read-only directory: root writes into it regardless, so this part is skipped where a file
    // can be created there (running as root, as in a container); /proc above covers root.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let read_only = dir.join("read-only");
        std::fs::create_dir(&read_only).unwrap();
        std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
        let privileged = std::fs::write(read_only.join("probe"), "").is_ok();
        if !privileged {
            let json = read_only.join("x.json");
            let o = bench(&["--neurons", "8", "--no-memory", "--json", json.to_str().unwrap()]);
            assert_refused_before_measuring(&o, &format!("cannot create a file in {}", read_only.display()));
        }
        std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What can be checked without the device is checked before the first measurement, not after the table.
#[test]
fn sizes_past_the_kernels_indices_are_refused_before_measuring() {
    // The memory-growth figure comes last; its size was refused only after the whole table.
    let o = bench(&["--neurons", "8", "--memory-size", "100000,1", "--memory-steps", "5"]);
    assert_refused_before_measuring(&o, "--memory-size 100000,1");
    assert_clean_failure(&o, "use at most 46340 neurons");
    assert_refused_before_measuring(&bench(&["--neurons", "8", "--memory-size", "8"]), "--memory-size takes two positive numbers");
    // A size of the table past the 32-bit indices, after one that fits.
    let o = bench(&["--neurons", "8,100000", "--no-memory"]);
    assert_refused_before_measuring(&o, "--neurons 100000");
    assert_clean_failure(&o, "use at most 46340 neurons");
}

/// Options given with --quick are kept, not overridden by its own choices.
#[test]
fn quick_keeps_the_options_given_with_it() {
    let dir = scratch("quick");
    let json = dir.join("quick.json");
    let j = json.to_str().unwrap();
    let quick = |extra: &[&str]| {
        let mut args = vec!["bench", "--quick", "--neurons", "8", "--batch", "1", "--steps", "5", "--json", j];
        args.extend_from_slice(extra);
        plasticity(&args)
    };
    let o = quick(&["--memory-size", "8,1", "--memory-steps", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc = read_json(&json);
    let sizes: Vec<_> = doc["cases"].as_array().unwrap().iter().map(|c| (c["neurons"].clone(), c["batch"].clone())).collect();
    assert_eq!(sizes, [(serde_json::json!(8), serde_json::json!(1))], "{doc}");
    let memory = &doc["memory_scaling"];
    assert_eq!((&memory["neurons"], &memory["batch"]), (&serde_json::json!(8), &serde_json::json!(1)), "{doc}");
    assert_eq!(memory["points"].as_array().map(|p| p.iter().map(|p| p["steps"].clone()).collect::<Vec<_>>()), Some(vec![5.into()]));
    // The repetitions and warm-up that ran: --quick's one and none where not given, else the options'.
    let config = &doc["config"];
    assert_eq!((&config["quick"], &config["reps"], &config["warmup"]), (&true.into(), &1.into(), &0.into()), "{doc}");
    assert_eq!(doc["complete"], serde_json::json!(true), "{doc}");
    let o = quick(&["--no-memory", "--reps", "2", "--warmup", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config = read_json(&json)["config"].clone();
    assert_eq!((&config["reps"], &config["warmup"]), (&2.into(), &1.into()), "{config}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Combinations where one option would be silently ignored are refused by the parser.
#[test]
fn options_that_would_be_ignored_are_refused() {
    let cannot = "cannot be used with";
    // --compare-rules times its own set of rules, and writes no JSON, profile or memory-growth figure.
    for extra in [
        &["--rule", "oja"][..],
        &["--trace-clip", "1"],
        &["--modulation", "simple"],
        &["--no-plastic-self"],
        &["--json", "ignored.json"],
        &["--profile"],
        &["--memory-size", "8,1"],
        &["--memory-steps", "5"],
    ] {
        let mut args = vec!["--compare-rules", "--neurons", "8"];
        args.extend_from_slice(extra);
        let o = bench(&args);
        assert_refused_before_measuring(&o, cannot);
        assert_clean_failure(&o, extra[0]);
    }
    // --no-memory skips the figure the memory options describe.
    for extra in [&["--memory-size", "8,1"][..], &["--memory-steps", "5"]] {
        let mut args = vec!["--no-memory", "--neurons", "8"];
        args.extend_from_slice(extra);
        let o = bench(&args);
        assert_refused_before_measuring(&o, cannot);
        assert_clean_failure(&o, extra[0]);
    }
}

/// --forward-splits and --backward-groups are upper bounds; a size that runs fewer says so under its
/// row instead of only changing the S and Z columns.
#[test]
fn work_split_options_past_a_size_are_said() {
    let o = bench(&["--neurons", "8", "--forward-splits", "100", "--backward-groups", "2", "--no-memory"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("(N = 8: --forward-splits 100 ran as S = 8, chunks of ceil(N / 100) = 1 neuron(s))"), "{out}");
    assert!(out.contains("(B = 1: --backward-groups 2 ran as Z = 1, at most one group per batch element)"), "{out}");
    // Options a size meets exactly add nothing.
    let o = bench(&["--neurons", "8", "--forward-splits", "2", "--backward-groups", "1", "--no-memory"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("ran as"), "{}", stdout(&o));
}
