/**
 * A least-recently-used map bounded by an estimate of the memory its entries use (and optionally by their
 * number), for FileStore's info cache. A bound by count alone thrashes once more uploads are active than it
 * holds (every miss then costs a read of the info file); a bound by bytes holds as many small infos as fit.
 */
export class BoundedCache<V> {
  readonly #entries = new Map<string, { value: V, bytes: number }>()
  readonly #maxBytes: number
  readonly #maxEntries: number
  #bytes = 0

  constructor (maxBytes: number, maxEntries = Number.POSITIVE_INFINITY) {
    this.#maxBytes = maxBytes
    this.#maxEntries = maxEntries
  }

  get size (): number {
    return this.#entries.size
  }

  /** Estimated bytes held. */
  get bytes (): number {
    return this.#bytes
  }

  /** The value without making it the most recently used. */
  peek (key: string): V | undefined {
    return this.#entries.get(key)?.value
  }

  /** The value, made the most recently used. */
  get (key: string): V | undefined {
    const entry = this.#entries.get(key)
    if (entry === undefined) return undefined
    this.#entries.delete(key)
    this.#entries.set(key, entry)
    return entry.value
  }

  /** Stores `value` as the most recently used (`bytes`: its estimated size), evicting the oldest beyond the bounds. */
  set (key: string, value: V, bytes: number): void {
    this.delete(key)
    if (bytes > this.#maxBytes || this.#maxEntries === 0) return
    this.#entries.set(key, { value, bytes })
    this.#bytes += bytes
    while (this.#bytes > this.#maxBytes || this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value!
      this.delete(oldest)
    }
  }

  delete (key: string): void {
    const entry = this.#entries.get(key)
    if (entry === undefined) return
    this.#entries.delete(key)
    this.#bytes -= entry.bytes
  }

  clear (): void {
    this.#entries.clear()
    this.#bytes = 0
  }
}
