/**
 * Timers for durations users choose (task timeouts, walltimes, watch deadlines).
 *
 * Node's `setTimeout` holds its delay in a signed 32-bit integer: anything above 2^31-1 ms
 * (about 24.8 days) is replaced by 1 ms, so a 30-day timeout would fire at once. These timers
 * wait in segments no longer than that and only call back once the whole duration has passed.
 */

/** The longest delay `setTimeout` honours (2^31-1 ms, about 24.8 days). */
export const MAX_TIMER_SEGMENT_MS = 2 ** 31 - 1;

/** A pending {@link setLongTimeout}: cancel it, or let it not keep the process alive. */
export interface LongTimer {
  /** Cancels the timer; the callback will not run. Safe to call more than once, or after it ran. */
  clear(): void;
  /** Lets the process exit while only this timer is pending (as `Timeout.unref`). */
  unref(): this;
  /** Undoes {@link LongTimer.unref}. */
  ref(): this;
}

/** Options of {@link setLongTimeout}. */
export interface LongTimeoutOptions {
  /**
   * The longest single `setTimeout` to use. Defaults to {@link MAX_TIMER_SEGMENT_MS}; tests
   * inject a small value to see the chaining without waiting weeks.
   */
  readonly maxSegmentMs?: number;
}

/**
 * Calls `fn` once after `ms` milliseconds, for any `ms` (beyond `setTimeout`'s 24.8-day limit).
 * A non-finite `ms` (Infinity) never fires; a negative or NaN `ms` fires as soon as possible, as
 * `setTimeout` does.
 *
 * @example
 * const deadline = setLongTimeout(() => stop("timeout"), timeoutS * 1000);
 * // … the task finished first:
 * deadline.clear();
 */
export function setLongTimeout(fn: () => void, ms: number, options: LongTimeoutOptions = {}): LongTimer {
  const maxSegmentMs = Math.max(1, Math.floor(options.maxSegmentMs ?? MAX_TIMER_SEGMENT_MS));
  // Counted down by the segments actually waited, not by the wall clock: a clock step (NTP,
  // suspend) must not end a deadline early.
  let remaining = Number.isNaN(ms) || ms < 0 ? 0 : ms;
  let handle: NodeJS.Timeout | undefined;
  let refed = true;
  let done = false;

  const arm = () => {
    const segment = Math.min(remaining, maxSegmentMs);
    handle = setTimeout(() => {
      handle = undefined;
      if (done) return;
      remaining -= segment;
      if (remaining > 0) return arm();
      done = true;
      fn();
    }, segment);
    if (!refed) handle.unref();
  };
  arm();

  const timer: LongTimer = {
    clear() {
      done = true;
      if (handle) clearTimeout(handle);
      handle = undefined;
    },
    unref() {
      refed = false;
      handle?.unref();
      return timer;
    },
    ref() {
      refed = true;
      handle?.ref();
      return timer;
    },
  };
  return timer;
}
