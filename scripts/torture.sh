#!/usr/bin/env bash
# The torture suite: `scripts/torture.sh [ITERATIONS]` (default 10), from any directory.
#
# Runs the real binary against `iterable-lake fake-api` over HTTP with faults on (500s, cut
# bodies, 429s, latency), on a local lake and on moto's S3, in sequences that nightly
# operation produces, and checks the lake after each step with scripts/torture_check.py
# (DuckDB): the latest manifest parses, every file it names exists with its rows, no record
# is live twice or where the fake does not serve it, no committed record is lost, and after
# a clean run the lake equals the fake's truth (`iterable-lake fake-truth`) record for record.
#
# Sequences (ITERATIONS is how many kills, races or faulty runs each makes):
#   kill-local, kill-s3   a faulty sync killed with SIGKILL at a random moment, ITERATIONS
#                         times in a row, then one clean run; checked after every kill
#   race-local, race-s3   two syncs of one fresh lake started together: at most one commits
#                         at a time, the other exits 75 (or runs after it), the lake is exact
#   race-pidns            the same, each sync in its own PID namespace (unshare, as root)
#   freeze                a holder frozen (SIGSTOP) past its lease's expiry, a second sync
#                         takes over, the first resumes (SIGCONT) at a random moment; needs
#                         ITERABLE_LAKE_LEASE_TTL_SECS in the binary, skipped otherwise
#   s3-faults             syncs through scripts/s3_fault_proxy.py (503 SlowDown, connections
#                         reset mid-upload, 500 after a write that succeeded, latency): each
#                         run retries or fails cleanly, never names a missing object or loses
#                         a committed record; then a clean run is exact
#   foreign-files         files the tool did not write, under a fresh --dest or next to a
#                         lake (local and S3), survive a sync
#   torn-manifest         a truncated or empty latest manifest: the next sync warns, falls
#                         back to the previous version and the lake ends exact
#   mode-switch           users incremental, an interrupted switch to incremental-deduped,
#                         then a full one: every user exactly once; email_send
#                         full-refresh-append then incremental: no event twice
#   heavy-day             every email_send body cut off after 128 KB: a day needs several
#                         split requests, yet two nightly runs converge (exit 0, exact)
#   short-body            export bodies that end properly mid-line, then a clean run: exact
#                         (a short body committed as complete would stay missing)
#   cursorless            one record in 10 without a readable cursor: nights whose windows
#                         start on other days and a killed run keep each record once
#   empty-events          `events` synced, then a run while every list's getUsers fails
#                         (stopped by SIGTERM after TORTURE_OUTAGE_SECS, default 10: the
#                         client retries a list for minutes): the stream keeps its rows, and
#                         the run stops within 10 s of the SIGTERM
#   kill-local-delta, kill-s3-delta, race-local-delta, s3-faults-delta
#                         the same with Delta tables (--table-format delta): also checked,
#                         every file each table's latest version names exists, and after a
#                         clean run the tables hold exactly the manifest's live files
#   kill-local-jobs, kill-s3-jobs, s3-faults-jobs
#                         kill and S3 faults with every window read through export jobs
#                         (--export-api jobs) while the fake's jobs restart, fail, are
#                         truncated, and their downloads expire or are cut off
# The other sequences run with the command line's default --export-api auto (a first run's
# backfill through export jobs, later nights through data.json), but heavy-day and
# short-body, whose faults are data.json's: --export-api stream.
# Prints a table (sequence, iterations, failures) and exits 1 if any failed.
#
# Environment:
#   ITERABLE_LAKE_BIN   the binary to test (default: `cargo build` once, debug profile;
#                       TORTURE_PROFILE=release for a release build)
#   TORTURE_ONLY        comma-separated sequence names to run (default: all)
#   TORTURE_SEED        seed of the random kill times, delays and faults (default: random;
#                       printed, so a failure can be replayed: the same choices, though
#                       the processes' timing still varies)
#   TORTURE_KEEP=1      keep the work folder (lakes, logs) also when everything passed; it
#                       is always kept after a failure
#   TORTURE_OUTAGE_SECS how long the empty-events outage run may go on before its SIGTERM
#                       (default 10; 900 lets the client's retries of every list run out)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS_NAME=torture.sh
# shellcheck source=scripts/harness.sh
source "$REPO/scripts/harness.sh"

