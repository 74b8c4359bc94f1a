#!/usr/bin/env python3
"""A stand-in for the `influx` CLI (influxdata/influx-cli v2.7.5, the version influxdata-docker
influxdb/2.7/Dockerfile installs: `INFLUX_CLI_VERSION 2.7.5`) for the backup Job tests: the commands
the Jobs run (`backup`, `restore`, `bucket list`, `bucket delete`), their flags as the real CLI defines
them, and the HTTP requests the real CLI makes for them, sent to the InfluxDB fake of the test.

Sources (influx-cli v2.7.5):
- cmd/influx/main.go, global.go: urfave/cli v1.22.5 commands; every leaf command repeats the common
  flags (`--host`/INFLUX_HOST, `--skip-verify`, `--configs-path`, `--active-config`/`-c`, `--http-debug`,
  `--token`/`-t`/INFLUX_TOKEN, and `--json`, `--hide-headers` where resources are printed); the token is
  sent as `Authorization: Token …` (`withApi(true)`); an error prints `Error: …` and exits 1
  (pkg/cli/middleware/handleexit.go). urfave/cli v1 moves the flags it knows before the positional
  arguments (`reorderArgs`) and parses them with Go's `flag` package: an undefined flag is
  "flag provided but not defined".
- cmd/influx/backup.go, restore.go: their flags; "backup path must be specified as a single positional
  argument" / "restore path …".
- cmd/influx/bucket.go + clients/bucket/list.go, delete.go, client.go: `bucket list` pages through
  `GET /api/v2/buckets?org=…&limit=<page-size 20>&offset=…`, prints a table through
  pkg/tabwriter (`text/tabwriter`, padchar '\t'); `bucket delete --id` looks the bucket up
  (`GET /api/v2/buckets?id=`) then `DELETE /api/v2/buckets/{id}`; both refuse positional arguments
  (pkg/cli/middleware/noargs.go).
- clients/backup/backup.go: `GET /health`, `GET /api/v2/backup/metadata` (multipart: kv, sql, buckets),
  `GET /api/v2/backup/shards/{id}` per shard, files `<time>.bolt.gz`, `<time>.sqlite.gz`,
  `<time>.<shard>.tar.gz` and the manifest `<time>.manifest` (internal/backup_restore/manifest.go).
- clients/restore/restore.go: `partialRestore` without `--full`: buckets whose name starts with `_` are
  skipped; per org `GET /api/v2/orgs?org=` (404 when missing, then `POST /api/v2/orgs`); per bucket
  `POST /api/v2/restore/bucketMetadata` (fails when the bucket exists), then each shard's file to
  `POST /api/v2/restore/shards/{new id}`.
"""
import email.parser
import glob
import gzip
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class Failure(Exception):
    pass


CORE = [("host", "string"), ("skip-verify", "bool"), ("configs-path", "string"),
        ("active-config, c", "string"), ("trace-debug-id", "string"), ("extra-http-header", "string"),
        ("http-debug", "bool")]
PRINT = [("json", "bool"), ("hide-headers", "bool")]
TOKEN = [("token, t", "string")]
ORG = [("org-id", "string"), ("org, o", "string")]
COMMANDS = {
    ("backup",): CORE + TOKEN + ORG + [("bucket-id", "string"), ("bucket, b", "string"),
                                        ("compression", "string")],
    ("restore",): CORE + TOKEN + [("full", "bool"), ("org-id", "string"), ("org, o", "string"),
                                   ("bucket-id", "string"), ("bucket, b", "string"),
                                   ("new-bucket", "string"), ("new-org", "string")],
    ("bucket", "list"): CORE + PRINT + TOKEN + ORG + [("id, i", "string"), ("name, n", "string"),
                                                     ("limit", "int"), ("offset", "int"),
                                                     ("page-size", "int")],
    ("bucket", "delete"): CORE + PRINT + TOKEN + ORG + [("id, i", "string"), ("name, n", "string")],
}
ALIASES = {"ls": "list", "find": "list"}
ENV = {"host": "INFLUX_HOST", "token": "INFLUX_TOKEN", "org": "INFLUX_ORG", "org-id": "INFLUX_ORG_ID"}


