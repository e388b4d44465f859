// What the app meets when it registers the plugin: a second registration where `app.tus` is taken is refused with
// what to do (never Fastify's bare decorator error), and what `request.tus` is, inside and outside its context.
import t from 'tap'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import tusPlugin from '../lib/index.js'
import { idOf, sha256, tusRequest } from './helpers.js'

t.test('a second registration in one context, or below one that has the plugin, says how to serve two endpoints', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-registration-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const message = /^fastify-tus: the plugin is already registered in this context or a parent of it \(app\.tus is taken\): to serve several endpoints, register each in a context of its own, with its own prefix and dir/
  const twice = async (app: FastifyInstance): Promise<unknown> => await app.register(tusPlugin, { dir, prefix: '/other' })
  const below = async (app: FastifyInstance): Promise<unknown> => await app.register(async (scope: FastifyInstance) => { await scope.register(tusPlugin, { dir, prefix: '/other' }) })
  for (const second of [twice, below]) {
    const app = Fastify()
    await app.register(tusPlugin, { dir })
    await t.rejects(async () => { await second(app); await app.ready() }, { code: 'FST_TUS_INVALID_OPTION', message })
    await app.close()
  }
  const decorated = Fastify()
  decorated.decorateRequest('tus', null)
  await t.rejects(async () => { await decorated.register(tusPlugin, { dir }).ready() }, {
    code: 'FST_TUS_INVALID_OPTION', message: /requests are already decorated with "tus" by the app, and request\.tus is the plugin's/
  })
  await decorated.close()
})

t.test('two endpoints in sibling contexts, as the refusal advises, each keep their own uploads (tus and draft)', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'fastify-tus-registration-'))
  t.teardown(async () => { await rm(base, { recursive: true, force: true }) })
  const app = Fastify()
  t.teardown(async () => { await app.close() })
  for (const name of ['a', 'b']) {
    await app.register(async (scope) => { await scope.register(tusPlugin, { prefix: `/${name}`, dir: join(base, name) }) })
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  const origin = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  for (const name of ['a', 'b']) {
    const body = `bytes of ${name}`
    const tus = await tusRequest(`${origin}/${name}/`, { method: 'POST', headers: { 'Upload-Length': String(body.length), 'Content-Type': 'application/offset+octet-stream' }, body })
    t.equal(tus.status, 201, `${name}, tus: created with its bytes`)
    const draft = await tusRequest(`${origin}/${name}/`, {
      method: 'POST', headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1', 'Content-Type': 'application/octet-stream' }, body
    })
    t.equal(draft.status, 201, `${name}, draft: created with its bytes`)
    const ids = [idOf(tus.headers.location!), idOf(draft.headers.location!)]
    t.same((await readdir(join(base, name))).sort(), ids.flatMap((id) => [id, `${id}.json`]).sort(), `${name}: its uploads in its own dir`)
    for (const id of ids) t.equal(sha256(await readFile(join(base, name, id))), sha256(body), `${name}: ${id} holds its bytes`)
  }
})

t.test('request.tus is null on every route of the plugin\'s context and its children; undefined outside, as the README says', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-registration-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const app = Fastify()
  t.teardown(async () => { await app.close() })
  const seen = (request: { tus?: unknown }): string => request.tus === undefined ? 'undefined' : JSON.stringify(request.tus)
  app.get('/outside', async (request) => seen(request))
  await app.register(async (scope) => {
    await scope.register(tusPlugin, { dir })
    scope.get('/beside', async (request) => seen(request))
    await scope.register(async (child) => { child.get('/below', async (request) => seen(request)) })
  })
  t.equal((await app.inject('/beside')).body, 'null', 'a route of the same context')
  t.equal((await app.inject('/below')).body, 'null', 'a route of a child context')
  t.equal((await app.inject('/outside')).body, 'undefined', 'a route outside the encapsulated registration')
})
