"""Read a Delta table with two independent readers, delta-rs (`deltalake`) and Polars, and
print what each saw as one JSON document.

Usage: delta_read.py TABLE_URI [VERSION] [ID_COLUMN]

Output (stdout): {"deltalake": {"version": V, "rows": N, "ids": DIGEST},
                  "polars": {"rows": N, "ids": DIGEST}}
  - VERSION (optional, or "latest") reads an older version of the table (time travel);
  - ids is the SHA-256 of the sorted values of ID_COLUMN (one per line), null when the column
    is not given, so two readers (and the manifest) can be compared event for event.
On failure: the reader's error on stderr, exit status 1 (2 for bad usage).

S3 tables (s3://bucket/prefix) use the AWS_* variables scripts/test.sh sets (endpoint,
keys, region, AWS_ALLOW_HTTP).
"""

import hashlib
import json
import os
import sys

import deltalake
import polars as pl


def _storage_options(uri):
    if not uri.startswith("s3://"):
        return None
    opts = {
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ""),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
    }
    if os.environ.get("AWS_ENDPOINT_URL"):
        opts["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
    if os.environ.get("AWS_ALLOW_HTTP") in ("true", "1"):
        opts["AWS_ALLOW_HTTP"] = "true"
    return opts


def _digest(values):
    if values is None:
        return None
    text = "\n".join(sorted("" if v is None else str(v) for v in values))
    return hashlib.sha256(text.encode()).hexdigest()


def main() -> int:
    if not 2 <= len(sys.argv) <= 4:
        print("usage: delta_read.py TABLE_URI [VERSION] [ID_COLUMN]", file=sys.stderr)
        return 2
    uri = sys.argv[1]
    version = None
    if len(sys.argv) >= 3 and sys.argv[2] != "latest":
        version = int(sys.argv[2])
    id_column = sys.argv[3] if len(sys.argv) == 4 else None
    opts = _storage_options(uri)
    try:
        table = deltalake.DeltaTable(uri, version=version, storage_options=opts)
        data = table.to_pyarrow_table()
        dl_ids = data.column(id_column).to_pylist() if id_column else None
        frame = pl.read_delta(uri, version=version, storage_options=opts)
        pl_ids = frame[id_column].to_list() if id_column else None
    except Exception as e:  # every reader error is reported the same way
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    doc = {
        "deltalake": {"version": table.version(), "rows": data.num_rows, "ids": _digest(dl_ids)},
        "polars": {"rows": frame.height, "ids": _digest(pl_ids)},
    }
    json.dump(doc, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
