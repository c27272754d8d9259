import type { Socket } from "node:net";
import type { Readable, Writable } from "node:stream";

/** Largest frame accepted on the agent↔manager and manager↔worker links. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

/**
 * Splits a byte stream into frames of `4-byte big-endian length + body`. Pure: feed it chunks,
 * it calls `onFrame` for each complete frame. A frame over the limit is a protocol error.
 */
export class FrameDecoder {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;

  constructor(
    private readonly onFrame: (frame: Uint8Array) => void,
    private readonly maxFrameBytes = MAX_FRAME_BYTES,
  ) {}

  push(chunk: Buffer): void {
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    if (this.bufferedBytes < 4) return;
    let buf =
      this.buffered.length === 1 ? this.buffered[0]! : Buffer.concat(this.buffered, this.bufferedBytes);
    let offset = 0;
    while (buf.length - offset >= 4) {
      const len = buf.readUInt32BE(offset);
      if (len > this.maxFrameBytes) {
        throw new Error(`frame of ${len} bytes exceeds the ${this.maxFrameBytes}-byte limit`);
      }
      if (buf.length - offset - 4 < len) break;
      const frame = buf.subarray(offset + 4, offset + 4 + len);
      offset += 4 + len;
      this.onFrame(frame);
    }
    buf = buf.subarray(offset);
    this.buffered = buf.length > 0 ? [buf] : [];
    this.bufferedBytes = buf.length;
  }
}

/** Prefixes a body with its 4-byte big-endian length. */
export function encodeFrame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, 4);
  return out;
}

/** Calls `onFrame` for each frame read from `stream`; protocol errors go to `onError`. */
export function readFrames(
  stream: Readable | Socket,
  onFrame: (frame: Uint8Array) => void,
  onError: (err: Error) => void,
): void {
  const decoder = new FrameDecoder(onFrame);
  stream.on("data", (chunk: Buffer) => {
    try {
      decoder.push(chunk);
    } catch (err) {
      onError(err as Error);
    }
  });
}

/** What {@link readMessages} hands on: each message, and what made the stream unreadable. */
export interface MessageHandlers<T> {
  onMessage(msg: T): void;
  /**
   * A frame that is not a message of the type ("undecodable frame": the peer speaks another or a
   * broken protocol), or framing that is broken ("protocol error": a frame over the limit, see
   * {@link readFrames}). Either way the stream is no use any more.
   */
  onBadFrame(err: Error, problem: "undecodable frame" | "protocol error"): void;
}

/**
 * Reads `stream` as frames that each hold one message of `type` (a generated message, e.g.
 * `AgentMessage`), and hands each decoded message to `handlers`.
 */
export function readMessages<T>(
  stream: Readable | Socket,
  type: { decode(frame: Uint8Array): T },
  handlers: MessageHandlers<T>,
): void {
  readFrames(
    stream,
    (frame) => {
      let msg: T;
      try {
        msg = type.decode(frame);
      } catch (err) {
        handlers.onBadFrame(err as Error, "undecodable frame");
        return;
      }
      handlers.onMessage(msg);
    },
    (err) => handlers.onBadFrame(err, "protocol error"),
  );
}

/**
 * Writes one frame; returns false when the stream asks the writer to wait for 'drain'. Frames
 * written in the same tick leave in one system call (the stream is corked until the next tick).
 */
export function writeFrame(stream: Writable | Socket, body: Uint8Array): boolean {
  if (stream.writableCorked === 0) {
    stream.cork();
    process.nextTick(() => stream.uncork());
  }
  return stream.write(encodeFrame(body));
}
