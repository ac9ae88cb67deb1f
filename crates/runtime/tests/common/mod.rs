//! Shared by the command-line test binaries: run `plasticity`, read its output, and check a clean
//! failure. (Each test binary uses some of these.)
#![allow(dead_code)]

use std::process::{Command, Output};

pub fn plasticity(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plasticity")).args(args).output().expect("run plasticity")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit status 1 (our error) or 2 (the parser's), not a panic, an abort or a signal, and our last
/// `error:` line contains `expected`.
#[track_caller]
pub fn assert_clean_failure(o: &Output, expected: &str) {
    let err = stderr(o);
    assert!(matches!(o.status.code(), Some(1 | 2)), "should fail with exit status 1 or 2, not {}: {err}", o.status);
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "a panic instead of an error: {err}");
    // The last "error:" line is ours (graphics drivers may print their own before it).
    let line = err.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line in: {err}"));
    assert!(line.contains(expected), "expected '{expected}' in: {line}");
}
