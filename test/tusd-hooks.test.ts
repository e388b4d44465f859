// tusd's HTTP hooks (lib/cli-hooks.ts, `fastify-tus --hooks-http`): a receiver written from tusd's documented hook
// request and response refuses one creation, renames another, shapes the finishing response, refuses a
// termination and stops an upload; through tus 1.0.0 and the IETF draft (interop 6), and through the CLI.
import t from 'tap'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tusPlugin from '../lib/index.js'
import { tusdHttpHooks, TUSD_HOOK_NAMES, type TusdHookRequest, type TusdHookResponse } from '../lib/cli-hooks.js'
import { send, startServer, type HttpAnswer, type TestServer } from './helpers.js'
import { startProcess, waitForOutput } from './process.js'

/** A hook receiver as tusd's docs describe one: JSON hook requests in, JSON hook responses out. */
async function receiver (t: { teardown: (fn: () => unknown) => void }, tag: string): Promise<{
  url: string
  received: TusdHookRequest[]
  /** The Authorization header of each hook request. */
  forwarded: Array<string | undefined>
  waitFor: (type: string, id: string) => Promise<TusdHookRequest>
}> {
  const received: TusdHookRequest[] = []
  const forwarded: Array<string | undefined> = []
  const waiters: Array<{ type: string, id: string, resolve: (hook: TusdHookRequest) => void }> = []
  const answer = (hook: TusdHookRequest): TusdHookResponse => {
    const { Upload } = hook.Event
    const name = Upload.MetaData.filename
    if (hook.Type === 'pre-create' && name === 'setup.exe') {
      return {
        RejectUpload: true,
        HTTPResponse: { StatusCode: 403, Body: '{"message":"no executables"}', Header: { 'Content-Type': 'application/json', 'X-Hook': 'refused' } }
      }
    }
    if (hook.Type === 'pre-create' && name === 'draft.txt') {
      return { ChangeFileInfo: { ID: `renamed-${tag}`, MetaData: { filename: 'final.txt', owner: 'hooks' } } }
    }
    if (hook.Type === 'pre-finish') return { HTTPResponse: { StatusCode: 200, Header: { 'X-Processed': Upload.ID }, Body: `stored ${Upload.Offset} bytes` } }
    if (hook.Type === 'pre-terminate' && name === 'keep.txt') {
      return { RejectTermination: true, HTTPResponse: { StatusCode: 409, Body: '{"error":"kept by policy"}', Header: { 'Content-Type': 'application/json' } } }
    }
    if (hook.Type === 'post-receive' && name === 'stop.bin') {
      return { StopUpload: true, HTTPResponse: { StatusCode: 400, Body: '<p>project gone</p>', Header: { 'content-type': 'text/html' } } }
    }
    return {}
  }
  const server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const hook = JSON.parse(Buffer.concat(chunks).toString()) as TusdHookRequest
      forwarded.push(request.headers.authorization)
      response.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(answer(hook)), () => {
        received.push(hook)
        for (const waiter of waiters.filter((w) => w.type === hook.Type && w.id === hook.Event.Upload.ID)) {
          waiters.splice(waiters.indexOf(waiter), 1)
          waiter.resolve(hook)
        }
      })
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => { server.close(); await once(server, 'close') })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    received,
    forwarded,
    waitFor: async (type, id) => {
      const seen = received.find((hook) => hook.Type === type && hook.Event.Upload.ID === id)
      if (seen !== undefined) return seen
      return await new Promise((resolve) => { waiters.push({ type, id, resolve }) })
    }
  }
}

const b64 = (value: string): string => Buffer.from(value).toString('base64')

interface Dialect {
  tag: string
  headers: Record<string, string>
  create: (length: number, filename: string) => Record<string, string>
  append: (offset: number, complete: boolean) => Record<string, string>
  headStatus: number
}

