"""Read every stream of a lake with Spark, as a user would; run by scripts/check-spark.sh.

Usage: check_spark.py LAKE_DIR

A stream is a directory directly under LAKE_DIR that holds .parquet files (at any depth) and
whose name does not start with "_" or "." (so `_manifest…` is not one). Each is read with
`spark.read.option("mergeSchema", "true").parquet(dir)`, which discovers hive partitions
such as `date=YYYY-MM-DD`, and fully scanned (`count()`).

Prints one line per stream: name, rows, columns (partition columns included).
Exit status: 0 when every stream reads; 1 when any read fails or there is no stream.
"""

import os
import sys
import time


def streams(lake):
    for name in sorted(os.listdir(lake)):
        path = os.path.join(lake, name)
        if name.startswith(("_", ".")) or not os.path.isdir(path):
            continue
        if any(f.endswith(".parquet") for _, _, files in os.walk(path) for f in files):
            yield name, path


def _describe(e):
    """First line of the error; for a Py4J error, of the Java exception it carries."""
    java = getattr(e, "java_exception", None)
    text = str(java.toString()) if java is not None else str(e)
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else type(e).__name__


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: check_spark.py LAKE_DIR", file=sys.stderr)
        return 2
    lake = os.path.abspath(sys.argv[1])
    if not os.path.isdir(lake):
        print(f"check_spark: {lake} is not a directory", file=sys.stderr)
        return 1
    found = list(streams(lake))
    if not found:
        print(f"check_spark: no streams (folders with .parquet files) in {lake}", file=sys.stderr)
        return 1

    from pyspark.sql import SparkSession

    t0 = time.monotonic()
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("iterable-lake-check")
        .config("spark.driver.memory", "1g")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    print(f"check_spark: Spark {spark.version} up in {time.monotonic() - t0:.1f}s", flush=True)

    failed = []
    try:
        for name, path in found:
            try:
                df = spark.read.option("mergeSchema", "true").parquet(path)
                rows = df.count()
                print(f"  {name}: {rows} rows, {len(df.columns)} columns", flush=True)
            except Exception as e:  # any read failure is what this check reports
                print(f"  {name}: FAILED: {_describe(e)}", flush=True)
                failed.append(name)
    finally:
        spark.stop()

    if failed:
        print(f"check_spark: {len(failed)} of {len(found)} streams failed: {', '.join(failed)}")
        return 1
    print(f"check_spark: {len(found)} streams read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
