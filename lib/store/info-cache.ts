/**
 * A map bounded by an estimate of the memory its entries use (and optionally by their number), for FileStore's
 * info cache, evicting in least-recently-used order approximately (second chance, as CLOCK does). A bound by
 * count alone thrashes once more uploads are active than it holds (every miss then costs a read of the info
 * file); a bound by bytes holds as many small infos as fit.
 *
 * A hit does not move its entry (a Map keeps insertion order only, so moving is a delete and a set): it only
 * marks the key as used, and eviction gives a used entry a second chance by moving it to the newest end then.
 * Moving on every hit costs 1-3 µs with 100,000 entries, and for one key hit again and again it is
 * quadratic: V8 keeps deleted entries in their hash bucket's chain until the table is rebuilt, so each
 * lookup of that key walks past all its earlier copies (36 µs a hit with 20,000 entries, measured).
 */
export class BoundedCache<V> {
  /** Values by key, least recently used first (no wrapper per entry: that would cost memory for every one). */
  readonly #entries = new Map<string, V>()
  /** Keys hit since they were (re)inserted: kept by the next eviction that reaches them. */
  readonly #used = new Set<string>()
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

  /** The value, marked as used (kept by the next eviction that reaches it). */
  get (key: string): V | undefined {
    const value = this.#entries.get(key)
    if (value !== undefined) this.#used.add(key)
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
      const [oldest, kept] = this.#entries.entries().next().value!
      // A second chance: to the newest end, unmarked (each entry moves at most once per pass). The entry being
      // stored comes first only once every other one has moved: then they are unmarked, and it moves too.
      if (oldest === key || this.#used.delete(oldest)) {
        this.#entries.delete(oldest)
        this.#entries.set(oldest, kept)
      } else {
        this.delete(oldest)
      }
    }
  }

  delete (key: string): void {
    const value = this.#entries.get(key)
    if (value === undefined) return
    this.#entries.delete(key)
    this.#used.delete(key)
    this.#bytes -= this.#sizeOf(value)
  }

  clear (): void {
    this.#entries.clear()
    this.#used.clear()
    this.#bytes = 0
  }
}