const DIALECTS: Dialect[] = [
  {
    tag: 'tus',
    headers: { 'Tus-Resumable': '1.0.0' },
    create: (length, filename) => ({ 'Upload-Length': String(length), 'Upload-Metadata': `filename ${b64(filename)}` }),
    append: (offset) => ({ 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' }),
    headStatus: 200
  },
  {
    tag: 'draft',
    headers: { 'Upload-Draft-Interop-Version': '6' },
    create: (length, filename) => ({ 'Upload-Length': String(length), 'Upload-Complete': '?0', 'Upload-Metadata': `filename ${b64(filename)}` }),
    append: (offset, complete) => ({ 'Upload-Offset': String(offset), 'Upload-Complete': complete ? '?1' : '?0', 'Content-Type': 'application/partial-upload' }),
    headStatus: 204
  }
]

for (const dialect of DIALECTS) {
  t.test(`${dialect.tag}: a tusd hook receiver refuses, renames, answers, keeps and stops uploads`, async (t) => {
    const hooksReceiver = await receiver(t, dialect.tag)
    let dir = ''
    const hooks = tusdHttpHooks({ url: hooksReceiver.url, events: TUSD_HOOK_NAMES })
    const server: TestServer = await startServer(t, {}, async (app, tmp) => {
      dir = tmp
      await app.register(tusPlugin, hooks.options({ dir, progressInterval: 0 }))
      hooks.attach(app.tus, app.log)
    })
    const h = dialect.headers
    const create = async (length: number, filename: string): Promise<HttpAnswer> => await send(server.endpoint, 'POST', { ...h, ...dialect.create(length, filename) })

    // Refused: the receiver's status, body and headers (its Content-Type too, as tusd sends it); nothing stored.
    // A field sent twice (two lines) is two values, as Go's http.Header has them.
    const twice = ['1', '2'] as unknown as string
    const refused = await send(server.endpoint, 'POST', { ...h, ...dialect.create(5, 'setup.exe'), 'X-Twice': twice })
    t.equal(refused.status, 403)
    t.equal(refused.body, '{"message":"no executables"}')
    t.equal(refused.headers['x-hook'], 'refused')
    t.equal(refused.headers['content-type'], 'application/json')
    const preCreate = hooksReceiver.received[0]!
    t.equal(preCreate.Type, 'pre-create')
    t.same(preCreate.Event.Upload, {
      ID: '', Size: 5, SizeIsDeferred: false, Offset: 0, MetaData: { filename: 'setup.exe' }, IsPartial: false, IsFinal: false, PartialUploads: null, Storage: null
    }, 'tusd\'s FileInfo')
    t.equal(preCreate.Event.HTTPRequest.Method, 'POST')
    t.equal(preCreate.Event.HTTPRequest.URI, '/files/')
    t.match(preCreate.Event.HTTPRequest.RemoteAddr, /^127\.0\.0\.1:\d+$/)
    t.same(preCreate.Event.HTTPRequest.Header['Upload-Metadata'], [`filename ${b64('setup.exe')}`], 'headers canonicalised, values as arrays')
    t.same(preCreate.Event.HTTPRequest.Header['X-Twice'], ['1', '2'], 'a field sent twice is two values')
    t.same(Object.keys(preCreate.Event.HTTPRequest.Header).filter((name) => name.startsWith('Upload-Draft')), dialect.tag === 'draft' ? ['Upload-Draft-Interop-Version'] : [])

    // Renamed: the hook's ID and metadata.
    const renamed = await create(6, 'draft.txt')
    t.equal(renamed.status, 201)
    const id = `renamed-${dialect.tag}`
    t.match(String(renamed.headers.location), new RegExp(`/files/${id}$`))
    const url = `${server.endpoint}${id}`
    const postCreate = await hooksReceiver.waitFor('post-create', id)
    t.same(postCreate.Event.Upload.MetaData, { filename: 'final.txt', owner: 'hooks' })
    t.same(postCreate.Event.Upload.Storage, { Type: 'filestore', Path: join(dir, id) })
    const info = await server.app.tus.store.getInfo(id)
    t.same(info.metadata, { filename: 'final.txt', owner: 'hooks' }, 'stored as the hook changed it')

    // pre-finish shapes the response to the request that completes the upload; post-finish follows.
    const finished = await send(url, 'PATCH', { ...h, ...dialect.append(0, true) }, 'abcdef')
    t.equal(finished.status, 200)
    t.equal(finished.body, 'stored 6 bytes')
    t.equal(finished.headers['x-processed'], id)
    t.equal(finished.headers['upload-offset'], '6')
    t.equal((await hooksReceiver.waitFor('post-finish', id)).Event.Upload.Offset, 6)
    t.ok(hooksReceiver.received.some((hook) => hook.Type === 'post-receive' && hook.Event.Upload.ID === id), 'post-receive while bytes arrive')

    // pre-terminate refuses one DELETE; another goes ahead and post-terminate follows.
    const kept = (await create(1, 'keep.txt')).headers.location
    const keptId = String(kept).split('/').pop()!
    const keep = await send(`${server.endpoint}${keptId}`, 'DELETE', h)
    t.equal(keep.status, 409)
    t.equal(keep.body, '{"error":"kept by policy"}')
    t.equal(keep.headers['content-type'], 'application/json')
    t.equal((await send(`${server.endpoint}${keptId}`, 'HEAD', h)).status, dialect.headStatus, 'still there')
    t.equal((await send(url, 'DELETE', h)).status, 204)
    t.equal((await hooksReceiver.waitFor('post-terminate', id)).Type, 'post-terminate')

    // post-receive's StopUpload: once answered, the upload's requests are refused with the receiver's answer.
    const stop = String((await create(10, 'stop.bin')).headers.location).split('/').pop()!
    const first = await send(`${server.endpoint}${stop}`, 'PATCH', { ...h, ...dialect.append(0, false) }, 'abc')
    t.ok(first.status === 204 || first.status === 400, 'the first request may or may not see the answer')
    await hooksReceiver.waitFor('post-receive', stop)
    await hooks.idle()
    const offset = Number((await send(`${server.endpoint}${stop}`, 'HEAD', h)).headers['upload-offset'])
    const stopped = await send(`${server.endpoint}${stop}`, 'PATCH', { ...h, ...dialect.append(offset, false) }, 'def')
    t.equal(stopped.status, 400)
    t.equal(stopped.body, '<p>project gone</p>')
    t.equal(stopped.headers['content-type'], 'text/html', 'the receiver\'s header, whatever its case')
    t.equal(stopped.headers['upload-offset'], String(offset), 'nothing of the stopped request is stored')
  })
}

t.test('a receiver that fails makes a blocking hook answer 500; a non-blocking one is only logged', async (t) => {
  let tries = 0
  const failing = createServer((_request, response) => {
    tries++
    response.writeHead(503).end('down')
  })
  failing.listen(0, '127.0.0.1')
  await once(failing, 'listening')
  t.teardown(() => { failing.close() })
  const logs: string[] = []
  const hooks = tusdHttpHooks({ url: `http://127.0.0.1:${(failing.address() as AddressInfo).port}/`, events: ['pre-create', 'post-terminate'], retries: 2, backoffMs: 0 })
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, hooks.options({ dir }))
    hooks.attach(app.tus, app.log)
  }, { logger: { level: 'error', stream: { write: (line: string) => { logs.push(line) } } } })
  const refused = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' })
  t.equal(refused.status, 500)
  t.equal(refused.body, 'onUploadCreate failed')
  t.ok(logs.some((line) => line.includes('the pre-create hook answered 503')))
  t.equal(tries, 3, 'tried once and retried twice')
  t.throws(() => tusdHttpHooks({ url: 'ftp://127.0.0.1/' }), /http:\/\/ or https:\/\//)
  t.throws(() => tusdHttpHooks({ url: 'http://127.0.0.1/', retries: -1 }), /retries must be a non-negative integer/)
})

