// What the `fabric` CLI shows while it waits, on a terminal only: a spinner for one task, a bar
// for many. Into a pipe or a file nothing extra is written: scripts read only the results.
import cliProgress from "cli-progress";
import ora from "ora";

/** A terminal the CLI may draw progress on (stderr), or undefined when it is not one. */
export type ProgressStream = NodeJS.WriteStream | undefined;

/** A spinner with a line of text and the seconds spent; `stop()` clears it. */
export function spinner(stream: ProgressStream, text: string): { stop(): void } {
  if (!stream) return { stop: () => undefined };
  const started = Date.now();
  const s = ora({ text, stream, discardStdin: false }).start();
  const timer = setInterval(() => {
    s.text = `${text} (${Math.round((Date.now() - started) / 1000)} s)`;
  }, 1000);
  timer.unref();
  return {
    stop: () => {
      clearInterval(timer);
      s.stop();
    },
  };
}

/** A bar of tasks finished out of `total`, with how many succeeded and failed, and the rate. */
export function taskBar(
  stream: ProgressStream,
  total: number,
): { finished(ok: boolean): void; stop(): void } {
  if (!stream || total < 2) return { finished: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: "{bar} {value}/{total} tasks | ok {ok} | failed {failed} | {rate}/s | eta {eta_formatted}",
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = Date.now();
  let ok = 0;
  let failed = 0;
  bar.start(total, 0, { ok, failed, rate: "0" });
  return {
    finished: (success) => {
      if (success) ok++;
      else failed++;
      const rate = ((ok + failed) / Math.max(0.001, (Date.now() - started) / 1000)).toFixed(1);
      bar.increment(1, { ok, failed, rate });
    },
    stop: () => bar.stop(),
  };
}
