import t from 'tap'
import { request as httpRequest } from 'node:http'
import { createUpload, randomBytesSeeded, sha256, startServer, tusRequest } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

function metadata (fields: Record<string, string>): string {
  return Object.entries(fields).map(([key, value]) => `${key} ${Buffer.from(value).toString('base64')}`).join(',')
}

async function finishedUpload (t: Parameters<typeof startServer>[0], data: Buffer, fields: Record<string, string> = {}) {
  const server = await startServer(t)
  const created = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': String(data.length), 'Upload-Metadata': metadata(fields), ...OCTET },
    body: data
  })
  if (created.status !== 201) throw new Error(created.text)
  return { server, url: created.headers.location! }
}

t.test('GET downloads a finished upload with type, disposition and length from the metadata', async (t) => {
  const data = randomBytesSeeded(200_000)
  const { url } = await finishedUpload(t, data, { filename: 'report 2026.pdf', filetype: 'application/pdf' })
  const response = await tusRequest(url)
  t.equal(response.status, 200)
  t.equal(sha256(response.body), sha256(data))
  t.equal(response.headers['content-length'], '200000')
  t.equal(response.headers['content-type'], 'application/pdf')
  t.equal(response.headers['content-disposition'], 'attachment; filename="report 2026.pdf"; filename*=UTF-8\'\'report%202026.pdf')
  t.equal(response.headers['x-content-type-options'], 'nosniff')
  t.equal(response.headers['accept-ranges'], 'bytes')
  t.equal(response.headers['tus-resumable'], '1.0.0')
})

t.test('hostile filenames and types are never reflected raw into headers', async (t) => {
  const data = Buffer.from('x')
  const { url } = await finishedUpload(t, data, {
    filename: '../../etc/pass"wd\r\nSet-Cookie: a=b ünï.txt',
    filetype: 'text/html\r\nX-Injected: 1'
  })
  const response = await tusRequest(url)
  t.equal(response.status, 200)
  t.equal(response.headers['x-injected'], undefined)
  t.equal(response.headers['set-cookie'], undefined)
  t.equal(response.headers['content-type'], 'application/octet-stream', 'an invalid type falls back')
  t.equal(response.headers['content-disposition'],
    'attachment; filename=".._.._etc_pass_wdSet-Cookie: a=b _n_.txt"; ' +
    "filename*=UTF-8''.._.._etc_pass%22wdSet-Cookie%3A%20a%3Db%20%C3%BCn%C3%AF.txt")
})

t.test('without metadata the id names the download and the type is octet-stream', async (t) => {
  const { url } = await finishedUpload(t, Buffer.from('abc'))
  const response = await tusRequest(url)
  const id = new URL(url).pathname.split('/').pop()!
  t.equal(response.headers['content-type'], 'application/octet-stream')
  t.equal(response.headers['content-disposition'], `attachment; filename="${id}"; filename*=UTF-8''${id}`)
})

t.test('Range requests get 206 with the right bytes; unsatisfiable ones 416', async (t) => {
  const data = randomBytesSeeded(1000, 7)
  const { url } = await finishedUpload(t, data)
  const cases: Array<[string, number, number]> = [
    ['bytes=0-9', 0, 9],
    ['bytes=990-', 990, 999],
    ['bytes=-5', 995, 999],
    ['bytes=500-5000', 500, 999],
    ['bytes=-5000', 0, 999]
  ]
  for (const [range, start, end] of cases) {
    const response = await tusRequest(url, { headers: { Range: range } })
    t.equal(response.status, 206, range)
    t.equal(response.headers['content-range'], `bytes ${start}-${end}/1000`)
    t.equal(response.headers['content-length'], String(end - start + 1))
    t.same(response.body, data.subarray(start, end + 1))
  }
  for (const range of ['bytes=1000-', 'bytes=5000-6000', 'bytes=-0']) {
    const response = await tusRequest(url, { headers: { Range: range } })
    t.equal(response.status, 416, range)
    t.equal(response.headers['content-range'], 'bytes */1000')
    t.match(response.text, /cannot be satisfied/)
  }
  for (const range of ['bytes=0-1,5-6', 'items=0-1', 'bytes=9-3']) {
    const response = await tusRequest(url, { headers: { Range: range } })
    t.equal(response.status, 200, `${range} is ignored`)
    t.equal(response.body.length, 1000)
  }
})

t.test('GET of an unfinished upload is 409; of an unknown or invalid id 404', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '10' })
  await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'abc' })
  const unfinished = await tusRequest(url)
  t.equal(unfinished.status, 409)
  t.equal(unfinished.text, 'Upload is not complete yet (3 of 10 bytes)')
  const deferred = await createUpload(server, { 'Upload-Defer-Length': '1' })
  t.equal((await tusRequest(deferred)).status, 409)
  // Sent verbatim (node:http does not normalise paths the way URL parsing does).
  for (const id of ['AAAAAAAAAAAAAAAAAAAAA', '..', '%2e%2e', '..%2f..%2fetc%2fpasswd', '%00', 'a.json', '%2Fetc%2Fpasswd']) {
    for (const method of ['GET', 'HEAD', 'DELETE']) {
      const response = await verbatim(server.origin, method, `/files/${id}`)
      t.equal(response.status, 404, `${method} ${id}`)
      t.equal(response.headers['tus-resumable'], '1.0.0')
    }
  }
})

async function verbatim (origin: string, method: string, path: string): Promise<{ status: number, headers: Record<string, unknown> }> {
  const { port } = new URL(origin)
  return await new Promise((resolve, reject) => {
    const request = httpRequest({ host: '127.0.0.1', port, method, path, headers: { 'Tus-Resumable': '1.0.0' } }, (response) => {
      response.resume()
      response.on('end', () => { resolve({ status: response.statusCode!, headers: response.headers }) })
    })
    request.on('error', reject)
    request.end()
  })
}
