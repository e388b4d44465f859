import type { Readable } from 'node:stream'
import { PassThrough, finished } from 'node:stream'

/**
 * A request body, read from the moment the request is routed. Node discards what a request stream has
 * buffered when its client goes away, so reading at once into a stream of our own keeps the bytes that
 * arrived before a handler got to them. It ends normally when the client goes away; `aborted` says so.
 */
export class RequestBody extends PassThrough {
  aborted = false

  constructor (source: Readable) {
    super({ highWaterMark: 64 * 1024 })
    source.pipe(this)
    finished(source, (error) => {
      if (error === undefined || error === null) return
      this.aborted = true
      this.end()
    })
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