ITER="${1:-10}"
[[ $ITER =~ ^[1-9][0-9]*$ ]] || die "ITERATIONS must be a positive integer, not '$ITER'"
SEED="${TORTURE_SEED:-$((RANDOM * 32768 + RANDOM))}"
RANDOM=$SEED
ONLY=",${TORTURE_ONLY:-},"

# The fake's data set (the same flags give the same data to fake-api and fake-truth).
DATA=(--seed 7 --start 2024-01-01 --days 6 --events-per-day 150 --users 300)
START=2024-01-01
END=2024-01-07
STREAMS=email_send,email_open,users
KEY=torture-key
# Faults of the fake for the faulty runs (the 500s' seed varies per run).
FAULTS=(--latency-ms 3 --cut-off-bytes 30000 --cut-off-requests 2 --export-rate 40
    --export-rate-window 2s --retry-after)
RANDOM_500=0.03

# --- setup --------------------------------------------------------------------------------
harness_venv
W="$(mktemp -d "${TMPDIR:-/tmp}/iterable-lake-torture.XXXXXX")"
mkdir -p "$W/logs"
PIDS=()
FAILED=0
cleanup() {
    local status=$?
    local p
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    harness_stop_moto "$status"
    if [[ $FAILED -ne 0 || $status -ne 0 || ${TORTURE_KEEP:-0} == 1 ]]; then
        say "lakes and logs kept in $W"
    else
        rm -rf "$W"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n ${ITERABLE_LAKE_BIN:-} ]]; then
    BIN="$ITERABLE_LAKE_BIN"
else
    profile=()
    [[ ${TORTURE_PROFILE:-debug} == release ]] && profile=(--release)
    say "cargo build ${profile[*]}"
    (cd "$REPO" && cargo build --quiet --bin iterable-lake "${profile[@]}")
    BIN="${CARGO_TARGET_DIR:-$REPO/target}/${TORTURE_PROFILE:-debug}/iterable-lake"
fi
[[ -x $BIN ]] || die "no binary at $BIN"

harness_start_moto "$W"
export ITERABLE_LAKE_DUCKDB_HTTPFS="$HTTPFS"
MOTO_URL="$AWS_ENDPOINT_URL"

say "seed $SEED (replay with TORTURE_SEED=$SEED), $ITER iterations, work folder $W"
"$BIN" fake-truth "${DATA[@]}" --streams "$STREAMS" >"$W/truth.tsv"
say "truth: $(wc -l <"$W/truth.tsv") records of $STREAMS"

# --- helpers ------------------------------------------------------------------------------
# Results per sequence, in the order they ran.
declare -A ITERS FAILS NOTES
ORDER=()
wants() { [[ $ONLY == ",," || $ONLY == *",$1,"* ]]; }
begin() {
    ORDER+=("$1")
    ITERS[$1]=0
    FAILS[$1]=0
    say "--- $1"
}
pass() { ITERS[$1]=$((ITERS[$1] + 1)); }
fail() {
    ITERS[$1]=$((ITERS[$1] + 1))
    FAILS[$1]=$((FAILS[$1] + 1))
    FAILED=1
    say "FAIL $1: $2"
}
skip() { NOTES[$1]="skipped: $2"; }

# rand N: sets R to a number in [0, N), from the seeded sequence (not in a subshell, whose
# RANDOM bash reseeds).
rand() { R=$(((RANDOM * 32768 + RANDOM) % $1)); }
ms() { awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }'; }

# await_file FILE PID WHAT LOG: wait up to 10 s for the background process PID to write
# FILE (its address); die with its LOG if it exits first.
await_file() {
    for _ in $(seq 1 200); do
        [[ -s $1 ]] && return
        kill -0 "$2" 2>/dev/null || die "$3 exited: $(cat "$4")"
        sleep 0.05
    done
}

