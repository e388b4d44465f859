import { watch, type FSWatcher, type Stats } from 'node:fs'
import { link, mkdir, stat, utimes } from 'node:fs/promises'
import { join } from 'node:path'
import { TusErrors, errorMessage, retryLater } from '../errors.js'
import { refuseUnknownKeys } from '../known-keys.js'
import { readSmallFile, rename, statIfExists, unlink, unlinkIfExists, writeSmallFile } from '../fs-calls.js'
import { isValidUploadId } from '../ids.js'
import { HolderTokens, Lease, RetryWaiter, addTo, positiveInteger, removeFrom, type LockOptions, type UploadLock, type UploadLocker } from './lock.js'

export interface FileLockerOptions {
  /**
   * Directory of the lock files, shared by every process that serves the uploads (on one host, or a file
   * system with atomic hard links and exclusive create); created if missing. E.g. `<uploads>/.locks`.
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

/** A claim on an expired lock file (FileLocker#claim): its name, level, and when it was made (before the link). */
interface Claim {
  base: string
  level: number
  at: number
  name: string
}

/**
 * Serialises the requests on one upload across the processes of one host without a lock service, like tusd's
 * filelocker: `<id>.lock` created exclusively (`wx`) holds the holder's token, and its modification time is the
 * lease, renewed every ttl/3. A lock not renewed for `ttlMs` (its process died or froze) is taken over: claimed by a
 * hard link named after the token seen expired (one taker wins), checked to be that very file, removed, then created
 * anew; nobody ever moves another's lock file. A waiting
 * request asks the holder to finish by writing its token to `<id>.release`; processes hear it, and releases, through
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
          await failure(async () => { await writeWhole(this.#path(id, 'release'), token) })
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
    let seenStats: Stats
    try {
      seen = await readSmallFile(path)
      seenStats = await stat(path)
    } catch (error) {
      if (code(error) === 'ENOENT') return false // released meanwhile: the next attempt comes at once
      throw lockFailed(error)
    }
    if (!this.#expired(seenStats)) return false
    return await failure(async () => await this.#takeOver(path, token, seen, seenStats))
  }

  /**
   * Takes over the lock file that held `seen` and was seen expired (`seenStats`). No one moves a lock file that may
   * be another's: its one remover is whoever claims it (#claim), and removes it only if it is still that file, still
   * expired, and the claim is young enough that no one can have claimed it after this taker (half the ttl).
   */
  async #takeOver (path: string, token: string, seen: string, seenStats: Stats): Promise<boolean> {
    const claim = await this.#claim(path, seen, true)
    if (claim === undefined) return false
    // The claim keeps the claimed file's inode alive: a file at path with its number is that file.
    const current = await statIfExists(path)
    if (current !== undefined && current.ino === seenStats.ino && current.dev === seenStats.dev) {
      const young = Date.now() - claim.at < this.#ttlMs / 2
      if (!this.#expired(current) || !young) {
        // Renewed meanwhile (its holder woke up): it holds it still. Or this taker stalled: a claim that old is
        // left as it is (another taker may have claimed past it), to run out.
        if (young) await unlink(claim.name).catch(() => {})
        return false
      }
      await unlinkIfExists(path)
    } else if (current !== undefined) {
      // Already replaced (only if this taker stalled past its claim): the claimed file is gone for good.
      await this.#dropClaims(claim)
      return false
    }
    const created = await createExclusive(path, token)
    await this.#dropClaims(claim)
    return created
  }

  /**
   * Claims the lock file at `path` that holds `holder`, as the one process that may remove it: a hard link to it
   * named after its holder (created atomically, by one claimant only), checked to hold `holder` (else the file at
   * path was replaced meanwhile: undefined). A claim whose claimant stalled or died (its inode unchanged for the
   * ttl: a link sets the ctime) is passed by the next level's name when `walk`: never removed while its file may
   * still be at path, so that no one claims that file again at a level already passed.
   */
  async #claim (path: string, holder: string, walk: boolean): Promise<Claim | undefined> {
    const base = `${path}.${/^[\w-]{1,64}\.[a-z0-9]{1,16}$/.test(holder) ? holder : '-'}.claim`
    for (let level = 0; ; level++) {
      const name = level === 0 ? base : `${base}${level}`
      const at = Date.now()
      try {
        await link(path, name)
      } catch (error) {
        if (code(error) === 'ENOENT') return undefined // released meanwhile
        if (code(error) !== 'EEXIST') throw error
        if (!walk) return undefined
        const other = await statIfExists(name)
        if (other === undefined || other.ctimeMs + this.#ttlMs > Date.now()) return undefined // being taken over
        continue
      }
      const claim = { base, level, at, name }
      if (await readSmallFile(name).catch(() => undefined) === holder) return claim
      // Another lock file than the one seen: that one is gone for good, and so are its claims' uses.
      await this.#dropClaims(claim)
      return undefined
    }
  }

  /** Removes a claim and those of the levels below it: once the claimed file is gone from path, none is of use. */
  async #dropClaims (claim: Claim): Promise<void> {
    for (let level = claim.level; level >= 0; level--) await unlink(level === 0 ? claim.base : `${claim.base}${level}`).catch(() => {})
  }

  #expired (stats: Stats): boolean {
    return stats.mtimeMs + this.#ttlMs <= Date.now()
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
        if (lease.current) {
          // No one takes over a lock whose lease runs by its margin: the file holding the token is this holder's.
          if (await readSmallFile(path) === token && lease.current) await unlink(path)
        } else {
          // Perhaps being taken over: removed only through a claim, as a taker would (#takeOver).
          const claim = await this.#claim(path, token, false)
          if (claim !== undefined && Date.now() - claim.at < this.#ttlMs / 2) {
            await unlinkIfExists(path)
            await this.#dropClaims(claim)
          }
        }
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

/**
 * Writes `path` holding `token` by renaming a file of its own into place: two waiters writing at once over one
 * file could leave one's bytes in the other's request, which the one that gives up would then remove as its own.
 */
async function writeWhole (path: string, token: string): Promise<void> {
  const own = `${path}.${token}`
  await writeSmallFile(own, token, false)
  try {
    await rename(own, path)
  } catch (error) {
    await unlink(own).catch(() => {})
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
