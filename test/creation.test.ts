import t from 'tap'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { UploadInfo } from '../lib/index.js'
import { idOf, sha256, startServer, tusRequest } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

async function infoFiles (dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [])).filter((name) => name.endsWith('.json'))
}

t.test('POST creates an upload: 201, absolute Location, Upload-Expires, empty data file, info file', async (t) => {
  const server = await startServer(t)
  const response = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '100', 'Upload-Metadata': 'filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential' }
  })
  t.equal(response.status, 201)
  t.equal(response.headers['tus-resumable'], '1.0.0')
  t.match(response.headers.location, new RegExp(`^${server.origin}/files/[A-Za-z0-9_-]{21}$`))
  t.match(response.headers['upload-expires'], /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/)
  const expires = Date.parse(response.headers['upload-expires']!)
  t.ok(Math.abs(expires - (Date.now() + 5 * 86_400_000)) < 60_000, 'expires after the default 5 days')
  const id = idOf(response.headers.location!)
  t.equal((await readFile(join(server.dir, id))).length, 0)
  const info = JSON.parse(await readFile(join(server.dir, `${id}.json`), 'utf8')) as Record<string, unknown>
  t.same(info.metadata, { filename: 'world_domination_plan.pdf', is_confidential: '' })
  t.equal(info.size, 100)
})

t.test('Location: forwarded headers count only from proxies Fastify trusts (trustProxy); or relative when configured', async (t) => {
  const forwardedHeaders = { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'evil.example', Forwarded: 'proto=https;host=evil.example' }
  const untrusting = await startServer(t)
  const ignored = await tusRequest(untrusting.endpoint, { method: 'POST', headers: { 'Upload-Length': '1', ...forwardedHeaders } })
  t.match(ignored.headers.location, new RegExp(`^${untrusting.origin}/files/[A-Za-z0-9_-]{21}$`), 'trustProxy off (Fastify\'s default): the request\'s own Host')

  const trusting = await startServer(t, {}, undefined, { trustProxy: '127.0.0.1' })
  const xForwarded = await tusRequest(trusting.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '1', 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'cdn.example.org:8443' }
  })
  t.match(xForwarded.headers.location, /^https:\/\/cdn\.example\.org:8443\/files\/[A-Za-z0-9_-]{21}$/, 'from a trusted proxy')
  const spoofed = await tusRequest(trusting.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '1', 'X-Forwarded-Proto': 'javascript', 'X-Forwarded-Host': 'evil.com/path?x' }
  })
  t.match(spoofed.headers.location, /^\/files\/[A-Za-z0-9_-]{21}$/, 'values that are no scheme or host give a path-only Location')
  await t.rejects(startServer(t, { respectForwardedHeaders: true } as never), { code: 'FST_TUS_INVALID_OPTION', message: /trustProxy/ })

  const relative = await startServer(t, { relativeLocation: true })
  const created = await tusRequest(relative.endpoint, { method: 'POST', headers: { 'Upload-Length': '1' } })
  t.match(created.headers.location, /^\/files\/[A-Za-z0-9_-]{21}$/)
})

t.test('bad creation requests get 400/413 with a text body and create nothing', async (t) => {
  const server = await startServer(t, { maxSize: 1000 })
  const cases: Array<[Record<string, string>, number, RegExp]> = [
    [{}, 400, /Upload-Length or Upload-Defer-Length/],
    [{ 'Upload-Length': '5', 'Upload-Defer-Length': '1' }, 400, /must not be sent together/],
    [{ 'Upload-Defer-Length': '2' }, 400, /Upload-Defer-Length/],
    [{ 'Upload-Length': '-1' }, 400, /Invalid Upload-Length/],
    [{ 'Upload-Length': '1.5' }, 400, /Invalid Upload-Length/],
    [{ 'Upload-Length': 'abc' }, 400, /Invalid Upload-Length/],
    [{ 'Upload-Length': '' }, 400, /Invalid Upload-Length/],
    [{ 'Upload-Length': '0x10' }, 400, /Invalid Upload-Length/],
    [{ 'Upload-Length': '99999999999999999999999' }, 400, /Invalid Upload-Length/],
    [{ 'Upload-Length': '1001' }, 413, /exceeds the maximum upload size of 1000/],
    [{ 'Upload-Length': '5', 'Upload-Metadata': 'filename not-base64!' }, 400, /not base64/],
    [{ 'Upload-Length': '5', 'Upload-Metadata': 'a YQ==,a Yg==' }, 400, /duplicate key "a"/],
    [{ 'Upload-Length': '5', 'Upload-Metadata': 'a b c' }, 400, /value of "a" is not base64/],
    [{ 'Upload-Length': '5', 'Upload-Metadata': 'a YQ==,,b Yg==' }, 400, /bad key/],
    [{ 'Upload-Length': '5', 'Upload-Metadata': 'a YQ= =' }, 400, /not base64/],
    [{ 'Upload-Length': '5', 'Upload-Metadata': 'a YQ' }, 400, /not base64/],
    [{ 'Upload-Length': '5', 'Upload-Metadata': 'bin /w==' }, 400, /not UTF-8/],
    [{ 'Upload-Length': '5', 'Upload-Metadata': `big ${Buffer.alloc(4000).toString('base64')}` }, 400, /longer than 4096 bytes/]
  ]
  for (const [headers, status, message] of cases) {
    const response = await tusRequest(server.endpoint, { method: 'POST', headers })
    t.equal(response.status, status, JSON.stringify(headers).slice(0, 80))
    t.match(response.text, message)
    t.equal(response.headers['content-type'], 'text/plain; charset=utf-8')
    t.equal(response.headers['tus-resumable'], '1.0.0')
  }
  t.same(await infoFiles(server.dir), [], 'nothing was created')
})