# start_fake NAME [fake-api flags...]: a fake-api in the background; sets FAKE_URL, FAKE_PID.
start_fake() {
    local name="$1" out
    shift
    out="$W/logs/fake-$name.url"
    "$BIN" fake-api --port 0 --api-key "$KEY" "${DATA[@]}" "$@" >"$out" 2>"$W/logs/fake-$name.log" &
    FAKE_PID=$!
    PIDS+=("$FAKE_PID")
    await_file "$out" "$FAKE_PID" "fake-api $name" "$W/logs/fake-$name.log"
    FAKE_URL="$(head -n 1 "$out")"
}
stop_fake() {
    kill -INT "$FAKE_PID" 2>/dev/null || true
    wait "$FAKE_PID" 2>/dev/null || true
}
# faulty_fake NAME: a fake with every fault on, 500s seeded by the next random number.
faulty_fake() { start_fake "$1" "${FAULTS[@]}" --random-500 "$RANDOM_500" --random-500-seed "$RANDOM"; }

# start_proxy NAME [s3_fault_proxy.py flags...]: a fault proxy in front of moto; sets
# PROXY_URL and PROXY_PID.
start_proxy() {
    local name="$1" port_file="$W/proxy-$1.port"
    shift
    "$PY" "$REPO/scripts/s3_fault_proxy.py" "$port_file" "$MOTO_URL" "$@" \
        >"$W/logs/proxy-$name.log" 2>&1 </dev/null &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    await_file "$port_file" "$PROXY_PID" s3_fault_proxy.py "$W/logs/proxy-$name.log"
    PROXY_URL="http://127.0.0.1:$(<"$port_file")"
}
stop_proxy() {
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}

# new_dest KIND NAME: a fresh lake, local or in a new bucket of moto.
new_dest() {
    if [[ $1 == s3 ]]; then
        local bucket
        bucket="torture-$(echo "$2" | tr -c 'a-z0-9\n' '-')-$RANDOM$RANDOM"
        "$PY" -c 'import boto3, sys; boto3.client("s3").create_bucket(Bucket=sys.argv[1])' "$bucket"
        echo "s3://$bucket/lake"
    else
        mkdir -p "$W/lakes"
        mktemp -d "$W/lakes/$2.XXXX"
    fi
}

# sync_cmd DEST [flags...]: the sync command line against $FAKE_URL, in the array CMD;
# --streams and --end-date in the flags replace the defaults.
sync_cmd() {
    local dest="$1" streams="$STREAMS" end="$END"
    shift
    local -a extra=()
    while (($#)); do
        case "$1" in
            --streams) streams="$2" && shift 2 ;;
            --end-date) end="$2" && shift 2 ;;
            *) extra+=("$1") && shift ;;
        esac
    done
    CMD=("$BIN" sync --dest "$dest" --base-url "$FAKE_URL" --streams "$streams"
        --start-date "$START" --end-date "$end" --lag 0 --log-format json --table-format "$FORMAT"
        --export-api "$EXPORT_API"
        --export-requests-per-minute 100000 --list-users-requests-per-minute 100000
        --metrics-requests-per-minute 100000 "${extra[@]}")
}
# run_sync LOG DEST [flags...]: run to the end (at most 5 minutes); sets RC.
run_sync() {
    local log="$1"
    shift
    sync_cmd "$@"
    : >"$W/logs/check.last"
    set +e
    ITERABLE_API_KEY="$KEY" timeout -s KILL 300 "${CMD[@]}" >"$log" 2>&1 </dev/null
    RC=$?
    set -e
}

check_py() { "$PY" "$REPO/scripts/torture_check.py" "$@"; }

# check DEST [torture_check.py flags...]: 0 when the lake keeps its invariants (else the
# violations are in $W/logs/check.last).
check() {
    local dest="$1"
    shift
    local delta=()
    [[ $FORMAT == delta ]] && delta=(--delta)
    check_py --dest "$dest" --streams "${CHECK_STREAMS:-$STREAMS}" \
        --truth "${TRUTH:-$W/truth.tsv}" "${delta[@]}" "$@" >"$W/logs/check.last" 2>&1
}
violations() { tr '\n' ' ' <"$W/logs/check.last" | cut -c1-600; }

# The commits of the manifest versions still in the lake, oldest first: one run id a line.
commit_runs() { check_py --dest "$1" --commits; }
# interleaved DEST: 0 when some run committed both before and after another run did.
interleaved() { commit_runs "$1" | uniq | sort | uniq -d | grep -q .; }

