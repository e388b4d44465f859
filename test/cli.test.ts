// The standalone server as its users run it: `node dist/cli.js` (the package's `bin`) in a child process,
// real tus-js-client uploads, CORS for browsers (@fastify/cors with tusCorsOptions), usage errors with exit code 2, SIGTERM exiting 0.
import { existsSync, statSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { backdate, idOf, rawRequest, randomBytesSeeded, sha256, tusRequest, tusUpload } from './helpers.js'
import { builtCli, runProcess, startProcess, waitForOutput } from './process.js'

const cli = await builtCli()

const FLAGS = ['--dir', '--port', '--host', '--prefix', '--max-size', '--days-to-keep', '--expiry-interval', '--cors-origin',
  '--metrics-path', '--relative-location', '--log-level', '--min-free-space', '--idle-timeout', '--no-fsync', '--expire-completed',
  '--health-path', '--health-file', '--behind-proxy', '--help', '--version']

t.test('--help documents every flag and exits 0', async (t) => {
  const result = await runProcess(t, process.execPath, [cli, '--help'])
  t.equal(result.code, 0)
  t.match(result.stdout, /^Usage: fastify-tus \[options\]/)
  for (const flag of FLAGS) t.match(result.stdout, new RegExp(`^ +(-\\w, )?${flag}\\b`, 'm'), `documents ${flag}`)
  t.equal(result.stderr, '')
})

t.test('bad flags and values exit 2 with a message naming the problem', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--bogus'], /Unknown option '--bogus'/],
    [['--port'], /--port/],
    [['--port', '65536'], /--port must be a whole number from 0 to 65535 \(got "65536"\)/],
    [['--metrics-path', '/ops', '--health-path', '/ops'], /--health-path and --metrics-path must differ \(both "\/ops"\)/],
    [['--health-file', join(tmpdir(), 'fastify-tus-health-never-written')], /--health-file needs --health-path/],
    [['--port', 'http'], /--port must be/],
    [['--max-size', '0'], /--max-size must be a positive number of bytes/],
    [['--max-size', '10X'], /--max-size/],
    // Decimal to many (10,000,000,000 bytes): refused rather than read as 10 GiB.
    [['--max-size', '10GB'], /^fastify-tus: --max-size must be a positive number of bytes, optionally with K, M, G or T \(KiB, MiB, GiB, TiB; got "10GB"\)$/m],
    [['--min-free-space', '1kb'], /--min-free-space must be a positive number of bytes/],
    // A negative number is the flag's value, not an option: the validation message, not the parser's.
    [['--days-to-keep', '-1'], /^fastify-tus: --days-to-keep must be a positive number of days or "never" \(got "-1"\)$/m],
    [['--port', '-1'], /^fastify-tus: --port must be a whole number from 0 to 65535 \(got "-1"\)$/m],
    [['--max-size', '-5G'], /^fastify-tus: --max-size must be a positive number of bytes/m],
    [['--days-to-keep', 'soon'], /--days-to-keep must be a positive number of days or "never"/],
    [['--expiry-interval', '0'], /--expiry-interval/],
    [['--min-free-space', 'lots'], /--min-free-space must be a positive number of bytes/],
    [['--idle-timeout', '1.5'], /--idle-timeout must be a whole number of seconds/],
    [['--cors-origin', 'app.example.com'], /--cors-origin must be "\*" or an origin/],
    [['--cors-origin', 'https://app.example.com/upload'], /--cors-origin must be .*: an origin has no path/],
    // An Origin header never holds a pattern: such an origin would silently allow no browser at all.
    [['--cors-origin', 'https://*.example.com'], /--cors-origin must be .*: no wildcards/],
    [['--cors-origin', 'ftp://files.example.com'], /--cors-origin must be .*: an origin is http:\/\/ or https:\/\//],
    [['--prefix', 'files'], /--prefix must be a URL path starting with "\/"/],
    // Checked by the plugin itself at registration: reported the same way, once.
    [['--prefix', '/a//b', '--port', '0', '--dir', join(tmpdir(), 'fastify-tus-cli-never-created')], /^fastify-tus: prefix must be a path such as "\/files" \(got "\/a\/\/b"\)$/m],
    [['--log-level', 'loud'], /--log-level must be one of/],
    [['uploads'], /Unexpected argument 'uploads'/]
  ]
  for (const [args, message] of cases) {
    const result = await runProcess(t, process.execPath, [cli, ...args])
    t.equal(result.code, 2, `${args.join(' ')}: exit code 2`)
    t.match(result.stderr, message, `${args.join(' ')}: says what is wrong`)
    t.match(result.stderr, /fastify-tus --help/, `${args.join(' ')}: points to --help`)
    t.equal(result.stdout, '', `${args.join(' ')}: prints nothing else`)
  }
})

