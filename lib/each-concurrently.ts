/**
 * Runs `task` on each item of `items` as the sequence streams, `concurrency` tasks at a time (their file-system calls
 * overlap in the thread pool), never holding the whole sequence. The first task that throws stops the others from
 * taking more items; once the running ones have settled, the sequence is closed and that error is thrown.
 */
export async function eachConcurrently<T> (items: AsyncIterable<T>, concurrency: number, task: (item: T) => Promise<void>): Promise<void> {
  const iterator = items[Symbol.asyncIterator]()
  // Shared by the workers (an object, so that a loop reading it sees another worker's write).
  const state = { failed: false }
  const worker = async (): Promise<void> => {
    try {
      while (!state.failed) {
        const next = await iterator.next()
        if (next.done === true) return
        await task(next.value)
      }
    } catch (error) {
      state.failed = true
      throw error
    }
  }
  const results = await Promise.allSettled(Array.from({ length: concurrency }, worker))
  const failure = results.find((result) => result.status === 'rejected')
  if (failure !== undefined) {
    await iterator.return?.()
    throw failure.reason
  }
}