# clean_run NAME DEST PREV WHAT: one run from a fault-free fake must end exact, keeping
# every record live in PREV.
clean_run() {
    local name="$1" dest="$2" prev="$3" what="$4"
    start_fake "$name-clean"
    run_sync "$W/logs/$name-final.log" "$dest"
    if [[ $RC -eq 0 ]] && check "$dest" --exact --previous "$prev"; then
        pass "$name"
    else
        fail "$name" "the clean run $what exited $RC (log $W/logs/$name-final.log): $(violations)"
    fi
    stop_fake
}

# --- sequences ----------------------------------------------------------------------------

seq_kill() {
    local kind="$1" name="kill-$1$SUFFIX" dest t0 took max i delay pid
    begin "$name"
    dest="$(new_dest "$kind" "$name")"
    faulty_fake "$name"
    # On S3, requests are slowed down (0-40 ms each), so kills often land in an upload, a
    # commit or the cleanup.
    local endpoint="${AWS_ENDPOINT_URL:-}"
    if [[ $kind == s3 ]]; then
        start_proxy "$name" --latency-ms 40
        endpoint="$PROXY_URL"
    fi
    # One faulty run into a scratch lake: is it exact when left alone, and how long is a run?
    t0="$(date +%s%N)"
    AWS_ENDPOINT_URL="$endpoint" run_sync "$W/logs/$name-baseline.log" "$(new_dest "$kind" "$name-baseline")"
    took=$((($(date +%s%N) - t0) / 1000000))
    max=$((took * 12 / 10 + 200))
    say "$name: an uninterrupted faulty run took ${took} ms (exit $RC); kills within ${max} ms"
    local prev="$W/$name.live"
    for i in $(seq 1 "$ITER"); do
        rand "$max"
        delay=$R
        sync_cmd "$dest"
        AWS_ENDPOINT_URL="$endpoint" ITERABLE_API_KEY="$KEY" "${CMD[@]}" >"$W/logs/$name-$i.log" 2>&1 </dev/null &
        pid=$!
        sleep "$(ms "$delay")"
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if check "$dest" --allow-empty --previous "$prev" --save "$prev"; then
            pass "$name"
        else
            fail "$name" "after the kill at ${delay} ms of run $i (log $W/logs/$name-$i.log): $(violations)"
        fi
    done
    stop_fake
    [[ $kind == s3 ]] && stop_proxy
    clean_run "$name" "$dest" "$prev" "after $ITER kills"
}

