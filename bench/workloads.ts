import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { Pool } from 'undici'

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB

/** Sizes of one benchmark run. */
export interface Sizes {
  /** W1: one upload in a single PATCH. */
  singlePatch: number
  /** W2: one upload of `chunkedTotal` bytes as PATCHes of `chunk` bytes in sequence. */
  chunkedTotal: number
  chunk: number
  /** W3: many small uploads (POST + PATCH) at a concurrency. */
  smallCount: number
  smallSize: number
  smallConcurrency: number
  /** W4: concurrent uploads, one PATCH each. */
  parallelCount: number
  parallelSize: number
  /** W5: HEAD requests at a concurrency. */
  headCount: number
  headConcurrency: number
}

export const FULL: Sizes = {
  singlePatch: GiB,
  chunkedTotal: 256 * MiB,
  chunk: MiB,
  smallCount: 2000,
  smallSize: 16 * KiB,
  smallConcurrency: 16,
  parallelCount: 32,
  parallelSize: 32 * MiB,
  headCount: 20000,
  headConcurrency: 32
}

export const QUICK: Sizes = {
  ...FULL,
  singlePatch: 128 * MiB,
  chunkedTotal: 64 * MiB,
  smallCount: 500,
  parallelSize: 4 * MiB,
  headCount: 2000
}

/** What a workload measured. */
export interface Measurement {
  /** The figure of merit: MB/s (10^6 bytes), uploads/s or requests/s. */
  value: number
  seconds: number
  /** Per-upload latency (W3), ms. */
  p50?: number
  p99?: number
}

export interface Workload {
  id: string
  title: string
  unit: string
  /**
   * It creates thousands of files: its data directories are removed at the end of the run, not after each server.
   * On ext4, inodes freed within the last minutes make every creation scan past them (ext4's `recently_deleted`),
   * so removing one server's files slowed the next server's creations: every server of W3 but the first in each
   * round paid for the one before it (bench/RESULTS.md, session 13).
   */
  manyFiles?: boolean
  /**
   * Untimed requests of the workload's own kind, after the common warm-up: for a workload of short requests, which
   * would otherwise measure a fresh process while V8 is still compiling it (it compiles a function optimised only
   * after thousands of calls, and a 2-second workload ends before that: in bench/probe.ts, W3 ran at 0.62x the
   * limit cold and 0.69x warm). A server in production runs warm.
   */
  warm?: (origin: string, sizes: Sizes) => Promise<void>
  run (origin: string, sizes: Sizes): Promise<{ measurement: Measurement, uploads: StoredUpload[] }>
}

/** An upload the server must have stored exactly: checked on disk after the workload. */
export interface StoredUpload {
  id: string
  size: number
  sha256: string
}

// ---------------------------------------------------------------------------------------------------
// Upload contents: a deterministic sequence of blocks picked from a small pool of random ones, so that
// bodies are generated without copying, differ between uploads, and a reordered, dropped or repeated
// chunk changes the hash. Expected hashes are computed (and cached) before the timed part.

const BLOCK = 256 * KiB
const POOL = Array.from({ length: 13 }, () => randomBytes(BLOCK))

function * contents (seed: number, size: number, from = 0): Generator<Buffer> {
  let position = from
  while (position < size) {
    const index = Math.floor(position / BLOCK)
    const within = position % BLOCK
    const block = POOL[(seed + index * 5) % POOL.length]!
    const length = Math.min(BLOCK - within, size - position)
    yield block.subarray(within, within + length)
    position += length
  }
}

/** `contents(seed, size)` bytes [from, to) as one Buffer (for bodies sent as a whole). */
export function slice (seed: number, size: number, from: number, to: number): Buffer {
  const parts: Buffer[] = []
  for (const chunk of contents(seed, size, from)) {
    const left = to - from - parts.reduce((sum, part) => sum + part.length, 0)
    if (left <= 0) break
    parts.push(chunk.length > left ? chunk.subarray(0, left) : chunk)
  }
  return Buffer.concat(parts)
}

const hashes = new Map<string, string>()
function expectedSha256 (seed: number, size: number): string {
  const key = `${seed}:${size}`
  let hash = hashes.get(key)
  if (hash === undefined) {
    const hasher = createHash('sha256')
    for (const chunk of contents(seed, size)) hasher.update(chunk)
    hash = hasher.digest('hex')
    hashes.set(key, hash)
  }
  return hash
}

// ---------------------------------------------------------------------------------------------------
// The tus client: undici keep-alive pools, every response checked.

const TUS = { 'tus-resumable': '1.0.0' }

export class TusClient {
  readonly pool: Pool
  constructor (origin: string, connections: number) {
    this.pool = new Pool(origin, { connections, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: 600_000, bodyTimeout: 600_000 })
  }

