// Upload URLs under a parametric prefix (`/product/:pid/images`) carry the parameters' values, not `:pid`; and
// generateUrl builds the Location; through tus 1.0.0 and the IETF draft (interop 6).
import t from 'tap'
import { request as httpRequest } from 'node:http'
import tusPlugin, { TusErrors, type UploadUrlParts } from '../lib/index.js'
import { send, startServer } from './helpers.js'

const DIALECTS: Array<{ name: string, create: Record<string, string>, append: Record<string, string> }> = [
  {
    name: 'tus 1.0.0',
    create: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '3' },
    append: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }
  },
  {
    name: 'IETF draft interop 6',
    create: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0', 'Upload-Length': '3' },
    append: { 'Upload-Draft-Interop-Version': '6', 'Upload-Offset': '0', 'Upload-Complete': '?1', 'Content-Type': 'application/partial-upload' }
  }
]

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: a parametric prefix yields a Location with the parameter's value`, async (t) => {
    const server = await startServer(t, { prefix: '/product/:pid/images' })
    const created = await send(`${server.origin}/product/42/images`, 'POST', dialect.create)
    t.equal(created.status, 201)
    const location = String(created.headers.location)
    t.match(location, new RegExp(`^${server.origin}/product/42/images/[A-Za-z0-9_-]+$`), 'no literal :pid')
    const appended = await send(location, 'PATCH', dialect.append, 'abc')
    t.equal(appended.status, 204, 'the Location routes back to the upload')
    t.equal(appended.headers['upload-offset'], '3')
    t.equal((await send(location, 'GET', {})).body, 'abc')
  })

  t.test(`${dialect.name}: generateUrl builds the Location`, async (t) => {
    const seen: UploadUrlParts[] = []
    const server = await startServer(t, {}, async (app, dir) => {
      await app.register(async (scope) => {
        await scope.register(tusPlugin, {
          dir,
          prefix: '/:tenant/files',
          generateUrl: (request, parts) => {
            seen.push(parts)
            return `https://uploads.example.com${parts.path}/${parts.id}?from=${request.method}`
          }
        })
      }, { prefix: '/api' })
    }, { trustProxy: '127.0.0.1' })
    const created = await send(`${server.origin}/api/acme/files`, 'POST', { ...dialect.create, 'X-Forwarded-Proto': 'https' })
    t.equal(created.status, 201)
    const id = seen[0]?.id ?? ''
    t.same(seen, [{ proto: 'https', host: new URL(server.origin).host, path: '/api/acme/files', id }], 'the parts, outer prefix and parameters resolved')
    t.equal(created.headers.location, `https://uploads.example.com/api/acme/files/${id}?from=POST`)
    const appended = await send(`${server.origin}/api/acme/files/${id}`, 'PATCH', dialect.append, 'xyz')
    t.equal(appended.status, 204)
  })
}

/** A creation over node:http, with the Location of a 104 (the draft's) if one came first. */
async function createWithInterim (url: string, headers: Record<string, string>): Promise<{ status: number, location?: string, interim?: string, body: string }> {
  return await new Promise((resolve, reject) => {
    let interim: string | undefined
    const request = httpRequest(url, { method: 'POST', headers, agent: false }, (response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => { body += chunk.toString() })
      response.on('end', () => { resolve({ status: response.statusCode!, location: response.headers.location, interim, body }) })
    })
    request.on('information', (info) => { interim = info.headers.location as string | undefined })
    request.on('error', reject)
    request.end()
  })
}

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: non-ASCII text and characters no URI holds in generateUrl's answer go out percent-encoded, the same in every answer`, async (t) => {
    const server = await startServer(t, { generateUrl: (_request, { path, id }) => `${path}/${id}?shop=caf\u00e9+\u20ac&q=a b"<>\\^\`{|}&done=50%25` })
    const created = await createWithInterim(server.endpoint, dialect.create)
    t.equal(created.status, 201, created.body)
    t.match(created.location, /^\/files\/[A-Za-z0-9_-]{21}\?shop=caf%C3%A9\+%E2%82%AC&q=a%20b%22%3C%3E%5C%5E%60%7B%7C%7D&done=50%25$/,
      'UTF-8 and the ASCII no URI holds, percent-encoded, as a browser sends it; what was encoded already is kept')
    if (dialect.name !== 'tus 1.0.0') t.equal(created.interim, created.location, 'the 104 names the same URL')
    const url = new URL(created.location!, server.origin).href
    t.equal((await send(url, 'PATCH', dialect.append, 'abc')).status, 204, 'the URL routes back to the upload')
    t.equal((await send(url, 'GET', {})).body, 'abc')
  })
}

