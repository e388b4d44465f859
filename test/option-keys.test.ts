// An option the plugin (or a store, a locker, the tusd hooks) does not know is refused at registration, naming it:
// a misspelt limit or hook used to be ignored, so what the app meant (a size limit, a refusal) was silently off.
import t, { type Test } from 'tap'
import { Writable } from 'node:stream'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import { tusdFileHooks, tusdHttpHooks } from '../lib/cli-hooks.js'
import tusPlugin, { FileLocker, FileStore, type TusPluginOptions } from '../lib/index.js'
import { RedisLocker } from '../lib/lockers/redis-locker.js'
import { S3Store } from '../lib/store/s3-store.js'
import { startServer, tusRequest } from './helpers.js'

async function refused (t: Test, options: Record<string, unknown>, message: RegExp): Promise<void> {
  const app = Fastify()
  await t.rejects(async () => { await app.register(tusPlugin, options as TusPluginOptions).ready() }, { code: 'FST_TUS_INVALID_OPTION', message }, JSON.stringify(options))
  await app.close()
}

t.test('a misspelt option is refused at registration, naming it and the option meant', async (t) => {
  await refused(t, { maxsize: 10 }, /^fastify-tus: the plugin has no option "maxsize" \(did you mean "maxSize"\?\)$/)
  await refused(t, { onUploadCreated: () => {} }, /no option "onUploadCreated" \(did you mean "onUploadCreate"\?\)/)
  await refused(t, { daysTokeep: 1 }, /no option "daysTokeep" \(did you mean "daysToKeep"\?\)/)
  await refused(t, { idleTimout: 1000 }, /no option "idleTimout" \(did you mean "idleTimeout"\?\)/)
  await refused(t, { ietfDraftVersion: [6] }, /did you mean "ietfDraftVersions"\?/)
  await refused(t, { maxsize: undefined }, /no option "maxsize"/)
  await refused(t, { somethingElse: true }, /^fastify-tus: the plugin has no option "somethingElse"$/)
})

t.test('an option of a store, a locker or another tus server given to the plugin says where it belongs', async (t) => {
  await refused(t, { directory: '/tmp/x' }, /no option "directory" \(the file store's directory is the plugin's `dir`\)/)
  await refused(t, { fsync: false }, /no option "fsync" \(an option of FileStore/)
  await refused(t, { bucket: 'b' }, /no option "bucket" \(an option of S3Store/)
  await refused(t, { ttlMs: 1000 }, /no option "ttlMs" \(an option of FileLocker and RedisLocker/)
  await refused(t, { path: '/files' }, /no option "path" \(did you mean "prefix"\?\)/)
  await refused(t, { datastore: {} }, /no option "datastore" \(did you mean "store"\?\)/)
  await refused(t, { onUploadFinish: () => {} }, /did you mean "onUploadComplete"\?/)
  await refused(t, { namingFunction: () => 'x' }, /onUploadCreate may return \{ id \}/)
})

t.test('options of the stores, the lockers and the tusd hooks refuse unknown keys too', async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'fastify-tus-option-keys-'))
  t.teardown(async () => { await rm(directory, { recursive: true, force: true }) })
  const code = 'FST_TUS_INVALID_OPTION'
  t.throws(() => new FileStore({ directory, fsnyc: false } as never), { code, message: /FileStore has no option "fsnyc" \(did you mean "fsync"\?\)/ })
  t.throws(() => new FileStore({ dir: directory } as never), { code, message: /FileStore has no option "dir" \(did you mean "directory"\?\)/ })
  t.throws(() => new FileStore({} as never), { code, message: /FileStore directory must be a non-empty string/ })
  t.throws(() => new FileLocker({ directory, ttl: 1000 } as never), { code, message: /FileLocker has no option "ttl" \(did you mean "ttlMs"\?\)/ })
  t.throws(() => new RedisLocker({ redis: {} as never, retryMS: 10 } as never), { code, message: /RedisLocker has no option "retryMS" \(did you mean "retryMs"\?\)/ })
  t.throws(() => new S3Store({ bucket: 'b', s3: {}, partsize: 5 * 1024 * 1024 } as never), { code, message: /S3Store has no option "partsize" \(did you mean "partSize"\?\)/ })
  t.throws(() => tusdHttpHooks({ url: 'http://127.0.0.1:1/', timeout: 1000 } as never), { code, message: /tusdHttpHooks has no option "timeout" \(did you mean "timeoutMs"\?\)/ })
  t.throws(() => tusdFileHooks({ directory, event: ['pre-create'] } as never), { code, message: /tusdFileHooks has no option "event" \(did you mean "events"\?\)/ })
  t.same(await readdir(directory), [], 'nothing was written')
})

t.test('Fastify\'s own register options are accepted and applied to the tus routes (tus and draft)', async (t) => {
  const lines: Array<{ msg?: string, url?: string, req?: { url?: string } }> = []
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { lines.push(JSON.parse(chunk.toString()) as never); done() } })
  const server = await startServer(t, {}, async (app, dir) => {
    app.get('/elsewhere', async () => 'ok')
    await app.register(tusPlugin, { dir, maxSize: 10, logLevel: 'warn', logSerializers: { req: (request: { url: string }) => request.url } } as TusPluginOptions)
  }, { logger: { level: 'info', stream } })
  const tus = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '11' } })
  t.equal(tus.status, 413, 'tus: maxSize, spelt right, is enforced')
  const draft = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0', 'Upload-Length': '11', 'Content-Length': '0' } })
  t.equal(draft.status, 413, 'draft: maxSize, spelt right, is enforced')
  const elsewhere = await tusRequest(`${server.origin}/elsewhere`)
  t.equal(elsewhere.status, 200)
  const incoming = lines.filter((line) => line.msg === 'incoming request')
  t.same(incoming.map((line) => line.req?.url), ['/elsewhere'], 'logLevel: warn keeps the tus routes\' info lines out; the app\'s own route logs as before')
})
