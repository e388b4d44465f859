// The standalone server's CORS (lib/cors.ts): which headers a browser client may read, checked against a
// literal list (a list compared with itself proves nothing), and the preflight answer.
import t from 'tap'
import Fastify from 'fastify'
import { TUS_EXPOSED_HEADERS } from '../lib/index.js'
import { corsHook } from '../lib/cors.js'

// Every response header a tus 1.0 or draft client reads. Adding one is a decision: add it here too.
const EXPECTED_EXPOSED = [
  'Location', 'Upload-Offset', 'Upload-Length', 'Upload-Metadata', 'Upload-Expires', 'Upload-Defer-Length',
  'Upload-Concat', 'Upload-Complete', 'Upload-Incomplete', 'Upload-Limit', 'Upload-Draft-Interop-Version', 'Accept-Patch',
  'Tus-Resumable', 'Tus-Version', 'Tus-Extension', 'Tus-Max-Size', 'Tus-Checksum-Algorithm'
]

async function app (origins: string[]) {
  const fastify = Fastify()
  fastify.addHook('onRequest', corsHook(origins))
  fastify.route({ method: ['GET', 'HEAD', 'PATCH', 'OPTIONS'], url: '/files/:id', handler: async (_request, reply) => await reply.code(200).send('') })
  await fastify.ready()
  return fastify
}

t.test('TUS_EXPOSED_HEADERS is the literal list of the headers clients read', async (t) => {
  t.same([...TUS_EXPOSED_HEADERS], EXPECTED_EXPOSED)
  t.ok(Object.isFrozen(TUS_EXPOSED_HEADERS))
})

t.test('an allowed origin may read every tus and draft header', async (t) => {
  const fastify = await app(['https://app.example'])
  t.teardown(async () => { await fastify.close() })
  for (const method of ['HEAD', 'PATCH', 'GET'] as const) {
    const response = await fastify.inject({ method, url: '/files/abc', headers: { origin: 'https://app.example' } })
    t.equal(response.headers['access-control-allow-origin'], 'https://app.example', method)
    t.same(String(response.headers['access-control-expose-headers']).split(', '), EXPECTED_EXPOSED, `${method}: exposed headers`)
    t.equal(response.headers.vary, 'Origin')
  }
  const other = await fastify.inject({ method: 'HEAD', url: '/files/abc', headers: { origin: 'https://evil.example' } })
  t.equal(other.headers['access-control-allow-origin'], undefined, 'another origin gets no CORS headers')
  t.equal(other.headers['access-control-expose-headers'], undefined)
})

t.test('a preflight is answered 204 with the methods, the requested headers and a max age', async (t) => {
  const fastify = await app(['*'])
  t.teardown(async () => { await fastify.close() })
  const response = await fastify.inject({
    method: 'OPTIONS',
    url: '/files/abc',
    headers: { origin: 'https://app.example', 'access-control-request-method': 'PATCH', 'access-control-request-headers': 'tus-resumable, upload-offset, content-type' }
  })
  t.equal(response.statusCode, 204)
  t.equal(response.headers['access-control-allow-origin'], '*')
  t.equal(response.headers['access-control-allow-methods'], 'POST, HEAD, PATCH, OPTIONS, GET, DELETE')
  t.equal(response.headers['access-control-allow-headers'], 'tus-resumable, upload-offset, content-type')
  t.equal(response.headers['access-control-max-age'], '86400')
  t.same(String(response.headers['access-control-expose-headers']).split(', '), EXPECTED_EXPOSED)
})
