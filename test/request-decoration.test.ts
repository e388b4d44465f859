// `request.tus`: what each request did to an upload, read by the app's own onResponse hook on every route, for
// tus 1.0.0 and the IETF draft (interop 6) alike.
import t from 'tap'
import { EventEmitter, once } from 'node:events'
import { Agent, request as httpRequest } from 'node:http'
import tusPlugin, { type TusRequestUpload } from '../lib/index.js'
import { startServer, type TestServer } from './helpers.js'

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, body: Buffer }

// Keep-alive: a client that closed its connection as soon as it had read Content-Length bytes could do so before
// the server's response emitted 'finish', and Fastify runs onResponse on 'finish' only.
const agent = new Agent({ keepAlive: true })
t.teardown(() => { agent.destroy() })

/** node:http, which copes with the draft's 104 interim responses. */
async function send (url: string, method: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const request = httpRequest(url, { method, headers, agent })
    request.on('error', reject)
    request.on('response', (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => { resolve({ status: response.statusCode!, headers: response.headers, body: Buffer.concat(chunks) }) })
    })
    request.end(body)
  })
}

type Seen = Omit<TusRequestUpload, 'upload'> & { offset: number, size: number | undefined }
interface Observed { route: string, status: number, tus: Seen | null }

/**
 * The app's onResponse hook runs once the response is finished, possibly after the client has read it: `next()`
 * awaits the observation of the next request.
 */
function observer (): { observed: Observed[], pushed: EventEmitter, next: () => Promise<Observed> } {
  const observed: Observed[] = []
  const pushed = new EventEmitter()
  let consumed = 0
  return {
    observed,
    pushed,
    next: async () => {
      consumed++
      while (observed.length < consumed) await once(pushed, 'pushed')
      return observed[consumed - 1]!
    }
  }
}

async function server (t: { teardown: (fn: () => unknown) => void }, { observed, pushed }: ReturnType<typeof observer>): Promise<TestServer> {
  return await startServer(t, {}, async (app, dir) => {
    app.addHook('onResponse', async (request, reply) => {
      const tus = request.tus
      observed.push({
        route: `${request.method} ${request.routeOptions.url ?? '(none)'}`,
        status: reply.statusCode,
        tus: tus === null ? null : { ...withoutUpload(tus), offset: tus.upload.offset, size: tus.upload.size }
      })
      pushed.emit('pushed')
    })
    app.get('/other', async () => 'not tus')
    await app.register(tusPlugin, { dir })
  })
}

function withoutUpload ({ upload: _upload, ...rest }: TusRequestUpload): Omit<TusRequestUpload, 'upload'> {
  return rest
}

const flags = (id: string, offset: number, size: number | undefined, changes: Partial<Seen> = {}): Seen =>
  ({ id, created: false, bytesStored: 0, completed: false, terminated: false, finalsCompleted: [], offset, size, ...changes })

interface Dialect {
  name: string
  headers: Record<string, string>
  create: (length: number, body?: string) => Record<string, string>
  append: (offset: number, complete: boolean) => Record<string, string>
  createStatus: number
  headStatus: number
}

