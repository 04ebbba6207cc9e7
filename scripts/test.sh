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
# 3. Runs `cargo test "$@"` in the repo, stops moto (always).
# 4. When cargo test passed and the whole suite ran (no arguments but cargo's --locked,
#    --offline, --frozen), runs the bounded torture suite: `scripts/torture.sh` with
#    ITERABLE_LAKE_TORTURE_ITERATIONS iterations (default 3; a few minutes) on the debug
#    binary cargo test built. ITERABLE_LAKE_TORTURE=0 skips it, =1 runs it whatever the
#    arguments. Exits with the first failure's status.
#
# Environment knobs: ITERABLE_LAKE_BOOTSTRAP_PYTHON (python used to make the venv; default
# python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS_NAME=test.sh
# shellcheck source=scripts/harness.sh
source "$REPO/scripts/harness.sh"

harness_venv

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/iterable-lake-test.XXXXXX")"
cleanup() {
    local status=$?
    harness_stop_moto "$status"
    rm -rf "$RUN_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

harness_start_moto "$RUN_DIR"
export ITERABLE_LAKE_TEST_S3=1
export ITERABLE_LAKE_PYTHON="$PY"
export ITERABLE_LAKE_DUCKDB_HTTPFS="$HTTPFS"
export ITERABLE_LAKE_DUCKDB_DELTA="$DELTA"

cd "$REPO"
say "cargo test $*"
set +e
cargo test "$@"
status=$?
set -e
say "cargo test exited with $status"
harness_stop_moto "$status"
[[ $status -eq 0 ]] || exit "$status"

whole_suite=1
for arg in "$@"; do
    case "$arg" in
        --locked | --offline | --frozen) ;;
        *) whole_suite=0 ;;
    esac
done
torture="${ITERABLE_LAKE_TORTURE:-$whole_suite}"
if [[ $torture == 1 ]]; then
    say "bounded torture suite"
    ITERABLE_LAKE_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/iterable-lake" \
        "$REPO/scripts/torture.sh" "${ITERABLE_LAKE_TORTURE_ITERATIONS:-3}"
fi
