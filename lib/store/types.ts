import type { Readable } from 'node:stream'

/** Decoded Upload-Metadata: key -> UTF-8 value. A key sent without a value maps to ''. */
export type UploadMetadata = Record<string, string>

/** How an upload takes part in the concatenation extension. */
export type UploadConcat =
  | { type: 'partial' }
  | {
    type: 'final'
    parts: string[]
    header: string
    /**
     * Each of `parts` as it was when the final was created, in the same order: an id names another upload once
     * its partial is removed and one is created again under it (onUploadCreate may choose ids). Absent from
     * finals stored before it was recorded, whose partials are known by id alone.
     */
    partials?: PartialIdentity[]
  }

/** Which upload a final's partial was: its creation time (ISO string, as stored) and its length. */
export interface PartialIdentity {
  createdAt: string
  size: number
}

/** What the protocol layer asks a store to create. */
export interface NewUpload {
  id: string
  /** Total length in bytes; `undefined` while deferred (Upload-Defer-Length: 1). */
  size: number | undefined
  metadata: UploadMetadata
  concat?: UploadConcat
  /**
   * Storage sub-directory chosen by onUploadCreate (validated: `/`-separated segments of A-Z a-z 0-9 _ -).
   * Ids stay unique across directories; a store without directories may use it as a key prefix.
   */
  directory?: string
}

/**
 * An upload's description as a store writes it down (FileStore's `<id>.json`, S3Store's `<id>.info`): JSON, with
 * an unknown length as null and the creation time as an ISO string. Never the offset: each store derives it from
 * the bytes it holds, so it cannot go stale.
 */
export interface StoredInfo extends Omit<NewUpload, 'size'> {
  size: number | null
  createdAt: string
}

/** Everything known about one upload, as a store reports it. */
export interface UploadInfo extends NewUpload {
  /** Bytes durably stored so far. */
  offset: number
  createdAt: Date
  /** Last time bytes were appended (creation time before the first append). */
  modifiedAt: Date
  /** Local path of the data file, for stores that keep uploads as local files. */
  path?: string
  /**
   * Every byte is stored but the store has not completed the upload (S3: its multipart upload is still open, because
   * its completion failed, or a crash came between the last part and it): the next request that reads the upload
   * completes it (`flush`), then runs `onUploadComplete`. A store whose uploads are complete with their last byte
   * leaves it out.
   */
  completing?: boolean
}

/** The caller's hold of the upload's lock, for the calls made under it. */
export interface WriteOptions {
  /**
   * Aborted when the caller's lock on the upload is lost (UploadLock.signal): the store must not write
   * anything more once it is (check it before each write to the backend), and rejects with its reason.
   */
  signal?: AbortSignal
  /**
   * Names one hold of the upload's lock: the same object for every call made under that hold, never the
   * object of another hold. Nobody else writes to the upload while it is held, so a store may keep what it
   * read or wrote under a hold for the later calls of the same hold (while `signal` is not aborted), never
   * beyond it: the next hold starts from what the backend says.
   */
  hold?: object
  /**
   * The caller holds the upload's lock and no other process can change the upload, while or between this
   * process's holds (an in-process lock: UploadLock.soleWriter). A store may then answer from what it knows
   * of its own writes instead of asking its backend.
   */
  soleWriter?: boolean
  /**
   * `write` only: a store calls it with each chunk of its source once it no longer needs the chunk's bytes (written
   * to its backend, or copied), and never reads that chunk again; the caller may then free its memory at once.
   */
  reclaim?: (chunk: Buffer) => void
  /**
   * `write` only: a store calls it as bytes reach its backend, with the upload's offset as `getInfo` would report it
   * if this process died now (never more: bytes still queued or buffered in memory do not count). The core
   * acknowledges only such bytes to a client while the body arrives (the draft's 104 `Upload-Offset`, which lets a
   * client free them). A store that never calls it gets no such acknowledgement before its write returns.
   */
  onStored?: (offset: number) => void
}

/** An inclusive byte range, as in HTTP Range. */
export interface ByteRange {
  start: number
  end: number
}

/**
 * The storage seam. The protocol handlers talk only to this interface; a backend (local files, S3, ...)
 * is one implementation of it. Callers hold the upload's lock around every mutating call.
 */
