// README code is tested code: every ```ts block of README.md is type-checked in a strict ES-module consumer
// project (package "type": "module", module nodenext), where 'fastify-tus', 'fastify-tus/s3' and
// 'fastify-tus/redis' resolve to this repository (tsconfig paths to lib/). Blocks without imports are parts of
// an app, as the README says: they get `app`, `tus`, `FileStore` and `TusErrors`, and the user's own services
// (`users`, `quotas`, `media`, `legalHolds`, `database`) come from a stub module. Then the CORS recipe and the
// CLI command line are run as written: a preflight, a discovery OPTIONS and an upload against each.
import { execFile } from 'node:child_process'
import { existsSync, statSync, readdirSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { idOf, rawRequest, randomBytesSeeded, sha256, tusRequest, tusUpload } from './helpers.js'
import { startProcess, waitForOutput } from './process.js'

const root = join(import.meta.dirname, '..')
const readme = await readFile(join(root, 'README.md'), 'utf8')
const run = promisify(execFile)

/** Every fenced block of a language, with the line its code starts on. */
function blocks (language: string): Array<{ line: number, code: string }> {
  const found: Array<{ line: number, code: string }> = []
  const lines = readme.split('\n')
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```' + language) continue
    const end = lines.indexOf('```', i + 1)
    found.push({ line: i + 2, code: lines.slice(i + 1, end).join('\n') })
    i = end
  }
  return found
}

/** The user's own code the README's samples refer to, as a module they would have. */
const SERVICES = `
export interface User { id: string }
export interface Database { uploads: { insert (row: Record<string, string | undefined>): Promise<void> } }
export declare const database: Database
export declare const users: { fromToken (authorization: string | undefined): Promise<User> }
export declare const quotas: { left (user: User): Promise<number> }
export declare const media: { publish (path: string, metadata: Record<string, string>): Promise<string> }
export declare const legalHolds: { has (id: string): Promise<boolean> }
export declare function sign (id: string): string
`

/** What a block without imports is part of. */
const APP = `import Fastify from 'fastify'
import tus, { FileStore, TusErrors } from 'fastify-tus'
import { users, quotas, media, legalHolds, sign } from './services.js'
import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
const app = Fastify()
`

async function consumerProject (t: { teardown: (fn: () => unknown) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-readme-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'readme-consumer', private: true, type: 'module' }))
  await symlink(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir')
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      strict: true,
      target: 'ES2022',
      module: 'nodenext',
      moduleResolution: 'nodenext',
      noEmit: true,
      skipLibCheck: true,
      types: ['node'],
      paths: {
        'fastify-tus': [join(root, 'lib', 'index.ts')],
        'fastify-tus/s3': [join(root, 'lib', 'store', 's3-store.ts')],
        'fastify-tus/redis': [join(root, 'lib', 'lockers', 'redis-locker.ts')],
        'fastify-tus/prom-client': [join(root, 'lib', 'observe', 'prom-client.ts')],
        'fastify-tus/tusd-hooks': [join(root, 'lib', 'cli-hooks.ts')]
      }
    },
    include: ['*.ts']
  }, null, 2))
  await writeFile(join(dir, 'services.ts'), SERVICES)
  return dir
}

