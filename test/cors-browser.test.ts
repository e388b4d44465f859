// Cross-origin browser uploads in real headless Chromium (Debian's `chromium`): the page is served from one
// origin (http://127.0.0.1:<A>), the tus server runs on another (http://localhost:<B>), so every PATCH, HEAD
// and DELETE needs a CORS preflight. For the README recipe (`app.register(cors, tusCorsOptions([...]))`), the
// example app and the CLI (`--cors-origin`): tus-js-client with its default settings uploads, is aborted
// part-way and resumed from the server's offset, and terminates an upload (DELETE); Uppy's Tus plugin does
// the same with pause/resume and removing a file. No console error (CORS failures are logged there), bytes
// compared by sha256 on disk. The old recipe (exposed headers only) is shown to fail in the same harness.
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createRequire } from 'node:module'
import cors from '@fastify/cors'
import Fastify from 'fastify'
import t, { type Test } from 'tap'
import { chromium, type BrowserContext, type CDPSession, type Page } from 'playwright-core'
import { buildExampleApp } from '../example/app.js'
import tus, { TUS_EXPOSED_HEADERS, tusCorsOptions } from '../lib/index.js'
import { randomBytesSeeded, rawRequest, sha256, tusRequest } from './helpers.js'
import { startProcess, waitForOutput } from './process.js'

const CHROMIUM = '/usr/bin/chromium'
const root = join(import.meta.dirname, '..')
const cli = join(root, 'dist', 'cli.js')
const MiB = 1024 * 1024
const require = createRequire(import.meta.url)

/** A tus server on another origin than the page: its endpoint as the browser sees it, and its upload dir. */
interface TusServer { endpoint: string, dir: string }

/** What the page keeps per upload, read through `window.uploads` (the tests have no DOM types). */
interface UploadState { progress: number, url: string | null, done: boolean, error: string | null, terminated: boolean }
type PageGlobals = Record<string, any>

/** Blobs the page fetches (same origin as the page) and uploads; the test knows their bytes. */
const blobs = new Map<string, Buffer>()

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>cross-origin uploads</title>
<script src="/vendor/tus.min.js"></script>
<script type="module">
import { Uppy, Tus } from '/vendor/uppy.min.mjs'
window.uploads = {}
const fileOf = async (name) => new File([await (await fetch('/blob/' + name)).blob()], name, { type: 'application/octet-stream' })

// tus-js-client with its default settings: only the endpoint, metadata and callbacks (and \`options\` a test adds).
window.tusStart = async (endpoint, name, options = {}) => {
  const state = window.uploads[name] = { progress: 0, url: null, done: false, error: null, terminated: false }
  const upload = new tus.Upload(await fileOf(name), {
    ...options,
    endpoint,
    metadata: { filename: name, filetype: 'application/octet-stream' },
    onProgress: (sent) => { state.progress = sent },
    onSuccess: () => { state.done = true; state.url = upload.url },
    onError: (error) => { state.error = String(error) },
    onUploadUrlAvailable: () => { state.url = upload.url }
  })
  window['tus:' + name] = upload
  upload.start()
}
window.tusAbort = async (name, terminate) => {
  await window['tus:' + name].abort(terminate)
  if (terminate) window.uploads[name].terminated = true
}
window.tusResume = (name) => { window['tus:' + name].start() }

