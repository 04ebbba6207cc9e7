# Shell shared by scripts/test.sh and scripts/torture.sh; source it, do not run it.
#
# Before sourcing, set REPO (the repository root) and HARNESS_NAME (prefix of messages).
#   harness_venv          makes <repo>/.venv from scripts/requirements-test.txt when its stamp
#                         is stale; sets PY (the venv's python), HTTPFS and DELTA (DuckDB's
#                         httpfs and delta extensions from the venv)
#   harness_start_moto D  starts moto's S3 server (scripts/s3_server.py) on a free 127.0.0.1
#                         port, its port file and log in folder D; sets MOTO_PID and
#                         MOTO_PORT and exports the AWS_* variables the tools and tests read
#   harness_stop_moto     stops it (safe to call when it is not running)
#
# Environment knobs: ITERABLE_LAKE_BOOTSTRAP_PYTHON (python used to make the venv; default
# python3).

say() { printf '[%s] %s\n' "$HARNESS_NAME" "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

harness_venv() {
    local venv="$REPO/.venv" req="$REPO/scripts/requirements-test.txt"
    local boot_py="${ITERABLE_LAKE_BOOTSTRAP_PYTHON:-python3}"
    local t0 want stamp="$venv/.requirements.sha256"
    t0="$(now)"
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    # Two test runs starting at once must not install into the same venv together.
    exec 9>"$venv.lock"
    flock 9
    if "$venv/bin/python" -c '' 2>/dev/null && [[ -f $stamp && "$(<"$stamp")" == "$want" ]]; then
        say "venv up to date ($venv)"
    else
        if ! "$venv/bin/python" -c '' 2>/dev/null; then
            say "creating venv $venv"
            command -v "$boot_py" >/dev/null || die "$boot_py not found (set ITERABLE_LAKE_BOOTSTRAP_PYTHON)"
            "$boot_py" -m venv --clear "$venv"
        fi
        say "installing scripts/requirements-test.txt"
        "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$req"
        printf '%s\n' "$want" >"$stamp"
        say "venv ready in $(since "$t0")"
    fi
    exec 9>&-
    PY="$venv/bin/python"
    HTTPFS="$(duckdb_extension httpfs)" || die "DuckDB httpfs extension missing from the venv"
    DELTA="$(duckdb_extension delta)" || die "DuckDB delta extension missing from the venv"
}

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

MOTO_PID=""
MOTO_LOG=""
harness_start_moto() {
    local dir="$1" t0
    t0="$(now)"
    MOTO_LOG="$dir/moto.log"
    "$PY" "$REPO/scripts/s3_server.py" "$dir/moto.port" >"$MOTO_LOG" 2>&1 </dev/null &
    MOTO_PID=$!
    for _ in $(seq 1 600); do
        [[ -s $dir/moto.port ]] && break
        kill -0 "$MOTO_PID" 2>/dev/null || { cat "$MOTO_LOG" >&2; die "moto exited at start"; }
        sleep 0.05
    done
    [[ -s $dir/moto.port ]] || die "moto did not answer within 30s"
    MOTO_PORT="$(<"$dir/moto.port")"
    say "moto S3 on 127.0.0.1:$MOTO_PORT (pid $MOTO_PID, up in $(since "$t0"))"

    # Only the variables below may steer the S3 clients: drop any the caller had.
    unset AWS_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_ENDPOINT_URL_S3 AWS_ENDPOINT \
        AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE
    export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
    export AWS_ALLOW_HTTP=true
    export AWS_ACCESS_KEY_ID=testing
    export AWS_SECRET_ACCESS_KEY=testing
    export AWS_REGION=us-east-1
    export AWS_DEFAULT_REGION=us-east-1
}

# Stops moto; with a non-zero status, shows the end of its log first.
harness_stop_moto() {
    local status="${1:-0}"
    if [[ -n $MOTO_PID ]]; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
        MOTO_PID=""
        if [[ $status -ne 0 && -s $MOTO_LOG ]]; then
            say "last lines of the moto log:"
            tail -n 20 "$MOTO_LOG" >&2 || true
        fi
    fi
}
