import fs, { type Dirent, type Stats } from 'node:fs'
import { opendir } from 'node:fs/promises'
import { eachConcurrently } from './each-concurrently.js'

/**
 * File-system calls through callbacks and plain descriptors, for the small files the file store and the file
 * locker make on every upload or lock: each costs less of the event loop's time than its fs/promises twin
 * (readFile alone asks for the size and reads again to the end; a FileHandle is an object per open).
 */

/**
 * Whether a store's cheapest file-system calls (closing a file, the `stat` of a data file whose inode was read
 * lately) run synchronously on the event loop: a few microseconds there, against 10-30 µs of CPU and two thread
 * switches for a round trip through libuv's thread pool. A call slower than SLOW_CALL_MS counts as slow; more than
 * SLOW_CALLS_ALLOWED slow ones among CALL_WINDOW turn them off (the thread pool from then on): a few are the process
 * being preempted on a busy machine; more are a file system that makes such calls wait (the disk, the network). One
 * call slower than BLOCKING_CALL_MS turns them off at once: the event loop stood still that long (a network file
 * system flushing a file on close). Opening, reading and writing always go through the thread pool: they may wait
 * for the disk or a journal.
 *
 * Off is not for good: a process that was only descheduled (a machine loaded for a while, a container throttled at
 * its CPU quota) looks the same from here, and would otherwise pay the thread pool for the rest of its life. They are
 * tried again after FIRST_OFF_MS, then after twice as long each time they prove slow again at once, up to MAX_OFF_MS:
 * a file system that is slow stalls the event loop once in so long at most. A full window of quick calls after a
 * retry starts the doubling over.
 */
export class QuickCalls {
  readonly #now: () => number
  /** When the calls may run synchronously again (0: they do now). */
  #offUntil = 0
  #offFor = FIRST_OFF_MS
  #calls = 0
  #slow = 0

  /** `now`: a clock in milliseconds (performance.now), for tests. */
  constructor (now: () => number = () => performance.now()) {
    this.#now = now
  }

  get enabled (): boolean {
    if (this.#offUntil === 0) return true
    if (this.#now() < this.#offUntil) return false
    this.#offUntil = 0
    return true
  }

  /** `call`, run now and timed. */
  run<T> (call: () => T): T {
    const start = this.#now()
    try {
      return call()
    } finally {
      const end = this.#now()
      const elapsed = end - start
      if (elapsed > BLOCKING_CALL_MS || (elapsed > SLOW_CALL_MS && ++this.#slow > SLOW_CALLS_ALLOWED)) {
        this.#offUntil = end + this.#offFor
        this.#offFor = Math.min(this.#offFor * 2, MAX_OFF_MS)
        this.#calls = 0
        this.#slow = 0
      } else if (++this.#calls === CALL_WINDOW) {
        this.#offFor = FIRST_OFF_MS
        this.#calls = 0
        this.#slow = 0
      }
    }
  }
}

const SLOW_CALL_MS = 1
const BLOCKING_CALL_MS = 20
const CALL_WINDOW = 1024
const SLOW_CALLS_ALLOWED = 16
const FIRST_OFF_MS = 10_000
const MAX_OFF_MS = 20 * 60_000

/**
 * A small file's contents as UTF-8: open, read until the end, close, with plain file descriptors (cheaper
 * than a FileHandle, and one call fewer than readFile, which asks for the size first); closed on the event loop
 * while `quick` allows.
 */
export async function readSmallFile (path: string, quick?: QuickCalls): Promise<string> {
  const fd = await openFd(path, 'r')
  try {
    let buffer = Buffer.allocUnsafe(4096)
    let length = 0
    for (;;) {
      const read = await new Promise<number>((resolve, reject) => {
        fs.read(fd, buffer, length, buffer.length - length, length, (error, bytesRead) => { if (error === null) resolve(bytesRead); else reject(error) })
      })
      length += read
      if (read === 0 || length < buffer.length) return buffer.toString('utf8', 0, length)
      const larger = Buffer.allocUnsafe(buffer.length * 4)
      buffer.copy(larger, 0, 0, length)
      buffer = larger
    }
  } finally {
    await closeFd(fd, quick)
  }
}

/**
 * Creates `path` (which must not exist) holding `text`, fsynced if `sync`, with plain file descriptors; closed on
 * the event loop while `quick` allows.
 */
export async function writeSmallFile (path: string, text: string, sync: boolean, quick?: QuickCalls): Promise<void> {
  const fd = await openFd(path, 'wx')
  try {
    const bytes = Buffer.from(text)
    let written = 0
    while (written < bytes.length) {
      written += await new Promise<number>((resolve, reject) => {
        fs.write(fd, bytes, written, bytes.length - written, null, (error, count) => { if (error === null) resolve(count); else reject(error) })
      })
    }
    if (sync) await new Promise<void>((resolve, reject) => { fs.fsync(fd, (error) => { if (error === null) resolve(); else reject(error) }) })
  } catch (error) {
    await closeFd(fd).catch(() => undefined)
    await unlink(path).catch(() => undefined)
    throw error
  }
  await closeFd(fd, quick)
}

async function openFd (path: string, flags: string | number, mode?: number): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    fs.open(path, flags, mode, (error, fd) => { if (error === null) resolve(fd); else reject(error) })
  })
}

/**
 * A data file open for the store, as a plain descriptor: opening and closing one costs less than a FileHandle
 * (an object with a promise and an async wrapper per call), and its close can run on the event loop while
 * `quick` allows. Closed once: a second close does nothing (the number may be another file's by then).
 */
