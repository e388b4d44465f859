import { Readable } from 'node:stream'
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  UploadPartCopyCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type S3ClientConfig
} from '@aws-sdk/client-s3'
import { TusErrors, errorMessage } from '../errors.js'
import { refuseUnknownKeys } from '../known-keys.js'
import { isValidDirectory, isValidUploadId } from '../ids.js'
import { contentDisposition, contentType } from '../metadata.js'
import type { ByteRange, DataStore, NewUpload, StoredInfo, UploadInfo, UploadMetadata, WriteOptions } from './types.js'

const MiB = 1024 * 1024
/** Options of an SDK send: a write made under a lock that can be lost is aborted with it. */
type SendOptions = { abortSignal?: AbortSignal }
/** S3's limits: every part but the last is at least 5 MiB, at most 5 GiB, and an upload has at most 10000 parts. */
const MIN_PART_SIZE = 5 * MiB
const MAX_PART_SIZE = 5 * 1024 * MiB
const MAX_PARTS = 10_000
/**
 * The largest part the store makes: a part is buffered in memory whole, and Node 20's largest Buffer is 4 GiB
 * (a 5 GiB part failed every append with a RangeError). S3's own limit, MAX_PART_SIZE, still bounds the parts S3
 * copies itself (UploadPartCopy).
 */
const LARGEST_BUFFERED_PART = 4 * 1024 * MiB
/**
 * The parts of an upload of deferred length double in size every this many parts (up to LARGEST_BUFFERED_PART): its
 * length is not known when its parts are sized, and parts of one size would cap it at 10000 x partSize (78 GiB with
 * 8 MiB parts). From 6 MiB this reaches S3's largest object (5 TiB) within 10000 parts (4.9 TiB from 5 MiB), and
 * from part 1001 on a part is at most a five-hundredth of what the upload holds before it.
 */
const PARTS_PER_DOUBLING = 1000
/**
 * Timeouts of the S3 client's requests unless `s3.requestHandler` sets its own (the SDK's own defaults are none,
 * so a frozen endpoint held a request, and the upload's lock, for good): ms to connect, and ms a request may go
 * without a byte either way. The AWS SDK for Java uses 2 s and 30 s; a working endpoint answers in milliseconds,
 * and S3 (and Ceph) send whitespace while a long CompleteMultipartUpload or UploadPartCopy runs.
 */
const CONNECTION_TIMEOUT = 10_000
const SOCKET_TIMEOUT = 30_000
const INFO_SUFFIX = '.info'
const INCOMPLETE_SUFFIX = '.part'
/** `<id>.finals/<finalId>`: an empty object per final upload waiting for partial upload `<id>`. */
const PENDING_FINALS_SUFFIX = '.finals/'
/** User metadata on the incomplete-part object: the part number its bytes will become. */
const PART_NUMBER = 'tus-part-number'
/**
 * User metadata on the incomplete-part object: the multipart upload (UploadId) its bytes belong to. A termination
 * that crashed can leave the object of an upload behind; a later upload under the same id must not count it.
 */
const PART_UPLOAD_ID = 'tus-upload-id'
/** Info objects of unfinished uploads kept in memory (#state): about 1 KiB each. */
const INFO_CACHE_ENTRIES = 10_000
/** States kept for the rest of a lock hold (#held): about 1 KiB plus 100 bytes a part each. */
const HELD_STATES = 1_000

export interface S3StoreOptions {
  /** The bucket the uploads live in; it must exist. */
  bucket: string
  /**
   * Settings for the S3 client the store creates (and destroys on close): region, endpoint, credentials...
   * The two checksum settings default to 'WHEN_REQUIRED', which S3-compatible stores such as Ceph, MinIO and
   * Swift need; an S3-compatible store without wildcard DNS also needs `forcePathStyle: true`. Unless
   * `requestHandler` sets them (or is a handler object), a request fails after 10 s without a connection or 30 s
   * without a byte either way (`connectionTimeout`, `socketTimeout`).
   */
  s3: S3ClientConfig
  /**
   * Prefix of every object key, e.g. `uploads/` or `tus-`; with '' the keys start with the upload ids. Default ''.
   * No other writer's keys may start with it that look like the store's (`<id>`, `<id>.info`, `<dir>/<id>`...):
   * removeExpired() removes those that no upload refers to.
   */
  prefix?: string
  /**
   * Bytes per multipart part: 5 MiB (S3's least) to 4 GiB (a part is buffered whole; Node 20's largest Buffer). A PATCH's bytes are buffered in memory by whole parts, so
   * this (with `partsInFlight`) bounds the memory per running PATCH. Uploads of known length use bigger parts when they need more
   * than 10000 parts; uploads of deferred length double their part size every 1000 parts (8 MiB parts up to
   * 7.8 GiB, then 16 MiB up to 23.4 GiB, 32 MiB up to 54.7 GiB...), so that they can reach S3's 5 TiB. Default 8 MiB.
   */
  partSize?: number
  /**
   * Parts a PATCH uploads at once (1 to 64). Memory per running PATCH is bounded by (partsInFlight + 1) x
   * the upload's part size: the parts on their way plus the one being filled. Parts are still numbered in order; if one
   * fails, the upload resumes after the last part before it. Default 4.
   */
  partsInFlight?: number
}

/** What `<id>.info` holds (the offset is what S3 has durably stored). */
interface InfoObject extends StoredInfo {
  /** The multipart upload that collects the data. */
  uploadId: string
  /** Bytes of part 1 (and of every part, unless partSizeDoublesEvery is set). */
  partSize: number
  /** Uploads created with a deferred length: the part size doubles every this many parts (PARTS_PER_DOUBLING). */
  partSizeDoublesEvery?: number
  /** Set once CompleteMultipartUpload has turned the parts into the data object. */
  completed?: boolean
}

interface StoredPart {
  PartNumber: number
  ETag: string
  Size: number
  LastModified: Date | undefined
}

/** One of the store's own keys read back (#parseKey), the inverse of the functions that build them. */
type StoreKey =
  | { kind: 'data', id: string, directory: string | undefined }
  | { kind: 'info' | 'incomplete', id: string }
  | { kind: 'pending-final', partialId: string, finalId: string }

