#!/usr/bin/env python3
"""Stand-ins for `mongodump` and `mongorestore` (MongoDB Database Tools) for the backup Job tests.

Invoked as `mongo_tools.py mongodump|mongorestore ARGS...`. The command line is parsed as the real tools
parse theirs, so a flag the tools do not have, a value given the wrong way or a missing password fails
here as it fails in the Job. Sources (mongodb/mongo-tools 100.13.0, the tools the mongo image ships as
the renderer cites them):
- common/options/options.go: the option groups every tool registers (general, verbosity, connection,
  SSL, auth, Kerberos, namespace, URI), `handleUnknownOption` (`unknown option "x"`), `ParseConfigFile`
  (`--config`: a YAML file read with `yaml.UnmarshalStrict`, keys `password`, `uri`, `sslPEMKeyPassword`,
  `destinationPassword`), `setOptionsFromURI` (a flag that contradicts the URI is an error),
  `NormalizeOptionsAndURI` (a username without a password prompts for one: no terminal in a Job);
- mongodump/options.go, mongorestore/options.go: each tool's own options; `--archive` has an optional
  value (`optional:"true" optional-value:"-"`), so only `--archive=PATH` names a file (go-flags);
- mongodump/main, mongorestore/main: a parse error or a failure exits 1 (`util.ExitFailure`);
- mongorestore/mongorestore.go: "no oplog file to replay; make sure you run mongodump with --oplog",
  checked before anything is restored; "cannot use --oplogReplay with excludes specified".

The server is a JSON file (`$FAKE_MONGO_STATE`): the replica set's name and members, the keyfile (the
internal user `__system` on `local` signs in with it), and the collections, `admin.system.users`
holding the users as `{user, db, pwd, roles}`. The archive is this fake's own: a header line and JSON,
gzipped with `--gzip`.
"""
import gzip
import json
import os
import sys

MAGIC = b"FAKE-MONGODUMP-ARCHIVE\n"

# (long name, short name, kind): kind is "bool", "value" or "optional" (optional value, "-" when bare).
COMMON = [
    ("help", None, "bool"), ("version", None, "bool"), ("config", None, "value"),
    ("numThreads", None, "value"), ("failpoints", None, "value"), ("trace", None, "bool"),
    ("verbose", "v", "optional"), ("quiet", None, "bool"),
    ("host", "h", "value"), ("port", None, "value"), ("dialTimeout", None, "value"),
    ("socketTimeout", None, "value"), ("TCPKeepAliveSeconds", None, "value"),
    ("serverSelectionTimeout", None, "value"), ("compressors", None, "value"),
    ("ssl", None, "bool"), ("sslCAFile", None, "value"), ("sslPEMKeyFile", None, "value"),
    ("sslPEMKeyPassword", None, "value"), ("sslCRLFile", None, "value"),
    ("sslAllowInvalidCertificates", None, "bool"), ("sslAllowInvalidHostnames", None, "bool"),
    ("sslFIPSMode", None, "bool"), ("tlsInsecure", None, "bool"),
    ("username", "u", "value"), ("password", "p", "value"), ("authenticationDatabase", None, "value"),
    ("authenticationMechanism", None, "value"), ("awsSessionToken", None, "value"),
    ("gssapiServiceName", None, "value"), ("gssapiHostName", None, "value"),
    ("db", "d", "value"), ("collection", "c", "value"),
    ("uri", None, "value"),
]
MONGODUMP = COMMON + [
    ("query", "q", "value"), ("queryFile", None, "value"), ("readPreference", None, "value"),
    ("forceTableScan", None, "bool"), ("internalOnlySourceWritesDoneBarrier", None, "value"),
    ("out", "o", "value"), ("gzip", None, "bool"), ("oplog", None, "bool"),
    ("archive", None, "optional"), ("dumpDbUsersAndRoles", None, "bool"),
    ("excludeCollection", None, "list"), ("excludeCollectionsWithPrefix", None, "list"),
    ("numParallelCollections", "j", "value"), ("viewsAsCollections", None, "bool"),
]
MONGORESTORE = COMMON + [
    ("excludeCollection", None, "list"), ("excludeCollectionsWithPrefix", None, "list"),
    ("nsExclude", None, "list"), ("nsInclude", None, "list"), ("nsFrom", None, "list"),
    ("nsTo", None, "list"),
    ("objcheck", None, "bool"), ("oplogReplay", None, "bool"), ("oplogLimit", None, "value"),
    ("oplogFile", None, "value"), ("archive", None, "optional"),
    ("restoreDbUsersAndRoles", None, "bool"), ("dir", None, "value"), ("gzip", None, "bool"),
    ("drop", None, "bool"), ("dryRun", None, "bool"), ("writeConcern", None, "value"),
    ("noIndexRestore", None, "bool"), ("convertLegacyIndexes", None, "bool"),
    ("noOptionsRestore", None, "bool"), ("keepIndexVersion", None, "bool"),
    ("maintainInsertionOrder", None, "bool"), ("numParallelCollections", "j", "value"),
    ("numInsertionWorkersPerCollection", None, "value"), ("stopOnError", None, "bool"),
    ("bypassDocumentValidation", None, "bool"), ("preserveUUID", None, "bool"),
    ("tempUsersColl", None, "value"), ("tempRolesColl", None, "value"), ("batchSize", None, "value"),
    ("fixDottedHashIndex", None, "bool"),
]


