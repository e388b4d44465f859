/**
 * The S3 benchmark: fastify-tus with S3Store (against a real Ceph radosgw on 127.0.0.1) at several part sizes,
 * beside fastify-tus with its FileStore as the peer, on W1 (one upload in a single PATCH) and W4 (concurrent
 * uploads, one PATCH each) from bench/workloads.ts, and "S3 limit" (bench/servers/s3-limit.mjs: node's http server
 * making the same UploadPart calls one part at a time, no tus bookkeeping), the ceiling for a Node.js server
 * storing into this S3. Each server runs in its own process, fresh per workload.
 *
 *   npm run build && npm run bench:s3                 # 3 rounds, full sizes (W1 1 GiB, W4 32 x 32 MiB)
 *   npm run bench:s3 -- --quick                       # 1 round, W1 128 MiB, W4 32 x 4 MiB
 *   npm run bench:s3 -- --rounds 5 --part-sizes 5,8,16,64 --workloads W1,W4
 *   npm run bench:s3 -- --part-sizes 8 --in-flight 1,4 --no-file   # S3Store's partsInFlight against the S3 limit
 *   npm run bench:s3 -- --single-mib 8 --parallel-count 4 --parallel-mib 6 --part-sizes 5   # a smoke run
 *
 * Without TUS_TEST_S3_ENDPOINT in the environment it starts its own services: it runs itself again under
 * `bash scripts/services/run.sh` with OSD_STORE=bluestore (the 1 GiB uploads do not fit memstore's RAM cap),
 * which boots a one-node Ceph cluster and radosgw in a temporary directory and stops it afterwards. With
 * TUS_TEST_S3_ENDPOINT set (e.g. `bash scripts/services/run.sh npm run bench:s3`) it uses that service.
 * Each run creates a bucket of its own and deletes it at the end; the bucket is emptied after every sample.
 * Every upload is verified: for the file store on disk, for S3 by downloading it through the server (GET)
 * and comparing sha256 and length.
 */
import { execFile, spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { access, mkdir, writeFile } from 'node:fs/promises'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parseArgs } from 'node:util'
import {
  AbortMultipartUploadCommand, CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, ListMultipartUploadsCommand,
  ListObjectsV2Command, S3Client
} from '@aws-sdk/client-s3'
import { request } from 'undici'
import { DATA_ROOT, NODE_FLAGS, RunningServer, SERVERS, type ServerDefinition } from './servers.js'
import { format, median } from './stats.js'
import { FULL, QUICK, WORKLOADS, verifyStored, warmUp, type Measurement, type Sizes, type StoredUpload, type Workload } from './workloads.js'

const MiB = 1024 * 1024
const REPOSITORY = join(import.meta.dirname, '..')
/** Set for the copy of this script that scripts/services/run.sh runs, so a failed service start cannot loop. */
const UNDER_SERVICES = 'FASTIFY_TUS_BENCH_S3_UNDER_SERVICES'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    'part-sizes': { type: 'string', default: '5,8,16,64' },
    // S3Store's partsInFlight values to run each part size with (4 is the default).
    'in-flight': { type: 'string', default: '4' },
    workloads: { type: 'string', default: 'W1,W4' },
    'no-file': { type: 'boolean', default: false },
    'no-limit': { type: 'boolean', default: false },
    // Size overrides, for smoke runs while developing.
    'single-mib': { type: 'string' },
    'parallel-count': { type: 'string' },
    'parallel-mib': { type: 'string' }
  }
})

/** Exit code of the copy under run.sh when Ceph did not come up: the parent tries again. */
const NO_S3 = 75

if (process.env.TUS_TEST_S3_ENDPOINT === undefined || process.env.TUS_TEST_S3_ENDPOINT === '') {
  if (process.env[UNDER_SERVICES] === '1') {
    console.error('bench:s3: scripts/services/run.sh did not start Ceph radosgw (see its messages above)')
    process.exit(NO_S3)
  }
  // Run this script again with the services up; bluestore unless the caller chose otherwise. Ceph's start
  // now and then fails on a busy machine, so it gets three tries.
  let code: number | null = NO_S3
  for (let attempt = 1; attempt <= 3 && code === NO_S3; attempt++) {
    const child = spawn('bash', [join(REPOSITORY, 'scripts/services/run.sh'), process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
      stdio: 'inherit',
      env: {
        ...process.env,
        [UNDER_SERVICES]: '1',
        OSD_STORE: process.env.OSD_STORE ?? 'bluestore',
        // A sparse file: room for a round's uploads plus what radosgw's garbage collector has not freed yet.
        BLUESTORE_BYTES: process.env.BLUESTORE_BYTES ?? String(32 * 1024 * MiB)
      }
    })
    ;[code] = await once(child, 'exit') as [number | null]
  }
  process.exit(code ?? 1)
}

