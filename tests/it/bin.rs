//! Shared by the tests that run the real binary: its path, its output as text, the run report
//! its summary names, and a scan of a lake for a secret.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_iterable-lake");

/// stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The report of the run whose summary `sync` printed (its `run <id>:` line names it).
pub fn run_report(lake: &Path, sync: &Output) -> Value {
    let out = String::from_utf8_lossy(&sync.stdout);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split(':').next())
        .unwrap_or_else(|| panic!("no run line in the summary: {}", text(sync)));
    let path = lake.join("_runs").join(format!("{id}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// Fail if `needle` occurs in any file under `dir`; returns how many files were read.
pub fn assert_absent_in_tree(dir: &Path, needle: &str) -> usize {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files += 1;
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "the key is in {}",
                    p.display()
                );
            }
        }
    }
    files
}

/// `args` with the export, export-job, list-users and metrics rate limits lifted, as the fake
/// allows; a `sync` reads export streams through data.json (a later `--export-api` wins):
/// jobs cost a test several requests and polls per window, and have their own tests (`jobs`).
pub fn unlimited<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend([
        "--export-requests-per-minute",
        "100000",
        "--list-users-requests-per-minute",
        "100000",
        "--metrics-requests-per-minute",
        "100000",
        "--export-job-requests-per-second",
        "100000",
    ]);
    if args.first() == Some(&"sync") {
        all.extend(["--export-api", "stream"]);
    }
    all
}