class Failure(Exception):
    pass


def parse_flags(spec, args):
    """go-flags as the tools configure it: `--long`, `--long=v`, `--long v`, `-s v`, `-sv`."""
    longs = {name: kind for name, _, kind in spec}
    shorts = {short: name for name, short, _ in spec if short}
    opts, positional = {}, []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional.extend(args[i:])
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
        elif arg.startswith("-") and len(arg) > 1:
            short, value = arg[1], arg[2:]
            eq = "=" if value else ""
            if short not in shorts:
                raise Failure(f'unknown option "{short}"')
            name = shorts[short]
        else:
            positional.append(arg)
            continue
        if name not in longs:
            if name in ("dbpath", "directoryperdb", "journal"):
                raise Failure("--dbpath and related flags are not supported in 3.0 tools.")
            raise Failure(f'unknown option "{name}"')
        kind = longs[name]
        if kind == "bool":
            if eq:
                raise Failure(f"bool flag `--{name}' cannot have an argument")
            opts[name] = True
        elif kind == "optional":
            opts[name] = value if eq else "-"
        else:
            if not eq:
                if i >= len(args):
                    raise Failure(f"expected argument for flag `--{name}'")
                value = args[i]
                i += 1
            if kind == "list":
                opts.setdefault(name, []).append(value)
            else:
                opts[name] = value
    return opts, positional


def read_config(path):
    """`ParseConfigFile`: YAML read strictly into {password, uri, sslPEMKeyPassword, destinationPassword}."""
    try:
        text = open(path).read()
    except OSError as e:
        raise Failure(f"error opening file with --config: {e}")
    config = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, colon, value = line.partition(":")
        value = value.strip()
        if not colon or key != key.strip():
            raise Failure(f"error parsing config file {path}: yaml: line {number}: not a mapping")
        if key not in ("password", "uri", "sslPEMKeyPassword", "destinationPassword"):
            raise Failure(
                f"error parsing config file {path}: yaml: unmarshal errors:\n  line {number}: field {key} not found in type struct")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        config[key] = value
    return config


def parse_uri(uri):
    """The parts of a `mongodb://` connection string the tools compare with their flags."""
    if not uri.startswith("mongodb://"):
        raise Failure('error parsing uri: scheme must be "mongodb" or "mongodb+srv"')
    rest = uri[len("mongodb://"):]
    hosts, _, tail = rest.partition("/")
    user = None
    if "@" in hosts:
        user, _, hosts = hosts.rpartition("@")
        user = user.split(":")[0]
    database, _, query = tail.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if p)
    return {"hosts": hosts.split(","), "user": user, "database": database, "params": params}