t.test('the server takes uploads from tus-js-client, serves them back, answers CORS, and stops on SIGTERM', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-cli-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const allowedOrigin = 'http://app.example.test'
  const server = startProcess(t, process.execPath, [cli,
    '--dir', dir, '--port', '0', '--prefix', '/uploads', '--max-size', '1M', '--days-to-keep', '2', '--expire-completed',
    // The second spelt otherwise than browsers send it: upper case, the default port, a slash.
    '--cors-origin', allowedOrigin, '--cors-origin', 'HTTP://Other.Example.test:80/', '--metrics-path', '/metrics', '--log-level', 'warn'])
  const [, endpoint = ''] = await waitForOutput(server, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/uploads\/)/)
  t.match(server.stdout(), `(uploads in ${dir})`, 'says where the uploads go')

  const discovery = await tusRequest(endpoint, { method: 'OPTIONS' })
  t.equal(discovery.status, 204)
  t.equal(discovery.headers['tus-max-size'], String(1024 * 1024), '--max-size 1M is 1 MiB')

  const bytes = randomBytesSeeded(700 * 1024 + 3, 6)
  const url = await tusUpload(bytes, { endpoint, chunkSize: 256 * 1024, metadata: { filename: 'cli.bin', filetype: 'application/x-test' } })
  t.ok(url.startsWith(endpoint), 'the upload lives under --prefix')
  t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(bytes), 'the bytes on disk in --dir match (sha256)')
  const download = await rawRequest(url)
  t.equal(download.status, 200)
  t.equal(download.headers['content-type'], 'application/x-test')
  t.equal(sha256(download.body), sha256(bytes), 'GET returns the same bytes')
  const head = await tusRequest(url, { method: 'HEAD' })
  const expires = Date.parse(head.headers['upload-expires'] ?? '')
  t.ok(Math.abs(expires - (Date.now() + 2 * 86_400_000)) < 60_000, '--days-to-keep 2 --expire-completed: a finished upload expires in two days')

  const tooLarge = await tusRequest(endpoint, { method: 'POST', headers: { 'Upload-Length': String(1024 * 1024 + 1) } })
  t.equal(tooLarge.status, 413, 'larger than --max-size: 413')
  const metrics = await rawRequest(endpoint.replace(/\/uploads\/$/, '/metrics'))
  t.match(metrics.text, /^tus_uploads_completed_total 1$/m, '--metrics-path serves the metrics')

  // CORS: a preflight from an allowed origin, the actual request, an error, and a foreign origin.
  const preflight = await rawRequest(url, {
    method: 'OPTIONS',
    headers: { Origin: allowedOrigin, 'Access-Control-Request-Method': 'PATCH', 'Access-Control-Request-Headers': 'tus-resumable,upload-offset,content-type' }
  })
  t.equal(preflight.status, 204, 'preflight answered')
  t.equal(preflight.headers['access-control-allow-origin'], allowedOrigin)
  t.match(preflight.headers['access-control-allow-methods'], /PATCH/)
  for (const header of ['Tus-Resumable', 'Upload-Offset', 'Content-Type', 'Upload-Length', 'Upload-Metadata']) {
    t.match(preflight.headers['access-control-allow-headers'], new RegExp(`\\b${header}\\b`), `allows ${header}`)
  }
  t.match(preflight.headers['access-control-allow-methods'], /DELETE/)
  t.equal(preflight.headers['tus-version'], undefined, 'answered by @fastify/cors (tusCorsOptions), as the README recipe')
  t.match(preflight.headers.vary, /Origin/)
  const cross = await tusRequest(url, { method: 'HEAD', headers: { Origin: allowedOrigin } })
  t.equal(cross.status, 200)
  t.equal(cross.headers['access-control-allow-origin'], allowedOrigin)
  t.match(cross.headers['access-control-expose-headers'], /\bUpload-Offset\b/)
  t.match(cross.headers['access-control-expose-headers'], /\bLocation\b/)
  const crossError = await tusRequest(`${endpoint}missing`, { method: 'HEAD', headers: { Origin: allowedOrigin } })
  t.equal(crossError.status, 404)
  t.equal(crossError.headers['access-control-allow-origin'], allowedOrigin, 'errors are readable cross-origin too')
  const foreign = await rawRequest(url, {
    method: 'OPTIONS', headers: { Origin: 'http://evil.example.test', 'Access-Control-Request-Method': 'PATCH' }
  })
  t.equal(foreign.headers['access-control-allow-origin'], undefined, 'an origin not allowed gets no CORS headers')
  const otherPreflight = await rawRequest(endpoint, { method: 'OPTIONS', headers: { Origin: 'http://other.example.test', 'Access-Control-Request-Method': 'POST' } })
  t.equal(otherPreflight.headers['access-control-allow-origin'], 'http://other.example.test', 'an origin given as HTTP://Other.Example.test:80/ is the one browsers send')
  const discoveryWithOrigin = await tusRequest(endpoint, { method: 'OPTIONS', headers: { Origin: allowedOrigin } })
  t.equal(discoveryWithOrigin.headers['tus-version'], '1.0.0', 'a tus discovery OPTIONS (no preflight) still reaches the plugin')
  t.equal(discoveryWithOrigin.headers['access-control-allow-origin'], allowedOrigin)
  const discoveryNoOrigin = await rawRequest(endpoint, { method: 'OPTIONS' })
  t.equal(discoveryNoOrigin.status, 204, 'a plain discovery OPTIONS without Origin is no "Invalid Preflight Request"')
  t.equal(discoveryNoOrigin.headers['tus-version'], '1.0.0')

  server.child.kill('SIGTERM')
  const exit = await server.exited
  t.same(exit, { code: 0, signal: null }, 'SIGTERM: graceful exit 0')
  t.notMatch(server.stderr(), /"level":(50|60)/, 'no error logged')
})