export interface DataStore {
  /** Creates an empty upload. Fails if the id exists. */
  create (upload: NewUpload, options?: WriteOptions): Promise<UploadInfo>
  /**
   * The upload's current state, read from the backend; rejects with FST_TUS_NOT_FOUND when there is none.
   * `options` when the caller holds the lock.
   */
  getInfo (id: string, options?: WriteOptions): Promise<UploadInfo>
  /**
   * Appends the chunks of `source` at `offset` (which the caller has checked is the current offset) and
   * resolves with the new offset. Bytes written before a failure stay written; the caller bounds `source`.
   */
  write (id: string, offset: number, source: AsyncIterable<Buffer>, options?: WriteOptions): Promise<number>
  /**
   * Optional: cuts the upload's bytes back to `offset` (below its current offset; the caller holds the lock), for
   * an append that could be checked only once stored: a chunked body whose Upload-Checksum came as a trailer
   * nobody announced, or that went beyond the upload's length. With it such bodies stream straight into the
   * store; without it every body without a Content-Length is staged in a temporary file first (written twice).
   * Must not cut once `options.signal` is aborted; durable when it resolves, as `flush` makes bytes durable. A store
   * with it must also `read` the bytes of an unfinished upload: a trailer checksum is checked against them.
   */
  truncate? (id: string, offset: number, options?: WriteOptions): Promise<void>
  /** Makes the upload's bytes durable (called before completion is reported). */
  flush (id: string, options?: WriteOptions): Promise<void>
  /** Sets a deferred length once. */
  declareLength (id: string, size: number): Promise<void>
  /**
   * Optional: fills an empty final upload with the bytes of its complete partial uploads inside the
   * backend (S3: UploadPartCopy), without streaming them through the server. Resolves false when it
   * cannot for these partials; the caller then copies them through `read` and `write`.
   */
  concatenate? (finalId: string, partialIds: string[]): Promise<boolean>
  /**
   * Optional, with `listPendingFinals` and `removePendingFinal`: a record of the final uploads waiting for
   * partial uploads (concatenation-unfinished), kept in the backend so that every instance sharing it sees
   * it. Then the instance that completes a final's last partial finishes the final, wherever the final was
   * created. Without these the waiting list lives in the process (enough for one instance).
   * Records that `finalId` waits for each of `partialIds`; recording it twice is harmless.
   */
  addPendingFinal? (finalId: string, partialIds: string[]): Promise<void>
  /** The finals recorded as waiting for `partialId` (an empty list when there are none, or no such partial). */
  listPendingFinals? (partialId: string): Promise<string[]>
  /** Forgets that `finalId` waits for `partialIds`; forgetting what is not recorded is harmless. */
  removePendingFinal? (finalId: string, partialIds: string[]): Promise<void>
  /**
   * Optional: removes what failures left behind that no upload refers to any more, if it was started (or last
   * modified) before `before` (S3: multipart uploads without an info object, from a crashed create or an
   * interrupted termination, and what such a termination leaves of the upload's other objects; FileStore: torn
   * info files, data files without an info file, temporary info files).
   * Never a valid upload, never anything newer than `before`: it may run while requests do. `removeExpired()`
   * calls it with its retention horizon. Resolves with how many it removed.
   */
  removeAbandoned? (before: Date): Promise<number>
  /** Streams the stored bytes, or a range of them. */
  read (id: string, range?: ByteRange): Promise<Readable>
  /**
   * Optional: every chunk `read`'s streams emit is the only view of its memory (a Buffer spanning its whole
   * ArrayBuffer), and the store keeps no reference to it once emitted. A download then frees each chunk the moment
   * the response has written it, and a concatenation the moment `write` has (as `WriteOptions.reclaim` lets the
   * plugin free body chunks), instead of leaving it to V8, which with a grown young generation answers the piled-up
   * memory with full collections. Never set it for a store that emits memory it keeps (an in-memory store): that
   * memory would be freed under it.
   */
  readonly readChunksDisposable?: boolean
  /** Removes the upload and its data. */
  terminate (id: string): Promise<void>
  /** The ids of every stored upload. */
  list (): AsyncIterable<string>
  /** Releases resources (open handles) when the server closes. */
  close (): Promise<void>
}
