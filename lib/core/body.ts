import type { FastifyRequest } from 'fastify'
import type { Readable } from 'node:stream'
import { finished } from 'node:stream'
import { TusErrors } from '../errors.js'
import { freeNow } from './free-memory.js'

/** Bytes read ahead of the handler per request before the socket is paused. */
const READ_AHEAD = 64 * 1024
/** How long a body that is whole keeps a newer request for its upload waiting for its end (and trailer). */
const WHOLE_BODY_END_WAIT_MS = 1000

/**
 * A request body, read from the moment the request is routed. Node discards what a request stream has
 * buffered when its client goes away, so reading at once into a queue of our own keeps the bytes that
 * arrived before a handler got to them. It ends normally when the client goes away (`aborted`), when no
 * byte arrives for `idleTimeoutMs`, or when the server releases it (`released`): a newer request wants
 * the upload, or the server shuts down. In every case the bytes that did arrive are still read.
 *
 * A plain queue rather than a stream of its own (a PassThrough): every chunk of every upload passes here,
 * and a second stream layer cost measurable CPU per chunk. Read it once, with `for await`.
 */
export class RequestBody implements AsyncIterable<Buffer> {
  aborted = false
  /** Why the server ended the body early, if it did. */
  released: 'idle' | 'superseded' | 'shutdown' | undefined
  /**
   * The body is read decoded: an app's preParsing hook (@fastify/compress, say) put a decoder of its
   * `Content-Encoding` in place of the request's stream. Its Content-Length counts the encoded bytes then, and says
   * nothing of how many the upload gets (see `contentLength` in request.ts).
   */
  readonly decoded: boolean
  readonly #source: Readable
  /** The request's own stream (request.raw): the body's chunks may be freed only when they are read from it. */
  readonly #raw: Readable
  readonly #idleTimer: NodeJS.Timeout
  #endTimer: NodeJS.Timeout | undefined
  /** Bytes that have arrived, and how many make the body whole (see `wholeAt`). */
  #arrived = 0
  #whole = Number.POSITIVE_INFINITY
  #queue: Buffer[] = []
  #queued = 0
  /** No chunk will be queued any more. */
  #closed = false
  #discarding = false
  #wake: (() => void) | undefined
  /** Who waits in `carriesBytes`. */
  #firstByteWaiters: Array<() => void> = []
  #beforeFirstRead: (() => void) | undefined
  /** The request is answered even when the server ends its body (see `answerWhenReleased`). */
  #answers = false

