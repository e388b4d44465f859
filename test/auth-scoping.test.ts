// Scoping uploads per user: onUploadCreate records the owner, auth checks it for the upload being accessed.
import t from 'tap'
import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyRequest } from 'fastify'
import { TusErrors } from '../lib/index.js'
import { idOf, startServer, tusRequest } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
const USERS: Record<string, string> = { 'Bearer alice-token': 'alice', 'Bearer bob-token': 'bob' }

function userOf (request: FastifyRequest): string {
  const user = USERS[request.headers.authorization ?? '']
  if (user === undefined) throw Object.assign(new Error('Unknown user'), { statusCode: 401 })
  return user
}

t.test('user B cannot HEAD, PATCH, GET or DELETE user A\'s upload; nothing is touched', async (t) => {
  const server = await startServer(t, {
    auth: async (request) => {
      const user = userOf(request)
      const { id } = request.params as { id?: string }
      if (id === undefined || request.method === 'OPTIONS') return
      const upload = await request.server.tus.store.getInfo(id).catch(() => undefined)
      // Unknown uploads fall through to the route's own 404; someone else's is 404 too, so ids don't leak.
      if (upload !== undefined && upload.metadata.owner !== user) throw new TusErrors.NOT_FOUND()
    },
    onUploadCreate: (upload, request) => ({ metadata: { ...upload.metadata, owner: userOf(request) } })
  })
  const alice = { Authorization: 'Bearer alice-token' }
  const bob = { Authorization: 'Bearer bob-token' }
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { ...alice, 'Upload-Length': '10', 'Upload-Metadata': 'owner Ym9i' } })
  t.equal(created.status, 201)
  const url = new URL(created.headers.location!, server.origin).href
  t.equal((await tusRequest(url, { method: 'PATCH', headers: { ...alice, 'Upload-Offset': '0', ...OCTET }, body: 'hello' })).status, 204)
  const infoBefore = await readFile(join(server.dir, `${idOf(url)}.json`), 'utf8')
  t.match(JSON.parse(infoBefore).metadata, { owner: 'alice' }, 'the hook, not the client, sets the owner')

  for (const [method, extra] of [['HEAD', {}], ['GET', {}], ['PATCH', { 'Upload-Offset': '5', ...OCTET }], ['DELETE', {}]] as const) {
    const response = await tusRequest(url, { method, headers: { ...bob, ...extra }, ...(method === 'PATCH' ? { body: 'HACKS' } : {}) })
    t.equal(response.status, 404, `bob ${method}`)
    const anonymous = await tusRequest(url, { method, headers: { ...extra }, ...(method === 'PATCH' ? { body: 'HACKS' } : {}) })
    t.equal(anonymous.status, 401, `anonymous ${method}`)
  }
  t.equal((await readFile(join(server.dir, idOf(url)))).toString(), 'hello', 'no byte written by bob')
  t.equal(await readFile(join(server.dir, `${idOf(url)}.json`), 'utf8'), infoBefore)
  t.ok((await readdir(server.dir)).includes(idOf(url)), 'not deleted')
  const head = await tusRequest(url, { method: 'HEAD', headers: alice })
  t.equal(head.headers['upload-offset'], '5')
  t.equal((await tusRequest(url, { method: 'PATCH', headers: { ...alice, 'Upload-Offset': '5', ...OCTET }, body: 'world' })).status, 204)
  t.equal((await tusRequest(url, { headers: alice })).text, 'helloworld')
  t.equal((await tusRequest(url, { method: 'DELETE', headers: alice })).status, 204)
})
