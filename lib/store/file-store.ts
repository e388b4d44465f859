import { createReadStream } from 'node:fs'
import { link, mkdir, open, readFile, readdir, rename, rm, stat, unlink } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { randomBytes } from 'node:crypto'
import { TusErrors } from '../errors.js'
import { isValidDirectory, isValidUploadId } from '../ids.js'
import type { ByteRange, DataStore, NewUpload, UploadConcat, UploadInfo, UploadMetadata } from './types.js'

const INFO_SUFFIX = '.json'
const DEFAULT_CACHE_SIZE = 1000

/** What `<id>.json` holds. The offset is not in it: it is the data file's size, so it is never stale. */
interface InfoFile {
  id: string
  size: number | null
  metadata: UploadMetadata
  concat?: UploadConcat
  /** Sub-directory of the data file (onUploadCreate's choice); the info file always stays in the root. */
  directory?: string
  createdAt: string
}

interface CachedInfo {
  info: InfoFile
  /** The data file the info was read with (fileIdentity). */
  file: string
}

export interface FileStoreOptions {
  /** Directory holding `<id>` (data) and `<id>.json` (info) for every upload; created if missing. */
  directory: string
  /**
   * How many info files to keep in memory (default 1000, most recently used kept; 0: none), so that HEAD
   * and PATCH cost one `stat` of the data file instead of reading `<id>.json` as well. Offsets and
   * modification times always come from that stat. A cached info is used only while the data file is
   * the one it was read with (same inode and birth time) and its length is known, so processes sharing
   * the directory see each other's terminations, re-creations and declared lengths. Edits made to info
   * files by hand are not seen while they are cached.
   */
  cacheSize?: number
  /**
   * Whether to fsync (default true): an upload's data before its completion is reported (flushed while it
   * arrives, so the disk writes as the network receives), and each info file when it is written. With
   * false nothing is fsynced: a process crash still loses nothing the offset reports (the kernel has the
   * bytes), but a power loss or kernel crash may lose or shorten uploads reported complete, and lose
   * uploads just created. Where the disk is slower than the network that buys throughput on large
   * uploads (bench/RESULTS.md); choose it only where the data can be uploaded again.
   */
  fsync?: boolean
}

/**
 * Keeps each upload as two files: the data file `<id>` (or `<directory>/<id>` when onUploadCreate chose a
 * sub-directory), appended to in place, and the info file `<id>.json` in the root, replaced atomically
 * (write to a temporary file, fsync, rename). Info files all live in the root, so ids are unique across
 * sub-directories and any request finds an upload by its id alone.
 */
export class FileStore implements DataStore {
  readonly directory: string
  readonly #openHandles = new Set<FileHandle>()
  #ready: Promise<void> | undefined
  /** Info files by id, most recently read last; the oldest goes when the cache is full. */
  readonly #cache = new Map<string, CachedInfo>()
  readonly #cacheSize: number
  readonly #fsync: boolean
  /** Counts info changes and removals, so that a cache fill that raced one does not cache what it read before. */
  #changes = 0
  /** Uploads whose data was fsynced by `write` when it stored the last byte, with no write since. */
  readonly #synced = new Set<string>()

