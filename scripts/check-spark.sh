#!/usr/bin/env bash
# Reads every stream of a local lake with Apache Spark: `scripts/check-spark.sh LAKE_DIR`.
#
# Installs PySpark into <repo>/.venv-spark (once; skipped when the pinned version is there),
# finds a Java 17+ (JAVA_HOME, else `java` on PATH; as root with apt-get and none found, it
# installs Debian's openjdk-17-jre-headless), then runs scripts/check_spark.py on LAKE_DIR:
# exit 0 when every stream reads, non-zero when any read fails or the lake has no stream.
set -euo pipefail

PYSPARK_VERSION=4.3.0

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv-spark"
BOOT_PY="${ITERABLE_LAKE_BOOTSTRAP_PYTHON:-python3}"

say() { printf '[check-spark] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

[[ $# -eq 1 ]] || die "usage: scripts/check-spark.sh LAKE_DIR"
LAKE="$(cd "$1" 2>/dev/null && pwd)" || die "$1 is not a directory"

# --- PySpark venv -------------------------------------------------------------------------
t0="$(now)"
exec 9>"$VENV.lock"
flock 9
if [[ "$("$VENV/bin/python" -c 'import pyspark; print(pyspark.__version__)' 2>/dev/null)" == "$PYSPARK_VERSION" ]]; then
    say "pyspark $PYSPARK_VERSION already installed ($VENV)"
else
    if ! "$VENV/bin/python" -c '' 2>/dev/null; then
        command -v "$BOOT_PY" >/dev/null || die "$BOOT_PY not found (set ITERABLE_LAKE_BOOTSTRAP_PYTHON)"
        "$BOOT_PY" -m venv --clear "$VENV"
    fi
    say "installing pyspark $PYSPARK_VERSION into $VENV (a ~450 MB download)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q "pyspark==$PYSPARK_VERSION"
    say "pyspark installed in $(since "$t0")"
fi
exec 9>&-

# --- Java ---------------------------------------------------------------------------------
java_major() { "$1" -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print v[1]; exit }'; }
find_java_home() {
    local java
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        java="$JAVA_HOME/bin/java"
    elif command -v java >/dev/null; then
        java="$(readlink -f "$(command -v java)")"
    else
        return 1
    fi
    [[ "$(java_major "$java")" -ge 17 ]] || return 1
    dirname "$(dirname "$java")"
}
if ! JAVA_HOME="$(find_java_home)"; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "no Java 17+: installing openjdk-17-jre-headless"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
        unset JAVA_HOME
        JAVA_HOME="$(find_java_home)" || die "Java 17+ still not found after installing it"
    else
        die "Spark needs Java 17+: set JAVA_HOME or put java on PATH"
    fi
fi
export JAVA_HOME
say "java: $JAVA_HOME ($(java_major "$JAVA_HOME/bin/java"))"

# --- Spark --------------------------------------------------------------------------------
# Quiet Spark's own logging (only errors), and keep it on the loopback interface.
CONF_DIR="$(mktemp -d "${TMPDIR:-/tmp}/iterable-lake-spark.XXXXXX")"
trap 'rm -rf "$CONF_DIR"' EXIT
cat >"$CONF_DIR/log4j2.properties" <<'EOF'
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
EOF
# The driver JVM (spark-submit in client mode) takes its JVM options from SPARK_SUBMIT_OPTS.
export SPARK_SUBMIT_OPTS="-Dlog4j2.configurationFile=file:$CONF_DIR/log4j2.properties"
export SPARK_LOCAL_IP=127.0.0.1
export PYSPARK_PYTHON="$VENV/bin/python"
unset SPARK_HOME  # use the pip-installed Spark, not some other one

t0="$(now)"
say "reading $LAKE"
status=0
"$VENV/bin/python" "$REPO/scripts/check_spark.py" "$LAKE" || status=$?
say "done in $(since "$t0") (exit $status)"
exit "$status"