def options(tool, args):
    spec = MONGODUMP if tool == "mongodump" else MONGORESTORE
    opts, positional = parse_flags(spec, args)
    if "config" in opts:
        config = read_config(opts["config"])
        # Values on the command line win over the file's (the file is read, then the flags parsed again).
        for key, flag in (("password", "password"), ("uri", "uri")):
            if key in config and flag not in opts:
                opts[flag] = config[key]
    uris = [p for p in positional if p.startswith("mongodb://") or p.startswith("mongodb+srv://")]
    rest = [p for p in positional if p not in uris]
    if uris:
        if "uri" in opts:
            raise Failure("illegal argument combination: cannot specify --uri and a URI in a positional argument")
        opts["uri"] = uris[0]
    if tool == "mongodump" and rest:
        raise Failure("error parsing positional arguments: provide only one MongoDB connection string. "
                      "Connection strings must begin with mongodb:// or mongodb+srv:// schemes")
    if tool == "mongorestore":
        if len(rest) > 1:
            raise Failure("error parsing positional arguments: provide only one polling interval in seconds "
                          "and only one MongoDB connection string.")
        if rest and "dir" in opts:
            raise Failure("error parsing positional arguments: cannot use both --dir and a positional argument to set the target directory")
        opts["target"] = rest[0] if rest else opts.get("dir", "")
    uri = parse_uri(opts.get("uri", "mongodb://localhost:27017/"))
    # setOptionsFromURI: a flag and the URI saying different things is an error.
    for flag, value in (("username", uri["user"]), ("authenticationDatabase", uri["params"].get("authSource")),
                        ("authenticationMechanism", uri["params"].get("authMechanism"))):
        if flag in opts and value is not None and opts[flag] != value:
            raise Failure(f"Invalid Options: Cannot specify different {flag} in connection URI and command-line option")
        if flag not in opts and value is not None:
            opts[flag] = value
    # NormalizeOptionsAndURI: a username without a password asks for one on the terminal; a Job has none.
    if opts.get("username") and not opts.get("password") and \
            opts.get("authenticationMechanism") not in ("MONGODB-X509", "GSSAPI", "MONGODB-OIDC"):
        raise Failure("error reading password: a Job has no terminal (stdin is not a TTY)")
    opts["parsed_uri"] = uri
    return opts


def load_state():
    with open(os.environ["FAKE_MONGO_STATE"]) as f:
        return json.load(f)


def save_state(state):
    path = os.environ["FAKE_MONGO_STATE"]
    with open(path + ".new", "w") as f:
        json.dump(state, f, indent=1)
    os.replace(path + ".new", path)


def connect_and_auth(opts, state):
    """The members and the replica set the URI names, then the credentials; the signed-in user."""
    uri = opts["parsed_uri"]
    if uri["params"].get("replicaSet") != state["replicaSet"] or not set(uri["hosts"]) <= set(state["members"]):
        raise Failure(f"can't create session: server selection error: no member of {uri['hosts']} "
                      f"in replica set {uri['params'].get('replicaSet')}")
    user = opts.get("username")
    if not user:
        raise Failure("(Unauthorized) command requires authentication")
    source = opts.get("authenticationDatabase") or uri["database"] or "admin"
    mechanism = opts.get("authenticationMechanism", "SCRAM-SHA-256")
    if user == "__system" and source == "local":
        ok = mechanism in ("SCRAM-SHA-1", "SCRAM-SHA-256") and opts["password"] == state["keyfile"]
        roles = ["__system"]
    else:
        found = [u for u in state["collections"].get("admin.system.users", [])
                 if u["user"] == user and u["db"] == source]
        ok = bool(found) and found[0]["pwd"] == opts["password"]
        roles = found[0]["roles"] if found else []
    if not ok:
        raise Failure(f"can't create session: failed to connect: connection() error: auth error: "
                      f"sasl conversation error: unable to authenticate using mechanism \"{mechanism}\": "
                      f"(AuthenticationFailed) Authentication failed.")
    return roles


