"""Check a lake's invariants for scripts/torture.sh; exit 1 naming each violation.

Usage: torture_check.py --dest DEST --streams a,b --truth TRUTH [--exact]
                        [--previous FILE] [--save FILE] [--allow-empty]
                        [--delta]
       torture_check.py --dest DEST --commits
       torture_check.py --dest DEST --rows STREAM
       torture_check.py --dest DEST --put PATH TEXT
       torture_check.py --dest DEST --missing PATH...

DEST is a local folder or s3://bucket/prefix (S3 through the AWS_* variables, DuckDB's httpfs
from ITERABLE_LAKE_DUCKDB_HTTPFS). TRUTH is `iterable-lake fake-truth` output: one line per
record, `stream<TAB>date<TAB>identity`.

Always checked, on the latest manifest version (`_manifest/v*.json`, the highest number):
  - it parses;
  - every file it names for the streams exists and holds the row count it records;
  - no identity (`_event_id`; `email|userId` for users) is live more often than the fake
    serves it (a duplicate), and every live one is one the fake serves, in the partition
    date it belongs to.
--exact:     the live records equal the truth, record for record (after a clean run).
--delta:     each stream's Delta table (`<stream>/_delta_log`, read by delta-rs) loads and
             every file its latest version names exists; with --exact, those files are the
             manifest's live files (the table may lag behind the manifest after a crash,
             until the next run reconciles it).
--previous:  every record live in FILE (a --save of an earlier check) is still live: a
             committed row is never lost.
--allow-empty: a lake with no manifest passes (a run killed before its first commit).
--commits:   print the run that committed each manifest version still in the lake, oldest
             first, one a line (`torn` for one that does not parse), and check nothing.
--put:       write TEXT to PATH below DEST (a file of another system, for a test).
--missing:   print each PATH below DEST that does not exist; exit 1 when one does not.
--rows:      print the rows the latest manifest records for STREAM's live files (0 when it
             has none); exit 1 when one of them does not exist.
"""

import argparse
import collections
import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import duckdb_query  # noqa: E402  (the DuckDB connection the tests use)

CURSOR = {"users": "profileUpdatedAt"}


class Lake:
    def __init__(self, dest):
        self.dest = dest.rstrip("/")
        url = urllib.parse.urlsplit(self.dest)
        self.s3 = url.scheme == "s3"
        if self.s3:
            import boto3

            self.bucket, self.prefix = url.netloc, url.path.strip("/")
            self.client = boto3.client(
                "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL")
            )

    def key(self, rel):
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def url(self, rel):
        return f"{self.dest}/{rel}"

    def list(self, rel_dir):
        """Names (relative to the lake) of the objects below rel_dir."""
        if self.s3:
            out = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key(rel_dir) + "/"
            )
            for page in pages:
                for o in page.get("Contents", []):
                    out.append(o["Key"][len(self.key("")) :])
            return out
        root = os.path.join(self.dest, rel_dir)
        out = []
        for d, _, files in os.walk(root):
            for f in files:
                out.append(os.path.relpath(os.path.join(d, f), self.dest))
        return out

    def read(self, rel):
        if self.s3:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read()
        with open(os.path.join(self.dest, rel), "rb") as f:
            return f.read()

    def write(self, rel, text):
        if self.s3:
            self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=text.encode())
            return
        path = os.path.join(self.dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def exists(self, rel):
        if self.s3:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.key(rel))
                return True
            except self.client.exceptions.ClientError:
                return False
        return os.path.isfile(os.path.join(self.dest, rel))


def latest_manifest(lake, problems):
    versions = manifest_versions(lake)
    if not versions:
        return None, None
    name = versions[-1]
    try:
        return name, json.loads(lake.read(name))
    except (ValueError, UnicodeDecodeError) as e:
        problems.append(f"the latest manifest {name} does not parse: {e}")
        return name, None


def manifest_versions(lake):
    return sorted(
        n
        for n in lake.list("_manifest")
        if n.rsplit("/", 1)[-1].startswith("v") and n.endswith(".json")
    )


def print_commits(lake):
    for name in manifest_versions(lake):
        try:
            print(json.loads(lake.read(name)).get("last_run"))
        except (ValueError, UnicodeDecodeError):
            print("torn")


def print_rows(lake, stream):
    problems = []
    name, manifest = latest_manifest(lake, problems)
    files = ((manifest or {}).get("streams", {}).get(stream) or {}).get("files", [])
    problems += [
        f"{name} names {f['path']}, which does not exist" for f in files if not lake.exists(f["path"])
    ]
    for p in problems:
        print(f"violation: {p}", file=sys.stderr)
    print(sum(f["rows"] for f in files))
    return 1 if problems else 0


def delta_problems(lake, stream, files, exact):
    """What is wrong with the stream's Delta table, given the manifest's live files."""
    import deltalake
    import delta_read

    if not lake.list(f"{stream}/_delta_log"):
        return [f"{stream}: no Delta log"] if exact else []
    uri = lake.url(stream)
    try:
        table = deltalake.DeltaTable(uri, storage_options=delta_read._storage_options(uri))
        adds = table.get_add_actions(flatten=True).column("path").to_pylist()
    except Exception as e:  # any reader error is the finding
        return [f"{stream}: the Delta table does not load: {type(e).__name__}: {e}"]
    paths = sorted(f"{stream}/{urllib.parse.unquote(p)}" for p in adds)
    problems = [
        f"{stream}: Delta version {table.version()} names {p}, which does not exist"
        for p in paths
        if not lake.exists(p)
    ]
    want = sorted(f["path"] for f in files)
    if exact and paths != want:
        problems.append(
            f"{stream}: Delta version {table.version()} holds {len(paths)} files, "
            f"the manifest {len(want)} ({len(set(paths) ^ set(want))} differ)"
        )
    return problems


