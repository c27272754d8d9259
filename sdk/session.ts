// Submits and small watches as messages on one long-lived Session stream to the broker.
//
// A gRPC call costs ~0.5 ms more than a message on a stream that is already open (HTTP/2 stream
// set-up, headers, trailers, on both sides), which is most of a short task's round trip. The
// session opens on first use and closes after a moment without open requests, so an idle client
// holds no stream and a script that forgets close() still exits. If the stream breaks, every open
// request fails as a call would (UNAVAILABLE, ...), and callers retry as they do for calls; the
// next request opens a new stream. A broker without Session (UNIMPLEMENTED) is remembered, and the
// client uses plain calls from then on.
import { EventEmitter } from "node:events";

import type * as grpc from "@grpc/grpc-js";

import {
  FabricError,
  errorFromInfo,
  fromGrpcError,
  type LongTimer,
  setLongTimeout,
} from "../common/client.js";
import type * as pb from "../proto/index.js";
import type { WatchStream } from "./watch.js";

type SessionStream = grpc.ClientDuplexStream<pb.SessionRequest, pb.SessionResponse>;

/** How long a session stream with no open request stays open. */
const DEFAULT_IDLE_MS = 1_000;

interface OpenSubmit {
  readonly kind: "submit";
  readonly resolve: (res: pb.SubmitTasksResponse) => void;
  readonly reject: (err: FabricError) => void;
  readonly timer: LongTimer | undefined;
}

type Open = OpenSubmit | SessionWatchStream;

/** A client's Session stream; see the module comment. */
export class ClientSession {
  private stream: SessionStream | undefined;
  private readonly open = new Map<number, Open>();
  private nextRef = 1;
  private idleTimer: NodeJS.Timeout | undefined;
  private unsupported = false;
  private closed = false;

  constructor(
    private readonly openStream: () => SessionStream,
    private readonly idleMs = DEFAULT_IDLE_MS,
  ) {}

  /** False once the broker has said it has no Session method: use plain calls. */
  get available(): boolean {
    return !this.unsupported && !this.closed;
  }

  /** Submits tasks; rejects as SubmitTasks would (DEADLINE_EXCEEDED after `deadlineMs`). */
  submit(request: pb.SubmitTasksRequest, deadlineMs?: number): Promise<pb.SubmitTasksResponse> {
    return new Promise((resolve, reject) => {
      const ref = this.nextRef++;
      const timer =
        deadlineMs === undefined
          ? undefined
          : // callTimeoutMs is the caller's: it may exceed setTimeout's 24.8-day limit.
            setLongTimeout(() => {
              if (this.open.get(ref) !== entry) return;
              this.forget(ref);
              reject(
                new FabricError("DEADLINE_EXCEEDED", `the broker did not answer within ${deadlineMs} ms`),
              );
            }, deadlineMs);
      const entry: OpenSubmit = { kind: "submit", resolve, reject, timer };
      this.open.set(ref, entry);
      this.send({ ref, op: { $case: "submit", value: request } });
    });
  }

  /** Watches tasks; the returned stream behaves like a WatchTasks call's. */
  watch(request: pb.WatchTasksRequest): WatchStream {
    const ref = this.nextRef++;
    const w = new SessionWatchStream(() => {
      if (this.open.get(ref) === w) this.send({ ref, op: { $case: "unwatch", value: {} } });
    });
    this.open.set(ref, w);
    // Emitted on a later turn, as a call's events are: the caller attaches its listeners first.
    this.send({ ref, op: { $case: "watch", value: request } });
    return w;
  }

  /** Fails what is open (CANCELLED) and closes the stream. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.breakAll(new FabricError("CANCELLED", "the client was closed"));
  }

  private send(req: pb.SessionRequest): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const stream = this.stream ?? this.connect();
    stream.write(req);
  }

  private connect(): SessionStream {
    const stream = this.openStream();
    this.stream = stream;
    stream.on("data", (res: pb.SessionResponse) => this.onResponse(res));
    stream.on("error", (err: unknown) => this.onStreamEnd(stream, fromGrpcError(err)));
    stream.on("end", () =>
      this.onStreamEnd(stream, new FabricError("UNAVAILABLE", "the broker ended the session")),
    );
    return stream;
  }

  private onResponse(res: pb.SessionResponse): void {
    const entry = this.open.get(res.ref);
    const msg = res.msg;
    if (!entry || !msg) return;
    if (entry.kind === "submit") {
      this.forget(res.ref);
      entry.timer?.clear();
      if (msg.$case === "submitted") entry.resolve(msg.value);
      else if (msg.$case === "error") entry.reject(errorFromInfo(msg.value));
      else entry.reject(new FabricError("INTERNAL", `the broker answered a submit with ${msg.$case}`));
      return;
    }
    switch (msg.$case) {
      case "tasks":
        entry.data(msg.value);
        return;
      case "done":
        this.forget(res.ref);
        entry.end();
        return;
      case "error":
        this.forget(res.ref);
        entry.fail(errorFromInfo(msg.value));
        return;
      default:
        this.forget(res.ref);
        entry.fail(new FabricError("INTERNAL", `the broker answered a watch with ${msg.$case}`));
    }
  }

  private forget(ref: number): void {
    this.open.delete(ref);
    if (this.open.size > 0 || !this.stream || this.idleTimer) return;
    const stream = this.stream;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.stream !== stream || this.open.size > 0) return;
      // Half-close: the broker ends its side once nothing is open (nothing is).
      this.stream = undefined;
      stream.end();
    }, this.idleMs);
  }

  private onStreamEnd(stream: SessionStream, err: FabricError): void {
    if (this.stream !== stream) return; // an idle stream closing, or one already given up
    this.stream = undefined;
    if (err.code === "UNIMPLEMENTED") this.unsupported = true;
    this.breakAll(err);
  }

  private breakAll(err: FabricError): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const stream = this.stream;
    this.stream = undefined;
    const open = [...this.open.values()];
    this.open.clear();
    for (const entry of open) {
      if (entry.kind === "submit") {
        entry.timer?.clear();
        entry.reject(err);
      } else {
        entry.fail(err);
      }
    }
    stream?.cancel();
  }
}

/** One watch on a session, with the events of a WatchTasks call's stream. */
class SessionWatchStream extends EventEmitter implements WatchStream {
  readonly kind = "watch";
  private finished = false;
  private cancelled = false;

  constructor(private readonly unwatch: () => void) {
    super();
  }

  data(msg: pb.WatchTasksResponse): void {
    if (!this.finished && !this.cancelled) this.emit("data", msg);
  }

  end(): void {
    if (this.finished) return;
    this.finished = true;
    this.emit("end");
  }

  fail(err: FabricError): void {
    if (this.finished) return;
    this.finished = true;
    // As a cancelled call reports CANCELLED, whatever broke afterwards.
    this.emit("error", this.cancelled ? new FabricError("CANCELLED", "the watch was cancelled") : err);
  }

  cancel(): void {
    if (this.finished || this.cancelled) return;
    this.cancelled = true;
    this.unwatch();
  }

  // One stream carries every watch of the session: a slow consumer cannot pause it for the others.
  // Session watches are small (see Client.results), so what waits for the consumer stays small.
  pause(): this {
    return this;
  }

  resume(): this {
    return this;
  }
}