// Uppy's Tus plugin, defaults but for the endpoint.
window.uppyStart = async (endpoint, name) => {
  const state = window.uploads[name] = { progress: 0, url: null, done: false, error: null, terminated: false }
  const uppy = new Uppy({ autoProceed: false }).use(Tus, { endpoint })
  uppy.on('upload-progress', (file, progress) => { state.progress = progress.bytesUploaded; state.url = file.tus?.uploadUrl ?? null })
  uppy.on('upload-success', (file, response) => { state.done = true; state.url = response.uploadURL })
  uppy.on('upload-error', (file, error) => { state.error = String(error) })
  const file = await fileOf(name)
  const id = uppy.addFile({ name, type: file.type, data: file })
  window['uppy:' + name] = { uppy, id }
  uppy.upload().catch((error) => { state.error = String(error) })
}
window.uppyPauseResume = (name) => { const { uppy, id } = window['uppy:' + name]; uppy.pauseResume(id) }
window.uppyRemove = (name) => {
  const { uppy, id } = window['uppy:' + name]
  const url = uppy.getFile(id).tus?.uploadUrl ?? null
  uppy.removeFile(id)
  window.uploads[name].url = url
}
window.ready = true
</script>`

async function startPageServer (t: Tap): Promise<string> {
  const app = Fastify()
  app.get('/', async (_request, reply) => await reply.type('text/html; charset=utf-8').send(PAGE))
  app.get('/vendor/tus.min.js', async (_request, reply) =>
    await reply.type('text/javascript').send(await readFile(require.resolve('tus-js-client/dist/tus.min.js'))))
  app.get('/vendor/uppy.min.mjs', async (_request, reply) =>
    await reply.type('text/javascript').send(await readFile(join(root, 'node_modules', 'uppy', 'dist', 'uppy.min.mjs'))))
  app.get('/blob/:name', async (request, reply) => {
    const bytes = blobs.get((request.params as { name: string }).name)
    return bytes === undefined ? await reply.code(404).send() : await reply.type('application/octet-stream').send(bytes)
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
}

interface Tap { teardown: (fn: () => unknown) => void }
type TapTest = Test

/** localhost:<port>: a different origin from the page's 127.0.0.1:<port> (the host differs as well as the port). */
function browserEndpoint (port: number): string { return `http://localhost:${port}/files/` }
/** The same server as Node reaches it (localhost may resolve to ::1 first; the servers listen on 127.0.0.1). */
const direct = (url: string): string => url.replace('//localhost:', '//127.0.0.1:')

async function tempDir (t: Tap, name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `fastify-tus-cors-${name}-`))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

async function recipeServer (t: Tap, pageOrigin: string): Promise<TusServer> {
  const dir = await tempDir(t, 'recipe')
  const app = Fastify()
  // The README's recipe, with the page's origin for https://app.example.com.
  await app.register(cors, tusCorsOptions([pageOrigin]))
  await app.register(tus, { prefix: '/files', dir })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  return { endpoint: browserEndpoint((app.server.address() as AddressInfo).port), dir }
}

async function exampleServer (t: Tap): Promise<TusServer> {
  const dir = await tempDir(t, 'example')
  const app = await buildExampleApp({ dir, logger: false })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  return { endpoint: browserEndpoint((app.server.address() as AddressInfo).port), dir }
}

async function cliServer (t: Tap, pageOrigin: string): Promise<TusServer> {
  const dir = await tempDir(t, 'cli')
  const server = startProcess(t, process.execPath, [cli, '--dir', dir, '--port', '0', '--cors-origin', pageOrigin, '--log-level', 'warn'])
  const [, port = ''] = await waitForOutput(server, /tus endpoint at http:\/\/127\.0\.0\.1:(\d+)\/files\//)
  return { endpoint: browserEndpoint(Number(port)), dir }
}

async function state (page: Page, name: string): Promise<UploadState> {
  return await page.evaluate((key) => (globalThis as PageGlobals).uploads[key] as UploadState, name)
}

async function waitFor (page: Page, name: string, condition: 'progress' | 'done' | 'error', atLeast = 0): Promise<UploadState> {
  await page.waitForFunction(([key, what, min]) => {
    const upload = (globalThis as PageGlobals).uploads[key as string]
    if (upload === undefined) return false
    if (upload.error !== null && what !== 'error') throw new Error(`upload ${key as string} failed: ${upload.error as string}`)
    return what === 'progress' ? upload.progress >= (min as number) && upload.url !== null : what === 'done' ? upload.done : upload.error !== null
  }, [name, condition, atLeast] as const, { timeout: 60_000 })
  return await state(page, name)
}

async function throttle (cdp: CDPSession, bytesPerSecond: number): Promise<void> {
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: bytesPerSecond })
}

/** The offset the server holds (HEAD from Node, which waits for the aborted request to let the upload go). */
async function serverOffset (url: string): Promise<number> {
  const head = await tusRequest(direct(url), { method: 'HEAD' })
  if (head.status !== 200) throw new Error(`HEAD ${url}: ${head.status}`)
  return Number(head.headers['upload-offset'])
}

interface Seen { method: string, url: string, offset: string | undefined, requestId: string | undefined, status?: number }

/**
 * Every scenario against one server: tus-js-client and Uppy, each uploading with a resume and terminating; and
 * tus-js-client with addRequestId.
 */