/** An upload as S3 holds it right now. */
interface UploadState {
  info: InfoObject
  /** Uploaded parts 1..n, each a whole part, in order; empty once completed. */
  parts: StoredPart[]
  /** Part numbers beyond a gap (a part that failed while later ones landed): not counted, overwritten later. */
  strays: Set<number>
  /** Bytes of the unfinished part (the incomplete-part object), 0 when there is none. */
  incompleteSize: number
  offset: number
  modifiedAt: Date
}

/**
 * Keeps each upload in S3 (or an S3-compatible store) as a multipart upload of the data object `<id>` (under
 * onUploadCreate's sub-directory, if any), with `<id>.info` beside it and `<id>.part` holding the bytes of an
 * unfinished part, so a PATCH that ends mid-part loses nothing and the next one, on any instance, continues it.
 * The offset is what S3 holds (the listed parts plus the incomplete part); completion is
 * CompleteMultipartUpload. Several app instances can share one bucket; run them with a shared locker
 * (RedisLocker), since S3 itself does not serialise the writes to one upload.
 */
export class S3Store implements DataStore {
  readonly bucket: string
  readonly prefix: string
  readonly partSize: number
  readonly partsInFlight: number
  readonly #client: S3Client
  /**
   * The info objects of unfinished uploads of known length, as read last. What such an object says cannot change
   * while its multipart upload exists (only completion, which ends that multipart upload, rewrites it; a
   * termination aborts it first), and every #state lists the parts of that multipart upload anyway: a 404 there
   * means the entry is stale, whichever instance made it so, and the info object is read again.
   */
  readonly #infoCache = new Map<string, InfoObject>()
  /**
   * The state of an upload of known length as read (getInfo) or left (create, write) by a call made under a lock
   * hold, for the later calls of the same hold (write, flush): nobody else writes to the upload while the hold
   * lasts, so S3 still holds exactly that. Used only with the same hold object while its signal is not aborted;
   * a call that changes the upload otherwise (concatenate, declareLength, terminate) drops it.
   */
  readonly #held = new Map<string, { hold: object, state: UploadState }>()
  /**
   * Part buffers (of `partSize` bytes) whose UploadPart succeeded, for the next parts of any upload: memory already
   * in use is filled again instead of fresh memory, which costs a page fault per 4 KiB on first use. At most
   * 2 x partsInFlight are kept; emptied on close.
   */
  readonly #spareParts: Buffer[] = []

