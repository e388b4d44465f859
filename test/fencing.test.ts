// Fencing: an instance that holds an upload's lock freezes (SIGSTOP) past the lock's ttl, another takes over
// and acknowledges bytes, then the first wakes up (SIGCONT) with bytes of its own still to store. It must not
// overwrite what the other acknowledged.
import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { idOf, randomBytesSeeded, sha256, startChild, tusRequest } from './helpers.js'
import { testBucket, uniqueName } from './services.js'

const MiB = 1024 * 1024
const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

t.test('a lock holder frozen past the ttl, then resumed, never overwrites the new holder\'s acknowledged bytes', async (t) => {
  t.setTimeout(180_000)
  const bucket = await testBucket(t)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-fencing-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const env = { TUS_CHILD_BUCKET: bucket, TUS_CHILD_REDIS_PREFIX: `${uniqueName('tus-fence')}:`, TUS_CHILD_REDIS_TTL: '1500', TUS_CHILD_LOCK_TIMEOUT: '8000' }
  const [a, b] = await Promise.all([startChild(t, dir, { ...env, TUS_CHILD_PROGRESS: '1' }), startChild(t, dir, env)])
  t.teardown(() => { a!.child.kill('SIGCONT') })
  const size = 12 * MiB
  const created = await tusRequest(`${b!.origin}/files/`, { method: 'POST', headers: { 'Upload-Length': String(size) } })
  t.equal(created.status, 201)
  const url = `/files/${idOf(new URL(created.headers.location!, b!.origin).href)}`

  // A takes the lock and buffers 3 MiB of a 6 MiB PATCH (a part is 5 MiB: nothing is in S3 yet).
  const stale = randomBytesSeeded(6 * MiB, 100)
  const body = new PassThrough()
  const patchA = tusRequest(`${a!.origin}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET, 'Content-Length': String(stale.length) }, body })
    .then((response) => response.status, () => 'closed')
  body.write(stale.subarray(0, 3 * MiB))
  for (;;) {
    const { value, done } = await a!.lines.next()
    if (done === true) throw new Error('A exited')
    if (/^progress (\d+)$/.test(value) && Number(value.slice(9)) >= 3 * MiB) break
  }
  a!.child.kill('SIGSTOP')

  // B's HEAD waits for A's lock to expire (1.5 s), then the client goes on through B.
  const head = await tusRequest(`${b!.origin}${url}`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], '0', 'A stored nothing before it froze')
  const data = randomBytesSeeded(size, 101)
  const acknowledged = 5 * MiB + 1000
  const patchB = await tusRequest(`${b!.origin}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: data.subarray(0, acknowledged) })
  t.equal(patchB.status, 204)
  t.equal(patchB.headers['upload-offset'], String(acknowledged), 'B acknowledged a whole part and 1000 bytes more')

  // A wakes up with 3 MiB buffered and 3 MiB more arriving: enough for a part, and a remainder.
  a!.child.kill('SIGCONT')
  body.end(stale.subarray(3 * MiB))
  const answerA = await patchA
  t.not(answerA, 204, `the stale PATCH on A is not acknowledged (${String(answerA)})`)

  const after = await tusRequest(`${b!.origin}${url}`, { method: 'HEAD' })
  t.equal(after.headers['upload-offset'], String(acknowledged), 'the offset is still what B acknowledged')
  const rest = await tusRequest(`${a!.origin}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': String(acknowledged), ...OCTET }, body: data.subarray(acknowledged) })
  t.equal(rest.status, 204, 'A, awake and fenced no more, takes the rest')
  for (const server of [a!, b!]) {
    const download = await tusRequest(`${server.origin}${url}`)
    t.equal(download.status, 200)
    t.equal(sha256(download.body), sha256(data), 'every acknowledged byte is intact')
  }
})
