import { watch, type FSWatcher } from 'node:fs'
import { link, mkdir, stat, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { TusErrors, errorMessage, retryLater } from '../errors.js'
import { refuseUnknownKeys } from '../known-keys.js'
import { readSmallFile, rename, unlink, writeSmallFile } from '../fs-calls.js'
import { isValidUploadId } from '../ids.js'
import { HolderTokens, Lease, RetryWaiter, addTo, positiveInteger, removeFrom, type LockOptions, type UploadLock, type UploadLocker } from './lock.js'

export interface FileLockerOptions {
  /**
   * Directory of the lock files, shared by every process that serves the uploads (on one host, or a file
   * system whose rename and exclusive create are atomic); created if missing. E.g. `<uploads>/.locks`.
   */
  directory: string
  /**
   * How long a lock outlives a holder that stopped renewing it (a crashed or frozen process), in ms. The
   * holder renews it every third of this. Default 10000.
   */
  ttlMs?: number
  /**
   * Longest wait between two attempts of a waiting request, in ms. Waiters are woken at once when a lock
   * file is removed (fs.watch); this bounds the wait where such events are not delivered. Default 100.
   */
  retryMs?: number
}

interface Holder {
  onReleaseRequested: (() => void) | undefined
  token: string
}

/**
 * Serialises the requests on one upload across the processes of one host without a lock service, like tusd's
 * filelocker: `<id>.lock` created exclusively (`wx`) holds the holder's token, and its modification time is the
 * lease, renewed every ttl/3. A lock not renewed for `ttlMs` (its process died or froze) is taken over: moved
 * aside by rename (atomic: one taker wins), checked to be the one seen expired, then created anew. A waiting
 * request asks the holder to finish by touching `<id>.release`; processes hear it, and releases, through
 * fs.watch. The lock's signal is aborted when the lease may have run out, as with RedisLocker.
 */
export class FileLocker implements UploadLocker {
  readonly directory: string
  readonly #ttlMs: number
  readonly #retryMs: number
  readonly #holders = new Map<string, Set<Holder>>()
  readonly #waiters = new Map<string, Set<RetryWaiter>>()
  readonly #tokens = new HolderTokens()
  #ready: Promise<void> | undefined
  #watcher: FSWatcher | undefined

  constructor (options: FileLockerOptions) {
    refuseUnknownKeys('FileLocker', options, Object.keys({ directory: true, ttlMs: true, retryMs: true } satisfies Record<keyof FileLockerOptions, true>))
    if (typeof options.directory !== 'string' || options.directory === '') throw new TusErrors.INVALID_OPTION('FileLocker directory must be a non-empty string')
    this.directory = options.directory
    this.#ttlMs = positiveInteger('FileLocker', 'ttlMs', options.ttlMs ?? 10_000)
    this.#retryMs = positiveInteger('FileLocker', 'retryMs', options.retryMs ?? 100)
  }

  async lock (id: string, options: LockOptions): Promise<UploadLock> {
    if (!isValidUploadId(id)) throw new TusErrors.NOT_FOUND()
    const deadline = Date.now() + options.timeoutMs
    await this.#start()
    const path = this.#path(id, 'lock')
    const token = this.#tokens.next()
    const waiter = new RetryWaiter()
    addTo(this.#waiters, id, waiter)
    let takenAt = Date.now()
    let asked = false
    try {
      for (;;) {
        takenAt = Date.now()
        if (await this.#take(path, token)) break
        const remaining = deadline - Date.now()
        if (remaining <= 0) throw new TusErrors.LOCKED()
        if (!asked && options.requestRelease !== false) {
          asked = true
          await failure(async () => { await writeFile(this.#path(id, 'release'), token) })
          // This process's own holders hear it at once, whatever fs.watch does.
          for (const holder of this.#holders.get(id) ?? []) holder.onReleaseRequested?.()
        }
        await waiter.wait(Math.min(remaining, this.#retryMs))
      }
    } finally {
      removeFrom(this.#waiters, id, waiter)
      // A request is removed by the waiter that made it, once it holds the lock or gives up (unless another
      // waiter's has replaced it): the holder need not look for one at each release, which mostly finds none.
      if (asked) await removeIfHolds(this.#path(id, 'release'), token)
    }
    return this.#hold(id, path, token, options.onReleaseRequested, takenAt)
  }

  async close (): Promise<void> {
    this.#watcher?.close()
    this.#watcher = undefined
    this.#ready = undefined
  }

  /** One attempt: creates the lock file, or takes over one whose lease ran out. */
  async #take (path: string, token: string): Promise<boolean> {
    if (await failure(async () => await createExclusive(path, token))) return true
    let seen: string
    let modified: number
    try {
      seen = await readSmallFile(path)
      modified = (await stat(path)).mtimeMs
    } catch (error) {
      if (code(error) === 'ENOENT') return false // released meanwhile: the next attempt comes at once
      throw lockFailed(error)
    }
    if (modified + this.#ttlMs > Date.now()) return false
    // Expired. Only one taker's rename succeeds; it then checks that it moved the lock it saw expire, not a
    // fresh one created in between (which it puts back).
    const aside = `${path}.${token}.expired`
    try {
      await rename(path, aside)
    } catch (error) {
      if (code(error) === 'ENOENT') return false
      throw lockFailed(error)
    }
    const moved = await readSmallFile(aside).catch(() => undefined)
    if (moved !== seen) await link(aside, path).catch(() => {})
    await unlink(aside).catch(() => {})
    if (moved !== seen) return false
    return await failure(async () => await createExclusive(path, token))
  }

  #hold (id: string, path: string, token: string, onReleaseRequested: (() => void) | undefined, takenAt: number): UploadLock {
    const holder: Holder = { onReleaseRequested, token }
    addTo(this.#holders, id, holder)
    const lease = new Lease(id, this.#ttlMs, takenAt, async () => {
      try {
        if (await readSmallFile(path) !== token) return 'another holder has it'
        const now = new Date()
        await utimes(path, now, now)
        return undefined
      } catch (error) {
        if (code(error) === 'ENOENT') return 'its file was removed'
        throw error
      }
    }, () => { holder.onReleaseRequested?.() })
    return lease.lock(async () => {
      removeFrom(this.#holders, id, holder)
      try {
        if (await readSmallFile(path) === token) await unlink(path)
      } catch {
        // Gone already, or unreadable: a lock left behind expires after ttlMs.
      }
      // Waiters of this process, whatever fs.watch delivers.
      for (const waiter of this.#waiters.get(id) ?? []) waiter.signal()
    })
  }

  /** Creates the directory and watches it: a removed lock file wakes its waiters, a release request its holders. */
  #start (): Promise<void> {
    this.#ready ??= (async () => {
      await failure(async () => { await mkdir(this.directory, { recursive: true }) })
      try {
        this.#watcher = watch(this.directory, { persistent: false }, (_event, name) => {
          const match = typeof name === 'string' ? /^([A-Za-z0-9_-]+)\.(lock|release)$/.exec(name) : null
          if (match === null) return
          const [, id = '', kind] = match
          if (kind === 'lock') {
            for (const waiter of this.#waiters.get(id) ?? []) waiter.signal()
          } else if (this.#holders.has(id)) {
            // A request (not the removal of an answered one), and not one this holder made while it waited.
            readSmallFile(this.#path(id, 'release')).then((requester) => {
              for (const holder of this.#holders.get(id) ?? []) if (holder.token !== requester) holder.onReleaseRequested?.()
            }, () => {})
          }
        })
        this.#watcher.on('error', () => {})
      } catch {
        // No fs.watch here (some network file systems): waiters poll every retryMs, release requests are not heard.
      }
    })()
    return this.#ready.catch((error: unknown) => {
      this.#ready = undefined
      throw error
    })
  }

  #path (id: string, kind: 'lock' | 'release'): string {
    return join(this.directory, `${id}.${kind}`)
  }
}

/** Creates `path` holding `token`; false when it exists. */
async function createExclusive (path: string, token: string): Promise<boolean> {
  try {
    await writeSmallFile(path, token, false)
    return true
  } catch (error) {
    if (code(error) === 'EEXIST') return false
    throw error
  }
}

/** Removes `path` if it holds `token`. */
async function removeIfHolds (path: string, token: string): Promise<void> {
  if (await readSmallFile(path).catch(() => undefined) === token) await unlink(path).catch(() => {})
}

/** A file system failure while locking: 503 FST_TUS_LOCK_FAILED with Retry-After, its details logged. */
async function failure<T> (step: () => Promise<T>): Promise<T> {
  try {
    return await step()
  } catch (error) {
    throw lockFailed(error)
  }
}

function lockFailed (error: unknown): Error {
  const known = error as { code?: unknown }
  if (typeof known.code === 'string' && known.code.startsWith('FST_TUS_')) return error as Error
  return retryLater(new TusErrors.LOCK_FAILED(errorMessage(error)), 1)
}

function code (error: unknown): unknown {
  return (error as { code?: unknown }).code
}
