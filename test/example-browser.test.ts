// The example app as a person uses it: real headless Chromium (Debian's `chromium`, never a downloaded
// browser) opens the upload page, adds files through Uppy's file input, uploads, pauses and resumes a
// throttled upload, loses the network mid-upload and carries on, and downloads a finished upload from the
// list. Bytes are compared by sha256 on disk and through the download. On failure, screenshots of the page
// before and after go to test-artifacts/.
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { buildExampleApp } from '../example/app.js'
import { tusRequest } from './helpers.js'

const CHROMIUM = '/usr/bin/chromium'
const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts')
const MiB = 1024 * 1024

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

/** The state of one Uppy file the test reads through `window.uppy` (set by the page for this purpose). */
interface FileState {
  bytesUploaded: number
  complete: boolean
  isPaused: boolean
  uploadUrl: string | null
}

/** What the page exposes for the test: `window.uppy` (the tests have no DOM types, so it is spelled out). */
interface PageGlobals {
  uppy: {
    getFiles: () => Array<{
      name: string
      isPaused?: boolean
      progress: { bytesUploaded: number | false, uploadComplete?: boolean }
      tus?: { uploadUrl?: string | null }
    }>
  }
}

async function fileState (page: Page, name: string): Promise<FileState> {
  return await page.evaluate((fileName) => {
    const file = (globalThis as unknown as PageGlobals).uppy.getFiles().find((candidate) => candidate.name === fileName)
    if (file === undefined) throw new Error(`Uppy has no file named ${fileName}`)
    return {
      bytesUploaded: Number(file.progress.bytesUploaded),
      complete: file.progress.uploadComplete === true,
      isPaused: file.isPaused === true,
      uploadUrl: file.tus?.uploadUrl ?? null
    }
  }, name)
}

