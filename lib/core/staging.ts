import { createReadStream } from 'node:fs'
import { mkdir, open, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { RunningChecksum } from './checksum.js'

const READ_CHUNK = 1024 * 1024

/**
 * A request body held in a temporary file until it may be committed: a checksummed chunk must not
 * reach the upload before its digest is verified (T-K-5), and a chunked body may bring its checksum
 * as a trailer, known only after the last byte.
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
    const handle = await open(staged.path, 'wx')
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
    for await (const chunk of this.read()) checksum.update(chunk as Buffer)
    return checksum.digest()
  }

  async remove (): Promise<void> {
    await rm(this.path, { force: true })
  }
}
