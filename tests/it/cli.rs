//! End-to-end tests of the real binary: commands, exit codes, messages, and that the API key
//! never appears in any output or lake file.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use iterable_lake::catalog::{self, STREAMS};
use iterable_lake::fake::{FakeConfig, FakeIterable, Faults};

use crate::bin::{BIN, assert_absent_in_tree, text, unlimited};

fn run(args: &[&str], key: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("ITERABLE_API_KEY")
        .env("NO_COLOR", "1");
    if let Some(k) = key {
        cmd.env("ITERABLE_API_KEY", k);
    }
    cmd.output().unwrap()
}

#[test]
fn streams_lists_the_catalog() {
    let o = run(&["streams"], None);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    for s in STREAMS {
        assert!(out.contains(s.name), "{}", s.name);
    }
    assert!(out.contains("emailUnSubscribe"));
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap();
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (
            &["sync", "--dest", dest, "--streams", "email_sned"],
            Some("k"),
            r#"unknown stream "email_sned" (did you mean "email_send"?)"#,
        ),
        (
            &["sync", "--dest", dest, "--start-date", "2024-02-30"],
            Some("k"),
            "--start-date: \"2024-02-30\" is not a date",
        ),
        (
            &[
                "sync",
                "--dest",
                dest,
                "--start-date",
                "2024-02-02",
                "--end-date",
                "2024-01-01",
            ],
            Some("k"),
            "is not before --end-date",
        ),
        (
            &["sync", "--dest", dest],
            None,
            "no API key: set ITERABLE_API_KEY or give --api-key-file",
        ),
        (
            &["sync", "--dest", dest, "--mode", "sometimes"],
            Some("k"),
            "invalid value 'sometimes'",
        ),
    ];
    for (args, key, want) in cases {
        let o = run(args, key);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{}", text(&o));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_clearly_and_a_good_sync_never_shows_the_key() {
    let fake = FakeIterable::start(FakeConfig::small(11)).await.unwrap();
    fake.set_now("2024-01-04T00:00:00Z".parse().unwrap());
    let key = fake.config().api_key.clone();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("lake");
    let dest = dest.to_str().unwrap();
    let base = fake.base_url();
    let common = unlimited(&[
        "sync",
        "--dest",
        dest,
        "--base-url",
        &base,
        "--start-date",
        "2024-01-01",
        "--end-date",
        "2024-01-04",
    ]);
    let wrong = tokio::task::spawn_blocking({
        let args: Vec<String> = common.iter().map(|s| s.to_string()).collect();
        move || {
            let args: Vec<&str> = args
                .iter()
                .map(String::as_str)
                .chain(["--streams", "email_send"])
                .collect();
            run(&args, Some("not-the-key"))
        }
    })
    .await
    .unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("API key was rejected"),
        "{}",
        text(&wrong)
    );
    assert!(
        text(&wrong).contains("failed streams: email_send"),
        "{}",
        text(&wrong)
    );

    let args: Vec<String> = common.iter().map(|s| s.to_string()).collect();
    let key2 = key.clone();
    let good = tokio::task::spawn_blocking(move || {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--log-format", "json"]);
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env("ITERABLE_API_KEY", &key2)
            .env("RUST_LOG", "debug");
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(good.status.code(), Some(0), "{}", text(&good));
    let out = text(&good);
    assert!(
        out.contains("\"level\":\"DEBUG\"") || out.contains("\"level\":\"INFO\""),
        "JSON logs: {out}"
    );
    assert!(!out.contains(&key), "the key is in the output");
    assert!(!text(&wrong).contains(&key));
    assert!(
        assert_absent_in_tree(dir.path(), &key) > 0,
        "the lake holds files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_window_and_rerun_leaves_the_lake_exact() {
    let mut cfg = FakeConfig::small(12);
    cfg.faults = Faults {
        export_rate: None,
        latency: Some(Duration::from_millis(150)),
        ..Faults::default()
    };
    let fake = FakeIterable::start(cfg).await.unwrap();
    let end = "2024-01-04T00:00:00Z";
    fake.set_now(end.parse().unwrap());
    let key = fake.config().api_key.clone();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap().to_string();
    let base = fake.base_url();
    let args = move || -> Vec<String> {
        unlimited(&[
            "sync",
            "--dest",
            &dest,
            "--base-url",
            &base,
            "--start-date",
            "2024-01-01",
            "--end-date",
            end,
            "--lag",
            "0",
        ])
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let manifest_dir = dir.path().join("_manifest");
    let (first_args, key1) = (args(), key.clone());
    let killed = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&first_args)
            .env("ITERABLE_API_KEY", &key1)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            let commits = std::fs::read_dir(&manifest_dir)
                .map(|d| d.count())
                .unwrap_or(0);
            if commits >= 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::read_dir(&manifest_dir)
            .map(|d| d.count())
            .unwrap_or(0)
    })
    .await
    .unwrap();
    assert!(
        killed >= 3 && killed < STREAMS.len(),
        "killed mid-run after {killed} commits"
    );
    let again = tokio::task::spawn_blocking(move || {
        let a = args();
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&a, Some(&key))
    })
    .await
    .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let lake = iterable_lake::sink::LakeStore::open(dir.path().to_str().unwrap()).unwrap();
    let manifest = iterable_lake::manifest::Manifest::load(&lake)
        .await
        .unwrap();
    for s in catalog::export_streams() {
        let state = &manifest.streams[s.name];
        let want: u64 = fake
            .truth_counts(
                s.data_type(),
                "2024-01-01T00:00:00Z".parse().unwrap(),
                end.parse().unwrap(),
            )
            .values()
            .sum();
        assert_eq!(state.rows(), want, "{}", s.name);
    }
}

