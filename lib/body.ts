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
 * A request body as an async iterable of chunks that never yields more than `limit` bytes. It ends
 * normally when the client goes away mid-body, so a store keeps every byte that did arrive; `exceeded`
 * and `aborted` tell afterwards why it ended.
 */
export class BoundedBody implements AsyncIterable<Buffer> {
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

  async * [Symbol.asyncIterator] (): AsyncIterator<Buffer> {
    if (this.#body === undefined) return
    // destroyOnReturn: false leaves the rest of the body to be discarded once the response is sent.
    const chunks = this.#body.iterator({ destroyOnReturn: false }) as AsyncIterableIterator<Buffer>
    for await (const chunk of chunks) {
      const room = this.#limit - this.received
      if (chunk.length > room) {
        this.exceeded = true
        if (room > 0) {
          this.received += room
          yield chunk.subarray(0, room)
        }
        return
      }
      this.received += chunk.length
      yield chunk
    }
  }
}
