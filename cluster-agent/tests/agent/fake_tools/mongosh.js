// A stand-in for `mongosh` for the backup Job tests: its command line parsed as mongosh parses it, the
// `--eval` JavaScript run for real (node) against the fake server of `mongo_tools.py` (`$FAKE_MONGO_STATE`).
//
// Sources: mongodb-js/mongosh packages/arg-parser/src/arg-parser.ts (yargs-parser with
// `unknown-options-as-args`; a positional argument starting with `-` is "Unknown argument", an error;
// the first other positional argument is the connection string); mongosh's `db.auth` throws on wrong
// credentials ("Authentication failed."), an uncaught error ends mongosh with status 1; user management
// (`getUser`, `changeUserPassword`, `createUser`) needs a signed-in user allowed to administer users
// (MongoDB manual, db.changeUserPassword(): `changePassword` action; `root` and the internal `__system`
// have it).
"use strict";
const fs = require("fs");

const STRING = new Set(["apiVersion", "authenticationDatabase", "authenticationMechanism", "awsAccessKeyId",
  "awsIamSessionToken", "awsSecretAccessKey", "awsSessionToken", "browser", "csfleLibraryPath",
  "cryptSharedLibPath", "db", "gssapiHostName", "gssapiServiceName", "sspiHostnameCanonicalization",
  "sspiRealmOverride", "jsContext", "host", "keyVaultNamespace", "kmsURL", "locale", "oidcFlows",
  "oidcRedirectUri", "password", "port", "sslPEMKeyFile", "sslPEMKeyPassword", "sslCAFile",
  "sslCertificateSelector", "sslCRLFile", "sslDisabledProtocols", "tlsCAFile", "tlsCertificateKeyFile",
  "tlsCertificateKeyFilePassword", "tlsCertificateSelector", "tlsCRLFile", "tlsDisabledProtocols", "username"]);
const BOOLEAN = new Set(["apiDeprecationErrors", "apiStrict", "buildInfo", "exposeAsyncRewriter", "help", "ipv6",
  "nodb", "norc", "oidcTrustedEndpoint", "oidcIdTokenAsAccessToken", "oidcNoNonce", "perfTests", "quiet",
  "retryWrites", "shell", "smokeTests", "skipStartupWarnings", "ssl", "sslAllowInvalidCertificates",
  "sslAllowInvalidHostnames", "sslFIPSMode", "tls", "tlsAllowInvalidCertificates", "tlsAllowInvalidHostnames",
  "tlsFIPSMode", "tlsUseSystemCA", "verbose", "version"]);
const ARRAY = new Set(["eval", "file"]);
const ALIAS = { h: "help", p: "password", u: "username", f: "file" };

function fail(message) {
  process.stderr.write(message + "\n");
  process.exit(1);
}

const opts = { eval: [], file: [] };
const positional = [];
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  if (!arg.startsWith("-") || arg === "-") { positional.push(arg); continue; }
  let [name, value] = arg.replace(/^--?/, "").split(/=(.*)/s);
  name = ALIAS[name] || name;
  if (BOOLEAN.has(name)) { opts[name] = value === undefined ? true : value !== "false"; continue; }
  if (STRING.has(name) || ARRAY.has(name)) {
    if (value === undefined) {
      if (i + 1 >= args.length) fail(`Error parsing command line: no value for --${name}`);
      value = args[++i];
    }
    if (ARRAY.has(name)) opts[name].push(value); else opts[name] = value;
    continue;
  }
  positional.push(arg); // unknown-options-as-args
}
for (const arg of positional) if (arg.startsWith("-")) fail(`MongoshInvalidInputError: Unknown argument: ${arg}`);
if (["sslFIPSMode", "gssapiHostName"].some((a) => a in opts)) fail("Argument is not supported in mongosh");
const uri = positional.shift() || "mongodb://127.0.0.1:27017/test";
if (positional.length) fail(`this fake runs --eval only, not files: ${positional}`);

const statePath = process.env.FAKE_MONGO_STATE;
const state = JSON.parse(fs.readFileSync(statePath, "utf8"));
fs.appendFileSync(statePath + ".calls", JSON.stringify(["mongosh", ...args]) + "\n");
const save = () => fs.writeFileSync(statePath, JSON.stringify(state, null, 1));

function parseUri(text) {
  const m = /^mongodb:\/\/([^/?]+)\/?([^?]*)\??(.*)$/.exec(text);
  if (!m) throw new Error(`MongoParseError: Invalid scheme, expected connection string to start with "mongodb://"`);
  const params = Object.fromEntries(m[3].split("&").filter(Boolean).map((p) => p.split("=")));
  const hosts = m[1].split(",");
  if (params.replicaSet !== state.replicaSet || !hosts.every((h) => state.members.includes(h))) {
    throw new Error(`MongoServerSelectionError: no member of ${hosts} in replica set ${params.replicaSet}`);
  }
  return { database: m[2] || "test" };
}

const users = () => (state.collections["admin.system.users"] = state.collections["admin.system.users"] || []);

class Connection {
  constructor(text) { this.uri = parseUri(text); this.roles = null; }
}

class Database {
  constructor(connection, name) { this.connection = connection; this.name = name; }
  getSiblingDB(name) { return new Database(this.connection, name); }
  auth(user, pwd) {
    let mechanism;
    if (typeof user === "object") ({ user, pwd, mechanism } = user);
    let ok = false, roles = [];
    if (user === "__system" && this.name === "local") {
      ok = pwd === state.keyfile && [undefined, "SCRAM-SHA-1", "SCRAM-SHA-256"].includes(mechanism);
      roles = ["__system"];
    } else {
      const found = users().find((u) => u.user === user && u.db === this.name);
      ok = !!found && found.pwd === pwd;
      roles = found ? found.roles.map((r) => r.role || r) : [];
    }
    if (!ok) throw new Error("MongoServerError: Authentication failed.");
    this.connection.roles = roles;
    return { ok: 1 };
  }
  requireUserAdmin(what) {
    const roles = this.connection.roles || [];
    if (!roles.some((r) => ["root", "__system", "userAdminAnyDatabase"].includes(r))) {
      throw new Error(`MongoServerError: not authorized on ${this.name} to execute command { ${what} }`);
    }
  }
  getUser(name) {
    this.requireUserAdmin("usersInfo");
    const found = users().find((u) => u.user === name && u.db === this.name);
    return found ? { _id: `${this.name}.${name}`, user: name, db: this.name, roles: found.roles } : null;
  }
  changeUserPassword(name, pwd) {
    this.requireUserAdmin("updateUser");
    const found = users().find((u) => u.user === name && u.db === this.name);
    if (!found) throw new Error(`MongoServerError: User ${name}@${this.name} not found`);
    found.pwd = pwd;
    save();
  }
  createUser(doc) {
    this.requireUserAdmin("createUser");
    if (users().some((u) => u.user === doc.user && u.db === this.name)) {
      throw new Error(`MongoServerError: User "${doc.user}@${this.name}" already exists`);
    }
    users().push({ _id: `${this.name}.${doc.user}`, user: doc.user, db: this.name, pwd: doc.pwd, roles: doc.roles });
    save();
  }
}

class Mongo {
  constructor(text) { this.connection = new Connection(text); }
  getDB(name) { return new Database(this.connection, name); }
}

try {
  const connection = new Connection(uri);
  const db = new Database(connection, connection.uri.database);
  for (const script of opts.eval) new Function("db", "Mongo", "process", script)(db, Mongo, process);
} catch (e) {
  fail(String(e && e.message ? e.message : e));
}
