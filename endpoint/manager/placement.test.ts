import { describe, expect, it } from "vitest";

import type { WorkItem } from "../../proto/index.js";
import { resolveContainerConfig } from "../runtime/config.js";
import {
  barePlacements,
  containerPlacements,
  demandOf,
  idleToRetire,
  placementOf,
  planLaunches,
  warmToLaunch,
} from "./placement.js";
import type { SlotView } from "./placement.js";
import type { Placement, SlotState } from "./worker-slot.js";

function item(taskId: string, fn: { image?: string; shell?: boolean; network?: boolean } = {}): WorkItem {
  return {
    taskId,
    functionId: `f-${taskId}`,
    function: {
      kind: fn.shell
        ? { $case: "shell", value: { command: "true", walltimeS: 0 } }
        : { $case: "js", value: { source: "function f() {}", entryPoint: "f" } },
      containerImage: fn.image ?? "",
      network: fn.network ?? false,
    },
    argsJson: Buffer.alloc(0),
    kwargsJson: Buffer.alloc(0),
    attempt: 1,
  };
}

interface TestSlot extends SlotView {
  readonly name: string;
}

function slot(
  name: string,
  placement: Placement,
  state: SlotState,
  idleSinceMs: number,
  busy = false,
): TestSlot {
  return { name, placement, state, idleSinceMs, current: busy ? item(`${name}-task`) : undefined };
}

const cfg = resolveContainerConfig({ runtime: "docker", pool: { keepWarm: 1, idleSeconds: 60 } });
const containers = containerPlacements(cfg, 4);
const js = placementOf(cfg.image, false);
const sh = placementOf(cfg.shellImage, false);
const custom = placementOf("lab/analysis:2", false);
const names = (slots: readonly TestSlot[]) => slots.map((s) => s.name);

describe("placements", () => {
  it("bare processes: one fixed set of `size` workers that takes every task", () => {
    const p = barePlacements(3);
    expect(p).toMatchObject({ keepWarm: 3, elastic: false });
    expect(p.of(item("a", { image: "x", network: true }))).toBe(p.warm);
    expect(p.of(item("b", { shell: true }))).toBe(p.warm);
  });

  it("containers: the function's image, else the shell or default image; a network only where allowed", () => {
    expect(containers).toMatchObject({ warm: js, keepWarm: 1, elastic: true, idleMs: 60_000 });
    expect(containers.of(item("a"))).toEqual(js);
    expect(containers.of(item("b", { shell: true }))).toEqual(sh);
    expect(containers.of(item("c", { image: "lab/analysis:2", shell: true }))).toEqual(custom);
    expect(containers.of(item("d", { network: true }))).toEqual(placementOf(cfg.image, true));
    expect(containers.of(item("d", { network: true })).key).not.toBe(js.key);
    const deny = containerPlacements(
      resolveContainerConfig({ runtime: "docker", network: { policy: "deny" } }),
      4,
    );
    expect(deny.of(item("e", { network: true })).network).toBe(false);
    // keepWarm never exceeds the pool's size.
    expect(
      containerPlacements(resolveContainerConfig({ runtime: "docker", pool: { keepWarm: 9 } }), 2).keepWarm,
    ).toBe(2);
  });

  it("removes workers idle too long, but keeps the most recently used warm ones", () => {
    const now = 1_000_000;
    const slots = [
      slot("warm-old", js, "ready", now - 120_000),
      slot("warm-recent", js, "ready", now - 90_000),
      slot("custom-old", custom, "ready", now - 61_000),
      slot("custom-fresh", custom, "ready", now - 10_000),
      slot("busy", custom, "ready", now - 500_000, true),
      slot("starting", custom, "starting", now - 500_000),
    ];
    expect(names(idleToRetire(slots, containers, now))).toEqual(["custom-old", "warm-old"]);
    // A fixed set of bare processes is never shrunk.
    expect(idleToRetire(slots, barePlacements(4), now)).toEqual([]);
  });

  it("starts warm workers up to keepWarm, within the pool's size; retiring ones do not count", () => {
    const bare = barePlacements(3);
    expect(warmToLaunch([], bare, 3)).toBe(3);
    expect(
      warmToLaunch([slot("a", bare.warm, "ready", 0), slot("b", bare.warm, "starting", 0)], bare, 3),
    ).toBe(1);
    expect(warmToLaunch([slot("a", bare.warm, "retiring", 0)], bare, 3)).toBe(3);
    expect(warmToLaunch([], containers, 4)).toBe(1);
    // Full of other images: no room for a warm one.
    const full = ["a", "b", "c", "d"].map((n) => slot(n, custom, "ready", 0));
    expect(warmToLaunch(full, containers, 4)).toBe(0);
  });

  it("counts waiting tasks per placement, in the order the queue names them", () => {
    const d = demandOf([item("a", { shell: true }), item("b"), item("c", { shell: true })], containers);
    expect([...d.values()].map(({ placement, n }) => [placement.image, n])).toEqual([
      [cfg.shellImage, 2],
      [cfg.image, 1],
    ]);
  });

  it("plans a worker per waiting task beyond those starting, and makes room when full", () => {
    const demand = demandOf([item("a", { shell: true }), item("b", { shell: true }), item("c")], containers);
    // One shell worker is starting already: one more shell worker and a JS one.
    const some = [slot("s1", sh, "starting", 0)];
    expect(planLaunches(some, demand, 4)).toEqual({ launch: [sh, js], retire: undefined });
    // Room for one: the shell worker, then full; the idle worker nobody waits for, idle longest, goes.
    const crowded = [
      slot("s1", sh, "starting", 0),
      slot("idle-late", custom, "ready", 500),
      slot("idle-early", custom, "ready", 100),
    ];
    const plan = planLaunches(crowded, demand, 4);
    expect(plan.launch).toEqual([sh]);
    expect(plan.retire?.name).toBe("idle-early");
    // Full, and every idle worker is of a placement some task waits for: nothing to do but wait.
    const waiting = [
      slot("j1", js, "ready", 0, true),
      slot("s1", sh, "ready", 0),
      slot("s2", sh, "starting", 0),
    ];
    expect(planLaunches(waiting, demand, 3)).toEqual({ launch: [], retire: undefined });
  });
});
