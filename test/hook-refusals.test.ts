// Every hook that may refuse a request honours a thrown status the same way, through one rule in the core
// (lib/core/lifecycle.ts hookError), in tus 1.0.0 and the draft: an Error or a plain object whose `statusCode` is an
// integer from 400 to 599 is answered with it (its message, or the status's reason phrase when it has none, and its
// headers); a value without one (a string status, 401.5, a 302, null) is the hook's failure, 500 naming the hook.
// Before, `onUploadCreate` (and every lifecycle hook) answered a thrown `{ statusCode: 401 }` 500 where `auth`
// honoured it, and `auth` honoured `statusCode: '401'` or 401.5 where the other hooks answered 500.
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { TusErrors } from '../lib/index.js'
import { createUpload, idOf, sha256, startServer, tusRequest, type RawResponse } from './helpers.js'

type Hook = 'auth' | 'maxSize' | 'onUploadCreate' | 'onUploadAccess' | 'onUploadProgress' | 'onUploadTerminate'

interface Shape {
  name: string
  make: () => unknown
  status: number
  text: (hook: Hook) => string
  retryAfter?: string
  /** Headers of the thrown refusal's that its answer carries (a value) or leaves out (undefined). */
  headers?: Record<string, string | undefined>
}

const SHAPES: Shape[] = [
  { name: 'a plain object with statusCode 401', make: () => ({ statusCode: 401, message: 'Who are you?' }), status: 401, text: () => 'Who are you?' },
  { name: 'an Error with statusCode 403', make: () => Object.assign(new Error('Not yours'), { statusCode: 403 }), status: 403, text: () => 'Not yours' },
  { name: 'an Error with statusCode 403 and no message', make: () => Object.assign(new Error(), { statusCode: 403 }), status: 403, text: () => 'Forbidden' },
  {
    name: 'a plain object with statusCode 429 and headers',
    make: () => ({ statusCode: 429, message: 'Slow down', headers: { 'Retry-After': '7' } }),
    status: 429,
    text: () => 'Slow down',
    retryAfter: '7'
  },
  {
    // As a hook that rethrows an upstream server's error, headers and all: the protocol's own and malformed ones are
    // left out (a Content-Length beside Transfer-Encoding: chunked is a response proxies read two ways).
    name: 'an Error with statusCode 403 and headers its answer may not carry',
    make: () => Object.assign(new Error('Not yours'), {
      statusCode: 403,
      headers: {
        'Transfer-Encoding': 'chunked',
        'Content-Length': '1',
        Connection: 'close',
        'Upload-Offset': '999999',
        'Tus-Resumable': '0.2.2',
        'X-Crlf': 'a\r\nb',
        'Bad Name': 'x',
        'X-Object': { a: 1 },
        'Retry-After': 7,
        'X-Kept': 'yes'
      }
    }),
    status: 403,
    text: () => 'Not yours',
    retryAfter: '7',
    headers: { 'transfer-encoding': undefined, 'x-crlf': undefined, 'x-object': undefined, 'x-kept': 'yes' }
  },
  { name: 'an Error with statusCode 403 and headers: null', make: () => Object.assign(new Error('Not yours'), { statusCode: 403, headers: null }), status: 403, text: () => 'Not yours' },
  { name: 'an Error with statusCode "401" (a string)', make: () => Object.assign(new Error('x'), { statusCode: '401' }), status: 500, text: (hook) => `${hook} failed` },
  { name: 'an Error with statusCode 401.5', make: () => Object.assign(new Error('x'), { statusCode: 401.5 }), status: 500, text: (hook) => `${hook} failed` },
  { name: 'an Error with statusCode 302', make: () => Object.assign(new Error('x'), { statusCode: 302 }), status: 500, text: (hook) => `${hook} failed` },
  { name: 'a plain object with statusCode 600', make: () => ({ statusCode: 600, message: 'x' }), status: 500, text: (hook) => `${hook} failed` },
  { name: 'null', make: () => null, status: 500, text: (hook) => `${hook} failed` }
]

