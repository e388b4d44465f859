import type { DataStore } from '../store/types.js'

/**
 * The final uploads waiting for partial uploads to complete (concatenation-unfinished), by partial id. An
 * entry stays until its final is complete or gone, so an instance that dies between a partial's completion
 * and the final's does not lose it; and a final is finished by whichever request reads it anyway.
 */
export interface WaitingFinals {
  /** Records that `finalId` waits for each of `partialIds`. */
  add (finalId: string, partialIds: string[]): Promise<void>
  /** The finals recorded as waiting for `partialId`. */
  waitingOn (partialId: string): Promise<string[]>
  /** Forgets that `finalId` waits for `partialIds` (it is complete, or gone). */
  remove (finalId: string, partialIds: string[]): Promise<void>
}

/** The in-process list: enough for one process (a restart finds the finals on HEAD and GET). */
export class PendingFinals implements WaitingFinals {
  readonly #byPartial = new Map<string, Set<string>>()

  async add (finalId: string, partialIds: string[]): Promise<void> {
    for (const partialId of partialIds) {
      const finals = this.#byPartial.get(partialId) ?? new Set<string>()
      finals.add(finalId)
      this.#byPartial.set(partialId, finals)
    }
  }

  async waitingOn (partialId: string): Promise<string[]> {
    return [...this.#byPartial.get(partialId) ?? []]
  }

  async remove (finalId: string, partialIds: string[]): Promise<void> {
    for (const partialId of partialIds) {
      const finals = this.#byPartial.get(partialId)
      finals?.delete(finalId)
      if (finals?.size === 0) this.#byPartial.delete(partialId)
    }
  }
}

/**
 * Where the waiting finals are listed: in the store when it keeps such a record (S3Store: every instance
 * sharing the bucket sees it, so the instance that completes the last partial finishes the final, wherever
 * the final was created), else in this process (`memory`).
 */
export function waitingFinals (store: DataStore, memory: WaitingFinals): WaitingFinals {
  const { addPendingFinal, listPendingFinals, removePendingFinal } = store
  if (addPendingFinal === undefined || listPendingFinals === undefined || removePendingFinal === undefined) return memory
  return {
    add: async (finalId, partialIds) => { await addPendingFinal.call(store, finalId, partialIds) },
    waitingOn: async (partialId) => await listPendingFinals.call(store, partialId),
    remove: async (finalId, partialIds) => { await removePendingFinal.call(store, finalId, partialIds) }
  }
}
