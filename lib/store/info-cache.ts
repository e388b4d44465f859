/**
 * A least-recently-used map bounded by an estimate of the memory its entries use (and optionally by their
 * number), for FileStore's info cache. A bound by count alone thrashes once more uploads are active than it
 * holds (every miss then costs a read of the info file); a bound by bytes holds as many small infos as fit.
 */
export class BoundedCache<V> {
  /** Values by key, least recently used first (no wrapper per entry: that would cost memory for every one). */
  readonly #entries = new Map<string, V>()
  /** Estimated bytes of an entry. */
  readonly #sizeOf: (value: V) => number
  readonly #maxBytes: number
  readonly #maxEntries: number
  #bytes = 0

  constructor (sizeOf: (value: V) => number, maxBytes: number, maxEntries = Number.POSITIVE_INFINITY) {
    this.#sizeOf = sizeOf
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
    return this.#entries.get(key)
  }

  /** The value, made the most recently used. */
  get (key: string): V | undefined {
    const value = this.#entries.get(key)
    if (value === undefined) return undefined
    this.#entries.delete(key)
    this.#entries.set(key, value)
    return value
  }

  /** Stores `value` as the most recently used, evicting the oldest beyond the bounds. */
  set (key: string, value: V): void {
    this.delete(key)
    const bytes = this.#sizeOf(value)
    if (bytes > this.#maxBytes || this.#maxEntries === 0) return
    this.#entries.set(key, value)
    this.#bytes += bytes
    while (this.#bytes > this.#maxBytes || this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value!
      this.delete(oldest)
    }
  }

  delete (key: string): void {
    const value = this.#entries.get(key)
    if (value === undefined) return
    this.#entries.delete(key)
    this.#bytes -= this.#sizeOf(value)
  }

  clear (): void {
    this.#entries.clear()
    this.#bytes = 0
  }
}