/** A receiver answering each hook request as `answer` says (a JSON body with 2xx); resolves with its URL. */
async function answering (
  t: { teardown: (fn: () => unknown) => void }, answer: (hook: TusdHookRequest) => { status: number, body: string }
): Promise<string> {
  const receiving = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const { status, body } = answer(JSON.parse(Buffer.concat(chunks).toString()) as TusdHookRequest)
      response.writeHead(status, status === 200 ? { 'Content-Type': 'application/json' } : {}).end(body)
    })
  })
  receiving.listen(0, '127.0.0.1')
  await once(receiving, 'listening')
  t.teardown(() => { receiving.close() })
  return `http://127.0.0.1:${(receiving.address() as AddressInfo).port}/`
}

t.test('a pre-finish that fails sends no post-finish, in both protocols (tusd does not)', async (t) => {
  const types: string[] = []
  const receiverUrl = await answering(t, (hook) => {
    types.push(hook.Type)
    return hook.Type === 'pre-finish' ? { status: 500, body: 'scan failed' } : { status: 200, body: '{}' }
  })
  const hooks = tusdHttpHooks({ url: receiverUrl, events: ['pre-finish', 'post-finish'], retries: 0 })
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, hooks.options({ dir }))
    hooks.attach(app.tus, app.log)
  })
  const created = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '3' })
  const tus = await send(new URL(created.headers.location!, server.origin).href, 'PATCH', { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, 'abc')
  t.equal(tus.status, 500)
  const draft = await send(server.endpoint, 'POST', { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }, 'abc')
  t.equal(draft.status, 500)
  await hooks.idle()
  t.same(types, ['pre-finish', 'pre-finish'], 'no post-finish for what pre-finish refused')
})