async function crossOriginScenarios (t: TapTest,
  page: Page, cdp: CDPSession, server: TusServer, label: string, seen: Seen[]): Promise<void> {
  for (const client of ['tus', 'uppy'] as const) {
    // 1. Upload with an interruption part-way: tus-js-client abort() then start(); Uppy pause then resume.
    const name = `${label}-${client}-resumed.bin`
    const bytes = randomBytesSeeded(4 * MiB + 4321, name.length + (client === 'tus' ? 1 : 2))
    blobs.set(name, bytes)
    await throttle(cdp, 1 * MiB)
    await page.evaluate(([start, endpoint, key]) => (globalThis as PageGlobals)[start](endpoint, key),
      [client === 'tus' ? 'tusStart' : 'uppyStart', server.endpoint, name] as const)
    const part = await waitFor(page, name, 'progress', 512 * 1024)
    const url = part.url ?? ''
    t.ok(url.startsWith(server.endpoint), `${label}/${client}: the upload was created cross-origin (${url})`)
    if (client === 'tus') await page.evaluate((key) => (globalThis as PageGlobals).tusAbort(key, false), name)
    else await page.evaluate((key) => { (globalThis as PageGlobals).uppyPauseResume(key) }, name)
    const held = await serverOffset(url)
    t.ok(held > 0 && held < bytes.length, `${label}/${client}: interrupted part-way, the server holds ${held} of ${bytes.length} bytes`)
    const mark = seen.length
    await throttle(cdp, -1)
    if (client === 'tus') await page.evaluate((key) => { (globalThis as PageGlobals).tusResume(key) }, name)
    else await page.evaluate((key) => { (globalThis as PageGlobals).uppyPauseResume(key) }, name)
    const done = await waitFor(page, name, 'done')
    t.equal(done.url, url, `${label}/${client}: the upload that completed is the one interrupted`)
    const after = seen.slice(mark).filter((request) => request.url === url || request.url === server.endpoint)
    t.equal(after.filter((request) => request.method === 'POST').length, 0, `${label}/${client}: resuming created no new upload`)
    const patch = after.find((request) => request.method === 'PATCH')
    t.ok(patch !== undefined && Number(patch.offset) > 0, `${label}/${client}: resumed with a PATCH from offset ${patch?.offset}`)
    t.ok(after.some((request) => request.method === 'PATCH' && request.status === 204), `${label}/${client}: the PATCH answered 204`)
    const id = new URL(url).pathname.split('/').pop() ?? ''
    t.equal(sha256(await readFile(join(server.dir, id))), sha256(bytes), `${label}/${client}: the bytes on disk match (sha256)`)

    // 2. Termination: aborting with terminate (tus-js-client) / removing the file (Uppy) sends DELETE.
    const gone = `${label}-${client}-terminated.bin`
    blobs.set(gone, randomBytesSeeded(4 * MiB, gone.length))
    await throttle(cdp, 1 * MiB)
    await page.evaluate(([start, endpoint, key]) => (globalThis as PageGlobals)[start](endpoint, key),
      [client === 'tus' ? 'tusStart' : 'uppyStart', server.endpoint, gone] as const)
    const started = await waitFor(page, gone, 'progress', 256 * 1024)
    const goneUrl = started.url ?? ''
    const deleted = page.waitForResponse((response) => response.request().method() === 'DELETE' && response.url() === goneUrl)
    if (client === 'tus') await page.evaluate((key) => (globalThis as PageGlobals).tusAbort(key, true), gone)
    else await page.evaluate((key) => { (globalThis as PageGlobals).uppyRemove(key) }, gone)
    t.equal((await deleted).status(), 204, `${label}/${client}: DELETE answered 204 cross-origin`)
    await throttle(cdp, -1)
    const head = await tusRequest(direct(goneUrl), { method: 'HEAD' })
    t.equal(head.status, 404, `${label}/${client}: the terminated upload is gone`)
    t.notOk(existsSync(join(server.dir, new URL(goneUrl).pathname.split('/').pop() ?? '')), `${label}/${client}: its file is removed`)
  }

  // 3. tus-js-client's addRequestId: an X-Request-ID on every request, which each preflight must allow.
  const traced = `${label}-tus-request-id.bin`
  const tracedBytes = randomBytesSeeded(64 * 1024, traced.length)
  blobs.set(traced, tracedBytes)
  const mark = seen.length
  await page.evaluate(([endpoint, key]) => (globalThis as PageGlobals).tusStart(endpoint, key, { addRequestId: true }), [server.endpoint, traced] as const)
  const done = await waitFor(page, traced, 'done')
  const sent = seen.slice(mark).filter((request) => request.method === 'POST' || request.method === 'PATCH')
  t.same(sent.map((request) => [request.method, request.status, request.requestId !== undefined]), [['POST', 201, true], ['PATCH', 204, true]],
    `${label}/tus addRequestId: POST and PATCH sent with X-Request-ID, answered cross-origin`)
  t.equal(sha256(await readFile(join(server.dir, new URL(done.url ?? '').pathname.split('/').pop() ?? ''))), sha256(tracedBytes),
    `${label}/tus addRequestId: the bytes on disk match (sha256)`)
}