#[test]
fn demo_builds_a_lake_duckdb_reads() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("demo-lake");
    let o = run(&["demo", "--dest", dest.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // The query the demo prints, as printed (the test's DuckDB loads the Delta extension).
    let printed = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("duckdb -c \"INSTALL delta; LOAD delta; ")
        })
        .unwrap_or_else(|| panic!("no DuckDB query in {out}"));
    let query = printed.strip_suffix('"').unwrap();
    assert!(query.contains("delta_scan("), "{query}");
    let Some(days) = crate::support::duckdb(query) else {
        return;
    };
    assert_eq!(days.rows.len(), 3, "three days of data: {days:?}");
    let sql = format!(
        "SELECT (SELECT count(*) FROM delta_scan('{0}/email_send')) AS events, \
                (SELECT count(*) FROM delta_scan('{0}/campaigns')) AS campaigns",
        dest.display()
    );
    let result = crate::support::duckdb(&sql).unwrap();
    let row = &result.rows[0];
    assert!(row[0].as_u64().unwrap() > 100, "{row:?}");
    assert!(row[1].as_u64().unwrap() > 1000, "{row:?}");
}

/// `fake-truth` prints every record a fake with the same data flags serves, one line each,
/// sorted: the torture suite's record-for-record comparison of a lake rests on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_truth_prints_every_record_the_fake_serves() {
    let o = run(
        &[
            "fake-truth",
            "--seed",
            "5",
            "--start",
            "2024-01-01",
            "--days",
            "2",
            "--events-per-day",
            "30",
            "--users",
            "60",
            "--streams",
            "email_send,users",
        ],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert!(out.lines().is_sorted());
    let fake = FakeIterable::start(FakeConfig {
        days: 2,
        events_per_day: 30,
        users: 60,
        ..FakeConfig::small(5)
    })
    .await
    .unwrap();
    let (start, end) = (
        "2024-01-01T00:00:00Z".parse().unwrap(),
        "2024-01-03T00:00:00Z".parse().unwrap(),
    );
    for (stream, data_type) in [("email_send", "emailSend"), ("users", "user")] {
        let mut printed = std::collections::BTreeMap::new();
        let mut ids = std::collections::BTreeSet::new();
        for l in lines.iter().filter(|l| l[0] == stream) {
            *printed.entry(l[1].parse().unwrap()).or_insert(0u64) += 1;
            ids.insert(l[2]);
        }
        let truth = fake.truth_counts(data_type, start, end);
        assert!(!truth.is_empty(), "{stream}");
        assert_eq!(printed, truth, "{stream}");
        let rows: u64 = truth.values().sum();
        assert_eq!(ids.len() as u64, rows, "{stream}: identities are distinct");
    }
    let o = run(&["fake-truth", "--streams", "lists"], None);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(
        text(&o).contains("lists is not a dated export stream"),
        "{}",
        text(&o)
    );
}