const TUS = {}
const DRAFT = { 'Upload-Draft-Interop-Version': '6' }

t.test('a thrown status is honoured alike by every hook, in tus and the draft; stored bytes stay', async (t) => {
  let refusing: { hook: Hook, make: () => unknown } | undefined
  const refuse = (hook: Hook): void => {
    if (refusing?.hook === hook) throw refusing.make()
  }
  const server = await startServer(t, {
    auth: () => { refuse('auth') },
    maxSize: () => { refuse('maxSize'); return 1000 },
    onUploadCreate: () => { refuse('onUploadCreate') },
    onUploadAccess: () => { refuse('onUploadAccess') },
    onUploadProgress: () => { refuse('onUploadProgress') },
    onUploadTerminate: () => { refuse('onUploadTerminate') }
  })
  // One upload of 10 bytes with 5 stored, which every refused request leaves as it is.
  const url = await createUpload(server, { 'Upload-Length': '10' })
  const append = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: 'hello' })
  t.equal(append.status, 204)
  const stored = sha256('hello')

  const create = async (protocol: Record<string, string>): Promise<RawResponse> => await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { ...protocol, ...(protocol === DRAFT ? { 'Upload-Complete': '?0' } : {}), 'Upload-Length': '3', 'Content-Length': '0' }
  })
  const requests: Record<Hook, (protocol: Record<string, string>) => Promise<RawResponse>> = {
    auth: create,
    maxSize: create,
    onUploadCreate: create,
    onUploadAccess: async (protocol) => await tusRequest(url, { method: 'HEAD', headers: protocol }),
    onUploadProgress: async (protocol) => await tusRequest(url, {
      method: 'PATCH',
      headers: protocol === DRAFT
        ? { ...protocol, 'Upload-Offset': '5', 'Upload-Complete': '?0', 'Content-Type': 'application/partial-upload' }
        : { 'Upload-Offset': '5', 'Content-Type': 'application/offset+octet-stream' },
      body: 'world'
    }),
    onUploadTerminate: async (protocol) => await tusRequest(url, { method: 'DELETE', headers: protocol })
  }
  for (const [hook, request] of Object.entries(requests) as Array<[Hook, typeof requests[Hook]]>) {
    for (const shape of SHAPES) {
      for (const [protocol, headers] of [['tus', TUS], ['draft', DRAFT]] as const) {
        refusing = { hook, make: shape.make }
        const response = await request(headers)
        refusing = undefined
        const what = `${hook}, ${shape.name}, ${protocol}`
        t.equal(response.status, shape.status, `${what}: status`)
        // (A HEAD, onUploadAccess's request here, has no body.)
        if (hook === 'onUploadAccess') t.equal(response.text, '', `${what}: no body`)
        else if (response.headers['content-type']?.startsWith('text/plain') === true) t.equal(response.text, shape.text(hook), `${what}: body`)
        else t.match(JSON.parse(response.text) as unknown, { detail: shape.text(hook) }, `${what}: problem detail`)
        if (shape.retryAfter !== undefined) t.equal(response.headers['retry-after'], shape.retryAfter, `${what}: the hook's header`)
        for (const [name, value] of Object.entries(shape.headers ?? {})) t.equal(response.headers[name], value, `${what}: ${name}`)
        if (shape.headers !== undefined) {
          t.not(response.headers['upload-offset'], '999999', `${what}: no Upload-Offset but the upload's`)
          t.not(response.headers['tus-resumable'], '0.2.2', `${what}: no Tus-Resumable but the server's`)
          if (hook !== 'onUploadAccess') t.equal(response.headers['content-length'], String(response.body.length), `${what}: Content-Length is the body's`)
        }
      }
    }
  }
  t.equal(sha256(await readFile(join(server.dir, idOf(url)))), stored, 'the upload\'s bytes are those stored before the refusals')
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '5', 'and its offset')
})

