import { constants } from "node:buffer";
import { createHash } from "node:crypto";

import type { Msg, NatsConnection } from "@nats-io/transport-node";

import { FabricError, toFabricError } from "../../common/index.js";

/** What an object's metadata message holds (the JSON nats.js and the Go client write). */
interface ObjectMeta {
  readonly name?: string;
  readonly nuid?: string;
  readonly size?: number;
  readonly chunks?: number;
  readonly digest?: string;
  readonly deleted?: boolean;
  readonly options?: { readonly link?: unknown };
}

/** One stored message as read back: its stream sequence and payload. */
interface StoredChunk {
  readonly seq: number;
  readonly data: Uint8Array;
}

const DIGEST_PREFIX = "SHA-256=";

/** Options of {@link ObjectReader}. */
export interface ObjectReaderOptions {
  /** Time allowed for each request to the server (ms). */
  readonly timeoutMs?: number;
  /** Objects larger than this (by their metadata) are refused without reading a chunk. */
  readonly maxBytes?: number;
}

/**
 * Reads objects of one JetStream object store with message gets only: the metadata by its last
 * message on `$O.<bucket>.M.<name>`, then the chunks one by one on `$O.<bucket>.C.<nuid>`.
 *
 * Why not the object-store client's `get`: it creates a push consumer, so the reader's NATS user
 * would need consumer-creation rights on the stream, and the server republishes the stream's bytes
 * to whatever deliver subject such a consumer names, regardless of that user's publish permissions.
 * Message gets need no consumer and no flow control.
 *
 * Every request is a `$JS.API.STREAM.MSG.GET.<stream>`, which the stream leader answers (so a
 * replica lagging behind the write cannot make an object look missing). Not a direct get, although
 * object-store streams allow them: the server sends any answer to whatever reply subject the
 * request names, and a direct get answers with the stored bytes themselves, so a user allowed
 * direct gets on a stream it may write can have bytes of its choosing published on any subject. A missing object
 * reads as `null`; a corrupt one (size, chunk or digest mismatch) throws INVALID_ARGUMENT; a server
 * out of reach throws UNAVAILABLE. Nothing waits longer than the request timeout.
 */
export class ObjectReader {
  private readonly stream: string;
  private readonly timeoutMs: number;
  private readonly maxBytes: number;

  constructor(
    private readonly nc: NatsConnection,
    readonly bucket: string,
    options: ObjectReaderOptions = {},
  ) {
    this.stream = `OBJ_${bucket}`;
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.maxBytes = options.maxBytes ?? constants.MAX_LENGTH;
  }

  /** The object's bytes, or null when the bucket holds no such object (or it was deleted). */
  async read(name: string): Promise<Uint8Array | null> {
    if (!name) throw new FabricError("INVALID_ARGUMENT", "an object name must not be empty");
    const metaMsg = await this.get({ last_by_subj: metaSubject(this.bucket, name) });
    if (!metaMsg) return null;
    const meta = this.parseMeta(name, metaMsg.data);
    if (meta.deleted) return null;
    if (meta.options?.link) {
      throw this.corrupt(name, "it is a link to another object, which payloads never are");
    }
    const size = meta.size ?? -1;
    const chunks = meta.chunks ?? -1;
    if (!Number.isSafeInteger(size) || size < 0 || !Number.isSafeInteger(chunks) || chunks < 0) {
      throw this.corrupt(name, "its metadata has no valid size or chunk count");
    }
    if (size > this.maxBytes) {
      throw new FabricError(
        "INVALID_ARGUMENT",
        `object ${name} in ${this.bucket} has ${size} bytes, more than the ${this.maxBytes} allowed`,
        { reason: "invalid_task" },
      );
    }
    const expected = parseDigest(meta.digest);
    if (!expected) throw this.corrupt(name, `its digest "${meta.digest ?? ""}" is not a SHA-256 digest`);
    if (size > 0 && (chunks === 0 || !meta.nuid || !/^[A-Za-z0-9]+$/.test(meta.nuid))) {
      throw this.corrupt(name, "its metadata names no chunks");
    }

    // Collected, not preallocated: memory follows the bytes that really arrive, not the claim.
    const parts: Uint8Array[] = [];
    const sha = createHash("sha256");
    const chunkSubject = `$O.${this.bucket}.C.${meta.nuid ?? ""}`;
    let got = 0;
    // Chunks precede their metadata in the stream; walk them in order from the stream's start.
    let nextSeq = 1;
    for (let i = 0; i < chunks && size > 0; i++) {
      const chunk = await this.get({ next_by_subj: chunkSubject, seq: nextSeq });
      if (!chunk) throw this.corrupt(name, `chunk ${i + 1} of ${chunks} is missing`);
      if (got + chunk.data.length > size) {
        throw this.corrupt(name, `its chunks hold more than the ${size} bytes its metadata says`);
      }
      parts.push(chunk.data);
      sha.update(chunk.data);
      got += chunk.data.length;
      nextSeq = chunk.seq + 1;
    }
    if (got !== size) throw this.corrupt(name, `its chunks hold ${got} bytes, its metadata says ${size}`);
    if (!sha.digest().equals(expected)) throw this.corrupt(name, "its bytes do not match its SHA-256 digest");
    return Buffer.concat(parts, got);
  }