t.test('credentials in the hook URL go as Basic authentication; an HTTPResponse no response can carry fails the hook (500), in both protocols', async (t) => {
  const authorizations: Array<string | undefined> = []
  let answer: unknown = {}
  const receiving = createServer((request, response) => {
    authorizations.push(request.headers.authorization)
    request.resume().on('end', () => { response.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(answer)) })
  })
  receiving.listen(0, '127.0.0.1')
  await once(receiving, 'listening')
  t.teardown(() => { receiving.close() })
  const logs: string[] = []
  const hooks = tusdHttpHooks({ url: `http://hooks:s%40cret@127.0.0.1:${(receiving.address() as AddressInfo).port}/`, events: ['pre-create'], retries: 0 })
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, hooks.options({ dir }))
    hooks.attach(app.tus, app.log)
  }, { logger: { level: 'error', stream: { write: (line: string) => { logs.push(line) } } } })
  const create = async (protocol: 'tus' | 'draft'): Promise<HttpAnswer> => protocol === 'tus'
    ? await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '3' })
    : await send(server.endpoint, 'POST', { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }, 'abc')
  t.equal((await create('tus')).status, 201)
  t.same(authorizations, [`Basic ${Buffer.from('hooks:s@cret').toString('base64')}`], 'the URL\'s user and password, decoded')
  for (const [what, refusal] of [
    ['a header value with a line break', { RejectUpload: true, HTTPResponse: { StatusCode: 403, Header: { 'X-A': 'a\r\nSet-Cookie: b=c' } } }],
    ['a header name that is no token', { RejectUpload: true, HTTPResponse: { StatusCode: 403, Header: { 'Bad Name': 'x' } } }],
    ['a Body that is no string', { RejectUpload: true, HTTPResponse: { StatusCode: 403, Body: { a: 1 } } }],
    ['a StatusCode that is no number', { RejectUpload: true, HTTPResponse: { StatusCode: '403' } }]
  ] as const) {
    answer = refusal
    for (const protocol of ['tus', 'draft'] as const) {
      const refused = await create(protocol)
      t.equal(refused.status, 500, `${protocol}: ${what}`)
      t.equal(refused.body, 'onUploadCreate failed')
      t.equal(refused.headers['set-cookie'], undefined)
    }
  }
  t.ok(logs.some((line) => line.includes('an HTTPResponse that cannot be sent')))
  t.notOk(logs.some((line) => line.includes('s%40cret') || line.includes('s@cret')), 'the password is never logged')
  // A refusal's status is the receiver's from 400 to 599, as tusd passes it on (a 503 with Retry-After: "come back
  // later"); a refusal cannot be a success or a redirect: 400.
  for (const [status, expected] of [[503, 503], [200, 400], [302, 400]] as const) {
    answer = { RejectUpload: true, HTTPResponse: { StatusCode: status, Header: { 'Retry-After': '30' } } }
    for (const protocol of ['tus', 'draft'] as const) {
      const refused = await create(protocol)
      t.equal(refused.status, expected, `${protocol}: a refusal with StatusCode ${status}`)
      t.equal(refused.headers['retry-after'], '30')
    }
  }
})