t.test('defaults: /files on 127.0.0.1, no CORS headers; SIGINT stops it; expired uploads are swept at start', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-cli-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const first = startProcess(t, process.execPath, [cli, '--dir', dir, '--port', '0', '--log-level', 'silent'])
  const [, endpoint = ''] = await waitForOutput(first, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/files\/)/)
  const forwarded = { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'uploads.example.com' }
  const created = await tusRequest(endpoint, { method: 'POST', headers: { 'Upload-Length': '3', Origin: 'http://app.example.test', ...forwarded } })
  t.equal(created.status, 201)
  t.equal(created.headers['access-control-allow-origin'], undefined, 'no --cors-origin: no CORS headers')
  t.match(created.headers.location, /^http:\/\/127\.0\.0\.1:\d+\/files\//, 'no --behind-proxy: X-Forwarded-* are ignored')
  first.child.kill('SIGINT')
  t.same(await first.exited, { code: 0, signal: null }, 'SIGINT: graceful exit 0')

  const id = idOf(new URL(created.headers.location ?? '', endpoint).href)
  await backdate(dir, id, 3)
  const second = startProcess(t, process.execPath, [cli, '--dir', dir, '--port', '0', '--days-to-keep', '1', '--cors-origin', '*'])
  const [, secondEndpoint = ''] = await waitForOutput(second, /tus endpoint at (http:\/\/\S+\/files\/)/)
  await waitForOutput(second, new RegExp(`"uploadId":"${id}".*"msg":"expired upload removed"`))
  await waitForOutput(second, /"removed":1,.*"msg":"expired uploads removed"/)
  t.notOk(existsSync(join(dir, id)), 'the expired upload was removed by the sweep at start')
  const anyOrigin = await rawRequest(secondEndpoint, {
    method: 'OPTIONS', headers: { Origin: 'http://anywhere.example.test', 'Access-Control-Request-Method': 'POST' }
  })
  t.equal(anyOrigin.status, 204)
  t.equal(anyOrigin.headers['access-control-allow-origin'], '*', '--cors-origin "*" allows any origin')
  t.match(anyOrigin.headers['access-control-allow-methods'], /PATCH/)
  second.child.kill('SIGTERM')
  t.same(await second.exited, { code: 0, signal: null })

  // Behind a proxy that sets X-Forwarded-*, as README's nginx block does (tusd's -behind-proxy), also as a variable.
  const proxied = startProcess(t, process.execPath, [cli, '--dir', dir, '--port', '0', '--log-level', 'silent'], { env: { FASTIFY_TUS_BEHIND_PROXY: '1' } })
  const [, proxiedEndpoint = ''] = await waitForOutput(proxied, /tus endpoint at (http:\/\/\S+\/files\/)/)
  const behind = await tusRequest(proxiedEndpoint, { method: 'POST', headers: { 'Upload-Length': '3', ...forwarded } })
  t.equal(behind.status, 201)
  t.match(behind.headers.location, /^https:\/\/uploads\.example\.com\/files\/[A-Za-z0-9_-]+$/, '--behind-proxy: the URL the client reached')
  proxied.child.kill('SIGTERM')
  t.same(await proxied.exited, { code: 0, signal: null })
})