const DIALECTS: Dialect[] = [
  {
    name: 'tus 1.0.0',
    headers: { 'Tus-Resumable': '1.0.0' },
    create: (length, body) => ({ 'Upload-Length': String(length), ...(body === undefined ? {} : { 'Content-Type': 'application/offset+octet-stream' }) }),
    append: (offset) => ({ 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' }),
    createStatus: 201,
    headStatus: 200
  },
  {
    name: 'IETF draft interop 6',
    headers: { 'Upload-Draft-Interop-Version': '6' },
    create: (length, body) => ({ 'Upload-Length': String(length), 'Upload-Complete': body !== undefined && body.length === length ? '?1' : '?0' }),
    append: (offset, complete) => ({ 'Upload-Offset': String(offset), 'Upload-Complete': complete ? '?1' : '?0', 'Content-Type': 'application/partial-upload' }),
    createStatus: 201,
    headStatus: 204
  }
]

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: every route decorates the request with what it did`, async (t) => {
    const watch = observer()
    const s = await server(t, watch)
    const h = dialect.headers
    const last = watch.next

    t.equal((await send(`${s.origin}/other`, 'GET', {})).status, 200)
    t.same((await last()), { route: 'GET /other', status: 200, tus: null }, 'an app route: null')

    t.equal((await send(s.endpoint, 'OPTIONS', h)).status, 204)
    t.same((await last()).tus, null, 'OPTIONS touches no upload')

    const created = await send(s.endpoint, 'POST', { ...h, ...dialect.create(6) })
    t.equal(created.status, dialect.createStatus)
    const url = new URL(String(created.headers.location), s.origin).href
    const id = url.split('/').pop()!
    t.same((await last()), { route: 'POST /files', status: dialect.createStatus, tus: flags(id, 0, 6, { created: true }) }, 'creation')

    t.equal((await send(url, 'PATCH', { ...h, ...dialect.append(0, false) }, 'abc')).status, 204)
    t.same((await last()), { route: 'PATCH /files/:id', status: 204, tus: flags(id, 3, 6, { bytesStored: 3 }) }, 'an append')

    t.equal((await send(url, 'PATCH', { ...h, ...dialect.append(1, false) }, 'zz')).status, 409)
    t.same((await last()), { route: 'PATCH /files/:id', status: 409, tus: flags(id, 3, 6) }, 'a refused append still names the upload')

    const head = await send(url, 'HEAD', h)
    t.equal(head.status, dialect.headStatus)
    t.equal(head.headers['upload-offset'], '3')
    t.same((await last()), { route: 'HEAD /files/:id', status: dialect.headStatus, tus: flags(id, 3, 6) }, 'offset retrieval')

    const completing = await send(url, 'PATCH', { ...h, ...dialect.append(3, true) }, 'def')
    t.equal(completing.status, 204)
    t.equal(completing.headers['upload-offset'], '6')
    t.same((await last()), { route: 'PATCH /files/:id', status: 204, tus: flags(id, 6, 6, { bytesStored: 3, completed: true }) }, 'the append that completed it')

    const download = await send(url, 'GET', h)
    t.equal(download.status, 200)
    t.equal(download.body.toString(), 'abcdef')
    t.same((await last()), { route: 'GET /files/:id', status: 200, tus: flags(id, 6, 6) }, 'download')

    const oneShot = await send(s.endpoint, 'POST', { ...h, ...dialect.create(4, 'wxyz') }, 'wxyz')
    t.equal(oneShot.status, 201)
    const oneShotId = String(oneShot.headers.location).split('/').pop()!
    t.same((await last()).tus, flags(oneShotId, 4, 4, { created: true, bytesStored: 4, completed: true }), 'a creation that carries every byte')

    const override = await send(url, 'POST', { ...h, 'X-HTTP-Method-Override': 'DELETE' })
    t.equal(override.status, 204)
    t.same((await last()), { route: 'DELETE /files/:id', status: 204, tus: flags(id, 6, 6, { terminated: true }) }, 'termination through X-HTTP-Method-Override (the method it stands for)')

    t.equal((await send(url, 'HEAD', h)).status, 404)
    t.same((await last()).tus, null, 'an unknown upload: null')
  })
}

t.test('the decoration is typed and null before any upload is touched', async (t) => {
  const watch = observer()
  const s = await server(t, watch)
  const refused = await send(s.endpoint, 'POST', { 'Tus-Resumable': '1.0.0' })
  t.equal(refused.status, 400, 'no Upload-Length')
  t.same(await watch.next(), { route: 'POST /files', status: 400, tus: null })
})

// Concatenation is tus 1.0.0's: the PATCH that completes a final's last partial runs the final's onUploadComplete.
// request.tus is about the upload the request addressed (the partial: not completed, partials never complete on their
// own); the final it completed on the side is in finalsCompleted.
t.test('tus 1.0.0: the append completing a final\'s last partial lists the final in finalsCompleted', async (t) => {
  const watch = observer()
  const s = await server(t, watch)
  const h = { 'Tus-Resumable': '1.0.0' }
  const created = await send(s.endpoint, 'POST', { ...h, 'Upload-Concat': 'partial', 'Upload-Length': '3' })
  t.equal(created.status, 201)
  const partialId = String(created.headers.location).split('/').pop()!
  await watch.next()
  const final = await send(s.endpoint, 'POST', { ...h, 'Upload-Concat': `final;/files/${partialId}` })
  t.equal(final.status, 201)
  t.equal(final.headers['upload-offset'], undefined, 'waiting for its partial')
  const finalId = String(final.headers.location).split('/').pop()!
  t.same((await watch.next()).tus, flags(finalId, 0, 3, { created: true }), 'the final\'s creation completed nothing')
  const patch = await send(`${s.endpoint}${partialId}`, 'PATCH', { ...h, 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, 'abc')
  t.equal(patch.status, 204)
  const seen = (await watch.next()).tus!
  const { finalsCompleted, ...rest } = seen
  const { finalsCompleted: _, ...expected } = flags(partialId, 3, 3, { bytesStored: 3 })
  t.same(rest, expected, 'the partial: not completed by the request')
  t.same(finalsCompleted.map((upload) => ({ id: upload.id, offset: upload.offset, size: upload.size })), [{ id: finalId, offset: 3, size: 3 }], 'the final it completed')
  const head = await send(`${s.endpoint}${finalId}`, 'HEAD', h)
  t.equal(head.headers['upload-offset'], '3')
  t.same((await watch.next()).tus, flags(finalId, 3, 3), 'a HEAD of the complete final completed nothing')
})