  constructor (options: S3StoreOptions) {
    refuseUnknownKeys('S3Store', options, Object.keys({ bucket: true, s3: true, prefix: true, partSize: true, partsInFlight: true } satisfies Record<keyof S3StoreOptions, true>))
    if (typeof options.bucket !== 'string' || options.bucket === '') throw new TusErrors.INVALID_OPTION('S3Store bucket must be a non-empty string')
    this.bucket = options.bucket
    this.prefix = options.prefix ?? ''
    this.partSize = options.partSize ?? 8 * MiB
    if (!Number.isSafeInteger(this.partSize) || this.partSize < MIN_PART_SIZE || this.partSize > LARGEST_BUFFERED_PART) {
      throw new TusErrors.INVALID_OPTION(`S3Store partSize must be an integer from ${MIN_PART_SIZE} (5 MiB) to ${LARGEST_BUFFERED_PART} (4 GiB: a part is buffered whole) (got ${String(options.partSize)})`)
    }
    this.partsInFlight = options.partsInFlight ?? 4
    if (!Number.isSafeInteger(this.partsInFlight) || this.partsInFlight < 1 || this.partsInFlight > 64) {
      throw new TusErrors.INVALID_OPTION(`S3Store partsInFlight must be an integer from 1 to 64 (got ${String(options.partsInFlight)})`)
    }
    this.#client = new S3Client({
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      ...options.s3,
      requestHandler: withTimeouts(options.s3?.requestHandler)
    })
  }

  async create (upload: NewUpload, options?: WriteOptions): Promise<UploadInfo> {
    assertSafeId(upload.id)
    const createdAt = new Date()
    const multipart = await this.#send('CreateMultipartUpload', async (s3) => await s3.send(new CreateMultipartUploadCommand({
      Bucket: this.bucket,
      Key: this.#dataKey(upload.id, upload.directory),
      ...objectHeaders(upload.id, upload.metadata)
    })))
    if (multipart.UploadId === undefined) throw new TusErrors.STORE_FAILED('S3 CreateMultipartUpload returned no UploadId')
    const info: InfoObject = {
      id: upload.id,
      size: upload.size ?? null,
      metadata: upload.metadata,
      ...(upload.concat === undefined ? {} : { concat: upload.concat }),
      ...(upload.directory === undefined ? {} : { directory: upload.directory }),
      createdAt: createdAt.toISOString(),
      uploadId: multipart.UploadId,
      partSize: this.#partSizeFor(upload.size),
      ...(upload.size === undefined ? { partSizeDoublesEvery: PARTS_PER_DOUBLING } : {})
    }
    // Written only if no info object has this id yet (If-None-Match: *, atomic in S3): a taken id aborts the
    // multipart upload just created (a second one of the same key; the other upload's is untouched).
    try {
      await this.#writeInfo(info, true)
    } catch (error) {
      if (((error as { cause?: { $metadata?: { httpStatusCode?: number } } }).cause?.$metadata?.httpStatusCode) !== 412) throw error
      await this.#abort(this.#dataKey(upload.id, upload.directory), multipart.UploadId)
      throw new TusErrors.ID_TAKEN(upload.id)
    }
    this.#cacheInfo(info)
    this.#keep(options, { info, parts: [], strays: new Set(), incompleteSize: 0, offset: 0, modifiedAt: createdAt })
    return { ...upload, offset: 0, createdAt, modifiedAt: createdAt }
  }

  async getInfo (id: string, options?: WriteOptions): Promise<UploadInfo> {
    const state = await this.#state(id)
    this.#keep(options, state)
    const { info, offset, modifiedAt } = state
    return {
      id,
      size: info.size ?? undefined,
      metadata: info.metadata,
      ...(info.concat === undefined ? {} : { concat: info.concat }),
      ...(info.directory === undefined ? {} : { directory: info.directory }),
      offset,
      createdAt: new Date(info.createdAt),
      modifiedAt,
      ...(info.completed !== true && info.size !== null && offset === info.size ? { completing: true } : {})
    }
  }

  /**
   * With `options.signal` (the caller's lock), every S3 call that changes the upload first checks that the lock
   * is still held: a holder that froze past its lock's ttl, while another instance took over and stored bytes,
   * fails instead of overwriting them with its stale part numbers. Those calls are also given the signal as the
   * SDK's abortSignal: one issued before the lock was lost and not answered yet is dropped when it is. (S3 has no
   * conditional UploadPart, so bytes S3 already received can still land: the locker aborts a margin before.)
   */
  async write (id: string, offset: number, source: AsyncIterable<Buffer>, options?: WriteOptions): Promise<number> {
    const fence = (): void => { options?.signal?.throwIfAborted() }
    fence()
    const state = this.#kept(id, options) ?? await this.#state(id)
    if (state.offset !== offset) throw new TusErrors.STORE_FAILED(`upload ${id} is at offset ${state.offset} in S3, not ${offset}`)
    if (state.info.completed === true) throw new TusErrors.STORE_FAILED(`upload ${id} is already complete`)
    const { info } = state
    // The bytes from the start of the unfinished part to the end of the upload, when its length is known: no part
    // buffer is bigger than that.
    const room = info.size === null ? Number.POSITIVE_INFINITY : info.size - state.offset + state.incompleteSize
    const firstPart = state.parts.length + 1
    const pending = new PartBuffer(
      (index) => partSizeOf(info, firstPart + index),
      room,
      (size) => (size === this.partSize ? this.#spareParts.pop() : undefined) ?? Buffer.allocUnsafe(size)
    )
    if (state.incompleteSize > 0) pending.push(await this.#readIncomplete(id, state.incompleteSize))
    const carried = pending.length
    let partNumber = firstPart
    let received = 0
    let sourceError: unknown
    const chunks = source[Symbol.asyncIterator]()
    // Up to partsInFlight UploadParts at once. The first to fail stops the write; the others are awaited, so
    // nothing of this write lands after it returns. Parts after a failed one are strays (see #state).
    const inFlight = new Set<Promise<void>>()
    const failures: unknown[] = []
    const strays = new Set(state.strays)
    const uploaded: StoredPart[] = []
    // What S3 holds as the parts complete (they may complete out of order): the parts before this write and the run
    // of this write's parts that follows them without a gap, or the offset this write started at (its carried
    // incomplete part is in S3 until the part holding its bytes completes). For WriteOptions.onStored.
    const finished = new Map<number, number>()
    let nextInRun = state.parts.length + 1
    let inRun = state.offset - state.incompleteSize
    const stored = (number: number, length: number): void => {
      finished.set(number, length)
      while (finished.has(nextInRun)) {
        inRun += finished.get(nextInRun)!
        finished.delete(nextInRun++)
      }
      if (inRun > state.offset) options?.onStored?.(inRun)
    }
    const start = (number: number, body: Buffer): void => {
      const length = body.length
      const upload: Promise<void> = this.#uploadPart(info, number, body, options?.signal).then(
        (part) => {
          strays.delete(number)
          uploaded.push(part)
          stored(number, length)
          if (body.length === this.partSize && body.byteOffset === 0 && body.buffer.byteLength === body.length && this.#spareParts.length < 2 * this.partsInFlight) {
            this.#spareParts.push(body)
          }
        },
        (error: unknown) => { failures.push(error) }
      ).finally(() => { inFlight.delete(upload) })
      inFlight.add(upload)
    }
    const settle = async (): Promise<void> => { await Promise.all([...inFlight]) }
    try {
      while (true) {
        let next: IteratorResult<Buffer>
        try {
          next = await chunks.next()
        } catch (error) {
          // The bytes that did arrive are kept (below), as the file store keeps them; the caller reports the error.
          sourceError = error
          break
        }
        if (next.done === true) break
        pending.push(next.value)
        received += next.value.length
        options?.reclaim?.(next.value)
        while (pending.hasWholePart) {
          while (inFlight.size >= this.partsInFlight && failures.length === 0) await Promise.race(inFlight)
          if (failures.length > 0) throw failures[0]
          if (partNumber > MAX_PARTS) throw tooManyParts(info)
          fence()
          start(partNumber, pending.takePart())
          partNumber++
        }
        if (failures.length > 0) throw failures[0]
      }
      // The upload's last bytes go straight into its last part, not into the incomplete-part object that flush would
      // read back (unless a stray beyond it would then be counted).
      if (sourceError === undefined && pending.length > 0 && offset + received === info.size && ![...strays].some((number) => number > partNumber)) {
        while (inFlight.size >= this.partsInFlight && failures.length === 0) await Promise.race(inFlight)
        if (failures.length > 0) throw failures[0]
        fence()
        start(partNumber, pending.takeRest())
        partNumber++
      }
      await settle()
      if (failures.length > 0) throw failures[0]
    } catch (error) {
      // S3 failed (or the lock was lost): what was buffered is lost, so nothing after it may be kept either; the
      // offset stays what S3 has, the parts before the first failure.
      await settle()
      await chunks.return?.()
      throw error
    }
    // A stray part right after the last one written would make S3's listing count it: overwrite it with nothing.
    if (strays.has(partNumber)) {
      fence()
      await this.#uploadPart(info, partNumber, Buffer.alloc(0), options?.signal)
    }
    const remainder = pending.takeRest()
    if (remainder.length > 0 || carried > 0) fence()
    if (remainder.length > 0 && (remainder.length !== carried || partNumber !== state.parts.length + 1)) {
      await this.#send('PutObject', async (s3, sendOptions) => await s3.send(new PutObjectCommand({
        Bucket: this.bucket,
        Key: this.#incompleteKey(id),
        Body: remainder,
        ContentLength: remainder.length,
        Metadata: { [PART_NUMBER]: String(partNumber), [PART_UPLOAD_ID]: info.uploadId }
      }), sendOptions), options?.signal)
      options?.onStored?.(offset + received)
    } else if (remainder.length === 0 && carried > 0) {
      // Its bytes went into a part; its part number already marks it stale, this only tidies up.
      await this.#delete(this.#incompleteKey(id))
    }
    // What S3 holds now, for the rest of this lock hold (flush).
    uploaded.sort((a, b) => a.PartNumber - b.PartNumber)
    this.#keep(options, {
      info,
      parts: [...state.parts, ...uploaded],
      strays,
      incompleteSize: remainder.length,
      offset: offset + received,
      modifiedAt: new Date()
    })
    if (sourceError !== undefined) throw sourceError
    return offset + received
  }

  /** Completes the multipart upload once every byte is there: the data object appears, readable as a whole. */
  async flush (id: string, options?: WriteOptions): Promise<void> {
    const { info, parts: known, incompleteSize, offset } = this.#kept(id, options) ?? await this.#state(id)
    const parts = [...known]
    if (info.completed === true || info.size === null || offset !== info.size) return
    const signal = options?.signal
    signal?.throwIfAborted()
    if (incompleteSize > 0) {
      parts.push(await this.#uploadPart(info, parts.length + 1, await this.#readIncomplete(id, incompleteSize), signal))
    }
    const dataKey = this.#dataKey(id, info.directory)
    if (parts.length === 0) {
      // S3 cannot complete a multipart upload without parts: an empty upload is a plain empty object. It is written
      // before the abort: a multipart upload gone and no object would be a removed upload (404) to every reader.
      await this.#send('PutObject', async (s3) => await s3.send(new PutObjectCommand({
        Bucket: this.bucket, Key: dataKey, Body: '', ContentLength: 0, ...objectHeaders(id, info.metadata)
      })))
      await this.#abort(dataKey, info.uploadId)
    } else {
      signal?.throwIfAborted()
      await this.#send('CompleteMultipartUpload', async (s3, sendOptions) => await s3.send(new CompleteMultipartUploadCommand({
        Bucket: this.bucket,
        Key: dataKey,
        UploadId: info.uploadId,
        MultipartUpload: { Parts: parts.map(({ PartNumber, ETag }) => ({ PartNumber, ETag })) }
      }), sendOptions), signal)
    }
    await this.#writeInfo({ ...info, completed: true })
    if (incompleteSize > 0) await this.#delete(this.#incompleteKey(id))
  }

  /**
   * UploadPartCopy of each complete partial into the final's multipart upload, one part per partial: S3
   * copies the bytes itself. Only when every partial but the last is a valid non-last part (5 MiB to
   * 5 GiB) and none is empty; otherwise false, and the partials are streamed through the server.
   */
  async concatenate (finalId: string, partialIds: string[]): Promise<boolean> {
    this.#held.delete(finalId)
    if (partialIds.length > MAX_PARTS) return false
    const final = await this.#state(finalId)
    if (final.offset !== 0 || final.info.completed === true) return false
    const partials = await Promise.all(partialIds.map(async (id) => (await this.#readInfo(id)).body))
    const copyable = partials.every((partial, index) => {
      const size = partial.size ?? 0
      const last = index === partials.length - 1
      return partial.completed === true && size > 0 && size <= MAX_PART_SIZE && (last || size >= MIN_PART_SIZE)
    })
    if (!copyable) return false
    const dataKey = this.#dataKey(finalId, final.info.directory)
    for (const [index, partial] of partials.entries()) {
      const source = `${this.bucket}/${this.#dataKey(partial.id, partial.directory)}`
      await this.#send('UploadPartCopy', async (s3) => await s3.send(new UploadPartCopyCommand({
        Bucket: this.bucket,
        Key: dataKey,
        UploadId: final.info.uploadId,
        PartNumber: index + 1,
        CopySource: encodeURI(source)
      })))
    }
    return true
  }

  /** One empty object `<partialId>.finals/<finalId>` per partial: every instance sharing the bucket lists them. */
  async addPendingFinal (finalId: string, partialIds: string[]): Promise<void> {
    assertSafeId(finalId)
    for (const partialId of new Set(partialIds)) {
      await this.#send('PutObject', async (s3) => await s3.send(new PutObjectCommand({
        Bucket: this.bucket, Key: this.#pendingFinalKey(partialId, finalId), Body: '', ContentLength: 0
      })))
    }
  }

  async listPendingFinals (partialId: string): Promise<string[]> {
    const finals: string[] = []
    for await (const object of this.#objects(this.#pendingFinalsPrefix(partialId))) {
      const key = this.#parseKey(object.key)
      if (key?.kind === 'pending-final' && key.partialId === partialId) finals.push(key.finalId)
    }
    return finals
  }

  async removePendingFinal (finalId: string, partialIds: string[]): Promise<void> {
    for (const partialId of new Set(partialIds)) await this.#delete(this.#pendingFinalKey(partialId, finalId))
  }

  async declareLength (id: string, size: number): Promise<void> {
    this.#held.delete(id)
    const info = await this.#readInfo(id)
    await this.#writeInfo({ ...info.body, size })
  }

  async read (id: string, range?: ByteRange): Promise<Readable> {
    const info = await this.#readInfo(id)
    // No data object while its info object is there: a termination (which removes the info object last) is removing
    // the upload, under a download that read it just before: 404, as the upload is by the time it is answered.
    const object = await this.#sendOrNotFound('GetObject', async (s3) => await s3.send(new GetObjectCommand({
      Bucket: this.bucket,
      Key: this.#dataKey(id, info.body.directory),
      ...(range === undefined ? {} : { Range: `bytes=${range.start}-${range.end}` })
    })))
    if (object === undefined) throw new TusErrors.NOT_FOUND()
    if (!(object.Body instanceof Readable)) throw new TusErrors.STORE_FAILED('S3 GetObject returned no stream')
    return object.Body
  }

  async terminate (id: string): Promise<void> {
    const info = await this.#infoIfAny(id)
    this.#infoCache.delete(id)
    this.#held.delete(id)
    if (info === undefined) return
    const dataKey = this.#dataKey(id, info.body.directory)
    // The info object goes last: until then the upload is found (getInfo), so a termination that fails or dies
    // half-way is finished by a DELETE retried or by removeExpired(), and a cached info object stays right (it is
    // trusted while its multipart upload exists). The objects named after the id go first: an upload created
    // later under the same id must meet none of them.
    await this.#delete(this.#incompleteKey(id))
    // The records of finals waiting for this partial: they can never complete now.
    for await (const { key } of this.#objects(this.#pendingFinalsPrefix(id))) await this.#delete(key)
    await this.#delete(dataKey)
    // Any other multipart upload of this key: a create that crashed (or raced) before writing its info.
    for await (const upload of this.#multipartUploads(dataKey)) {
      if (upload.key === dataKey && upload.uploadId !== info.body.uploadId) await this.#abort(upload.key, upload.uploadId)
    }
    // From here the upload is gone (getInfo: 404). A crash before the info object's removal leaves that object,
    // and a part landing while the abort runs keeps its multipart upload alive: removeAbandoned removes both.
    await this.#abort(dataKey, info.body.uploadId)
    await this.#delete(this.#infoKey(id))
  }

  /**
   * Removes, once last changed (or started) before `before`, what no upload refers to: multipart uploads that no info
   * object names (a create that crashed before writing it, a part that landed while a termination aborted), and what a
   * termination that died half-way leaves: incomplete-part objects and pending-final records of an id without an
   * upload (or of another multipart upload, or of a completed one), and info objects whose upload is gone (no
   * multipart upload, no data object). Only keys that parse as the store's own (#parseKey): anything else that
   * shares the prefix is left alone. S3 has no conditional DeleteObject everywhere, so each is checked right before
   * it is removed; a bucket lifecycle rule (AbortIncompleteMultipartUpload) is the safety net for the rest.
   */
  async removeAbandoned (before: Date): Promise<number> {
    let removed = 0
    for await (const upload of this.#multipartUploads(this.prefix)) {
      if (upload.initiated === undefined || upload.initiated >= before) continue
      const key = this.#parseKey(upload.key)
      if (key?.kind !== 'data') continue
      const info = await this.#infoIfAny(key.id)
      if (info !== undefined && info.body.uploadId === upload.uploadId && info.body.directory === key.directory) continue
      await this.#abort(upload.key, upload.uploadId)
      removed++
    }
    for await (const object of this.#objects(this.prefix)) {
      if (object.lastModified === undefined || object.lastModified >= before) continue
      const key = this.#parseKey(object.key)
      const abandoned = key?.kind === 'incomplete'
        ? await this.#incompleteAbandoned(key.id, before)
        : key?.kind === 'pending-final'
          ? await this.#infoIfAny(key.partialId) === undefined
          : key?.kind === 'info' && await this.#infoAbandoned(key.id, before)
      if (!abandoned) continue
      await this.#delete(object.key)
      removed++
    }
    return removed
  }

  /** Whether `<id>.part` is old and counts for no upload: no info object, a completed upload, another multipart upload. */
  async #incompleteAbandoned (id: string, before: Date): Promise<boolean> {
    const info = await this.#infoIfAny(id)
    const incomplete = await this.#head(this.#incompleteKey(id))
    if (incomplete?.LastModified === undefined || incomplete.LastModified >= before) return false
    return info === undefined || info.body.completed === true || !isPartOf(incomplete.Metadata, info.body.uploadId)
  }

  /** Whether `<id>.info` is old and describes an upload that is gone: unfinished, no multipart upload, no data object. */
  async #infoAbandoned (id: string, before: Date): Promise<boolean> {
    const info = await this.#infoIfAny(id)
    if (info === undefined || info.lastModified >= before || info.body.completed === true) return false
    if (info.body.directory !== undefined && !isValidDirectory(info.body.directory)) return false
    const dataKey = this.#dataKey(id, info.body.directory)
    // In this order: a completion between the two calls has its data object in place before ListParts answers 404.
    return await this.#listParts(dataKey, info.body.uploadId) === undefined && await this.#head(dataKey) === undefined
  }

  async * list (): AsyncIterable<string> {
    let token: string | undefined
    do {
      const page = await this.#send('ListObjectsV2', async (s3) => await s3.send(new ListObjectsV2Command({
        Bucket: this.bucket,
        Prefix: this.prefix,
        Delimiter: '/',
        ...(token === undefined ? {} : { ContinuationToken: token })
      })))
      for (const { Key } of page.Contents ?? []) {
        const key = Key === undefined ? undefined : this.#parseKey(Key)
        if (key?.kind === 'info') yield key.id
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined
    } while (token !== undefined)
  }

  async close (): Promise<void> {
    this.#spareParts.length = 0
    this.#client.destroy()
  }

  /** Every object under `prefix`, all pages. */
  async * #objects (prefix: string): AsyncIterable<{ key: string, lastModified: Date | undefined }> {
    let token: string | undefined
    do {
      const page = await this.#send('ListObjectsV2', async (s3) => await s3.send(new ListObjectsV2Command({
        Bucket: this.bucket,
        Prefix: prefix,
        ...(token === undefined ? {} : { ContinuationToken: token })
      })))
      for (const { Key, LastModified } of page.Contents ?? []) if (Key !== undefined) yield { key: Key, lastModified: LastModified }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined
    } while (token !== undefined)
  }

  /** Every multipart upload in progress under `prefix`, all pages. */
  async * #multipartUploads (prefix: string): AsyncIterable<{ key: string, uploadId: string, initiated: Date | undefined }> {
    let keyMarker: string | undefined
    let uploadIdMarker: string | undefined
    do {
      const page = await this.#send('ListMultipartUploads', async (s3) => await s3.send(new ListMultipartUploadsCommand({
        Bucket: this.bucket,
        Prefix: prefix,
        ...(keyMarker === undefined ? {} : { KeyMarker: keyMarker }),
        ...(uploadIdMarker === undefined ? {} : { UploadIdMarker: uploadIdMarker })
      })))
      for (const { Key, UploadId, Initiated } of page.Uploads ?? []) {
        if (Key !== undefined && UploadId !== undefined) yield { key: Key, uploadId: UploadId, initiated: Initiated }
      }
      const truncated = page.IsTruncated === true && (page.NextKeyMarker !== undefined || page.NextUploadIdMarker !== undefined)
      keyMarker = truncated ? page.NextKeyMarker : undefined
      uploadIdMarker = truncated ? page.NextUploadIdMarker : undefined
    } while (keyMarker !== undefined || uploadIdMarker !== undefined)
  }

  async #state (id: string): Promise<UploadState> {
    const cached = this.#infoCache.get(id)
    if (cached !== undefined) {
      const listed = await this.#listParts(this.#dataKey(id, cached.directory), cached.uploadId)
      if (listed !== undefined) return await this.#unfinishedState(id, cached, listed)
      this.#infoCache.delete(id)
    }
    const { body: info, lastModified } = await this.#readInfo(id)
    const dataKey = this.#dataKey(id, info.directory)
    if (info.completed === true) return { info, parts: [], strays: new Set(), incompleteSize: 0, offset: info.size ?? 0, modifiedAt: lastModified }
    const listed = await this.#listParts(dataKey, info.uploadId)
    if (listed === undefined) {
      // The multipart upload is gone: either completed just before the info could say so, or aborted by a
      // termination that had already removed the info object.
      const data = await this.#head(dataKey)
      if (data === undefined) throw new TusErrors.NOT_FOUND()
      return { info: { ...info, completed: true }, parts: [], strays: new Set(), incompleteSize: 0, offset: data.ContentLength ?? 0, modifiedAt: data.LastModified ?? lastModified }
    }
    this.#cacheInfo(info)
    return await this.#unfinishedState(id, info, listed)
  }

  #cacheInfo (info: InfoObject): void {
    // A deferred length can be declared by any instance without touching the multipart upload: not cached.
    if (info.size === null) return
    if (this.#infoCache.size >= INFO_CACHE_ENTRIES) this.#infoCache.delete(this.#infoCache.keys().next().value!)
    this.#infoCache.set(info.id, info)
  }

  /**
   * Keeps `state` for the later calls of the caller's lock hold, if it names one. Only unfinished uploads of known
   * length: a deferred one's info changes when its length is declared, a completed one is not written again.
   */
  #keep (options: WriteOptions | undefined, state: UploadState): void {
    const id = state.info.id
    this.#held.delete(id)
    if (options?.hold === undefined || options.signal?.aborted === true || state.info.size === null || state.info.completed === true) return
    if (this.#held.size >= HELD_STATES) this.#held.delete(this.#held.keys().next().value!)
    this.#held.set(id, { hold: options.hold, state })
  }

  /** The state kept under the caller's hold (#keep), if the hold is the same and its lock still held; then forgotten. */
  #kept (id: string, options: WriteOptions | undefined): UploadState | undefined {
    const kept = this.#held.get(id)
    this.#held.delete(id)
    if (kept === undefined || options?.hold !== kept.hold || options.signal?.aborted === true) return undefined
    return kept.state
  }

  async #unfinishedState (id: string, info: InfoObject, listed: StoredPart[]): Promise<UploadState> {
    const createdAt = new Date(info.createdAt)
    // The parts that count: 1, 2, 3... without a gap, none empty. Parts uploaded at once can land out of order:
    // after a failed one the later ones are strays, left out until overwritten (an empty part ends the run).
    const parts: StoredPart[] = []
    const strays = new Set<number>()
    for (const part of listed) {
      if (strays.size === 0 && part.PartNumber === parts.length + 1 && part.Size > 0) parts.push(part)
      else strays.add(part.PartNumber)
    }
    let modifiedAt = createdAt
    let offset = 0
    for (const part of parts) {
      offset += part.Size
      if (part.LastModified !== undefined && part.LastModified > modifiedAt) modifiedAt = part.LastModified
    }
    let incompleteSize = 0
    const incomplete = await this.#head(this.#incompleteKey(id))
    // An incomplete part whose number is taken already went into that part (a crash came before its removal); one
    // of another multipart upload is what a termination that died left of an earlier upload with this id.
    if (incomplete !== undefined && incomplete.Metadata?.[PART_NUMBER] === String(parts.length + 1) && isPartOf(incomplete.Metadata, info.uploadId)) {
      incompleteSize = incomplete.ContentLength ?? 0
      offset += incompleteSize
      if (incomplete.LastModified !== undefined && incomplete.LastModified > modifiedAt) modifiedAt = incomplete.LastModified
    }
    return { info, parts, strays, incompleteSize, offset, modifiedAt }
  }

  async #listParts (key: string, uploadId: string): Promise<StoredPart[] | undefined> {
    const parts: StoredPart[] = []
    let marker: string | undefined
    do {
      const page = await this.#sendOrNotFound('ListParts', async (s3) => await s3.send(new ListPartsCommand({
        Bucket: this.bucket,
        Key: key,
        UploadId: uploadId,
        ...(marker === undefined ? {} : { PartNumberMarker: marker })
      })))
      if (page === undefined) return undefined
      for (const part of page.Parts ?? []) {
        if (part.PartNumber === undefined || part.ETag === undefined || part.Size === undefined) continue
        parts.push({ PartNumber: part.PartNumber, ETag: part.ETag, Size: part.Size, LastModified: part.LastModified })
      }
      marker = page.IsTruncated === true ? page.NextPartNumberMarker : undefined
    } while (marker !== undefined)
    parts.sort((a, b) => a.PartNumber - b.PartNumber)
    return parts
  }

  async #uploadPart (info: InfoObject, partNumber: number, body: Buffer, signal?: AbortSignal): Promise<StoredPart> {
    if (partNumber > MAX_PARTS) throw tooManyParts(info)
    const result = await this.#send('UploadPart', async (s3, options) => await s3.send(new UploadPartCommand({
      Bucket: this.bucket,
      Key: this.#dataKey(info.id, info.directory),
      UploadId: info.uploadId,
      PartNumber: partNumber,
      Body: body,
      ContentLength: body.length
    }), options), signal)
    if (result.ETag === undefined) throw new TusErrors.STORE_FAILED('S3 UploadPart returned no ETag')
    return { PartNumber: partNumber, ETag: result.ETag, Size: body.length, LastModified: new Date() }
  }

  async #readIncomplete (id: string, size: number): Promise<Buffer> {
    const key = this.#incompleteKey(id)
    const object = await this.#send('GetObject', async (s3) => await s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key })))
    const bytes = Buffer.from(await object.Body!.transformToByteArray())
    if (bytes.length !== size) throw new TusErrors.STORE_FAILED(`incomplete part of upload ${id} changed while being read`)
    return bytes
  }

  async #readInfo (id: string): Promise<{ body: InfoObject, lastModified: Date }> {
    const key = this.#infoKey(id)
    const object = await this.#sendOrNotFound('GetObject', async (s3) => await s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key })))
    if (object === undefined) throw new TusErrors.NOT_FOUND()
    const body = JSON.parse(await object.Body!.transformToString()) as InfoObject
    return { body, lastModified: object.LastModified ?? new Date(body.createdAt) }
  }

  /** `<id>.info` and when it was written, or undefined when there is none. */
  async #infoIfAny (id: string): Promise<{ body: InfoObject, lastModified: Date } | undefined> {
    return await this.#readInfo(id).catch((error: unknown) => {
      if ((error as { code?: unknown }).code === 'FST_TUS_NOT_FOUND') return undefined
      throw error
    })
  }

  /** Writes `<id>.info`; with `ifAbsent`, only if there is none (S3 answers 412 otherwise). */
  async #writeInfo (info: InfoObject, ifAbsent = false): Promise<void> {
    this.#infoCache.delete(info.id)
    const body = JSON.stringify(info)
    await this.#send('PutObject', async (s3) => await s3.send(new PutObjectCommand({
      Bucket: this.bucket,
      Key: this.#infoKey(info.id),
      Body: body,
      ContentLength: Buffer.byteLength(body),
      ContentType: 'application/json',
      ...(ifAbsent ? { IfNoneMatch: '*' } : {})
    })))
  }

  async #abort (key: string, uploadId: string): Promise<void> {
    await this.#sendOrNotFound('AbortMultipartUpload', async (s3) => await s3.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId })))
  }

  async #delete (key: string): Promise<void> {
    await this.#send('DeleteObject', async (s3) => await s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })))
  }

  async #head (key: string): Promise<{ ContentLength?: number, LastModified?: Date, Metadata?: Record<string, string> } | undefined> {
    return await this.#sendOrNotFound('HeadObject', async (s3) => await s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key })))
  }

  /** Part 1's size: of every part when the length is known, of the first PARTS_PER_DOUBLING parts when deferred. */
  #partSizeFor (size: number | undefined): number {
    if (size === undefined) return this.partSize
    // Round up to whole MiB so that big uploads get tidy part sizes.
    const needed = Math.ceil(size / MAX_PARTS / MiB) * MiB
    return Math.min(LARGEST_BUFFERED_PART, Math.max(this.partSize, needed))
  }

  #infoKey (id: string): string {
    assertSafeId(id)
    return `${this.prefix}${id}${INFO_SUFFIX}`
  }

  #incompleteKey (id: string): string {
    assertSafeId(id)
    return `${this.prefix}${id}${INCOMPLETE_SUFFIX}`
  }

  #pendingFinalsPrefix (partialId: string): string {
    assertSafeId(partialId)
    return `${this.prefix}${partialId}${PENDING_FINALS_SUFFIX}`
  }

  #pendingFinalKey (partialId: string, finalId: string): string {
    assertSafeId(finalId)
    return `${this.#pendingFinalsPrefix(partialId)}${finalId}`
  }

  #dataKey (id: string, directory: string | undefined): string {
    assertSafeId(id)
    if (directory === undefined) return `${this.prefix}${id}`
    // Validated by onUploadCreate already; checked again because info objects are read back from S3.
    if (!isValidDirectory(directory)) throw new TusErrors.STORE_FAILED(`invalid directory recorded for upload ${id}`)
    return `${this.prefix}${directory}/${id}`
  }

  /**
   * The inverse of the key functions above: which of the store's keys `key` is, or undefined for any other key
   * (not under the prefix, or not of their form), which the store never touches. Ids and directories have no dots,
   * so the suffixes cannot occur inside them.
   */
  #parseKey (key: string): StoreKey | undefined {
    if (!key.startsWith(this.prefix)) return undefined
    const rest = key.slice(this.prefix.length)
    const finals = rest.indexOf(PENDING_FINALS_SUFFIX)
    if (finals !== -1) {
      const partialId = rest.slice(0, finals)
      const finalId = rest.slice(finals + PENDING_FINALS_SUFFIX.length)
      return isValidUploadId(partialId) && isValidUploadId(finalId) ? { kind: 'pending-final', partialId, finalId } : undefined
    }
    for (const [suffix, kind] of [[INFO_SUFFIX, 'info'], [INCOMPLETE_SUFFIX, 'incomplete']] as const) {
      if (!rest.endsWith(suffix)) continue
      const id = rest.slice(0, -suffix.length)
      return isValidUploadId(id) ? { kind, id } : undefined
    }
    const slash = rest.lastIndexOf('/')
    const id = rest.slice(slash + 1)
    const directory = slash === -1 ? undefined : rest.slice(0, slash)
    if (!isValidUploadId(id) || (directory !== undefined && !isValidDirectory(directory))) return undefined
    return { kind: 'data', id, directory }
  }

  /** Runs one S3 call; its failure becomes FST_TUS_STORE_FAILED naming the operation (the S3 error is the cause). */
  async #send<T> (operation: string, call: (s3: S3Client, options: SendOptions) => Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      return await call(this.#client, signal === undefined ? {} : { abortSignal: signal })
    } catch (error) {
      // Aborted because the caller's lock was lost (the SDK drops the request): the lock's reason, as fence() gives.
      if (signal?.aborted === true) throw signal.reason
      throw s3Failure(operation, error)
    }
  }

  /**
   * Like #send, but resolves with undefined when S3 answers 404 (NoSuchKey, NoSuchUpload, NotFound), but for a
   * missing bucket: a store misconfigured, or its bucket deleted, must not tell clients their uploads are gone (they
   * would start over).
   */
  async #sendOrNotFound<T> (operation: string, call: (s3: S3Client) => Promise<T>): Promise<T | undefined> {
    try {
      return await call(this.#client)
    } catch (error) {
      const failure = error as { name?: unknown, $metadata?: { httpStatusCode?: number } }
      if (failure.$metadata?.httpStatusCode === 404 && failure.name !== 'NoSuchBucket') return undefined
      throw s3Failure(operation, error)
    }
  }
}