  async #request (method: 'POST' | 'PATCH' | 'HEAD', path: string, headers: Record<string, string>, expected: number,
    body?: Buffer | Readable): Promise<Record<string, string | string[] | undefined>> {
    // reset: false keeps the connection after a HEAD (undici closes it by default, and W5 would measure
    // connection set-up instead of the server).
    const response = await this.pool.request({ method, path, headers: { ...TUS, ...headers }, body, reset: false })
    const text = await response.body.text()
    if (response.statusCode !== expected) {
      throw new Error(`${method} ${path}: expected ${expected}, got ${response.statusCode}: ${text.slice(0, 200)}`)
    }
    return response.headers
  }

  /** POST with Upload-Length; resolves with the upload's path and id. */
  async create (size: number): Promise<{ path: string, id: string }> {
    const headers = await this.#request('POST', '/files', { 'upload-length': String(size) }, 201)
    const location = headers.location
    if (typeof location !== 'string') throw new Error('POST: 201 without Location')
    const path = new URL(location, 'http://127.0.0.1').pathname
    const id = path.split('/').pop()!
    return { path, id }
  }

  /** A PATCH of `length` bytes; `chunked`: without Content-Length (HTTP/1.1 chunked transfer coding). */
  async patch (path: string, offset: number, length: number, body: Buffer | Readable, chunked = false): Promise<void> {
    const headers = await this.#request('PATCH', path, {
      'upload-offset': String(offset),
      'content-type': 'application/offset+octet-stream',
      ...(chunked ? {} : { 'content-length': String(length) })
    }, 204, body)
    expectOffset('PATCH', path, headers, offset + length)
  }

  async head (path: string, offset: number): Promise<void> {
    expectOffset('HEAD', path, await this.#request('HEAD', path, {}, 200), offset)
  }

  async close (): Promise<void> {
    await this.pool.close()
  }
}

function expectOffset (method: string, path: string, headers: Record<string, string | string[] | undefined>, offset: number): void {
  if (headers['upload-offset'] !== String(offset)) {
    throw new Error(`${method} ${path}: expected Upload-Offset ${offset}, got ${String(headers['upload-offset'])}`)
  }
}

/** `contents(seed, size)` as a stream, for a single PATCH body that is never buffered whole. */
function streamed (seed: number, size: number): Readable {
  return Readable.from(contents(seed, size), { objectMode: false })
}

async function uploadWhole (client: TusClient, seed: number, size: number, chunked = false): Promise<StoredUpload> {
  const { path, id } = await client.create(size)
  await client.patch(path, 0, size, streamed(seed, size), chunked)
  return { id, size, sha256: expectedSha256(seed, size) }
}

/** Runs `count` tasks with `concurrency` workers. */
export async function inParallel (count: number, concurrency: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) await task(next++)
  }))
}

function percentile (sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!
}

const MB = 1e6

/** One upload of `sizes.singlePatch` bytes (from `seed`) in a single PATCH, `chunked` or with Content-Length. */
function singlePatchWorkload (id: string, title: string, seed: number, chunked: boolean): Workload {
  return {
    id,
    title,
    unit: 'MB/s',
    async run (origin, sizes) {
      const size = sizes.singlePatch
      expectedSha256(seed, size)
      const client = new TusClient(origin, 1)
      const start = performance.now()
      const upload = await uploadWhole(client, seed, size, chunked)
      const seconds = (performance.now() - start) / 1000
      await client.close()
      return { measurement: { value: size / MB / seconds, seconds }, uploads: [upload] }
    }
  }
}

// ---------------------------------------------------------------------------------------------------

