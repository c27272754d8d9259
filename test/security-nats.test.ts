import { randomUUID } from "node:crypto";
import { cpSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { connect, jwtAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";

import { Bus, MAC_HEADER, MessageKey } from "../common/index.js";
import { EndpointProcess, until } from "../devkit/index.js";
import { ObjectReader } from "../endpoint/internal.js";
import {
  TaskState,
  TaskUpdateBatch,
  TaskUpdateBatchReply,
  TaskCheck,
  TaskCheckReply,
  type BusConnectInfo,
  type Task,
} from "../proto/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { RawClients } from "./support/raw-clients.js";

const enc = new TextEncoder();

/** Options that sign a message as the agent of `bus`'s endpoint does (brokers believe nothing else). */
const signedAs = (bus: BusConnectInfo, subject: string, data: Uint8Array) => ({
  headers: new MessageKey(bus.messageKey).headers(subject, data),
});

/** A NATS connection as an agent would open it with the credentials ConnectEndpoint handed out. */
async function connectAs(bus: BusConnectInfo): Promise<{ nc: NatsConnection; errors: string[] }> {
  const nc = await connect({
    servers: bus.servers,
    authenticator: jwtAuthenticator(bus.userJwt, enc.encode(bus.userSeed)),
    inboxPrefix: bus.inboxPrefix,
  });
  const errors: string[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === "error") errors.push(s.error.message);
  })();
  return { nc, errors };
}

