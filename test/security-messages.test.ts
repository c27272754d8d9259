import { randomUUID } from "node:crypto";
import path from "node:path";

import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { beforeAll, describe, expect, it } from "vitest";

import { TokenAuthority } from "../cloud/index.js";
import { agentInboxPrefix } from "../cloud/internal.js";
import { Bus, MAC_HEADER, MessageKey } from "../common/index.js";
import { until } from "../devkit/index.js";
import {
  EndpointControl,
  EndpointStatus,
  Task,
  TaskEventBatch,
  TaskMessage,
  TaskState,
  TaskUpdateBatch,
  TaskUpdateBatchReply,
  type BusConnectInfo,
  type WatchTasksResponse,
} from "../proto/index.js";
import { useFabric } from "./support/fabric-suite.js";
import { lines } from "./support/fault.js";
import { RawClients } from "./support/raw-clients.js";

const enc = new TextEncoder();

/** Appends "<tag>" to a file, sleeps, returns "real <tag>". */
const source = `
async function work(logFile, tag, sleepMs) {
  require("node:fs").appendFileSync(logFile, tag + "\\n");
  await new Promise((r) => setTimeout(r, sleepMs));
  return "real " + tag;
}`;

/**
 * What a receiver on NATS accepts must have come from a broker (issue 12). The admin connection
 * publishes anywhere: it stands in for any path around the NATS permissions (like the
 * consumer-deliver-subject trick that made the server deliver an agent's bytes onto other
 * subjects). Nothing it forges may be believed.
 */
