// Validates multi-document Kubernetes YAML (e.g. `kubectl kustomize` output) against the
// Kubernetes OpenAPI schemas and the Prometheus Operator CRD schemas that ship with the
// kubernetes-models packages (ajv, compiled from the upstream OpenAPI documents and CRDs), and
// rejects unknown fields as the API server's strict field validation does (strict.mjs).
// Exit 0: every object valid; 1: some invalid (each error printed with its object); 2: usage or
// unreadable input.
//   node validate.mjs FILE...   ("-" reads stdin)
// The packages (package-lock.json) are looked up in $SPARSEFILL_K8S_VALIDATE_DEPS/node_modules
// (tools/bootstrap installs them in .deps/k8s-validate), else beside this file.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { StrictChecker } from "./strict.mjs";

const depsDir = resolve(
  process.env.SPARSEFILL_K8S_VALIDATE_DEPS || dirname(fileURLToPath(import.meta.url)));
const require = createRequire(join(depsDir, "package.json"));
let parseAllDocuments;
try {
  ({ parseAllDocuments } = require("yaml"));
  require.resolve("kubernetes-models/package.json");
} catch {
  console.error(`validate.mjs: the validator's npm packages are not in ${depsDir}/node_modules ` +
                "(tools/bootstrap installs them in .deps/k8s-validate; set " +
                "SPARSEFILL_K8S_VALIDATE_DEPS to that directory)");
  process.exit(2);
}
const strict = new StrictChecker(join(depsDir, "node_modules"));

// apiVersion -> module of its models. Objects of any other API group are an error rather than
// silently unchecked: a manifest the validator cannot read has not been validated.
function modelModule(apiVersion) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  }
  return `kubernetes-models/${apiVersion}`;
}

function loadModel(apiVersion, kind) {
  let mod;
  try {
    mod = require(modelModule(apiVersion));
  } catch {
    return null;
  }
  const model = mod[kind];
  return typeof model === "function" && model.kind === kind ? model : null;
}

// The TypeScript declaration of the model, for the unknown-field check.
function modelDeclaration(apiVersion, kind) {
  return join(depsDir, "node_modules", modelModule(apiVersion), `${kind}.d.ts`);
}

function describe(obj) {
  const name = obj?.metadata?.name ?? "(no name)";
  return `${obj?.kind ?? "(no kind)"}/${name}`;
}

function validateObject(obj) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    return ["document is not a mapping"];
  }
  if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
    return ["apiVersion and kind must be strings"];
  }
  const Model = loadModel(obj.apiVersion, obj.kind);
  if (Model === null) return [`no schema for ${obj.apiVersion} ${obj.kind}`];
  let errors = [];
  try {
    new Model(obj).validate();
  } catch (e) {
    errors = Array.isArray(e.errors)
      ? e.errors.map((x) => `${x.instancePath || "/"} ${x.message}` +
          (x.params?.allowedValues ? ` (${x.params.allowedValues.join(", ")})` : ""))
      : [String(e.message ?? e)];
  }
  try {
    errors.push(...strict.check(modelDeclaration(obj.apiVersion, obj.kind), obj.kind, obj));
  } catch (e) {
    errors.push(`cannot read the declaration of ${obj.kind}: ${e.message}`);
  }
  return errors;
}

// Errors of one file's objects: [{object, error}]; objects counted in stats.
function validateFile(file, stats) {
  const text = readFileSync(file === "-" ? 0 : file, "utf8");
  const found = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) {
      found.push({ object: "(document)", error: `YAML error: ${doc.errors[0].message}` });
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;  // an empty document between ---
    ++stats.objects;
    const errors = validateObject(obj);
    if (errors.length > 0) ++stats.invalid;
    for (const error of errors) found.push({ object: describe(obj), error });
  }
  return found;
}

function main(argv) {
  // --json: each file on its own, one JSON object {file: [errors]} on stdout, exit 0 whatever
  // the files hold (the deployment test checks many broken copies in one run).
  const json = argv[0] === "--json";
  const files = json ? argv.slice(1) : argv;
  if (files.length === 0) {
    console.error("usage: node validate.mjs [--json] FILE... (- for stdin)");
    return 2;
  }
  const stats = { objects: 0, invalid: 0 };
  const report = {};
  for (const file of files) {
    const before = stats.objects;
    try {
      report[file] = validateFile(file, stats);
    } catch (e) {
      console.error(`${file}: cannot read: ${e.message}`);
      return 2;
    }
    if (stats.objects === before) report[file].push({ object: "(file)", error: "no objects" });
  }
  if (json) {
    console.log(JSON.stringify(report));
    return 0;
  }
  let bad = 0;
  for (const [file, errors] of Object.entries(report)) {
    for (const { object, error } of errors) console.error(`${file}: ${object}: ${error}`);
    bad += errors.length;
  }
  console.log(`${stats.objects} objects, ${stats.invalid} invalid`);
  return bad === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
