import { randomBytes } from "node:crypto";

import type * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";

import { FabricError } from "../../common/index.js";
import {
  EndpointServiceService,
  FunctionServiceService,
  SessionRequest,
  ShareFunctionRequest,
  SubmitTasksRequest,
  TaskServiceService,
} from "../../proto/index.js";
import { resolveBrokerConfig } from "../config.js";
import { requestGuards } from "./request-shapes.js";
import { tolerantService } from "./rpc.js";
import { checkWire, peekVarint } from "./wire-guard.js";

const guards = requestGuards(resolveBrokerConfig({ auth: { keyFile: "/nonexistent/key.pem" } }));
const id = "0b0f8a52-8a57-4a8e-9c4c-6d1f0e6f2a10";
const submit: SubmitTasksRequest = {
  tasks: [
    {
      functionId: id,
      endpointId: id,
      argsJson: Buffer.from("[1]"),
      kwargsJson: Buffer.from("{}"),
      timeoutS: 5,
    },
    { functionId: id, endpointId: id, argsJson: Buffer.alloc(0), kwargsJson: Buffer.alloc(0) },
  ],
  groupId: id,
  idempotencyKey: "k-ü",
  noGroup: false,
};

function code(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(FabricError);
    return (err as FabricError).code;
  }
}

describe("checkWire", () => {
  it("has a guard for every method of the API", () => {
    const services: grpc.ServiceDefinition[] = [
      FunctionServiceService,
      EndpointServiceService,
      TaskServiceService,
    ];
    const methods = services.flatMap((service) => {
      tolerantService(service, guards);
      return Object.values(service).map(({ path }) => path.slice(path.lastIndexOf("/") + 1));
    });
    expect(Object.keys(guards).sort()).toEqual(methods.sort());
  });

  it("passes what our own encoders write", () => {
    checkWire(SubmitTasksRequest.encode(submit).finish(), guards["SubmitTasks"]!.shape, "SubmitTasks");
    const session = SessionRequest.encode({ ref: 7, op: { $case: "submit", value: submit } }).finish();
    checkWire(session, guards["Session"]!.shape, "Session");
    expect(peekVarint(session, 1)).toBe(7);
  });

  it("names the field that breaks a rule", () => {
    const share = (n: number, name = "bob") =>
      ShareFunctionRequest.encode({
        functionId: id,
        public: false,
        sharedWith: Array<string>(n).fill(name),
      }).finish();
    const shape = guards["ShareFunction"]!.shape;
    checkWire(share(1000), shape, "ShareFunction");
    expect(() => checkWire(share(1001), shape, "ShareFunction")).toThrow(
      "ShareFunction request: shared_with has more than 1,000 entries",
    );
    expect(() => checkWire(share(1, "x".repeat(1025)), shape, "ShareFunction")).toThrow(
      "malformed ShareFunction request: shared_with[0] is 1,025 bytes; at most 1,024 are allowed",
    );
    // The same singular field twice, a group wire type, a length past the end.
    expect(() => checkWire(Buffer.from([0x0a, 0x01, 0x61, 0x0a, 0x01, 0x61]), shape, "X")).toThrow(
      "malformed X request: function_id is given more than once",
    );
    expect(() => checkWire(Buffer.from([0x0b]), shape, "X")).toThrow(/has wire type 3/);
    expect(() => checkWire(Buffer.from([0x0a, 0x05, 0x61]), shape, "X")).toThrow(/runs past the end/);
    expect(() => checkWire(Buffer.from([0x12, 0x00]), shape, "X")).toThrow(
      "malformed X request: public must be a number",
    );
  });

  it("whatever it lets through decodes, on random and mutated bytes", () => {
    const valid = SubmitTasksRequest.encode(submit).finish();
    const shape = guards["SubmitTasks"]!.shape;
    let passed = 0;
    for (let i = 0; i < 5000; i++) {
      const b = i % 2 ? randomBytes(i % 64) : Buffer.from(valid);
      if (i % 2 === 0)
        for (let k = 0; k < 1 + (i % 3); k++) b[(i * 7 + k * 13) % b.length] = (i * 31 + k) % 256;
      const c = code(() => checkWire(b, shape, "SubmitTasks"));
      if (c === undefined) {
        passed++;
        SubmitTasksRequest.decode(b);
      } else expect(["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"]).toContain(c);
    }
    expect(passed).toBeGreaterThan(0);
  });
});
