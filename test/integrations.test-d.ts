// Type test of the README's integration snippets (request.tus, events with the request, the prom-client bridge),
// checked by `npm run typecheck`: what an app writes must compile, and what it must not write must not.
import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import Fastify, { type FastifyRequest } from 'fastify'
import { Registry, collectDefaultMetrics } from 'prom-client'
import tus, { type GenerateUrl, type GetUploadIdFromRequest, type MaxSizeOf, type UploadUrlParts, type OnUploadExpire, type TusMetrics, type TusRequestUpload, type UploadInfo } from '../lib/index.js'
import { tusCollector, type TusCollectorOptions } from '../lib/observe/prom-client.js'
import { tusdHttpHooks, type TusdHookResponse } from '../lib/cli-hooks.js'

const app = Fastify()
await app.register(tus, { dir: './uploads' })

// request.tus
app.addHook('onResponse', async (request, reply) => {
  const tus = request.tus   // TusRequestUpload | null
  if (tus === null) return
  const { id, created, bytesStored, completed, terminated } = tus
  request.log.info({ id, created, bytesStored, completed, terminated, offset: tus.upload.offset, status: reply.statusCode }, 'tus request')
})
app.get('/x', async (request) => {
  const state: TusRequestUpload | null = request.tus
  // @ts-expect-error it may be null
  const id: string = request.tus.id
  return { state, id }
})

// Events with the request; failed.
app.tus.on('completed', (upload, request) => {
  request.log.info({ id: upload.id, size: upload.size }, 'upload finished')
})
app.tus.on('failed', (error, upload, request) => {
  request.log.warn({ err: error, id: upload.id, offset: upload.offset }, 'upload request failed')
})
app.tus.on('created', (upload: UploadInfo) => { void upload })
app.tus.on('expired', (upload: UploadInfo) => { void upload })
// @ts-expect-error expiry has no request
app.tus.on('expired', (_upload: UploadInfo, _request: FastifyRequest) => {})
// @ts-expect-error failed starts with the error
app.tus.on('failed', (_upload: UploadInfo) => {})

// prom-client
const registry = new Registry()
collectDefaultMetrics({ register: registry })
const removeTusMetrics = tusCollector(app.tus, { registry })
app.get('/metrics', async (_request, reply) => await reply.type(registry.contentType).send(await registry.metrics()))
removeTusMetrics()
const options: TusCollectorOptions = { prefix: 'uploads_' }
tusCollector(app.tus, options)
const stats: TusMetrics = app.tus.stats
const stop: () => void = stats.observe({ requestDuration: (method: string, status: number, seconds: number) => { void [method, status, seconds] } })
stop()
// @ts-expect-error the registry must be a prom-client Registry
tusCollector(app.tus, { registry: {} })

// onUploadExpire (README: Expiration and cleanup)
declare const legalHolds: { has: (id: string) => Promise<boolean> }
await app.register(tus, {
  onUploadExpire: async (upload, store) => {
    if (await legalHolds.has(upload.id)) return false
    if (upload.size !== undefined && upload.offset === upload.size) {
      await pipeline(await store.read(upload.id), createWriteStream(`/archive/${upload.id}`))
    }
  }
})
const expire: OnUploadExpire = () => true
// @ts-expect-error the hook answers with a boolean or nothing
const wrongExpire: OnUploadExpire = () => 'keep'
void [expire, wrongExpire]

// tusd hooks (README: Standalone server, tusd hooks)
const hooks = tusdHttpHooks({ url: 'http://localhost:8081/write', events: ['pre-create', 'post-finish'] })
await app.register(tus, hooks.options({ dir: './uploads' }))
hooks.attach(app.tus, app.log)
app.addHook('onClose', async () => { await hooks.idle() })
// @ts-expect-error tusd's hook names only
tusdHttpHooks({ url: 'http://localhost:8081/write', events: ['pre-upload'] })
const hookResponse: TusdHookResponse = { RejectUpload: true, HTTPResponse: { StatusCode: 403, Body: 'no', Header: { 'X-A': 'b' } }, ChangeFileInfo: { ID: 'x' } }
void hookResponse

// generateUrl (README: Upload URLs)
declare function sign (id: string): string
await app.register(tus, {
  prefix: '/:tenant/files',
  generateUrl: (request, { path, id }) => `https://uploads.example.com${path}/${id}?sig=${sign(id)}`
})
const parts: UploadUrlParts = { proto: 'https', host: undefined, path: '/files', id: 'a' }
const generate: GenerateUrl = (_request, { id }) => `/files/${id}`
// @ts-expect-error generateUrl is synchronous
const asyncGenerate: GenerateUrl = async () => '/files/a'
void [parts, generate, asyncGenerate]

// maxSize as a function of the request (README: Options)
await app.register(tus, { maxSize: async (request) => request.headers['x-plan'] === 'pro' ? 10 * 1024 ** 3 : 1024 ** 3 })
const perRequest: MaxSizeOf = () => 1
// @ts-expect-error a number of bytes
const wrongPerRequest: MaxSizeOf = () => '1G'
void [perRequest, wrongPerRequest]
await app.register(tus, {
  generateUrl: (_request, { path, id }) => `${path}/${Buffer.from(id).toString('base64url')}.up`,
  getUploadIdFromRequest: (_request, lastPath) =>
    lastPath.endsWith('.up') ? Buffer.from(lastPath.slice(0, -3), 'base64url').toString() : undefined
})
const readId: GetUploadIdFromRequest = (_request, lastPath) => lastPath
void readId
