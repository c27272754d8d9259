import { randomUUID } from "node:crypto";

/** A new random id (UUID v4), used for functions, endpoints, tasks and groups. */
export function newId(): string {
  return randomUUID();
}

/** The shape of every id this system issues: a lower-case UUID. */
export const ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Whether `s` looks like an id this system issues. */
export function isId(s: string): boolean {
  return ID_PATTERN.test(s);
}