const endpoint = process.env.TUS_TEST_S3_ENDPOINT
// The AWS SDK warns on every start of a server process that it will need node >= 22 from 2027: noise here.
process.env.NODE_NO_WARNINGS = '1'
const credentials = {
  accessKeyId: process.env.TUS_TEST_S3_ACCESS_KEY ?? 'testaccesskey',
  secretAccessKey: process.env.TUS_TEST_S3_SECRET_KEY ?? 'testsecretkey'
}

const base: Sizes = args.quick ? QUICK : FULL
const sizes: Sizes = {
  ...base,
  ...(args['single-mib'] === undefined ? {} : { singlePatch: Number(args['single-mib']) * MiB }),
  ...(args['parallel-count'] === undefined ? {} : { parallelCount: Number(args['parallel-count']) }),
  ...(args['parallel-mib'] === undefined ? {} : { parallelSize: Number(args['parallel-mib']) * MiB })
}
const rounds = Number(args.rounds ?? (args.quick ? 1 : 3))
const workloads = args.workloads.split(',').map((id) => {
  const workload = WORKLOADS.find((candidate) => candidate.id === id)
  if (workload === undefined) throw new Error(`unknown workload ${id}`)
  return workload
})
const partSizesMiB = args['part-sizes'].split(',').map(Number)
for (const partSize of partSizesMiB) {
  if (!Number.isInteger(partSize) || partSize < 5) throw new Error(`part sizes are whole MiB, at least 5 (got ${partSize})`)
}

const inFlightValues = args['in-flight'].split(',').map(Number)
for (const inFlight of inFlightValues) {
  if (!Number.isInteger(inFlight) || inFlight < 1 || inFlight > 64) throw new Error(`parts in flight are integers from 1 to 64 (got ${inFlight})`)
}

const s3 = new S3Client({
  endpoint,
  region: 'us-east-1',
  forcePathStyle: true,
  credentials,
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED'
})
const bucket = `tus-bench-${randomBytes(6).toString('hex')}`

interface Variant {
  key: string
  definition: ServerDefinition
  /** S3 part size in bytes; undefined for the file store. */
  partSize?: number
}

const FILE: Variant = { key: 'file', definition: SERVERS['fastify-tus']! }
/** The ceiling: the same S3 calls for the data, without the protocol's bookkeeping (bench/servers/s3-limit.mjs). */
const LIMIT: Variant = {
  key: 's3-limit',
  partSize: 8 * MiB,
  definition: { name: 'S3 limit (8 MiB parts)', script: 's3-limit.mjs', args: [`--endpoint=${endpoint}`, `--bucket=${bucket}`, `--part-size=${8 * MiB}`] }
}
const variants: Variant[] = [
  ...(args['no-file'] ? [] : [FILE]),
  ...(args['no-limit'] ? [] : [LIMIT]),
  ...partSizesMiB.flatMap((mib) => inFlightValues.map((inFlight) => ({
    key: inFlight === 4 ? `s3-${mib}` : `s3-${mib}-x${inFlight}`,
    partSize: mib * MiB,
    definition: {
      name: `S3 ${mib} MiB parts${inFlight === 4 ? '' : `, ${inFlight} in flight`}${mib === 8 && inFlight === 4 ? ' (default)' : ''}`,
      script: 'fastify-tus-s3.mjs',
      args: [`--endpoint=${endpoint}`, `--bucket=${bucket}`, `--part-size=${mib * MiB}`, `--parts-in-flight=${inFlight}`]
    }
  })))
]

interface Sample extends Measurement {
  rssMiB: number
  cpuSeconds: number
}

