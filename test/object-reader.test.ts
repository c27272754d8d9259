import { randomBytes } from "node:crypto";

import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { Objm, type ObjectStore } from "@nats-io/obj";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { NatsServer } from "../devkit/index.js";
import { metaSubject, ObjectReader } from "../endpoint/internal.js";

describe("ObjectReader (message gets on a real nats-server)", () => {
  let server: NatsServer;
  let nc: NatsConnection;
  let store: ObjectStore;
  const bucket = "reader_test";

  beforeAll(async () => {
    server = await NatsServer.start();
    nc = await connect({ servers: server.url });
    store = await new Objm(jetstream(nc)).create(bucket, { storage: StorageType.Memory });
  });

  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  it("reads back what the object-store client wrote: empty, one chunk, many chunks, 10 MiB", async () => {
    const reader = new ObjectReader(nc, bucket);
    for (const size of [0, 1, 1000, 128 * 1024, 128 * 1024 + 1, 3_000_000, 10 * 1024 * 1024 - 7]) {
      const bytes = randomBytes(size);
      const name = `obj-${size}.args`;
      await store.putBlob({ name }, bytes);
      const got = await reader.read(name);
      expect(got && Buffer.from(got).equals(bytes), `size ${size}`).toBe(true);
    }
  });

  it("reads the latest version of a rewritten object", async () => {
    const reader = new ObjectReader(nc, bucket);
    await store.putBlob({ name: "rewritten" }, Buffer.from("first".repeat(50_000)));
    await store.putBlob({ name: "rewritten" }, Buffer.from("second"));
    expect(Buffer.from((await reader.read("rewritten"))!).toString()).toBe("second");
  });

  it("a missing or deleted object, or one of a bucket that does not exist, reads as null", async () => {
    const reader = new ObjectReader(nc, bucket);
    expect(await reader.read("never-written")).toBeNull();
    await store.putBlob({ name: "deleted" }, Buffer.from("x"));
    await store.delete("deleted");
    expect(await reader.read("deleted")).toBeNull();
    expect(await new ObjectReader(nc, "no_such_bucket").read("x")).toBeNull();
  });

  it("a corrupt object fails with a clear error: wrong digest, missing chunk, wrong size, bad metadata", async () => {
    const reader = new ObjectReader(nc, bucket);
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const bytes = randomBytes(300_000);

    const info = await store.putBlob({ name: "bad-digest" }, bytes);
    const rawMeta = async (name: string) =>
      (await jsm.streams.getMessage(`OBJ_${bucket}`, { last_by_subj: metaSubject(bucket, name) }))!.json<
        Record<string, unknown>
      >();
    const meta = await rawMeta("bad-digest");
    await js.publish(
      metaSubject(bucket, "bad-digest"),
      JSON.stringify({ ...meta, digest: `SHA-256=${Buffer.alloc(32).toString("base64url")}` }),
    );
    await expect(reader.read("bad-digest")).rejects.toThrow(/corrupt: its bytes do not match its SHA-256/);

    await store.putBlob({ name: "lost-chunk" }, bytes);
    const lost = (await store.info("lost-chunk"))!;
    await jsm.streams.purge(`OBJ_${bucket}`, { filter: `$O.${bucket}.C.${lost.nuid}` });
    await expect(reader.read("lost-chunk")).rejects.toThrow(/corrupt: chunk 1 of 3 is missing/);

    await store.putBlob({ name: "wrong-size" }, bytes);
    const ws = await rawMeta("wrong-size");
    await js.publish(metaSubject(bucket, "wrong-size"), JSON.stringify({ ...ws, size: 1000 }));
    await expect(reader.read("wrong-size")).rejects.toThrow(/corrupt: its chunks hold more than/);

    await js.publish(metaSubject(bucket, "not-json"), "{oops");
    await expect(reader.read("not-json")).rejects.toThrow(/corrupt: its metadata is not a JSON object/);
    await js.publish(metaSubject(bucket, "no-digest"), JSON.stringify({ ...ws, digest: "MD5=abc" }));
    await expect(reader.read("no-digest")).rejects.toThrow(/is not a SHA-256 digest/);
    expect(info.size).toBe(bytes.length);

    const small = new ObjectReader(nc, bucket, { maxBytes: 1000 });
    await store.putBlob({ name: "too-big" }, bytes);
    await expect(small.read("too-big")).rejects.toThrow(/300000 bytes, more than the 1000 allowed/);
    for (const name of ["bad-digest", "lost-chunk", "wrong-size", "not-json", "no-digest"]) {
      await expect(reader.read(name)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    }
  });

  it("needs no direct gets: works on a stream that does not allow them", async () => {
    const plain = "reader_plain";
    const jsm = await jetstreamManager(nc);
    const os = await new Objm(jetstream(nc)).create(plain, { storage: StorageType.Memory });
    await jsm.streams.update(`OBJ_${plain}`, { allow_direct: false });
    expect((await jsm.streams.info(`OBJ_${plain}`)).config.allow_direct).toBe(false);
    const bytes = randomBytes(500_000);
    await os.putBlob({ name: "x" }, bytes);
    const reader = new ObjectReader(nc, plain, { timeoutMs: 500 });
    expect(Buffer.from((await reader.read("x"))!).equals(bytes)).toBe(true);
  });

  it("a server out of reach is UNAVAILABLE within the request timeout, not a hang", async () => {
    const other = await NatsServer.start();
    const nc2 = await connect({ servers: other.url, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
    // The server gone: requests wait for a reconnect that does not come, and time out.
    await other.kill();
    const started = Date.now();
    await expect(new ObjectReader(nc2, bucket, { timeoutMs: 300 }).read("x")).rejects.toMatchObject({
      code: "UNAVAILABLE",
    });
    expect(Date.now() - started).toBeLessThan(3_000);
    await nc2.close();
    await other.stop();
  });
});