t.test('metadata: empty values, bare keys and UTF-8 are kept and echoed on HEAD', async (t) => {
  const server = await startServer(t)
  const name = Buffer.from('résumé ✓.txt').toString('base64')
  const created = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '1', 'Upload-Metadata': `empty ,filename ${name}, flag` }
  })
  t.equal(created.status, 201)
  const head = await tusRequest(created.headers.location!, { method: 'HEAD' })
  t.equal(head.headers['upload-metadata'], `empty,filename ${name},flag`)
})

t.test('creation-with-upload stores the body and reports Upload-Offset', async (t) => {
  const completed: UploadInfo[] = []
  const server = await startServer(t, { onUploadComplete: (upload) => { completed.push(upload) } })
  const partial = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '11', ...OCTET },
    body: 'hello'
  })
  t.equal(partial.status, 201)
  t.equal(partial.headers['upload-offset'], '5')
  t.equal(await readFile(join(server.dir, idOf(partial.headers.location!)), 'utf8'), 'hello')
  t.equal(completed.length, 0)

  const whole = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '11', ...OCTET },
    body: 'hello world'
  })
  t.equal(whole.status, 201)
  t.equal(whole.headers['upload-offset'], '11')
  t.equal(completed.length, 1, 'an upload finished during creation fires the completion hook')
  t.equal(completed[0]!.id, idOf(whole.headers.location!))
  t.equal(sha256(await readFile(completed[0]!.path!)), sha256('hello world'))
})

t.test('creation-with-upload refuses a body of another type (415) or longer than the length (413), creating nothing', async (t) => {
  const server = await startServer(t)
  const wrongType = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '5', 'Content-Type': 'text/plain' },
    body: 'hello'
  })
  t.equal(wrongType.status, 415)
  t.match(wrongType.text, /application\/offset\+octet-stream/)
  const tooLong = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3', ...OCTET }, body: 'hello' })
  t.equal(tooLong.status, 413)
  t.same(await infoFiles(server.dir), [])
  // An empty POST is never refused for its Content-Type (T-C-10).
  const empty = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3', 'Content-Type': 'text/plain' } })
  t.equal(empty.status, 201)
})

t.test('a zero-length upload is complete at creation and fires the hook once', async (t) => {
  const completed: UploadInfo[] = []
  const server = await startServer(t, { onUploadComplete: (upload) => { completed.push(upload) } })
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '0' } })
  t.equal(created.status, 201)
  t.equal(created.headers['upload-offset'], '0')
  t.equal(completed.length, 1)
  t.equal(completed[0]!.size, 0)
  const head = await tusRequest(created.headers.location!, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '0')
  t.equal(head.headers['upload-length'], '0')
  const empty = await tusRequest(created.headers.location!, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET } })
  t.equal(empty.status, 204)
  t.equal(completed.length, 1, 'an empty PATCH after completion does not fire it again')
  const download = await tusRequest(created.headers.location!)
  t.equal(download.status, 200)
  t.equal(download.headers['content-length'], '0')
})

t.test('onUploadCreate can refuse with its status and message before anything is stored', async (t) => {
  const seen: Array<{ size: number | undefined, metadata: Record<string, string> }> = []
  const server = await startServer(t, {
    onUploadCreate: (upload) => {
      seen.push({ size: upload.size, metadata: upload.metadata })
      if (upload.metadata.filetype !== 'video/mp4') {
        throw Object.assign(new Error('only video/mp4 is accepted'), { statusCode: 422 })
      }
      if (upload.size === 13) throw new Error('database down')
    }
  })
  const refused = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '5', 'Upload-Metadata': `filetype ${Buffer.from('text/plain').toString('base64')}`, ...OCTET },
    body: 'hello'
  })
  t.equal(refused.status, 422)
  t.equal(refused.text, 'only video/mp4 is accepted')
  const failed = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '13', 'Upload-Metadata': `filetype ${Buffer.from('video/mp4').toString('base64')}` }
  })
  t.equal(failed.status, 500)
  t.equal(failed.text, 'onUploadCreate failed', 'what the hook threw stays in the log')
  t.same(await infoFiles(server.dir), [], 'refused creations store nothing')
  const accepted = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '5', 'Upload-Metadata': `filetype ${Buffer.from('video/mp4').toString('base64')}` }
  })
  t.equal(accepted.status, 201)
  t.same(seen.map((s) => s.size), [5, 13, 5])
  t.equal(seen[2]!.metadata.filetype, 'video/mp4')
})

t.test('Upload-Defer-Length: 1 creates an upload whose HEAD reports the deferred length', async (t) => {
  const server = await startServer(t)
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Defer-Length': '1' } })
  t.equal(created.status, 201)
  const head = await tusRequest(created.headers.location!, { method: 'HEAD' })
  t.equal(head.headers['upload-defer-length'], '1')
  t.equal(head.headers['upload-length'], undefined)
})
