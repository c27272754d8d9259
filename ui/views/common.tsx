import type { ComponentChildren } from "preact";

import { ApiError } from "../api.js";
import { stateLabel } from "../format.js";

/** A task state as a coloured badge. */
export function StateBadge({ state }: { state: string }) {
  return <span class={`badge state-${state}`}>{stateLabel(state)}</span>;
}

/** A failed load, said in a line (the view keeps showing what it had). */
export function LoadError({ error }: { error: Error | undefined }) {
  if (!error) return null;
  const code = error instanceof ApiError ? `${error.code}: ` : "";
  return (
    <p class="error" role="alert">
      {code}
      {error.message}
    </p>
  );
}

/** A labelled number. */
export function Tile({
  label,
  value,
  tone,
  onClick,
  title,
}: {
  label: string;
  value: ComponentChildren;
  tone?: string;
  onClick?: () => void;
  title?: string;
}) {
  const body = (
    <>
      <span class="tile-value">{value}</span>
      <span class="tile-label">{label}</span>
    </>
  );
  return onClick ? (
    <button type="button" class={`tile ${tone ?? ""}`} onClick={onClick} title={title} data-tile={label}>
      {body}
    </button>
  ) : (
    <div class={`tile ${tone ?? ""}`} title={title} data-tile={label}>
      {body}
    </div>
  );
}

/** A block of text that may be long: scrolls, keeps whitespace. */
export function Pre({ text, label }: { text: string; label: string }) {
  return (
    <pre class="pre" aria-label={label}>
      {text}
    </pre>
  );
}
