import { MessageChannel } from 'node:worker_threads'

/**
 * Frees array buffers that nobody will read again at once, instead of at V8's next garbage collection.
 *
 * Each chunk of a request body is a new buffer of up to 64 KiB outside the JavaScript heap. In an app whose young
 * generation has grown (Fastify's start-up grows it), scavenges are rare, those buffers pile up, and V8 answers the
 * external memory with full mark-compacts: 35 per GiB of body on Node 20 (bench/probe.ts), a sixth of the server's
 * CPU and 25 MiB of its peak RSS. A detached buffer is freed, and V8 told, at once.
 *
 * Node 21 and later detach with `ArrayBuffer.prototype.transfer(0)`. Node 20 has no such call: a buffer is detached
 * there by transferring it in a message that is dropped unread when its port closes. A port costs about 15 µs, so
 * buffers go BATCH at a time; a part batch is sent after IDLE_MS without a full one.
 */
const BATCH = 16
const IDLE_MS = 1000

const transfer = (ArrayBuffer.prototype as { transfer?: (this: ArrayBuffer, length: number) => ArrayBuffer }).transfer

/** Node 20: the buffers of the batch being gathered. */
let batch: ArrayBuffer[] = []
let idleTimer: NodeJS.Timeout | undefined

function sendBatch (): void {
  if (batch.length === 0) return
  const { port1, port2 } = new MessageChannel()
  try {
    port1.postMessage(null, batch)
  } catch {
    // A buffer that cannot be transferred (marked untransferable): the batch is left to the garbage collector.
  } finally {
    batch = []
    port1.close()
    port2.close()
  }
}

/** Frees `buffer` now (Node 21+) or with its batch (Node 20). Whoever calls this holds the only view of it. */
export function freeNow (buffer: ArrayBuffer): void {
  if (transfer !== undefined) {
    try {
      transfer.call(buffer, 0)
    } catch {
      // Not detachable (a WebAssembly memory, say): left to the garbage collector.
    }
    return
  }
  batch.push(buffer)
  if (batch.length >= BATCH) sendBatch()
  else if (idleTimer === undefined) idleTimer = setTimeout(sendBatch, IDLE_MS).unref()
  else idleTimer.refresh()
}

/**
 * Frees a chunk read from a file nobody else reads (a staged body, a store's read stream whose chunks are disposable:
 * DataStore.readChunksDisposable) once it is used, if it is the only view of its memory.
 */
export function freeReadChunk (chunk: Buffer): void {
  if (chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength) freeNow(chunk.buffer as ArrayBuffer)
}