t.test('post-receive tells offsets that moved, the last one too, as tusd does; in both protocols', async (t) => {
  const seen: string[] = []
  const receiverUrl = await answering(t, (hook) => {
    seen.push(`${hook.Type} ${hook.Event.Upload.Offset}`)
    return { status: 200, body: '{}' }
  })
  const hooks = tusdHttpHooks({ url: receiverUrl, events: ['post-receive', 'post-finish'] })
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, hooks.options({ dir }))
    hooks.attach(app.tus, app.log)
  })
  const tus = { 'Tus-Resumable': '1.0.0' }
  const created = await send(server.endpoint, 'POST', { ...tus, 'Upload-Length': '10' })
  const url = new URL(created.headers.location!, server.origin).href
  const append = { ...tus, 'Content-Type': 'application/offset+octet-stream' }
  t.equal((await send(url, 'PATCH', { ...append, 'Upload-Offset': '0' }, 'abc')).status, 204)
  await hooks.idle()
  t.same(seen, ['post-receive 3'], 'an unfinished PATCH: where its bytes took the upload, not where it started')
  t.equal((await send(url, 'PATCH', { ...append, 'Upload-Offset': '3' }, 'defghij')).status, 204)
  await hooks.idle()
  t.same(seen.slice(1), ['post-receive 10', 'post-finish 10'], 'the completing PATCH: its last offset, then post-finish')
  const draft = await send(server.endpoint, 'POST', { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }, 'abcde')
  t.equal(draft.status, 201)
  await hooks.idle()
  t.same(seen.slice(3), ['post-receive 5', 'post-finish 5'], 'the draft: the same')
})

t.test('a receiver that recovers within the retries answers the hook', async (t) => {
  let tries = 0
  const flaky = createServer((_request, response) => {
    tries++
    if (tries < 3) {
      response.writeHead(500).end('busy')
      return
    }
    response.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ RejectUpload: true, HTTPResponse: { StatusCode: 429, Body: 'slow down' } }))
  })
  flaky.listen(0, '127.0.0.1')
  await once(flaky, 'listening')
  t.teardown(() => { flaky.close() })
  const hooks = tusdHttpHooks({ url: `http://127.0.0.1:${(flaky.address() as AddressInfo).port}/`, events: ['pre-create'], backoffMs: 0 })
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, hooks.options({ dir }))
  })
  const refused = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' })
  t.equal(refused.status, 429)
  t.equal(refused.body, 'slow down')
  t.equal(refused.headers['content-type'], 'text/plain; charset=utf-8', 'no Content-Type from the receiver: plain text')
  t.equal(tries, 3, 'two 500s retried (3 retries by default)')
})

t.test('the CLI: --hooks-http refuses and renames creations through the receiver', async (t) => {
  const hooksReceiver = await receiver(t, 'cli')
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-hooks-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const cli = startProcess(t, process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'lib', 'cli.ts'),
    '--dir', dir, '--port', '0', '--log-level', 'silent', '--hooks-http', hooksReceiver.url, '--hooks-enabled-events', 'pre-create,post-create',
    '--hooks-http-forward-headers', 'Authorization'])
  const [, endpoint = ''] = await waitForOutput(cli, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/files\/)/)
  const refused = await send(endpoint, 'POST', {
    'Tus-Resumable': '1.0.0', 'Upload-Length': '3', 'Upload-Metadata': `filename ${b64('setup.exe')}`, Authorization: 'Bearer alice'
  })
  t.equal(refused.status, 403)
  t.equal(refused.headers['x-hook'], 'refused')
  t.equal(refused.headers['content-type'], 'application/json')
  t.equal(refused.body, '{"message":"no executables"}')
  t.same(hooksReceiver.forwarded, ['Bearer alice'], 'the client\'s Authorization forwarded to the receiver')
  const renamed = await send(endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '3', 'Upload-Metadata': `filename ${b64('draft.txt')}` })
  t.equal(renamed.status, 201)
  t.match(String(renamed.headers.location), /\/files\/renamed-cli$/)
  t.same((await hooksReceiver.waitFor('post-create', 'renamed-cli')).Event.Upload.Storage,
    { Type: 'filestore', Path: join(dir, 'renamed-cli'), InfoPath: join(dir, 'renamed-cli.json') })
  t.same(hooksReceiver.received.map((hook) => hook.Type).sort(), ['post-create', 'pre-create', 'pre-create'], 'only the enabled hooks')
})

