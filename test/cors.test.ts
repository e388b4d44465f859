// The README's CORS recipe, `app.register(cors, tusCorsOptions(origin))`, at the HTTP level: preflights for
// every tus method and header answered before auth, tus headers exposed on answers and errors, and tus
// discovery OPTIONS (with or without Origin) answered by the plugin. test/cors-browser.test.ts does the same
// with a real browser.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import cors from '@fastify/cors'
import t from 'tap'
import tus, { TUS_ALLOWED_HEADERS, TUS_ALLOWED_METHODS, TUS_EXPOSED_HEADERS, TusErrors, tusCorsOptions } from '../lib/index.js'
import { idOf, rawRequest, randomBytesSeeded, sha256, startServer, tusRequest, tusUpload } from './helpers.js'

const ALLOWED = 'http://app.example.test'

async function recipeServer (t: { teardown: (fn: () => unknown) => void }, origin: Parameters<typeof tusCorsOptions>[0] = [ALLOWED]) {
  const authCalls: string[] = []
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(cors, tusCorsOptions(origin))
    await app.register(tus, {
      dir,
      auth: async (request) => {
        authCalls.push(request.method)
        if (request.headers.authorization !== 'Bearer ok') throw new TusErrors.NOT_FOUND()
      }
    })
    app.get('/api/hello', async () => ({ hello: 'world' }))
  })
  return { ...server, authCalls }
}

t.test('a preflight for each tus method is answered 204 with the methods and headers tus clients send, before auth', async (t) => {
  const server = await recipeServer(t)
  for (const method of ['POST', 'HEAD', 'PATCH', 'DELETE', 'GET']) {
    const preflight = await rawRequest(`${server.endpoint}some-id`, {
      method: 'OPTIONS',
      headers: {
        Origin: ALLOWED,
        'Access-Control-Request-Method': method,
        'Access-Control-Request-Headers': 'authorization,content-type,tus-resumable,upload-length,upload-metadata,upload-offset,x-request-id'
      }
    })
    t.equal(preflight.status, 204, `${method} preflight: 204`)
    t.equal(preflight.headers['access-control-allow-origin'], ALLOWED)
    const methods = (preflight.headers['access-control-allow-methods'] ?? '').split(/\s*,\s*/)
    t.ok(methods.includes(method), `${method} is allowed (${preflight.headers['access-control-allow-methods']})`)
    const headers = (preflight.headers['access-control-allow-headers'] ?? '').toLowerCase().split(/\s*,\s*/)
    // x-request-id: tus-js-client's addRequestId.
    for (const header of ['authorization', 'content-type', 'tus-resumable', 'upload-length', 'upload-metadata', 'upload-offset', 'x-request-id']) {
      t.ok(headers.includes(header), `${method} preflight allows ${header}`)
    }
    t.equal(preflight.headers['access-control-max-age'], '86400')
    t.equal(preflight.headers['tus-version'], undefined, 'answered by @fastify/cors, not by the tus route')
    t.equal(preflight.body.length, 0)
  }
  t.same(server.authCalls, [], 'auth never ran for a preflight (a browser sends no Authorization with it)')
  t.same([...TUS_ALLOWED_METHODS].sort(), ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST'])
  t.ok(TUS_ALLOWED_HEADERS.includes('Upload-Checksum') && TUS_ALLOWED_HEADERS.includes('Upload-Draft-Interop-Version'))
})

t.test('tus discovery OPTIONS is answered by the plugin, with or without Origin', async (t) => {
  const server = await recipeServer(t)
  const plain = await rawRequest(server.endpoint, { method: 'OPTIONS' })
  t.equal(plain.status, 204, 'no Origin: not "400 Invalid Preflight Request"')
  t.equal(plain.headers['tus-version'], '1.0.0')
  t.match(plain.headers['tus-extension'], /\bcreation\b.*\btermination\b/)
  t.ok(Number(plain.headers['tus-max-size']) > 0)
  t.equal(plain.headers['access-control-allow-origin'], undefined, 'no Origin: no CORS answer')

  const withOrigin = await tusRequest(server.endpoint, { method: 'OPTIONS', headers: { Origin: ALLOWED } })
  t.equal(withOrigin.status, 204)
  t.equal(withOrigin.headers['tus-version'], '1.0.0', 'an OPTIONS with Origin but no Access-Control-Request-Method is discovery too')
  t.equal(withOrigin.headers['access-control-allow-origin'], ALLOWED)
  t.same(withOrigin.headers['access-control-expose-headers']?.split(', '), TUS_EXPOSED_HEADERS, 'and its tus headers are readable')

  const draft = await rawRequest(server.endpoint, { method: 'OPTIONS', headers: { 'Upload-Draft-Interop-Version': '6' } })
  t.equal(draft.status, 204)
  t.match(draft.headers['upload-limit'], /max-size=/, 'IETF draft discovery reaches the plugin too')
})

t.test('actual requests and errors carry the CORS answer and expose every tus header; other origins get none', async (t) => {
  const server = await recipeServer(t)
  const bytes = randomBytesSeeded(100_000, 3)
  const url = await tusUpload(bytes, { endpoint: server.endpoint, headers: { Origin: ALLOWED, Authorization: 'Bearer ok' } })
  t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(bytes), 'the bytes on disk match')
  const head = await tusRequest(url, { method: 'HEAD', headers: { Origin: ALLOWED, Authorization: 'Bearer ok' } })
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], String(bytes.length))
  t.equal(head.headers['access-control-allow-origin'], ALLOWED)
  t.same(head.headers['access-control-expose-headers']?.split(', '), TUS_EXPOSED_HEADERS)
  t.match(head.headers.vary, /Origin/, 'caches keep answers per origin')

  const refused = await tusRequest(url, { method: 'HEAD', headers: { Origin: ALLOWED } })
  t.equal(refused.status, 404, 'auth refuses')
  t.equal(refused.headers['access-control-allow-origin'], ALLOWED, 'errors are readable cross-origin')

  const foreign = await rawRequest(url, { method: 'OPTIONS', headers: { Origin: 'http://evil.example.test', 'Access-Control-Request-Method': 'PATCH' } })
  t.equal(foreign.headers['access-control-allow-origin'], undefined, 'an origin not allowed gets no Access-Control-Allow-Origin')

  const api = await rawRequest(`${server.origin}/api/hello`, { headers: { Origin: ALLOWED } })
  t.equal(api.status, 200, 'the app\'s other routes keep working')
  t.equal(api.headers['access-control-allow-origin'], ALLOWED)
  const apiPreflight = await rawRequest(`${server.origin}/api/hello`, { method: 'OPTIONS', headers: { Origin: ALLOWED, 'Access-Control-Request-Method': 'GET' } })
  t.equal(apiPreflight.status, 204, 'preflights for the app\'s other routes are answered too')
})

