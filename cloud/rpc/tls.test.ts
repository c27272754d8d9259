import { describe, expect, it } from "vitest";

import { isLocalOnlyListen } from "./tls.js";

describe("isLocalOnlyListen", () => {
  it("takes loopback addresses, localhost and Unix sockets as local", () => {
    for (const a of [
      "127.0.0.1:50051",
      "127.3.4.5:1",
      "localhost:50051",
      "[::1]:50051",
      "unix:/tmp/b.sock",
    ]) {
      expect(isLocalOnlyListen(a), a).toBe(true);
    }
  });

  it("takes every other address, wildcards included, as reachable from elsewhere", () => {
    for (const a of ["0.0.0.0:50051", "[::]:50051", "10.0.0.5:50051", "broker.example.org:50051", ":50051"]) {
      expect(isLocalOnlyListen(a), a).toBe(false);
    }
  });
});