/**
 * A receiver that is down (503 to every hook but a pre-create of `filename: pass`), counting its hook requests and
 * resolving `reached(n)` once it has had n of them.
 */
async function downReceiver (t: { teardown: (fn: () => unknown) => void }): Promise<{ url: string, types: string[], reached: (count: number) => Promise<void> }> {
  const types: string[] = []
  const waiting: Array<{ count: number, resolve: () => void }> = []
  const url = await answering(t, (hook) => {
    types.push(hook.Type)
    for (const waiter of waiting.filter((waiter) => types.length >= waiter.count)) waiter.resolve()
    return hook.Type === 'pre-create' && hook.Event.Upload.MetaData.filename === 'pass' ? { status: 200, body: '{}' } : { status: 503, body: 'down' }
  })
  return {
    url,
    types,
    reached: async (count) => { await new Promise<void>((resolve) => { waiting.push({ count, resolve }); if (types.length >= count) resolve() }) }
  }
}

t.test('a closing server stops retrying its hooks: a receiver that is down does not hold the shutdown (both protocols)', async (t) => {
  const down = await downReceiver(t)
  const logs: string[] = []
  // Retries a day apart: a shutdown that waited for one would never end within the test's time.
  const hooks = tusdHttpHooks({ url: down.url, events: ['pre-create', 'post-create'], backoffMs: 24 * 60 * 60 * 1000 })
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, hooks.options({ dir }))
    hooks.attach(app.tus, app.log)
    app.addHook('onClose', async () => { await hooks.idle() })
    app.addHook('preClose', async () => { hooks.stopRetrying() })
  }, { logger: { level: 'error', stream: { write: (line: string) => { logs.push(line) } } } })
  const created = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1', 'Upload-Metadata': `filename ${b64('pass')}` })
  t.equal(created.status, 201, 'its post-create now waits to be retried')
  const tus = send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' })
  const draft = send(server.endpoint, 'POST', { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0', 'Content-Length': '0' })
  await down.reached(4)
  await server.app.close()
  for (const [name, refused] of [['tus', await tus], ['draft', await draft]] as const) {
    t.equal(refused.status, 500, `${name}: the creation waiting for its pre-create's retry fails at once`)
    t.equal(refused.body, 'onUploadCreate failed')
  }
  t.same(down.types.sort(), ['post-create', 'pre-create', 'pre-create', 'pre-create'], 'no hook request retried')
  // A hook request still on its way when the server began closing ends with the receiver's answer, not retried either.
  const gaveUp = logs.filter((line) => /the (pre|post)-create hook (failed and the server is closing: not retried|answered 503)/.test(line))
  t.equal(gaveUp.length, 3, 'each hook that gave up is logged')
})