/**
 * A failed S3 call as the store reports it, naming the operation and what S3 said: the error's name and HTTP status
 * too, since the SDK's message for an S3-compatible store's error is often only "UnknownError" (Ceph's
 * EntityTooSmall), and a log prints no `cause`.
 */
function s3Failure (operation: string, error: unknown): Error {
  const { name, $metadata } = error as { name?: unknown, $metadata?: { httpStatusCode?: unknown } }
  const said = [
    ...(typeof name === 'string' && name !== 'Error' ? [name] : []),
    ...(typeof $metadata?.httpStatusCode === 'number' ? [`HTTP ${$metadata.httpStatusCode}`] : [])
  ]
  const message = `S3 ${operation}: ${errorMessage(error)}${said.length === 0 ? '' : ` (${said.join(', ')})`}`
  return Object.assign(new TusErrors.STORE_FAILED(message), { cause: error })
}

/** `s3.requestHandler` with the store's timeouts where it sets none; a handler object of the user's own is kept as it is. */
function withTimeouts (handler: S3ClientConfig['requestHandler']): S3ClientConfig['requestHandler'] {
  if (handler !== undefined && 'handle' in handler) return handler
  return { connectionTimeout: CONNECTION_TIMEOUT, socketTimeout: SOCKET_TIMEOUT, ...handler }
}