  constructor (options: FileStoreOptions) {
    this.directory = options.directory
    this.#cacheSize = options.cacheSize ?? DEFAULT_CACHE_SIZE
    this.#fsync = options.fsync ?? true
    if (typeof this.#fsync !== 'boolean') throw new TypeError('fsync must be a boolean')
    if (!Number.isInteger(this.#cacheSize) || this.#cacheSize < 0) throw new TypeError('cacheSize must be a non-negative integer')
  }

  async create (upload: NewUpload): Promise<UploadInfo> {
    await this.#ensureDirectory()
    const path = this.#dataPath(upload.id, upload.directory)
    if (upload.directory !== undefined) await mkdir(join(this.directory, upload.directory), { recursive: true })
    // The data file comes first: an upload exists once its info file does, and then its data file exists too.
    const data = await open(path, 'wx').catch((error: unknown) => { throw isExists(error) ? new TusErrors.ID_TAKEN(upload.id) : error })
    let stats: Stats
    try {
      stats = await data.stat()
    } finally {
      await data.close()
    }
    // After the data file's birth, which a cache fill checks (see #fill).
    const createdAt = new Date()
    const info: InfoFile = {
      id: upload.id,
      size: upload.size ?? null,
      metadata: upload.metadata,
      ...(upload.concat === undefined ? {} : { concat: upload.concat }),
      ...(upload.directory === undefined ? {} : { directory: upload.directory }),
      createdAt: createdAt.toISOString()
    }
    try {
      await this.#writeInfo(info, true)
    } catch (error) {
      await rm(path, { force: true })
      throw isExists(error) ? new TusErrors.ID_TAKEN(upload.id) : error
    }
    this.#remember(upload.id, { info, file: fileIdentity(stats) })
    return { ...upload, offset: 0, createdAt, modifiedAt: stats.mtime, path }
  }

  async getInfo (id: string): Promise<UploadInfo> {
    assertSafeId(id)
    const cached = this.#cache.get(id)
    // A deferred length may have been declared by another process: read again until it is known.
    if (cached !== undefined && cached.info.size !== null) {
      const path = this.#dataPath(id, cached.info.directory)
      const stats = await statIfExists(path)
      if (stats !== undefined && fileIdentity(stats) === cached.file) {
        this.#remember(id, cached)
        return toUploadInfo(cached.info, path, stats)
      }
    }
    return await this.#fill(id)
  }

  /** getInfo from the info file, read again, and the data file; caches what it read when it may. */
  async #fill (id: string): Promise<UploadInfo> {
    const changes = this.#changes
    const info = await this.#readInfo(id)
    const path = this.#dataPath(id, info.directory)
    const stats = await statIfExists(path)
    // A data file born after the info was written belongs to an upload re-created under the same id
    // (elsewhere) since the read (file times are coarse: one re-created within a few milliseconds of the
    // first creation passes for it); a length declared or an upload removed here meanwhile makes it stale.
    if (stats !== undefined && Math.floor(stats.birthtimeMs) <= Date.parse(info.createdAt) && changes === this.#changes) {
      this.#remember(id, { info, file: fileIdentity(stats) })
    } else {
      this.#cache.delete(id)
    }
    return toUploadInfo(info, path, stats)
  }

  async write (id: string, offset: number, source: AsyncIterable<Buffer>): Promise<number> {
    const info = await this.#info(id)
    this.#synced.delete(id)
    const handle = await open(this.#dataPath(id, info.directory), 'a')
    this.#openHandles.add(handle)
    const appender = new Appender(handle, this.#fsync)
    let written = 0
    try {
      try {
        for await (const chunk of source) {
          // Awaited only when the queue is full: most chunks cost no promise here.
          const full = appender.push(chunk)
          if (full !== undefined) await full
        }
      } finally {
        // What arrived before a failing source is stored too (and a write error wins over the source's).
        written = await appender.finish()
      }
      // The last byte: fsync now, on the open handle, so that flush() need not open the file again.
      if (this.#fsync && info.size !== null && offset + written === info.size) {
        await handle.sync()
        this.#synced.add(id)
      }
    } finally {
      this.#openHandles.delete(handle)
      await handle.close()
    }
    return offset + written
  }

  async flush (id: string): Promise<void> {
    if (this.#synced.delete(id) || !this.#fsync) return
    const handle = await open(await this.#dataPathOf(id), 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  }

  async declareLength (id: string, size: number): Promise<void> {
    const info = { ...await this.#readInfo(id), size }
    this.#forget(id)
    try {
      await this.#writeInfo(info)
    } finally {
      // Also after: a HEAD may have cached the old info while it was being replaced.
      this.#forget(id)
    }
  }

  async read (id: string, range?: ByteRange): Promise<Readable> {
    return createReadStream(await this.#dataPathOf(id), range === undefined ? {} : { start: range.start, end: range.end })
  }

  async terminate (id: string): Promise<void> {
    const path = await this.#dataPathOf(id).catch(() => this.#dataPath(id, undefined))
    this.#forget(id)
    try {
      // The info file goes first so that the upload vanishes at once, even if removing the data fails.
      await unlink(this.#infoPath(id)).catch(rethrowUnlessNotFound)
      await rm(path, { force: true })
    } finally {
      // Also after: a HEAD may have cached the upload while it was being removed.
      this.#forget(id)
    }
  }

  async * list (): AsyncIterable<string> {
    let names: string[]
    try {
      names = await readdir(this.directory)
    } catch (error) {
      if (isNotFound(error)) return
      throw error
    }
    for (const name of names) {
      if (!name.endsWith(INFO_SUFFIX)) continue
      const id = name.slice(0, -INFO_SUFFIX.length)
      if (isValidUploadId(id)) yield id
    }
  }

  async close (): Promise<void> {
    await Promise.allSettled([...this.#openHandles].map(async (handle) => await handle.close()))
    this.#openHandles.clear()
    this.#cache.clear()
  }

  #remember (id: string, cached: CachedInfo): void {
    if (this.#cacheSize === 0) return
    this.#cache.delete(id)
    this.#cache.set(id, cached)
    if (this.#cache.size > this.#cacheSize) this.#cache.delete(this.#cache.keys().next().value!)
  }

  #forget (id: string): void {
    this.#changes++
    this.#cache.delete(id)
    this.#synced.delete(id)
  }

  /**
   * The info file's contents, from the cache when it has them. The callers (write, flush, read, terminate)
   * run after a getInfo of the same request, which checked the cached entry against the data file.
   */
  async #info (id: string): Promise<InfoFile> {
    assertSafeId(id)
    return this.#cache.get(id)?.info ?? await this.#readInfo(id)
  }

  #ensureDirectory (): Promise<void> {
    this.#ready ??= mkdir(this.directory, { recursive: true }).then(() => undefined)
    return this.#ready
  }

  #dataPath (id: string, directory: string | undefined): string {
    assertSafeId(id)
    if (directory === undefined) return join(this.directory, id)
    // Validated by onUploadCreate already; checked again because info files are read back from disk.
    if (!isValidDirectory(directory)) throw new TusErrors.STORE_FAILED(`invalid directory recorded for upload ${id}`)
    return join(this.directory, directory, id)
  }

  async #dataPathOf (id: string): Promise<string> {
    return this.#dataPath(id, (await this.#info(id)).directory)
  }

  #infoPath (id: string): string {
    assertSafeId(id)
    return join(this.directory, id + INFO_SUFFIX)
  }

  async #readInfo (id: string): Promise<InfoFile> {
    let text: string
    try {
      text = await readFile(this.#infoPath(id), 'utf8')
    } catch (error) {
      if (isNotFound(error)) throw new TusErrors.NOT_FOUND()
      throw error
    }
    return JSON.parse(text) as InfoFile
  }

  /** `exclusive`: fail with EEXIST instead of replacing an existing info file (creation). */
  async #writeInfo (info: InfoFile, exclusive = false): Promise<void> {
    const target = this.#infoPath(info.id)
    const temporary = `${target}.${randomBytes(6).toString('hex')}.tmp`
    const handle = await open(temporary, 'w')
    try {
      try {
        await handle.writeFile(JSON.stringify(info))
        if (this.#fsync) await handle.sync()
      } finally {
        await handle.close()
      }
      // link() refuses an existing target atomically; rename() replaces it atomically.
      if (exclusive) await link(temporary, target)
      else await rename(temporary, target)
    } catch (error) {
      // A failed write or sync too: no half-written temporary file is left beside the info files.
      await rm(temporary, { force: true })
      throw error
    }
    if (exclusive) await unlink(temporary)
  }
}

/** Bytes that may wait for the disk per upload while the next chunks are read (bounded memory). */
const MAX_QUEUED = 64 * 1024
/**
 * Bytes after which a large write starts flushing what it wrote (fdatasync) while it goes on receiving.
 * Without it the kernel keeps a whole upload in the page cache and the fsync on completion writes all of
 * it at once, after the last byte: receiving and writing to disk one after the other instead of together.
 */
const SYNC_STEP = 16 * 1024 * 1024

/**
 * Appends chunks to an open file while the next ones are read: the chunks that arrive during one write go
 * out together in the next (one writev), so a fast body costs a thread-pool round trip per batch rather than
 * per chunk, and reading the socket overlaps writing the file. At most MAX_QUEUED bytes wait; beyond that
 * `push` waits for the write in progress. Every SYNC_STEP bytes it starts an fdatasync in the background
 * (unless the store does not fsync).
 */
class Appender {
  readonly #handle: FileHandle
  #queue: Buffer[] = []
  #queued = 0
  #written = 0
  #writing: Promise<void> | undefined
  #batch: Promise<number> | undefined
  #failure: { error: unknown } | undefined
  /** Bytes written since the last background flush; undefined when this store does not fsync. */
  #unsynced: number | undefined
  #syncing: Promise<void> | undefined

  constructor (handle: FileHandle, fsync: boolean) {
    this.#handle = handle
    this.#unsynced = fsync ? 0 : undefined
  }

  /** Queues a chunk; returns a promise to wait for when the queue is full (then the write in progress settles it). */
  push (chunk: Buffer): Promise<unknown> | undefined {
    if (this.#failure !== undefined) throw this.#failure.error
    if (chunk.length === 0) return undefined
    this.#queue.push(chunk)
    this.#queued += chunk.length
    if (this.#writing === undefined) this.#writing = this.#drain()
    else if (this.#queued >= MAX_QUEUED) return this.#batch?.catch(() => undefined)
    return undefined
  }

  /**
   * Waits until everything pushed is written and a background flush has ended; resolves with the bytes
   * written, or rejects with the write or flush error.
   */
  async finish (): Promise<number> {
    while (this.#writing !== undefined) await this.#writing
    await this.#syncing
    if (this.#failure !== undefined) throw this.#failure.error
    return this.#written
  }

  async #drain (): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const buffers = this.#queue
        this.#queue = []
        this.#queued = 0
        this.#batch = writeAll(this.#handle, buffers)
        const written = await this.#batch
        this.#written += written
        if (this.#unsynced === undefined) continue
        this.#unsynced += written
        if (this.#unsynced >= SYNC_STEP && this.#syncing === undefined) this.#startSync()
      }
    } catch (error) {
      this.#failure ??= { error }
    } finally {
      this.#writing = undefined
    }
  }

  #startSync (): void {
    this.#unsynced = 0
    this.#syncing = this.#handle.datasync().then(
      () => { this.#syncing = undefined },
      (error: unknown) => {
        this.#failure ??= { error }
        this.#syncing = undefined
      })
  }
}

/** Writes every buffer (one writev; again for what a short write left). */
async function writeAll (handle: FileHandle, buffers: Buffer[]): Promise<number> {
  let total = 0
  while (buffers.length > 0) {
    let { bytesWritten } = await handle.writev(buffers)
    if (bytesWritten === 0) throw new Error('the data file accepted no bytes')
    total += bytesWritten
    while (bytesWritten > 0) {
      const first = buffers[0]!
      if (first.length <= bytesWritten) {
        bytesWritten -= first.length
        buffers.shift()
      } else {
        buffers[0] = first.subarray(bytesWritten)
        bytesWritten = 0
      }
    }
  }
  return total
}

function toUploadInfo (info: InfoFile, path: string, stats: Stats | undefined): UploadInfo {
  const createdAt = new Date(info.createdAt)
  return {
    id: info.id,
    size: info.size ?? undefined,
    metadata: info.metadata,
    ...(info.concat === undefined ? {} : { concat: info.concat }),
    ...(info.directory === undefined ? {} : { directory: info.directory }),
    offset: stats?.size ?? 0,
    createdAt,
    modifiedAt: stats?.mtime ?? createdAt,
    path
  }
}

/** Which file this is: a file removed and created again under the same name is another one. */
function fileIdentity (stats: Stats): string {
  return `${stats.ino}:${stats.birthtimeMs}`
}

async function statIfExists (path: string): Promise<Stats | undefined> {
  try {
    return await stat(path)
  } catch (error) {
    if (isNotFound(error)) return undefined
    throw error
  }
}

function assertSafeId (id: string): void {
  // Handlers validate ids already; this keeps the store safe when it is used directly.
  if (!isValidUploadId(id)) throw new TusErrors.NOT_FOUND()
}

function isNotFound (error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
}

function isExists (error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'EEXIST'
}

function rethrowUnlessNotFound (error: unknown): void {
  if (!isNotFound(error)) throw error
}