t.test('a refusal of a concatenation reference by onUploadAccess, whatever its shape, is the 400 of an unusable reference', async (t) => {
  let refusing: (() => unknown) | undefined
  const server = await startServer(t, {
    onUploadAccess: (_upload, action) => { if (action === 'concatenate' && refusing !== undefined) throw refusing() }
  })
  const partial = await createUpload(server, { 'Upload-Length': '2', 'Upload-Concat': 'partial' })
  t.equal((await tusRequest(partial, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: 'ab' })).status, 204)
  for (const shape of SHAPES) {
    refusing = shape.make
    const final = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${new URL(partial).pathname}` } })
    t.equal(final.status, shape.status < 500 ? 400 : 500, `${shape.name}: status`)
    t.equal(final.text, shape.status < 500 ? `Invalid Upload-Concat: "${idOf(partial)}" is not a usable partial upload of this endpoint` : 'onUploadAccess failed', `${shape.name}: body`)
  }
  t.equal(await readFile(join(server.dir, idOf(partial)), 'utf8'), 'ab', 'the partial is untouched')
})

t.test('a refusing hook written as a predicate that returns false fails closed (500 saying how to refuse), in tus and the draft', async (t) => {
  // Before, its false refused nothing: every request without credentials, and every user on every upload, was let in.
  const owner = Buffer.from('alice').toString('base64')
  const server = await startServer(t, {
    auth: (request) => (request.headers.authorization === 'Bearer ok') as unknown as undefined,
    onUploadAccess: (upload, _action, request) => (upload.metadata.owner === request.headers['x-user']) as unknown as undefined,
    onUploadTerminate: () => false as unknown as undefined,
    onUploadProgress: (_upload, request) => (request.headers['x-stop'] === undefined) as unknown as undefined
  })
  const alice = { Authorization: 'Bearer ok', 'X-User': 'alice' }
  const url = await createUpload(server, { ...alice, 'Upload-Length': '10', 'Upload-Metadata': `owner ${owner}` })
  const first = await tusRequest(url, { method: 'PATCH', headers: { ...alice, 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: 'hello' })
  t.equal(first.status, 204, 'the owner appends (the progress hook returned true)')
  const refusal = (hook: string): string => `${hook} failed: it returned false, which refuses nothing: throw to refuse (an error with a statusCode, e.g. 403)`
  for (const [protocol, headers] of [['tus', TUS], ['draft', DRAFT]] as const) {
    const draft = protocol === 'draft'
    const anonymous = await tusRequest(server.endpoint, { method: 'POST', headers: { ...headers, ...(draft ? { 'Upload-Complete': '?0' } : {}), 'Upload-Length': '3', 'Content-Length': '0' } })
    t.equal(anonymous.status, 500, `${protocol}: auth's false refuses a request without credentials`)
    t.match(anonymous.text, refusal('auth'), `${protocol}: auth's false, said`)
    const mallory = await tusRequest(url, { method: 'HEAD', headers: { ...headers, Authorization: 'Bearer ok', 'X-User': 'mallory' } })
    t.equal(mallory.status, 500, `${protocol}: onUploadAccess's false refuses another user`)
    const deleted = await tusRequest(url, { method: 'DELETE', headers: { ...headers, ...alice } })
    t.equal(deleted.status, 500, `${protocol}: onUploadTerminate's false refuses the termination`)
    t.match(deleted.text, refusal('onUploadTerminate'), `${protocol}: onUploadTerminate's false, said`)
    const more = await tusRequest(url, {
      method: 'PATCH',
      headers: draft
        ? { ...headers, ...alice, 'X-Stop': '1', 'Upload-Offset': '5', 'Upload-Complete': '?0', 'Content-Type': 'application/partial-upload' }
        : { ...alice, 'X-Stop': '1', 'Upload-Offset': '5', 'Content-Type': 'application/offset+octet-stream' },
      body: 'world'
    })
    t.equal(more.status, 500, `${protocol}: onUploadProgress's false stops the append`)
    t.match(more.text, refusal('onUploadProgress'), `${protocol}: onUploadProgress's false, said`)
  }
  t.equal(await readFile(join(server.dir, idOf(url)), 'utf8'), 'hello', 'the upload holds what its owner stored, nothing more')
})