# race_once NAME KIND ROUND: two syncs of a fresh lake started together.
race_once() {
    local name="$1" kind="$2" i="$3" dest pa pb ra rb
    dest="$(new_dest "$kind" "$name-$i")"
    # In even rounds both wait for the lock instead of exiting 75.
    local wait=()
    ((i % 2 == 0)) && wait=(--wait-for-lock 2m)
    sync_cmd "$dest" "${wait[@]}"
    local -a a=("${CMD[@]}") b=("${CMD[@]}")
    if [[ $name == race-pidns ]]; then
        # Different PID namespaces, and different PIDs inside them: the first sync is pid
        # 4001 of its namespace, which does not exist in the second's (pid 2 and its threads).
        a=(unshare --pid --fork --mount-proc bash -c 'echo 4000 >/proc/sys/kernel/ns_last_pid; "$@"; exit $?' _ "${a[@]}")
        b=(unshare --pid --fork --mount-proc bash -c '"$@"; exit $?' _ "${b[@]}")
    fi
    ITERABLE_API_KEY="$KEY" "${a[@]}" >"$W/logs/$name-$i-a.log" 2>&1 </dev/null &
    pa=$!
    rand 300
    sleep "$(ms "$R")"
    ITERABLE_API_KEY="$KEY" "${b[@]}" >"$W/logs/$name-$i-b.log" 2>&1 </dev/null &
    pb=$!
    set +e
    wait "$pa"
    ra=$?
    wait "$pb"
    rb=$?
    set -e
    local why=""
    if [[ ${#wait[@]} -gt 0 && ($ra -ne 0 || $rb -ne 0) ]]; then
        why="exit codes $ra and $rb (want 0 and 0: each waits for the lock)"
    elif ! [[ ($ra -eq 0 && ($rb -eq 0 || $rb -eq 75)) || ($ra -eq 75 && $rb -eq 0) ]]; then
        why="exit codes $ra and $rb (want one 0, the other 0 or 75)"
    elif interleaved "$dest"; then
        why="both runs committed in turns: $(commit_runs "$dest" | uniq | tr '\n' ' ')"
    elif ! check "$dest" --exact; then
        why="$(violations)"
    fi
    if [[ -z $why ]]; then
        pass "$name"
    else
        fail "$name" "round $i: $why (logs $W/logs/$name-$i-{a,b}.log)"
    fi
}

seq_race() {
    local name="$1" kind="$2" i
    begin "$name"
    if [[ $name == race-pidns ]] && ! unshare --pid --fork --mount-proc true 2>/dev/null; then
        skip "$name" "unshare --pid needs root"
        return
    fi
    faulty_fake "$name"
    for i in $(seq 1 "$ITER"); do
        race_once "$name" "$kind" "$i"
    done
    stop_fake
}

seq_freeze() {
    local name=freeze ttl=3 i dest pa pb ra rb t0 took
    begin "$name"
    if ! grep -q ITERABLE_LAKE_LEASE_TTL_SECS "$BIN"; then
        skip "$name" "the binary does not read ITERABLE_LAKE_LEASE_TTL_SECS"
        return
    fi
    # Slow answers (0.8 s each), so the first run is still mid-way when it is frozen.
    start_fake "$name" --latency-ms 800
    local frozen=0
    for i in $(seq 1 "$ITER"); do
        dest="$(new_dest local "$name-$i")"
        sync_cmd "$dest"
        ITERABLE_LAKE_LEASE_TTL_SECS=$ttl ITERABLE_API_KEY="$KEY" "${CMD[@]}" \
            >"$W/logs/$name-$i-a.log" 2>&1 </dev/null &
        pa=$!
        # Freeze it once it holds the lease, at a random moment of its run.
        for _ in $(seq 1 100); do
            compgen -G "$dest/_lock/lease-*.json" >/dev/null && break
            sleep 0.02
        done
        rand 1200
        sleep "$(ms "$R")"
        kill -STOP "$pa" 2>/dev/null && frozen=$((frozen + 1))
        sleep $((ttl + 1))
        t0="$(date +%s%N)"
        ITERABLE_LAKE_LEASE_TTL_SECS=$ttl ITERABLE_API_KEY="$KEY" "${CMD[@]}" \
            >"$W/logs/$name-$i-b.log" 2>&1 </dev/null &
        pb=$!
        # Resume the first while the second runs, or after it ended.
        rand 4000
        sleep "$(ms "$R")"
        kill -CONT "$pa" 2>/dev/null || true
        set +e
        wait "$pb"
        rb=$?
        wait "$pa"
        ra=$?
        set -e
        took=$((($(date +%s%N) - t0) / 1000000))
        local why=""
        if ! check "$dest" --allow-empty; then
            why="after both: $(violations)"
        elif [[ $rb -ne 0 && $rb -ne 75 ]]; then
            why="the second run exited $rb"
        else
            # What the first committed after the second took over, a clean run repairs.
            run_sync "$W/logs/$name-$i-final.log" "$dest"
            if [[ $RC -ne 0 ]] || ! check "$dest" --exact; then
                why="the clean run after both exited $RC: $(violations)"
            fi
        fi
        if [[ -z $why ]]; then
            pass "$name"
        else
            fail "$name" "round $i (first exited $ra, second $rb after ${took} ms): $why (logs $W/logs/$name-$i-{a,b}.log)"
        fi
    done
    say "$name: the first run was frozen mid-run in $frozen of $ITER rounds"
    stop_fake
}

seq_s3_faults() {
    local name="s3-faults$SUFFIX" i dest prev="$W/s3-faults$SUFFIX.live"
    begin "$name"
    dest="$(new_dest s3 "$name")"
    start_proxy "$name" --seed "$SEED" --slowdown 0.05 --reset 0.05 --lost-ack 0.05 --latency-ms 30
    faulty_fake "$name"
    for i in $(seq 1 "$ITER"); do
        AWS_ENDPOINT_URL="$PROXY_URL" run_sync "$W/logs/$name-$i.log" "$dest"
        if [[ $RC -ne 0 && $RC -ne 1 && $RC -ne 2 && $RC -ne 75 ]]; then
            fail "$name" "run $i exited $RC, not a clean failure (log $W/logs/$name-$i.log)"
        elif ! check "$dest" --allow-empty --previous "$prev" --save "$prev"; then
            fail "$name" "after run $i (exit $RC, log $W/logs/$name-$i.log): $(violations)"
        else
            pass "$name"
        fi
    done
    stop_proxy
    stop_fake
    say "$name: $(grep -c . "$W/logs/proxy-$name.log" || true) faults injected"
    clean_run "$name" "$dest" "$prev" "after $ITER faulty runs"
}

seq_foreign_files() {
    local name=foreign-files dest kind when gone
    local -a foreign=(users/notes.txt email_send/2023/data.json)
    begin "$name"
    start_fake "$name"
    # Files of another system under a fresh --dest, and next to an existing lake.
    for kind in local s3; do
        for when in fresh beside-a-lake; do
            dest="$(new_dest "$kind" "$name")"
            [[ $when == fresh ]] || run_sync "$W/logs/$name-$kind-$when-first.log" "$dest"
            check_py --dest "$dest" --put "${foreign[0]}" "notes of another team"
            check_py --dest "$dest" --put "${foreign[1]}" '{"from": "another system"}'
            run_sync "$W/logs/$name-$kind-$when.log" "$dest"
            # Refusing the prefix (exit 64) keeps them too; deleting them is the failure.
            if gone="$(check_py --dest "$dest" --missing "${foreign[@]}")"; then
                pass "$name"
            else
                fail "$name" "a sync (exit $RC) deleted files it did not write from $dest ($when): $gone (log $W/logs/$name-$kind-$when.log)"
            fi
        done
    done
    stop_fake
}

seq_torn_manifest() {
    local name=torn-manifest i dest latest
    begin "$name"
    start_fake "$name"
    for i in 1 2; do
        dest="$(new_dest local "$name-$i")"
        run_sync "$W/logs/$name-$i-first.log" "$dest" --end-date 2024-01-04
        latest="$(find "$dest/_manifest" -name 'v*.json' 2>/dev/null | sort | tail -n 1)"
        if [[ -z $latest ]]; then
            fail "$name" "the first run committed no manifest (exit $RC, log $W/logs/$name-$i-first.log)"
            continue
        fi
        if [[ $i -eq 1 ]]; then
            truncate -s "$(($(stat -c %s "$latest") / 2))" "$latest"
        else
            : >"$latest"
        fi
        run_sync "$W/logs/$name-$i.log" "$dest"
        local why=""
        if [[ $RC -ne 0 ]]; then
            why="the run after a $( ((i == 1)) && echo truncated || echo empty) manifest exited $RC"
        elif ! grep -q '"level":"WARN".*manifest' "$W/logs/$name-$i.log"; then
            why="no warning about the torn manifest"
        elif ! check "$dest" --exact; then
            why="$(violations)"
        fi
        if [[ -z $why ]]; then
            pass "$name"
        else
            fail "$name" "$why (log $W/logs/$name-$i.log)"
        fi
    done
    stop_fake
}

seq_mode_switch() {
    local name=mode-switch dest
    begin "$name"
    start_fake "$name"
    # users: incremental, then a switch to incremental-deduped stopped early, then a full one.
    dest="$(new_dest local "$name-users")"
    run_sync "$W/logs/$name-1.log" "$dest" --streams users --mode incremental
    run_sync "$W/logs/$name-2.log" "$dest" --streams users --mode incremental-deduped --end-date 2024-01-02
    run_sync "$W/logs/$name-3.log" "$dest" --streams users --mode incremental-deduped
    if [[ $RC -eq 0 ]] && CHECK_STREAMS=users check "$dest" --exact; then
        pass "$name"
    else
        fail "$name" "users incremental -> interrupted incremental-deduped -> incremental-deduped (exit $RC, logs $W/logs/$name-{1,2,3}.log): $(violations)"
    fi
    # email_send: full-refresh-append, then incremental.
    dest="$(new_dest local "$name-append")"
    run_sync "$W/logs/$name-4.log" "$dest" --streams email_send --mode full-refresh-append
    run_sync "$W/logs/$name-5.log" "$dest" --streams email_send --mode incremental
    if [[ $RC -eq 0 ]] && CHECK_STREAMS=email_send check "$dest" --exact; then
        pass "$name"
    else
        fail "$name" "email_send full-refresh-append -> incremental (exit $RC, logs $W/logs/$name-{4,5}.log): $(violations)"
    fi
    stop_fake
}

seq_heavy_day() {
    local name=heavy-day dest n codes="" EXPORT_API=stream
    begin "$name"
    # 128 KB: above the data's longest line (95 KB), below a day of email_send (~160 KB).
    start_fake "$name" --cut-off-bytes 131072 --cut-off-data-type emailSend
    dest="$(new_dest local "$name")"
    # Two nights: neither may quarantine (exit 2) a day that only needs more splits.
    for n in 1 2; do
        run_sync "$W/logs/$name-$n.log" "$dest" --streams email_send
        codes="$codes $RC"
    done
    # Checked whatever the exit codes: a run that exits 0 must not leave records missing.
    local why=""
    [[ $codes == " 0 0" ]] || why="exited$codes (not 0 0);"
    CHECK_STREAMS=email_send check "$dest" --exact || why="$why $(violations)"
    if [[ -z $why ]]; then
        pass "$name"
    else
        fail "$name" "two nightly runs with every body cut after 128 KB $why (logs $W/logs/$name-{1,2}.log)"
    fi
    stop_fake
}

seq_short_body() {
    local name=short-body dest EXPORT_API=stream
    begin "$name"
    if ! "$BIN" fake-api --help | grep -q -- --cut-off-clean; then
        skip "$name" "fake-api has no --cut-off-clean"
        return
    fi
    # The first 6 export bodies end properly in the middle of a line, after about 20 KB.
    start_fake "$name" --cut-off-clean 6 --cut-off-clean-bytes 20000
    dest="$(new_dest local "$name")"
    run_sync "$W/logs/$name-1.log" "$dest"
    stop_fake
    start_fake "$name-clean"
    run_sync "$W/logs/$name-2.log" "$dest"
    if [[ $RC -eq 0 ]] && check "$dest" --exact; then
        pass "$name"
    else
        fail "$name" "a clean run after clean cut-offs exited $RC (logs $W/logs/$name-{1,2}.log): $(violations)"
    fi
    stop_fake
}

seq_cursorless() {
    local name=cursorless dest n why=""
    begin "$name"
    if ! "$BIN" fake-api --help | grep -q -- --cursorless-every; then
        skip "$name" "fake-api has no --cursorless-every"
        return
    fi
    # One record in 10 without a readable cursor; its truth files them under the date null.
    "$BIN" fake-truth "${DATA[@]}" --cursorless-every 10 --streams "$STREAMS" >"$W/truth-$name.tsv"
    start_fake "$name" --cursorless-every 10
    dest="$(new_dest local "$name")"
    # Nights whose windows start on other days (the settling window re-reads the last one)
    # and a run killed in the middle: every record once, the cursorless ones included.
    run_sync "$W/logs/$name-1.log" "$dest" --end-date 2024-01-04
    [[ $RC -eq 0 ]] || why="$why night 1 exited $RC;"
    TRUTH="$W/truth-$name.tsv" check "$dest" || why="$why after night 1: $(violations);"
    sync_cmd "$dest" --end-date 2024-01-06
    ITERABLE_API_KEY="$KEY" "${CMD[@]}" >"$W/logs/$name-2.log" 2>&1 </dev/null &
    n=$!
    PIDS+=("$n")
    rand 1500
    sleep "$(ms "$R")"
    kill -KILL "$n" 2>/dev/null || true
    wait "$n" 2>/dev/null || true
    TRUTH="$W/truth-$name.tsv" check "$dest" || why="$why after a killed run: $(violations);"
    for n in 3 4; do
        run_sync "$W/logs/$name-$n.log" "$dest"
        [[ $RC -eq 0 ]] || why="$why night $n exited $RC;"
    done
    TRUTH="$W/truth-$name.tsv" check "$dest" --exact || why="$why at the end: $(violations)"
    if [[ -z $why ]]; then
        pass "$name"
    else
        fail "$name" "records without a cursor:$why (logs $W/logs/$name-*.log)"
    fi
    stop_fake
}

seq_empty_events() {
    local name=empty-events dest before after lists
    begin "$name"
    if ! "$BIN" fake-api --help | grep -q -- --failing-lists; then
        skip "$name" "fake-api has no --failing-lists"
        return
    fi
    start_fake "$name"
    dest="$(new_dest local "$name")"
    run_sync "$W/logs/$name-1.log" "$dest" --streams events
    before="$(check_py --dest "$dest" --rows events)"
    lists="$("$PY" - "$FAKE_URL" "$KEY" <<'EOF'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "lists", headers={"Api-Key": sys.argv[2]})
print(",".join(str(l["id"]) for l in json.load(urllib.request.urlopen(req))["lists"]))
EOF
)"
    stop_fake
    # An outage: every list's getUsers fails. The pass must not complete from no members,
    # nor retire the rows it had. The client retries a failing list for minutes before it
    # gives up, so the run is stopped (SIGTERM, as a scheduler's timeout does) after
    # TORTURE_OUTAGE_SECS unless it ended by then.
    start_fake "$name-outage" --failing-lists "$lists"
    sync_cmd "$dest" --streams events
    ITERABLE_API_KEY="$KEY" "${CMD[@]}" >"$W/logs/$name-2.log" 2>&1 </dev/null &
    local pid=$! t stopped=""
    for ((t = 0; t < ${TORTURE_OUTAGE_SECS:-10} * 10; t++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -TERM "$pid" 2>/dev/null; then
        stopped=", stopped by SIGTERM"
        for ((t = 0; t < 100; t++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null && stopped=", not stopped 10 s after SIGTERM: killed"
    fi
    set +e
    wait "$pid" 2>/dev/null
    RC=$?
    set -e
    after="$(check_py --dest "$dest" --rows events)" || after=missing
    if [[ $stopped == *killed ]]; then
        fail "$name" "the outage run did not stop within 10 s of SIGTERM (it waited out its retries; logs $W/logs/$name-2.log)"
    elif [[ $before -gt 0 && $after =~ ^[0-9]+$ && $after -ge $before ]]; then
        say "$name: events kept $after of $before rows (the outage run exited $RC$stopped)"
        pass "$name"
    else
        fail "$name" "events held $before rows, after a run with every list failing (exit $RC$stopped) $after (logs $W/logs/$name-{1,2}.log)"
    fi
    stop_fake
}

# Plain Parquet tables (the default), then the sequences that crash, race and fault the
# commit path again with Delta tables (--table-format delta): "<sequence>-delta".
FORMAT=parquet
SUFFIX=""
EXPORT_API=auto
wants kill-local && seq_kill local
wants kill-s3 && seq_kill s3
wants race-local && seq_race race-local local
wants race-pidns && seq_race race-pidns local
wants race-s3 && seq_race race-s3 s3
wants freeze && seq_freeze
wants s3-faults && seq_s3_faults
wants foreign-files && seq_foreign_files
wants torn-manifest && seq_torn_manifest
wants mode-switch && seq_mode_switch
wants heavy-day && seq_heavy_day
wants short-body && seq_short_body
wants cursorless && seq_cursorless
wants empty-events && seq_empty_events
FORMAT=delta
SUFFIX=-delta
wants kill-local-delta && seq_kill local
wants kill-s3-delta && seq_kill s3
wants race-local-delta && seq_race race-local-delta local
wants s3-faults-delta && seq_s3_faults
FORMAT=parquet
SUFFIX=-jobs
EXPORT_API=jobs
FAULTS+=(--job-restarts 2 --job-failures 1 --job-truncations 1 --expired-urls 2 --cut-downloads 2
    --job-rate 5)
wants kill-local-jobs && seq_kill local
wants kill-s3-jobs && seq_kill s3
wants s3-faults-jobs && seq_s3_faults

# --- report -------------------------------------------------------------------------------
printf '\n%-16s %10s %9s  %s\n' sequence iterations failures note
for s in "${ORDER[@]}"; do
    printf '%-16s %10s %9s  %s\n' "$s" "${ITERS[$s]}" "${FAILS[$s]}" "${NOTES[$s]:-}"
done
printf '(seed %s: TORTURE_SEED=%s scripts/torture.sh %s replays it)\n' "$SEED" "$SEED" "$ITER"
exit "$FAILED"