describe("broker messages are authenticated: forged events, cancels and tasks are dropped", () => {
  const stack = useFabric({
    operator: true,
    endpoint: { name: "signed", workers: 2 },
    rawUsers: ["bob"],
    natsAdmin: true,
  });
  let fid: string;
  /** A message key another endpoint's agent holds (bob's), handed out by ConnectEndpoint. */
  let otherBus: BusConnectInfo;

  beforeAll(async () => {
    fid = await stack.client.registerFunction({ source, entryPoint: "work" });

    const bobs = await stack.rawOf("bob").newEndpoint("bobs");
    const asEndpoint = new RawClients(stack.fabric.broker.address, bobs.token);
    const res = await asEndpoint.connectEndpoint({ agentVersion: "test", hostname: "test" });
    asEndpoint.close();
    otherBus = res.bus!;
  });

  /** Waits (naming `what`) until `stream` holds no message on `subject`. */
  async function untilLeft(stream: string, subject: string, what: string): Promise<void> {
    const jsm = await jetstreamManager(stack.admin);
    await until(
      async () => {
        const info = await jsm.streams.info(stream, { subjects_filter: subject });
        return (info.state.subjects?.[subject] ?? 0) === 0;
      },
      10_000,
      what,
    );
  }

  it("ConnectEndpoint hands each agent its own endpoint's message key, and only that", async () => {
    expect(otherBus.messageKey).toHaveLength(32);
    const keys = (
      await TokenAuthority.fromKeyFile(stack.fabric.broker.keyFile, "fabric-broker", "fabric-api")
    ).messageKeys;
    expect(Buffer.from(otherBus.messageKey)).toEqual(
      Buffer.from(keys.endpointSecret(otherBus.taskSubject.split(".").pop()!)),
    );
    expect(Buffer.from(otherBus.messageKey)).not.toEqual(Buffer.from(keys.endpointSecret(stack.endpointId)));
  });

  it("(a) a forged 'success' on the owner's event subject reaches neither WatchTasks nor waitForResult", async () => {
    const log = path.join(stack.fabric.dir, "events.log");
    const taskId = await stack.client.run(fid, stack.endpointId, [log, "event", 4_000]);
    await until(() => lines(log).includes("event"), 30_000, "the task to start");

    // Watched both ways: the SDK's waitForResult, and a bare WatchTasks stream.
    const result = stack.client.waitForResult<string>(taskId, { timeoutMs: 30_000 });
    const seen: WatchTasksResponse[] = [];
    const raw = stack.raw;
    const watch = raw.tasks.watchTasks({ taskIds: [taskId], groupId: "" }, raw.md.clone());
    watch.on("data", (m: WatchTasksResponse) => seen.push(m));
    watch.on("error", () => undefined);
    // Both watches are followed by the broker before anything is forged.
    await new Promise((r) => setTimeout(r, 1_000));

    const now = Date.now();
    const forged: Task = {
      id: taskId,
      owner: "alice",
      functionId: fid,
      endpointId: stack.endpointId,
      groupId: "",
      state: TaskState.TASK_STATE_SUCCESS,
      history: [{ state: TaskState.TASK_STATE_SUCCESS, atMs: now, actor: "broker/forged", detail: "" }],
      result: { json: enc.encode('"forged"'), objectRef: "", size: 8 },
      error: undefined,
      output: undefined,
      createdAtMs: now,
      completedAtMs: now,
      attempts: 1,
    };
    const subject = Bus.taskEventSubject("alice");
    const payload = TaskEventBatch.encode({ tasks: [forged] }).finish();
    // Unsigned; signed with an endpoint's key (what an agent holds); with a MAC of junk.
    stack.admin.publish(subject, payload);
    stack.admin.publish(subject, payload, {
      headers: new MessageKey(otherBus.messageKey).headers(subject, payload),
    });
    const junk = headers();
    junk.set(MAC_HEADER, "A".repeat(22));
    stack.admin.publish(subject, payload, { headers: junk });
    await stack.admin.flush();
    await new Promise((r) => setTimeout(r, 1_000));
    expect(seen).toEqual([]);
    expect((await stack.client.getTask(taskId)).state).toBe("running");
    await stack.fabric.broker.process!.waitFor(
      /task event not sent by a broker \(unsigned\) dropped/,
      10_000,
    );

    // The real end arrives, with the real result.
    expect(await result).toBe("real event");
    await until(() => seen.length > 0, 10_000, "the watch to see the real end");
    const got = seen[0]!.task ?? seen[0]!.tasks[0]!;
    expect(got.state).toBe(TaskState.TASK_STATE_SUCCESS);
    expect(new TextDecoder().decode(got.result!.json)).toBe('"real event"');
    watch.cancel();
  }, 60_000);

  it("(b) a forged cancel on the endpoint's control subject is ignored: running and queued tasks complete", async () => {
    const log = path.join(stack.fabric.dir, "cancel.log");
    // Two workers: two tasks run, the third waits its turn.
    const { taskIds } = await stack.client.submitBatch(
      ["c0", "c1", "c2"].map((tag) => ({
        functionId: fid,
        endpointId: stack.endpointId,
        args: [log, tag, 2_500],
      })),
    );
    await until(() => lines(log).length >= 2, 30_000, "two tasks running");
    const subject = Bus.controlSubject(stack.endpointId);
    const payload = EndpointControl.encode({ cancelTaskIds: [...taskIds] }).finish();
    stack.admin.publish(subject, payload);
    // Signed with another endpoint's key (an agent forging for a neighbour): refused too.
    stack.admin.publish(subject, payload, {
      headers: new MessageKey(otherBus.messageKey).headers(subject, payload),
    });
    await stack.admin.flush();
    for (const [i, id] of taskIds.entries())
      expect(await stack.client.waitForResult(id, { timeoutMs: 30_000 })).toBe(`real c${i}`);
    expect(stack.endpoint.process!.output).not.toMatch(/task cancelled by its owner/);
    await stack.endpoint.process!.waitFor(
      /control message not sent by a broker \(unsigned\) dropped/,
      10_000,
    );

    // A real cancel (signed by the broker) still works.
    const real = await stack.client.run(fid, stack.endpointId, [log, "really-cancelled", 30_000]);
    await until(() => lines(log).includes("really-cancelled"), 30_000, "the task to start");
    await stack.client.cancel([real]);
    await stack.endpoint.process!.waitFor(/task cancelled by its owner/, 10_000);
    expect((await stack.client.getTask(real)).state).toBe("cancelled");
  }, 90_000);

  it("(c) a forged task message is not run and does not stay in the stream; real tasks keep running", async () => {
    const log = path.join(stack.fabric.dir, "forged-task.log");
    const fn = (await stack.raw.getFunction({ functionId: fid })).function!;
    const subject = Bus.taskSubject(stack.endpointId);
    const forge = (tag: string) =>
      TaskMessage.encode({
        taskId: randomUUID(),
        functionId: fid,
        function: fn.spec,
        args: { json: enc.encode(JSON.stringify([log, tag, 10])), objectRef: "", size: 0 },
        kwargs: { json: new Uint8Array(), objectRef: "", size: 0 },
        owner: "alice",
        submittedAtMs: Date.now(),
        timeoutS: 0,
      }).finish();
    const js = jetstream(stack.admin);
    const before = await stack.client.run(fid, stack.endpointId, [log, "before", 10]);
    await js.publish(subject, forge("forged-unsigned"));
    const wrongKey = forge("forged-other-key");
    const h = new MessageKey(otherBus.messageKey).headers(subject, wrongKey);
    await js.publish(subject, wrongKey, { headers: h });
    // A MAC made for another subject (a task of bob's endpoint, moved here).
    const moved = forge("forged-moved");
    await js.publish(subject, moved, {
      headers: new MessageKey(otherBus.messageKey).headers(otherBus.taskSubject, moved),
    });
    const after = await stack.client.run(fid, stack.endpointId, [log, "after", 10]);
    expect(await stack.client.waitForResult(before, { timeoutMs: 30_000 })).toBe("real before");
    expect(await stack.client.waitForResult(after, { timeoutMs: 30_000 })).toBe("real after");
    await new Promise((r) => setTimeout(r, 500));
    expect(lines(log).filter((l) => l.startsWith("forged"))).toEqual([]);

    // Nothing of the forged messages is left: not queued, not held un-acked, not in the stream.
    await untilLeft(Bus.taskStream, subject, "the forged messages to leave the stream");
    expect((await stack.client.getEndpoint(stack.endpointId)).status.queuedTasks).toBe(0);
    await stack.endpoint.process!.waitFor(/task message not sent by a broker \(unsigned\) dropped/, 10_000);
    expect(stack.endpoint.process!.running).toBe(true);
  }, 60_000);

  /** A batch claiming `taskId` succeeded with "forged": what a forger would send as the agent. */
  const forgedSuccess = (taskId: string): Uint8Array => {
    const now = Date.now();
    return TaskUpdateBatch.encode({
      endpointId: stack.endpointId,
      updates: [
        {
          taskId,
          state: TaskState.TASK_STATE_SUCCESS,
          atMs: now,
          actor: `endpoint/${stack.endpointId}`,
          detail: "",
          result: { json: enc.encode('"forged"'), objectRef: "", size: 8 },
          error: undefined,
          output: undefined,
          attempt: 1,
          startedAtMs: now,
          startedBy: `endpoint/${stack.endpointId}`,
        },
      ],
    }).finish();
  };

  /** Unsigned; signed with another endpoint's key; signed for another subject; a MAC of junk. */
  const forgeries = (subject: string, payload: Uint8Array) => {
    const other = new MessageKey(otherBus.messageKey);
    const junk = headers();
    junk.set(MAC_HEADER, "A".repeat(22));
    return [undefined, other.headers(subject, payload), other.headers(otherBus.resultSubject, payload), junk];
  };

  /** A task of the recording function tagged `tag` (it sleeps 2.5 s, logging to `log`), once it runs. */
  async function runningTask(log: string, tag: string): Promise<string> {
    const taskId = await stack.client.run(fid, stack.endpointId, [
      path.join(stack.fabric.dir, log),
      tag,
      2_500,
    ]);
    await until(
      async () => (await stack.client.getTask(taskId)).state === "running",
      30_000,
      "the task to run",
    );
    return taskId;
  }

  /**
   * The forged result `kind`s (batch, request) were dropped, as the broker's log says: the task
   * still runs, then ends with its real result.
   */
  async function expectOnlyRealResult(taskId: string, tag: string, kind: string): Promise<void> {
    expect((await stack.client.getTask(taskId)).state).toBe("running");
    const dropped = new RegExp(`result ${kind} not sent by the endpoint's agent \\(unsigned\\) dropped`);
    await stack.fabric.broker.process!.waitFor(dropped, 10_000);
    expect(await stack.client.waitForResult(taskId, { timeoutMs: 30_000 })).toBe(`real ${tag}`);
  }

  it("(d) a forged result batch on the endpoint's result stream is not recorded, and leaves the stream", async () => {
    const taskId = await runningTask("result-stream.log", "stream");
    const subject = Bus.resultSubject(stack.endpointId);
    const payload = forgedSuccess(taskId);
    const js = jetstream(stack.admin);
    for (const h of forgeries(subject, payload)) await js.publish(subject, payload, h ? { headers: h } : {});
    // Acked once handled, not left to loop or to sit in the work queue until its max age.
    await untilLeft(Bus.resultStream, subject, "the forged batches to leave the result stream");
    await expectOnlyRealResult(taskId, "stream", "batch");
  }, 60_000);

  it("(e) a forged result batch sent as a request is not recorded", async () => {
    const taskId = await runningTask("result-request.log", "request");
    const subject = Bus.resultRequestSubject(stack.endpointId);
    const payload = forgedSuccess(taskId);
    // The reply on the agent's own inbox (what the broker answers on): the reply check passes, so
    // only the signature stands between the forgery and the task record.
    const inbox = `${agentInboxPrefix(stack.endpointId)}.forged-${randomUUID()}`;
    const answers: TaskUpdateBatchReply[] = [];
    stack.admin.subscribe(inbox, {
      callback: (_e, m) => void answers.push(TaskUpdateBatchReply.decode(m.data)),
    });
    for (const h of forgeries(subject, payload))
      stack.admin.publish(subject, payload, { reply: inbox, ...(h ? { headers: h } : {}) });
    await stack.admin.flush();
    await new Promise((r) => setTimeout(r, 500));
    expect(answers.filter((a) => a.recorded)).toEqual([]);
    await expectOnlyRealResult(taskId, "request", "request");
  }, 60_000);

  it("(f) a forged status does not show a stopped endpoint online; the real agent's status does", async () => {
    expect((await stack.client.getEndpoint(stack.endpointId)).status.connection).toBe("online");
    const stopped = await stack.fabric.startEndpoint("alice", "stopped", { workers: 1 });
    const id = stopped.endpointId();
    await until(
      async () => (await stack.client.getEndpoint(id)).status.connection === "online",
      30_000,
      "the second agent online",
    );
    await stopped.stop();
    expect((await stack.client.getEndpoint(id)).status.connection).toBe("offline");

    const subject = Bus.endpointStatusSubject(id);
    const payload = EndpointStatus.encode(
      EndpointStatus.fromJSON({
        endpointId: id,
        atMs: Date.now(),
        state: "online",
        hostname: "forged",
        agentVersion: "forged",
        workers: 64,
      }),
    ).finish();
    // Besides the usual forgeries: signed right, by the running agent's key, for its own subject
    // (its own status, replayed onto another endpoint's).
    const keys = (
      await TokenAuthority.fromKeyFile(stack.fabric.broker.keyFile, "fabric-broker", "fabric-api")
    ).messageKeys;
    const moved = keys
      .endpoint(stack.endpointId)
      .headers(Bus.endpointStatusSubject(stack.endpointId), payload);
    const js = jetstream(stack.admin);
    for (const h of [...forgeries(subject, payload), moved]) {
      await js.publish(subject, payload, h ? { headers: h } : {});
      const view = (await stack.client.getEndpoint(id)).status;
      expect(view.connection).not.toBe("online");
      expect(view.last?.hostname).not.toBe("forged");
    }
    await stack.fabric.broker.process!.waitFor(/endpoint status not sent by the endpoint's agent/, 10_000);
  }, 60_000);
});
