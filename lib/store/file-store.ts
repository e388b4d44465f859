import fs, { createReadStream } from 'node:fs'
import { mkdir, opendir, readdir, rm, rmdir, writeFile } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { randomBytes } from 'node:crypto'
import { DataFile, QuickCalls, isNotFound, isOldFile, readSmallFile, rename, statIfExists, sweepDirectory, unlink, unlinkIfExists, writeSmallFile } from '../fs-calls.js'
import { TusErrors } from '../errors.js'
import { refuseUnknownKeys } from '../known-keys.js'
import { isValidDirectory, isValidUploadId } from '../ids.js'
import { BoundedCache } from './info-cache.js'
import { OpenFiles, UNSTATED, sameFile, type FileIdentity } from './open-files.js'
import type { ByteRange, DataStore, NewUpload, StoredInfo, UploadInfo, WriteOptions } from './types.js'

const INFO_SUFFIX = '.json'
/**
 * The directory of the records of final uploads waiting for partials: `<dir>/.finals/<partial id>/<final id>`, empty
 * files. Its name is no upload id nor directory (those have no dot), so no upload can collide with it.
 */
const FINALS_DIRECTORY = '.finals'
/**
 * A temporary info file of #writeInfo: `<id>.json` + the store's prefix (`.` and 12 hex digits, then `-`) + a
 * counter + `.tmp`. The group is the id.
 */
const TEMPORARY_INFO = /^(.+)\.json\.[0-9a-f]{12}-[0-9]+\.tmp$/
/** Entries of a directory that removeAbandoned handles at once (file-system calls overlap in the thread pool). */
const SWEEP_CONCURRENCY = 16
/** What #probeInfo says of an info file that does not parse, and of one that does not exist. */
const TORN = Symbol('torn')
const MISSING = Symbol('missing')
const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
/** Estimated bytes of one cached info beyond its string: the map entry and the key. */
const CACHE_ENTRY_OVERHEAD = 100
/** Characters from which a cached info is worth keeping parsed (a final's of about 50 partials). */
const LARGE_ENTRY = 4096
/** Data files kept open between the requests of an upload, at most, and for how long without use. */
const MAX_OPEN_FILES = 128
const OPEN_FILE_IDLE_MS = 5000

interface CachedInfo {
  info: StoredInfo
  /** The data file the info was read with. */
  file: FileIdentity
}

/**
 * A cached info as V8 keeps it most compactly: one flat string, `<ino> <birthtimeMs>\n<info JSON>` (about 250
 * bytes with its map entry and key for an info without metadata, against about 410 as parsed objects). Parsed
 * again on every use, which costs about a microsecond and hands every caller metadata of its own.
 */
function pack (file: FileIdentity, text: string): string {
  // Through a Buffer so that the string is flat (a concatenation would keep its parts as a rope).
  return Buffer.from(`${file.ino} ${file.birthtimeMs}\n${text}`).toString()
}

function unpack (entry: string): CachedInfo {
  return { file: unpackFile(entry), info: JSON.parse(entry.slice(entry.indexOf('\n') + 1)) as StoredInfo }
}

/** Only the data file's identity from an entry (no JSON parsed). */
function unpackFile (entry: string): FileIdentity {
  const space = entry.indexOf(' ')
  const newline = entry.indexOf('\n', space)
  return { ino: Number(entry.slice(0, space)), birthtimeMs: Number(entry.slice(space + 1, newline)) }
}

/** Estimated bytes of a cached entry: its string (two bytes a character, to be safe) and CACHE_ENTRY_OVERHEAD. */
function entryBytes (entry: string): number {
  return CACHE_ENTRY_OVERHEAD + 2 * entry.length
}

export interface FileStoreOptions {
  /** Directory holding `<id>` (data) and `<id>.json` (info) for every upload; created if missing (again if removed while in use). */
  directory: string
  /**
   * How many info files to keep in memory at most (default: as many as `cacheBytes` allows; most recently
   * used kept; 0: none), so that HEAD and PATCH cost one `stat` of the data file instead of reading
   * `<id>.json` as well. Offsets and modification times always come from that stat. A cached info is used
   * only while the data file is the one it was read with (same inode and birth time) and its length is
   * known, so processes sharing the directory see each other's terminations, re-creations and declared
   * lengths. Edits made to info files by hand are not seen while they are cached.
   */
  cacheSize?: number
  /**
   * Memory the info cache may use, estimated, in bytes (default 64 MiB: about 170,000 infos without
   * metadata, fewer with). The cache is bounded by this and by `cacheSize`, whichever is reached first.
   */
  cacheBytes?: number
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

const FILE_STORE_OPTIONS = Object.keys({ directory: true, cacheSize: true, cacheBytes: true, fsync: true } satisfies Record<keyof FileStoreOptions, true>)

/**
 * Keeps each upload as two files: the data file `<id>` (or `<directory>/<id>` when onUploadCreate chose a
 * sub-directory), appended to in place, and the info file `<id>.json` in the root: created exclusively in
 * place (one write; read as "not created yet" until it is whole), then replaced atomically (write to a
 * temporary file, fsync, rename). Info files all live in the root, so ids are unique across sub-directories
 * and any request finds an upload by its id alone.
 */
export class FileStore implements DataStore {
  readonly directory: string
  /** fs.ReadStream reads each chunk into a buffer of its own and keeps none (DataStore.readChunksDisposable). */
  readonly readChunksDisposable = true
  /** Data files being written through, with the writer that must settle before one is closed. */
  readonly #openHandles = new Map<DataFile, Appender>()
  /** Handles kept open between the writes of an upload (only while its info is cached). */
  readonly #openFiles: OpenFiles
  #ready: Promise<void> | undefined
  /** Info files by id, most recently read last; the oldest go when the cache is full. */
  readonly #cache: BoundedCache<string>
  readonly #caching: boolean
  readonly #fsync: boolean
  /** Names temporary info files: unique to this store (random), then a counter. */
  readonly #temporaryPrefix = `.${randomBytes(6).toString('hex')}-`
  #temporaries = 0
  /** close() was called: handles are no longer kept (a write still running closes its own). */
  #closed = false
  /** Counts info changes and removals, so that a cache fill that raced one does not cache what it read before. */
  #changes = 0
  /** Uploads whose data was fsynced by `write` when it stored the last byte, with no write since. */
  readonly #synced = new Set<string>()
  /** Whether this store's cheapest file-system calls run on the event loop (stats of known data files, closes). */
  readonly #quick = new QuickCalls()
  /** The permissions that mark a data file's completion, once #ensureDirectory found this file system keeps them. */
  #marks: CompletionMarks | undefined
  /**
   * The last large cache entry #info parsed: a final's copy writes once per partial, and its info lists every
   * partial (parsing it each time made the copy quadratic); the partials' reads between the writes parse theirs.
   */
  #lastLarge: { entry: string, info: StoredInfo } | undefined