  private parseMeta(name: string, data: Uint8Array): ObjectMeta {
    try {
      const meta = JSON.parse(Buffer.from(data).toString("utf8")) as unknown;
      if (typeof meta === "object" && meta !== null && !Array.isArray(meta)) return meta;
    } catch {
      // reported below
    }
    throw this.corrupt(name, "its metadata is not a JSON object");
  }

  private corrupt(name: string, why: string): FabricError {
    return new FabricError("INVALID_ARGUMENT", `object ${name} in ${this.bucket} is corrupt: ${why}`, {
      reason: "invalid_task",
    });
  }

  /** One message by the query (`last_by_subj`, or `next_by_subj` from `seq`), or null. */
  private async get(query: Record<string, string | number>): Promise<StoredChunk | null> {
    const m = await this.request(`$JS.API.STREAM.MSG.GET.${this.stream}`, JSON.stringify(query));
    let r: {
      message?: { seq?: number; data?: string };
      error?: { code?: number; err_code?: number; description?: string };
    };
    try {
      r = JSON.parse(Buffer.from(m.data).toString("utf8")) as typeof r;
    } catch {
      throw new FabricError("UNAVAILABLE", `${this.stream}: the message get answer is not JSON`);
    }
    if (r.error) {
      // 10037: no message found; 10059: no such stream (an object of a bucket never created).
      if (r.error.err_code === 10037 || r.error.err_code === 10059 || r.error.code === 404) return null;
      throw new FabricError(
        "UNAVAILABLE",
        `${this.stream}: message get failed: ${r.error.description ?? "unknown error"} (${r.error.err_code ?? r.error.code ?? "?"})`,
      );
    }
    const seq = r.message?.seq ?? 0;
    if (!Number.isSafeInteger(seq) || seq < 1) {
      throw new FabricError("UNAVAILABLE", `${this.stream}: the message get answer has no sequence number`);
    }
    return { seq, data: Buffer.from(r.message?.data ?? "", "base64") };
  }

  private async request(subject: string, body: string): Promise<Msg> {
    try {
      return await this.nc.request(subject, body, { timeout: this.timeoutMs });
    } catch (err) {
      const fe = toFabricError(err);
      throw fe.code === "UNAVAILABLE" ? fe : new FabricError("UNAVAILABLE", fe.message, { cause: err });
    }
  }
}

/** The subject of an object's metadata: its name in padded base64url, as nats.js writes it. */
export function metaSubject(bucket: string, name: string): string {
  const token = Buffer.from(name, "utf8").toString("base64url");
  return `$O.${bucket}.M.${token}${"=".repeat((4 - (token.length % 4)) % 4)}`;
}

/** The 32 bytes of a `SHA-256=<base64 or base64url, padded or not>` digest, or undefined. */
function parseDigest(digest: string | undefined): Buffer | undefined {
  if (!digest?.startsWith(DIGEST_PREFIX)) return undefined;
  const text = digest.slice(DIGEST_PREFIX.length);
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) return undefined;
  const bytes = Buffer.from(text.replace(/\+/g, "-").replace(/\//g, "_"), "base64url");
  return bytes.length === 32 ? bytes : undefined;
}
