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

  /**
   * Claims room for `bytes` more of `id`, or refuses them (507) when they and the other uploads' promises would cross
   * the reserve. The claim is recorded as soon as the free space is known, before any other request's check can run:
   * requests checked at the same time cannot together promise more than the disk holds. It stands until `track`
   * records what the upload may still write, or `release` forgets it.
   */
  async claim (id: string, bytes: number): Promise<void> {
    const reserve = this.#reserve
    if (reserve === 0) return
    const stats = await statfs(this.#directory).catch(() => undefined)
    if (stats === undefined) return
    const free = stats.bavail * stats.bsize
    const own = this.#promised.get(id) ?? 0
    if (free - (this.#total - own) - bytes < reserve) throw new TusErrors.INSUFFICIENT_STORAGE(bytes)
    this.#promise(id, Math.max(own, bytes))
  }

  /** `bytes` of `id` handed to the store: the free space counts them from now on, so its promise no longer does. */
  stored (id: string, bytes: number): void {
    const own = this.#promised.get(id)
    if (own !== undefined) this.#promise(id, Math.max(0, own - bytes))
  }

  /** Records what `upload` may still write (nothing once complete, nor while its length is unknown). */
  track (upload: Pick<UploadInfo, 'id' | 'offset' | 'size'>): void {
    this.#promise(upload.id, upload.size === undefined ? 0 : Math.max(0, upload.size - upload.offset))
  }

  /** Forgets `id`'s promise: it was removed, or its creation failed. */
  release (id: string): void {
    this.#promise(id, 0)
  }

  #promise (id: string, bytes: number): void {
    if (this.#reserve === 0) return
    this.#total += bytes - (this.#promised.get(id) ?? 0)
    if (bytes === 0) this.#promised.delete(id)
    else this.#promised.set(id, bytes)
  }
}
