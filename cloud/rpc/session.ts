import { EventEmitter } from "node:events";

import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";

import { FabricError, errorToInfo, toFabricError } from "../../common/index.js";
import type {
  SessionRequest,
  SessionResponse,
  SubmitTasksRequest,
  SubmitTasksResponse,
  WatchTasksRequest,
  WatchTasksResponse,
} from "../../proto/index.js";
import type { Principal, TokenAuthority } from "../auth/tokens.js";
import { PendingRequest, authenticate, logFailure, toServiceError, userOf, type WatchSink } from "./rpc.js";
import { peekVarint } from "./wire-guard.js";

/** Submits a session works on at once; it stops reading further requests meanwhile. */
const MAX_SUBMITS_IN_FLIGHT = 64;
/** Watches open at once on one session. */
const MAX_WATCHES = 10_000;

type SessionCall = grpc.ServerDuplexStream<PendingRequest<SessionRequest>, SessionResponse>;

/** What a Session stream serves: the task service's SubmitTasks and WatchTasks, for `owner`. */
export interface SessionTasks {
  submit(req: SubmitTasksRequest, owner: string): Promise<SubmitTasksResponse>;
  watch(req: WatchTasksRequest, sink: WatchSink, owner: string): Promise<void>;
}

/**
 * The broker's end of a Session stream: SubmitTasks and WatchTasks requests arriving as messages
 * on one long-lived stream, answered on it by `ref`. Each request is authenticated before it is
 * decoded (the token is re-checked, so expiry and revocation apply mid-stream) and rate-limited
 * like a call of its own; requests are admitted in the order they came.
 * When the client half-closes, the stream ends once every open request has been answered.
 */
export function sessionHandler(
  tasks: SessionTasks,
  auth: TokenAuthority,
  log: Logger,
): grpc.handleBidiStreamingCall<SessionRequest, SessionResponse> {
  return (call) => {
    new BrokerSession(call, tasks, auth, log).start();
  };
}

class BrokerSession {
  private readonly watches = new Map<number, SessionWatch>();
  private submits = 0;
  private paused = false;
  private clientDone = false;
  private closed = false;
  /** Requests are authenticated and decoded one after another, so they take effect in order. */
  private inbox: Promise<void> = Promise.resolve();

  constructor(
    private readonly call: SessionCall,
    private readonly tasks: SessionTasks,
    private readonly auth: TokenAuthority,
    private readonly log: Logger,
  ) {}

  start(): void {
    const { call } = this;
    call.on("data", (req: PendingRequest<SessionRequest>) => {
      this.inbox = this.inbox.then(() => this.admit(req));
    });
    call.on("end", () => {
      // After the requests still being admitted.
      this.inbox = this.inbox.then(() => {
        this.clientDone = true;
        this.maybeEnd();
      });
    });
    call.on("cancelled", () => this.teardown());
    call.on("error", () => this.teardown());
    call.on("drain", () => {
      for (const w of this.watches.values()) w.emit("drain");
    });
  }

  /**
   * Authenticates one request, then decodes it. Without a valid token its bytes are never decoded:
   * only its `ref` is read off the wire, to answer it UNAUTHENTICATED.
   */
  private async admit(pending: PendingRequest<SessionRequest>): Promise<void> {
    if (this.closed) return;
    let principal: Principal;
    try {
      principal = await authenticate(this.auth, this.call.metadata);
    } catch (err) {
      const ref = peekVarint(pending.bytes, 1);
      if (ref === undefined) this.fail(toFabricError(err));
      else this.answerError(ref, err, "Session");
      return;
    }
    let req: SessionRequest;
    try {
      req = pending.open();
    } catch (err) {
      // A request that breaks a limit is answered by its ref; without a readable ref there is no
      // request to answer: the stream itself is broken.
      const ref = peekVarint(pending.bytes, 1);
      if (ref === undefined) this.fail(toFabricError(err));
      else this.answerError(ref, err, "Session");
      return;
    }
    this.onRequest(req, principal);
  }