t.test('--dir naming a file fails at start with exit code 2; a missing --dir is created at start', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-cli-dir-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = join(dir, 'a-file')
  await writeFile(file, 'not a directory')
  for (const [target, message] of [
    [file, `--dir must be a directory, but ${file} is a file`],
    [join(file, 'below'), `--dir must be a directory, but a part of ${join(file, 'below')} is a file`]
  ] as const) {
    const result = await runProcess(t, process.execPath, [cli, '--dir', target, '--port', '0', '--log-level', 'silent'])
    t.equal(result.code, 2, `${target}: exit code 2`)
    t.equal(result.stderr, `fastify-tus: ${message}\nRun "fastify-tus --help" for the options.\n`, 'says what is wrong, once')
    t.equal(result.stdout, '', 'never started listening')
  }
  t.equal(await readFile(file, 'utf8'), 'not a directory', 'the file is left alone')

  const missing = join(dir, 'new', 'nested')
  const server = startProcess(t, process.execPath, [cli, '--dir', missing, '--port', '0', '--log-level', 'silent'])
  const [, endpoint = ''] = await waitForOutput(server, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/files\/)/)
  t.ok(statSync(missing).isDirectory(), 'created at start, before the first upload')
  const bytes = randomBytesSeeded(1000, 8)
  const url = await tusUpload(bytes, { endpoint })
  t.equal(sha256(await readFile(join(missing, idOf(url)))), sha256(bytes))
})

t.test('a port in use is an error with exit code 1, not a usage error', async (t) => {
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { blocker.close() })
  const port = (blocker.address() as AddressInfo).port
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-cli-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const healthFile = join(dir, 'health-url')
  const result = await runProcess(t, process.execPath, [cli, '--dir', dir, '--port', String(port), '--log-level', 'silent', '--health-path', '/healthz', '--health-file', healthFile])
  t.equal(result.code, 1)
  t.match(result.stderr, /EADDRINUSE/)
  t.notOk(existsSync(healthFile), 'no --health-file is left by a start that failed')
})

t.test('--min-free-space refuses uploads the disk cannot take with 507', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-cli-space-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const server = startProcess(t, process.execPath, [cli, '--dir', dir, '--port', '0', '--min-free-space', '8000T', '--idle-timeout', '5', '--log-level', 'warn'])
  const [, endpoint = ''] = await waitForOutput(server, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/files\/)/)
  const refused = await tusRequest(endpoint, { method: 'POST', headers: { 'Upload-Length': '1' } })
  t.equal(refused.status, 507)
  t.match(refused.text, /Not enough storage/)
})

t.test('--health-file: the health URL as bound, loopback for an unspecified host; emptied at start, removed at exit', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-cli-health-file-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = join(dir, 'health')
  for (const [host, loopback] of [['0.0.0.0', '127.0.0.1'], ['::', '[::1]']] as const) {
    // An earlier run's URL, left by a crash: it must not vouch for this server.
    await writeFile(file, 'http://127.0.0.1:9/healthz')
    const server = startProcess(t, process.execPath, [cli, '--dir', join(dir, 'uploads'), '--host', host, '--port', '0',
      '--health-path', '/healthz', '--health-file', file, '--log-level', 'silent'])
    const [, port = ''] = await waitForOutput(server, /tus endpoint at http:\/\/\S+:(\d+)\/files\//)
    const url = await readFile(file, 'utf8')
    t.equal(url, `http://${loopback}:${port}/healthz`, `--host ${host}: reached through ${loopback}`)
    const health = await rawRequest(url)
    t.equal(health.status, 200)
    server.child.kill('SIGTERM')
    t.equal((await server.exited).code, 0)
    t.notOk(existsSync(file), 'removed at shutdown')
  }

  const unwritable = await runProcess(t, process.execPath, [cli, '--dir', join(dir, 'uploads'), '--port', '0',
    '--health-path', '/healthz', '--health-file', join(dir, 'missing', 'health'), '--log-level', 'silent'])
  t.equal(unwritable.code, 1, 'a file that cannot be written fails the start')
  t.match(unwritable.stderr, /^fastify-tus: cannot write --health-file: ENOENT/)
  t.equal(unwritable.stdout, '', 'never started listening')
})

t.test('--no-fsync serves uploads byte for byte (only what reaches the disk when changes)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-cli-nofsync-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const server = startProcess(t, process.execPath, [cli, '--dir', dir, '--port', '0', '--no-fsync', '--log-level', 'warn'])
  const [, endpoint = ''] = await waitForOutput(server, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/files\/)/)
  const bytes = randomBytesSeeded(300 * 1024 + 1, 7)
  const url = await tusUpload(bytes, { endpoint, chunkSize: 100 * 1024 })
  t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(bytes))
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], String(bytes.length))
})
