/**
 * Which worker may take which task, and how many workers a pool keeps. Bare processes are one
 * fixed set that takes everything. Containers are kept in warm pools per (image, network)
 * placement: they start on demand, make room for each other, and are removed after they idled
 * for `pool.idleSeconds`, except `pool.keepWarm` of the default image. Pure: the pool acts on
 * what these functions decide.
 */
import type { WorkItem } from "../../proto/index.js";
import type { ContainerConfig } from "../runtime/config.js";
import { networkAllowed } from "../runtime/docker-options.js";
import type { Placement, WorkerLanguage, WorkerSlot } from "./worker-slot.js";

/** What the placement rules read of a slot. */
export type SlotView = Pick<WorkerSlot, "placement" | "state" | "current" | "idleSinceMs">;

/** The placements of one pool and how many workers it keeps. */
export interface Placements {
  /** Where the workers kept warm run. */
  readonly warm: Placement;
  /** How many workers of `warm` are kept, idle or not. */
  readonly keepWarm: number;
  /**
   * Whether workers start on demand and idle ones are removed (containers). Otherwise the pool is
   * a fixed set of `keepWarm` workers, replaced when they die.
   */
  readonly elastic: boolean;
  /** How long a worker beyond `keepWarm` may idle before it is removed (elastic pools). */
  readonly idleMs: number;
  /** Where `item` must run. */
  of(item: WorkItem): Placement;
}

/** The placement of `language` workers of `image`, with or without a network. */
export function placementOf(image: string, network: boolean, language: WorkerLanguage = "node"): Placement {
  const lang = language === "node" ? "" : `${language}\u0000`;
  return { key: `${lang}${image}\u0000${network ? "net" : "none"}`, language, image, network };
}

/** Whether `item` is a Python function's task (it needs a Python worker). */
export function isPythonTask(item: WorkItem): boolean {
  return item.function?.kind?.$case === "python";
}

/**
 * Bare worker processes: `size` of them. Node workers (JavaScript and shell) are kept warm; a
 * Python task gets a Python interpreter, which takes the place of an idle Node worker when the
 * pool is full, and gives it back when a JavaScript or shell task needs the room.
 */
export function barePlacements(size: number): Placements {
  const warm: Placement = { key: "", language: "node", image: "", network: false };
  const python: Placement = { key: "python", language: "python", image: "", network: false };
  return {
    warm,
    keepWarm: size,
    elastic: false,
    idleMs: Infinity,
    of: (item) => (isPythonTask(item) ? python : warm),
  };
}

/**
 * Containers: a task runs in its function's image, else the default image (JavaScript) or shell
 * image; with a network when the function asked for one and the endpoint's policy allows it.
 */
export function containerPlacements(cfg: ContainerConfig, size: number): Placements {
  return {
    warm: placementOf(cfg.image, false),
    keepWarm: Math.min(cfg.pool.keepWarm, size),
    elastic: true,
    idleMs: cfg.pool.idleSeconds * 1000,
    of: (item) => {
      const fn = item.function;
      const kind = fn?.kind?.$case;
      const language = kind === "python" ? "python" : "node";
      const fallback = kind === "shell" ? cfg.shellImage : kind === "python" ? cfg.pythonImage : cfg.image;
      return placementOf(fn?.containerImage || fallback, networkAllowed(cfg, fn?.network ?? false), language);
    },
  };
}

const isIdle = (s: SlotView) => s.state === "ready" && !s.current;
const isLive = (s: SlotView) => s.state !== "retiring";

/**
 * The idle workers of an elastic pool to remove at `nowMs`: those idle for `idleMs` or longer,
 * except the `keepWarm` most recently used of the warm placement.
 */
export function idleToRetire<S extends SlotView>(slots: Iterable<S>, p: Placements, nowMs: number): S[] {
  if (!p.elastic) return [];
  let warmKept = 0;
  const out: S[] = [];
  // Most recently used first: those are the warm ones kept.
  const idle = [...slots].filter(isIdle).sort((a, b) => b.idleSinceMs - a.idleSinceMs);
  for (const s of idle) {
    if (s.placement.key === p.warm.key && warmKept < p.keepWarm) {
      warmKept++;
      continue;
    }
    if (nowMs - s.idleSinceMs >= p.idleMs) out.push(s);
  }
  return out;
}

/** How many workers of the warm placement to start: up to `keepWarm`, within `size` live workers. */
export function warmToLaunch(slots: Iterable<SlotView>, p: Placements, size: number): number {
  let warm = 0;
  let live = 0;
  for (const s of slots) {
    if (!isLive(s)) continue;
    live++;
    if (s.placement.key === p.warm.key) warm++;
  }
  return Math.max(0, Math.min(p.keepWarm - warm, size - live));
}

/** How many waiting tasks each placement has, in the order the queue first names them. */
export type Demand = Map<string, { readonly placement: Placement; n: number }>;

/** The demand of the tasks in `queue`. */
export function demandOf(queue: readonly WorkItem[], p: Placements): Demand {
  const demand: Demand = new Map();
  for (const item of queue) {
    const placement = p.of(item);
    const d = demand.get(placement.key) ?? { placement, n: 0 };
    d.n++;
    demand.set(placement.key, d);
  }
  return demand;
}

/** What an elastic pool does for waiting tasks: workers to start, and at most one to remove. */
export interface LaunchPlan<S> {
  readonly launch: Placement[];
  /** An idle worker that makes room for a placement with waiting tasks once it is gone. */
  readonly retire: S | undefined;
}

/**
 * Starts a worker for each waiting task beyond those already starting of its placement, while
 * fewer than `size` exist. When full, the idle worker of a placement nobody waits for that has
 * idled longest is removed, and nothing more is planned (its exit makes the room).
 */
export function planLaunches<S extends SlotView>(
  slots: readonly S[],
  demand: Demand,
  size: number,
): LaunchPlan<S> {
  const launch: Placement[] = [];
  let total = slots.length;
  for (const { placement, n } of demand.values()) {
    let starting = slots.filter((s) => s.placement.key === placement.key && s.state === "starting").length;
    while (starting < n) {
      if (total >= size) {
        const victim = slots
          .filter((s) => isIdle(s) && !demand.has(s.placement.key))
          .sort((a, b) => a.idleSinceMs - b.idleSinceMs)[0];
        return { launch, retire: victim };
      }
      launch.push(placement);
      total++;
      starting++;
    }
  }
  return { launch, retire: undefined };
}