  private onRequest(req: SessionRequest, principal: Principal): void {
    if (this.closed) return;
    const { ref, op } = req;
    switch (op?.$case) {
      case "submit":
        this.submit(ref, op.value, principal);
        return;
      case "watch":
        this.watch(ref, op.value, principal);
        return;
      case "unwatch":
        // A watch that already ended has its `done` (or `error`) on the way: nothing to do.
        this.watches.get(ref)?.cancel();
        return;
      default:
        this.answerError(
          ref,
          new FabricError("INVALID_ARGUMENT", "a Session request needs one of submit, watch or unwatch"),
          "Session",
        );
    }
  }

  /** Runs one authenticated request for the caller and answers `ref` with its result or its error. */
  private serve<T>(
    ref: number,
    method: string,
    principal: Principal,
    run: (owner: string) => Promise<T>,
    answer: (value: T) => SessionResponse["msg"],
  ): Promise<void> {
    return Promise.resolve()
      .then(() => run(userOf({ principal, log: this.log })))
      .then(
        (value) => this.write({ ref, msg: answer(value) }),
        (err: unknown) => this.answerError(ref, err, method),
      );
  }

  private submit(ref: number, request: SubmitTasksRequest, principal: Principal): void {
    this.submits++;
    if (this.submits >= MAX_SUBMITS_IN_FLIGHT && !this.paused) {
      this.paused = true;
      this.call.pause();
    }
    void this.serve(
      ref,
      "SubmitTasks",
      principal,
      (owner) => this.tasks.submit(request, owner),
      (submitted) => ({ $case: "submitted", value: submitted }),
    ).finally(() => {
      this.submits--;
      if (this.paused && this.submits < MAX_SUBMITS_IN_FLIGHT / 2) {
        this.paused = false;
        this.call.resume();
      }
      this.maybeEnd();
    });
  }

  private watch(ref: number, request: WatchTasksRequest, principal: Principal): void {
    if (this.watches.has(ref)) {
      this.answerError(
        ref,
        new FabricError("INVALID_ARGUMENT", `ref ${ref} is already in use by an open watch on this session`),
        "WatchTasks",
      );
      return;
    }
    if (this.watches.size >= MAX_WATCHES) {
      this.answerError(
        ref,
        new FabricError(
          "RESOURCE_EXHAUSTED",
          `a session may hold ${MAX_WATCHES} open watches; wait for some to finish`,
        ),
        "WatchTasks",
      );
      return;
    }
    const sink = new SessionWatch(ref, this.call);
    this.watches.set(ref, sink);
    void this.serve(
      ref,
      "WatchTasks",
      principal,
      (owner) => this.tasks.watch(request, sink, owner),
      () => ({ $case: "done", value: {} }),
    ).finally(() => {
      this.watches.delete(ref);
      this.maybeEnd();
    });
  }

  private write(msg: SessionResponse): void {
    if (!this.closed) this.call.write(msg);
  }

  private answerError(ref: number, err: unknown, method: string): void {
    const fe = toFabricError(err);
    logFailure(this.log, method, fe);
    this.write({ ref, msg: { $case: "error", value: errorToInfo(fe) } });
  }

  /** Ends the stream with an error status (nothing more is answered). */
  private fail(err: FabricError): void {
    logFailure(this.log, "Session", err);
    if (!this.call.cancelled) this.call.emit("error", toServiceError(err));
    this.teardown();
  }

  private maybeEnd(): void {
    if (this.closed || !this.clientDone || this.submits > 0 || this.watches.size > 0) return;
    this.closed = true;
    this.call.end();
  }

  private teardown(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watches.values()) w.cancel();
  }
}

/** One watch of a session, as the {@link WatchSink} a task watch writes to. */
class SessionWatch extends EventEmitter implements WatchSink {
  cancelled = false;

  constructor(
    private readonly ref: number,
    private readonly call: SessionCall,
  ) {
    super();
  }

  write(msg: WatchTasksResponse): boolean {
    if (this.cancelled || this.call.cancelled) return true;
    return this.call.write({ ref: this.ref, msg: { $case: "tasks", value: msg } });
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.emit("cancelled");
    // A watch waiting for the stream to drain must not wait for a stream that is gone.
    this.emit("drain");
  }
}
