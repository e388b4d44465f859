import fs, { type Dirent, type Stats } from 'node:fs'
import { opendir } from 'node:fs/promises'
import { eachConcurrently } from './each-concurrently.js'

/**
 * File-system calls through callbacks and plain descriptors, for the small files the file store and the file
 * locker make on every upload or lock: each costs less of the event loop's time than its fs/promises twin
 * (readFile alone asks for the size and reads again to the end; a FileHandle is an object per open).
 */

/**
 * A small file's contents as UTF-8: open, read until the end, close, with plain file descriptors (cheaper
 * than a FileHandle, and one call fewer than readFile, which asks for the size first).
 */
export async function readSmallFile (path: string): Promise<string> {
  const fd = await new Promise<number>((resolve, reject) => {
    fs.open(path, 'r', (error, fd) => { if (error === null) resolve(fd); else reject(error) })
  })
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
    await closeFd(fd)
  }
}

/** Creates `path` (which must not exist) holding `text`, fsynced if `sync`, with plain file descriptors. */
export async function writeSmallFile (path: string, text: string, sync: boolean): Promise<void> {
  const fd = await new Promise<number>((resolve, reject) => {
    fs.open(path, 'wx', (error, fd) => { if (error === null) resolve(fd); else reject(error) })
  })
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
  await closeFd(fd)
}

/** fs.unlink and fs.rename through callbacks: cheaper than fs/promises per call. */
export async function unlink (path: string): Promise<void> {
  await new Promise<void>((resolve, reject) => { fs.unlink(path, (error) => { if (error === null) resolve(); else reject(error) }) })
}

export async function rename (from: string, to: string): Promise<void> {
  await new Promise<void>((resolve, reject) => { fs.rename(from, to, (error) => { if (error === null) resolve(); else reject(error) }) })
}

async function closeFd (fd: number): Promise<void> {
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