export const WORKLOADS: Workload[] = [
  singlePatchWorkload('W1', 'one upload, single PATCH', 1, false),
  // What a client streaming a body of unknown length sends (the IETF draft's streamed appends, fetch with a
  // stream body, curl -T -): the same bytes as W1 without Content-Length.
  singlePatchWorkload('W6', 'one upload, single chunked PATCH (no Content-Length)', 6, true),
  {
    id: 'W2',
    title: 'one upload, 1 MiB PATCHes in sequence',
    unit: 'MB/s',
    async run (origin, sizes) {
      const { chunkedTotal: size, chunk } = sizes
      expectedSha256(2, size)
      const bodies = Array.from({ length: Math.ceil(size / chunk) }, (_, index) => slice(2, size, index * chunk, Math.min(size, (index + 1) * chunk)))
      const client = new TusClient(origin, 1)
      const start = performance.now()
      const { path, id } = await client.create(size)
      let offset = 0
      for (const body of bodies) {
        await client.patch(path, offset, body.length, body)
        offset += body.length
      }
      const seconds = (performance.now() - start) / 1000
      await client.close()
      return { measurement: { value: size / MB / seconds, seconds }, uploads: [{ id, size, sha256: expectedSha256(2, size) }] }
    }
  },
  {
    id: 'W3',
    title: 'small uploads (POST + PATCH)',
    unit: 'uploads/s',
    manyFiles: true,
    async warm (origin, sizes) {
      const { smallCount: count, smallSize: size, smallConcurrency: concurrency } = sizes
      const body = slice(999, size, 0, size)
      const client = new TusClient(origin, concurrency)
      await inParallel(Math.ceil(count / 2), concurrency, async () => {
        const { path } = await client.create(size)
        await client.patch(path, 0, size, body)
      })
      await client.close()
    },
    async run (origin, sizes) {
      const { smallCount: count, smallSize: size, smallConcurrency: concurrency } = sizes
      const seeds = Array.from({ length: count }, (_, index) => 1000 + index)
      const bodies = seeds.map((seed) => slice(seed, size, 0, size))
      seeds.forEach((seed) => expectedSha256(seed, size))
      const client = new TusClient(origin, concurrency)
      const uploads: StoredUpload[] = []
      const latencies: number[] = []
      const start = performance.now()
      await inParallel(count, concurrency, async (index) => {
        const begin = performance.now()
        const { path, id } = await client.create(size)
        await client.patch(path, 0, size, bodies[index]!)
        latencies.push(performance.now() - begin)
        uploads.push({ id, size, sha256: expectedSha256(seeds[index]!, size) })
      })
      const seconds = (performance.now() - start) / 1000
      await client.close()
      latencies.sort((a, b) => a - b)
      return {
        measurement: { value: count / seconds, seconds, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) },
        uploads
      }
    }
  },
  {
    id: 'W4',
    title: 'concurrent uploads, single PATCH each',
    unit: 'MB/s',
    async run (origin, sizes) {
      const { parallelCount: count, parallelSize: size } = sizes
      for (let index = 0; index < count; index++) expectedSha256(100 + index, size)
      const client = new TusClient(origin, count)
      const start = performance.now()
      const uploads = await Promise.all(Array.from({ length: count }, async (_, index) => await uploadWhole(client, 100 + index, size)))
      const seconds = (performance.now() - start) / 1000
      await client.close()
      return { measurement: { value: count * size / MB / seconds, seconds }, uploads }
    }
  },
  {
    id: 'W5',
    title: 'HEAD of an upload in progress',
    unit: 'req/s',
    async warm (origin, sizes) {
      const { headCount: count, headConcurrency: concurrency } = sizes
      const client = new TusClient(origin, concurrency)
      const { path } = await client.create(KiB)
      await inParallel(Math.ceil(count / 4), concurrency, async () => { await client.head(path, 0) })
      await client.close()
    },
    async run (origin, sizes) {
      const { headCount: count, headConcurrency: concurrency } = sizes
      const size = 64 * KiB
      const written = 16 * KiB
      const client = new TusClient(origin, concurrency)
      const { path, id } = await client.create(size)
      await client.patch(path, 0, written, slice(5, size, 0, written))
      const start = performance.now()
      await inParallel(count, concurrency, async () => { await client.head(path, written) })
      const seconds = (performance.now() - start) / 1000
      await client.close()
      return { measurement: { value: count / seconds, seconds }, uploads: [{ id, size: written, sha256: expectedSha256(5, written) }] }
    }
  }
]

/** A few untimed requests of every kind on a fresh server (then its workload's own warm-up, Workload.warm). */
export async function warmUp (origin: string): Promise<void> {
  const client = new TusClient(origin, 4)
  const size = 16 * KiB
  await inParallel(16, 4, async (index) => {
    const { path } = await client.create(size)
    await client.patch(path, 0, size, slice(9000 + index, size, 0, size))
    for (let i = 0; i < 20; i++) await client.head(path, size)
  })
  await client.close()
}

/** Checks that every upload is stored with its exact size and bytes; throws on the first that is not. */
export async function verifyStored (dataDir: string, uploads: StoredUpload[]): Promise<void> {
  for (const upload of uploads) {
    const path = join(dataDir, upload.id)
    const { size } = await stat(path)
    if (size !== upload.size) throw new Error(`stored ${upload.id}: expected ${upload.size} bytes, found ${size}`)
    const hasher = createHash('sha256')
    for await (const chunk of createReadStream(path, { highWaterMark: MiB })) hasher.update(chunk as Buffer)
    const sha256 = hasher.digest('hex')
    if (sha256 !== upload.sha256) throw new Error(`stored ${upload.id}: sha256 ${sha256}, expected ${upload.sha256}`)
  }
}
