//! End-to-end tests of the operator commands (`check`, `streams`, `state`, `state reset`),
//! configuration layering (`--config`, `--airbyte-config`, environment, flags), `--exclude`
//! and the progress output, each running the real binary against the fake API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use iterable_lake::catalog::STREAMS;
use iterable_lake::convert::StreamSchema;
use iterable_lake::fake::{FakeConfig, FakeIterable, Faults};
use serde_json::Value;

use crate::bin::{BIN, assert_absent_in_tree, run_report, text, unlimited};

const START: &str = "2024-01-01";
const END: &str = "2024-01-04T00:00:00Z";

/// Run the binary with `args` and exactly the given Iterable variables (the caller's are
/// removed), off the async runtime so the in-process fake keeps serving.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env_remove("ITERABLE_API_KEY")
            .env_remove("ITERABLE_REGION")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_code(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
}

/// A fake with a few days of data, no rate limit, rejecting these data type spellings.
async fn fake(seed: u64, rejected_data_types: &[&str]) -> FakeIterable {
    let mut cfg = FakeConfig::small(seed);
    cfg.faults = Faults {
        export_rate: None,
        rejected_data_types: rejected_data_types.iter().map(|t| t.to_string()).collect(),
        ..Faults::default()
    };
    let fake = FakeIterable::start(cfg).await.unwrap();
    fake.set_now(END.parse().unwrap());
    fake
}

