/**
 * The scale workload: N small uploads in one store, then what N does to the per-upload costs.
 *
 *  1. creation: N uploads of 1 KiB (POST + PATCH), 16 at a time; the rate overall and per tenth of N, so a
 *     rate that falls as the directory fills shows as a last tenth slower than the first;
 *  2. HEAD of one upload, 32 at a time, against HEADs spread over all N uploads (each in turn, in a random
 *     order), 32 at a time, alternated in 4 rounds of max(N/4, 10000) HEADs each (medians): an info cache
 *     that thrashes or a per-HEAD read of the info file shows here. HEADs of one upload share their reads
 *     (lib/lockers/shared-reads.ts: one lock and one store read for all the HEADs that arrive together),
 *     HEADs of different uploads cannot, so a third kind is the peer that shows what N itself costs: HEADs
 *     of 64 uploads in turn ("unshared": no two of the 32 at a time are of one upload), same rounds;
 *  3. removeExpired() over all N (their data files' modification times set 30 days back first, untimed),
 *     run inside the server (bench/servers/fastify-tus.mjs, POST /bench/remove-expired): uploads removed
 *     per second and how far the server's RSS rose while it ran.
 * Steps 1-2 (`fillAndProbe`) and step 3 (`expireAll`) are apart so that bench/run.ts can run every server's
 * creations before any server's removals: on ext4, inodes freed within the last minutes make each creation scan
 * past them, and one server's 100,000 removals slowed the next server's creations 3x (bench/RESULTS.md, session 13).
 * The peer of step 3 is the file system itself (`UnlinkPeer`): the same number of uploads' files removed by plain
 * unlinks, nothing else.
 */
