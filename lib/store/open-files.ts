import type { DataFile } from '../fs-calls.js'

/** Which file a handle or a cached info belongs to: a file removed and created again is another one. */
export interface FileIdentity {
  ino: number
  birthtimeMs: number
}

export function sameFile (a: FileIdentity, b: FileIdentity): boolean {
  return a.ino === b.ino && a.birthtimeMs === b.birthtimeMs
}

/**
 * The identity of a data file created by the sole writer of its upload (an in-process lock: no other process
 * writes it) without asking the file system: the first `stat` of the path gives the real one.
 */
export const UNSTATED: FileIdentity = Object.freeze({ ino: -1, birthtimeMs: -1 })

/** What the store knows of a kept file from its own writes: its size and when it last wrote it, and its handle (to fstat). */
export interface KnownFile {
  identity: FileIdentity
  size: number
  modifiedAt: Date
  readonly handle: DataFile
}

interface Entry extends KnownFile {
  timer: NodeJS.Timeout
}

/**
 * Data files kept open between the requests of an upload: from its creation to its first PATCH, and across
 * PATCHes in sequence, so that each saves an open and a close. At most `max` are kept (the least recently
 * used is closed first), each closed after `idleMs` without use, on `drop`, `forget` (termination) and on
 * `closeAll`. A handle is lent to one writer at a time (`take` removes it) and given back with `keep`. The caller
 * checks the identity against a fresh `stat` of the path before it writes through a kept handle.
 *
 * A background flush (`DataFile.flushInBackground`) that failed on a handle closed unused is told to the upload's
 * next `take`: a descriptor opened afterwards would not hear of it (Linux reports a writeback error to the
 * descriptors open when it happened), and the upload could complete over data the disk lost.
 */
export class OpenFiles {
  readonly #entries = new Map<string, Entry>()
  readonly #max: number
  readonly #idleMs: number
  /** Closes in progress, awaited by closeAll. */
  readonly #closing = new Set<Promise<void>>()
  /** Why the background flush of a handle closed unused failed, by upload, until its next `take`. */
  readonly #failedFlushes = new Map<string, unknown>()
  /** The close in progress of a handle of an upload, whose failed flush its next `take` must hear of. */
  readonly #closingOf = new Map<string, Promise<void>>()

  constructor (max: number, idleMs: number) {
    this.#max = max
    this.#idleMs = idleMs
  }

  get size (): number {
    return this.#entries.size
  }

  /**
   * Takes the kept handle of `id` if it is open on `identity`; a handle on another file is closed. Throws why the
   * background flush of a handle of `id` closed unused failed, once.
   */
  take (id: string, identity: FileIdentity | undefined): DataFile | undefined {
    if (this.#failedFlushes.has(id)) {
      const failure = this.#failedFlushes.get(id)
      this.#failedFlushes.delete(id)
      throw failure
    }
    const entry = this.#entries.get(id)
    if (entry === undefined) return undefined
    this.#entries.delete(id)
    clearTimeout(entry.timer)
    if (identity !== undefined && sameFile(entry.identity, identity)) return entry.handle
    this.#close(entry.handle, undefined)
    return undefined
  }

  /**
   * The close in progress of a handle of `id` (its flush may still run), if any: awaited before a `take`, so that
   * a write or a completion right after a drop hears how that flush ended.
   */
  closing (id: string): Promise<void> | undefined {
    return this.#closingOf.get(id)
  }

  /** What is known of the kept file of `id`, if one is kept (not lent to a writer). */
  known (id: string): KnownFile | undefined {
    return this.#entries.get(id)
  }

  /**
   * A `stat` of the kept file of `id`, by a request that asks the file (HEAD, GET, expiry). The same size: the
   * file as this store's last write left it, and its time is the file's (something may have set it since). Another
   * size: the stat raced a write (a read without the lock) or something wrote behind this store's back; what is
   * known is no longer trusted and the handle is closed (the next write asks the file).
   */
  saw (id: string, size: number, modifiedAt: Date): void {
    const entry = this.#entries.get(id)
    if (entry === undefined) return
    if (entry.size === size) entry.modifiedAt = modifiedAt
    else this.drop(id)
  }

  /** The kept file of `id` was created UNSTATED and a `stat` of its path found it: it is that file. */
  adopt (id: string, identity: FileIdentity): void {
    const entry = this.#entries.get(id)
    if (entry !== undefined && sameFile(entry.identity, UNSTATED)) entry.identity = identity
  }

  /**
   * Keeps `handle` (open on the file `identity`, `size` bytes long after this store's last write at
   * `modifiedAt`) for the next writer of `id`.
   */
  keep (id: string, handle: DataFile, identity: FileIdentity, size: number, modifiedAt: Date): void {
    if (this.#max === 0) {
      this.#close(handle, id)
      return
    }
    this.drop(id)
    const timer = setTimeout(() => { this.drop(id) }, this.#idleMs).unref()
    this.#entries.set(id, { handle, identity, size, modifiedAt, timer })
    if (this.#entries.size > this.#max) this.drop(this.#entries.keys().next().value!)
  }

  /** Closes the kept handle of `id`, if any. */
  drop (id: string): void {
    this.#remove(id, id)
  }

  /** Closes the kept handle of `id`, if any, whose upload is removed: how its flushes ended is no one's concern. */
  forget (id: string): void {
    this.#remove(id, undefined)
    this.#failedFlushes.delete(id)
  }

  async closeAll (): Promise<void> {
    for (const id of [...this.#entries.keys()]) this.drop(id)
    await Promise.allSettled([...this.#closing])
  }

  #remove (id: string, owner: string | undefined): void {
    const entry = this.#entries.get(id)
    if (entry === undefined) return
    this.#entries.delete(id)
    clearTimeout(entry.timer)
    this.#close(entry.handle, owner)
  }

  /** Closes `handle` (once its flush ended); a failed flush is kept for the next `take` of `owner`'s upload, if any. */
  #close (handle: DataFile, owner: string | undefined): void {
    const closing = handle.close().catch(() => undefined).finally(() => {
      this.#closing.delete(closing)
      if (owner !== undefined && this.#closingOf.get(owner) === closing) this.#closingOf.delete(owner)
      try {
        handle.checkFlushes()
      } catch (error) {
        if (owner !== undefined) this.#failedFlushes.set(owner, error)
      }
    })
    this.#closing.add(closing)
    if (owner !== undefined) this.#closingOf.set(owner, closing)
  }
}
