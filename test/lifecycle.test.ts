import { once } from 'node:events'
import t from 'tap'
import { readdir } from 'node:fs/promises'
import { PassThrough } from 'node:stream'
import { request as undiciRequest } from 'undici'
import { backdate, createUpload, idOf, rawRequest, removeExpired, startServer, tusRequest } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

t.test('DELETE terminates: 204, files gone, then 404 everywhere', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '5' })
  await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'hel' })
  const deleted = await tusRequest(url, { method: 'DELETE' })
  t.equal(deleted.status, 204)
  t.equal(deleted.headers['tus-resumable'], '1.0.0')
  t.same(await readdir(server.dir), [])
  for (const method of ['HEAD', 'GET', 'DELETE']) t.equal((await tusRequest(url, { method })).status, 404, method)
  const patched = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '3', ...OCTET }, body: 'lo' })
  t.equal(patched.status, 404)
})

t.test('removeExpired removes expired unfinished uploads and reports them; finished ones are kept', async (t) => {
  const server = await startServer(t, { daysToKeep: 0.5 })
  const old = await createUpload(server, { 'Upload-Length': '5' })
  const oldFinished = await createUpload(server, { 'Upload-Length': '0' })
  const fresh = await createUpload(server, { 'Upload-Length': '5' })
  await backdate(server.dir, idOf(old), 1)
  await backdate(server.dir, idOf(oldFinished), 1)
  const removed = await removeExpired(server.app)
  t.same(removed.map((upload) => upload.id), [idOf(old)])
  t.equal(removed[0]?.size, 5)
  t.same((await readdir(server.dir)).sort(), [idOf(fresh), `${idOf(fresh)}.json`, idOf(oldFinished), `${idOf(oldFinished)}.json`].sort())
  t.equal((await tusRequest(fresh, { method: 'HEAD' })).status, 200)
  t.equal((await tusRequest(old, { method: 'HEAD' })).status, 404)
  const finished = await tusRequest(oldFinished, { method: 'HEAD' })
  t.equal(finished.status, 200, 'a finished upload is kept past daysToKeep')
  t.equal(finished.headers['upload-expires'], undefined, 'and announces no expiry')
  t.equal((await tusRequest(oldFinished)).status, 200, 'and downloads')
  t.equal(await server.app.tus.removeExpired(), 0, 'nothing left to remove')
})

t.test('expireCompleted: true removes finished uploads too, daysToKeep after their last write', async (t) => {
  const server = await startServer(t, { daysToKeep: 0.5, expireCompleted: true })
  const finished = await createUpload(server, { 'Upload-Length': '0' })
  t.match((await tusRequest(finished, { method: 'HEAD' })).headers['upload-expires'], /GMT$/)
  await backdate(server.dir, idOf(finished), 1)
  t.equal((await tusRequest(finished)).status, 410, 'expired: 410 until removed')
  t.same((await removeExpired(server.app)).map((upload) => upload.id), [idOf(finished)])
  t.equal((await tusRequest(finished, { method: 'HEAD' })).status, 404)
})

t.test('removeExpired never removes an upload a request is writing to', async (t) => {
  const server = await startServer(t, { daysToKeep: 0.5, lockTimeout: 200 })
  const url = await createUpload(server, { 'Upload-Length': '10' })
  const body = new PassThrough()
  const pending = undiciRequest(url, {
    method: 'PATCH',
    headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Length': '10', ...OCTET },
    body
  })
  const holding = once(server.app.tus, 'progress')
  body.write('hello')
  // The first progress event comes from the PATCH holding the upload's lock.
  await holding
  await backdate(server.dir, idOf(url), 1)
  t.equal(await server.app.tus.removeExpired(), 0, 'the busy upload is skipped')
  body.end('world')
  const response = await pending
  await response.body.dump()
  t.equal(response.statusCode, 204)
  t.equal(response.headers['upload-offset'], '10')
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '10')
})

for (const [protocol, headers] of [['tus 1.0.0', { 'Tus-Resumable': '1.0.0' }], ['draft interop 6', { 'Upload-Draft-Interop-Version': '6' }]] as const) {
  t.test(`${protocol}: DELETE of an expired upload not swept yet removes it (204, onUploadTerminate, terminated), then 404`, async (t) => {
    const terminated: string[] = []
    const server = await startServer(t, { daysToKeep: 0.5, expireCompleted: true, onUploadTerminate: (upload) => { terminated.push(upload.id) } })
    server.app.tus.on('terminated', (upload) => { terminated.push(`event ${upload.id}`) })
    const unfinished = await createUpload(server, { 'Upload-Length': '5' })
    const finished = await createUpload(server, { 'Upload-Length': '0' })
    for (const url of [unfinished, finished]) await backdate(server.dir, idOf(url), 1)
    for (const url of [unfinished, finished]) {
      t.equal((await rawRequest(url, { method: 'HEAD', headers })).status, 410, 'expired')
      const deleted = await rawRequest(url, { method: 'DELETE', headers })
      t.equal(deleted.status, 204)
      t.equal((await rawRequest(url, { method: 'HEAD', headers })).status, 404)
    }
    t.same(await readdir(server.dir), [], 'nothing of them is left')
    t.same(terminated, [idOf(unfinished), `event ${idOf(unfinished)}`, idOf(finished), `event ${idOf(finished)}`])
    t.equal(await server.app.tus.removeExpired(), 0)
  })
}
