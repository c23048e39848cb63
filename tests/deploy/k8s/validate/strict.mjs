// Unknown-field check ("strict" validation, what the API server does with
// fieldValidation=Strict): the Kubernetes OpenAPI schemas allow any extra property, so a
// misspelt field (readinesProbe) passes the schema check and is silently dropped by the server.
// The property lists come from the same kubernetes-models packages as the schemas, through their
// TypeScript declarations (one interface per schema definition, CRDs as nested object types).
import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";

// ---- a tokenizer and parser for the subset of TypeScript declarations the packages use ----

function tokenize(text) {
  const src = text.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ");
  const re = /\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[A-Za-z_$][\w$]*|-?\d+(?:\.\d+)?|\S)/gy;
  const out = [];
  let m;
  while ((m = re.exec(src)) !== null) out.push(m[1]);
  return out;
}

class Parser {
  constructor(tokens) {
    this.t = tokens;
    this.i = 0;
  }
  peek(k = 0) {
    return this.t[this.i + k];
  }
  next() {
    return this.t[this.i++];
  }
  expect(tok) {
    const got = this.next();
    if (got !== tok) throw new Error(`expected ${tok}, got ${got} at token ${this.i}`);
  }
  // union := postfix ('|' postfix)* ; leading '|' allowed
  union() {
    if (this.peek() === "|") this.next();
    const options = [this.postfix()];
    while (this.peek() === "|") {
      this.next();
      options.push(this.postfix());
    }
    return options.length === 1 ? options[0] : { kind: "union", options };
  }
  postfix() {
    let t = this.primary();
    while (this.peek() === "[" && this.peek(1) === "]") {
      this.i += 2;
      t = { kind: "array", item: t };
    }
    return t;
  }
  primary() {
    const tok = this.next();
    if (tok === "{") return this.members();
    if (tok === "(") {
      const t = this.union();
      this.expect(")");
      return t;
    }
    if (tok === "Array" && this.peek() === "<") {
      this.next();
      const item = this.union();
      this.expect(">");
      return { kind: "array", item };
    }
    if (/^["'\d-]/.test(tok)) return { kind: "prim" };
    if (["string", "number", "boolean", "null", "undefined", "true", "false"].includes(tok)) {
      return { kind: "prim" };
    }
    if (tok === "any" || tok === "unknown" || tok === "object") return { kind: "any" };
    if (/^[A-Za-z_$]/.test(tok)) {
      if (this.peek() === "<") {  // a generic other than Array: not followed
        let depth = 0;
        do {
          const x = this.next();
          if (x === "<") ++depth;
          if (x === ">") --depth;
        } while (depth > 0);
        return { kind: "any" };
      }
      return { kind: "ref", name: tok };
    }
    throw new Error(`unexpected ${tok} at token ${this.i}`);
  }
  // after '{': members until '}'
  members() {
    const props = {};
    let index = null;
    while (this.peek() !== "}") {
      if (this.peek() === "[") {  // [key: string]: T;
        while (this.next() !== "]");
        this.expect(":");
        index = this.union();
      } else {
        let name = this.next();
        if (/^["']/.test(name)) name = JSON.parse(name.replace(/^'|'$/g, '"'));
        if (this.peek() === "?") this.next();
        this.expect(":");
        props[name] = this.union();
      }
      if (this.peek() === ";" || this.peek() === ",") this.next();
    }
    this.expect("}");
    return { kind: "object", props, index };
  }
}

// One .d.ts file: its imports, declarations and export aliases.
function parseModule(file) {
  const p = new Parser(tokenize(readFileSync(file, "utf8")));
  const imports = {};
  const decls = {};
  const aliases = {};
  while (p.peek() !== undefined) {
    const tok = p.next();
    if (tok === "import" && p.peek() === "{") {
      p.next();
      const names = [];
      while (p.peek() !== "}") {
        const name = p.next();
        let local = name;
        if (p.peek() === "as") {
          p.next();
          local = p.next();
        }
        names.push([name, local]);
        if (p.peek() === ",") p.next();
      }
      p.next();
      p.expect("from");
      const from = JSON.parse(p.next().replace(/^'|'$/g, '"'));
      for (const [name, local] of names) imports[local] = { from, name };
    } else if (tok === "interface") {
      const name = p.next();
      while (p.peek() !== "{") p.next();  // extends ...
      p.next();
      decls[name] = p.members();
    } else if (tok === "type" && /^[A-Za-z_$]/.test(p.peek() ?? "") && p.peek(1) === "=") {
      const name = p.next();
      p.next();
      decls[name] = p.union();
    } else if (tok === "class") {
      while (p.peek() !== "{") p.next();
      let depth = 0;
      do {
        const x = p.next();
        if (x === "{") ++depth;
        if (x === "}") --depth;
      } while (depth > 0);
    } else if (tok === "export" && p.peek() === "{") {
      p.next();
      while (p.peek() !== "}") {
        const name = p.next();
        let exported = name;
        if (p.peek() === "as") {
          p.next();
          exported = p.next();
        }
        aliases[exported] = name;
        if (p.peek() === ",") p.next();
      }
      p.next();
    }
  }
  return { file, imports, decls, aliases };
}

export class StrictChecker {
  // nodeModules: the node_modules directory holding kubernetes-models and its kin.
  constructor(nodeModules) {
    this.nodeModules = nodeModules;
    this.modules = new Map();
  }

  module(file) {
    if (!this.modules.has(file)) this.modules.set(file, parseModule(file));
    return this.modules.get(file);
  }

  resolveFile(from, spec) {
    const base = spec.startsWith(".") ? join(dirname(from), spec) : join(this.nodeModules, spec);
    for (const f of [`${base}.d.ts`, join(base, "index.d.ts")]) if (existsSync(f)) return f;
    return null;
  }

  // The type a name denotes inside a module, or null when it cannot be found (not checked then).
  lookup(mod, name, depth = 0) {
    if (depth > 8) return null;
    const local = mod.aliases[name] ?? name;
    if (mod.decls[local]) return { type: mod.decls[local], mod };
    const imp = mod.imports[local];
    if (!imp) return null;
    const file = this.resolveFile(mod.file, imp.from);
    return file ? this.lookup(this.module(file), imp.name, depth + 1) : null;
  }

  // Unknown properties of obj, the model file's interface I<kind> being its type.
  check(modelFile, kind, obj) {
    const mod = this.module(modelFile);
    const root = this.lookup(mod, `I${kind}`);
    if (root === null) return [`no declaration of I${kind} in ${modelFile}`];
    const errors = [];
    this.walk(obj, root.type, root.mod, "", errors, 0);
    return errors;
  }

  walk(value, type, mod, path, errors, depth) {
    if (value === null || typeof value !== "object" || depth > 64) return;
    if (type.kind === "ref") {
      const r = this.lookup(mod, type.name);
      if (r !== null) this.walk(value, r.type, r.mod, path, errors, depth + 1);
      return;
    }
    if (type.kind === "union") {
      // Only where the choice is unambiguous: one object (or one array) member.
      const want = Array.isArray(value) ? "array" : "object";
      const fits = type.options.filter((o) => o.kind === want || o.kind === "ref");
      if (fits.length === 1) this.walk(value, fits[0], mod, path, errors, depth + 1);
      return;
    }
    if (type.kind === "array") {
      if (Array.isArray(value)) {
        value.forEach((v, i) => this.walk(v, type.item, mod, `${path}/${i}`, errors, depth + 1));
      }
      return;
    }
    if (type.kind === "object" && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) {
        const t = type.props[k] ?? type.index;
        if (t === undefined || t === null) {
          errors.push(`${path || "/"} has unknown field "${k}"`);
          continue;
        }
        this.walk(v, t, mod, `${path}/${k}`, errors, depth + 1);
      }
    }
  }
}
