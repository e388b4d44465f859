import type { RequestBody } from './body.js'

interface Write {
  body: RequestBody | undefined
  done: Promise<void>
}

/** The appends running now: closing the server ends their bodies and waits for their writes to settle. */
export class InFlightWrites {
  readonly #writes = new Set<Write>()

  /** Registers an append; call the returned function when it has settled. */
  begin (body: RequestBody | undefined): () => void {
    let settle = (): void => {}
    const write: Write = { body, done: new Promise<void>((resolve) => { settle = resolve }) }
    this.#writes.add(write)
    return () => {
      this.#writes.delete(write)
      settle()
    }
  }

  /** Ends every body being appended (their bytes are kept) and waits up to `timeoutMs` for the writes. */
  async drain (timeoutMs: number): Promise<void> {
    const writes = [...this.#writes]
    if (writes.length === 0) return
    for (const write of writes) write.body?.release('shutdown')
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })
    await Promise.race([Promise.all(writes.map(async (write) => await write.done)), timeout])
    clearTimeout(timer)
  }
}