def load_truth(path, streams):
    truth = collections.Counter()
    with open(path) as f:
        for line in f:
            stream, date, ident = line.rstrip("\n").split("\t")
            if stream in streams:
                truth[(stream, date, ident)] += 1
    return truth


def live_records(lake, stream, files, problems):
    """The stream's live records as a Counter of (stream, date, identity)."""
    if not files:
        return collections.Counter()
    cursor = CURSOR.get(stream, "createdAt")
    ident = (
        "coalesce(email, '') || '|' || coalesce(userId, '')"
        if stream == "users"
        else "_event_id"
    )
    urls = ", ".join("'" + lake.url(f["path"]).replace("'", "''") + "'" for f in files)
    sql = (
        f"SELECT filename, CAST({cursor} AS DATE)::VARCHAR, {ident}, count(*) "
        f"FROM read_parquet([{urls}], filename=true, union_by_name=true) GROUP BY ALL"
    )
    con = duckdb_query._connect()
    rows = con.execute(sql).fetchall()
    per_file = collections.Counter()
    out = collections.Counter()
    for filename, date, identity, n in rows:
        per_file[filename] += n
        folder = next((p for p in filename.split("/") if p.startswith("date=")), None)
        # A record without a readable cursor lies in the folder readers see as a null date.
        want = "date=__HIVE_DEFAULT_PARTITION__" if date is None else f"date={date}"
        if folder is not None and folder != want:
            problems.append(f"{stream}: {identity} of {date} lies in {filename}")
        # `fake-truth` writes such a record's date as null.
        date = "null" if date is None else date
        out[(stream, date, identity)] += n
    for f in files:
        got = per_file.get(lake.url(f["path"]), 0)
        if got != f["rows"]:
            problems.append(f"{f['path']}: {got} rows, the manifest says {f['rows']}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dest", required=True)
    ap.add_argument("--streams")
    ap.add_argument("--truth")
    ap.add_argument("--commits", action="store_true")
    ap.add_argument("--rows", metavar="STREAM")
    ap.add_argument("--put", nargs=2, metavar=("PATH", "TEXT"))
    ap.add_argument("--missing", nargs="+", metavar="PATH")
    ap.add_argument("--exact", action="store_true")
    ap.add_argument("--delta", action="store_true")
    ap.add_argument("--previous")
    ap.add_argument("--save")
    ap.add_argument("--allow-empty", action="store_true")
    args = ap.parse_args()
    lake = Lake(args.dest)
    if args.commits:
        print_commits(lake)
        return 0
    if args.rows:
        return print_rows(lake, args.rows)
    if args.put:
        lake.write(*args.put)
        return 0
    if args.missing:
        gone = [p for p in args.missing if not lake.exists(p)]
        print(" ".join(gone))
        return 1 if gone else 0
    if not args.streams or not args.truth:
        ap.error("--streams and --truth are required")
    streams = [s for s in args.streams.split(",") if s]
    problems = []

    name, manifest = latest_manifest(lake, problems)
    live = collections.Counter()
    if manifest is None and not problems and not args.allow_empty:
        problems.append("no manifest")
    if manifest is not None:
        for stream in streams:
            state = manifest.get("streams", {}).get(stream)
            if state is None:
                continue
            files = state.get("files", [])
            missing = [f["path"] for f in files if not lake.exists(f["path"])]
            for m in missing:
                problems.append(f"{name} names {m}, which does not exist")
            present = [f for f in files if f["path"] not in missing]
            live += live_records(lake, stream, present, problems)
            if args.delta:
                problems += delta_problems(lake, stream, files, args.exact)

    truth = load_truth(args.truth, streams)
    dups = [(k, n) for k, n in live.items() if n > truth.get(k, 0) and truth.get(k, 0) > 0]
    extra = [(k, n) for k, n in live.items() if truth.get(k, 0) == 0]
    for (stream, date, ident), n in dups[:10]:
        problems.append(f"{stream}: {ident} ({date}) is live {n} times, the fake serves it {truth[(stream, date, ident)]}")
    if len(dups) > 10:
        problems.append(f"... and {len(dups) - 10} more duplicated records")
    for (stream, date, ident), n in extra[:10]:
        problems.append(f"{stream}: {ident} ({date}) is live but the fake does not serve it there")
    if len(extra) > 10:
        problems.append(f"... and {len(extra) - 10} more records the fake does not serve")

    if args.exact:
        missing = truth - live
        if missing:
            by_stream = collections.Counter(k[0] for k in missing.elements())
            problems.append(
                "not exact: records missing from the lake: "
                + ", ".join(f"{s} {n}" for s, n in sorted(by_stream.items()))
            )
    if args.previous and os.path.exists(args.previous):
        with open(args.previous) as f:
            before = collections.Counter(tuple(json.loads(line)) for line in f)
        lost = before - live
        if lost:
            sample = next(iter(lost))
            problems.append(f"{sum(lost.values())} committed records were lost, e.g. {sample}")
    if args.save:
        with open(args.save, "w") as f:
            for k in live.elements():
                f.write(json.dumps(list(k)) + "\n")

    rows = sum(live.values())
    if problems:
        for p in problems:
            print(f"violation: {p}", file=sys.stderr)
        return 1
    print(f"ok: {name or 'no manifest'}, {rows} live records of {sum(truth.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