t.test('the CLI stops retrying its hooks on SIGTERM: a receiver that is down does not hold the shutdown', async (t) => {
  const down = await downReceiver(t)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-hooks-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const cli = startProcess(t, process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'lib', 'cli.ts'),
    '--dir', dir, '--port', '0', '--log-level', 'silent', '--hooks-http', down.url, '--hooks-http-backoff', '86400'])
  const [, endpoint = ''] = await waitForOutput(cli, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/files\/)/)
  t.equal((await send(endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1', 'Upload-Metadata': `filename ${b64('pass')}` })).status, 201)
  const waiting = send(endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' })
  await down.reached(3)
  cli.child.kill('SIGTERM')
  t.equal((await waiting).status, 500, 'the creation waiting for its pre-create\'s retry fails at once')
  t.same(await cli.exited, { code: 0, signal: null }, 'the server exits without waiting for the retries')
  t.same(down.types.sort(), ['post-create', 'pre-create', 'pre-create'], 'no hook request retried')
})

t.test('the CLI refuses a bad hook URL or hook name with exit code 2', async (t) => {
  const cliPath = join(import.meta.dirname, '..', 'lib', 'cli.ts')
  for (const [args, message] of [
    [['--hooks-http', 'localhost:8081'], /--hooks-http must be an http:\/\/ or https:\/\/ URL/],
    [['--hooks-http', 'http://127.0.0.1:9/', '--hooks-enabled-events', 'pre-create,pre-upload'], /"pre-upload" is not a hook/],
    [['--hooks-http', 'http://127.0.0.1:9/', '--hooks-http-retry', 'many'], /--hooks-http-retry must be a whole number/],
    [['--hooks-http', 'http://127.0.0.1:9/', '--hooks-http-backoff', '1s'], /--hooks-http-backoff must be a whole number of seconds/],
    // Tuning flags without the hooks they tune would be ignored: refused, as --health-file without --health-path.
    [['--hooks-http-retry', '5'], /--hooks-http-retry needs --hooks-http/],
    [['--hooks-http-backoff', '2'], /--hooks-http-backoff needs --hooks-http/],
    [['--hooks-dir', '.', '--hooks-http-forward-headers', 'Authorization'], /--hooks-http-forward-headers needs --hooks-http/],
    [['--hooks-enabled-events', 'pre-create'], /--hooks-enabled-events needs --hooks-http or --hooks-dir/]
  ] as const) {
    const running = startProcess(t, process.execPath, ['--import', 'tsx', cliPath, ...args])
    const exit = await running.exited
    t.equal(exit.code, 2)
    t.match(running.stderr(), message)
  }
})

t.test('in-process: forwarded headers, an unreachable receiver for a non-blocking hook, an answer that is no JSON object', async (t) => {
  const hooksReceiver = await receiver(t, 'fwd')
  const forwarding = tusdHttpHooks({ url: hooksReceiver.url, events: ['pre-create'], forwardHeaders: ['authorization', 'Cookie'] })
  const first = await startServer(t, {}, async (app, dir) => { await app.register(tusPlugin, forwarding.options({ dir })) })
  t.equal((await send(first.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1', Authorization: 'Bearer bob' })).status, 201)
  t.same(hooksReceiver.forwarded, ['Bearer bob'], 'forwarded under the name given')

  // A port nobody listens on: post-create fails after its retries, and only the log says so.
  const closed = createServer()
  closed.listen(0, '127.0.0.1')
  await once(closed, 'listening')
  const port = (closed.address() as AddressInfo).port
  closed.close()
  await once(closed, 'close')
  const logs: string[] = []
  const unreachable = tusdHttpHooks({ url: `http://127.0.0.1:${port}/`, events: ['post-create'], retries: 1, backoffMs: 0 })
  const second = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, unreachable.options({ dir }))
    unreachable.attach(app.tus, app.log)
  }, { logger: { level: 'error', stream: { write: (line: string) => { logs.push(line) } } } })
  t.equal((await send(second.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' })).status, 201, 'a non-blocking hook never fails the request')
  await unreachable.idle()
  t.ok(logs.some((line) => line.includes('a tusd hook failed') && line.includes('post-create')))

  // A 2xx answer that is a JSON array: the blocking hook fails.
  const arrays = createServer((_request, response) => { response.writeHead(200, { 'Content-Type': 'application/json' }).end('[1]') })
  arrays.listen(0, '127.0.0.1')
  await once(arrays, 'listening')
  t.teardown(() => { arrays.close() })
  const odd = tusdHttpHooks({ url: `http://127.0.0.1:${(arrays.address() as AddressInfo).port}/`, events: ['pre-create'] })
  const third = await startServer(t, {}, async (app, dir) => { await app.register(tusPlugin, odd.options({ dir })) })
  const refused = await send(third.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' })
  t.equal(refused.status, 500)
  t.equal(refused.body, 'onUploadCreate failed')
})