/// A file holding the fake's key.
fn key_file(dir: &Path, fake: &FakeIterable) -> PathBuf {
    let path = dir.join("iterable.key");
    std::fs::write(&path, format!("{}\n", fake.config().api_key)).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Per stream of a run report: (rows, files, cursor, status).
fn outcome(report: &Value) -> BTreeMap<String, (u64, u64, String, String)> {
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stream"].as_str().unwrap().to_string(),
                (
                    s["rows"].as_u64().unwrap(),
                    s["files"].as_u64().unwrap(),
                    s["cursor"].as_str().unwrap_or("").to_string(),
                    s["status"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// Records the fake holds for `data_type` over the test's range.
fn truth(fake: &FakeIterable, data_type: &str) -> u64 {
    let start = format!("{START}T00:00:00Z");
    fake.truth_counts(data_type, start.parse().unwrap(), END.parse().unwrap())
        .values()
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tells_a_good_key_a_wrong_key_a_dead_host_and_an_unreadable_stream() {
    let fake = fake(21, &["emailOpen", "emailUnSubscribe"]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = fake.config().api_key.clone();
    let key_path = key_file(dir.path(), &fake);
    let base = fake.base_url();
    let check = |streams: &'static str, rpm: &'static str| {
        [
            "check",
            "--base-url",
            base.as_str(),
            "--api-key-file",
            s(&key_path),
            "--streams",
            streams,
            "--export-requests-per-minute",
            rpm,
        ]
    };

    let good = run(&check("email_send,users,email_unsubscribe", "100000"), &[]).await;
    assert_code(&good, 0);
    let out = stdout(&good);
    let addr = fake.addr().to_string();
    assert!(
        out.starts_with(&format!(
            "API key: accepted by {addr} (GET /api/channels)\n"
        )),
        "{out}"
    );
    let row = |out: &str, stream: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(&format!("{stream} ")))
            .unwrap_or_else(|| panic!("no row for {stream}: {out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row(&out, "email_send"), ["email_send", "emailSend", "yes"]);
    assert_eq!(row(&out, "users"), ["users", "user", "yes"]);
    // the spec's spelling is rejected; the probe falls back to the one seen in the wild
    assert_eq!(
        row(&out, "email_unsubscribe"),
        ["email_unsubscribe", "emailUnSubscribe", "yes"]
    );
    assert!(out.ends_with("3 of 3 streams readable\n"), "{out}");
    assert_eq!(
        fake.export_requests(),
        4,
        "one probe per stream, two spellings"
    );
    assert_eq!(fake.requests("/api/channels"), 1);

    let some_unreadable = run(&check("email_send,email_open", "100000"), &[]).await;
    assert_code(&some_unreadable, 1);
    let out = stdout(&some_unreadable);
    assert_eq!(row(&out, "email_send")[2], "yes");
    let open = row(&out, "email_open");
    assert_eq!(open[..4], ["email_open", "emailOpen", "no", "400"], "{out}");
    assert!(out.contains("Invalid dataTypeName"), "{out}");
    assert!(out.ends_with("1 of 2 streams readable\n"), "{out}");

    // the export rate limit spaces the probes: 30 a minute is one every 2 seconds
    let t0 = Instant::now();
    let paced = run(&check("email_send,email_click", "30"), &[]).await;
    assert_code(&paced, 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );

    let exports = fake.export_requests();
    let wrong = run(
        &["check", "--base-url", &base, "--streams", "email_send"],
        &[("ITERABLE_API_KEY", "not-the-key")],
    )
    .await;
    assert_code(&wrong, 3);
    assert!(
        text(&wrong).contains(&format!(
            "error: the API key was rejected by {addr} (401 BadApiKey): check the key, and that --region matches"
        )),
        "{}",
        text(&wrong)
    );
    assert_eq!(
        fake.export_requests(),
        exports,
        "no probe with a rejected key"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}/api/");
    let t0 = Instant::now();
    let unreachable = run(
        &["check", "--base-url", &dead, "--streams", "email_send"],
        &[("ITERABLE_API_KEY", &key)],
    )
    .await;
    assert_code(&unreachable, 3);
    assert!(
        text(&unreachable).contains(&format!(
            "error: cannot reach 127.0.0.1:{port}: Connection refused"
        )),
        "{}",
        text(&unreachable)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "a dead host fails fast"
    );

    for o in [&good, &some_unreadable, &paced, &wrong, &unreachable] {
        assert!(!text(o).contains(&key), "the key is in the output");
        assert!(!text(o).contains("panicked"), "{}", text(o));
    }
}

/// `check` of the fake's `email_send` with `flags`, the fake's key in the environment.
async fn check_with(fake: &FakeIterable, flags: &[&str]) -> Output {
    let base = fake.base_url();
    let key = fake.config().api_key.clone();
    let mut args = vec!["check", "--base-url", &base, "--streams", "email_send"];
    args.extend(flags);
    run(&unlimited(&args), &[("ITERABLE_API_KEY", &key)]).await
}

/// The line of `check`'s output about export jobs.
fn jobs_line(o: &Output) -> Option<String> {
    stdout(o)
        .lines()
        .find(|l| l.starts_with("export jobs: "))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tells_whether_the_key_may_use_export_jobs_when_the_run_would() {
    let allowed = fake(26, &[]).await;
    for api in ["jobs", "auto"] {
        let o = check_with(&allowed, &["--export-api", api]).await;
        assert_code(&o, 0);
        assert_eq!(
            jobs_line(&o).as_deref(),
            Some("export jobs: the API answers (GET /api/export/jobs)"),
            "{}",
            text(&o)
        );
    }
    let o = check_with(&allowed, &["--export-api", "jobs", "--json"]).await;
    assert_code(&o, 0);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["key"]["accepted"], true, "{report}");
    let jobs = &report["export_jobs"];
    assert_eq!(
        (&jobs["export_api"], &jobs["required"], &jobs["answers"]),
        (&Value::from("jobs"), &Value::from(true), &Value::from(true)),
        "{report}"
    );
    assert_eq!(report["streams"][0]["readable"], true, "{report}");
    assert_eq!(allowed.requests("/api/export/jobs"), 3);
    assert_eq!(
        allowed.requests("/api/export/start"),
        0,
        "a probe starts nothing"
    );

    let mut cfg = FakeConfig::small(27);
    cfg.faults.jobs_denied = Some(403);
    let denied = FakeIterable::start(cfg).await.unwrap();
    let o = check_with(&denied, &["--export-api", "jobs"]).await;
    assert_code(&o, 1);
    let out = stdout(&o);
    assert!(out.starts_with("API key: accepted by "), "{out}");
    assert_eq!(
        jobs_line(&o).unwrap(),
        "export jobs: refused (403 Forbidden: This API key does not have permission to use \
         export jobs) to GET /api/export/jobs: this key may not use export jobs; \
         --export-api jobs reads every export window through them, so a sync would fail: use \
         a key allowed to use export jobs, or --export-api stream"
    );
    assert!(out.ends_with("1 of 1 streams readable\n"), "{out}");
    // auto (the default) reads backfills through data.json when refused jobs: told, but
    // not a failure.
    let o = check_with(&denied, &[]).await;
    assert_code(&o, 0);
    let line = jobs_line(&o).unwrap();
    assert!(
        line.contains("this key may not use export jobs; --export-api auto reads backfills")
            && line.ends_with("reads those through data.json instead, slower"),
        "{line}"
    );
    let o = check_with(&denied, &["--export-api", "jobs", "--json"]).await;
    assert_code(&o, 1);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let jobs = &report["export_jobs"];
    assert_eq!(
        (&jobs["answers"], &jobs["denied"], &jobs["error"]),
        (
            &Value::from(false),
            &Value::from(true),
            &Value::from("403 Forbidden: This API key does not have permission to use export jobs")
        ),
        "{report}"
    );
    // No probe when the run would not read through jobs.
    let probes = denied.requests("/api/export/jobs");
    assert_eq!(probes, 3);
    let streamed = check_with(&denied, &["--export-api", "stream"]).await;
    assert_code(&streamed, 0);
    assert_eq!(jobs_line(&streamed), None, "{}", text(&streamed));
    let o = run(
        &unlimited(&[
            "check",
            "--base-url",
            &denied.base_url(),
            "--streams",
            "lists",
            "--export-api",
            "jobs",
        ]),
        &[("ITERABLE_API_KEY", &denied.config().api_key)],
    )
    .await;
    assert_code(&o, 0);
    assert_eq!(jobs_line(&o), None, "{}", text(&o));
    assert_eq!(denied.requests("/api/export/jobs"), probes);

    let mut cfg = FakeConfig::small(28);
    cfg.faults.jobs_denied = Some(401);
    let unauthorized = FakeIterable::start(cfg).await.unwrap();
    let o = check_with(&unauthorized, &["--export-api", "jobs"]).await;
    assert_code(&o, 1);
    let line = jobs_line(&o).unwrap();
    assert!(
        line.starts_with(
            "export jobs: refused (401 Unauthorized) to GET /api/export/jobs: this key may not \
             use export jobs;"
        ),
        "{line}"
    );
    for o in [&o, &streamed] {
        assert!(!text(o).contains("panicked"), "{}", text(o));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_describes_the_catalog_and_prints_schemas() {
    let listed = run(&["streams", "--json"], &[]).await;
    assert_code(&listed, 0);
    let all: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(all.len(), STREAMS.len());
    let users = all.iter().find(|s| s["name"] == "users").unwrap();
    assert_eq!(users["data_type"], "user");
    assert_eq!(users["endpoint"], "GET /api/export/data.json");
    assert_eq!(users["cursor_field"], "profileUpdatedAt");
    assert_eq!(users["primary_key"], serde_json::json!(["email", "userId"]));
    assert_eq!(users["default_mode"], "incremental");
    assert_eq!(
        users["sync_modes"],
        serde_json::json!([
            "incremental",
            "full-refresh-overwrite",
            "full-refresh-append",
            "incremental-deduped"
        ])
    );
    assert!(
        users["partitioning"]
            .as_str()
            .unwrap()
            .starts_with("date=<UTC date of profileUpdatedAt>")
    );
    let send = all.iter().find(|s| s["name"] == "email_send").unwrap();
    assert_eq!(send["primary_key"], serde_json::json!([]));

    let table = run(&["streams"], &[]).await;
    assert_code(&table, 0);
    let line = stdout(&table)
        .lines()
        .find(|l| l.starts_with("users "))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert_eq!(
        line,
        [
            "users",
            "GET",
            "/api/export/data.json",
            "user",
            "incremental",
            "profileUpdatedAt",
            "email|userId",
            "date(profileUpdatedAt)"
        ]
    );

    let schema = run(&["streams", "--schema", "email_send", "--json"], &[]).await;
    assert_code(&schema, 0);
    let columns: Vec<Value> = serde_json::from_slice(&schema.stdout).unwrap();
    let def = iterable_lake::catalog::find("email_send").unwrap();
    let arrow = StreamSchema::parse(def.name, def.schema, def.is_event())
        .unwrap()
        .arrow;
    let names: Vec<&str> = columns
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = arrow.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, want);
    let created = columns.iter().find(|c| c["name"] == "createdAt").unwrap();
    assert_eq!(
        created["type"],
        arrow
            .field_with_name("createdAt")
            .unwrap()
            .data_type()
            .to_string()
    );
    let event_id = columns.iter().find(|c| c["name"] == "_event_id").unwrap();
    assert_eq!(event_id["nullable"], false);

    let text_schema = run(&["streams", "--schema", "users"], &[]).await;
    assert_code(&text_schema, 0);
    let out = stdout(&text_schema);
    assert!(out.starts_with("users: "), "{out}");
    assert!(
        out.contains("\n  emailDomain "),
        "struct fields are indented: {out}"
    );
    assert!(
        !out.contains("_event_id"),
        "users rows are not events: {out}"
    );

    let unknown = run(&["streams", "--schema", "email_sned"], &[]).await;
    assert_code(&unknown, 64);
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr).trim(),
        r#"error: --schema: unknown stream "email_sned" (did you mean "email_send"?)"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_matches_the_run_and_a_reset_makes_the_next_run_extract_again() {
    let fake = fake(22, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let key_path = key_file(dir.path(), &fake);
    let lake = dir.path().join("lake");
    let base = fake.base_url();
    let sync_args = unlimited(&[
        "sync",
        "--dest",
        s(&lake),
        "--base-url",
        &base,
        "--api-key-file",
        s(&key_path),
        "--streams",
        "email_send,users",
        "--start-date",
        START,
        "--end-date",
        END,
    ]);
    let first = run(&sync_args, &[]).await;
    assert_code(&first, 0);
    let report = outcome(&run_report(&lake, &first));
    assert_eq!(report["email_send"].0, truth(&fake, "emailSend"));
    assert_eq!(report["users"].0, truth(&fake, "user"));

    let state = run(&["state", "--dest", s(&lake), "--json"], &[]).await;
    assert_code(&state, 0);
    let state: Value = serde_json::from_slice(&state.stdout).unwrap();
    let streams = state["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    for st in streams {
        let name = st["stream"].as_str().unwrap();
        let (rows, files, cursor, _) = &report[name];
        assert_eq!(st["rows"].as_u64().unwrap(), *rows, "{name}");
        assert_eq!(st["files"].as_u64().unwrap(), *files, "{name}");
        assert_eq!(st["cursor"].as_str().unwrap(), cursor, "{name}");
        assert_eq!(st["mode"], "incremental");
        assert_eq!(st["quarantined"], serde_json::json!([]));
        assert_eq!(st["last_run"], run_report(&lake, &first)["run_id"]);
        assert!(st["bytes"].as_u64().unwrap() > 0);
    }
    let version = state["manifest_version"].as_u64().unwrap();

    let shown = run(&["state", "--dest", s(&lake)], &[]).await;
    assert_code(&shown, 0);
    let row: Vec<String> = stdout(&shown)
        .lines()
        .find(|l| l.starts_with("email_send "))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let (rows, files, _, _) = &report["email_send"];
    assert_eq!(
        row[..5],
        [
            "email_send".to_string(),
            "incremental".into(),
            "2024-01-04T00:00:00+00:00".into(),
            files.to_string(),
            rows.to_string()
        ]
    );

    // bad names are refused before anything is read or written
    let typo = run(&["state", "reset", "--dest", s(&lake), "email_sned"], &[]).await;
    assert_code(&typo, 64);
    assert!(
        text(&typo).contains(r#"unknown stream "email_sned" (did you mean "email_send"?)"#),
        "{}",
        text(&typo)
    );
    let nothing = run(&["state", "reset", "--dest", s(&lake)], &[]).await;
    assert_code(&nothing, 64);

    let reset = run(&["state", "reset", "--dest", s(&lake), "email_send"], &[]).await;
    assert_code(&reset, 0);
    let out = stdout(&reset);
    assert!(
        out.contains(
            "email_send: forgot cursor 2024-01-04T00:00:00+00:00 and 0 quarantined window(s)"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!("committed manifest version {}", version + 1)),
        "{out}"
    );
    let after: Value = serde_json::from_slice(
        &run(&["state", "--dest", s(&lake), "--json"], &[])
            .await
            .stdout,
    )
    .unwrap();
    let by_name = |v: &Value, n: &str| {
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stream"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name(&after, "email_send")["cursor"], Value::Null);
    assert_eq!(
        by_name(&after, "email_send")["rows"].as_u64().unwrap(),
        report["email_send"].0,
        "the live files stay until the next run"
    );
    assert_eq!(by_name(&after, "users")["cursor"], "2024-01-04T00:00:00Z");

    let again = run(&sync_args, &[]).await;
    assert_code(&again, 0);
    let second = outcome(&run_report(&lake, &again));
    assert_eq!(
        second["email_send"].0, report["email_send"].0,
        "extracted again"
    );
    assert_eq!(
        second["email_send"].2, "2024-01-04T00:00:00Z",
        "cursor back"
    );
    assert_eq!(second["users"].3, "up_to_date");
    assert_eq!(second["users"].0, 0);
    let state: Value = serde_json::from_slice(
        &run(&["state", "--dest", s(&lake), "--json"], &[])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(
        by_name(&state, "email_send")["rows"].as_u64().unwrap(),
        truth(&fake, "emailSend"),
        "re-extracting replaced the partitions: no duplicates"
    );
    assert_eq!(
        by_name(&state, "email_send")["cursor"],
        "2024-01-04T00:00:00Z"
    );

    let all = run(&["state", "reset", "--dest", s(&lake), "--all"], &[]).await;
    assert_code(&all, 0);
    let state: Value = serde_json::from_slice(
        &run(&["state", "--dest", s(&lake), "--json"], &[])
            .await
            .stdout,
    )
    .unwrap();
    for st in state["streams"].as_array().unwrap() {
        assert_eq!(st["cursor"], Value::Null, "{st}");
    }

    let missing = dir.path().join("no-such-lake");
    let no_lake = run(&["state", "--dest", s(&missing)], &[]).await;
    assert_code(&no_lake, 1);
    assert!(text(&no_lake).contains("no lake at"), "{}", text(&no_lake));
    assert!(!missing.exists(), "state does not create a lake");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let no_manifest = run(&["state", "--dest", s(&empty)], &[]).await;
    assert_code(&no_manifest, 1);
    assert_eq!(
        String::from_utf8_lossy(&no_manifest.stderr).trim(),
        format!(
            "error: no manifest in {}: nothing was synced there yet (check --dest)",
            s(&empty)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_files_make_the_same_run_as_flags_and_flags_win() {
    let fake = fake(23, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = fake.config().api_key.clone();
    let key_path = key_file(dir.path(), &fake);
    let base = fake.base_url();
    let lake = |n: &str| dir.path().join(n);

    let by_flags = run(
        &unlimited(&[
            "sync",
            "--dest",
            s(&lake("flags")),
            "--base-url",
            &base,
            "--api-key-file",
            s(&key_path),
            "--streams",
            "email_send,users,email_open",
            "--exclude",
            "email_open",
            "--start-date",
            START,
            "--end-date",
            END,
            "--lag",
            "0",
            "--lookback",
            "2",
            "--concurrency",
            "1",
        ]),
        &[],
    )
    .await;
    assert_code(&by_flags, 0);
    let want = outcome(&run_report(&lake("flags"), &by_flags));
    assert_eq!(want.keys().collect::<Vec<_>>(), ["email_send", "users"]);

    // relative paths in a config file are taken from its folder
    let config = dir.path().join("lake.toml");
    std::fs::write(
        &config,
        format!(
            "dest = \"toml\"\nbase_url = \"{base}\"\napi_key_file = \"iterable.key\"\n\
             streams = [\"email_send\", \"users\", \"email_open\"]\nexclude = \"email_open\"\n\
             start_date = {START}\nend_date = \"{END}\"\nlag = 0\nlookback = 2\nconcurrency = 1\n\
             export_requests_per_minute = 100000\nregion = \"eu\"\n"
        ),
    )
    .unwrap();
    let by_file = run(&["sync", "--config", s(&config)], &[]).await;
    assert_code(&by_file, 0);
    assert_eq!(outcome(&run_report(&lake("toml"), &by_file)), want);

    let airbyte = dir.path().join("source.json");
    std::fs::write(
        &airbyte,
        serde_json::json!({
            "api_key": key,
            "start_date": "2024-01-01T00:00:00Z",
            "region": "US",
            "lookback_window": 0,
            "page_size": 100
        })
        .to_string(),
    )
    .unwrap();
    let by_airbyte = run(
        &unlimited(&[
            "sync",
            "--airbyte-config",
            s(&airbyte),
            "--dest",
            s(&lake("airbyte")),
            "--base-url",
            &base,
            "--streams",
            "email_send,users",
            "--end-date",
            END,
        ]),
        &[],
    )
    .await;
    assert_code(&by_airbyte, 0);
    assert_eq!(outcome(&run_report(&lake("airbyte"), &by_airbyte)), want);
    assert!(
        text(&by_airbyte).contains("Airbyte config keys this tool does not use were ignored"),
        "{}",
        text(&by_airbyte)
    );

    // flags win over the file: another stream, another lake
    let manifests_before = std::fs::read_dir(lake("toml").join("_manifest"))
        .unwrap()
        .count();
    let override_run = run(
        &[
            "sync",
            "--config",
            s(&config),
            "--dest",
            s(&lake("override")),
            "--streams",
            "email_click",
        ],
        &[],
    )
    .await;
    assert_code(&override_run, 0);
    let got = outcome(&run_report(&lake("override"), &override_run));
    assert_eq!(got.keys().collect::<Vec<_>>(), ["email_click"]);
    assert_eq!(got["email_click"].0, truth(&fake, "emailClick"));
    assert_eq!(
        std::fs::read_dir(lake("toml").join("_manifest"))
            .unwrap()
            .count(),
        manifests_before,
        "the file's dest was not written"
    );

    // the environment wins over the file: a wrong ITERABLE_API_KEY beats api_key_file
    let env_wins = run(
        &["sync", "--config", s(&config), "--dest", s(&lake("env"))],
        &[("ITERABLE_API_KEY", "not-the-key")],
    )
    .await;
    assert_code(&env_wins, 1);
    assert!(
        text(&env_wins).contains("API key was rejected"),
        "{}",
        text(&env_wins)
    );

    // mistakes in a file name the file and the key, and exit 64
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "dest = \"x\"\nlookbak = 3\n").unwrap();
    let typo = run(
        &["sync", "--config", s(&bad)],
        &[("ITERABLE_API_KEY", &key)],
    )
    .await;
    assert_code(&typo, 64);
    assert_eq!(
        String::from_utf8_lossy(&typo.stderr).trim(),
        format!(
            r#"error: {}: unknown key "lookbak" (did you mean "lookback"?)"#,
            s(&bad)
        )
    );
    let missing = run(
        &["sync", "--config", s(&dir.path().join("nope.toml"))],
        &[("ITERABLE_API_KEY", &key)],
    )
    .await;
    assert_code(&missing, 64);
    assert!(text(&missing).contains("--config "), "{}", text(&missing));
    assert!(
        text(&missing).contains("nope.toml: No such file"),
        "{}",
        text(&missing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_from_a_file_or_a_config_never_shows() {
    let fake = fake(24, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let key = fake.config().api_key.clone();
    let key_path = key_file(&secrets, &fake);
    let config = secrets.join("lake.toml");
    std::fs::write(&config, format!("api_key = \"{key}\"\n")).unwrap();
    let airbyte = secrets.join("source.json");
    std::fs::write(&airbyte, serde_json::json!({ "api_key": key }).to_string()).unwrap();
    let lakes = dir.path().join("lakes");
    let base = fake.base_url();
    let mut outputs = Vec::new();
    let ways: [(&str, &str); 3] = [
        ("--api-key-file", s(&key_path)),
        ("--config", s(&config)),
        ("--airbyte-config", s(&airbyte)),
    ];
    for (i, (flag, path)) in ways.into_iter().enumerate() {
        for format in ["json", "text"] {
            let dest = lakes.join(format!("{i}-{format}"));
            let o = run(
                &unlimited(&[
                    "sync",
                    flag,
                    path,
                    "--dest",
                    s(&dest),
                    "--base-url",
                    &base,
                    "--streams",
                    "email_send,users",
                    "--start-date",
                    START,
                    "--end-date",
                    END,
                    "--log-format",
                    format,
                ]),
                &[("RUST_LOG", "debug")],
            )
            .await;
            assert_code(&o, 0);
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("DEBUG"),
                "debug logs are on: {}",
                text(&o)
            );
            outputs.push(o);
        }
        let checked = run(
            &unlimited(&[
                "check",
                flag,
                path,
                "--base-url",
                &base,
                "--streams",
                "email_send",
            ]),
            &[("RUST_LOG", "debug")],
        )
        .await;
        assert_code(&checked, 0);
        outputs.push(checked);
    }
    // a config whose key line is not valid TOML: the message must not quote it
    let broken = secrets.join("broken.toml");
    std::fs::write(&broken, format!("dest = \"x\"\napi_key = {key}\n")).unwrap();
    let o = run(&["sync", "--config", s(&broken)], &[]).await;
    assert_code(&o, 64);
    assert!(text(&o).contains("broken.toml: line 2"), "{}", text(&o));
    outputs.push(o);
    for o in &outputs {
        assert!(
            !text(o).contains(&key),
            "the key is in the output: {}",
            text(o)
        );
    }
    let files = assert_absent_in_tree(&lakes, &key);
    assert!(files > 20, "six lakes of files were searched ({files})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_on_a_terminal_json_lines_under_cron() {
    // Slow responses, and a first window a week before the data: each stream fetches two
    // windows, so its bar is on screen while the second one is in flight.
    let mut cfg = FakeConfig::small(25);
    cfg.faults = Faults {
        export_rate: None,
        latency: Some(Duration::from_millis(400)),
        ..Faults::default()
    };
    let fake = FakeIterable::start(cfg).await.unwrap();
    fake.set_now(END.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let key_path = key_file(dir.path(), &fake);
    let base = fake.base_url();
    let args = |dest: &str| -> Vec<String> {
        unlimited(&[
            BIN,
            "sync",
            "--dest",
            dest,
            "--base-url",
            &base,
            "--api-key-file",
            s(&key_path),
            "--streams",
            "email_send,users",
            "--start-date",
            "2023-12-25",
            "--end-date",
            END,
            // Two data.json windows per stream (export jobs may cut a backfill finer).
            "--export-api",
            "stream",
        ])
        .iter()
        .map(|a| a.to_string())
        .collect()
    };

    // stdout is a pipe: JSON lines on stderr, the summary on stdout, no bars
    let cron = args(s(&dir.path().join("cron")));
    let cron: Vec<&str> = cron[1..].iter().map(String::as_str).collect();
    let o = run(&cron, &[]).await;
    assert_code(&o, 0);
    let logs = String::from_utf8_lossy(&o.stderr);
    let events: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let fetched = events
        .iter()
        .filter(|e| e["fields"]["message"] == "window fetched")
        .count();
    assert_eq!(fetched, 4, "two windows per stream: {logs}");
    assert!(!logs.contains("streams done"), "no bars under cron: {logs}");
    assert!(stdout(&o).starts_with("stream "), "{}", stdout(&o));

    // a terminal (util-linux `script` gives the command one): bars, then the summary
    let tty = args(s(&dir.path().join("tty")));
    let shell_line = tty
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let o = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qfec", &shell_line, "/dev/null"])
            .env_remove("ITERABLE_API_KEY")
            .env_remove("RUST_LOG")
            .env("TERM", "xterm")
            .output()
            .expect("util-linux `script` runs the command on a terminal")
    })
    .await
    .unwrap();
    assert_code(&o, 0);
    let screen = stdout(&o);
    assert!(
        !screen.contains("\"level\""),
        "no JSON logs on a terminal: {screen}"
    );
    let summary = screen
        .find("committed status")
        .expect("the summary after the bars");
    let (bars, table) = screen.split_at(summary);
    assert!(bars.contains("streams done"), "the run's bar: {screen}");
    assert!(
        bars.contains(" rows ") && bars.contains(" read, window [2023-12-25 00:00:00, "),
        "a stream's bar: {screen}"
    );
    assert!(table.contains("\nemail_send "), "{screen}");
}

/// The bars read the engine's own events: their counts are the run report's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bars_count_what_the_engine_reports() {
    use iterable_lake::api::{ApiClient, ApiKey, ClientConfig};
    use iterable_lake::progress::Progress;
    use iterable_lake::sink::LakeStore;
    use iterable_lake::sync::{self, SyncOptions};
    use tracing_subscriber::layer::SubscriberExt;

    let fake = fake(26, &[]).await;
    let key = ApiKey::new(fake.config().api_key.clone()).unwrap();
    let mut cfg = ClientConfig::new(fake.base_url().parse().unwrap(), key);
    cfg.export_requests_per_minute = 100_000;
    let mut opts = SyncOptions::new(
        ["email_send", "users", "sms_send"]
            .iter()
            .map(|n| iterable_lake::catalog::find(n).unwrap())
            .collect(),
    );
    opts.start = Some(format!("{START}T00:00:00Z").parse().unwrap());
    opts.end = Some(END.parse().unwrap());
    opts.window.initial_days = 1;
    let progress = Progress::new(indicatif::ProgressDrawTarget::hidden());
    let subscriber = tracing_subscriber::registry().with(progress.layer());
    let report = {
        // the engine's stream futures are polled on this thread, inside this subscriber
        let _guard = tracing::subscriber::set_default(subscriber);
        sync::run(LakeStore::in_memory(), ApiClient::new(cfg).unwrap(), opts)
            .await
            .unwrap()
    };
    let bars = progress.snapshot();
    assert_eq!(bars.len(), 3);
    for s in &report.streams {
        let bar = &bars[&s.stream];
        assert!(s.rows > 0 && s.windows >= 2, "{}: {s:?}", s.stream);
        assert_eq!(bar.rows, s.rows, "{}", s.stream);
        assert_eq!(bar.windows, s.windows, "{}", s.stream);
        assert!(bar.bytes > 0, "{}", s.stream);
        assert!(bar.window.starts_with('['), "{}: {}", s.stream, bar.window);
        assert_eq!(bar.done.as_deref(), Some("Succeeded"), "{}", s.stream);
    }
}
