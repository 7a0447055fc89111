// Checks the SSE parser (src/sse.ts) on a stream fed in chunks of every size,
// so lines and CRLF pairs split across reads are covered. Run: npm test
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import ts from "typescript";

// Node 20 cannot run TypeScript: strip the types and stub the API import.
const source = fs
  .readFileSync(new URL("../src/sse.ts", import.meta.url), "utf8")
  .replace(/^import .* from "\.\/api";$/m, "const authHeaders = () => ({}); const unauthorized = () => {};");
const js = ts.transpileModule(source, {
  compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
}).outputText;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sluice-ui-test-"));
fs.writeFileSync(path.join(dir, "sse.mjs"), js);
const { SseParser } = await import(path.join(dir, "sse.mjs"));
fs.rmSync(dir, { recursive: true, force: true });

const STREAM =
  "id: 1\r\nevent: rollup\r\ndata: {\"a\":1}\r\n\r\n" + // CRLF line ends
  ": heartbeat\n\n" + // a comment dispatches nothing
  "id: 2\revent: app_event\rdata: line1\rdata: line2\r\r" + // CR line ends, multi-line data
  "data: noevent\n\n" + // no event name: "message", id carries over
  "event: reset\n\n" + // a named event without data
  "retry: 500\nid\n\n"; // retry hint; an empty id clears the last id

const EXPECTED = [
  { event: "rollup", data: '{"a":1}', id: "1" },
  { event: "app_event", data: "line1\nline2", id: "2" },
  { event: "message", data: "noevent", id: "2" },
  { event: "reset", data: "", id: "2" },
];

for (const size of [1, 2, 3, 5, 7, STREAM.length]) {
  test(`parses the stream fed in chunks of ${size}`, () => {
    const p = new SseParser();
    const got = [];
    for (let i = 0; i < STREAM.length; i += size) got.push(...p.push(STREAM.slice(i, i + size)));
    assert.deepEqual(got, EXPECTED);
    assert.equal(p.retryMs, 500);
    assert.equal(p.lastId, "");
  });
}
