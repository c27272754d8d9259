/**
 * The longest a task may run, in seconds (30 days): the bound on a function's timeout, a shell
 * walltime and a task's own timeout_s. Longer than setTimeout can wait, hence common/timers.ts.
 */
export const MAX_TIMEOUT_S = 30 * 24 * 3600;