t.test('cross-origin uploads, resumes and terminations in Chromium: README recipe, example app, CLI', async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.fail(`Chromium is missing at ${CHROMIUM}: install it as root with \`apt-get install chromium\` (npm test does this when run as root)`)
    return
  }
  if (!existsSync(cli)) throw new Error('dist/cli.js is missing: run npm run build (npm test does)')
  const pageOrigin = await startPageServer(t)
  const work = await tempDir(t, 'profile')
  const context: BrowserContext = await chromium.launchPersistentContext(work, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic']
  })
  t.teardown(async () => { await context.close() })
  const page = context.pages()[0] ?? await context.newPage()
  const consoleErrors: string[] = []
  page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()) })
  page.on('pageerror', (error) => { consoleErrors.push(error.message) })
  const seen: Seen[] = []
  page.on('request', (request) => {
    if (request.url().startsWith(pageOrigin)) return
    seen.push({ method: request.method(), url: request.url(), offset: request.headers()['upload-offset'], requestId: request.headers()['x-request-id'] })
  })
  page.on('response', (response) => {
    const entry = seen.findLast((request) => request.url === response.url() && request.method === response.request().method() && request.status === undefined)
    if (entry !== undefined) entry.status = response.status()
  })
  await page.goto(`${pageOrigin}/`)
  await page.waitForFunction(() => (globalThis as PageGlobals).ready === true)
  const cdp = await context.newCDPSession(page)

  for (const [label, start] of [
    ['readme', async () => await recipeServer(t, pageOrigin)],
    ['example', async () => await exampleServer(t)],
    ['cli', async () => await cliServer(t, pageOrigin)]
  ] as const) {
    const server = await start()
    t.not(new URL(server.endpoint).origin, pageOrigin, `${label}: the server is on another origin than the page`)
    const before = consoleErrors.length
    await crossOriginScenarios(t, page, cdp, server, label, seen)
    t.same(consoleErrors.slice(before), [], `${label}: no console error (no CORS error)`)
  }
  t.ok(seen.some((request) => request.method === 'DELETE'), 'DELETEs were sent')

  // The harness sees a broken setup: the old recipe (tus headers exposed, @fastify/cors's default methods).
  const dir = await tempDir(t, 'old')
  const old = Fastify()
  await old.register(cors, { origin: [pageOrigin], exposedHeaders: [...TUS_EXPOSED_HEADERS] })
  await old.register(tus, { prefix: '/files', dir })
  await old.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await old.close() })
  const oldEndpoint = browserEndpoint((old.server.address() as AddressInfo).port)
  blobs.set('old.bin', randomBytesSeeded(64 * 1024, 5))
  await page.evaluate(([endpoint, key]) => (globalThis as PageGlobals).tusStart(endpoint, key), [oldEndpoint, 'old.bin'] as const)
  const failed = await waitFor(page, 'old.bin', 'error')
  t.match(failed.error, /failed to upload chunk|response code: n\/a/, 'the old recipe: tus-js-client fails at the PATCH')
  t.ok(consoleErrors.some((message) => /CORS policy/.test(message) && /PATCH/.test(message)), 'with a CORS error in the console naming PATCH')
  const discovery = await rawRequest(direct(oldEndpoint), { method: 'OPTIONS' })
  t.equal(discovery.status, 400, 'and its discovery OPTIONS without Origin is "400 Invalid Preflight Request"')
})
