//! Smoke tests of the `ferry` executable itself (the full black-box suite is in `tests/`).
//!
//! Having an integration test here also makes `cargo test --workspace` build the `ferry`
//! binary that the `ferry-tests` suite drives.

use std::process::Command;

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

#[test]
fn version_and_help_exit_zero() {
    let v = ferry().arg("--version").output().unwrap();
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("ferry "));
    let h = ferry().arg("--help").output().unwrap();
    assert!(h.status.success());
    let help = String::from_utf8_lossy(&h.stdout);
    assert!(help.contains("sync") && help.contains("watch"), "{help}");
}

#[test]
fn a_bad_duration_is_a_usage_error_naming_the_units() {
    let out = ferry()
        .args([
            "watch",
            "/nonexistent-src",
            "/nonexistent-dst",
            "--debounce",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ms, s, m, h or d"));
}
