#!/usr/bin/env bash
# End-to-end export benchmark: a release build syncs ~1 million emailSend events from the fake
# Iterable API over HTTP to local disk, and DuckDB converts the same NDJSON to Parquet, each
# under /usr/bin/time -v (DuckDB with sample_size=-1: export fields appear mid-range, so its
# default schema sample fails). Prints records/s, MB/s of NDJSON, CPU seconds, peak RSS and the
# ratios. The sync runs with each table format (`--table-format delta`, then `parquet`), and
# prints the Delta run's time as a share of the plain one's.
#
# The fake runs with --cache-bodies: the download for DuckDB generates the body once and the
# syncs replay it, so the fake's generator does not compete for the two cores (a real export
# is generated on Iterable's servers). Each side runs RUNS times (default 3); the fastest run
# counts, since other load on a shared machine only ever slows a run down.
#
#   scripts/bench-export.sh [EVENTS]        (default 1000000)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
events=${1:-1000000}
runs=${RUNS:-3}
days=3
per_day=$(( (events + days - 1) / days ))
work=$(mktemp -d)
trap 'kill "${fake_pid:-}" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
[ -x "$repo/.venv/bin/python" ] || { echo "run scripts/test.sh once first (it makes .venv)" >&2; exit 1; }
py="$repo/.venv/bin/python"

echo "building (release)…"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" | jq -r .target_directory)
bin="$target_dir/release/iterable-lake"

key=bench-key
"$bin" fake-api --api-key "$key" --events-per-day "$per_day" --days "$days" --start 2024-01-01 \
  --cache-bodies > "$work/fake.out" &
fake_pid=$!
for _ in $(seq 100); do [ -s "$work/fake.out" ] && break; sleep 0.1; done
base=$(head -1 "$work/fake.out")
echo "fake API at $base ($per_day events/day × $days days)"

echo "downloading the same NDJSON for DuckDB…"
curl -sf -H "Api-Key: $key" -o "$work/email_send.ndjson" \
  "${base}export/data.json?dataTypeName=emailSend&startDateTime=2024-01-01%2000:00:00&endDateTime=2024-01-04%2000:00:00"
ndjson_bytes=$(stat -c %s "$work/email_send.ndjson")
lines=$(awk 'END {print NR}' "$work/email_send.ndjson")

measure() { # name, command…: prints "seconds cpu_seconds rss_kb" of the fastest of $runs runs
  local name=$1; shift
  for _ in $(seq "$runs"); do
    [ "$name" = duckdb ] || rm -rf "$work/lake"
    /usr/bin/time -v "$@" > "$work/$name.out" 2> "$work/$name.time"
    awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; secs=s}
      /User time|System time/ {cpu+=$2} /Maximum resident set size/ {rss=$2}
      END {print secs, cpu, rss}' "$work/$name.time"
  done | sort -n | head -1
}

sync_args=(sync --dest "$work/lake" --streams email_send --start-date 2024-01-01
  --end-date 2024-01-04 --base-url "$base" --export-requests-per-minute 100000 --lag 0)
echo "syncing with iterable-lake, Delta tables ($runs runs)…"
read -r dl_secs dl_cpu dl_rss < <(ITERABLE_API_KEY=$key measure iterable-lake-delta "$bin" \
  "${sync_args[@]}" --table-format delta)
echo "syncing with iterable-lake, plain Parquet ($runs runs)…"
read -r il_secs il_cpu il_rss < <(ITERABLE_API_KEY=$key measure iterable-lake "$bin" \
  "${sync_args[@]}" --table-format parquet)
rows=$(jq '[.streams[].rows] | add' "$work"/lake/_runs/*.json)

echo "converting with DuckDB ($runs runs)…"
cat > "$work/duck.py" <<PY
import duckdb
con = duckdb.connect()
con.execute("COPY (SELECT * FROM read_ndjson('$work/email_send.ndjson', sample_size=-1)) TO '$work/duck.parquet' (FORMAT parquet)")
PY
read -r dk_secs dk_cpu dk_rss < <(measure duckdb "$py" "$work/duck.py")

awk -v rows="$rows" -v lines="$lines" -v bytes="$ndjson_bytes" \
    -v ils="$il_secs" -v ilc="$il_cpu" -v ilr="$il_rss" \
    -v dks="$dk_secs" -v dkc="$dk_cpu" -v dkr="$dk_rss" \
    -v dls="$dl_secs" -v dlc="$dl_cpu" -v dlr="$dl_rss" 'BEGIN {
  ilrate = rows / ils; dkrate = lines / dks
  printf "NDJSON: %d lines, %.1f MB\n", lines, bytes / 1e6
  printf "iterable-lake (HTTP → Parquet): %d records in %.2f s = %.0f records/s, %.1f MB/s, %.2f CPU s, peak RSS %.0f MB\n", rows, ils, ilrate, bytes / 1e6 / ils, ilc, ilr / 1024
  printf "DuckDB (file → Parquet):        %d records in %.2f s = %.0f records/s, %.1f MB/s, %.2f CPU s, peak RSS %.0f MB\n", lines, dks, dkrate, bytes / 1e6 / dks, dkc, dkr / 1024
  printf "ratio iterable-lake / DuckDB: speed %.2f×, CPU %.2f×, memory %.2f×\n", ilrate / dkrate, ilc / dkc, ilr / dkr
  printf "iterable-lake with Delta tables: %.2f s = %.0f records/s, %.2f CPU s, peak RSS %.0f MB (%.1f%% of the plain run'"'"'s time)\n", dls, rows / dls, dlc, dlr / 1024, 100 * dls / ils
}'
[ "$rows" -eq "$lines" ] || { echo "row count $rows differs from the NDJSON's $lines lines" >&2; exit 1; }
