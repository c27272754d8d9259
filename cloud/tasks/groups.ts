import { notFound } from "../../common/index.js";
import type { FabricStore } from "../state/store.js";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A task group's own record (key: the group id). */
interface GroupMeta {
  owner: string;
  createdAtMs: number;
}

/**
 * Task groups, in the groups bucket: one record per group (its owner) and one per submission to
 * it (key `GROUP.SUBMISSION`, the submission's task ids). A group is its owner's alone: anyone
 * else is told NOT_FOUND, exactly as for an unknown id.
 */
export class TaskGroups {
  constructor(private readonly store: FabricStore) {}

  /** Creates the group's record (fails with "wrong last sequence" if it exists). */
  async create(groupId: string, owner: string): Promise<void> {
    const meta: GroupMeta = { owner, createdAtMs: Date.now() };
    await this.store.createGroupRecord(groupId, encoder.encode(JSON.stringify(meta)));
  }

  /** Records one submission's tasks as members of the group. */
  async addMembers(groupId: string, submissionId: string, taskIds: readonly string[]): Promise<void> {
    await this.store.putGroupRecord(`${groupId}.${submissionId}`, encoder.encode(JSON.stringify(taskIds)));
  }

  /** Resolves when `owner` owns the group; NOT_FOUND if not (or if it does not exist). */
  async assertOwned(groupId: string, owner: string): Promise<void> {
    const bytes = await this.store.readGroupRecord(groupId);
    if (!bytes) throw notFound(`task group ${groupId} not found`);
    const meta = JSON.parse(decoder.decode(bytes)) as GroupMeta;
    if (meta.owner !== owner) throw notFound(`task group ${groupId} not found`);
  }

  /** The task ids of `owner`'s group, every submission's. */
  async members(groupId: string, owner: string): Promise<string[]> {
    await this.assertOwned(groupId, owner);
    const ids: string[] = [];
    for await (const key of await this.store.groupRecordKeys(`${groupId}.*`)) {
      const bytes = await this.store.readGroupRecord(key);
      if (bytes) ids.push(...(JSON.parse(decoder.decode(bytes)) as string[]));
    }
    return ids;
  }
}
