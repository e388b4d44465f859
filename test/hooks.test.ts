import t from 'tap'
import { readdir, readFile } from 'node:fs/promises'
import type { FastifyRequest } from 'fastify'
import tusPlugin, { type UploadInfo } from '../lib/index.js'
import { createUpload, idOf, randomBytesSeeded, sha256, startServer, tusRequest, tusUpload } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

interface Account { id: string }
interface UploadLog { record (userId: string, upload: UploadInfo): Promise<void> }

declare module 'fastify' {
  interface FastifyRequest {
    account: Account | null
    uploadLog: UploadLog
  }
}

t.test('hooks see what the app decorated on the request: the user from auth and a per-request service', async (t) => {
  const records: Array<{ userId: string, id: string, path: string, filename: string | undefined, sha: string, requestId: string }> = []
  const creators: string[] = []
  const server = await startServer(t, {}, async (app, dir) => {
    app.decorateRequest('account', null)
    app.decorateRequest('uploadLog', {
      getter (this: FastifyRequest): UploadLog {
        const request = this
        return {
          record: async (userId, upload) => {
            records.push({ userId, id: upload.id, path: upload.path!, filename: upload.metadata.filename, sha: sha256(await readFile(upload.path!)), requestId: request.id })
          }
        }
      }
    })
    await app.register(tusPlugin, {
      dir,
      auth: async (request) => {
        const token = request.headers.authorization
        if (token !== 'Bearer alice' && token !== 'Bearer bob') {
          throw Object.assign(new Error('Authentication required'), { statusCode: 401 })
        }
        request.account = { id: token.slice(7) }
      },
      onUploadCreate: (_upload, request) => { creators.push(request.account!.id) },
      onUploadComplete: async (upload, request) => { await request.uploadLog.record(request.account!.id, upload) }
    })
  })
  const data = randomBytesSeeded(150_000, 3)
  const url = await tusUpload(data, {
    endpoint: server.endpoint,
    chunkSize: 64 * 1024,
    headers: { Authorization: 'Bearer alice' },
    metadata: { filename: 'holiday.mp4' }
  })
  t.same(creators, ['alice'])
  t.equal(records.length, 1, 'the completion hook fired exactly once')
  t.match(records[0], { userId: 'alice', id: idOf(url), filename: 'holiday.mp4', sha: sha256(data) })
  t.equal(records[0]!.path, `${server.dir}/${idOf(url)}`)
})

t.test('a refusing auth hook stops every route before anything is read, written or deleted', async (t) => {
  const server = await startServer(t, {
    auth: async (request, reply) => {
      if (request.headers.authorization === 'Bearer ok') return
      if (request.headers.authorization === 'Bearer reply') {
        await reply.code(403).type('text/plain').send('Forbidden by reply')
        return
      }
      throw Object.assign(new Error('Authentication required'), { statusCode: 401 })
    }
  })
  const ok = { Authorization: 'Bearer ok' }
  const url = await createUpload(server, { 'Upload-Length': '5', ...ok })
  await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET, ...ok }, body: 'hel' })
  const before = (await readdir(server.dir)).sort()

  for (const authorization of [undefined, 'Bearer reply']) {
    const headers: Record<string, string> = authorization === undefined ? {} : { Authorization: authorization }
    const expected = authorization === undefined ? 401 : 403
    const attempts = [
      await tusRequest(server.endpoint, { method: 'POST', headers: { ...headers, 'Upload-Length': '5' } }),
      await tusRequest(url, { method: 'HEAD', headers }),
      await tusRequest(url, { method: 'GET', headers }),
      await tusRequest(url, { method: 'PATCH', headers: { ...headers, 'Upload-Offset': '3', ...OCTET }, body: 'lo' }),
      await tusRequest(url, { method: 'DELETE', headers })
    ]
    for (const response of attempts) {
      t.equal(response.status, expected)
      t.equal(response.headers['upload-offset'], undefined, 'no upload state leaks')
    }
    t.equal(attempts[0]!.text, authorization === undefined ? 'Authentication required' : 'Forbidden by reply')
  }
  t.same((await readdir(server.dir)).sort(), before, 'no file created or removed')
  t.equal(await readFile(`${server.dir}/${idOf(url)}`, 'utf8'), 'hel', 'no byte written')
  const options = await tusRequest(server.endpoint, { method: 'OPTIONS' })
  t.equal(options.status, 204, 'discovery needs no credentials')
})

t.test('a failing completion hook: 500 naming it, logged, the upload kept and reported complete', async (t) => {
  const logs: string[] = []
  let calls = 0
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, {
      dir,
      onUploadComplete: async () => {
        calls++
        throw new Error('thumbnailer crashed')
      }
    })
  }, {
    logger: {
      level: 'error',
      stream: { write: (line: string) => { logs.push(line) } }
    }
  })
  const url = await createUpload(server, { 'Upload-Length': '5' })
  const response = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'hello' })
  t.equal(response.status, 500)
  t.equal(response.text, 'onUploadComplete failed')
  t.equal(response.headers['upload-offset'], '5')
  t.equal(calls, 1)
  t.ok(logs.some((line) => line.includes('onUploadComplete failed') && line.includes('thumbnailer crashed')), 'logged through the request logger')
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '5')
  t.equal(await readFile(`${server.dir}/${idOf(url)}`, 'utf8'), 'hello')
  const download = await tusRequest(url)
  t.equal(download.text, 'hello')
})
