// Property-based: random sequences of chunk sizes, wrong offsets, cut-off bodies and concurrent PATCHes
// against a live server never break the invariant: stored bytes == a prefix of the source, offset == stored length.
import t from 'tap'
import fc from 'fast-check'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { createUpload, idOf, randomBytesSeeded, sha256, startServer, tusRequest, type TestServer } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
const SIZE = 64 * 1024

type Step =
  | { kind: 'patch', length: number }
  | { kind: 'wrongOffset', delta: number }
  | { kind: 'cut', length: number, sent: number }
  | { kind: 'concurrent', length: number }

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('patch' as const), length: fc.integer({ min: 0, max: 20_000 }) }),
  fc.record({ kind: fc.constant('wrongOffset' as const), delta: fc.integer({ min: -5000, max: 5000 }).filter((d) => d !== 0) }),
  fc.record({ kind: fc.constant('cut' as const), length: fc.integer({ min: 1, max: 20_000 }), sent: fc.integer({ min: 0, max: 20_000 }) }),
  fc.record({ kind: fc.constant('concurrent' as const), length: fc.integer({ min: 1, max: 20_000 }) })
)

async function currentOffset (url: string): Promise<number> {
  return Number((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'])
}

async function patch (url: string, offset: number, body: Buffer): Promise<number> {
  return (await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...OCTET }, body }).catch(() => ({ status: 0 }))).status
}

async function cutPatch (server: TestServer, url: string, offset: number, length: number, body: Buffer): Promise<void> {
  const started = once(server.app.tus, 'progress')
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  socket.on('error', () => {})
  await once(socket, 'connect')
  socket.write(`PATCH ${new URL(url).pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: ${offset}\r\n` +
    `Content-Type: application/offset+octet-stream\r\nContent-Length: ${length}\r\n\r\n`)
  socket.write(body)
  await started
  socket.destroy()
}

t.test('random PATCH sequences keep stored bytes a prefix of the source and the offset equal to them', async (t) => {
  const server = await startServer(t, { progressInterval: 0 })
  const source = randomBytesSeeded(SIZE, 31)
  await fc.assert(fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), async (steps) => {
    const url = await createUpload(server, { 'Upload-Length': String(SIZE) })
    for (const action of steps) {
      const offset = await currentOffset(url)
      const room = SIZE - offset
      if (action.kind === 'patch') {
        const length = Math.min(action.length, room)
        if (await patch(url, offset, source.subarray(offset, offset + length)) !== 204) return false
      } else if (action.kind === 'wrongOffset') {
        const wrong = offset + action.delta
        if (wrong >= 0 && await patch(url, wrong, source.subarray(0, 10)) !== 409) return false
      } else if (action.kind === 'cut' && room > 0) {
        const length = Math.min(action.length, room)
        await cutPatch(server, url, offset, length, source.subarray(offset, offset + Math.min(action.sent, length - 1)))
      } else if (action.kind === 'concurrent' && room > 0) {
        const chunk = source.subarray(offset, offset + Math.min(action.length, room))
        const statuses = await Promise.all([patch(url, offset, chunk), patch(url, offset, chunk)])
        if (!statuses.some((status) => status === 204 || status === 409 || status === 0)) return false
      }
      // HEAD first: it waits for the upload's lock, so a cut request has finished storing what arrived.
      const reported = await currentOffset(url)
      const stored = await readFile(join(server.dir, idOf(url)))
      if (reported !== stored.length || !stored.equals(source.subarray(0, stored.length))) return false
    }
    const offset = await currentOffset(url)
    if (await patch(url, offset, source.subarray(offset)) !== 204) return false
    return sha256(await readFile(join(server.dir, idOf(url)))) === sha256(source)
  }), { numRuns: 25, seed: 20261129 })
  t.pass('the invariant held for every generated sequence')
})
