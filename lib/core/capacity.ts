import { statfs } from 'node:fs/promises'
import { TusErrors } from '../errors.js'
import type { UploadInfo } from '../store/types.js'

/**
 * The disk reserve (`minFreeSpace`): bytes that must stay free on the filesystem of `dir`. Free space alone
 * does not tell what uploads already accepted will still write, so this process remembers, for each upload
 * it accepted, the bytes it may still write (its length minus its offset); a creation or an append is
 * refused with 507 when its bytes and everything still promised would cross the reserve. A deferred length
 * counts the bytes a request announces. Promises live in this process: after a restart only free space counts.
 */
export class DiskReserve {
  readonly #promised = new Map<string, number>()
  readonly #directory: string
  readonly #reserve: number
  #total = 0

  /** `reserve`: the bytes that must stay free on the filesystem of `directory` (0: no check). */
  constructor (directory: string, reserve: number) {
    this.#directory = directory
    this.#reserve = reserve
  }

  /** Refuses (507) `bytes` more for `id` when they and the other uploads' promises would cross the reserve. */
  async ensureRoom (id: string, bytes: number): Promise<void> {
    const reserve = this.#reserve
    if (reserve === 0) return
    const stats = await statfs(this.#directory).catch(() => undefined)
    if (stats === undefined) return
    const free = stats.bavail * stats.bsize
    const promisedToOthers = this.#total - (this.#promised.get(id) ?? 0)
    if (free - promisedToOthers - bytes < reserve) throw new TusErrors.INSUFFICIENT_STORAGE(bytes)
  }

  /** Records what `upload` may still write (nothing once complete, or once gone). */
  track (upload: Pick<UploadInfo, 'id' | 'offset' | 'size'> | undefined, id = upload?.id): void {
    if (this.#reserve === 0 || id === undefined) return
    const remaining = upload?.size === undefined ? 0 : Math.max(0, upload.size - upload.offset)
    this.#total += remaining - (this.#promised.get(id) ?? 0)
    if (remaining === 0) this.#promised.delete(id)
    else this.#promised.set(id, remaining)
  }
}