export class DataFile {
  readonly fd: number
  /**
   * Bytes written through this descriptor since its last background flush began (counted by whoever writes, when
   * its store fsyncs): across the requests of an upload, while the descriptor is kept open between them.
   */
  unflushed = 0
  #closed = false
  /** The background flush in flight (`flushInBackground`). */
  #flushing: Promise<void> | undefined
  /** Why a background flush failed: thrown by `sync`, `flushesDone` and `checkFlushes` from then on. */
  #flushFailure: { error: unknown } | undefined

  private constructor (fd: number) {
    this.fd = fd
  }

  /** `mode`: the permissions of a file it creates (the process's umask applies); 0o666 when not given. */
  static async open (path: string, flags: string | number, mode?: number): Promise<DataFile> {
    return new DataFile(await openFd(path, flags, mode))
  }

  /** Sets the file's permissions: on the event loop while `quick` allows (a change of the inode, no data). */
  async chmod (mode: number, quick?: QuickCalls): Promise<void> {
    if (quick?.enabled === true) {
      quick.run(() => { fs.fchmodSync(this.fd, mode) })
      return
    }
    await new Promise<void>((resolve, reject) => { fs.fchmod(this.fd, mode, (error) => { if (error === null) resolve(); else reject(error) }) })
  }

  async stat (): Promise<Stats> {
    return await new Promise((resolve, reject) => { fs.fstat(this.fd, (error, stats) => { if (error === null) resolve(stats); else reject(error) }) })
  }

  /** fsync, once a background flush has ended: fails as that flush did (data it did not write may be lost). */
  async sync (): Promise<void> {
    await this.flushesDone()
    await new Promise<void>((resolve, reject) => { fs.fsync(this.fd, (error) => { if (error === null) resolve(); else reject(error) }) })
  }

  /**
   * Starts an fdatasync that no one awaits, unless one is in flight, and counts `unflushed` from 0 again: the disk
   * then writes what the file received while more arrives (through this request or the next of its upload), instead
   * of all of it at the fsync that completes it. `sync`, `flushesDone` and `close` wait for it.
   */
  flushInBackground (): void {
    if (this.#flushing !== undefined) return
    this.unflushed = 0
    this.#flushing = new Promise<void>((resolve) => {
      fs.fdatasync(this.fd, (error) => {
        if (error !== null) this.#flushFailure ??= { error }
        this.#flushing = undefined
        resolve()
      })
    })
  }

  /** Throws why a background flush failed, if one did. */
  checkFlushes (): void {
    if (this.#flushFailure !== undefined) throw this.#flushFailure.error
  }

  /** Waits for the background flush in flight, then throws why one failed, if one did. */
  async flushesDone (): Promise<void> {
    await this.#flushing
    this.checkFlushes()
  }

  async truncate (length: number): Promise<void> {
    await new Promise<void>((resolve, reject) => { fs.ftruncate(this.fd, length, (error) => { if (error === null) resolve(); else reject(error) }) })
  }

  /**
   * Closes the descriptor once no background flush uses it (its number could otherwise be another file's by the
   * time the flush runs); `flushesDone` first, for a caller that must know whether they all succeeded.
   */
  async close (quick?: QuickCalls): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#flushing !== undefined) await this.#flushing
    await closeFd(this.fd, quick)
  }
}

/** fs.unlink and fs.rename through callbacks: cheaper than fs/promises per call. */
export async function unlink (path: string): Promise<void> {
  await new Promise<void>((resolve, reject) => { fs.unlink(path, (error) => { if (error === null) resolve(); else reject(error) }) })
}

export async function rename (from: string, to: string): Promise<void> {
  await new Promise<void>((resolve, reject) => { fs.rename(from, to, (error) => { if (error === null) resolve(); else reject(error) }) })
}

async function closeFd (fd: number, quick?: QuickCalls): Promise<void> {
  if (quick?.enabled === true) {
    quick.run(() => { fs.closeSync(fd) })
    return
  }
  await new Promise<void>((resolve, reject) => { fs.close(fd, (error) => { if (error === null || error === undefined) resolve(); else reject(error) }) })
}

/**
 * The file's stats (with `lstat`: the path's own, a link's and not its target's), or undefined when there is none
 * (callback fs: cheaper than fs/promises per call).
 */
export async function statIfExists (path: string, call: 'stat' | 'lstat' = 'stat'): Promise<Stats | undefined> {
  const stat = call === 'stat' ? fs.stat : fs.lstat
  return await new Promise((resolve, reject) => {
    stat(path, (error, stats) => {
      if (error === null) resolve(stats)
      else if (isNotFound(error)) resolve(undefined)
      else reject(error)
    })
  })
}

export function isNotFound (error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
}

/** Unlinks `path`: true when it did, false when there was nothing to unlink. */
export async function unlinkIfExists (path: string): Promise<boolean> {
  try {
    await unlink(path)
    return true
  } catch (error) {
    if (!isNotFound(error)) throw error
    return false
  }
}

/** A regular file (not a link, not a directory) last modified before `horizon` (milliseconds since the epoch). */
export function isOldFile (stats: Stats | undefined, horizon: number): boolean {
  return stats !== undefined && stats.isFile() && stats.mtimeMs < horizon
}

/**
 * Calls `sweep` on the entries of `directory` as the directory streams (never listed whole), `concurrency` at a
 * time; resolves with how many it said it removed. A missing directory has none.
 */
export async function sweepDirectory (directory: string, concurrency: number, sweep: (entry: Dirent) => Promise<boolean>): Promise<number> {
  let opened: fs.Dir
  try {
    opened = await opendir(directory, { bufferSize: 128 })
  } catch (error) {
    if (isNotFound(error) || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return 0
    throw error
  }
  let removed = 0
  await eachConcurrently(opened, concurrency, async (entry) => {
    if (await sweep(entry)) removed++
  })
  return removed
}