  /** Use `readBody`, which refuses a stream already read from. */
  constructor (request: FastifyRequest, source: Readable, idleTimeoutMs: number) {
    this.#source = source
    this.#raw = request.raw
    const encoding = request.headers['content-encoding']
    const encoded = encoding !== undefined && encoding.trim().toLowerCase() !== 'identity'
    this.decoded = source !== request.raw && encoded
    this.#idleTimer = setTimeout(() => { this.#idle() }, idleTimeoutMs).unref()
    source.on('data', (chunk: Buffer) => {
      this.#idleTimer.refresh()
      this.#arrived += chunk.length
      if (chunk.length > 0) this.#wakeFirstByteWaiters()
      if (this.#closed || this.#discarding) return
      this.#queue.push(chunk)
      this.#queued += chunk.length
      if (this.#queued >= READ_AHEAD) source.pause()
      this.#wakeReader()
    })
    finished(source, (error) => {
      clearTimeout(this.#idleTimer)
      clearTimeout(this.#endTimer)
      if (error !== undefined && error !== null) this.aborted = true
      this.#close()
    })
    // A stream paused on purpose (a decoder from an app's preParsing hook: @fastify/compress's) waits for its reader
    // to resume it, as Fastify's own parsers do; a `data` listener alone does not.
    if (source.isPaused()) source.resume()
  }

  /**
   * Takes back a chunk this body handed out once its reader is done with it (stored or copied), so that its memory
   * is freed at once (free-memory.ts). Only a chunk that is a whole buffer of its own, read from the request's own
   * stream, and only while this body is its sole reader: nobody else can hold a view of it then. A stream an app's
   * preParsing hook put in the request's place may pass on chunks the app keeps (a tee, a scanner): never freed.
   */
  readonly reclaim = (chunk: Buffer): void => {
    if (chunk.byteOffset !== 0 || chunk.buffer.byteLength !== chunk.length || !(chunk.buffer instanceof ArrayBuffer)) return
    if (this.#source !== this.#raw || this.#source.listenerCount('data') !== 1 || this.#source.listenerCount('readable') !== 0) return
    freeNow(chunk.buffer)
  }

  /**
   * `bytes` make the body whole: the upload's length is reached with them. From then on all that may still come is
   * the body's end, and a trailer checksum covering it; a newer request for the upload waits a moment for them
   * (WHOLE_BODY_END_WAIT_MS) rather than cut the body at once (`release('superseded')`), which would leave the upload
   * complete with bytes its own checksum was never asked about, or drop a staged body that had nothing left to send.
   * Not longer: a client stuck right before the end (a connection gone silent) would hold the upload for idleTimeout.
   */
  wholeAt (bytes: number): void {
    this.#whole = bytes
  }

  /** Every byte was handed out and no more will come. */
  get ended (): boolean {
    return this.#closed && this.#queue.length === 0
  }

  [Symbol.asyncIterator] (): AsyncIterator<Buffer> {
    return { next: async () => await this.#next() }
  }

  /**
   * Whether the body brings any byte: true once one has arrived, false once it ended without one (a chunked body of
   * its last chunk only, an HTTP/2 stream ended by an empty DATA frame). A body that ended otherwise (its client gone,
   * or released idle) counts as one: nothing says it was empty. Not for a client that waits for a 100 Continue: it
   * sends nothing until the body is read.
   */
  async carriesBytes (): Promise<boolean> {
    while (this.#arrived === 0 && !this.#closed) await new Promise<void>((resolve) => { this.#firstByteWaiters.push(resolve) })
    return this.#arrived > 0 || this.aborted || this.released !== undefined
  }

  /**
   * Runs `callback` when the body is first read: a client that sent `Expect: 100-continue` is told to send its
   * body only once every check has passed, so a refused request never costs the body's bytes.
   */
  beforeFirstRead (callback: () => void): void {
    this.#beforeFirstRead = callback
  }

  async #next (): Promise<IteratorResult<Buffer>> {
    const first = this.#beforeFirstRead
    this.#beforeFirstRead = undefined
    first?.()
    for (;;) {
      const chunk = this.#queue.shift()
      if (chunk !== undefined) {
        this.#queued -= chunk.length
        if (this.#queued < READ_AHEAD && !this.#closed && this.#source.isPaused()) this.#source.resume()
        return { value: chunk, done: false }
      }
      if (this.#closed) return { value: undefined, done: true }
      await new Promise<void>((resolve) => { this.#wake = resolve })
    }
  }

  #wakeReader (): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }

  #wakeFirstByteWaiters (): void {
    const waiters = this.#firstByteWaiters
    this.#firstByteWaiters = []
    for (const wake of waiters) wake()
  }

  #close (): void {
    this.#closed = true
    this.#wakeReader()
    this.#wakeFirstByteWaiters()
  }

  #idle (): void {
    // Bytes are waiting for the handler (a store busy with a part, a slow hook): it is not the client that is idle.
    if (this.#queued > 0) {
      this.#idleTimer.refresh()
      return
    }
    this.release('idle')
  }

  /**
   * Ends the body where it stands and closes the client's connection: its client is gone or stuck
   * (`idle`), it holds an upload another request wants (`superseded`: not once it has all arrived, and only after a
   * moment once it is whole), or the server is closing.
   */
  release (reason: 'idle' | 'superseded' | 'shutdown'): void {
    if (reason === 'superseded' && this.#allArrived()) return
    if (reason === 'superseded' && this.#arrived === this.#whole) {
      this.#endTimer ??= setTimeout(() => { if (!this.#allArrived()) this.#end('superseded') }, WHOLE_BODY_END_WAIT_MS).unref()
      return
    }
    this.#end(reason)
  }

  #end (reason: 'idle' | 'superseded' | 'shutdown'): void {
    clearTimeout(this.#idleTimer)
    clearTimeout(this.#endTimer)
    if (this.#closed || this.#source.readableEnded) return
    this.released = reason
    this.#close()
    if (!this.#answers) {
      this.#source.destroy()
      return
    }
    // Kept for the answer: what still arrives is dropped (the data listener queues nothing once closed), read so that
    // the client is not left blocked on a full connection meanwhile; the connection closes once the answer is sent.
    this.#discarding = true
    if (this.#source.isPaused()) this.#source.resume()
  }

  /**
   * The request is answered even when the server ends its body (`release`): its connection stays open until the
   * answer is sent, then closes (`keptForAnswer`: routes.ts closes it, lingering). A creation
   * whose body is cut still created its upload: its client must learn where it is (Location) and how much of it is
   * stored, or it starts over from byte 0 and leaves that upload behind. An append's client knows its upload, and
   * asks its offset (HEAD) when its request is cut: its connection is closed at once, as before.
   */
  answerWhenReleased (): void {
    this.#answers = true
  }

  /** The server ended this body and keeps its connection for the answer, which must close it (`Connection: close`). */
  get keptForAnswer (): boolean {
    return this.#answers && this.released !== undefined
  }

  /**
   * Every byte of the body has reached the server, if still to be handed out (node's request stream says `complete`;
   * a stream an app's preParsing hook put in its place cannot tell): no client is stuck on it, and it soon ends.
   */
  #allArrived (): boolean {
    return (this.#source as Readable & { complete?: unknown }).complete === true
  }

  /** Drops whatever a handler left unread and reads the rest, so the connection can serve its next request. */
  discardRest (): void {
    if (this.#closed) return
    this.#discarding = true
    this.#queue = []
    this.#queued = 0
    this.#source.resume()
  }
}

/**
 * The body of `request`, read from `stream` (the request's own, or what an app's preParsing hooks made of it) from
 * now on. Refused (500, nothing stored) when the stream was read before: an app's hook that listens to
 * `request.raw`'s `data` events before the plugin's parser ran makes the body flow, and the chunks emitted until
 * then are gone; taking the rest would store an upload with bytes missing.
 */
export function readBody (request: FastifyRequest, stream: Readable, idleTimeoutMs: number): RequestBody {
  if (stream.readableDidRead) throw new TusErrors.BODY_READ_ELSEWHERE()
  return new RequestBody(request, stream, idleTimeoutMs)
}

/**
 * A request body with a limit: `admit` passes at most `limit` bytes of its chunks in all. A body whose client
 * goes away mid-way simply ends, so a store keeps every byte that did arrive; `exceeded` and `aborted` tell
 * afterwards why it ended.
 */
export class BoundedBody {
  received = 0
  exceeded = false
  readonly #body: RequestBody | undefined
  readonly #limit: number

  constructor (body: RequestBody | undefined, limit: number) {
    this.#body = body
    this.#limit = limit
  }

  /** The request has a body stream at all. */
  get present (): boolean {
    return this.#body !== undefined
  }

  get aborted (): boolean {
    return this.#body?.aborted ?? false
  }

  /** The body ended before the client finished it: its client went away, or the server released it. */
  get cutShort (): boolean {
    return this.#body !== undefined && cutShort(this.#body)
  }

  /** The body's chunks as they arrive, before the limit (see `admit`). */
  chunks (): AsyncIterable<Buffer> | Iterable<Buffer> {
    return this.#body ?? []
  }

  /**
   * What of `chunk` is within the limit: all of it, its head (then `exceeded` is set and no more may
   * follow), or undefined when nothing is.
   */
  admit (chunk: Buffer): Buffer | undefined {
    const room = this.#limit - this.received
    if (chunk.length <= room) {
      this.received += chunk.length
      return chunk
    }
    this.exceeded = true
    if (room === 0) return undefined
    this.received += room
    return chunk.subarray(0, room)
  }
}

/** A body that ended before its client finished it: the bytes that did arrive are kept, the upload resumable. */
export function cutShort (body: RequestBody): boolean {
  return body.aborted || body.released !== undefined
}