const encode = (id: string): string => `${Buffer.from(id).toString('base64url')}.up`
const decode = (segment: string): string | undefined => segment.endsWith('.up') ? Buffer.from(segment.slice(0, -3), 'base64url').toString() : undefined

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: generateUrl and getUploadIdFromRequest make a URL scheme of their own`, async (t) => {
    const server = await startServer(t, {
      relativeLocation: true,
      generateUrl: (_request, { path, id }) => `${path}/${encode(id)}`,
      getUploadIdFromRequest: (_request, lastPath) => decode(lastPath)
    })
    const created = await send(server.endpoint, 'POST', dialect.create)
    t.equal(created.status, 201)
    const location = String(created.headers.location)
    const [, encoded = ''] = /^\/files\/([A-Za-z0-9_-]+\.up)$/.exec(location) ?? []
    const id = decode(encoded) ?? ''
    t.ok(await server.app.tus.store.getInfo(id), 'the decoded segment is the stored upload\'s id')
    const appended = await send(`${server.origin}${location}`, 'PATCH', dialect.append, 'abc')
    t.equal(appended.status, 204, 'the generated URL routes back')
    t.equal(appended.headers['upload-offset'], '3')
    t.equal((await send(`${server.origin}${location}`, 'GET', {})).body, 'abc')
    t.equal((await send(`${server.origin}/files/${id}`, 'GET', {})).status, 404, 'the bare id is no URL of this scheme')
    const protocol: Record<string, string> = dialect.name.startsWith('tus') ? { 'Tus-Resumable': '1.0.0' } : { 'Upload-Draft-Interop-Version': '6' }
    const overridden = await send(`${server.origin}${location}`, 'POST', { ...protocol, 'X-HTTP-Method-Override': 'DELETE' })
    t.equal(overridden.status, 204, 'X-HTTP-Method-Override reads the id the same way')
  })
}

t.test('tus concatenation with getUploadIdFromRequest: partials named by their generated URLs', async (t) => {
  const server = await startServer(t, {
    generateUrl: ({ protocol }, { host, path, id }) => `${protocol}://${host ?? ''}${path}/${encode(id)}`,
    getUploadIdFromRequest: (_request, lastPath) => decode(lastPath)
  })
  const partial = async (body: string): Promise<string> => {
    const created = await send(server.endpoint, 'POST', {
      'Tus-Resumable': '1.0.0', 'Upload-Concat': 'partial', 'Upload-Length': String(body.length), 'Content-Type': 'application/offset+octet-stream'
    }, body)
    return String(created.headers.location)
  }
  const parts = [await partial('ab'), await partial('cd')]
  t.match(parts[0], /\.up$/)
  const final = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Concat': `final;${parts.join(' ')}` })
  t.equal(final.status, 201)
  t.equal((await send(String(final.headers.location), 'GET', {})).body, 'abcd')
})

t.test('tus concatenation under a parametric prefix: the final names its partials by their resolved URLs', async (t) => {
  const server = await startServer(t, { prefix: '/product/:pid/images' })
  const endpoint = `${server.origin}/product/7/images`
  const partial = async (body: string): Promise<string> => {
    const created = await send(endpoint, 'POST', {
      'Tus-Resumable': '1.0.0', 'Upload-Concat': 'partial', 'Upload-Length': String(body.length), 'Content-Type': 'application/offset+octet-stream'
    }, body)
    t.equal(created.status, 201)
    return String(created.headers.location)
  }
  const parts = [await partial('ab'), await partial('cd')]
  const final = await send(endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Concat': `final;${parts.join(' ')}` })
  t.equal(final.status, 201)
  t.equal((await send(String(final.headers.location), 'GET', {})).body, 'abcd')
})

t.test('generateUrl that throws or returns no URL is a 500 naming it', async (t) => {
  for (const generateUrl of [() => { throw new Error('signing service down') }, () => 'bad\r\nurl', () => 'bad\turl', () => '/files/half-\ud83d']) {
    const server = await startServer(t, { generateUrl })
    const created = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' })
    t.equal(created.status, 500)
    t.match(created.body, /^generateUrl failed/)
  }
  await t.rejects(startServer(t, { generateUrl: 'https://x' as unknown as () => string }), { code: 'FST_TUS_INVALID_OPTION' })
})

t.test('getUploadIdFromRequest that throws is a 500 naming it', async (t) => {
  const server = await startServer(t, { getUploadIdFromRequest: () => { throw new Error('key store down') } })
  const created = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' })
  t.equal(created.status, 201, 'creation reads no id')
  const head = await send(new URL(String(created.headers.location), server.origin).href, 'HEAD', { 'Tus-Resumable': '1.0.0' })
  t.equal(head.status, 500)
  t.equal(head.body, '')
  const draftHead = await send(new URL(String(created.headers.location), server.origin).href, 'GET', { 'Upload-Draft-Interop-Version': '6' })
  t.equal(draftHead.status, 500)
  t.match(draftHead.body, 'getUploadIdFromRequest failed')
})

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: the README's tenant scope: an upload answers only under the tenant it was made for`, async (t) => {
    type TenantRequest = { params: { tenant: string } }
    const server = await startServer(t, {
      prefix: '/:tenant/files',
      onUploadCreate: async (upload, request) => ({ metadata: { ...upload.metadata, tenant: (request as unknown as TenantRequest).params.tenant } }),
      onUploadAccess: async (upload, _action, request) => {
        if (upload.metadata.tenant !== (request as unknown as TenantRequest).params.tenant) throw new TusErrors.NOT_FOUND()
      }
    })
    const created = await send(`${server.origin}/acme/files`, 'POST', { ...dialect.create, 'Upload-Concat': 'partial' })
    t.equal(created.status, 201)
    const location = String(created.headers.location)
    const id = location.split('/').pop()!
    const protocol: Record<string, string> = dialect.name.startsWith('tus') ? { 'Tus-Resumable': '1.0.0' } : { 'Upload-Draft-Interop-Version': '6' }
    t.equal((await send(`${server.origin}/other/files/${id}`, 'HEAD', protocol)).status, 404, 'another tenant\'s URL: 404')
    t.equal((await send(`${server.origin}/other/files/${id}`, 'PATCH', dialect.append, 'abc')).status, 404)
    t.equal((await send(`${server.origin}/other/files/${id}`, 'DELETE', protocol)).status, 404)
    t.equal((await send(location, 'PATCH', dialect.append, 'abc')).status, 204, 'its own tenant\'s URL')
    const final = { ...protocol, 'Upload-Concat': `final;${id}` }
    t.equal((await send(`${server.origin}/other/files`, 'POST', final)).status, 400, 'another tenant cannot concatenate it')
    t.equal((await send(`${server.origin}/acme/files`, 'POST', final)).status, 201)
  })
}