/** The size of an upload's part `partNumber` (1-based); the last part may be shorter. */
function partSizeOf (info: InfoObject, partNumber: number): number {
  if (info.partSizeDoublesEvery === undefined) return info.partSize
  return Math.min(LARGEST_BUFFERED_PART, info.partSize * 2 ** Math.floor((partNumber - 1) / info.partSizeDoublesEvery))
}

function tooManyParts (info: InfoObject): Error {
  return new TusErrors.STORE_FAILED(`upload ${info.id} needs more than ${MAX_PARTS} parts, starting at ${info.partSize} bytes; raise partSize`)
}

/**
 * Copies chunks into part buffers as they arrive (one copy of each byte, while it is still in the cache; the chunk
 * is free at once), so a part is ready the moment its last byte is in: no concatenation of many small chunks.
 * A part buffer is its part's size, or what is left of `room` (the bytes to the end of the upload) when that is less.
 */
class PartBuffer {
  readonly #sizeOf: (index: number) => number
  readonly #allocate: (size: number) => Buffer
  #room: number
  readonly #full: Buffer[] = []
  #part: Buffer | undefined
  /** Which part of this buffer's is being filled: 0 for the first. */
  #index = 0
  #filled = 0
  /** Bytes held: the whole parts not taken yet and the part being filled. */
  length = 0

