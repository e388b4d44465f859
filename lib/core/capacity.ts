import { statfs } from 'node:fs/promises'
import { TusErrors } from '../errors.js'
import type { TusServices } from './services.js'

/**
 * Refuses a new upload with 507 when storing it would leave less than `minFreeSpace` bytes free on the
 * filesystem of `dir`: a flood of creations (or one huge one) cannot fill the disk other uploads need.
 * A deferred length counts as zero; its PATCHes are bounded by `maxSize` as ever.
 */
export async function ensureFreeSpace (services: TusServices, size: number | undefined): Promise<void> {
  const reserve = services.options.minFreeSpace
  if (reserve === 0) return
  const stats = await statfs(services.options.dir).catch(() => undefined)
  if (stats === undefined) return
  const free = stats.bavail * stats.bsize
  if (free - (size ?? 0) < reserve) throw new TusErrors.INSUFFICIENT_STORAGE(size ?? 0)
}
