#!/usr/bin/env bash
# Delta log replay after 1,000 nightly commits: `cargo bench --bench delta_log` builds an
# email_send table of 1,000 commits (a checkpoint every 10; each night adds a day's file and
# replaces the day before's, every add with statistics for every column) and times how this
# tool reads it at the start of a run and writes one more night. Then DuckDB (delta_scan),
# delta-rs and Polars open the same table, best of RUNS (default 5) each: the time a reader
# spends on the log before it reads any data (the table's data files are not written).
#
#   scripts/bench-delta-log.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-5}
[ -x "$repo/.venv/bin/python" ] || { echo "run scripts/test.sh once first (it makes .venv)" >&2; exit 1; }
py="$repo/.venv/bin/python"
delta_ext=$(ls "$repo"/.venv/lib/python3*/site-packages/duckdb_extension_delta/extensions/*/delta.duckdb_extension | head -1)

cargo bench --manifest-path "$repo/Cargo.toml" --bench delta_log -- --noplot 2>&1 \
  | grep -E "^delta_log/|time:|^table:"

"$py" - "$repo/target/delta-log-bench/email_send" "$runs" "$delta_ext" <<'PY'
import sys, time
import duckdb, deltalake, polars as pl

table, runs, ext = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def best(f):
    out, times = None, []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return min(times), out

def duck_connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{ext}'")
    return con

def duck():
    # The data files are not there: EXPLAIN plans the scan, which reads the log.
    duck_connect().execute(f"EXPLAIN SELECT count(*) FROM delta_scan('{table}')").fetchall()
    return None

def dl():
    t = deltalake.DeltaTable(table)
    return t.version(), len(t.file_uris())

def polars():
    return pl.scan_delta(table).collect_schema().len()

for name, f in [("delta-rs DeltaTable + file list", dl), ("Polars scan_delta schema", polars),
                ("DuckDB connect + LOAD delta", lambda: duck_connect() and None),
                ("DuckDB the same + delta_scan plan", duck)]:
    secs, out = best(f)
    print(f"{name:34s} {secs * 1000:8.1f} ms   {out if out is not None else ''}")
PY