t.test('a refusing hook that returns anything but nothing or true fails closed (500 saying how to refuse), in tus and the draft', async (t) => {
  // Before, only false did: an error returned instead of thrown, or null for "no user", let every request in.
  const returns: Record<string, () => unknown> = {
    'an error': () => new TusErrors.NOT_FOUND(),
    null: () => null,
    'a value of type object': () => ({ statusCode: 403 }),
    'a value of type string': () => 'no',
    'a value of type number': () => 0
  }
  const returned = (request: { headers: Record<string, unknown> }, hook: string): undefined => {
    const make = request.headers['x-refuse'] === hook ? returns[String(request.headers['x-return'])] : undefined
    return make?.() as undefined
  }
  const server = await startServer(t, {
    auth: (request, reply) => request.headers['x-refuse'] === 'reply' ? reply.code(401).send('Who are you?') as unknown as undefined : returned(request, 'auth'),
    onUploadAccess: (_upload, _action, request) => returned(request, 'onUploadAccess'),
    onUploadTerminate: (_upload, request) => returned(request, 'onUploadTerminate'),
    onUploadProgress: (_upload, request) => returned(request, 'onUploadProgress')
  })
  const url = await createUpload(server, { 'Upload-Length': '10' })
  const replied = await tusRequest(url, { method: 'GET', headers: { 'X-Refuse': 'reply' } })
  t.equal(replied.status, 401, 'auth may return the reply it sent (Fastify\'s `return reply.send()`)')
  t.equal(replied.text, 'Who are you?')
  for (const [protocol, headers] of [['tus', TUS], ['draft', DRAFT]] as const) {
    const draft = protocol === 'draft'
    for (const what of Object.keys(returns)) {
      const refusal = (hook: string): string => `${hook} failed: it returned ${what}, which refuses nothing: return nothing to let the request in, throw to refuse`
      const asked = (hook: string): Record<string, string> => ({ ...headers, 'X-Refuse': hook, 'X-Return': what })
      const anonymous = await tusRequest(server.endpoint, { method: 'POST', headers: { ...asked('auth'), ...(draft ? { 'Upload-Complete': '?0' } : {}), 'Upload-Length': '3', 'Content-Length': '0' } })
      t.equal(anonymous.status, 500, `${protocol}, auth returned ${what}`)
      t.match(anonymous.text, refusal('auth'))
      const head = await tusRequest(url, { method: 'HEAD', headers: asked('onUploadAccess') })
      t.equal(head.status, 500, `${protocol}, onUploadAccess returned ${what}`)
      const download = await tusRequest(url, { method: 'GET', headers: asked('onUploadAccess') })
      t.match(download.text, refusal('onUploadAccess'))
      const deleted = await tusRequest(url, { method: 'DELETE', headers: asked('onUploadTerminate') })
      t.equal(deleted.status, 500, `${protocol}, onUploadTerminate returned ${what}`)
      t.match(deleted.text, refusal('onUploadTerminate'))
      const more = await tusRequest(url, {
        method: 'PATCH',
        headers: draft
          ? { ...asked('onUploadProgress'), 'Upload-Offset': '0', 'Upload-Complete': '?0', 'Content-Type': 'application/partial-upload' }
          : { ...asked('onUploadProgress'), 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
        body: 'hello'
      })
      t.equal(more.status, 500, `${protocol}, onUploadProgress returned ${what}`)
      t.match(more.text, refusal('onUploadProgress'))
    }
  }
  t.equal(await readFile(join(server.dir, idOf(url)), 'utf8'), '', 'nothing stored by the refused appends')
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 200, 'the upload stands')
})