  constructor (options: FileStoreOptions) {
    refuseUnknownKeys('FileStore', options, FILE_STORE_OPTIONS, { dir: 'did you mean "directory"?' })
    if (typeof options.directory !== 'string' || options.directory === '') throw new TusErrors.INVALID_OPTION('FileStore directory must be a non-empty string')
    this.directory = options.directory
    const cacheSize = options.cacheSize ?? Number.POSITIVE_INFINITY
    const cacheBytes = options.cacheBytes ?? DEFAULT_CACHE_BYTES
    this.#fsync = options.fsync ?? true
    if (typeof this.#fsync !== 'boolean') throw new TypeError('fsync must be a boolean')
    if (cacheSize !== Number.POSITIVE_INFINITY && (!Number.isInteger(cacheSize) || cacheSize < 0)) throw new TypeError('cacheSize must be a non-negative integer')
    if (!Number.isInteger(cacheBytes) || cacheBytes < 0) throw new TypeError('cacheBytes must be a non-negative integer')
    this.#caching = cacheSize > 0 && cacheBytes > 0
    this.#cache = new BoundedCache(entryBytes, cacheBytes, cacheSize)
    // Without the cache a kept handle could not be checked against the data file cheaply: none are kept.
    this.#openFiles = new OpenFiles(this.#caching ? MAX_OPEN_FILES : 0, OPEN_FILE_IDLE_MS)
  }

  async create (upload: NewUpload, options?: WriteOptions): Promise<UploadInfo> {
    await this.#ensureDirectory()
    const path = this.#dataPath(upload.id, upload.directory)
    if (upload.directory !== undefined) await mkdir(join(this.directory, upload.directory), { recursive: true })
    // The data file comes first: an upload exists once its info file does, and then its data file exists too.
    // Kept open for the first PATCH (unless the upload is empty).
    const open = async (): Promise<DataFile> => await DataFile.open(path, WRITE_IN_PLACE | fs.constants.O_EXCL, this.#marks === undefined ? undefined : DATA_FILE_MODE)
    const data = await open().catch(async (error: unknown) => {
      if (!isNotFound(error)) throw error
      // The directory was removed while the store ran (by hand, a cleanup script): made again, once, rather than
      // every creation failing until a restart (#ensureDirectory made it once).
      this.#ready = undefined
      await this.#ensureDirectory()
      if (upload.directory !== undefined) await mkdir(join(this.directory, upload.directory), { recursive: true })
      return await open()
    }).catch((error: unknown) => { throw isExists(error) ? new TusErrors.ID_TAKEN(upload.id) : error })
    // Its identity, for the info cache and the kept handle. The sole writer of the upload need not ask: no
    // other process can remove or re-create the file, so the first stat of its path tells (UNSTATED).
    let stats: Stats | undefined
    if (options?.soleWriter !== true || !this.#caching) {
      try {
        stats = await data.stat()
      } catch (error) {
        await data.close()
        throw error
      }
    }
    // After the data file's birth, which a cache fill checks (see #fill).
    const createdAt = new Date()
    const info: StoredInfo = {
      id: upload.id,
      size: upload.size ?? null,
      metadata: upload.metadata,
      ...(upload.concat === undefined ? {} : { concat: upload.concat }),
      ...(upload.directory === undefined ? {} : { directory: upload.directory }),
      createdAt: createdAt.toISOString()
    }
    const text = JSON.stringify(info)
    try {
      // Created exclusively at its final name, in one write: 3 calls (4 with fsync) where a temporary file
      // and link() took 5 (6). Exclusive for every sub-directory too (info files all live in the root). Until
      // the write ends a reader finds it empty or cut short, which #readInfo takes for "not created yet".
      await writeSmallFile(this.#infoPath(upload.id), text, this.#fsync, this.#quick)
    } catch (error) {
      await data.close()
      await unlink(path).catch(rethrowUnlessNotFound)
      throw isExists(error) ? new TusErrors.ID_TAKEN(upload.id) : error
    }
    const file = stats === undefined ? UNSTATED : identityOf(stats)
    const modifiedAt = stats?.mtime ?? createdAt
    this.#remember(upload.id, file, text)
    if (upload.size !== 0 && !this.#closed) this.#openFiles.keep(upload.id, data, file, 0, modifiedAt)
    else await data.close(this.#quick)
    return { ...upload, offset: 0, createdAt, modifiedAt, path }
  }

  async getInfo (id: string, options?: WriteOptions): Promise<UploadInfo> {
    assertSafeId(id)
    const entry = this.#cache.peek(id)
    const cached = entry === undefined ? undefined : unpack(entry)
    // A deferred length may have been declared by another process: read again until it is known.
    if (cached !== undefined && cached.info.size !== null) {
      const path = this.#dataPath(id, cached.info.directory)
      // The sole writer, with the data file kept open since this store last wrote it (or created it): no other
      // process writes the upload, so the file is as that write left it unless something outside the server
      // changed it (a hand, a cleanup script). The kept descriptor's fstat, on the event loop, tells that much at
      // less cost than the path's stat (no lookup of the path, and no round trip through the thread pool): the
      // same size and still linked, or the path's stat decides (below).
      const kept = options?.soleWriter === true ? this.#keptStats(id, cached.file) : undefined
      const stats = kept ?? this.#statKnown(path) ?? await statIfExists(path)
      if (stats !== undefined && (sameFile(stats, cached.file) || this.#adopt(id, cached.file, stats))) {
        this.#cache.get(id)
        this.#openFiles.saw(id, stats.size, stats.mtime)
        return await this.#confirmed(toUploadInfo(cached.info, path, stats))
      }
    }
    return await this.#fill(id)
  }

  /**
   * The stats of a data file this process has seen (its info is cached, so its inode was read lately and is
   * most likely in the kernel's cache), taken synchronously: 2-3 µs of the event loop's time, against 10-30 µs
   * for a round trip through the thread pool, which is the largest part of a HEAD of an upload no other HEAD
   * is reading. Undefined when the stat must go through the thread pool: the file is missing (the caller
   * reads again), or this store's synchronous calls proved slow (QuickCalls).
   */
  #statKnown (path: string): Stats | undefined {
    if (!this.#quick.enabled) return undefined
    return this.#quick.run(() => fs.statSync(path, { throwIfNoEntry: false }))
  }

  /**
   * The stats of the data file of `id` that this store holds open since its own last write (or its creation), taken
   * synchronously from the descriptor, when they show it as that write left it: the size it knows, and still linked
   * in a directory (a file removed, with its upload's directory or not, has no link left). Undefined on any doubt (no
   * descriptor kept, another file, another size, this store's synchronous calls proved slow, the fstat failed): the
   * caller then asks the path.
   */
  #keptStats (id: string, file: FileIdentity): Stats | undefined {
    const known = this.#openFiles.known(id)
    if (known === undefined || !sameFile(known.identity, file) || !this.#quick.enabled) return undefined
    let stats: Stats
    try {
      stats = this.#quick.run(() => fs.fstatSync(known.handle.fd))
    } catch {
      return undefined
    }
    return stats.size === known.size && stats.nlink > 0 ? stats : undefined
  }

  /**
   * A data file created UNSTATED (by the sole writer of its upload) is the one at its path: the first stat
   * gives the identity that later ones are checked against.
   */
  #adopt (id: string, file: FileIdentity, stats: Stats): boolean {
    if (!sameFile(file, UNSTATED)) return false
    const identity = identityOf(stats)
    const entry = this.#cache.peek(id)
    if (entry !== undefined) this.#cache.set(id, pack(identity, entry.slice(entry.indexOf('\n') + 1)))
    this.#openFiles.adopt(id, identity)
    return true
  }

  /** getInfo from the info file, read again, and the data file; caches what it read when it may. */
  async #fill (id: string): Promise<UploadInfo> {
    const changes = this.#changes
    const { info, text } = await this.#readInfo(id).catch((error: unknown) => { throw this.#gone(id, error) })
    const path = this.#dataPath(id, info.directory)
    const stats = await statIfExists(path)
    // No data file while the info file was there: removed meanwhile (a termination unlinks the info file first), or
    // by something else (the info file is still there). Read as an empty upload, a removed one was answered 409 (a
    // download) or offset 0 (a HEAD, whose client would start over) instead of 404.
    if (stats === undefined && await statIfExists(this.#infoPath(id)) === undefined) throw this.#gone(id, new TusErrors.NOT_FOUND())
    // A data file born after the info was written belongs to an upload re-created under the same id
    // (elsewhere) since the read (file times are coarse: one re-created within a few milliseconds of the
    // first creation passes for it); a length declared or an upload removed here meanwhile makes it stale.
    if (stats !== undefined && Math.floor(stats.birthtimeMs) <= Date.parse(info.createdAt) && changes === this.#changes) {
      this.#remember(id, identityOf(stats), text)
    } else {
      this.#cache.delete(id)
    }
    return await this.#confirmed(toUploadInfo(info, path, stats))
  }

  /**
   * `error`, after dropping what is cached and kept open of `id` when it says the upload is not there (404): removed
   * by something other than this store (by hand, or the whole directory), whose cached info and kept descriptor must
   * not answer the next request, a sole writer's PATCH least of all (it would write through a descriptor of a file no
   * longer linked, or past a hole).
   */
  #gone (id: string, error: unknown): unknown {
    if (error instanceof TusErrors.NOT_FOUND) this.#forget(id, 'removed')
    return error
  }

  /**
   * An upload whose data file reads as pending completion (see CompletionMarks) is `completing` only where this file
   * system keeps the mark: where it shows every file executable, the mark says nothing.
   */
  async #confirmed (upload: UploadInfo): Promise<UploadInfo> {
    if (upload.completing !== true) return upload
    await this.#ensureDirectory().catch(() => undefined)
    if (this.#marks === undefined) delete upload.completing
    return upload
  }

  async write (id: string, offset: number, source: AsyncIterable<Buffer>, options?: WriteOptions): Promise<number> {
    const info = await this.#info(id)
    this.#synced.delete(id)
    // The data file the request's getInfo found at the path (checked by a stat then): a handle kept open
    // since the creation or the last write is used only if it is open on that very file.
    const file = this.#cachedFile(id)
    const closing = this.#openFiles.closing(id)
    if (closing !== undefined) await closing
    const handle = this.#openFiles.take(id, file) ?? await DataFile.open(this.#dataPath(id, info.directory), WRITE_IN_PLACE)
    const appender = new Appender(handle, offset, this.#fsync, options)
    this.#openHandles.set(handle, appender)
    let written = 0
    let keep = false
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
      // The last byte: the file completed now, on the open handle, so that flush() need not open it again.
      const complete = info.size !== null && offset + written === info.size
      if (complete) {
        await this.#complete(handle, options)
        this.#synced.add(id)
      }
      // Kept for the next PATCH of an unfinished upload, while the info it was checked with is cached.
      const now = this.#cachedFile(id)
      keep = !complete && !this.#closed && file !== undefined && now !== undefined && sameFile(now, file)
      // Its background flush then goes on beside the next requests; a descriptor closed now must tell how it ended.
      if (!keep && !complete) await handle.flushesDone()
    } finally {
      this.#openHandles.delete(handle)
      if (keep) this.#openFiles.keep(id, handle, file!, offset + written, new Date())
      else await handle.close(this.#quick)
    }
    return offset + written
  }

  async flush (id: string, options?: WriteOptions): Promise<void> {
    if (this.#synced.delete(id)) return
    await this.#ensureDirectory()
    if (!this.#fsync && this.#marks === undefined) return
    const file = this.#cachedFile(id)
    const closing = this.#openFiles.closing(id)
    if (closing !== undefined) await closing
    const known = this.#openFiles.known(id)
    const kept = this.#openFiles.take(id, file)
    if (kept !== undefined && known !== undefined) {
      try {
        await this.#complete(kept, options)
      } finally {
        this.#openFiles.keep(id, kept, file!, known.size, known.modifiedAt)
      }
      return
    }
    const handle = await DataFile.open(await this.#dataPathOf(id), 'r')
    try {
      await this.#complete(handle, options)
    } finally {
      await handle.close(this.#quick)
    }
  }

  /**
   * A data file holding every byte of its upload: its pending-completion mark cleared, then (with fsync) the data and
   * the mark made durable by one fsync, before the completion is reported. A crash before that leaves the mark, and the
   * next request that reads the upload completes it (`completing`): onUploadComplete is never skipped.
   *
   * Clearing the mark is what completes the upload, for every process sharing the directory: whoever clears it runs
   * onUploadComplete. So it is cleared only while the caller's lock holds (its signal, read right before): a holder
   * that froze past its lease between the last byte and this point finds the lock lost and leaves the mark, and the
   * request that holds the lock now (a HEAD on another process, which found the upload `completing`) completes it,
   * once. A holder that cleared the mark before it froze completes it itself, and the others see it complete. Without
   * marks the others never complete such an upload (it reads complete), so the holder does, whatever its lock.
   */
  async #complete (handle: DataFile, options: WriteOptions | undefined): Promise<void> {
    await this.#ensureDirectory()
    if (this.#marks !== undefined) {
      options?.signal?.throwIfAborted()
      await handle.chmod(this.#marks.completed, this.#quick)
    }
    if (this.#fsync) await handle.sync()
  }

  async truncate (id: string, offset: number, options?: WriteOptions): Promise<void> {
    const path = await this.#dataPathOf(id)
    options?.signal?.throwIfAborted()
    this.#synced.delete(id)
    // A kept handle knows the size its last write left: closed, so the next write asks the file again.
    this.#openFiles.drop(id)
    const handle = await DataFile.open(path, 'r+')
    try {
      await handle.truncate(offset)
      if (this.#fsync) await handle.sync()
    } finally {
      await handle.close(this.#quick)
    }
  }

  async declareLength (id: string, size: number): Promise<void> {
    const info = { ...(await this.#readInfo(id)).info, size }
    this.#forget(id, 'changed')
    try {
      await this.#writeInfo(info)
    } finally {
      // Also after: a HEAD may have cached the old info while it was being replaced.
      this.#forget(id, 'changed')
    }
  }

  async read (id: string, range?: ByteRange): Promise<Readable> {
    // Opened before it is returned, so that a data file removed meanwhile (a termination that took the lock once a
    // download had read its upload) is a 404 the caller can still answer, not a stream that fails once sent.
    const path = await this.#dataPathOf(id)
    const fd = await new Promise<number>((resolve, reject) => {
      fs.open(path, 'r', (error, fd) => {
        if (error === null) resolve(fd)
        else reject(isNotFound(error) ? new TusErrors.NOT_FOUND() : error)
      })
    })
    return createReadStream(path, range === undefined ? { fd } : { fd, start: range.start, end: range.end })
  }

  async terminate (id: string): Promise<void> {
    const info = await this.#info(id).catch(() => undefined)
    const path = this.#dataPath(id, info?.directory)
    this.#forget(id, 'removed')
    try {
      // The info file goes first so that the upload vanishes at once, even if removing the data fails.
      await unlink(this.#infoPath(id)).catch(rethrowUnlessNotFound)
      await unlink(path).catch(rethrowUnlessNotFound)
      // A partial's records of the finals waiting for it (none of them can complete any more): only a partial's, or
      // an upload's whose info is already gone, so that removing other uploads (expiry) costs no call more.
      if (info === undefined || info.concat?.type === 'partial') await rm(this.#finalsOf(id), { recursive: true, force: true })
    } finally {
      // Also after: a HEAD may have cached the upload while it was being removed.
      this.#forget(id, 'removed')
    }
  }

  /**
   * The finals waiting for partials (concatenation-unfinished) are recorded in the directory, as empty files
   * `.finals/<partial id>/<final id>`, so that every process sharing it sees them: the request that completes a
   * final's last partial finishes the final, in whichever process it runs (and after a restart).
   */
  async addPendingFinal (finalId: string, partialIds: string[]): Promise<void> {
    assertSafeId(finalId)
    for (const partialId of new Set(partialIds)) {
      assertSafeId(partialId)
      const directory = this.#finalsOf(partialId)
      // The removal of another final's record may take the partial's directory away in between: made again.
      for (let attempt = 1; ; attempt++) {
        await mkdir(directory, { recursive: true })
        try {
          await writeFile(join(directory, finalId), '')
          break
        } catch (error) {
          if (!isNotFound(error) || attempt === 3) throw error
        }
      }
    }
  }

  async listPendingFinals (partialId: string): Promise<string[]> {
    assertSafeId(partialId)
    try {
      return (await readdir(this.#finalsOf(partialId))).filter((name) => isValidUploadId(name))
    } catch (error) {
      if (isNotFound(error)) return []
      throw error
    }
  }

  async removePendingFinal (finalId: string, partialIds: string[]): Promise<void> {
    assertSafeId(finalId)
    for (const partialId of new Set(partialIds)) {
      assertSafeId(partialId)
      const directory = this.#finalsOf(partialId)
      await unlink(join(directory, finalId)).catch(rethrowUnlessNotFound)
      // The partial's directory once it records no final (another record, or none at all, leaves it as it is).
      await rmdir(directory).catch(() => undefined)
    }
  }

  #finalsOf (partialId: string): string {
    return join(this.directory, FINALS_DIRECTORY, partialId)
  }

  /** Streams the directory (never the whole listing in memory), so it is cheap to start on any number of uploads. */
  async * list (): AsyncIterable<string> {
    let directory: fs.Dir
    try {
      directory = await opendir(this.directory, { bufferSize: 128 })
    } catch (error) {
      if (isNotFound(error)) return
      throw error
    }
    for await (const entry of directory) {
      const name = entry.name
      if (!name.endsWith(INFO_SUFFIX)) continue
      const id = name.slice(0, -INFO_SUFFIX.length)
      if (isValidUploadId(id)) yield id
    }
  }

  /**
   * Removes what crashes left in the store's directory that no upload refers to, if its files were last
   * modified before `before` (a creation or a replacement in progress is newer):
   * - an info file that does not parse (a creation died while writing it in place), with its data file in the
   *   root (a data file in a sub-directory is left to the walk below, once its info file is gone);
   * - a data file `<id>` whose info file `<id>.json` does not exist (a creation died between the two files, or a
   *   termination between its two unlinks), in the root and in every sub-directory that a valid info file names;
   * - a temporary info file `<id>.json.<random>-<n>.tmp` whose rename never happened.
   * Only names the store makes are considered (a valid upload id, with its suffixes; never a link or a
   * directory); a valid info file and its data file are never touched, and each removal is checked again
   * (age, info file missing or still torn) right before the unlink. The directory is streamed, never listed
   * whole; the sub-directories named by valid infos are the only thing held (as a set of names).
   * Resolves with the number of things removed: each abandoned upload (a torn info file and its data file
   * count once) and each temporary info file.
   */
  async removeAbandoned (before: Date): Promise<number> {
    const horizon = before.getTime()
    if (Number.isNaN(horizon)) throw new TypeError('before must be a valid Date')
    const directories = new Set<string>()
    let removed = 0
    removed += await sweepDirectory(this.directory, SWEEP_CONCURRENCY, async (entry) => await this.#sweepRoot(entry, horizon, directories))
    for (const directory of directories) {
      const path = join(this.directory, directory)
      removed += await sweepDirectory(path, SWEEP_CONCURRENCY, async (entry) => await this.#sweepData(path, entry, horizon))
    }
    return removed
  }

  /** One entry of the root directory for removeAbandoned: whether it removed something. */
  async #sweepRoot (entry: fs.Dirent, horizon: number, directories: Set<string>): Promise<boolean> {
    const name = entry.name
    if (entry.isDirectory() || entry.isSymbolicLink()) return false
    if (name.endsWith(INFO_SUFFIX)) {
      const id = name.slice(0, -INFO_SUFFIX.length)
      return isValidUploadId(id) && await this.#sweepInfo(id, horizon, directories)
    }
    const temporary = TEMPORARY_INFO.exec(name)
    if (temporary !== null) {
      if (!isValidUploadId(temporary[1]!)) return false
      // Never an upload: a replacement in progress is renamed within milliseconds of its creation.
      const path = join(this.directory, name)
      if (!isOldFile(await statIfExists(path, 'lstat'), horizon)) return false
      return await unlinkIfExists(path)
    }
    return await this.#sweepData(this.directory, entry, horizon)
  }

  /** An info file for removeAbandoned: notes the sub-directory of a valid one; removes a torn one that is old. */
  async #sweepInfo (id: string, horizon: number, directories: Set<string>): Promise<boolean> {
    const cached = this.#cache.peek(id)
    // A cached info parsed when it was read: parsed again only when it may name a sub-directory.
    if (cached !== undefined && !cached.includes('"directory":')) return false
    const info = cached === undefined ? await this.#probeInfo(id) : unpack(cached).info
    if (info === MISSING) return false
    if (info !== TORN) {
      const directory = (info as Partial<StoredInfo> | null)?.directory
      if (typeof directory === 'string' && isValidDirectory(directory)) directories.add(directory)
      return false
    }
    const infoPath = this.#infoPath(id)
    const dataPath = join(this.directory, id)
    // Both old (the newer of the two decides), and the info still torn, right before the unlinks. A torn info
    // file never becomes valid: only a creation writes one in place, and a creation needs it missing.
    const abandoned = async (): Promise<boolean> => {
      const data = await statIfExists(dataPath, 'lstat')
      if (data !== undefined && data.isFile() && !isOldFile(data, horizon)) return false
      return isOldFile(await statIfExists(infoPath, 'lstat'), horizon) && await this.#probeInfo(id) === TORN
    }
    if (!await abandoned()) return false
    const data = await statIfExists(dataPath, 'lstat')
    if (isOldFile(data, horizon)) await unlinkIfExists(dataPath)
    this.#forget(id, 'removed')
    return await unlinkIfExists(infoPath)
  }

  /** A data file `<id>` in `directory` for removeAbandoned: removed when it is old and no info file names its id. */
  async #sweepData (directory: string, entry: fs.Dirent, horizon: number): Promise<boolean> {
    const id = entry.name
    if (entry.isDirectory() || entry.isSymbolicLink() || !isValidUploadId(id)) return false
    // A cached info was read whole: the upload exists (or did a moment ago, which is reason enough to wait).
    if (this.#cache.peek(id) !== undefined) return false
    const path = join(directory, id)
    const infoPath = this.#infoPath(id)
    // An info file, valid or torn, keeps it here (a torn one is removed with its data, in the root sweep).
    const abandoned = async (): Promise<boolean> => isOldFile(await statIfExists(path, 'lstat'), horizon) && await statIfExists(infoPath, 'lstat') === undefined
    // Checked right before the unlink (a creation makes the data file first, then the info file: it is new).
    if (!await abandoned()) return false
    this.#forget(id, 'removed')
    return await unlinkIfExists(path)
  }

  /**
   * The info file parsed (unknown: only what JSON.parse says), TORN when it does not parse (as #readInfo, which
   * takes it for no upload), MISSING when there is none.
   */
  async #probeInfo (id: string): Promise<unknown> {
    let text: string
    try {
      text = await readSmallFile(this.#infoPath(id), this.#quick)
    } catch (error) {
      if (isNotFound(error)) return MISSING
      throw error
    }
    try {
      return JSON.parse(text) as unknown
    } catch {
      return TORN
    }
  }

  async close (): Promise<void> {
    this.#closed = true
    // A write in flight ends first (its descriptor must not be closed under it); no further batch starts.
    await Promise.allSettled([...this.#openHandles].map(async ([handle, appender]) => {
      appender.abort(new Error('the store was closed'))
      await appender.settled()
      await handle.close()
    }))
    this.#openHandles.clear()
    await this.#openFiles.closeAll()
    this.#cache.clear()
  }

  /** Caches the info `text` (as written or read) with the data file it belongs to. */
  #remember (id: string, file: FileIdentity, text: string): void {
    if (!this.#caching) return
    this.#cache.set(id, pack(file, text))
  }

  /** The data file the cached info of `id` belongs to. */
  #cachedFile (id: string): FileIdentity | undefined {
    const entry = this.#cache.peek(id)
    return entry === undefined ? undefined : unpackFile(entry)
  }

  /** Drops what is cached and kept open of `id`, whose upload `changed` (its next write is told of a failed flush) or is `removed`. */
  #forget (id: string, upload: 'changed' | 'removed'): void {
    this.#changes++
    this.#cache.delete(id)
    this.#synced.delete(id)
    if (upload === 'changed') this.#openFiles.drop(id)
    else this.#openFiles.forget(id)
  }

  /**
   * The info file's contents, from the cache when it has them. The callers (write, flush, read, terminate)
   * run after a getInfo of the same request, which checked the cached entry against the data file.
   */
  async #info (id: string): Promise<StoredInfo> {
    assertSafeId(id)
    const entry = this.#cache.peek(id)
    if (entry === undefined) return (await this.#readInfo(id)).info
    if (entry.length < LARGE_ENTRY) return unpack(entry).info
    if (this.#lastLarge?.entry !== entry) this.#lastLarge = { entry, info: unpack(entry).info }
    return this.#lastLarge.info
  }

  #ensureDirectory (): Promise<void> {
    this.#ready ??= (async () => {
      await mkdir(this.directory, { recursive: true })
      this.#marks = await completionMarks(join(this.directory, `mode-probe${INFO_SUFFIX}${this.#temporaryPrefix}${this.#temporaries++}.tmp`))
    })()
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

  /** The info file, parsed, and its text. */
  async #readInfo (id: string): Promise<{ info: StoredInfo, text: string }> {
    let text: string
    try {
      text = await readSmallFile(this.#infoPath(id), this.#quick)
    } catch (error) {
      if (isNotFound(error)) throw new TusErrors.NOT_FOUND()
      throw error
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      // Only a creation writes an info file in place (every later change replaces it whole, by rename), and
      // no prefix of a JSON object parses: this one is being created, or its creation died before it was
      // acknowledged (a crash). Either way the upload does not exist yet.
      throw new TusErrors.NOT_FOUND()
    }
    return { info: checkedInfo(parsed, id), text }
  }

  /** Replaces the info file atomically (temporary file, fsync, then rename) and resolves with its text. */
  async #writeInfo (info: StoredInfo): Promise<string> {
    const target = this.#infoPath(info.id)
    const temporary = `${target}${this.#temporaryPrefix}${this.#temporaries++}.tmp`
    const text = JSON.stringify(info)
    try {
      await writeSmallFile(temporary, text, this.#fsync, this.#quick)
      await rename(temporary, target)
    } catch (error) {
      // A failed write or sync too: no half-written temporary file is left beside the info files.
      await unlink(temporary).catch(() => undefined)
      throw error
    }
    return text
  }
}

/**
 * How a data file is opened to be written: created if missing, never truncated, and not in append mode. Every
 * write goes to the offset it is for (pwritev): a write that a lock holder queued before it froze and lost its
 * lock, if it runs at all, lands where the same bytes of the upload go, never after the bytes the next holder
 * acknowledged (O_APPEND would put it there, and Linux appends even a positioned write on such a descriptor).
 */
const WRITE_IN_PLACE = fs.constants.O_WRONLY | fs.constants.O_CREAT

/**
 * A data file is created with its owner's execute permission (PENDING_COMPLETION, kept by any usual umask), and loses
 * it when its upload is completed (`#complete`, before the fsync that makes the data durable). A data file that holds
 * every byte of its upload and still has it was cut off between its last byte and its completion (a crash, a failed
 * fsync): its upload reads as `completing`, and the next request that reads it completes it and runs onUploadComplete.
 * Data files without it (those written before this mark, or where the umask takes it away) read as complete once
 * full, as they always did. The permissions are this process's umask applied to DATA_FILE_MODE.
 */
interface CompletionMarks {
  completed: number
}
const PENDING_COMPLETION = fs.constants.S_IXUSR
const DATA_FILE_MODE = 0o766

/**
 * The marks this file system keeps, tried on a file of its own at `probe` (removed again): none where a new file
 * shows no owner execute permission (the umask took it), or where clearing it does not stick (a file system that
 * shows every file executable, such as FAT or some network mounts); completion is then not marked.
 */
async function completionMarks (probe: string): Promise<CompletionMarks | undefined> {
  let file: DataFile
  try {
    file = await DataFile.open(probe, WRITE_IN_PLACE | fs.constants.O_EXCL, DATA_FILE_MODE)
  } catch {
    return undefined
  }
  try {
    const pending = (await file.stat()).mode & 0o7777
    if ((pending & PENDING_COMPLETION) === 0) return undefined
    const completed = pending & ~PENDING_COMPLETION
    await file.chmod(completed)
    return ((await file.stat()).mode & 0o7777) === completed ? { completed } : undefined
  } catch {
    return undefined
  } finally {
    await file.close()
    await unlink(probe).catch(() => undefined)
  }
}

/** Bytes that may wait for the disk per upload while the next chunks are read (bounded memory). */
const MAX_QUEUED = 64 * 1024
/**
 * Bytes after which an upload's data file starts flushing what it received (fdatasync) while more arrives, in the
 * same request or the next (the descriptor is kept between the requests of an upload). Without it the kernel keeps a
 * whole upload in the page cache and the fsync on completion writes all of it at once, after the last byte:
 * receiving and writing to disk one after the other instead of together. An upload sent as many small PATCHes (a
 * client's chunk size) is flushed as one sent whole is.
 */
const SYNC_STEP = 16 * 1024 * 1024

/**
 * Writes chunks to an open file from `position` on while the next ones are read: the chunks that arrive during one write go
 * out together in the next (one writev), so a fast body costs a thread-pool round trip per batch rather than
 * per chunk, and reading the socket overlaps writing the file. At most MAX_QUEUED bytes wait; beyond that
 * `push` returns a promise settled when the write in progress ends. Every SYNC_STEP bytes the descriptor has
 * received it starts a background flush of the file (`DataFile.flushInBackground`; unless the store does not
 * fsync), which no request awaits but the completing one (its fsync) and whoever closes the descriptor.
 *
 * The writes go through callback `fs.writev` on the file's descriptor, driven from its callback: no promise
 * and no async function per batch (a `FileHandle.writev` costs a promise, an async wrapper and a stats array
 * per call, and every chunk of every upload passes here: it was a third of the JavaScript garbage of a large
 * body). Whoever closes the file under a writer first calls `abort` and waits for `settled` (FileStore.close),
 * so a descriptor is never closed under a write in flight.
 */
class Appender {
  readonly #handle: DataFile
  readonly #fd: number
  /** Where the first chunk goes; each batch goes right after what was written. */
  readonly #position: number
  /** The lock's signal (WriteOptions.signal): read before each write, so nothing is written once the lock is lost. */
  readonly #lockLost: AbortSignal | undefined
  #queue: Buffer[] = []
  #queued = 0
  #written = 0
  /** A writev is in flight (or its short write being completed). */
  #writing = false
  /** Told when the write in flight ends. */
  #waiters: Array<() => void> = []
  #failure: { error: unknown } | undefined
  /** Whether the store fsyncs: then the file is flushed in the background every SYNC_STEP bytes. */
  readonly #fsync: boolean
  /** The batch being written. */
  #batch: Buffer[] = []
  /** Told of each chunk once it is written (WriteOptions.reclaim). */
  readonly #reclaim: ((chunk: Buffer) => void) | undefined
  /** Told the offset the data file has reached after each write (WriteOptions.onStored). */
  readonly #onStored: ((offset: number) => void) | undefined
  /** fs.writev's callback, made once. */
  readonly #afterWrite = (error: NodeJS.ErrnoException | null, bytesWritten: number): void => { this.#onWritten(error, bytesWritten) }

  constructor (handle: DataFile, position: number, fsync: boolean, options: WriteOptions | undefined) {
    this.#handle = handle
    this.#position = position
    this.#lockLost = options?.signal
    this.#reclaim = options?.reclaim
    this.#onStored = options?.onStored
    this.#fd = handle.fd
    this.#fsync = fsync
  }

  /** Queues a chunk; returns a promise to wait for when the queue is full (settled when the write in progress ends). */
  push (chunk: Buffer): Promise<void> | undefined {
    if (this.#failure !== undefined) throw this.#failure.error
    this.#handle.checkFlushes()
    if (chunk.length === 0) return undefined
    this.#queue.push(chunk)
    this.#queued += chunk.length
    if (!this.#writing) this.#writeQueue()
    else if (this.#queued >= MAX_QUEUED) return this.settled()
    return undefined
  }

  /** Resolves once no write is in flight (at once if none is). */
  async settled (): Promise<void> {
    if (!this.#writing) return
    await new Promise<void>((resolve) => { this.#waiters.push(resolve) })
  }

  /** No further batch starts; `push` and `finish` throw `error`. The write in flight, if any, still ends (see `settled`). */
  abort (error: Error): void {
    this.#failure ??= { error }
  }

  /**
   * Waits until everything pushed is written; resolves with the bytes written, or rejects with the write error, or
   * a background flush's that has failed by then (one still in flight goes on: see `DataFile.flushesDone`).
   */
  async finish (): Promise<number> {
    while (this.#writing) await this.settled()
    if (this.#failure !== undefined) throw this.#failure.error
    this.#handle.checkFlushes()
    return this.#written
  }

  #writeQueue (): void {
    if (this.#queue.length === 0 || this.#failure !== undefined) {
      this.#writing = false
      return
    }
    this.#batch = this.#queue
    this.#queue = []
    this.#queued = 0
    this.#writing = true
    this.#writeBatch()
  }

  /**
   * Writes (what is left of) the batch, unless the lock was lost: a process that froze past its lease and
   * resumes runs this, from the callback of the write in flight when it froze, before its timers.
   */
  #writeBatch (): void {
    if (this.#lockLost?.aborted === true) {
      this.#failure ??= { error: this.#lockLost.reason }
      this.#writing = false
      this.#wake()
      return
    }
    fs.writev(this.#fd, this.#batch, this.#position + this.#written, this.#afterWrite)
  }

  #onWritten (error: NodeJS.ErrnoException | null, bytesWritten: number): void {
    if (error === null && bytesWritten === 0) error = new Error('the data file accepted no bytes')
    if (error !== null) {
      this.#failure ??= { error }
      this.#writing = false
      this.#wake()
      return
    }
    this.#written += bytesWritten
    // In the file now: a process that dies keeps it (the offset is the file's size).
    this.#onStored?.(this.#position + this.#written)
    if (this.#fsync) {
      this.#handle.unflushed += bytesWritten
      if (this.#handle.unflushed >= SYNC_STEP) this.#handle.flushInBackground()
    }
    // A short write: the rest of the batch goes again, before anything queued since.
    const buffers = this.#batch
    while (bytesWritten > 0) {
      const first = buffers[0]!
      if (first.length <= bytesWritten) {
        bytesWritten -= first.length
        buffers.shift()
        this.#reclaim?.(first)
      } else {
        buffers[0] = first.subarray(bytesWritten)
        bytesWritten = 0
      }
    }
    if (buffers.length > 0 && this.#failure === undefined) {
      this.#writeBatch()
      return
    }
    this.#batch = []
    this.#writeQueue()
    this.#wake()
  }

  #wake (): void {
    if (this.#waiters.length === 0) return
    const waiters = this.#waiters
    this.#waiters = []
    for (const wake of waiters) wake()
  }
}

/**
 * An info file's contents as this store wrote them, or STORE_FAILED (500) naming what is wrong: one edited by hand,
 * or overwritten by another tool, must not be answered as an upload (a length of "abc" in a header, say).
 */
function checkedInfo (value: unknown, id: string): StoredInfo {
  const info = value as Partial<Record<keyof StoredInfo, unknown>> | null
  const wrong = (what: string): Error => new TusErrors.STORE_FAILED(`the info file of upload ${id} is malformed (${what})`)
  if (typeof info !== 'object' || info === null || Array.isArray(info)) throw wrong('not an object')
  if (info.id !== id) throw wrong('another id')
  if (info.size !== null && !(Number.isSafeInteger(info.size) && (info.size as number) >= 0)) throw wrong('size')
  const metadata = info.metadata
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata) || !Object.values(metadata).every((field) => typeof field === 'string')) throw wrong('metadata')
  if (typeof info.createdAt !== 'string' || Number.isNaN(Date.parse(info.createdAt))) throw wrong('createdAt')
  const concat = info.concat as Partial<Record<string, unknown>> | undefined
  if (concat !== undefined && !(concat?.type === 'partial' ||
    (concat?.type === 'final' && typeof concat.header === 'string' && Array.isArray(concat.parts) && concat.parts.every((part) => typeof part === 'string') &&
      (concat.partials === undefined || isPartialIdentities(concat.partials, concat.parts.length))))) throw wrong('concat')
  if (info.directory !== undefined && typeof info.directory !== 'string') throw wrong('directory')
  return info as StoredInfo
}

/** A final's record of its partials: one identity per part, each as `withPartials` (core/finals.ts) writes it. */
function isPartialIdentities (value: unknown, parts: number): boolean {
  return Array.isArray(value) && value.length === parts && value.every((identity: Partial<Record<string, unknown>> | null) =>
    typeof identity === 'object' && identity !== null && typeof identity.createdAt === 'string' && !Number.isNaN(Date.parse(identity.createdAt)) &&
    Number.isSafeInteger(identity.size) && (identity.size as number) >= 0)
}

function toUploadInfo (info: StoredInfo, path: string, stats: Pick<Stats, 'size' | 'mtime'> & { mode?: number } | undefined): UploadInfo {
  // The store never writes past an upload's length: a longer data file was changed by something else.
  if (info.size !== null && stats !== undefined && stats.size > info.size) {
    throw new TusErrors.STORE_FAILED(`the data file of upload ${info.id} holds ${stats.size} bytes, more than its length ${info.size}`)
  }
  const createdAt = new Date(info.createdAt)
  // Properties set one by one: a literal with conditional spreads costs ten times as much, on every read.
  const upload: UploadInfo = {
    id: info.id,
    size: info.size ?? undefined,
    metadata: info.metadata,
    offset: stats?.size ?? 0,
    createdAt,
    modifiedAt: stats?.mtime ?? createdAt,
    path
  }
  if (info.concat !== undefined) upload.concat = info.concat
  if (info.directory !== undefined) upload.directory = info.directory
  if (stats?.mode !== undefined && (stats.mode & PENDING_COMPLETION) !== 0 && stats.size === info.size) upload.completing = true
  return upload
}

function identityOf (stats: Stats): FileIdentity {
  return { ino: stats.ino, birthtimeMs: stats.birthtimeMs }
}

function assertSafeId (id: string): void {
  // Handlers validate ids already; this keeps the store safe when it is used directly.
  if (!isValidUploadId(id)) throw new TusErrors.NOT_FOUND()
}

function isExists (error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'EEXIST'
}

function rethrowUnlessNotFound (error: unknown): void {
  if (!isNotFound(error)) throw error
}
