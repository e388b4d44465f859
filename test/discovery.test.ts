import t from 'tap'
import { readdir } from 'node:fs/promises'
import Fastify from 'fastify'
import tusPlugin from '../lib/index.js'
import { createUpload, rawRequest, startServer, tusRequest } from './helpers.js'

t.test('OPTIONS announces version, extensions and max size, and ignores Tus-Resumable', async (t) => {
  const server = await startServer(t, { maxSize: 1234 })
  for (const headers of [{}, { 'Tus-Resumable': '0.0.1' }, { 'Tus-Resumable': '1.0.0' }] as Array<Record<string, string>>) {
    const response = await rawRequest(server.endpoint, { method: 'OPTIONS', headers })
    t.equal(response.status, 204)
    t.equal(response.headers['tus-version'], '1.0.0')
    t.equal(response.headers['tus-max-size'], '1234')
    const extensions = response.headers['tus-extension']!.split(',')
    for (const name of ['creation', 'creation-with-upload', 'creation-defer-length', 'termination', 'expiration']) {
      t.ok(extensions.includes(name), `announces ${name}`)
    }
  }
})

t.test('daysToKeep: Infinity drops the expiration extension and Upload-Expires', async (t) => {
  const server = await startServer(t, { daysToKeep: Infinity })
  const options = await rawRequest(server.endpoint, { method: 'OPTIONS' })
  t.notOk(options.headers['tus-extension']!.split(',').includes('expiration'))
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '1' } })
  t.equal(created.status, 201)
  t.equal(created.headers['upload-expires'], undefined)
})

t.test('every tus request (not OPTIONS, not a GET download) without a supported Tus-Resumable gets 412 with Tus-Version, and nothing happens', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '5' })
  const cases: Array<[string, string, Record<string, string>]> = [
    ['POST', server.endpoint, { 'Upload-Length': '5' }],
    ['HEAD', url, {}],
    ['PATCH', url, { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }],
    ['DELETE', url, {}]
  ]
  for (const [method, target, headers] of cases) {
    for (const version of [undefined, '0.2.2', '1.0.1']) {
      const response = await rawRequest(target, {
        method,
        headers: version === undefined ? headers : { ...headers, 'Tus-Resumable': version },
        ...(method === 'PATCH' ? { body: 'hello' } : {})
      })
      t.equal(response.status, 412, `${method} with Tus-Resumable ${String(version)}`)
      t.equal(response.headers['tus-version'], '1.0.0')
      t.equal(response.headers['tus-resumable'], '1.0.0')
      if (method !== 'HEAD') t.match(response.text, /Tus-Resumable/)
    }
  }
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '0', 'the refused PATCH wrote nothing')
  const files = await readdir(server.dir)
  t.equal(files.filter((name) => name.endsWith('.json')).length, 1, 'the refused POST created nothing')
})

t.test('a GET download needs no Tus-Resumable, as a browser following a link sends none', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '5' })
  const unfinished = await rawRequest(url)
  t.equal(unfinished.status, 409, 'an unfinished upload is still refused, with the protocol error')
  const patched = await tusRequest(url, {
    method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: 'hello'
  })
  t.equal(patched.status, 204)
  const download = await rawRequest(url)
  t.equal(download.status, 200)
  t.equal(download.text, 'hello')
  t.equal(download.headers['tus-resumable'], '1.0.0')
  t.equal((await rawRequest(`${server.endpoint}unknown`)).status, 404)
})

t.test('unknown paths under the prefix answer 404 with Tus-Resumable', async (t) => {
  const server = await startServer(t)
  const response = await tusRequest(`${server.endpoint}a/b`, { method: 'HEAD' })
  t.equal(response.status, 404)
  t.equal(response.headers['tus-resumable'], '1.0.0')
})

t.test('options are validated once at register time with clear errors', async (t) => {
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ maxSize: -1 }, /maxSize must be a positive integer/],
    [{ maxSize: 1.5 }, /maxSize/],
    [{ daysToKeep: 0 }, /daysToKeep/],
    [{ daysToKeep: 'x' }, /daysToKeep/],
    [{ prefix: 'files' }, /prefix must be a path/],
    [{ dir: '' }, /dir must be a non-empty string/],
    [{ auth: 'yes' }, /auth must be a function/],
    [{ onUploadComplete: 1 }, /onUploadComplete must be a function/],
    [{ relativeLocation: 'no' }, /relativeLocation must be a boolean/],
    [{ lockTimeout: 0 }, /lockTimeout/],
    [{ maxMetadataSize: -5 }, /maxMetadataSize/]
  ]
  for (const [options, message] of bad) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(tusPlugin, options as never).ready() }, { code: 'FST_TUS_INVALID_OPTION', message }, JSON.stringify(options))
    await app.close()
  }
})

t.test('works inside an encapsulated context with an outer register prefix', async (t) => {
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(async (api) => {
      api.get('/health', async () => ({ ok: true }))
      await api.register(tusPlugin, { prefix: '/uploads', dir })
      t.type(api.tus.removeExpired, 'function', 'app.tus is decorated in the registering context')
    }, { prefix: '/api' })
  })
  const created = await tusRequest(`${server.origin}/api/uploads`, { method: 'POST', headers: { 'Upload-Length': '3' } })
  t.equal(created.status, 201)
  t.match(created.headers.location, new RegExp(`^${server.origin}/api/uploads/[A-Za-z0-9_-]{21}$`))
  const patched = await tusRequest(created.headers.location!, {
    method: 'PATCH',
    headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
    body: 'abc'
  })
  t.equal(patched.status, 204)
  // The tus context's catch-all body parser does not leak into the rest of the app.
  const json = await rawRequest(`${server.origin}/api/health`)
  t.same(JSON.parse(json.text), { ok: true })
})

t.test('the app keeps its own JSON body parsing next to the plugin', async (t) => {
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, { dir })
    app.post('/echo', async (request) => request.body)
  })
  const response = await rawRequest(`${server.origin}/echo`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ a: 1 })
  })
  t.same(JSON.parse(response.text), { a: 1 })
})
