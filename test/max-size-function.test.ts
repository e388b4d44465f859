// maxSize as a function of the request: each request's own limit, announced and enforced, through tus 1.0.0 and
// the IETF draft (interop 6).
import t from 'tap'
import { send, startServer, type HttpAnswer, type TestServer } from './helpers.js'

async function planServer (t: { teardown: (fn: () => unknown) => void }): Promise<TestServer> {
  return await startServer(t, {
    maxSize: async (request) => {
      const plan = request.headers['x-plan']
      if (plan === 'banned') throw Object.assign(new Error('Account suspended'), { statusCode: 403 })
      if (plan === 'broken') return -1
      return plan === 'pro' ? 100 : 10
    }
  })
}

interface Dialect {
  name: string
  headers: Record<string, string>
  create: (length: number) => Record<string, string>
  deferred: Record<string, string>
  append: (offset: number) => Record<string, string>
  limit: (options: HttpAnswer) => string | undefined
}

const DIALECTS: Dialect[] = [
  {
    name: 'tus 1.0.0',
    headers: { 'Tus-Resumable': '1.0.0' },
    create: (length) => ({ 'Upload-Length': String(length) }),
    deferred: { 'Upload-Defer-Length': '1' },
    append: (offset) => ({ 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' }),
    limit: (options) => options.headers['tus-max-size'] as string | undefined
  },
  {
    name: 'IETF draft interop 6',
    headers: { 'Upload-Draft-Interop-Version': '6' },
    create: (length) => ({ 'Upload-Length': String(length), 'Upload-Complete': '?0' }),
    deferred: { 'Upload-Complete': '?0' },
    append: (offset) => ({ 'Upload-Offset': String(offset), 'Upload-Complete': '?0', 'Content-Type': 'application/partial-upload' }),
    limit: (options) => /max-size=(\d+)/.exec(String(options.headers['upload-limit']))?.[1]
  }
]

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: each request gets its own maxSize`, async (t) => {
    const server = await planServer(t)
    const h = dialect.headers
    const pro = { ...h, 'X-Plan': 'pro' }

    t.equal(dialect.limit(await send(server.endpoint, 'OPTIONS', h)), '10', 'announced per request')
    t.equal(dialect.limit(await send(server.endpoint, 'OPTIONS', pro)), '100')

    const beyond = await send(server.endpoint, 'POST', { ...h, ...dialect.create(50) })
    t.equal(beyond.status, 413, 'beyond this request\'s limit')
    if (dialect.name !== 'tus 1.0.0') t.equal(dialect.limit(beyond), '10', 'the draft\'s 413 tells this request\'s limit')
    t.equal((await send(server.endpoint, 'POST', { ...pro, ...dialect.create(50) })).status, 201, 'within the pro limit')

    // A length still unknown grows up to the limit of the request that writes.
    const created = await send(server.endpoint, 'POST', { ...pro, ...dialect.deferred })
    t.equal(created.status, 201)
    const url = new URL(String(created.headers.location), server.origin).href
    const free = await send(url, 'PATCH', { ...h, ...dialect.append(0) }, 'x'.repeat(20))
    t.equal(free.status, 413)
    t.equal((await send(url, 'HEAD', h)).headers['upload-offset'], '0', 'nothing stored')
    const paid = await send(url, 'PATCH', { ...pro, ...dialect.append(0) }, 'x'.repeat(20))
    t.equal(paid.status, 204)
    t.equal(paid.headers['upload-offset'], '20')

    const banned = await send(server.endpoint, 'POST', { ...h, 'X-Plan': 'banned', ...dialect.create(1) })
    t.equal(banned.status, 403)
    t.match(banned.body, 'Account suspended')
    const broken = await send(server.endpoint, 'POST', { ...h, 'X-Plan': 'broken', ...dialect.create(1) })
    t.equal(broken.status, 500)
    t.match(broken.body, 'maxSize failed: it must return a positive integer')
  })
}

t.test('a maxSize function that crashes is a 500 naming it, its message only logged', async (t) => {
  const server = await startServer(t, { maxSize: () => { throw new Error('billing database at 10.0.0.7 down') } })
  const requests: Array<Record<string, string>> = [{ 'Tus-Resumable': '1.0.0', 'Upload-Length': '1' }, { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0' }]
  for (const headers of requests) {
    const answer = await send(server.endpoint, 'POST', headers)
    t.equal(answer.status, 500)
    t.match(answer.body, 'maxSize failed')
    t.notMatch(answer.body, '10.0.0.7')
  }
})
