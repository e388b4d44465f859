// A final upload's partials as they stand, read to concatenate them (finals.ts) and to decide when the final
// expires (uploads.ts): a module of its own, so that neither of those imports the other.

import { TusErrors, type TusHttpError } from '../errors.js'
import type { UploadConcat, UploadInfo } from '../store/types.js'
import type { TusServices } from './services.js'

export type FinalConcat = UploadConcat & { type: 'final' }

/**
 * The final's partials as they stand, one per entry of its `parts`, each still the upload the final was made of;
 * else PARTIAL_GONE (410), never the partial's own 404, which would read as the final's. Not the same upload: one
 * created again under the id (onUploadCreate may choose ids: someone else's, maybe, which onUploadAccess checked
 * only when the final was made), or something other than a partial. A final stored before its partials' identities
 * were recorded knows them by id alone.
 */
export async function partialsOf (services: TusServices, concat: FinalConcat): Promise<UploadInfo[]> {
  const reads = new Map<string, Promise<UploadInfo>>()
  return await Promise.all(concat.parts.map(async (id, index) => {
    const read = reads.get(id) ?? services.store.getInfo(id)
    reads.set(id, read)
    const partial = await read.catch((error: unknown) => {
      throw (error as TusHttpError).code === 'FST_TUS_NOT_FOUND' ? new TusErrors.PARTIAL_GONE(id) : error
    })
    const made = concat.partials?.[index]
    const replaced = made !== undefined && (Date.parse(made.createdAt) !== partial.createdAt.getTime() || made.size !== partial.size)
    if (replaced || partial.concat?.type !== 'partial') throw new TusErrors.PARTIAL_GONE(id)
    return partial
  }))
}

/**
 * The time (ms) of the latest write to a final's partials; -Infinity when one is gone: the final can never complete,
 * and nothing of it is worth keeping longer than its own retention.
 */
export async function latestPartialWrite (services: TusServices, concat: FinalConcat): Promise<number> {
  try {
    return Math.max(...(await partialsOf(services, concat)).map((partial) => partial.modifiedAt.getTime()))
  } catch (error) {
    if ((error as TusHttpError).code === 'FST_TUS_PARTIAL_GONE') return -Infinity
    throw error
  }
}
