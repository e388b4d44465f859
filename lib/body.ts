import type { Readable } from 'node:stream'
import { PassThrough, finished } from 'node:stream'

/**
 * A request body, read from the moment the request is routed. Node discards what a request stream has
 * buffered when its client goes away, so reading at once into a stream of our own keeps the bytes that
 * arrived before a handler got to them. It ends normally when the client goes away (`aborted`), when no
 * byte arrives for `idleTimeoutMs`, or when the server releases it (`released`): a newer request wants
 * the upload, or the server shuts down. In every case the bytes that did arrive are still read.
 */
export class RequestBody extends PassThrough {
  aborted = false
  /** Why the server ended the body early, if it did. */
  released: 'idle' | 'superseded' | 'shutdown' | undefined
  readonly #source: Readable
  readonly #idleTimer: NodeJS.Timeout

  constructor (source: Readable, idleTimeoutMs: number) {
    super({ highWaterMark: 64 * 1024 })
    this.#source = source
    source.pipe(this)
    this.#idleTimer = setTimeout(() => { this.#idle() }, idleTimeoutMs).unref()
    source.on('data', () => { this.#idleTimer.refresh() })
    finished(source, (error) => {
      clearTimeout(this.#idleTimer)
      if (error === undefined || error === null) return
      this.aborted = true
      if (!this.writableEnded) this.end()
    })
  }

  #idle (): void {
    // Bytes are waiting for the handler (a store busy with a part, a slow hook): it is not the client that is idle.
    if (this.readableLength > 0) {
      this.#idleTimer.refresh()
      return
    }
    this.release('idle')
  }

  /**
   * Ends the body where it stands and closes the client's connection: its client is gone or stuck
   * (`idle`), it holds an upload another request wants (`superseded`), or the server is closing.
   */
  release (reason: 'idle' | 'superseded' | 'shutdown'): void {
    clearTimeout(this.#idleTimer)
    if (this.writableEnded || this.#source.readableEnded) return
    this.released = reason
    this.#source.unpipe(this)
    this.end()
    this.#source.destroy()
  }

  /** Reads and drops whatever a handler left unread, so the connection can serve its next request. */
  discardRest (): void {
    if (!this.readableEnded) this.resume()
  }
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

  /** The body's chunks as they arrive, before the limit (see `admit`). */
  chunks (): AsyncIterable<Buffer> | Iterable<Buffer> {
    // destroyOnReturn: false leaves the rest of the body to be discarded once the response is sent.
    return this.#body?.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer> | undefined ?? []
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