/** Downloads every upload through the server (GET) and checks its length and sha256. */
async function verifyDownloaded (origin: string, uploads: StoredUpload[]): Promise<void> {
  for (const upload of uploads) {
    const response = await request(`${origin}/files/${upload.id}`, { headers: { 'tus-resumable': '1.0.0' } })
    if (response.statusCode !== 200) {
      throw new Error(`GET ${upload.id}: expected 200, got ${response.statusCode}: ${(await response.body.text()).slice(0, 200)}`)
    }
    const hasher = createHash('sha256')
    let length = 0
    for await (const chunk of response.body) {
      hasher.update(chunk as Buffer)
      length += (chunk as Buffer).length
    }
    if (length !== upload.size) throw new Error(`GET ${upload.id}: expected ${upload.size} bytes, got ${length}`)
    const sha256 = hasher.digest('hex')
    if (sha256 !== upload.sha256) throw new Error(`GET ${upload.id}: sha256 ${sha256}, expected ${upload.sha256}`)
  }
}

/** Aborts the bucket's multipart uploads and deletes its objects, so the next sample starts from an empty bucket. */
async function emptyBucket (): Promise<void> {
  let uploadMarker: { KeyMarker?: string, UploadIdMarker?: string } = {}
  while (true) {
    const page = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, ...uploadMarker }))
    for (const upload of page.Uploads ?? []) {
      await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key, UploadId: upload.UploadId }))
    }
    if (page.IsTruncated !== true) break
    uploadMarker = { KeyMarker: page.NextKeyMarker, UploadIdMarker: page.NextUploadIdMarker }
  }
  let token: string | undefined
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ...(token === undefined ? {} : { ContinuationToken: token }) }))
    for (const object of page.Contents ?? []) await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: object.Key }))
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined
  } while (token !== undefined)
}

