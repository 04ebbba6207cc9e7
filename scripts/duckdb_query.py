"""Run one SQL text in an in-memory DuckDB and print the result as one JSON document.

Usage: duckdb_query.py 'SQL'      or      echo 'SQL' | duckdb_query.py

Output (stdout): {"columns": [...], "types": [...], "rows": [[...], ...]}
  - types are DuckDB's names (BIGINT, VARCHAR, "TIMESTAMP WITH TIME ZONE", ...);
  - timestamps, dates and times are ISO-8601 strings (TIMESTAMP WITH TIME ZONE in UTC,
    with a "+00:00" offset); decimals, UUIDs, intervals, integers outside the signed/unsigned
    64-bit range and non-finite floats are strings (intervals as Python's timedelta text,
    e.g. "1 day, 0:00:00"); blobs are lowercase hex; lists are arrays; structs and maps are
    objects (map keys as strings).
When the text holds several statements they all run and the last one's result is printed.
On failure: the DuckDB error on stderr, exit status 1 (2 for bad usage).

Environment:
  ITERABLE_LAKE_DUCKDB_HTTPFS  path of httpfs.duckdb_extension; when set it is LOADed by
                               path and an S3 secret is made from the AWS_* variables
  ITERABLE_LAKE_DUCKDB_DELTA   path of delta.duckdb_extension; when set it is LOADed by path
                               (for delta_scan)
  AWS_ENDPOINT_URL             e.g. http://127.0.0.1:PORT (path-style, TLS from the scheme)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION / AWS_DEFAULT_REGION

DuckDB is told never to install or auto-load extensions, so it makes no network access
other than to the S3 endpoint given here.
"""

import datetime
import decimal
import json
import math
import os
import sys
import urllib.parse
import uuid

import duckdb

I64_MIN, U64_MAX = -(2**63), 2**64 - 1


def _value(v):
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v if I64_MIN <= v <= U64_MAX else str(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc)
        return v.isoformat()
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (decimal.Decimal, uuid.UUID, datetime.timedelta)):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, dict):
        return {str(k): _value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    return str(v)


def _connect():
    con = duckdb.connect(
        ":memory:",
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
        },
    )
    # Even an explicit INSTALL must not reach the internet: point it at nothing.
    con.execute("SET custom_extension_repository = '/nonexistent/iterable-lake'")
    # Results must not depend on the machine's time zone.
    con.execute("SET TimeZone = 'UTC'")
    httpfs = os.environ.get("ITERABLE_LAKE_DUCKDB_HTTPFS")
    if httpfs:
        con.execute(f"LOAD '{_quote(httpfs)}'")
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        opts = {
            "KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ""),
            "SECRET": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            "REGION": os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
        }
        if endpoint:
            url = urllib.parse.urlsplit(endpoint)
            opts["ENDPOINT"] = url.netloc
            opts["URL_STYLE"] = "path"
            opts["USE_SSL"] = "true" if url.scheme == "https" else "false"
        body = ", ".join(
            f"{k} {v}" if k == "USE_SSL" else f"{k} '{_quote(v)}'" for k, v in opts.items()
        )
        con.execute(f"CREATE SECRET lake_s3 (TYPE s3, {body})")
    delta = os.environ.get("ITERABLE_LAKE_DUCKDB_DELTA")
    if delta:
        con.execute(f"LOAD '{_quote(delta)}'")
    return con


def _quote(s):
    return s.replace("'", "''")


def main() -> int:
    if len(sys.argv) > 2:
        print("usage: duckdb_query.py ['SQL']  (or SQL on stdin)", file=sys.stderr)
        return 2
    sql = sys.argv[1] if len(sys.argv) == 2 else sys.stdin.read()
    if not sql.strip():
        print("duckdb_query.py: empty SQL", file=sys.stderr)
        return 2
    try:
        con = _connect()
        cur = con.execute(sql)
        desc = cur.description or []
        rows = cur.fetchall() if desc else []
    except duckdb.Error as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    doc = {
        "columns": [d[0] for d in desc],
        "types": [str(d[1]) for d in desc],
        "rows": [[_value(v) for v in row] for row in rows],
    }
    json.dump(doc, sys.stdout, ensure_ascii=False, allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
