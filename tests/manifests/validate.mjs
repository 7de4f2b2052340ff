// Checks Kubernetes objects against the schemas of their kinds; run by tests/manifests.rs.
//
//   node tests/manifests/validate.mjs < objects.json
//
// Input: a JSON array of {"at": "<where the object comes from>", "doc": <the object>}.
// Output: a JSON array, one entry per input in order:
//   {"at", "kind", "schema": "<package>/<schema module>" | null, "uncovered": "<why no schema>"?,
//    "errors": ["<path>: <message>", ...]}
//
// The schemas are the CRD schemas (Istio) and the OpenAPI definitions (Kubernetes, Gateway API)
// as the npm packages pinned in package.json compile them (README.md in this folder). Two checks:
//
// 1. The schema itself: types, enums, patterns, required fields, limits.
// 2. Fields the schema does not know. A CRD schema without `additionalProperties` lets unknown
//    fields through, and the API server then prunes them silently: `failStratgy: FAIL_CLOSE` would
//    be accepted and dropped, leaving the default. So every object is also checked for fields
//    its schema never names. How, without a second copy of the schema: the compiled validator
//    reads each property its schema names (present or not) and enumerates the keys of a map
//    (`additionalProperties`); every object is handed to it behind a Proxy that records both.
//    A key of an object that the validator neither read nor enumerated is unknown. An object of
//    which the validator read nothing at all is one whose schema says nothing about its fields
//    (`x-kubernetes-preserve-unknown-fields: true`, such as WasmPlugin pluginConfig): its fields
//    are kept by the API server and are not checked here.

import { readFileSync, existsSync } from "node:fs";

const here = new URL(".", import.meta.url);

// Kinds we ship for which no schema is checked, and why (README.md in this folder). Every other
// kind without a schema is an error.
const UNCOVERED = {
  "install.istio.io/v1alpha1 IstioOperator": "read by istioctl, not the API server; its CRD leaves spec free-form (istioctl checks it: `istioctl install --dry-run -f`)",
};

/** The schema module of an apiVersion and kind, as [package, module name], or null. */
function schemaFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string") return null;
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);
  if (group.endsWith(".istio.io")) {
    return ["@kubernetes-models/istio", group.split(".").map(cap).join("") + cap(version) + kind];
  }
  if (group === "monitoring.coreos.com") {
    return [
      "@kubernetes-models/prometheus-operator",
      "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoring" + cap(version) + kind,
    ];
  }
  if (group === "gateway.envoyproxy.io") {
    return ["@kubernetes-models/envoy-gateway", "ComGithubEnvoyproxyGatewayApi" + cap(version) + kind];
  }
  if (group === "gateway.networking.k8s.io") {
    return ["@kubernetes-models/gateway-api", "IoK8sSigsGatewayApiApis" + cap(version) + kind];
  }
  if (group === "" || group.endsWith(".k8s.io") || !group.includes(".")) {
    const name = group === "" ? "Core" : cap(group.split(".")[0]);
    return ["kubernetes-models", "IoK8sApi" + name + cap(version) + kind];
  }
  return null;
}

async function loadValidator(pkg, name) {
  const file = new URL(`node_modules/${pkg}/_schemas/${name}.js`, here);
  if (!existsSync(file)) return null;
  const module = await import(file.href);
  return module.validate;
}

/** `value` behind Proxies that record, per object, the keys the validator reads or lists. */
function tracked(value, path, records) {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) {
    return value.map((item, i) => tracked(item, `${path}/${i}`, records));
  }
  const record = { path, keys: Object.keys(value), read: new Set(), listed: false };
  records.push(record);
  const inner = {};
  for (const [key, item] of Object.entries(value)) {
    inner[key] = tracked(item, `${path}/${pointer(key)}`, records);
  }
  return new Proxy(inner, {
    get(target, key, receiver) {
      if (typeof key === "string") record.read.add(key);
      return Reflect.get(target, key, receiver);
    },
    has(target, key) {
      if (typeof key === "string") record.read.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      record.listed = true;
      return Reflect.ownKeys(target);
    },
  });
}

/** A key as a JSON Pointer segment. */
function pointer(key) {
  return key.replaceAll("~", "~0").replaceAll("/", "~1");
}

/** An error of the compiled validator in words (it is compiled without ajv's messages). */
function message({ keyword, params = {} }) {
  switch (keyword) {
    case "enum":
      return `not one of the allowed values ${JSON.stringify(params.allowedValues)}`;
    case "type":
      return `must be ${params.type}`;
    case "required":
      return `must have the field ${params.missingProperty}`;
    case "additionalProperties":
      return `unknown field ${params.additionalProperty}`;
    case "pattern":
      return `must match the pattern ${params.pattern}`;
    case "format":
      return `must be a ${params.format}`;
    default: {
      const limit = params.limit === undefined ? "" : ` ${params.limit}`;
      return `${keyword}${limit} ${JSON.stringify(params)}`;
    }
  }
}

async function check({ at, doc }) {
  const kind = `${doc?.apiVersion} ${doc?.kind}`;
  if (Object.hasOwn(UNCOVERED, kind)) {
    return { at, kind, schema: null, uncovered: UNCOVERED[kind], errors: [] };
  }
  const found = schemaFor(doc?.apiVersion, doc?.kind);
  const validate = found && (await loadValidator(...found));
  if (!validate) {
    return { at, kind, schema: null, errors: [`no schema for ${kind} (tests/manifests/README.md: adding a kind)`] };
  }
  const records = [];
  const ok = validate(tracked(doc, "", records));
  const errors = [];
  for (const e of ok ? [] : validate.errors ?? []) {
    errors.push(`${e.instancePath || "/"}: ${message(e)}`);
  }
  for (const record of records) {
    if (record.listed || record.read.size === 0) continue;
    for (const key of record.keys) {
      if (!record.read.has(key)) {
        errors.push(`${record.path}/${pointer(key)}: unknown field (the schema has no such field; the API server would drop it)`);
      }
    }
  }
  return { at, kind, schema: `${found[0]}/${found[1]}`, errors: [...new Set(errors)] };
}

const input = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const item of input) results.push(await check(item));
process.stdout.write(JSON.stringify(results));