describe("isolation on NATS: per-endpoint users in operator mode", () => {
  const stack = useFabric({
    brokerConfig: { limits: { inlinePayloadBytes: 4096 } },
    operator: true,
    endpoint: { name: "iso-a", workers: 2 },
    rawUsers: ["bob"],
    natsAdmin: true,
  });

  /** ConnectEndpoint with an endpoint token, then NATS with the credentials it hands out (closed at the end). */
  async function connectEndpoint(endpointToken: string) {
    const asEndpoint = new RawClients(stack.fabric.broker.address, endpointToken);
    const res = await asEndpoint
      .connectEndpoint({ agentVersion: "test", hostname: "test" })
      .finally(() => asEndpoint.close());
    const bus = res.bus!;
    const conn = await connectAs(bus);
    stack.fabric.adopt({ stop: () => conn.nc.close() });
    return { bus, ...conn };
  }

  /** Registers an endpoint without an agent and connects to NATS with the credentials it is handed. */
  async function rawEndpoint(owner: RawClients, name: string) {
    const { id, token } = await owner.newEndpoint(name);
    return { id, token, ...(await connectEndpoint(token)) };
  }

  it("the broker hands each agent its own NATS user; tasks with large payloads run through it", async () => {
    const fid = await stack.client.registerFunction(function echoLength(s: string) {
      return s.length + ":" + "y".repeat(20_000);
    });
    // Arguments and result both above the inline limit: they travel through the object store.
    const tid = await stack.client.run(fid, stack.endpointId, ["x".repeat(50_000)]);
    const out = await stack.client.waitForResult<string>(tid, { timeoutMs: 30_000 });
    expect(out.startsWith("50000:")).toBe(true);
    expect(out.length).toBe(6 + 20_000);
    expect(stack.endpoint.process!.output).not.toMatch(/Permissions Violation/);
  });

  it("arguments and a result just under the 10 MiB payload limit travel through the agent's own user", async () => {
    const fid = await stack.client.registerFunction(function sizes(s: string) {
      return [s.length, "r".repeat(10 * 1024 * 1024 - 64)];
    });
    // The args JSON `["xxx…"]` is 10 MiB less 100 bytes: just under limits.maxPayloadBytes.
    const arg = "x".repeat(10 * 1024 * 1024 - 104);
    const started = Date.now();
    const tid = await stack.client.run(fid, stack.endpointId, [arg]);
    const [n, r] = await stack.client.waitForResult<[number, string]>(tid, { timeoutMs: 30_000 });
    const tookMs = Date.now() - started;
    expect(n).toBe(arg.length);
    expect(r.length).toBe(10 * 1024 * 1024 - 64);
    expect(tookMs).toBeLessThan(30_000);
    expect(stack.endpoint.process!.output).not.toMatch(/Permissions Violation/);
  });

  it("an endpoint's NATS user cannot read another endpoint's tasks, inbox or results", async () => {
    const a = await rawEndpoint(stack.raw, "raw-a");
    const b = await rawEndpoint(stack.rawOf("bob"), "raw-b");
    expect(a.bus.userJwt).not.toBe("");
    expect(a.bus.userJwt).not.toBe(b.bus.userJwt);
    expect(a.bus.inboxPrefix).toBe(`_INBOX_${a.id}`);

    // Its own consumer works (positive control) …
    const js = jetstream(a.nc);
    const own = await js.consumers.get(a.bus.taskStream, a.bus.taskConsumer);
    expect((await own.info()).name).toBe(a.bus.taskConsumer);

    // … B's does not: pulling from it, looking it up, subscribing to B's subjects or inbox.
    await expect(js.consumers.get(b.bus.taskStream, b.bus.taskConsumer)).rejects.toThrow(
      /permission|timeout/i,
    );
    await expect(
      a.nc.request(`$JS.API.CONSUMER.MSG.NEXT.${Bus.taskStream}.${b.bus.taskConsumer}`, "1", {
        timeout: 2000,
      }),
    ).rejects.toThrow(/permission|timeout/i);
    for (const subject of [Bus.taskSubject(b.id), `${b.bus.inboxPrefix}.>`, "_INBOX.>", Bus.resultSubjects]) {
      a.nc.subscribe(subject);
    }
    await until(
      () =>
        [Bus.taskSubject(b.id), `${b.bus.inboxPrefix}.>`, "_INBOX.>", Bus.resultSubjects].every((s) =>
          a.errors.some((e) => e.includes("Subscription") && e.includes(`"${s}"`)),
        ),
      20_000,
      "the server's refusals",
    );
    // Publishing B's results or status is refused too.
    a.nc.publish(Bus.resultSubject(b.id), enc.encode("forged"));
    a.nc.publish(Bus.resultRequestSubject(b.id), enc.encode("forged"));
    a.nc.publish(Bus.endpointStatusSubject(b.id), enc.encode("forged"));
    await until(
      () =>
        [Bus.resultSubject(b.id), Bus.resultRequestSubject(b.id), Bus.endpointStatusSubject(b.id)].every(
          (s) => a.errors.some((e) => e.includes("Publish") && e.includes(`"${s}"`)),
        ),
      20_000,
      "the server's publish refusals",
    );
    // A cannot manage streams either (delete B's consumer, purge the task stream).
    const jsmA = await jetstreamManager(a.nc, { checkAPI: false });
    await expect(jsmA.consumers.delete(Bus.taskStream, b.bus.taskConsumer)).rejects.toThrow();
    await expect(jsmA.streams.purge(Bus.taskStream)).rejects.toThrow();
    const stillThere = await jetstreamManager(stack.admin);
    expect((await stillThere.consumers.info(Bus.taskStream, b.bus.taskConsumer)).name).toBe(
      b.bus.taskConsumer,
    );
  });

  it.each([
    ["through the result stream", false],
    ["sent to the brokers as a request", true],
  ])(
    "a result forged for another endpoint's task, on the forger's own subject, is rejected (%s)",
    async (_, direct) => {
      const a = await rawEndpoint(stack.raw, direct ? "forger-direct" : "forger");
      const victimId = (await stack.rawOf("bob").newEndpoint("victim")).id;
      const victimTask = await stack
        .rawOf("bob")
        .submitOne(await stack.rawOf("bob").registerJs("const f = () => 1;"), victimId);
      // A legitimate task of the forger's own endpoint, to know when the forged batch was processed.
      const ownTask = await stack.raw.submitOne(await stack.raw.registerJs("const g = () => 2;", "g"), a.id);
      const result = { json: enc.encode('"forged"'), objectRef: "", size: 8 };
      const now = Date.now();
      const batch = TaskUpdateBatch.encode({
        endpointId: victimId, // a lie: the broker trusts the subject, which NATS guarantees
        updates: [victimTask, ownTask].map((taskId) => ({
          taskId,
          state: TaskState.TASK_STATE_SUCCESS,
          atMs: now,
          actor: `endpoint/${a.id}`,
          detail: "",
          result,
          error: undefined,
          output: undefined,
          attempt: 1,
          startedAtMs: now,
          startedBy: `endpoint/${a.id}`,
        })),
      }).finish();
      if (direct) {
        // Sent as a request, the batch is handled before the answer: the forged update refused for
        // good, the forger's own recorded.
        const subject = Bus.resultRequestSubject(a.id);
        const reply = await a.nc.request(subject, batch, {
          timeout: 5_000,
          ...signedAs(a.bus, subject, batch),
        });
        expect(TaskUpdateBatchReply.decode(reply.data)).toMatchObject({ recorded: true });
        // An update for a task the broker has no record of is not answered "recorded": the agent
        // then sends it through the stream, which retries it.
        const unknown = TaskUpdateBatch.encode({
          endpointId: a.id,
          updates: [{ ...TaskUpdateBatch.decode(batch).updates[1]!, taskId: randomUUID() }],
        }).finish();
        const no = await a.nc.request(subject, unknown, {
          timeout: 5_000,
          ...signedAs(a.bus, subject, unknown),
        });
        expect(TaskUpdateBatchReply.decode(no.data)).toMatchObject({ recorded: false });
      } else {
        const subject = Bus.resultSubject(a.id);
        await jetstream(a.nc).publish(subject, batch, signedAs(a.bus, subject, batch));
      }
      await until(
        async () => {
          const t = (await stack.raw.getTasks({ taskIds: [ownTask], omitResults: true })).tasks[0];
          return t?.state === TaskState.TASK_STATE_SUCCESS;
        },
        20_000,
        "the forger's own task to be recorded",
      );
      const t = (await stack.rawOf("bob").getTasks({ taskIds: [victimTask], omitResults: false })).tasks[0]!;
      expect(t.state).toBe(TaskState.TASK_STATE_WAITING_FOR_ENDPOINT);
      expect(t.result).toBeUndefined();
      await stack.fabric.broker.process!.waitFor(/update from the wrong endpoint rejected/, 10_000);
    },
  );

  it("large payloads are isolated: an endpoint reads only its own bucket and cannot forge a reference", async () => {
    const a = await rawEndpoint(stack.raw, "peeker");
    const b = await rawEndpoint(stack.rawOf("bob"), "payload-victim");
    const args = ["s".repeat(10_000)];
    const secret = JSON.stringify(args); // above the 4 KiB inline limit
    const submitTo = async (owner: RawClients, endpointId: string, source: string) =>
      owner.submitOne(await owner.registerJs(source), endpointId, args);
    const victimTask = await submitTo(stack.rawOf("bob"), b.id, "const f = (s) => s.length;");
    const ownTask = await submitTo(stack.raw, a.id, "const f = (s) => s.length;");
    expect(b.bus.payloadBucket).toBe(Bus.payloadBucket(b.id));
    expect(a.bus.payloadBucket).not.toBe(b.bus.payloadBucket);

    // Positive control: A reads its own task's large argument from its own bucket (message gets).
    const own = new ObjectReader(a.nc, a.bus.payloadBucket);
    expect(new TextDecoder().decode(await own.read(Bus.argsObject(ownTask)))).toBe(secret);
    // B's bucket answers nothing to A: by name, by sequence number, or by a consumer on its chunks.
    const theirs = new ObjectReader(a.nc, b.bus.payloadBucket, { timeoutMs: 2000 });
    await expect(theirs.read(Bus.argsObject(victimTask))).rejects.toThrow(/permission|timeout/i);
    const jsmA = await jetstreamManager(a.nc, { checkAPI: false });
    await expect(jsmA.streams.getMessage(`OBJ_${b.bus.payloadBucket}`, { seq: 1 })).rejects.toThrow(
      /permission|timeout/i,
    );
    await expect(
      jsmA.consumers.add(`OBJ_${b.bus.payloadBucket}`, { ack_policy: AckPolicy.None }),
    ).rejects.toThrow(/permission|timeout/i);
    // The bytes are still there for B's own agent.
    const asB = new ObjectReader(b.nc, b.bus.payloadBucket);
    expect((await asB.read(Bus.argsObject(victimTask)))?.length).toBe(secret.length);

    // A result naming any object but the task's own result object is refused, and nothing leaks.
    const now = Date.now();
    const forged = TaskUpdateBatch.encode({
      endpointId: a.id,
      updates: [
        {
          taskId: ownTask,
          state: TaskState.TASK_STATE_SUCCESS,
          atMs: now,
          actor: `endpoint/${a.id}`,
          detail: "",
          result: { json: new Uint8Array(), objectRef: Bus.argsObject(ownTask), size: secret.length },
          error: undefined,
          output: undefined,
          attempt: 1,
          startedAtMs: now,
          startedBy: `endpoint/${a.id}`,
        },
      ],
    }).finish();
    await jetstream(a.nc).publish(
      Bus.resultSubject(a.id),
      forged,
      signedAs(a.bus, Bus.resultSubject(a.id), forged),
    );
    let t: Task | undefined;
    await until(
      async () => {
        t = (await stack.raw.getTasks({ taskIds: [ownTask], omitResults: false })).tasks[0];
        return t?.state === TaskState.TASK_STATE_FAILED;
      },
      20_000,
      "the forged result to be recorded",
    );
    expect(t!.result).toBeUndefined();
    expect(t!.error?.message).toMatch(/must be ".*\.result"/);
  });

  it("an agent's NATS user cannot make the server deliver its bucket's bytes to another's subject", async () => {
    const a = await rawEndpoint(stack.raw, "deliverer");
    const b = await rawEndpoint(stack.rawOf("bob"), "deliver-victim");
    const obj = `OBJ_${a.bus.payloadBucket}`;
    // Bytes of the attacker's choosing in its own bucket (it may write there: its results go there).
    const own = await new Objm(a.nc).open(a.bus.payloadBucket, false);
    await own.putBlob({ name: "bait" }, enc.encode("forged"));
    const targets = [
      Bus.taskEventSubject("bob"),
      Bus.controlSubject(b.id),
      Bus.taskSubject(b.id),
      `${b.bus.inboxPrefix}.x`,
    ];
    const arrived: string[] = [];
    for (const t of targets) stack.admin.subscribe(t, { callback: (_e, m) => void arrived.push(m.subject) });
    await stack.admin.flush();
    const jsmA = await jetstreamManager(a.nc, { checkAPI: false });
    for (const deliver of targets) {
      // A push consumer on its own payload stream delivering to someone else's subject …
      await expect(
        jsmA.consumers.add(obj, {
          name: `push-${randomUUID().slice(0, 8)}`,
          deliver_subject: deliver,
          ack_policy: AckPolicy.None,
          filter_subject: `$O.${a.bus.payloadBucket}.C.>`,
        }),
      ).rejects.toThrow(/permission|timeout/i);
      // … nor in the older API forms (ephemeral, durable).
      for (const api of [`$JS.API.CONSUMER.CREATE.${obj}`, `$JS.API.CONSUMER.DURABLE.CREATE.${obj}.d`]) {
        const body = JSON.stringify({
          stream_name: obj,
          config: {
            durable_name: api.includes("DURABLE") ? "d" : undefined,
            deliver_subject: deliver,
            ack_policy: "none",
          },
        });
        await expect(a.nc.request(api, body, { timeout: 1000 })).rejects.toThrow(/permission|timeout/i);
      }
    }
    expect((await jetstreamManager(stack.admin).then((m) => m.consumers.list(obj).next())).length).toBe(0);
    // Positive control: the agent still reads its own objects (message gets, no consumer).
    expect(new TextDecoder().decode(await new ObjectReader(a.nc, a.bus.payloadBucket).read("bait"))).toBe(
      "forged",
    );
    // Nor through a message get answered to someone else's subject: a direct get would answer with
    // the stored bytes themselves (the server sends an answer to whatever reply subject it is given).
    a.nc.publish(`$JS.API.DIRECT.GET.${obj}`, JSON.stringify({ seq: 1 }), {
      reply: Bus.controlSubject(b.id),
    });
    await until(
      () => a.errors.some((e) => e.includes(`"$JS.API.DIRECT.GET.${obj}"`)),
      20_000,
      "the server's refusal",
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(arrived).toEqual([]);
  });

  it("the broker answers an agent's result request only on that agent's own inbox", async () => {
    const a = await rawEndpoint(stack.raw, "replier");
    const b = await rawEndpoint(stack.rawOf("bob"), "reply-victim");
    const targets = [Bus.controlSubject(b.id), Bus.taskSubject(b.id), Bus.taskEventSubject("bob")];
    const arrived: string[] = [];
    for (const t of targets) stack.admin.subscribe(t, { callback: (_e, m) => void arrived.push(m.subject) });
    await stack.admin.flush();
    const batch = TaskUpdateBatch.encode({ updates: [], endpointId: a.id }).finish();
    // NATS does not check a reply subject against the requester's permissions, and the broker
    // answers with its own: the broker must check it.
    const signed = signedAs(a.bus, a.bus.resultRequestSubject!, batch);
    for (const reply of targets) a.nc.publish(a.bus.resultRequestSubject!, batch, { reply, ...signed });
    // The same for a task check, whose answer names the endpoint's current consumer.
    const check = TaskCheck.encode({ taskIds: [], consumer: a.bus.taskConsumer }).finish();
    const checkSigned = signedAs(a.bus, a.bus.taskCheckSubject!, check);
    for (const reply of targets) a.nc.publish(a.bus.taskCheckSubject!, check, { reply, ...checkSigned });
    await a.nc.flush();
    await stack.fabric.broker.process!.waitFor(
      /"subject":"fabric.result-requests[^}]*agent requests with a foreign reply subject dropped/,
      10_000,
    );
    // Its own inbox is answered as before.
    const own = TaskUpdateBatchReply.decode(
      (await a.nc.request(a.bus.resultRequestSubject!, batch, { timeout: 5_000, ...signed })).data,
    );
    expect(own.recorded).toBe(true);
    const checked = await a.nc.request(a.bus.taskCheckSubject!, check, { timeout: 5_000, ...checkSigned });
    expect(TaskCheckReply.decode(checked.data).currentConsumer).toBe(a.bus.taskConsumer);
    // Signed by the broker over the inbox it came to.
    const key = new MessageKey(a.bus.messageKey);
    expect(key.check(checked.subject, checked.data, checked.headers?.get(MAC_HEADER))).toBe("ok");
    // Unsigned, or signed garbage: no answer (the agent then runs its tasks); a flood of ids is
    // answered for the first 4,096; the broker keeps answering.
    await expect(a.nc.request(a.bus.taskCheckSubject!, check, { timeout: 1_000 })).rejects.toThrow();
    const garbage = new Uint8Array([0xff, 0xff, 0xff, 0x0f]);
    await expect(
      a.nc.request(a.bus.taskCheckSubject!, garbage, {
        timeout: 1_000,
        ...signedAs(a.bus, a.bus.taskCheckSubject!, garbage),
      }),
    ).rejects.toThrow();
    const many = TaskCheck.encode({
      taskIds: Array.from({ length: 20_000 }, () => randomUUID()),
      consumer: a.bus.taskConsumer,
    }).finish();
    const flood = await a.nc.request(a.bus.taskCheckSubject!, many, {
      timeout: 10_000,
      ...signedAs(a.bus, a.bus.taskCheckSubject!, many),
    });
    const floodReply = TaskCheckReply.decode(flood.data);
    expect(floodReply.tasks).toHaveLength(4096);
    expect(floodReply.tasks.every((t) => t.state === TaskState.TASK_STATE_UNSPECIFIED)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(arrived).toEqual([]);
  });

  it("re-registering an endpoint cuts its previous credential's NATS user off at once; no task is lost", async () => {
    const old = await rawEndpoint(stack.raw, "revoked");
    const fid = await stack.raw.registerJs("const f = () => 1;");
    const submit = () => stack.raw.submitOne(fid, old.id);
    const held = await submit();
    // The old agent pulls a task and holds it un-acked (as a running task would be).
    const oldConsumer = await jetstream(old.nc).consumers.get(old.bus.taskStream, old.bus.taskConsumer);
    const first = await oldConsumer.next({ expires: 5_000 });
    expect(first?.headers?.get("Nats-Msg-Id")).toBe(held);
    expect(old.bus.taskConsumer).toContain(`ep-${old.id}-`);

    // The owner re-registers the endpoint (a leaked credentials file): a new credential.
    const reg = await stack.raw.registerEndpoint({ name: "revoked", description: "", endpointId: old.id });
    const queued = await submit();
    // At once, before any agent connects with the new credential, the old user gets nothing.
    const fetched: string[] = [];
    try {
      const batch = await oldConsumer.fetch({ max_messages: 2, expires: 2_000 });
      for await (const m of batch) fetched.push(m.headers?.get("Nats-Msg-Id") ?? "");
    } catch {
      // the consumer is gone: an error is as good as nothing
    }
    expect(fetched).toEqual([]);
    await expect(jetstream(old.nc).consumers.get(old.bus.taskStream, old.bus.taskConsumer)).rejects.toThrow(
      /not found|permission|timeout/i,
    );
    // Its ack of the held task no longer counts: the task goes to the new agent.
    first!.ack();
    // Nor can the old credential get a new NATS user.
    await expect(connectEndpoint(old.token)).rejects.toThrow(/revoked|UNAUTHENTICATED|replaced/i);

    const fresh = await connectEndpoint(reg.endpointToken);
    expect(fresh.bus.taskConsumer).not.toBe(old.bus.taskConsumer);
    // The old user may not use the new consumer either.
    await expect(
      old.nc.request(`$JS.API.CONSUMER.MSG.NEXT.${Bus.taskStream}.${fresh.bus.taskConsumer}`, "1", {
        timeout: 2_000,
      }),
    ).rejects.toThrow(/permission|timeout/i);
    // Both tasks reach the agent with the new credentials: the one held un-acked, and the new one.
    const got = new Set<string>();
    const c = await jetstream(fresh.nc).consumers.get(fresh.bus.taskStream, fresh.bus.taskConsumer);
    const deadline = Date.now() + 20_000;
    while (got.size < 2 && Date.now() < deadline) {
      const m = await c.next({ expires: 2_000 });
      if (!m) continue;
      got.add(m.headers?.get("Nats-Msg-Id") ?? "");
      m.ack();
    }
    expect(got).toEqual(new Set([held, queued]));
  });

  it("secrets: credential and key files are 0600; no token, NATS JWT or seed appears in any log", async () => {
    const epDir = path.join(stack.fabric.dir, "home-alice", "endpoints", "iso-a");
    const creds = JSON.parse(readFileSync(path.join(epDir, "credentials.json"), "utf8")) as {
      endpointToken: string;
    };
    for (const file of [
      path.join(epDir, "credentials.json"),
      path.join(epDir, "config.yaml"),
      stack.fabric.broker.keyFile,
      stack.fabric.nats.operator!.brokerCredsFile,
      stack.fabric.nats.operator!.signingKeyFile,
    ]) {
      expect((statSync(file).mode & 0o777).toString(8), file).toBe("600");
    }
    const config = readFileSync(path.join(epDir, "config.yaml"), "utf8");
    const userToken = /token: (\S+)/.exec(config)?.[1] ?? "";
    const secrets = [
      creds.endpointToken,
      userToken,
      readFileSync(stack.fabric.nats.operator!.signingKeyFile, "utf8").trim(),
      ...readFileSync(stack.fabric.nats.operator!.brokerCredsFile, "utf8").match(
        /^(eyJ\S+|SU[A-Z2-7]{50,})$/gm,
      )!,
    ].filter((s) => s.length > 20);
    expect(secrets.length).toBeGreaterThanOrEqual(4);
    // The NATS user the broker minted for a raw connect is a secret too.
    const a = await rawEndpoint(stack.raw, "secret-check");
    secrets.push(a.bus.userJwt, a.bus.userSeed);
    const logs = [stack.fabric.broker.process!.output, stack.endpoint.process!.output];
    for (const log of logs) {
      expect(log.length).toBeGreaterThan(100);
      for (const secret of secrets) expect(log.includes(secret)).toBe(false);
      // Nor a piece of one (a signature, a seed prefix).
      expect(log).not.toMatch(/SU[A-Z2-7]{40,}|eyJ[\w-]{20,}\.eyJ/);
    }
  });

  it("a second agent started with the same endpoint id takes over; the first gets no other task and stops itself", async () => {
    // The same endpoint (same credentials.json) copied into a second FABRIC_HOME.
    const home2 = path.join(stack.fabric.dir, "home-alice-2");
    const second = await EndpointProcess.configure({
      home: home2,
      name: "iso-a",
      broker: stack.fabric.broker.address,
      token: await stack.fabric.broker.token("alice"),
      workers: 2,
      blocks: 1,
    });
    stack.fabric.endpoints.push(second);
    cpSync(
      path.join(stack.fabric.dir, "home-alice", "endpoints", "iso-a", "credentials.json"),
      path.join(home2, "endpoints", "iso-a", "credentials.json"),
    );
    await second.launch();
    expect(second.endpointId()).toBe(stack.endpointId);
    const fid = await stack.client.registerFunction(function whereAmI() {
      return process.env["FABRIC_HOME"] ?? "";
    });
    const homes = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const tid = await stack.client.run(fid, stack.endpointId, []);
        return stack.client.waitForResult<string>(tid, { timeoutMs: 30_000 });
      }),
    );
    expect(new Set(homes)).toEqual(new Set([home2]));
    // The first agent's pulls fail (its consumer is gone, and its NATS user may not use the new
    // one); it asks the brokers, learns it was fenced off, says so, and exits.
    const first = stack.endpoint.process!;
    await first.waitFor(/another agent connected as this endpoint/, 30_000);
    const exit = await Promise.race([first.exited, sleep(30_000).then(() => undefined)]);
    expect(exit?.code).toBe(3);
    expect(second.process!.running).toBe(true);
  });
});
