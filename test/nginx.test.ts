// Behind nginx: the README's nginx configuration, run as written (only its ports changed) in front of an app with
// `trustProxy: '127.0.0.1'`. tus-js-client uploads 12 MiB in 5 MiB chunks through it, byte-identical, with
// Location on the proxy's address; then an upload whose proxy stops in the middle of a chunk resumes through
// the restarted proxy from the bytes the app kept.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Upload } from 'tus-js-client'
import { randomBytesSeeded, rawRequest, sha256, startServer, tusRequest, tusUpload, freePort } from './helpers.js'

const MiB = 1024 * 1024
const CHUNK = 5 * MiB
const root = join(import.meta.dirname, '..')

/** The README's ```nginx block. */
async function readmeNginxConfig (): Promise<string> {
  const readme = await readFile(join(root, 'README.md'), 'utf8')
  const block = /```nginx\n([\s\S]*?)```/.exec(readme)
  if (block === null) throw new Error('README.md has no nginx block')
  return block[1]!
}

interface Proxy {
  origin: string
  start: () => Promise<void>
  stop: () => Promise<void>
}

/** nginx in the foreground, its pid, logs and temp files in a temporary directory, serving `server` on `port`. */
async function nginx (t: { teardown: (fn: () => unknown) => void }, server: string): Promise<Proxy> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-nginx-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const conf = join(dir, 'nginx.conf')
  const temp = (name: string): string => `${name}_temp_path ${join(dir, name)};`
  await writeFile(conf, [
    'daemon off;',
    process.getuid?.() === 0 ? 'user root;' : '',
    'worker_processes 1;',
    `pid ${join(dir, 'nginx.pid')};`,
    'error_log stderr notice;',
    'events { worker_connections 64; }',
    'http {',
    'access_log off;',
    `${temp('client_body')} ${temp('proxy')} ${temp('fastcgi')} ${temp('uwsgi')} ${temp('scgi')}`,
    server,
    '}'
  ].join('\n'))
  let running: { child: ChildProcess, exited: Promise<unknown> } | undefined
  const port = /listen 127\.0\.0\.1:(\d+);/.exec(server)![1]!
  const stop = async (): Promise<void> => {
    const current = running
    if (current === undefined) return
    running = undefined
    // SIGTERM: nginx's fast shutdown, which closes the connections it proxies; the master exits after its workers.
    current.child.kill('SIGTERM')
    await current.exited
  }
  t.teardown(stop)
  return {
    origin: `http://127.0.0.1:${port}`,
    start: async () => {
      const child = spawn('nginx', ['-e', 'stderr', '-p', `${dir}/`, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
      const exited = once(child, 'exit')
      running = { child, exited }
      let log = ''
      // The master binds the listening sockets before it starts its workers.
      await new Promise<void>((resolve, reject) => {
        child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
          log += chunk
          if (/start worker process/.test(log)) resolve()
        })
        void exited.then(() => { reject(new Error(`nginx exited: ${log}`)) })
      })
    },
    stop
  }
}

t.test('the README nginx recipe: 12 MiB in 5 MiB chunks, Location on the proxy, a resume after nginx stops mid-chunk', async (t) => {
  let stopMidChunk: (() => Promise<void>) | undefined
  const app = await startServer(t, {
    progressInterval: 0,
    // The proxy stops while the second chunk is arriving: its body is cut after some of its bytes are stored.
    onUploadProgress: async (upload) => {
      const stop = stopMidChunk
      if (stop === undefined || upload.offset <= CHUNK) return
      stopMidChunk = undefined
      await stop()
    }
  }, undefined, { trustProxy: '127.0.0.1' })
  const appPort = new URL(app.origin).port

  const readme = await readmeNginxConfig()
  for (const directive of ['client_max_body_size 0;', 'proxy_request_buffering off;', 'proxy_http_version 1.1;', 'X-Forwarded-Host', 'X-Forwarded-Proto']) {
    t.ok(readme.includes(directive), `the README config has ${directive}`)
  }
  const proxyPort = await freePort()
  const server = readme.replace('listen 80;', `listen 127.0.0.1:${proxyPort};`).replace('http://127.0.0.1:1080', `http://127.0.0.1:${appPort}`)
  t.not(server, readme)
  t.ok(server.includes(`listen 127.0.0.1:${proxyPort};`) && server.includes(`proxy_pass http://127.0.0.1:${appPort};`), 'only the ports changed')
  const proxy = await nginx(t, server)
  await proxy.start()
  const endpoint = `${proxy.origin}/files/`

  // A whole upload through the proxy.
  const data = randomBytesSeeded(12 * MiB, 12)
  const chunks: number[] = []
  const url = await tusUpload(data, { endpoint, chunkSize: CHUNK, onChunkComplete: (size) => { chunks.push(size) } })
  t.ok(url.startsWith(endpoint), `Location on the proxy (${url})`)
  t.same(chunks, [CHUNK, CHUNK, 2 * MiB], 'three PATCHes')
  const downloaded = await rawRequest(url)
  t.equal(downloaded.status, 200)
  t.equal(sha256(downloaded.body), sha256(data), 'byte-identical through the proxy')

  // nginx stops in the middle of the second chunk: the client's PATCH fails.
  const second = randomBytesSeeded(12 * MiB, 34)
  stopMidChunk = proxy.stop
  let interrupted: Upload | undefined
  const failure = await new Promise<Error>((resolve, reject) => {
    interrupted = new Upload(second, {
      endpoint, chunkSize: CHUNK, retryDelays: null, onError: resolve, onSuccess: () => { reject(new Error('the upload should have been cut')) }
    })
    interrupted.start()
  })
  t.ok(failure instanceof Error, `the client saw the proxy go (${failure.message.split('\n')[0] ?? ''})`)
  t.equal(stopMidChunk, undefined, 'the proxy stopped mid-chunk')
  const resumeUrl = interrupted!.url!
  t.ok(resumeUrl.startsWith(endpoint), 'the upload URL is the proxy\'s')

  // The restarted proxy: the app kept the bytes of the cut chunk, and the client resumes from there.
  await proxy.start()
  const head = await tusRequest(resumeUrl, { method: 'HEAD' })
  t.equal(head.status, 200)
  const kept = Number(head.headers['upload-offset'])
  t.ok(kept > CHUNK && kept < second.length, `resumes from inside the second chunk (${kept})`)
  let resumedFrom: number | undefined
  const resumed = await tusUpload(second, {
    uploadUrl: resumeUrl,
    chunkSize: CHUNK,
    onProgress: (sent) => { resumedFrom ??= sent }
  })
  t.equal(resumed, resumeUrl)
  t.ok(resumedFrom !== undefined && resumedFrom >= kept, 'no byte before the kept offset sent again')
  const final = await rawRequest(resumeUrl)
  t.equal(final.status, 200)
  t.equal(sha256(final.body), sha256(second), 'byte-identical after the resume')
})
