// `npm start` as a person runs it: the example server in a child process (same node flags as the npm
// script), its printed URL, the page and its locally served Uppy bundle, the finished-uploads route, the
// completion log line, CORS, and SIGTERM.
import { readFile, mkdtemp, rm } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { TUS_EXPOSED_HEADERS } from '../lib/index.js'
import { idOf, rawRequest, randomBytesSeeded, sha256, tusRequest, tusUpload } from './helpers.js'
import { runProcess, startProcess, waitForOutput } from './process.js'

const root = join(import.meta.dirname, '..')

t.test('npm start serves the upload page offline-ready, lists finished uploads and logs them', async (t) => {
  const manifest = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  const startScript = manifest.scripts.start ?? ''
  t.match(startScript, /^node --import tsx example\/server\.ts$/, 'npm start runs the example with tsx, no other flag')
  const [, ...nodeArgs] = startScript.split(' ')

  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-example-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const server = startProcess(t, process.execPath, nodeArgs, { cwd: root, env: { PORT: '0', UPLOAD_DIR: dir } })
  const [, origin = ''] = await waitForOutput(server, /open (http:\/\/127\.0\.0\.1:\d+)\//)

  const page = await rawRequest(`${origin}/`)
  t.equal(page.status, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.text, '<link rel="stylesheet" href="/vendor/uppy/uppy.min.css">')
  t.match(page.text, '<script type="module" src="/app.js"></script>')
  const script = await rawRequest(`${origin}/app.js`)
  t.equal(script.status, 200)
  t.match(script.text, "from '/vendor/uppy/uppy.min.mjs'")
  // Offline: nothing the page loads comes from another host.
  for (const [name, text] of [['index.html', page.text], ['app.js', script.text]] as const) {
    t.notMatch(text, /(src|href)="(https?:)?\/\//, `${name} loads nothing from another host`)
    t.notMatch(text, /from '(https?:)?\/\//, `${name} imports nothing from another host`)
  }
  for (const asset of ['uppy.min.mjs', 'uppy.min.css']) {
    const response = await rawRequest(`${origin}/vendor/uppy/${asset}`)
    t.equal(response.status, 200, `${asset} is served from node_modules`)
    t.equal(sha256(response.body), sha256(await readFile(join(root, 'node_modules', 'uppy', 'dist', asset))), `${asset} is Uppy's own file`)
  }

  t.same(JSON.parse((await rawRequest(`${origin}/api/uploads`)).text), [], 'no uploads yet')
  const bytes = randomBytesSeeded(300_000, 9)
  const url = await tusUpload(bytes, { endpoint: `${origin}/files/`, metadata: { filename: 'notes ✓.txt', filetype: 'text/plain' } })
  const unfinished = await tusRequest(`${origin}/files/`, { method: 'POST', headers: { 'Upload-Length': '10' } })
  t.equal(unfinished.status, 201)
  t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(bytes), 'stored in UPLOAD_DIR, byte-identical')

  const listed = JSON.parse((await rawRequest(`${origin}/api/uploads`)).text) as Array<Record<string, unknown>>
  t.equal(listed.length, 1, 'only the finished upload is listed')
  t.match(listed[0], { id: idOf(url), name: 'notes ✓.txt', type: 'text/plain', size: bytes.length, url: `/files/${idOf(url)}` })
  const download = await rawRequest(`${origin}${String(listed[0]?.url)}`)
  t.equal(download.status, 200)
  t.equal(sha256(download.body), sha256(bytes), 'the listed URL downloads the same bytes')
  await waitForOutput(server, new RegExp(`"id":"${idOf(url)}".*"msg":"upload complete"`))
  t.pass('the completed upload is logged through the Fastify logger')

  const cross = await tusRequest(url, { method: 'HEAD', headers: { Origin: 'http://elsewhere.example.test' } })
  t.equal(cross.headers['access-control-allow-origin'], 'http://elsewhere.example.test')
  t.same(cross.headers['access-control-expose-headers']?.split(', '), TUS_EXPOSED_HEADERS, 'every tus header is exposed')

  server.child.kill('SIGTERM')
  t.same(await server.exited, { code: 0, signal: null }, 'SIGTERM: exit 0')
})

t.test('npm start with a PORT that is no port number says so, without a stack trace', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-example-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const [, ...nodeArgs] = (JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start.split(' ')
  for (const port of ['abc', '65536', '-1']) {
    const result = await runProcess(t, process.execPath, nodeArgs, { cwd: root, env: { PORT: port, UPLOAD_DIR: dir } })
    t.equal(result.code, 1, `PORT=${port}: exit code 1`)
    t.equal(result.stderr, `fastify-tus example: PORT must be a port number from 0 to 65535 (got "${port}"): PORT=8081 npm start (PORT=0 picks a free one)\n`, `PORT=${port}: one line`)
  }
})

t.test('npm start on a busy port says so and how to pick another with PORT, without a stack trace', async (t) => {
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { blocker.close() })
  const port = (blocker.address() as AddressInfo).port
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-example-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const [, ...nodeArgs] = (JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start.split(' ')
  const result = await runProcess(t, process.execPath, nodeArgs, { cwd: root, env: { PORT: String(port), UPLOAD_DIR: dir } })
  t.equal(result.code, 1, 'exit code 1')
  t.equal(result.stderr, `fastify-tus example: port ${port} on 127.0.0.1 is already in use; choose another one: PORT=8081 npm start (PORT=0 picks a free one)\n`,
    'one line naming the port and PORT')
  t.notMatch(result.stderr, /\n\s+at /, 'no stack trace')
})