t.test('every ts block of the README type-checks in a strict ESM consumer', async (t) => {
  const snippets = blocks('ts')
  t.ok(snippets.length >= 9, `the README has ${snippets.length} ts blocks`)
  const dir = await consumerProject(t)
  for (const [index, snippet] of snippets.entries()) {
    // A block that builds its own app stands alone; the others are parts of an app (their own imports kept).
    const standalone = /^import Fastify from 'fastify'$/m.test(snippet.code)
    await writeFile(join(dir, `block-${index + 1}.ts`), standalone ? snippet.code : APP + snippet.code)
  }
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  const output = await run(process.execPath, [tsc, '-p', dir], { cwd: dir }).then(
    ({ stdout }) => stdout, (error: { stdout?: string, message: string }) => error.stdout ?? error.message)
  for (const [index, snippet] of snippets.entries()) {
    const errors = output.split('\n').filter((line) => line.startsWith(`block-${index + 1}.ts(`))
    t.same(errors, [], `README.md line ${snippet.line}: type-checks (${snippet.code.split('\n').find((line) => line.includes('register') || line.includes('app.')) ?? ''})`)
  }
  t.same(output.split('\n').filter((line) => /error TS/.test(line) && !/^block-\d+\.ts\(/.test(line)), [], 'no error elsewhere')
})

t.test('every package a ts block imports is one the README tells the app to install', async (t) => {
  // The consumer project above reaches this repository's node_modules, where npm hoists our own dependencies:
  // a snippet importing one of them (@fastify/cors) compiles there, and fails for an app that did not install it.
  const installed = new Set([...readme.matchAll(/\bnpm (?:install|i) ([^`\n#]+)/g)].flatMap((match) => (match[1] ?? '').trim().split(/\s+/)))
  const imported = new Set(blocks('ts').flatMap((block) => [...block.code.matchAll(/^import .* from '([^'.][^']*)'$/gm)]
    .map((match) => (match[1] ?? '').split('/').slice(0, (match[1] ?? '').startsWith('@') ? 2 : 1).join('/'))))
  const missing = [...imported].filter((name) => !name.startsWith('node:') && !installed.has(name))
  t.ok(imported.has('@fastify/cors'), 'the CORS recipe is among the blocks')
  t.same(missing, [], `each is named in an npm install line (${[...installed].join(' ')})`)
})

t.test('the CORS recipe runs as written: preflight, discovery without Origin, and an upload from the allowed origin', async (t) => {
  const recipe = blocks('ts').find((block) => block.code.includes('tusCorsOptions('))
  if (recipe === undefined) throw new Error('the README has no CORS recipe')
  const dir = await consumerProject(t)
  // As written, then listening on a free port (the recipe stops before listen).
  await writeFile(join(dir, 'recipe.ts'), `${recipe.code}
await app.listen({ port: 0, host: '127.0.0.1' })
console.log('listening ' + (app.server.address() as import('node:net').AddressInfo).port)
`)
  // tsx resolves 'fastify-tus' through the project's tsconfig paths, as tsc did.
  const server = startProcess(t, process.execPath, ['--import', 'tsx', 'recipe.ts'], { cwd: dir })
  const [, port = ''] = await waitForOutput(server, /listening (\d+)/)
  const endpoint = `http://127.0.0.1:${port}/files/`
  const origin = (/tusCorsOptions\(\['([^']+)'\]\)/.exec(recipe.code) ?? [])[1] ?? ''
  t.equal(origin, 'https://app.example.com')

  const preflight = await rawRequest(`${endpoint}abc`, {
    method: 'OPTIONS', headers: { Origin: origin, 'Access-Control-Request-Method': 'PATCH', 'Access-Control-Request-Headers': 'tus-resumable,upload-offset,content-type' }
  })
  t.equal(preflight.status, 204)
  t.equal(preflight.headers['access-control-allow-origin'], origin)
  t.match(preflight.headers['access-control-allow-methods'], /\bPATCH\b/)
  t.match(preflight.headers['access-control-allow-methods'], /\bDELETE\b/)
  t.match(preflight.headers['access-control-allow-headers'], /\bUpload-Offset\b/)
  const discovery = await rawRequest(endpoint, { method: 'OPTIONS' })
  t.equal(discovery.status, 204, 'discovery without Origin: answered by the plugin')
  t.equal(discovery.headers['tus-version'], '1.0.0')

  const bytes = randomBytesSeeded(200_000, 11)
  const url = await tusUpload(bytes, { endpoint, headers: { Origin: origin } })
  const head = await tusRequest(url, { method: 'HEAD', headers: { Origin: origin } })
  t.equal(head.headers['access-control-allow-origin'], origin)
  t.match(head.headers['access-control-expose-headers'], /\bUpload-Offset\b/)
  t.equal(sha256(await readFile(join(dir, 'uploads', idOf(url)))), sha256(bytes), "stored in the recipe's ./uploads, byte-identical")
})

t.test('the CLI command line of the README runs as written through npx (port 0 for 1080)', async (t) => {
  const cli = join(root, 'dist', 'cli.js')
  const newestSource = Math.max(...readdirSync(join(root, 'lib'), { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.ts')).map((name) => statSync(join(root, 'lib', name)).mtimeMs))
  if (!existsSync(cli) || statSync(cli).mtimeMs < newestSource) await run('npm', ['run', 'build'], { cwd: root })

  const command = blocks('bash').map((block) => block.code).join('\n').split('\n')
    .find((line) => line.startsWith('npx fastify-tus --dir ./uploads --port 1080'))
  if (command === undefined) throw new Error('the README has no npx fastify-tus command line')
  const expected = readme.split('\n')[readme.split('\n').indexOf(command) + 1] ?? ''
  t.match(expected, /^# fastify-tus \S+: tus endpoint at http:\/\/127\.0\.0\.1:1080\/files\/ \(uploads in \S+\)$/, 'the README shows what it prints')
  const args = command.replace(/^npx fastify-tus /, '').replace('--port 1080', '--port 0').split(' ')

  // A project where the package is installed: npx finds its bin in node_modules/.bin.
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-readme-cli-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  await mkdir(join(dir, 'node_modules', '.bin'), { recursive: true })
  await symlink(cli, join(dir, 'node_modules', '.bin', 'fastify-tus'))
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'cli-user', private: true }))
  const server = startProcess(t, 'npx', ['fastify-tus', ...args], { cwd: dir, env: { npm_config_yes: 'false' }, group: true })
  const [line = '', endpoint = ''] = await waitForOutput(server, /fastify-tus \S+: tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/files\/) \(uploads in \S+\)/)
  t.match(line, new RegExp(`^fastify-tus \\S+: tus endpoint at http://127\\.0\\.0\\.1:\\d+/files/ \\(uploads in ${join(dir, 'uploads')}\\)$`),
    'prints the line the README shows, with ./uploads resolved')

  const discovery = await rawRequest(endpoint, { method: 'OPTIONS' })
  t.equal(discovery.status, 204)
  t.equal(discovery.headers['tus-max-size'], String(10 * 1024 ** 3), '--max-size 10G')
  const preflight = await rawRequest(endpoint, {
    method: 'OPTIONS', headers: { Origin: 'https://app.example.com', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'tus-resumable,upload-length' }
  })
  t.equal(preflight.status, 204)
  t.equal(preflight.headers['access-control-allow-origin'], 'https://app.example.com', '--cors-origin https://app.example.com')
  const bytes = randomBytesSeeded(150_000, 12)
  const url = await tusUpload(bytes, { endpoint })
  t.equal(sha256(await readFile(join(dir, 'uploads', idOf(url)))), sha256(bytes), 'stored in ./uploads, byte-identical')
  // npx runs the CLI as its child: signal the whole group, as a terminal's Ctrl-C does.
  process.kill(-(server.child.pid ?? 0), 'SIGINT')
  await server.exited
  t.match(server.stdout(), /"signal":"SIGINT".*"msg":"shutting down"/, 'Ctrl-C shuts it down gracefully')
})
