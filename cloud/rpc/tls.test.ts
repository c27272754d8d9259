import { describe, expect, it } from "vitest";

import { isLocalOnlyListen } from "./tls.js";

describe("isLocalOnlyListen", () => {
  it.each([
    ["127.0.0.1:50051", true],
    ["127.3.4.5:1", true],
    ["localhost:50051", true],
    ["[::1]:50051", true],
    ["unix:/tmp/b.sock", true],
    // Wildcards listen on every interface: reachable from elsewhere.
    ["0.0.0.0:50051", false],
    ["[::]:50051", false],
    [":50051", false],
    ["10.0.0.5:50051", false],
    ["broker.example.org:50051", false],
  ])("%s is local only: %s", (listen, local) => {
    expect(isLocalOnlyListen(listen)).toBe(local);
  });
});
