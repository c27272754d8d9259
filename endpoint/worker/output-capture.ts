/**
 * What a JavaScript task writes to stdout and stderr (console.log, process.stdout.write), kept per
 * task: the last {@link OUTPUT_CAP_BYTES} of each, after a line `[… N bytes cut …]` when more was
 * written. A worker runs one task at a time, so whatever is written while a task runs is that
 * task's; what a function writes after it returned (a stray timer) goes with the next task.
 * Nothing captured reaches the worker's own stdout or stderr.
 */
import type { TaskOutput } from "../../proto/index.js";

/** Most bytes kept of each stream per task. */
export const OUTPUT_CAP_BYTES = 64 * 1024;

class Tail {
  private parts: string[] = [];
  private chars = 0;
  private cut = 0;

  add(s: string): void {
    if (s.length === 0) return;
    this.parts.push(s);
    this.chars += s.length;
    // Past 2 x cap characters there are surely more than cap bytes: keep only the tail.
    if (this.chars > 2 * OUTPUT_CAP_BYTES) this.compact();
  }

  private compact(): void {
    const all = Buffer.from(this.parts.join(""));
    let start = Math.max(0, all.length - OUTPUT_CAP_BYTES);
    // Start on a character boundary: skip UTF-8 continuation bytes.
    while (start < all.length && (all[start]! & 0xc0) === 0x80) start++;
    this.cut += start;
    const kept = all.subarray(start).toString();
    this.parts = [kept];
    this.chars = kept.length;
  }

  take(): string {
    if (this.parts.length === 0) return "";
    this.compact();
    const text = this.parts.join("");
    const out = this.cut > 0 ? `[… ${this.cut} bytes cut …]\n${text}` : text;
    this.parts = [];
    this.chars = 0;
    this.cut = 0;
    return out;
  }
}

function chunkText(chunk: unknown, encoding: unknown): string {
  if (typeof chunk === "string") return chunk;
  if (chunk instanceof Uint8Array)
    return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString(
      typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8",
    );
  return String(chunk);
}

/** Takes over `process.stdout.write` and `process.stderr.write` of the worker, for good. */
export class OutputCapture {
  private readonly out = new Tail();
  private readonly err = new Tail();

  constructor() {
    const swap = (stream: NodeJS.WriteStream, tail: Tail) => {
      const replacement = function (this: unknown, chunk: unknown, encoding?: unknown, cb?: unknown) {
        tail.add(chunkText(chunk, encoding));
        const done = typeof encoding === "function" ? encoding : cb;
        if (typeof done === "function") queueMicrotask(() => (done as () => void)());
        return true;
      };
      stream.write = replacement;
    };
    swap(process.stdout, this.out);
    swap(process.stderr, this.err);
  }

  /** What was written since the last call; undefined when nothing was. */
  take(): TaskOutput | undefined {
    const stdout = this.out.take();
    const stderr = this.err.take();
    return stdout || stderr ? { stdout, stderr } : undefined;
  }
}