def flag_table(spec):
    names = {}
    for names_field, kind in spec:
        parts = [n.strip() for n in names_field.split(",")]
        for n in parts:
            names[n] = (parts[0], kind)
    return names


def parse(spec, args):
    table = flag_table(spec)

    def known(arg):
        name = arg.lstrip("-").split("=", 1)[0]
        return arg.startswith("-") and name in table

    # urfave/cli v1 reorderArgs: known flags (and a value right after one) first, the rest after.
    flags, rest, value_next = [], [], False
    for i, arg in enumerate(args):
        if arg == "--":
            rest.extend(args[i:])
            break
        if value_next and not arg.startswith("-"):
            flags.append(arg)
            value_next = False
        elif known(arg):
            flags.append(arg)
            value_next = "=" not in arg
        else:
            rest.append(arg)
            value_next = False
    ordered = flags + rest
    # Go's flag package: flags until the first non-flag.
    opts, i = {}, 0
    while i < len(ordered):
        arg = ordered[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name not in table:
            raise Failure(f"Incorrect Usage: flag provided but not defined: -{name}")
        canonical, kind = table[name]
        i += 1
        if kind == "bool":
            opts[canonical] = (value or "true") == "true"
            continue
        if not eq:
            if i >= len(ordered):
                raise Failure(f"Incorrect Usage: flag needs an argument: -{name}")
            value = ordered[i]
            i += 1
        if kind == "int":
            try:
                value = int(value)
            except ValueError:
                raise Failure(f'Incorrect Usage: invalid value "{value}" for flag -{name}: parse error')
        opts[canonical] = value
    for flag, env in ENV.items():
        if flag in table and table[flag][0] not in opts and os.environ.get(env):
            opts[table[flag][0]] = os.environ[env]
    return opts, ordered[i:]


class Api:
    def __init__(self, opts):
        self.host = opts.get("host", "http://localhost:8086").rstrip("/")
        self.token = opts.get("token", "")

    def request(self, method, path, body=None, headers=None, query=None):
        url = self.host + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        if self.token:
            request.add_header("Authorization", f"Token {self.token}")
        request.add_header("User-Agent", "influx/v2.7.5 (linux) fake")
        try:
            with urllib.request.urlopen(request) as response:
                # Header names are case-insensitive (an `http.client.HTTPMessage`).
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise ApiError(e.code, f"{e.code} {e.reason}: {message}")
        except urllib.error.URLError as e:
            raise Failure(f'Post "{url}": {e.reason}')

    def json(self, method, path, body=None, query=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        _, _, raw = self.request(method, path, data, headers, query)
        return json.loads(raw) if raw else None


class ApiError(Failure):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def print_table(opts, headers, rows):
    """pkg/tabwriter: text/tabwriter.NewWriter(w, 0, 8, 1, '\\t', 0), headers unless --hide-headers."""
    lines = ([headers] if not opts.get("hide-headers") else []) + rows
    if opts.get("json"):
        print(json.dumps(rows, indent=2))
        return
    widths = [0] * len(headers)
    for line in lines:
        for n, cell in enumerate(line[:-1]):
            widths[n] = max(widths[n], math.ceil((len(cell) + 1) / 8) * 8)
    for line in lines:
        out = "".join(cell + "\t" * math.ceil((widths[n] - len(cell)) / 8) for n, cell in enumerate(line[:-1]))
        print(out + line[-1])


def bucket_row(b):
    rules = b.get("retentionRules") or []
    every = rules[0].get("everySeconds", 0) if rules else 0
    shard = rules[0].get("shardGroupDurationSeconds", 0) if rules else 0
    return [b["id"], b["name"], f"{every // 3600}h0m0s" if every else "infinite",
            f"{shard // 3600}h0m0s" if shard else "n/a", b["orgID"], b.get("schemaType") or "implicit"]


HEADERS = ["ID", "Name", "Retention", "Shard group duration", "Organization ID", "Schema Type"]


def bucket_list(opts, api):
    if not opts.get("org-id") and not opts.get("org"):
        raise Failure("must specify org ID or org name")
    query = {"orgID": opts["org-id"]} if opts.get("org-id") else {"org": opts["org"]}
    if opts.get("id") or opts.get("name"):
        query.update({"id": opts["id"]} if opts.get("id") else {"name": opts["name"]})
        found = api.json("GET", "/api/v2/buckets", query=query)
        print_table(opts, HEADERS, [bucket_row(b) for b in found.get("buckets", [])])
        return
    page, limit_all = opts.get("page-size", 20), opts.get("limit", 0)
    limit = min(page, limit_all) if limit_all else page
    offset, buckets = opts.get("offset", 0), []
    while True:
        q = dict(query)
        if limit:
            q["limit"] = limit
        if offset:
            q["offset"] = offset
        try:
            got = api.json("GET", "/api/v2/buckets", query=q).get("buckets") or []
        except ApiError as e:
            raise Failure(f"failed to list buckets: {e}")
        buckets += got
        if not got or len(got) < page or (limit_all and len(buckets) == limit_all):
            break
        if limit_all and len(buckets) + limit > limit_all:
            limit = limit_all - len(buckets)
        offset += len(got)
    print_table(opts, HEADERS, [bucket_row(b) for b in buckets])


def bucket_delete(opts, api):
    if not opts.get("id") and not opts.get("name"):
        raise Failure("must specify bucket ID or bucket name")
    if opts.get("id"):
        query = {"id": opts["id"]}
    else:
        if not opts.get("org-id") and not opts.get("org"):
            raise Failure("must specify org ID or org name to delete by name")
        query = {"name": opts["name"], **({"orgID": opts["org-id"]} if opts.get("org-id") else {"org": opts["org"]})}
    shown = opts.get("id") or opts.get("name")
    try:
        found = api.json("GET", "/api/v2/buckets", query=query).get("buckets") or []
    except ApiError as e:
        raise Failure(f'failed to find bucket "{shown}": {e}')
    if not found:
        raise Failure(f'bucket "{shown}" not found')
    try:
        api.request("DELETE", f"/api/v2/buckets/{found[0]['id']}")
    except ApiError as e:
        raise Failure(f'failed to delete bucket "{shown}": {e}')
    print_table(opts, HEADERS + ["Deleted"], [bucket_row(found[0]) + ["true"]])


def health(api):
    _, headers, raw = api.request("GET", "/health")
    if headers.get("X-Influxdb-Build") == "Cloud":
        raise Failure("InfluxDB OSS-only command used with InfluxDB Cloud host")
    return json.loads(raw)


def backup(opts, path, api):
    os.makedirs(path, exist_ok=True)
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    health(api)
    print("INFO: Downloading metadata snapshot", file=sys.stderr)
    try:
        _, headers, raw = api.request("GET", "/api/v2/backup/metadata", headers={"Accept-Encoding": "gzip"})
    except ApiError as e:
        raise Failure(f"failed to backup metadata: failed to download metadata snapshot: {e}")
    if headers.get("Content-Encoding") == "gzip":
        raw = gzip.decompress(raw)
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
    manifest = {"manifestVersion": 2, "buckets": []}
    metadata = []
    for part in message.get_payload():
        name = part.get_param("name", header="Content-Disposition")
        data = part.get_payload(decode=True)
        if name in ("kv", "sql"):
            file = f"{base}.{'bolt' if name == 'kv' else 'sqlite'}.gz"
            with open(os.path.join(path, file), "wb") as f:
                f.write(gzip.compress(data))
            manifest[name] = {"fileName": file, "size": os.path.getsize(os.path.join(path, file)), "compression": 1}
        elif name == "buckets":
            metadata = json.loads(data)
        else:
            raise Failure(f'failed to backup metadata: response contained unexpected part "{name}"')
    for b in metadata:
        if opts.get("org") and b["organizationName"] != opts["org"]:
            continue
        if opts.get("bucket") and b["bucketName"] != opts["bucket"]:
            continue
        for rp in b["retentionPolicies"]:
            for sg in rp["shardGroups"]:
                for shard in sg["shards"]:
                    try:
                        _, _, data = api.request("GET", f"/api/v2/backup/shards/{shard['id']}")
                    except ApiError as e:
                        raise Failure(f"failed to backup bucket data: {e}")
                    file = f"{base}.{shard['id']}.tar.gz"
                    with open(os.path.join(path, file), "wb") as f:
                        f.write(gzip.compress(data))
                    shard.update({"fileName": file, "size": len(data), "compression": 1})
        manifest["buckets"].append(b)
    with open(os.path.join(path, f"{base}.manifest"), "w") as f:
        json.dump(manifest, f, indent=2)


def restore(opts, path, api):
    if opts.get("full"):
        raise Failure("this fake restores without --full only (a full restore replaces users and tokens)")
    manifests = sorted(glob.glob(os.path.join(path, "*.manifest")))
    if not manifests:
        raise Failure(f'no backup manifests found at "{path}"')
    buckets = {}
    for file in manifests:
        with open(file) as f:
            for b in json.load(f)["buckets"]:
                buckets[f"{b['organizationName']}/{b['bucketName']}"] = b
    health(api)
    orgs = {}
    for b in buckets.values():
        if b["bucketName"].startswith("_"):
            continue
        if opts.get("org") and b["organizationName"] != opts["org"]:
            continue
        if opts.get("bucket") and b["bucketName"] != opts["bucket"]:
            continue
        org = b["organizationName"]
        if org not in orgs:
            try:
                found = api.json("GET", "/api/v2/orgs", query={"org": org}).get("orgs") or []
            except ApiError as e:
                if e.status != 404:
                    raise Failure(f'failed to check existence of organization "{org}": {e}')
                found = []
            if not found:
                try:
                    found = [api.json("POST", "/api/v2/orgs", {"name": org})]
                except ApiError as e:
                    raise Failure(f'failed to create organization "{org}": {e}')
            orgs[org] = found[0]["id"]
        print(f'INFO: Restoring bucket "{b["bucketID"]}" as "{b["bucketName"]}"', file=sys.stderr)
        entry = dict(b, organizationID=orgs[org])
        try:
            mapping = api.json("POST", "/api/v2/restore/bucketMetadata", entry)
        except ApiError as e:
            raise Failure(f'failed to restore bucket "{b["bucketName"]}": {e}')
        new_ids = {m["oldId"]: m["newId"] for m in mapping.get("shardMappings", [])}
        for rp in b["retentionPolicies"]:
            for sg in rp["shardGroups"]:
                for shard in sg["shards"]:
                    if shard["id"] not in new_ids:
                        continue
                    with open(os.path.join(path, shard["fileName"]), "rb") as f:
                        body = f.read()
                    try:
                        api.request("POST", f"/api/v2/restore/shards/{new_ids[shard['id']]}", body,
                                    {"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"})
                    except ApiError as e:
                        raise Failure(f"failed to restore shard {shard['id']}: {e}")


def main():
    args = sys.argv[1:]
    command = []
    while args and not args[0].startswith("-") and len(command) < 2:
        word = ALIASES.get(args[0], args[0]) if command == ["bucket"] else args[0]
        if tuple(command + [word]) in COMMANDS or (not command and word == "bucket"):
            command.append(word)
            args = args[1:]
        else:
            break
    try:
        if tuple(command) not in COMMANDS:
            what = args[0] if args else ""
            raise Failure(f'unknown command "{what}" for "influx{" " + " ".join(command) if command else ""}"')
        opts, positional = parse(COMMANDS[tuple(command)], args)
        log = os.environ.get("FAKE_INFLUX_CALLS")
        if log:
            with open(log, "a") as f:
                f.write(json.dumps(["influx"] + sys.argv[1:]) + "\n")
        api = Api(opts)
        if command[0] in ("backup", "restore"):
            if len(positional) != 1:
                raise Failure(f"{command[0]} path must be specified as a single positional argument")
            if opts.get("org-id") and opts.get("org") and command[0] == "backup":
                raise Failure("ambiguous org: use OrgId or OrgName, but not both")
            (backup if command[0] == "backup" else restore)(opts, positional[0], api)
        else:
            if positional:
                raise Failure(f'unknown command "{positional[0]}" for "{command[1]}"')
            if opts.get("org-id") and opts.get("org"):
                raise Failure("ambiguous org: use OrgId or OrgName, but not both")
            (bucket_list if command[1] == "list" else bucket_delete)(opts, api)
        return 0
    except Failure as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