t.test('the example page uploads, pauses and resumes, survives an outage, and lists downloads, in headless Chromium', async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.fail(`Chromium is missing at ${CHROMIUM}: install it as root with \`apt-get install chromium\` ` +
      '(npm test does this when run as root)')
    return
  }

  const work = await mkdtemp(join(tmpdir(), 'fastify-tus-browser-'))
  t.teardown(async () => { await rm(work, { recursive: true, force: true }) })
  const uploadDir = join(work, 'uploads')

  // The very app `npm start` runs, in-process so the test can watch the requests it receives.
  const app = await buildExampleApp({ dir: uploadDir, logger: false })
  const requests: Array<{ method: string, url: string, offset: string | undefined }> = []
  app.addHook('onRequest', async (request) => {
    const offset = request.headers['upload-offset']
    requests.push({ method: request.method, url: request.url, offset: typeof offset === 'string' ? offset : undefined })
  })
  const completed: string[] = []
  app.tus.on('completed', (upload) => { completed.push(upload.id) })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  const origin = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`

  const context: BrowserContext = await chromium.launchPersistentContext(join(work, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic']
  })
  t.teardown(async () => { await context.close() })
  // The page must work offline: record every request that would leave our server.
  const foreignRequests: string[] = []
  context.on('request', (request) => {
    if (!request.url().startsWith(`${origin}/`)) foreignRequests.push(request.url())
  })
  const page = context.pages()[0] ?? await context.newPage()
  const pageErrors: string[] = []
  page.on('pageerror', (error) => { pageErrors.push(error.message) })

  // 256 KiB chunks: many PATCH requests, so a throttled upload can be paused part-way.
  await page.goto(`${origin}/?chunkSize=${256 * 1024}`)
  await page.waitForSelector('.uppy-Dashboard')
  const before = await page.screenshot({ fullPage: true })
  t.teardown(async () => {
    if (t.passing()) return
    await mkdir(ARTIFACTS, { recursive: true })
    await writeFile(join(ARTIFACTS, 'example-browser-before.png'), before)
    if (!page.isClosed()) await page.screenshot({ path: join(ARTIFACTS, 'example-browser-after.png'), fullPage: true })
    t.comment(`screenshots in ${ARTIFACTS}; page errors: ${JSON.stringify(pageErrors)}`)
  })

  t.equal(await page.locator('#uploads-empty').isVisible(), true, 'the list starts empty')
  const fileInput = page.locator('input.uppy-Dashboard-input:not([webkitdirectory])')

  // 1. A file of a few MiB: add it, upload it, see it reported and listed.
  const small = randomBytes(3 * MiB + 12345)
  const smallPath = join(work, 'small.bin')
  await writeFile(smallPath, small)
  await fileInput.setInputFiles(smallPath)
  await page.click('.uppy-StatusBar-actionBtn--upload')
  await page.waitForSelector('.uppy-StatusBar.is-complete')
  const smallRow = page.locator('#uploads tbody tr', { hasText: 'small.bin' })
  await smallRow.waitFor()
  t.equal(completed.length, 1, 'the server completed one upload')
  const smallId = completed[0] as string
  t.equal(sha256(await readFile(join(uploadDir, smallId))), sha256(small), 'the stored bytes match (sha256)')
  t.equal(await smallRow.getAttribute('data-id'), smallId, 'the list shows the finished upload')
  t.match(await smallRow.locator('td.size').getAttribute('title'), `${small.length} bytes`, 'with its size')

  // 2. A larger file on a throttled network: pause part-way, check the server holds part of it, resume.
  const large = randomBytes(12 * MiB + 54321)
  const largePath = join(work, 'large.bin')
  await writeFile(largePath, large)
  const cdp = await context.newCDPSession(page)
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 50, downloadThroughput: -1, uploadThroughput: 2 * MiB
  })
  // "Done" clears the finished batch and brings the file picker back, as a person would do.
  await page.click('.uppy-StatusBar-actionBtn--done')
  await fileInput.setInputFiles(largePath)
  await page.click('.uppy-StatusBar-actionBtn--upload')
  await page.waitForFunction(() => {
    const file = (globalThis as unknown as PageGlobals).uppy.getFiles().find((candidate) => candidate.name === 'large.bin')
    return Number(file?.progress.bytesUploaded) >= 2 * 1024 * 1024
  })
  await page.click('button[data-cy="togglePauseResume"][aria-label="Pause"]')
  await page.waitForSelector('button[data-cy="togglePauseResume"][aria-label="Resume"]')
  const paused = await fileState(page, 'large.bin')
  t.equal(paused.isPaused, true, 'Uppy reports the upload paused')
  t.equal(paused.complete, false, 'and not complete')
  t.ok(paused.uploadUrl?.startsWith(`${origin}/files/`), 'the upload has a URL on our server')
  const head = await tusRequest(paused.uploadUrl as string, { method: 'HEAD' })
  t.equal(head.status, 200)
  const serverOffset = Number(head.headers['upload-offset'])
  t.ok(serverOffset > 0 && serverOffset < large.length, `the server holds part of the file (${serverOffset} of ${large.length})`)
  const requestsAtPause = requests.length

  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 })
  await page.click('button[data-cy="togglePauseResume"][aria-label="Resume"]')
  await page.waitForSelector('.uppy-StatusBar.is-complete')
  const largeRow = page.locator('#uploads tbody tr', { hasText: 'large.bin' })
  await largeRow.waitFor()
  t.equal(completed.length, 2, 'the server completed the second upload')
  const largeId = completed[1] as string
  t.equal(paused.uploadUrl, `${origin}/files/${largeId}`, 'the upload that completed is the one that was paused')
  t.equal(sha256(await readFile(join(uploadDir, largeId))), sha256(large), 'the resumed upload is byte-identical (sha256)')
  const afterResume = requests.slice(requestsAtPause)
  t.equal(afterResume.filter((request) => request.method === 'POST').length, 0, 'resuming created no new upload')
  const firstPatch = afterResume.find((request) => request.method === 'PATCH')
  t.ok(firstPatch !== undefined && Number(firstPatch.offset) > 0,
    `the first PATCH after resuming continues from the server's offset (${firstPatch?.offset})`)

  // 3. The connection drops mid-upload: the page waits, and continues from the server's offset when it is back.
  const third = randomBytes(6 * MiB + 777)
  const thirdPath = join(work, 'flaky.bin')
  await writeFile(thirdPath, third)
  await page.click('.uppy-StatusBar-actionBtn--done')
  await fileInput.setInputFiles(thirdPath)
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 50, downloadThroughput: -1, uploadThroughput: 2 * MiB
  })
  await page.click('.uppy-StatusBar-actionBtn--upload')
  await page.waitForFunction(() => {
    const file = (globalThis as unknown as PageGlobals).uppy.getFiles().find((candidate) => candidate.name === 'flaky.bin')
    return Number(file?.progress.bytesUploaded) >= 1024 * 1024
  })
  const failedRequest = page.waitForEvent('requestfailed')
  await cdp.send('Network.emulateNetworkConditions', { offline: true, latency: 0, downloadThroughput: -1, uploadThroughput: -1 })
  t.match((await failedRequest).failure()?.errorText, /INTERNET_DISCONNECTED/, 'the running request fails when the network goes')
  t.equal(await page.locator('.uppy-StatusBar.is-error').count(), 0, 'the page does not give up')
  const requestsAtOutage = requests.length
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 })
  await page.waitForSelector('.uppy-StatusBar.is-complete')
  await page.locator('#uploads tbody tr', { hasText: 'flaky.bin' }).waitFor()
  t.equal(completed.length, 3, 'the server completed the third upload')
  const flakyId = completed[2] as string
  t.equal(sha256(await readFile(join(uploadDir, flakyId))), sha256(third), 'byte-identical after the outage (sha256)')
  const afterOutage = requests.slice(requestsAtOutage)
  t.equal(afterOutage.filter((request) => request.method === 'POST').length, 0, 'no new upload after the outage')
  t.ok(afterOutage.some((request) => request.method === 'HEAD' && request.url === `/files/${flakyId}`), 'the page asked the server for its offset')
  const resumedPatch = afterOutage.find((request) => request.method === 'PATCH')
  t.ok(resumedPatch !== undefined && Number(resumedPatch.offset) > 0, `and continued from it (${resumedPatch?.offset})`)

  // 4. The download link in the list returns the same bytes.
  const [download] = await Promise.all([page.waitForEvent('download'), largeRow.locator('a').click()])
  t.equal(download.suggestedFilename(), 'large.bin', 'the download is named after the file')
  const downloaded = await readFile(await download.path())
  t.equal(sha256(downloaded), sha256(large), 'the download link returns the same bytes (sha256)')
  t.equal(await page.locator('#uploads tbody tr').count(), 3, 'every upload is listed')
  t.same(pageErrors, [], 'the page threw no errors')
  t.same(foreignRequests, [], 'the page loaded nothing from another host')
})
