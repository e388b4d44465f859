// onUploadExpire: it may keep an expired upload (return false, or throw) or archive it before removeExpired()
// removes it; uploads made through tus 1.0.0 and the IETF draft (interop 6) alike.
import t from 'tap'
import type { Readable } from 'node:stream'
import type { UploadInfo } from '../lib/index.js'
import { backdate, removeExpired, send, signal, startServer, WatchedLocker, type TestServer } from './helpers.js'

async function text (stream: Readable): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString()
}

const b64 = (value: string): string => Buffer.from(value).toString('base64')

/** A complete upload of `body` made through tus or the draft; resolves with its id. */
async function upload (server: TestServer, protocol: 'tus' | 'draft', name: string, body: string): Promise<string> {
  const headers: Record<string, string> = protocol === 'tus'
    ? { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(body.length), 'Content-Type': 'application/offset+octet-stream' }
    : { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }
  const created = await send(server.endpoint, 'POST', { ...headers, 'Upload-Metadata': `name ${b64(name)}` }, body)
  if (created.status !== 201) throw new Error(`creation: ${created.status}`)
  return String(created.headers.location).split('/').pop()!
}

t.test('onUploadExpire vetoes one upload, archives others, and a throwing hook keeps its upload', async (t) => {
  const keep = new Set(['tus-keep', 'draft-keep'])
  const archived = new Map<string, string>()
  const asked: string[] = []
  const logs: string[] = []
  // Complete uploads, so they expire only with expireCompleted (by default finished uploads are kept).
  const server = await startServer(t, {
    expireCompleted: true,
    onUploadExpire: async (upload, store) => {
      const name = upload.metadata.name ?? ''
      asked.push(name)
      if (name === 'crash') throw new Error('archive unreachable')
      if (keep.has(name)) return false
      archived.set(name, await text(await store.read(upload.id)))
    }
  }, undefined, { logger: { level: 'info', stream: { write: (line: string) => { logs.push(line) } } } })

  const ids = new Map<string, string>()
  for (const [protocol, name] of [['tus', 'tus-keep'], ['tus', 'tus-archive'], ['draft', 'draft-keep'], ['draft', 'draft-archive'], ['tus', 'crash']] as const) {
    ids.set(name, await upload(server, protocol, name, `bytes of ${name}`))
  }
  const fresh = await upload(server, 'draft', 'fresh', 'not expired')
  for (const id of ids.values()) await backdate(server.dir, id, 30)

  const removed = await removeExpired(server.app)
  t.same(removed.map((info: UploadInfo) => info.metadata.name).sort(), ['draft-archive', 'tus-archive'], 'only what the hook let go')
  t.same([...archived].sort(), [['draft-archive', 'bytes of draft-archive'], ['tus-archive', 'bytes of tus-archive']], 'archived before removal')
  t.same(asked.sort(), ['crash', 'draft-archive', 'draft-keep', 'tus-archive', 'tus-keep'], 'asked about expired uploads only')
  for (const name of ['tus-keep', 'draft-keep', 'crash']) {
    const info = await server.app.tus.store.getInfo(ids.get(name)!)
    t.equal(info.metadata.name, name, `${name} is kept in the store`)
  }
  await t.rejects(server.app.tus.store.getInfo(ids.get('tus-archive')!), 'the archived upload is gone')
  t.equal((await send(`${server.endpoint}${ids.get('tus-keep')!}`, 'HEAD', { 'Tus-Resumable': '1.0.0' })).status, 410, 'a kept upload is still expired to tus clients')
  t.equal((await send(`${server.endpoint}${ids.get('draft-keep')!}`, 'HEAD', { 'Upload-Draft-Interop-Version': '6' })).status, 410, 'and to draft clients')
  t.equal((await send(`${server.endpoint}${fresh}`, 'HEAD', { 'Tus-Resumable': '1.0.0' })).status, 200, 'an upload not expired is not asked about')
  t.ok(logs.some((line) => line.includes('onUploadExpire failed') && line.includes('archive unreachable')), 'the throw is logged')
  t.ok(logs.some((line) => line.includes('onUploadExpire kept an expired upload')), 'the veto is logged')

  // The next sweep asks again.
  keep.delete('tus-keep')
  const later = await removeExpired(server.app)
  t.same(later.map((info) => info.metadata.name), ['tus-keep'])
})

t.test('a request waiting past lockTimeout while a slow onUploadExpire holds its upload gets 423 saying so, with Retry-After; one whose wait outlasts the hook gets 404', async (t) => {
  const entered = signal()
  const release = signal()
  const locker = new WatchedLocker()
  const server = await startServer(t, {
    lockTimeout: 300,
    expireCompleted: true,
    locker,
    onUploadExpire: async () => {
      entered.resolve()
      await release.promise
    }
  })
  const tus = { 'Tus-Resumable': '1.0.0' }
  const draft = { 'Upload-Draft-Interop-Version': '6' }
  const id = await upload(server, 'tus', 'slow', 'abc')
  await backdate(server.dir, id, 30)
  const url = `${server.endpoint}${id}`
  const sweep = removeExpired(server.app)
  await entered.promise
  for (const [name, protocol] of [['tus', tus], ['draft', draft]] as const) {
    const requests: Array<[string, Record<string, string>, string?]> = [
      ['HEAD', {}], ['DELETE', {}],
      ['PATCH', name === 'tus' ? { 'Upload-Offset': '3', 'Content-Type': 'application/offset+octet-stream' } : { 'Upload-Offset': '3', 'Upload-Complete': '?1', 'Content-Type': 'application/partial-upload' }, 'x']
    ]
    for (const [method, headers, body] of requests) {
      const answer = await send(url, method, { ...protocol, ...headers }, body)
      t.equal(answer.status, 423, `${name} ${method} while onUploadExpire runs`)
      t.equal(answer.headers['retry-after'], '1', 'says when to ask again')
      if (method !== 'HEAD') t.match(answer.body, /has expired and is being removed \(onUploadExpire is deciding\)/)
    }
  }
  t.ok(await server.app.tus.store.getInfo(id), 'nothing removed it meanwhile')
  // A HEAD that asks while the hook runs, and the hook ends within its wait: the upload is gone.
  locker.watched = id
  const asked = locker.asked.promise
  const waiting = send(url, 'HEAD', tus)
  await asked
  release.resolve()
  t.same((await sweep).map((info) => info.id), [id])
  t.equal((await waiting).status, 404, 'the removed upload, once the hook let it go')
  t.equal((await send(url, 'HEAD', tus)).status, 404)
})

t.test('onUploadExpire must be a function', async (t) => {
  await t.rejects(startServer(t, { onUploadExpire: 'no' as unknown as () => boolean }), { code: 'FST_TUS_INVALID_OPTION' })
})