/** Starts a fresh server, warms it up, runs the workload, reads peak RSS and CPU time, verifies every upload. */
async function measure (variant: Variant, workload: Workload): Promise<Sample> {
  const server = await RunningServer.start(variant.definition, NODE_FLAGS)
  try {
    await warmUp(server.origin)
    const cpuBefore = await server.cpuSeconds()
    const { measurement, uploads } = await workload.run(server.origin, sizes)
    const cpuSeconds = await server.cpuSeconds() - cpuBefore
    // Read before the verifying downloads, which are not part of the workload.
    const rssMiB = await server.peakRssMiB()
    if (variant.partSize === undefined) {
      await server.stop()
      await verifyStored(server.dataDir, uploads)
    } else {
      await verifyDownloaded(server.origin, uploads)
    }
    return { ...measurement, rssMiB, cpuSeconds }
  } catch (error) {
    throw new Error(`${variant.definition.name} failed ${workload.id}: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
  } finally {
    await server.stop()
    await server.removeData()
    if (variant.partSize !== undefined) await emptyBucket()
  }
}

function mib (bytes: number): string {
  return `${format(bytes / MiB)} MiB`
}

/** How many uploads a workload runs at once (what multiplies the part size in the memory bound). */
function concurrencyOf (workload: Workload): number {
  return workload.id === 'W4' ? sizes.parallelCount : workload.id === 'W3' ? sizes.smallConcurrency : 1
}

function describeSizes (): string {
  return workloads.map((workload) => {
    if (workload.id === 'W1') return `W1 ${mib(sizes.singlePatch)}`
    if (workload.id === 'W4') return `W4 ${sizes.parallelCount} x ${mib(sizes.parallelSize)}`
    return workload.id
  }).join(', ')
}

async function radosgwVersion (): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)('radosgw', ['--version'])
    return stdout.trim().replace(/ \([0-9a-f]{40}\)/, '')
  } catch {
    return 'radosgw version unknown'
  }
}

async function main (): Promise<void> {
  try {
    await access(join(REPOSITORY, 'dist/store/s3-store.js'))
  } catch {
    throw new Error('dist/ is missing: run `npm run build` first (the bench servers use the built package)')
  }
  await mkdir(DATA_ROOT, { recursive: true })
  await s3.send(new CreateBucketCommand({ Bucket: bucket }))
  const machine = `${cpus().length} CPUs (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}, ${await radosgwVersion()} ` +
    `(one mon, one ${process.env.OSD_STORE ?? 'memstore'} OSD, on the same machine)`
  console.error(`${rounds} round(s), ${describeSizes()}, bucket ${bucket} at ${endpoint}; ${machine}; load average ${loadavg().map((load) => load.toFixed(2)).join(' ')}`)
  const started = Date.now()
  const samples = new Map<string, Sample[]>()
  const key = (variant: string, workload: string): string => `${variant}/${workload}`
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const workload of workloads) {
        // Servers alternate within each round, so drifting background load hits all alike.
        for (const variant of variants) {
          const sample = await measure(variant, workload)
          console.error(`round ${round} ${workload.id} ${variant.definition.name}: ${format(sample.value)} ${workload.unit} in ${sample.seconds.toFixed(2)} s, ` +
            `peak RSS ${format(sample.rssMiB)} MiB, server CPU ${sample.cpuSeconds.toFixed(2)} s`)
          const list = samples.get(key(variant.key, workload.id)) ?? []
          list.push(sample)
          samples.set(key(variant.key, workload.id), list)
        }
      }
    }
  } finally {
    await emptyBucket()
    await s3.send(new DeleteBucketCommand({ Bucket: bucket }))
    s3.destroy()
  }

  const medianOf = (variant: string, workload: string, pick: (sample: Sample) => number): number =>
    median(samples.get(key(variant, workload))!.map(pick))
  const s3Variants = variants.filter((variant) => variant.partSize !== undefined)
  const withFile = variants.includes(FILE)
  const defaultVariant = variants.find((variant) => variant.key === 's3-8')
  const withLimit = variants.includes(LIMIT) && defaultVariant !== undefined
  const lines: string[] = []
  lines.push(`Medians of ${rounds} round(s); ${describeSizes()}; every server run with \`node ${NODE_FLAGS.join(' ')}\`; every upload verified by sha256.`)
  lines.push(`Machine: ${machine}; rounds took ${((Date.now() - started) / 60000).toFixed(1)} min, load average at the end ${loadavg().map((load) => load.toFixed(2)).join(' ')}.`, '')
  const header = variants.map((variant) => variant.key === 'file' ? 'FileStore' : variant.definition.name)
  const ratioHeader = [
    ...(withFile ? s3Variants.map((variant) => `${variant.definition.name} / FileStore`) : []),
    ...(withLimit ? s3Variants.filter((variant) => variant !== LIMIT).map((variant) => `${variant.definition.name} / ${LIMIT.definition.name}`) : [])
  ]
  lines.push(`| workload | unit | ${[...header, ...ratioHeader].join(' | ')} |`)
  lines.push(`| --- | --- | ${[...header, ...ratioHeader].map(() => '---:').join(' | ')} |`)
  for (const workload of workloads) {
    const values = variants.map((variant) => format(medianOf(variant.key, workload.id, (sample) => sample.value)))
    const ratio = (a: string, b: string): string =>
      `${(medianOf(a, workload.id, (sample) => sample.value) / medianOf(b, workload.id, (sample) => sample.value)).toFixed(2)}x`
    const ratios = [
      ...(withFile ? s3Variants.map((variant) => ratio(variant.key, 'file')) : []),
      ...(withLimit ? s3Variants.filter((variant) => variant !== LIMIT).map((variant) => ratio(variant.key, LIMIT.key)) : [])
    ]
    lines.push(`| ${workload.id} ${workload.title} | ${workload.unit} | ${[...values, ...ratios].join(' | ')} |`)
  }
  lines.push('', 'Peak RSS (VmHWM) of the server process, fresh per workload, MiB (median); for S3 beside it the part size x the uploads running at once:', '')
  lines.push(`| workload | ${header.join(' | ')} |`)
  lines.push(`| --- | ${header.map(() => '---:').join(' | ')} |`)
  for (const workload of workloads) {
    const cells = variants.map((variant) => {
      const rss = format(medianOf(variant.key, workload.id, (sample) => sample.rssMiB))
      if (variant.partSize === undefined) return rss
      const perUpload = Math.min(variant.partSize, workload.id === 'W1' ? sizes.singlePatch : sizes.parallelSize)
      return `${rss} (${format(perUpload * concurrencyOf(workload) / MiB)})`
    })
    lines.push(`| ${workload.id} | ${cells.join(' | ')} |`)
  }
  lines.push('', 'Server CPU time (user + system) per workload, seconds (median):', '')
  lines.push(`| workload | ${header.join(' | ')} |`)
  lines.push(`| --- | ${header.map(() => '---:').join(' | ')} |`)
  for (const workload of workloads) {
    lines.push(`| ${workload.id} | ${variants.map((variant) => medianOf(variant.key, workload.id, (sample) => sample.cpuSeconds).toFixed(2)).join(' | ')} |`)
  }
  const report = lines.join('\n') + '\n'
  process.stdout.write('\n' + report)
  await writeFile(join(DATA_ROOT, `results-s3-${new Date().toISOString().replace(/[:.]/g, '-')}.md`), report)
}

await main()