  /** `sizeOf(index)` is the size of the buffer's index-th part; `allocate(size)` gives a buffer of that many bytes. */
  constructor (sizeOf: (index: number) => number, room: number, allocate: (size: number) => Buffer) {
    this.#sizeOf = sizeOf
    this.#room = room
    this.#allocate = allocate
  }

  get hasWholePart (): boolean {
    return this.#full.length > 0
  }

  push (chunk: Buffer): void {
    let at = 0
    while (at < chunk.length) {
      const size = this.#sizeOf(this.#index)
      if (this.#part === undefined) {
        this.#part = this.#room > 0 && this.#room < size ? Buffer.allocUnsafe(this.#room) : this.#allocate(size)
      } else if (this.#filled === this.#part.length) {
        // More bytes than the room said (never from the core, which bounds the body): grow to a whole part.
        const grown = this.#allocate(size)
        this.#part.copy(grown, 0, 0, this.#filled)
        this.#part = grown
      }
      const copied = chunk.copy(this.#part, this.#filled, at, Math.min(chunk.length, at + this.#part.length - this.#filled))
      at += copied
      this.#filled += copied
      if (this.#filled === size) {
        this.#full.push(this.#part)
        this.#part = undefined
        this.#filled = 0
        this.#room -= size
        this.#index++
      }
    }
    this.length += chunk.length
  }

  /** The next whole part; only when there is one (hasWholePart). */
  takePart (): Buffer {
    const part = this.#full.shift()!
    this.length -= part.length
    return part
  }

  /** What is left, less than a part (possibly nothing). */
  takeRest (): Buffer {
    const rest = this.#part === undefined ? Buffer.alloc(0) : this.#part.subarray(0, this.#filled)
    this.#room -= this.#filled
    this.#part = undefined
    this.#filled = 0
    this.length = 0
    return rest
  }
}

/**
 * The headers S3 serves a completed object with, from the upload's metadata: the type the client declared (when
 * valid) and an attachment with its cleaned file name, exactly as GET through the plugin sends them, so a bucket
 * or CDN can serve the objects directly.
 */
function objectHeaders (id: string, metadata: UploadMetadata): { ContentType: string, ContentDisposition: string } {
  return { ContentType: contentType(metadata), ContentDisposition: contentDisposition(metadata, id) }
}

/**
 * Whether an incomplete-part object with this metadata holds bytes of multipart upload `uploadId`. One written
 * before the upload's id was recorded in it names none and counts, as it did then: in-progress uploads keep their
 * bytes across the update, and only an earlier upload's leftover from a termination that died before the update
 * can still be taken for a new one's.
 */
function isPartOf (metadata: Record<string, string> | undefined, uploadId: string): boolean {
  const named = metadata?.[PART_UPLOAD_ID]
  return named === undefined || named === uploadId
}

function assertSafeId (id: string): void {
  // Handlers validate ids already; this keeps the store safe when it is used directly.
  if (!isValidUploadId(id)) throw new TusErrors.NOT_FOUND()
}
