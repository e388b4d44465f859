// Events carry the request that caused them (second argument), and `failed` reports a request storing bytes that
// ended in an error: through tus 1.0.0 and the IETF draft (interop 6) alike.
import t from 'tap'
import type { FastifyRequest } from 'fastify'
import type { TusErrorFacts, UploadInfo } from '../lib/index.js'
import { backdate, send, startServer } from './helpers.js'

interface Dialect {
  name: string
  headers: Record<string, string>
  create: (length: number, metadata: string) => Record<string, string>
  append: (offset: number, complete: boolean) => Record<string, string>
}

const DIALECTS: Dialect[] = [
  {
    name: 'tus 1.0.0',
    headers: { 'Tus-Resumable': '1.0.0' },
    create: (length: number, metadata: string) => ({ 'Upload-Length': String(length), 'Upload-Metadata': metadata }),
    append: (offset: number, _complete: boolean) => ({ 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' })
  },
  {
    name: 'IETF draft interop 6',
    headers: { 'Upload-Draft-Interop-Version': '6' },
    create: (length: number, metadata: string) => ({ 'Upload-Length': String(length), 'Upload-Complete': '?0', 'Upload-Metadata': metadata }),
    append: (offset: number, complete: boolean) => ({ 'Upload-Offset': String(offset), 'Upload-Complete': complete ? '?1' : '?0', 'Content-Type': 'application/partial-upload' })
  }
]

const protocolOf = (request: FastifyRequest): string => {
  const interop = request.headers['upload-draft-interop-version']
  return typeof interop === 'string' ? `draft ${interop}` : 'tus'
}

// base64 of "stop" and "crash"
const STOP = 'mode c3RvcA=='
const CRASH = 'mode Y3Jhc2g='

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: each event gets the request; failed gets the error, the upload and the request`, async (t) => {
    const seen: string[] = []
    const server = await startServer(t, {
      progressInterval: 0,
      onUploadProgress: (upload) => {
        if (upload.metadata.mode === 'stop' && upload.offset > 0) throw Object.assign(new Error('quota reached'), { statusCode: 403 })
      },
      onUploadComplete: (upload) => { if (upload.metadata.mode === 'crash') throw new Error('indexer down') }
    })
    const tus = server.app.tus
    for (const name of ['created', 'progress', 'completed', 'terminated'] as const) {
      tus.on(name, (upload: UploadInfo, request: FastifyRequest) => {
        seen.push(`${name} ${upload.id} ${upload.offset} ${request.method} ${protocolOf(request)}`)
      })
    }
    tus.on('expired', (upload) => { seen.push(`expired ${upload.id}`) })
    tus.on('failed', (error, upload, request) => {
      const code = (error as Error & { code?: string }).code ?? ''
      const facts = (error as Error & TusErrorFacts).offset
      seen.push(`failed ${code} ${String((error as { statusCode?: number }).statusCode)} ${upload.id} ${upload.offset} ${String(facts)} ${request.method} ${protocolOf(request)}`)
    })
    const h = dialect.headers
    const p = protocolOf({ headers: Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v])) } as unknown as FastifyRequest)
    const create = async (length: number, metadata = ''): Promise<{ url: string, id: string }> => {
      const created = await send(server.endpoint, 'POST', { ...h, ...dialect.create(length, metadata) })
      t.equal(created.status, 201)
      const url = new URL(String(created.headers.location), server.origin).href
      return { url, id: url.split('/').pop()! }
    }

    // Completed and terminated.
    const a = await create(3, 'name bm9uZQ==')
    t.equal((await send(a.url, 'PATCH', { ...h, ...dialect.append(0, true) }, 'abc')).status, 204)
    t.equal((await send(a.url, 'DELETE', h)).status, 204)
    // Stopped by onUploadProgress after its first chunk: 403, the 3 bytes kept.
    const b = await create(10, STOP)
    const stopped = await send(b.url, 'PATCH', { ...h, ...dialect.append(0, false) }, 'abc')
    t.equal(stopped.status, 403)
    t.equal(stopped.headers['upload-offset'], '3')
    // onUploadComplete crashes: 500, the upload complete.
    const c = await create(2, CRASH)
    const crashed = await send(c.url, 'PATCH', { ...h, ...dialect.append(0, true) }, 'xy')
    t.equal(crashed.status, 500)
    // A refused offset stores nothing and is no failure of a write.
    t.equal((await send(c.url, 'PATCH', { ...h, ...dialect.append(1, false) }, 'z')).status, 409)
    // Expiry has no request.
    const d = await create(1)
    await backdate(server.dir, d.id, 30)
    t.equal(await tus.removeExpired(), 1)

    t.same(seen, [
      `created ${a.id} 0 POST ${p}`,
      `progress ${a.id} 0 PATCH ${p}`,
      `progress ${a.id} 3 PATCH ${p}`,
      `completed ${a.id} 3 PATCH ${p}`,
      `terminated ${a.id} 3 DELETE ${p}`,
      `created ${b.id} 0 POST ${p}`,
      `progress ${b.id} 0 PATCH ${p}`,
      `failed  403 ${b.id} 3 3 PATCH ${p}`,
      `created ${c.id} 0 POST ${p}`,
      `progress ${c.id} 0 PATCH ${p}`,
      `progress ${c.id} 2 PATCH ${p}`,
      // `completed` follows onUploadComplete whether or not it failed.
      `failed FST_TUS_HOOK_FAILED 500 ${c.id} 2 2 PATCH ${p}`,
      `completed ${c.id} 2 PATCH ${p}`,
      `created ${d.id} 0 POST ${p}`,
      `expired ${d.id}`
    ])
  })
}
