#!/usr/bin/env bash
# The project's one test command: `scripts/test.sh [cargo test args...]`, from any directory.
#
# 1. Makes <repo>/.venv and installs scripts/requirements-test.txt into it (skipped when the
#    stamp in the venv matches the requirements' hash).
# 2. Starts moto's S3 server on a free 127.0.0.1 port and exports, for the tests:
#      AWS_ENDPOINT_URL=http://127.0.0.1:PORT  AWS_ALLOW_HTTP=true
#      AWS_ACCESS_KEY_ID=testing  AWS_SECRET_ACCESS_KEY=testing
#      AWS_REGION=us-east-1  AWS_DEFAULT_REGION=us-east-1
#      ITERABLE_LAKE_TEST_S3=1
#      ITERABLE_LAKE_PYTHON=<venv python>          (runs scripts/duckdb_query.py)
#      ITERABLE_LAKE_DUCKDB_HTTPFS=<httpfs.duckdb_extension from the venv>
#      ITERABLE_LAKE_DUCKDB_DELTA=<delta.duckdb_extension from the venv>
# 3. Runs `cargo test "$@"` in the repo, stops moto (always), exits with cargo's status.
#
# Environment knobs: ITERABLE_LAKE_BOOTSTRAP_PYTHON (python used to make the venv; default
# python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
REQ="$REPO/scripts/requirements-test.txt"
BOOT_PY="${ITERABLE_LAKE_BOOTSTRAP_PYTHON:-python3}"

say() { printf '[test.sh] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# --- 1. Python venv -----------------------------------------------------------------------
ensure_venv() {
    local t0 want stamp="$VENV/.requirements.sha256"
    t0="$(now)"
    want="$(sha256sum "$REQ" | cut -d' ' -f1)"
    # Two test runs starting at once must not install into the same venv together.
    exec 9>"$VENV.lock"
    flock 9
    if "$VENV/bin/python" -c '' 2>/dev/null && [[ -f $stamp && "$(<"$stamp")" == "$want" ]]; then
        say "venv up to date ($VENV)"
    else
        if ! "$VENV/bin/python" -c '' 2>/dev/null; then
            say "creating venv $VENV"
            command -v "$BOOT_PY" >/dev/null || die "$BOOT_PY not found (set ITERABLE_LAKE_BOOTSTRAP_PYTHON)"
            "$BOOT_PY" -m venv --clear "$VENV"
        fi
        say "installing scripts/requirements-test.txt"
        "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQ"
        printf '%s\n' "$want" >"$stamp"
        say "venv ready in $(since "$t0")"
    fi
    exec 9>&-
}
ensure_venv
PY="$VENV/bin/python"

# The path of DuckDB's extension $1, shipped in the venv by the duckdb-extension-$1 wheel.
duckdb_extension() {
    "$PY" - "$1" <<'EOF'
import importlib, pathlib, sys, duckdb
name = sys.argv[1]
module = importlib.import_module(f"duckdb_extension_{name}")
p = (pathlib.Path(module.__file__).parent / "extensions"
     / f"v{duckdb.__version__}" / f"{name}.duckdb_extension")
if not p.is_file():
    raise SystemExit(f"{name} extension for DuckDB {duckdb.__version__} not found at {p}")
print(p)
EOF
}
HTTPFS="$(duckdb_extension httpfs)" || die "DuckDB httpfs extension missing from the venv"
DELTA="$(duckdb_extension delta)" || die "DuckDB delta extension missing from the venv"

# --- 2. moto S3 server --------------------------------------------------------------------
RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/iterable-lake-test.XXXXXX")"
MOTO_PID=""
cleanup() {
    local status=$?
    if [[ -n $MOTO_PID ]]; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s $RUN_DIR/moto.log ]]; then
        say "last lines of the moto log:"
        tail -n 20 "$RUN_DIR/moto.log" >&2 || true
    fi
    rm -rf "$RUN_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0="$(now)"
"$PY" "$REPO/scripts/s3_server.py" "$RUN_DIR/port" >"$RUN_DIR/moto.log" 2>&1 </dev/null &
MOTO_PID=$!
for _ in $(seq 1 600); do
    [[ -s $RUN_DIR/port ]] && break
    kill -0 "$MOTO_PID" 2>/dev/null || { cat "$RUN_DIR/moto.log" >&2; die "moto exited at start"; }
    sleep 0.05
done
[[ -s $RUN_DIR/port ]] || die "moto did not answer within 30s"
PORT="$(<"$RUN_DIR/port")"
say "moto S3 on 127.0.0.1:$PORT (pid $MOTO_PID, up in $(since "$t0"))"

# Only the variables below may steer the tests' S3 client: drop any the caller had.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_ENDPOINT_URL_S3 AWS_ENDPOINT \
    AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"
export AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export ITERABLE_LAKE_TEST_S3=1
export ITERABLE_LAKE_PYTHON="$PY"
export ITERABLE_LAKE_DUCKDB_HTTPFS="$HTTPFS"
export ITERABLE_LAKE_DUCKDB_DELTA="$DELTA"

# --- 3. cargo test ------------------------------------------------------------------------
cd "$REPO"
say "cargo test $*"
set +e
cargo test "$@"
status=$?
set -e
say "cargo test exited with $status"
exit "$status"