import { execFile } from 'node:child_process'
import { mkdir, rm, unlink, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { request } from 'undici'
import type { RunningServer } from './servers.js'
import { median } from './stats.js'
import { inParallel, slice, TusClient } from './workloads.js'

const SIZE = 1024

export interface ScaleResult {
  n: number
  createPerSecond: number
  /** Creation rate over each tenth of the uploads, in order. */
  createByTenth: number[]
  headOnePerSecond: number
  headSpreadPerSecond: number
  /** HEADs of 64 uploads in turn: none shares a read, as in the spread, but the uploads are few. */
  headUnsharedPerSecond: number
  removed: number
  removePerSecond: number
  removeRssGrowthMiB: number
  /** Server RSS when removeExpired() started (N uploads known, cache as full as it gets). */
  rssBeforeRemoveMiB: number
}

function shuffled<T> (items: T[]): T[] {
  const copy = [...items]
  for (let index = copy.length - 1; index > 0; index--) {
    const other = Math.floor(Math.random() * (index + 1))
    ;[copy[index], copy[other]] = [copy[other]!, copy[index]!]
  }
  return copy
}

/** What steps 1-2 measured, and the uploads step 3 removes. */
export type ScaleFill = Pick<ScaleResult, 'n' | 'createPerSecond' | 'createByTenth' | 'headOnePerSecond' | 'headSpreadPerSecond' | 'headUnsharedPerSecond'> & { uploads: Array<{ path: string, id: string }> }

export async function fillAndProbe (server: RunningServer, n: number, log: (line: string) => void): Promise<ScaleFill> {
  const body = slice(77, SIZE, 0, SIZE)
  const client = new TusClient(server.origin, 32)
  const uploads: Array<{ path: string, id: string }> = new Array(n)
  const tenth = Math.max(1, Math.floor(n / 10))
  const marks: number[] = []
  let done = 0
  const start = performance.now()
  await inParallel(n, 16, async (index) => {
    const upload = await client.create(SIZE)
    await client.patch(upload.path, 0, SIZE, body)
    uploads[index] = upload
    if (++done % tenth === 0) marks.push(performance.now())
  })
  const createSeconds = (performance.now() - start) / 1000
  const createByTenth = marks.map((mark, index) => tenth / ((mark - (index === 0 ? start : marks[index - 1]!)) / 1000))
  log(`scale n=${n}: created in ${createSeconds.toFixed(1)} s (${(n / createSeconds).toFixed(0)}/s; by tenth ${createByTenth.map((rate) => rate.toFixed(0)).join(' ')})`)

  const heads = async (paths: string[]): Promise<number> => {
    const begin = performance.now()
    await inParallel(paths.length, 32, async (index) => { await client.head(paths[index]!, SIZE) })
    return paths.length / ((performance.now() - begin) / 1000)
  }
  // Alternated in 4 rounds of each (one, spread, unshared, one, ...), medians reported, so that load drifting on
  // the machine hits all alike; each round at least 10000 HEADs, spread rounds going on through the order.
  const count = Math.max(Math.ceil(n / 4), 10_000)
  const one = uploads[Math.floor(n / 2)]!.path
  const order = shuffled(uploads.map((upload) => upload.path))
  const few = order.slice(0, Math.min(64, n))
  let position = 0
  const oneRates: number[] = []
  const spreadRates: number[] = []
  const unsharedRates: number[] = []
  for (let round = 0; round < 4; round++) {
    oneRates.push(await heads(Array.from({ length: count }, () => one)))
    spreadRates.push(await heads(Array.from({ length: count }, () => order[position++ % n]!)))
    unsharedRates.push(await heads(Array.from({ length: count }, (_, index) => few[index % few.length]!)))
  }
  const headOnePerSecond = median(oneRates)
  const headSpreadPerSecond = median(spreadRates)
  const headUnsharedPerSecond = median(unsharedRates)
  log(`scale n=${n}: HEAD one ${headOnePerSecond.toFixed(0)}/s, spread ${headSpreadPerSecond.toFixed(0)}/s, unshared ${headUnsharedPerSecond.toFixed(0)}/s`)
  await client.close()
  return { n, createPerSecond: n / createSeconds, createByTenth, headOnePerSecond, headSpreadPerSecond, headUnsharedPerSecond, uploads }
}

export async function expireAll (server: RunningServer, fill: ScaleFill, log: (line: string) => void): Promise<ScaleResult> {
  const { uploads, ...measured } = fill
  const n = measured.n

  // The server has been idle while the other servers filled their stores, and V8 shrinks an idle process's heap
  // (RSS 152 -> 75 MiB in 40 s idle with 30,000 uploads): it grows back on the next requests, whatever they are
  // (+60 MiB for 40,000 HEADs), and that growth would be counted as removeExpired()'s (37.6 MiB in one run, against
  // 12.3 for a server idle only a few seconds). HEADs spread over the uploads first, before their times are set
  // back (then they would answer 410), bring it back to its working size.
  const client = new TusClient(server.origin, 32)
  await inParallel(Math.min(n, 40_000), 32, async (index) => { await client.head(uploads[index]!.path, SIZE) })
  await client.close()
  const past = new Date(Date.now() - 30 * 24 * 3600 * 1000)
  await inParallel(n, 32, async (index) => { await utimes(join(server.dataDir, uploads[index]!.id), past, past) })
  // Every removal (the peer's too) starts with nothing left to write back: what another server created shortly
  // before would otherwise be written back during it, and slow it by a different amount each time.
  await settleDisk()
  const response = await request(`${server.origin}/bench/remove-expired`, { method: 'POST', headersTimeout: 0, bodyTimeout: 0 })
  if (response.statusCode !== 200) throw new Error(`remove-expired: ${response.statusCode} ${await response.body.text()}`)
  const removal = await response.body.json() as { removed: number, seconds: number, rssBeforeMiB: number, rssGrowthMiB: number }
  if (removal.removed !== n) throw new Error(`removeExpired() removed ${removal.removed} uploads, expected ${n}`)
  log(`scale n=${n}: removeExpired() ${removal.removed} in ${removal.seconds.toFixed(2)} s, RSS ${removal.rssBeforeMiB.toFixed(1)} MiB + ${removal.rssGrowthMiB.toFixed(1)} MiB`)
  return {
    ...measured,
    removed: removal.removed,
    removePerSecond: removal.removed / removal.seconds,
    removeRssGrowthMiB: removal.rssGrowthMiB,
    rssBeforeRemoveMiB: removal.rssBeforeMiB
  }
}

/**
 * The limit of removeExpired(): the files of N uploads (a 1 KiB data file and an info file of one block, as a
 * FileStore keeps them) removed by plain unlinks, 16 at a time, as removeExpired() checks uploads, and nothing else:
 * no listing, no lock, no read. Filled before the servers fill their stores and written back (`sync`), removed
 * right before their removals, each removal started with nothing left to write back, so that its files are as old
 * and as much on the disk as theirs: unlinking a file whose blocks are written costs ext4 far more than one still
 * only in the page cache (6,100-6,300 against 56,000-62,000 files/s in bench/RESULTS.md, session 24). Its directory
 * is removed by the caller (bench/run.ts), whatever happens.
 */
export class UnlinkPeer {
  readonly directory: string
  readonly n: number

  constructor (directory: string, n: number) {
    this.directory = directory
    this.n = n
  }

  async fill (): Promise<void> {
    await rm(this.directory, { recursive: true, force: true })
    await mkdir(this.directory, { recursive: true })
    const data = slice(77, SIZE, 0, SIZE)
    const info = Buffer.alloc(256, 0x20)
    await inParallel(this.n, 16, async (index) => {
      await writeFile(join(this.directory, `u${index}`), data)
      await writeFile(join(this.directory, `u${index}.json`), info)
    })
    await settleDisk()
  }

  /** Uploads removed per second. */
  async remove (log: (line: string) => void): Promise<number> {
    await settleDisk()
    const start = performance.now()
    await inParallel(this.n, 16, async (index) => {
      await unlink(join(this.directory, `u${index}.json`))
      await unlink(join(this.directory, `u${index}`))
    })
    const seconds = (performance.now() - start) / 1000
    log(`scale n=${this.n}: the file system alone removed the files of ${this.n} uploads in ${seconds.toFixed(2)} s`)
    return this.n / seconds
  }
}

/** Waits until the file system has written back everything (sync). */
async function settleDisk (): Promise<void> {
  await promisify(execFile)('sync')
}
