// Type test of the public API, checked by `npm run typecheck` (tsc over test/): what an app writes must
// compile, and what it must not write must not (each @ts-expect-error fails the build if the error vanishes).
import Fastify, { type FastifyRequest } from 'fastify'
import tusPlugin, {
  FileLocker, FileStore, MemoryLocker, TusDraftErrors, type WriteOptions, TusErrors, type DataStore, type DraftInteropVersion, type OnUploadComplete, type OnUploadCreate,
  type TusHttpError, type TusPluginOptions, type UploadCreateChanges, type UploadInfo, type UploadLocker, type UploadResponse
} from '../lib/index.js'
import { S3Store } from '../lib/store/s3-store.js'
import { RedisLocker } from '../lib/lockers/redis-locker.js'

const app = Fastify()
await app.register(tusPlugin, { prefix: '/files', dir: '/tmp/uploads', maxSize: 1024, daysToKeep: Infinity })
await app.register(tusPlugin, {})
// @ts-expect-error maxSize is a number of bytes
await app.register(tusPlugin, { maxSize: '10G' })
// @ts-expect-error no such option
await app.register(tusPlugin, { maxsize: 10 })

const create: OnUploadCreate = async (upload, request: FastifyRequest) => {
  const size: number | undefined = upload.size
  const changes: UploadCreateChanges = { id: `u-${size ?? 0}`, metadata: { ...upload.metadata, owner: request.ip }, directory: 'alice' }
  return changes
}
const complete: OnUploadComplete = (upload) => {
  const info: UploadInfo = upload
  const response: UploadResponse = { status: 200, headers: { 'X-Id': info.id }, body: info.path ?? '' }
  return response
}
// @ts-expect-error onUploadComplete may return a response, not a string
const wrongComplete: OnUploadComplete = () => 'done'
const options: TusPluginOptions = {
  onUploadCreate: create,
  onUploadComplete: complete,
  onUploadProgress: (upload) => { upload.offset.toFixed() },
  onUploadTerminate: async (upload) => { if (upload.metadata.locked === 'yes') throw new TusErrors.METHOD_NOT_ALLOWED('DELETE') },
  auth: async (request, reply) => { if (request.headers.authorization === undefined) await reply.code(401).send() },
  ietfDraftVersions: [6, 9]
}
void options
void wrongComplete
// @ts-expect-error 2 is no interop version of the draft
const unknownDraft: TusPluginOptions = { ietfDraftVersions: [2] }
void unknownDraft
const knownDrafts: readonly DraftInteropVersion[] = [3, 9]
const fromConstant: TusPluginOptions = { ietfDraftVersions: knownDrafts }
void fromConstant

const store: DataStore = new FileStore({ directory: '/tmp/uploads' })
const locker: UploadLocker = new MemoryLocker()
void store
void locker
void S3Store
void RedisLocker

// Scaling out: a file lock for one host, locks that can be lost (their signal), stores that check it.
const fileLocker: UploadLocker = new FileLocker({ directory: '/tmp/uploads/.locks', ttlMs: 10_000 })
// @ts-expect-error the directory is required
void new FileLocker({ ttlMs: 1 })
const held = await fileLocker.lock('id', { timeoutMs: 1000 })
const lost: AbortSignal | undefined = held.signal
void lost
const writeOptions: WriteOptions = { signal: AbortSignal.abort() }
void store.write('id', 0, [Buffer.alloc(1)] as unknown as AsyncIterable<Buffer>, writeOptions)
const pendingFinals: ((partialId: string) => Promise<string[]>) | undefined = store.listPendingFinals
void pendingFinals
void new RedisLocker({ redis: undefined as unknown as ConstructorParameters<typeof RedisLocker>[0]['redis'], commandTimeoutMs: 1000 })

// app.tus: typed events, the store, expiry and metrics.
app.tus.on('completed', (upload) => { const id: string = upload.id; void id })
// @ts-expect-error no such event
app.tus.on('finished', () => {})
const removed: Promise<number> = app.tus.removeExpired()
const text: string = app.tus.metrics()
void removed
void text

// Errors: stable codes, statuses, and the facts a protocol formats.
const error: TusHttpError = new TusErrors.OFFSET_MISMATCH(1, 2)
const offset: number | undefined = error.offset
const status: number | undefined = new TusDraftErrors.INCONSISTENT_LENGTH('x').statusCode
void offset
void status

// request.tus.finalsCompleted: the finals a request completed besides the upload it addressed.
app.addHook('onResponse', async (request) => {
  const finals: UploadInfo[] | undefined = request.tus?.finalsCompleted
  for (const final of request.tus?.finalsCompleted ?? []) request.log.info({ id: final.id, size: final.size }, 'final upload completed')
  // @ts-expect-error it lists uploads, not ids
  const ids: string[] | undefined = request.tus?.finalsCompleted
  void finals
  void ids
})
