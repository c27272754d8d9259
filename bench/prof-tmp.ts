import { BenchStack } from "./stack.js";
const stack = await BenchStack.start({ workers: 2 });
const { client, endpointId } = stack;
const fid = await client.registerFunction(function noop() {
  return null;
});
const n = 20000;
const t0 = performance.now();
const { groupId } = await client.submitBatch(
  Array.from({ length: n }, () => ({ functionId: fid, endpointId, args: [] })),
);
const t1 = performance.now();
let k = 0;
for await (const o of client.results({ groupId }, { timeoutMs: 600_000 })) {
  if (o.ok) k++;
}
console.log(
  "submit ms",
  (t1 - t0).toFixed(0),
  "done",
  k,
  "in",
  ((performance.now() - t0) / 1000).toFixed(1),
  "s; after submit",
  ((performance.now() - t1) / 1000).toFixed(1),
);
await stack.stop();
