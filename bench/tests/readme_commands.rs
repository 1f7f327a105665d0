//! The benchmark commands the README shows, run small (one run, few calls): each must
//! still exist and print the rows the README's tables are made of.

use std::process::Command;

fn bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard-bench"))
        .args(args)
        .output()
        .expect("running switchboard-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn capture_rows_print_the_floor_and_the_capturing_engine() {
    let out = bench(&["--rows", "capture", "--runs", "1", "--calls", "2000"]);
    for row in [
        "| 3m. floor: bare RECV/CONTINUE thread, mkdir |",
        "| 6. engine: log mkdir, path read and fenced |",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
    // The events carry the path (some may not in a debug build that starts cold: a
    // listener short of capture buffers says so instead).
    let pinned = out
        .lines()
        .find(|l| l.starts_with("- pinned: "))
        .unwrap_or_else(|| panic!("{out}"));
    let share: f64 = pinned
        .split(", ")
        .find_map(|part| part.strip_suffix("% with the path"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{pinned}"));
    assert!(share > 50.0, "{pinned}");
}

#[test]
fn latency_rows_compare_the_engine_and_the_agent_to_the_floor() {
    // Row 5 starts the `switchboard` binary cargo built beside this one.
    let out = bench(&["--rows", "latency", "--runs", "1", "--calls", "2000"]);
    for row in [
        "| 3. floor: bare RECV/CONTINUE thread |",
        "| 4. engine: 200 rules, log, event + count |",
        "| 5. `switchboard agent` over listenerPath (as 4) |",
        "Row 5's agent writes its JSON events to `/dev/null`",
        "row 5 median ≤ 1.05× floor, pinned, sync on:",
        "Other tasks' CPU time",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
}

#[test]
fn latency_rows_with_the_agent_logging_into_a_file() {
    let out = bench(&[
        "--rows",
        "latency",
        "--runs",
        "1",
        "--calls",
        "2000",
        "--agent-events",
        "file",
    ]);
    for row in [
        "| 5. `switchboard agent` over listenerPath (as 4) |",
        "Row 5's agent writes its JSON events to a file in the bench's scratch directory",
        "row 5 median ≤ 1.05× floor, pinned, sync on:",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
    // The bench counts the file's syscall lines against the calls made, and reports any
    // call without one as dropped.
    assert!(!out.contains("Events dropped"), "{out}");
}

#[test]
fn writer_rows_price_a_line_written_nowhere_to_dev_null_and_to_a_file() {
    let out = bench(&["--rows", "writer", "--runs", "1"]);
    for row in [
        "| nowhere (in-process sink: formatting only) |",
        "| `/dev/null` |",
        "| a file in the bench's scratch directory, as the agent writes it (space reserved ahead) |",
        "| the same file, nothing reserved ahead |",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("{row}: {out}"));
        // `min / median / max ns`: the writer ran and was counted.
        let median: f64 = line
            .split(" / ")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(median > 0.0, "{line}");
    }
}