t.test('options merge over the defaults; "*" answers any origin', async (t) => {
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(cors, tusCorsOptions('*', { allowedHeaders: [...TUS_ALLOWED_HEADERS, 'X-Trace'], maxAge: 60 }))
    await app.register(tus, { dir })
  })
  const preflight = await rawRequest(server.endpoint, {
    method: 'OPTIONS', headers: { Origin: 'http://anywhere.example.test', 'Access-Control-Request-Method': 'POST' }
  })
  t.equal(preflight.status, 204)
  t.equal(preflight.headers['access-control-allow-origin'], '*')
  t.match(preflight.headers['access-control-allow-headers'], /, X-Trace$/)
  t.equal(preflight.headers['access-control-max-age'], '60')
})

t.test('credentials (the README\'s tusCorsOptions(true, { credentials: true })): cookie-authenticated uploads from a page on another origin', async (t) => {
  // A page sending cookies (XHR withCredentials, fetch credentials: 'include') reads an answer only if it names
  // its origin (never "*") and allows credentials: on preflights, discovery, successes and refusals alike.
  const page = 'http://pages.example.test'
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(cors, tusCorsOptions(true, { credentials: true }))
    await app.register(tus, {
      dir,
      auth: async (request) => {
        if (!/(?:^|; )sid=ok(?:;|$)/.test(request.headers.cookie ?? '')) throw Object.assign(new Error('Log in first'), { statusCode: 401 })
      }
    })
  })
  const credentialed = (headers: Record<string, string | undefined>, what: string): void => {
    t.equal(headers['access-control-allow-origin'], page, `${what}: the page's origin, not "*"`)
    t.equal(headers['access-control-allow-credentials'], 'true', `${what}: credentials allowed`)
  }
  const preflight = await rawRequest(`${server.endpoint}some-id`, {
    method: 'OPTIONS', headers: { Origin: page, 'Access-Control-Request-Method': 'PATCH', 'Access-Control-Request-Headers': 'tus-resumable,upload-offset,content-type' }
  })
  t.equal(preflight.status, 204)
  credentialed(preflight.headers, 'preflight')
  const discovery = await rawRequest(server.endpoint, { method: 'OPTIONS', headers: { Origin: page, Cookie: 'sid=ok' } })
  t.equal(discovery.status, 204)
  t.equal(discovery.headers['tus-version'], '1.0.0', 'discovery answered by the plugin')
  credentialed(discovery.headers, 'discovery')
  const refused = await tusRequest(server.endpoint, { method: 'POST', headers: { Origin: page, 'Upload-Length': '10' } })
  t.equal(refused.status, 401, 'no cookie: refused by auth')
  credentialed(refused.headers, 'the refusal (so the page can tell the user to log in)')

  const bytes = randomBytesSeeded(100_000, 21)
  const url = await tusUpload(bytes, { endpoint: server.endpoint, headers: { Origin: page, Cookie: 'sid=ok' } })
  const head = await tusRequest(url, { method: 'HEAD', headers: { Origin: page, Cookie: 'sid=ok' } })
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], String(bytes.length))
  credentialed(head.headers, 'HEAD')
  t.match(head.headers['access-control-expose-headers'], /\bUpload-Offset\b/)
  t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(bytes), 'stored byte-identical')
})

t.test('TUS_EXPOSED_HEADERS is the literal list of the response headers tus and draft clients read', async (t) => {
  // A list compared with itself proves nothing: adding or dropping one is a decision, made here too.
  t.same([...TUS_EXPOSED_HEADERS], [
    'Location', 'Upload-Offset', 'Upload-Length', 'Upload-Metadata', 'Upload-Expires', 'Upload-Defer-Length',
    'Upload-Concat', 'Upload-Complete', 'Upload-Incomplete', 'Upload-Limit', 'Upload-Draft-Interop-Version', 'Accept-Patch',
    'Tus-Resumable', 'Tus-Version', 'Tus-Extension', 'Tus-Max-Size', 'Tus-Checksum-Algorithm'
  ])
})
