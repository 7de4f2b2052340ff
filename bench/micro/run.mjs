// Runs a wasm32-wasip1 program (a micro-benchmark) in Node's V8, the engine Envoy uses.
// Usage: node bench/micro/run.mjs target/wasm32-wasip1/release/examples/NAME.wasm [args...]
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv, exit } from "node:process";

const [path, ...args] = argv.slice(2);
if (!path) {
  console.error("usage: node run.mjs PROGRAM.wasm [args...]");
  exit(2);
}
const wasi = new WASI({ version: "preview1", args: [path, ...args], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(path));
// The library's proxy-wasm adapter imports host functions from "env"; a micro-benchmark never
// calls them, so they are stubs that fail loudly if it does.
const imports = wasi.getImportObject();
imports.env = {};
for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
  if (from === "env" && kind === "function") {
    imports.env[name] = () => {
      throw new Error(`host function ${name} called outside Envoy`);
    };
  }
}
const instance = await WebAssembly.instantiate(module, imports);
// The library also exports proxy-wasm's `_initialize`, which WASI's start refuses beside `_start`.
const { _start, memory } = instance.exports;
exit(wasi.start({ exports: { _start, memory } }));
