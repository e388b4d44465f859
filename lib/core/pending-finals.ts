/** Final uploads waiting for partials to complete, by partial id; in-process (a restart finds them on HEAD). */
export class PendingFinals {
  readonly #byPartial = new Map<string, Set<string>>()

  add (finalId: string, partialIds: string[]): void {
    for (const partialId of partialIds) {
      const finals = this.#byPartial.get(partialId) ?? new Set<string>()
      finals.add(finalId)
      this.#byPartial.set(partialId, finals)
    }
  }

  /** The finals waiting on `partialId`; they are forgotten here (each is re-registered if still waiting). */
  take (partialId: string): string[] {
    const finals = this.#byPartial.get(partialId)
    this.#byPartial.delete(partialId)
    return finals === undefined ? [] : [...finals]
  }
}
