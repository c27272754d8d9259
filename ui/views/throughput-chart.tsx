import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";

import { clock } from "../format.js";
import type { TaskStats } from "../types.js";

/** The chart's data: seconds since 1970 (x), then tasks finished and failed per second. */
export function seriesData(series: TaskStats["series"]): [number[], number[], number[]] {
  const perS = 1000 / series.bucketMs;
  const xs = series.finished.map((_, i) => (series.fromMs + i * series.bucketMs) / 1000);
  return [xs, series.finished.map((n) => n * perS), series.failed.map((n) => n * perS)];
}

/**
 * Tasks finished per second (and of those, failed) over the series' span, drawn with uPlot; the
 * chart is made once and given new data on each refresh.
 */
export function ThroughputChart({ series }: { series: TaskStats["series"] | undefined }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | undefined>(undefined);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const u = new uPlot(
      {
        width: Math.max(300, el.clientWidth),
        height: 180,
        legend: { show: true },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
        axes: [
          {
            space: 80,
            // Whole minutes as 14:05, other ticks with their seconds.
            values: (_u, splits) =>
              splits.map((s) => (s % 60 === 0 ? clock(s * 1000).slice(0, 5) : clock(s * 1000))),
          },
          { label: "tasks/s", size: 50 },
        ],
        series: [
          { value: (_u, v) => (v == null ? "--" : clock(v * 1000)) },
          { label: "finished/s", stroke: "#2563eb", fill: "rgba(37, 99, 235, 0.12)", width: 1.5 },
          { label: "failed/s", stroke: "#dc2626", width: 1.5 },
        ],
      },
      [[], [], []],
      el,
    );
    plot.current = u;
    const resize = () => u.setSize({ width: Math.max(300, el.clientWidth), height: 180 });
    addEventListener("resize", resize);
    return () => {
      removeEventListener("resize", resize);
      u.destroy();
      plot.current = undefined;
    };
  }, []);

  useEffect(() => {
    if (series && plot.current) plot.current.setData(seriesData(series));
  }, [series]);

  return <div class="chart" ref={box} data-testid="throughput-chart" />;
}
