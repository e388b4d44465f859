import type { IncomingMessage } from 'node:http'

/**
 * A request body as an async iterable of chunks that never yields more than `limit` bytes. It ends
 * normally when the client goes away mid-body, so a store keeps every byte that did arrive; `exceeded`
 * and `aborted` tell afterwards why it ended.
 */
export class BoundedBody implements AsyncIterable<Buffer> {
  received = 0
  exceeded = false
  aborted = false
  readonly #request: IncomingMessage
  readonly #limit: number

  constructor (request: IncomingMessage, limit: number) {
    this.#request = request
    this.#limit = limit
  }

  async * [Symbol.asyncIterator] (): AsyncIterator<Buffer> {
    // destroyOnReturn: false keeps the socket usable for the 413 sent after stopping early.
    const chunks = this.#request.iterator({ destroyOnReturn: false }) as AsyncIterableIterator<Buffer>
    try {
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
    } catch {
      this.aborted = true
    }
  }
}
