import { z } from "zod";

/** A positive integer config field, with an error message that names what was expected. */
export const positiveInt = () =>
  z
    .number({ error: "expected a positive integer" })
    .int({ error: "expected a positive integer" })
    .positive({ error: "expected a positive integer" });

/** A non-negative integer config field. */
export const nonNegativeInt = () =>
  z
    .number({ error: "expected a non-negative integer" })
    .int({ error: "expected a non-negative integer" })
    .nonnegative({ error: "expected a non-negative integer" });
