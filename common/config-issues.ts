import type { z } from "zod";

/** How a value reads in an error message: `"slrum"`, `3`, `a list`, `a mapping`, `nothing`. */
export function describeValue(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "string") return JSON.stringify(v.length > 80 ? `${v.slice(0, 77)}...` : v);
  if (v === null || typeof v === "number" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return "a list";
  return typeof v === "object" ? "a mapping" : `a ${typeof v}`;
}

/**
 * One zod issue as `path.to.field: what was expected, got what was given` (with `reportInput`
 * on, so the given value is known). The top level is named "(top level)".
 */
export function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.length > 0 ? issue.path.map(String).join(".") : "(top level)";
  if (issue.code === "unrecognized_keys") {
    const at = issue.path.length > 0 ? `${path}: ` : "";
    return `${at}unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}`;
  }
  let input = "input" in issue ? issue.input : undefined;
  // A union on a field (`provider.type`) reports the whole object as its input: say what the
  // field held.
  const last = issue.path.at(-1);
  if (input !== null && typeof input === "object" && !Array.isArray(input) && typeof last === "string") {
    const own = (input as Record<string, unknown>)[last];
    if (own !== undefined || issue.code === "invalid_union") input = own;
  }
  const message = plain(issue.message);
  // A missing value reads better than "got nothing".
  if (input === undefined && (issue.code === "invalid_type" || issue.code === "invalid_union"))
    return `${path}: required (${message})`;
  return `${path}: ${message}, got ${describeValue(input)}`;
}

/** zod's own wording, in the words a config file uses. */
function plain(message: string): string {
  return message
    .replace(/^Invalid input: /, "")
    .replace(/, received \w+$/, "")
    .replace(/^expected object$/, "expected a mapping")
    .replace(/^expected array$/, "expected a list")
    .replace(/^expected (string|number|boolean)$/, "expected a $1");
}

/** Every issue of a zod error, `; `-separated. */
export function describeIssues(error: z.ZodError, separator = "; "): string {
  return error.issues.map(describeIssue).join(separator);
}
