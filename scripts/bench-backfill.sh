#!/usr/bin/env bash
# Backfill benchmark: a release build backfills many export streams over a long period from
# `iterable-lake fake-api`, once through data.json (`--export-api stream`) and once through
# export jobs (`--export-api jobs`), each into a fresh local lake under /usr/bin/time -v, and
# prints each one's wall time next to the lower bound the fake's speed model implies, its
# records/s and its peak RSS.
#
# The speed model (assumptions about Iterable's servers, set with the variables below):
# - a data.json response streams at STREAM_RATE bytes/s, each request on its own, under
#   Iterable's documented 4 requests per EXPORT_RATE_WINDOW (60 s) per project;
# - an export job waits JOB_QUEUE_MS Enqueued, then runs writing its files at JOB_RATE
#   bytes/s (at least JOB_RUN_MS), at most 4 jobs running at once, and start, files and
#   DELETE each admit 1 request a second (Iterable's documented limits); downloads are not
#   throttled (the files sit on S3).
# The bounds: data.json needs max(EXPORT_RATE_WINDOW/4 × (requests − 4), bytes /
# (CONCURRENCY × STREAM_RATE)); jobs need JOB_QUEUE_MS + Σ max(JOB_RUN_MS, job bytes /
# JOB_RATE) / 4 (queueing overlaps other jobs' running), and at least one second per job
# started; a client that keeps only 4 jobs in flight pays each job's queue in its slot:
# Σ (JOB_QUEUE_MS + max(JOB_RUN_MS, job bytes / JOB_RATE)) / 4, printed too. All ignore the
# tool's own work (polling, downloads, decoding, commits).
#
#   scripts/bench-backfill.sh
#   STREAMS=email_send,email_open DAYS=180 PER_DAY=200 scripts/bench-backfill.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
streams=${STREAMS:-email_send,email_open,email_click,push_send,sms_send,in_app_send}
days=${DAYS:-365}
per_day=${PER_DAY:-100}
stream_rate=${STREAM_RATE:-1000000}
job_rate=${JOB_RATE:-1000000}
job_queue_ms=${JOB_QUEUE_MS:-10000}
job_run_ms=${JOB_RUN_MS:-5000}
window=${EXPORT_RATE_WINDOW:-60}
concurrency=${CONCURRENCY:-4}
work=$(mktemp -d)
trap 'kill "${fake_pid:-}" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }

echo "building (release)…"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" | jq -r .target_directory)
bin="$target_dir/release/iterable-lake"
"$bin" sync --help | grep -q -- --export-api || { echo "this build has no --export-api" >&2; exit 1; }

key=bench-key
end=$(date -u -d "2024-01-01 + $days days" +%F)
"$bin" fake-api --api-key "$key" --events-per-day "$per_day" --days "$days" --start 2024-01-01 \
  --export-rate 4 --export-rate-window "$window" --retry-after --stream-bytes-per-second "$stream_rate" \
  --job-rate 1 --job-queue-ms "$job_queue_ms" --job-run-ms "$job_run_ms" \
  --job-bytes-per-second "$job_rate" > "$work/fake.out" &
fake_pid=$!
for _ in $(seq 100); do [ -s "$work/fake.out" ] && break; sleep 0.1; done
base=$(head -1 "$work/fake.out")
echo "fake API at $base: $streams, $per_day events/day each, $days days (2024-01-01 to $end)"

measure() { # name, command…: prints "seconds rss_kb"
  local name=$1; shift
  /usr/bin/time -v "$@" > "$work/$name.out" 2> "$work/$name.time" || {
    tail -20 "$work/$name.time" >&2; exit 1; }
  awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; secs=s}
    /Maximum resident set size/ {rss=$2} END {print secs, rss}' "$work/$name.time"
}

sync_args=(sync --streams "$streams" --start-date 2024-01-01 --end-date "$end" --base-url "$base"
  --lag 0 --concurrency "$concurrency" --log-format json)
echo "backfilling through data.json…"
read -r st_secs st_rss < <(ITERABLE_API_KEY=$key measure stream "$bin" "${sync_args[@]}" \
  --dest "$work/stream-lake" --export-api stream --export-requests-per-minute 4)
echo "backfilling through export jobs…"
read -r jb_secs jb_rss < <(ITERABLE_API_KEY=$key measure jobs "$bin" "${sync_args[@]}" \
  --dest "$work/jobs-lake" --export-api jobs --export-jobs 4 --export-job-requests-per-second 1)

report() { jq -s '.[0]' "$work/$1"/_runs/*.json; }
st_rows=$(report stream-lake | jq '[.streams[].rows] | add')
jb_rows=$(report jobs-lake | jq '[.streams[].rows] | add')
requests=$(report stream-lake | jq '[.streams[] | .windows + .window_retries] | add')
curl -sf -H "Api-Key: $key" "${base}export/jobs" > "$work/jobs.json"
jobs=$(jq '.jobs | length' "$work/jobs.json")
bytes=$(jq '[.jobs[] | select(.jobState == "Completed") | .bytesExported] | add // 0' "$work/jobs.json")
work_secs=$(jq --argjson run "$job_run_ms" --argjson rate "$job_rate" \
  '[.jobs[] | select(.jobState == "Completed") | [$run / 1000, .bytesExported / $rate] | max] | add // 0' \
  "$work/jobs.json")

awk -v rows="$st_rows" -v jrows="$jb_rows" -v bytes="$bytes" -v requests="$requests" -v jobs="$jobs" -v work="$work_secs" \
    -v sts="$st_secs" -v str="$st_rss" -v jbs="$jb_secs" -v jbr="$jb_rss" \
    -v srate="$stream_rate" -v jrate="$job_rate" -v q="$job_queue_ms" -v run="$job_run_ms" \
    -v window="$window" -v c="$concurrency" 'function max(a, b) { return a > b ? a : b } BEGIN {
  sbound = max(window / 4 * max(requests - 4, 0), bytes / (c * srate))
  jbound = max(jobs - 1, q / 1000 + work / 4)
  inflight = (jobs * q / 1000 + work) / 4
  printf "data: %.1f MB of NDJSON, %d records; model: data.json %.1f MB/s a request, 4 a %d s; jobs %.1f MB/s each, 4 at once, queue %.1f s, run ≥ %.1f s\n", bytes / 1e6, rows, srate / 1e6, window, jrate / 1e6, q / 1000, run / 1000
  printf "stream: %d requests, %.1f s (bound %.1f s, %.2f×), %.0f records/s, peak RSS %.0f MB\n", requests, sts, sbound, sts / sbound, rows / sts, str / 1024
  printf "jobs:   %d jobs, %.1f s (bound %.1f s, %.2f×; with 4 in flight, each queueing in its slot, %.1f s, %.2f×), %.0f records/s, peak RSS %.0f MB\n", jobs, jbs, jbound, jbs / jbound, inflight, jbs / inflight, jrows / jbs, jbr / 1024
  printf "jobs / stream wall time: %.2f\n", jbs / sts
}'
[ "$st_rows" -eq "$jb_rows" ] || { echo "the two lakes differ: $st_rows vs $jb_rows records" >&2; exit 1; }
