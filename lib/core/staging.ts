import { createReadStream } from 'node:fs'
import { mkdir, open, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import { isOldFile, statIfExists, sweepDirectory, unlinkIfExists } from '../fs-calls.js'
import type { RunningChecksum } from './checksum.js'
import { freeReadChunk } from './free-memory.js'

const READ_CHUNK = 1024 * 1024
/** Staged bodies checked at once by a sweep. */
const SWEEP_CONCURRENCY = 16
/** A staged body's file name: 24 hex digits (12 random bytes) and `.chunk`. */
const STAGED_NAME = /^[0-9a-f]{24}\.chunk$/
/** Staged bodies of this process that exist now (made, not yet removed): never swept, whatever their age. */
const live = new Set<string>()

/** Where staged bodies are kept: `.staging` in the plugin's `dir` (whatever the store). */
export function stagingDirectory (dir: string): string {
  return join(dir, '.staging')
}

/**
 * A request body held in a temporary file until it may be committed: a checksummed chunk must not
 * reach the upload before its digest is verified (T-K-5), whether its checksum came as a header or is
 * announced as a trailer (known only after the last byte); and a chunked body for a store that cannot cut
 * bytes off again (no `truncate`).
 */
export class StagedChunk {
  readonly path: string
  bytes = 0

  private constructor (path: string) {
    this.path = path
  }

  /**
   * Writes `source` to a new file in `directory`, feeding `checksum` (if any) as the bytes pass; each chunk written
   * goes to `reclaim` (WriteOptions.reclaim).
   */
  static async from (
    directory: string, source: AsyncIterable<Buffer>, checksum: RunningChecksum | undefined, reclaim?: (chunk: Buffer) => void
  ): Promise<StagedChunk> {
    await mkdir(directory, { recursive: true })
    const staged = new StagedChunk(join(directory, `${randomBytes(12).toString('hex')}.chunk`))
    live.add(staged.path)
    const handle = await open(staged.path, 'wx').catch((error: unknown) => {
      live.delete(staged.path)
      throw error
    })
    try {
      try {
        for await (const chunk of source) {
          checksum?.update(chunk)
          let position = 0
          while (position < chunk.length) {
            const { bytesWritten } = await handle.write(chunk, position, chunk.length - position)
            position += bytesWritten
          }
          staged.bytes += chunk.length
          reclaim?.(chunk)
        }
      } finally {
        await handle.close()
      }
    } catch (error) {
      await staged.remove()
      throw error
    }
    return staged
  }

  read (): Readable {
    return createReadStream(this.path, { highWaterMark: READ_CHUNK })
  }

  /** Digest of the staged bytes, for a checksum whose algorithm was learnt only from a trailer. */
  async digest (checksum: RunningChecksum): Promise<Buffer> {
    for await (const chunk of this.read()) {
      checksum.update(chunk as Buffer)
      freeReadChunk(chunk as Buffer)
    }
    return checksum.digest()
  }

  async remove (): Promise<void> {
    await rm(this.path, { force: true })
    live.delete(this.path)
  }
}

/**
 * Removes the staged bodies in `directory` last modified before `before`: what a crash in the middle of a
 * request left behind (a request removes its own when it ends, whatever happened). A body a request is staging
 * or committing now is newer than any retention horizon, and those of this process are skipped whatever their
 * age. Only files named as staged bodies are touched; the directory is streamed, never listed whole. Resolves
 * with how many it removed.
 */
export async function removeStaleStaged (directory: string, before: Date): Promise<number> {
  const horizon = before.getTime()
  return await sweepDirectory(directory, SWEEP_CONCURRENCY, async (entry) => {
    if (!STAGED_NAME.test(entry.name) || entry.isDirectory() || entry.isSymbolicLink()) return false
    const path = join(directory, entry.name)
    if (live.has(path)) return false
    // The age checked right before the unlink (a request writing it keeps its modification time recent).
    if (!isOldFile(await statIfExists(path, 'lstat'), horizon)) return false
    return await unlinkIfExists(path)
  })
}
