import type { Logger } from "pino";

import type {
  CancelTasksRequest,
  CancelTasksResponse,
  GetTasksRequest,
  GetTasksResponse,
  ListTasksRequest,
  ListTasksResponse,
  SubmitTasksRequest,
  SubmitTasksResponse,
  TaskServiceServer,
  WatchTasksRequest,
  WatchTasksResponse,
} from "../../proto/index.js";
import type { TokenAuthority } from "../auth/tokens.js";
import { serverStream, unary, userOf } from "../rpc/rpc.js";
import { sessionHandler } from "../rpc/session.js";
import type { TaskBook } from "./book.js";
import type { TaskSubmitter } from "./submit.js";
import type { TaskLister } from "./task-index.js";
import type { TaskWatcher } from "./watch.js";

/** The parts the task service delegates to. */
export interface TaskServiceParts {
  readonly submitter: TaskSubmitter;
  readonly book: TaskBook;
  readonly watcher: TaskWatcher;
  readonly lister: TaskLister;
}

/**
 * The gRPC TaskService: each call authenticated, then handed to its part (SubmitTasks to the
 * submitter, GetTasks and CancelTasks to the book, ListTasks to the lister, WatchTasks to the watcher); a Session stream
 * carries SubmitTasks and WatchTasks requests to the same parts.
 */
export function taskService(parts: TaskServiceParts, auth: TokenAuthority, log: Logger): TaskServiceServer {
  const { submitter, book, watcher, lister } = parts;
  return {
    submitTasks: unary<SubmitTasksRequest, SubmitTasksResponse>(auth, log, "SubmitTasks", (req, ctx) =>
      submitter.submit(req, userOf(ctx)),
    ),
    getTasks: unary<GetTasksRequest, GetTasksResponse>(auth, log, "GetTasks", (req, ctx) =>
      book.get(req, userOf(ctx)),
    ),
    cancelTasks: unary<CancelTasksRequest, CancelTasksResponse>(auth, log, "CancelTasks", (req, ctx) =>
      book.cancel(req, userOf(ctx)),
    ),
    listTasks: unary<ListTasksRequest, ListTasksResponse>(auth, log, "ListTasks", (req, ctx) =>
      lister.list(req, userOf(ctx)),
    ),
    watchTasks: serverStream<WatchTasksRequest, WatchTasksResponse>(
      auth,
      log,
      "WatchTasks",
      (req, call, ctx) => watcher.watch(req, call, userOf(ctx)),
    ),
    session: sessionHandler(
      {
        submit: (req, owner) => submitter.submit(req, owner),
        watch: (req, sink, owner) => watcher.watch(req, sink, owner),
      },
      auth,
      log,
    ),
  };
}