def mongodump(opts):
    state = load_state()
    connect_and_auth(opts, state)
    if opts.get("oplog") and (opts.get("db") or opts.get("collection")):
        raise Failure("--oplog mode only supported on full dumps")
    if opts.get("archive") in (None, "-"):
        raise Failure("this fake writes archives to a file only (--archive=PATH)")
    dump = {"collections": state["collections"]}
    payload = MAGIC + json.dumps(dump).encode()
    fail = state.get("failDump")
    if fail:
        # Part of the archive is written before the failure, as a dump cut short leaves it.
        with open(opts["archive"], "wb") as f:
            f.write(payload[: len(payload) // 2])
        raise Failure(fail)
    # Writes made while the dump runs: `--oplog` captures them, they are in the set afterwards either way.
    during = state.pop("writesDuringDump", [])
    for write in during:
        state["collections"].setdefault(write["ns"], []).append(write["doc"])
    if opts.get("oplog"):
        dump["oplog"] = during
        payload = MAGIC + json.dumps(dump).encode()
    if opts.get("gzip"):
        payload = gzip.compress(payload)
    with open(opts["archive"], "wb") as f:
        f.write(payload)
    save_state(state)
    print(f"done dumping {len(dump['collections'])} collections", file=sys.stderr)


def mongorestore(opts):
    state = load_state()
    roles = connect_and_auth(opts, state)
    if opts.get("oplogReplay") and (opts.get("nsExclude") or opts.get("excludeCollection")
                                    or opts.get("excludeCollectionsWithPrefix")):
        raise Failure("cannot use --oplogReplay with excludes specified")
    if opts.get("oplogReplay") and opts.get("nsInclude"):
        raise Failure("cannot use --oplogReplay with includes specified")
    if opts.get("archive") in (None, "-"):
        raise Failure("this fake reads archives from a file only (--archive=PATH)")
    if opts.get("target"):
        raise Failure("error parsing positional arguments: cannot use --archive with a target directory")
    with open(opts["archive"], "rb") as f:
        payload = f.read()
    if opts.get("gzip"):
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError) as e:
            raise Failure(f"gzip: {e}")
    if not payload.startswith(MAGIC):
        raise Failure("stream or file does not appear to be a mongodump archive")
    dump = json.loads(payload[len(MAGIC):])
    if opts.get("oplogReplay") and "oplog" not in dump:
        raise Failure("no oplog file to replay; make sure you run mongodump with --oplog")
    # Replaying the oplog takes anyAction on anyResource, which `root` lacks (Database Tools docs,
    # mongorestore, *Required Access*).
    if opts.get("oplogReplay") and "__system" not in roles:
        raise Failure("restore error: error applying oplog: (Unauthorized) not authorized on admin to execute command { applyOps: ... }")
    for ns, docs in dump["collections"].items():
        if opts.get("drop"):
            state["collections"][ns] = list(docs)
        else:
            # Without --drop a document whose _id is there already is a duplicate-key error, skipped.
            have = {json.dumps(d.get("_id")) for d in state["collections"].setdefault(ns, [])}
            state["collections"][ns].extend(d for d in docs if json.dumps(d.get("_id")) not in have)
    if opts.get("oplogReplay"):
        for write in dump["oplog"]:
            docs = state["collections"].setdefault(write["ns"], [])
            docs[:] = [d for d in docs if d.get("_id") != write["doc"].get("_id")] + [write["doc"]]
    save_state(state)
    print("done", file=sys.stderr)


def main():
    tool, args = sys.argv[1], sys.argv[2:]
    try:
        try:
            opts = options(tool, args)
        except Failure as e:
            print(f"error parsing command line options: {e}", file=sys.stderr)
            print(f"try '{tool} --help' for more information", file=sys.stderr)
            return 1
        with open(os.environ["FAKE_MONGO_STATE"] + ".calls", "a") as log:
            log.write(json.dumps([tool] + args) + "\n")
        (mongodump if tool == "mongodump" else mongorestore)(opts)
        return 0
    except Failure as e:
        print(f"Failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
