/** Dotted version numbers ("3.10", "3.11.4"), as Python functions name the interpreter they need. */

/** A version of one to three dot-separated numbers. */
export const VERSION_PATTERN = /^\d{1,4}(\.\d{1,4}){0,2}$/;

/**
 * Compares dotted versions ("3.10" < "3.10.1" < "3.11"); a missing part counts as 0.
 * @returns negative, 0 or positive, as `a` is lower, equal or higher
 */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
