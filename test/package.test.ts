// The package as a new user meets it: packed from a clean copy of the tree (no dist/, no build by hand: the
// `prepare` script must build), installed from the tarball into a scratch consumer project next to fastify,
// run through `npx fastify-tus`, imported as ESM, require()d as CommonJS, and type-checked by a strict
// consumer (module nodenext, and node10 for the subpaths' typesVersions) using the root, /s3 and /redis, and whose
// error classes stay typed under nodenext, bundler and node10 without skipLibCheck.
// npm works offline-first from the local cache (the versions this repository's lock pins).
import { execFile } from 'node:child_process'
import { cp, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { childEnv } from './process.js'

const root = join(import.meta.dirname, '..')
const run = promisify(execFile)
const manifest = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version: string, engines: { node: string } }
const lock = JSON.parse(await readFile(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version: string }> }
const pinned = (name: string): string => `${name}@${lock.packages[`node_modules/${name}`]?.version ?? 'latest'}`
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
// A pack, an install, npx and six type-checks in child processes: beside the other test files on a loaded machine
// this file ran 325 s, past the 300 s that .taprc gives each file.
t.setTimeout(900_000)

async function sh (command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<{ stdout: string, stderr: string }> {
  try {
    return await run(command, args, { cwd, env: { ...childEnv, ...env }, maxBuffer: 64 * 1024 * 1024 })
  } catch (error) {
    const failed = error as Error & { stdout?: string, stderr?: string }
    throw new Error(`${command} ${args.join(' ')} failed in ${cwd}: ${failed.message}\n${failed.stdout ?? ''}\n${failed.stderr ?? ''}`)
  }
}

t.test('packed from a clean tree, the package installs, runs through npx, imports as ESM and CJS, and type-checks', async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'fastify-tus-package-'))
  t.teardown(async () => { await rm(work, { recursive: true, force: true }) })

  // 1. A clean tree: the files git knows (tracked, and new ones not ignored), as a fresh clone has them.
  const tree = join(work, 'tree')
  const { stdout: listed } = await sh('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], root)
  const files = listed.split('\0').filter((name) => name !== '')
  for (const file of files) {
    // A file deleted in the work tree but still in the index is not part of it.
    if (!await stat(join(root, file)).then(() => true, () => false)) continue
    await mkdir(dirname(join(tree, file)), { recursive: true })
    await cp(join(root, file), join(tree, file))
  }
  t.notOk(files.some((file) => file.startsWith('dist/')), 'the tree has no dist/')
  // The dependencies an `npm install` in the clone would bring (only the build's typescript is used).
  await symlink(join(root, 'node_modules'), join(tree, 'node_modules'), 'dir')

  // 2. npm pack: `prepare` builds dist/ before the files are collected.
  const { stdout: packed } = await sh('npm', ['pack', '--json', '--pack-destination', work], tree)
  const [pack] = JSON.parse(packed.slice(packed.indexOf('['))) as Array<{ filename: string, files: Array<{ path: string, mode: number }> }>
  if (pack === undefined) throw new Error(`npm pack said nothing: ${packed}`)
  const shipped = pack.files.map((file) => file.path)
  for (const file of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/index.js', 'dist/index.d.ts', 'dist/cli.js',
    'dist/cors.js', 'dist/store/s3-store.js', 'dist/store/s3-store.d.ts', 'dist/lockers/redis-locker.js', 'dist/lockers/redis-locker.d.ts']) {
    t.ok(shipped.includes(file), `the tarball ships ${file}`)
  }
  t.same(shipped.filter((file) => file.endsWith('.map')), [], 'no source maps pointing at sources that are not shipped')
  t.same(shipped.filter((file) => !/^(dist\/|package\.json$|README\.md$|LICENSE$|CHANGELOG\.md$)/.test(file)), [], 'nothing but dist/ and the docs')
  const cliMode = pack.files.find((file) => file.path === 'dist/cli.js')?.mode ?? 0
  t.ok((cliMode & 0o111) !== 0, `dist/cli.js is executable in the tarball (mode ${cliMode.toString(8)})`)
  const tarball = join(work, pack.filename)

  // 3. A consumer project: the tarball, fastify, the optional peers (for the /s3, /redis and /prom-client types) and node types.
  const consumer = join(work, 'consumer')
  await mkdir(consumer)
  await writeFile(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }))
  await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball,
    pinned('fastify'), pinned('@aws-sdk/client-s3'), pinned('ioredis'), pinned('prom-client'), pinned('@types/node')], consumer)
  const installed = JSON.parse(await readFile(join(consumer, 'node_modules', 'fastify-tus', 'package.json'), 'utf8')) as { version: string }
  t.equal(installed.version, manifest.version, 'the tarball is installed')
  t.equal((await readFile(join(consumer, 'node_modules', 'fastify-tus', 'dist', 'cli.js'), 'utf8')).split('\n')[0], '#!/usr/bin/env node',
    'a plain node shebang (BusyBox env has no -S)')

  // 4. The bin, as the README says: npx fastify-tus, and npm exec.
  t.equal((await sh('npx', ['fastify-tus', '--version'], consumer)).stdout, `${manifest.version}\n`, 'npx fastify-tus --version')
  t.equal((await sh('npm', ['exec', '--', 'fastify-tus', '--version'], consumer)).stdout, `${manifest.version}\n`, 'npm exec fastify-tus --version')
  t.match((await sh('npx', ['fastify-tus', '--help'], consumer)).stdout, /^Usage: fastify-tus \[options\]/)

  // 4b. The CLI's scale-out flags where npm installs no optional peer (npx fastify-tus, a global install, the Docker
  // image): exit 1, saying how to install the peer beside fastify-tus; one installed in the directory alone is not found.
  const bare = join(work, 'bare')
  await mkdir(bare)
  await writeFile(join(bare, 'package.json'), JSON.stringify({ name: 'bare', version: '1.0.0', private: true }))
  await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball, pinned('fastify')], bare)
  for (const [flags, peerName] of [[['--s3-bucket', 'uploads'], '@aws-sdk/client-s3'], [['--redis-url', 'redis://127.0.0.1:1'], 'ioredis']] as const) {
    const failed = await run('npx', ['fastify-tus', '--port', '0', '--dir', join(work, 'uploads-bare'), ...flags], { cwd: bare, env: childEnv }).then(
      () => undefined, (error: { code?: number, stderr?: string }) => error)
    t.equal(failed?.code, 1, `${flags[0]} without ${peerName}: exit 1`)
    t.match(failed?.stderr, `fastify-tus: ${flags[0]} needs ${peerName}, an optional peer dependency that is not installed beside fastify-tus`, `${flags[0]}: names the peer`)
    t.match(failed?.stderr, `npm install --global ${peerName}; with npx, npx -p fastify-tus -p ${peerName} fastify-tus`, `${flags[0]}: how to install it for each way of running the CLI`)
  }

  // 5. ESM: every entry point, and a request through the plugin.
  await writeFile(join(consumer, 'esm.mjs'), `
import Fastify from 'fastify'
import tus, { tusCorsOptions, FileStore, TUS_EXPOSED_HEADERS } from 'fastify-tus'
import { S3Store } from 'fastify-tus/s3'
import { RedisLocker } from 'fastify-tus/redis'
const app = Fastify()
await app.register(tus, { dir: process.argv[2] })
const response = await app.inject({ method: 'OPTIONS', url: '/files/' })
console.log(JSON.stringify({ status: response.statusCode, version: response.headers['tus-version'],
  types: [typeof tus, typeof tusCorsOptions, typeof FileStore, typeof S3Store, typeof RedisLocker], exposed: TUS_EXPOSED_HEADERS.length }))
await app.close()
`)
  const esm = JSON.parse((await sh(process.execPath, ['esm.mjs', join(work, 'uploads-esm')], consumer)).stdout) as Record<string, unknown>
  t.same(esm, { status: 204, version: '1.0.0', types: ['function', 'function', 'function', 'function', 'function'], exposed: 17 }, 'import works, the plugin answers')

  // 6. CommonJS: require() of this ES module (Node 20.19+, 22.12+).
  await writeFile(join(consumer, 'cjs.cjs'), `
const Fastify = require('fastify')
const fastifyTus = require('fastify-tus')
const { S3Store } = require('fastify-tus/s3')
const { RedisLocker } = require('fastify-tus/redis')
const app = Fastify()
app.register(fastifyTus.default, { dir: process.argv[2] })
app.inject({ method: 'OPTIONS', url: '/files/' }).then(async (response) => {
  console.log(JSON.stringify({ status: response.statusCode, version: response.headers['tus-version'],
    types: [typeof fastifyTus.default, typeof fastifyTus.tusPlugin, typeof fastifyTus.tusCorsOptions, typeof S3Store, typeof RedisLocker] }))
  await app.close()
})
`)
  const cjs = JSON.parse((await sh(process.execPath, ['cjs.cjs', join(work, 'uploads-cjs')], consumer)).stdout) as Record<string, unknown>
  t.same(cjs, { status: 204, version: '1.0.0', types: ['function', 'function', 'function', 'function', 'function'] }, 'require() works, the plugin answers')

  // 7. Types: a strict nodenext consumer using every entry, and node10 resolution of the subpaths.
  await writeFile(join(consumer, 'app.ts'), `
import Fastify from 'fastify'
import cors from '@fastify/cors'
import { Redis } from 'ioredis'
import tus, { FileStore, tusCorsOptions, type UploadInfo } from 'fastify-tus'
import { S3Store } from 'fastify-tus/s3'
import { RedisLocker } from 'fastify-tus/redis'

const app = Fastify()
await app.register(cors, tusCorsOptions(['https://app.example.com']))
await app.register(tus, {
  store: process.env.S3 === undefined
    ? new FileStore({ directory: './uploads', fsync: false })
    : new S3Store({ bucket: 'uploads', s3: { region: 'eu-west-1' } }),
  locker: new RedisLocker({ redis: new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379') }),
  onUploadComplete: async (upload: UploadInfo, request) => { request.log.info({ id: upload.id, size: upload.size }) }
})
app.tus.on('completed', (upload) => { const size: number | undefined = upload.size; console.log(size) })
// request.tus, declared by the plugin for every request of the app (README: \`request.tus\`).
app.addHook('onResponse', async (request) => { if (request.tus?.completed === true) request.log.info({ id: request.tus.id }) })
// @ts-expect-error maxSize is a number
await app.register(tus, { maxSize: 'big' })
`)
  const strict = { strict: true, noUncheckedIndexedAccess: true, exactOptionalPropertyTypes: true, noEmit: true, skipLibCheck: true, target: 'ES2022', types: ['node'] }
  await writeFile(join(consumer, 'tsconfig.json'), JSON.stringify({ compilerOptions: { ...strict, module: 'nodenext', moduleResolution: 'nodenext' }, files: ['app.ts'] }))
  await sh(process.execPath, [tsc, '-p', 'tsconfig.json'], consumer)
  t.pass('a strict nodenext consumer type-checks against the root, /s3 and /redis')
  // Own declarations must be clean too (a consumer with skipLibCheck: false): check ours without skipping.
  await writeFile(join(consumer, 'tsconfig.declarations.json'), JSON.stringify({
    compilerOptions: { ...strict, skipLibCheck: false, module: 'nodenext', moduleResolution: 'nodenext' },
    files: ['node_modules/fastify-tus/dist/index.d.ts', 'node_modules/fastify-tus/dist/store/s3-store.d.ts', 'node_modules/fastify-tus/dist/lockers/redis-locker.d.ts']
  }))
  const declarations = await run(process.execPath, [tsc, '-p', 'tsconfig.declarations.json'], { cwd: consumer, env: childEnv }).then(
    () => '', (error: { stdout?: string }) => error.stdout ?? 'failed')
  t.same(declarations.split('\n').filter((line) => line.startsWith('node_modules/fastify-tus/')), [], 'no error in the package\'s own declarations')

  await writeFile(join(consumer, 'legacy.cts'), `
import type { S3Store, S3StoreOptions } from 'fastify-tus/s3'
import type { RedisLocker, RedisLockerOptions } from 'fastify-tus/redis'
import type { TusPluginOptions } from 'fastify-tus'
import type { TusCollectorOptions } from 'fastify-tus/prom-client'
import type { TusdHookName } from 'fastify-tus/tusd-hooks'
export type Used = [S3Store, S3StoreOptions, RedisLocker, RedisLockerOptions, TusPluginOptions, TusCollectorOptions, TusdHookName]
`)
  await writeFile(join(consumer, 'tsconfig.node10.json'), JSON.stringify({
    compilerOptions: { ...strict, module: 'commonjs', moduleResolution: 'node10' }, files: ['legacy.cts']
  }))
  await sh(process.execPath, [tsc, '-p', 'tsconfig.node10.json'], consumer)
  t.pass('moduleResolution node10 resolves the types of the root and every subpath (typesVersions)')

  // The error classes are typed under every resolution a consumer may use, with skipLibCheck: false: declarations
  // that reached @fastify/error's types through its default import once made them `any` under bundler and node10
  // (the @ts-expect-error lines are then unused) and failed to compile there without skipLibCheck.
  await writeFile(join(consumer, 'errors.ts'), `
import { TusDraftErrors, TusErrors } from 'fastify-tus'
import type { S3StoreOptions } from 'fastify-tus/s3'
import type { RedisLockerOptions } from 'fastify-tus/redis'
import type { TusCollectorOptions } from 'fastify-tus/prom-client'
import type { TusdHookName } from 'fastify-tus/tusd-hooks'
export type Used = [S3StoreOptions, RedisLockerOptions, TusCollectorOptions, TusdHookName]
export const code: string = new TusErrors.INVALID_HEADER('Upload-Length', 'x').code
// @ts-expect-error an error is not a number
export const notFound: number = new TusErrors.NOT_FOUND()
// @ts-expect-error an error is not a number
export const inconsistent: number = new TusDraftErrors.INCONSISTENT_LENGTH('x')
// @ts-expect-error INVALID_HEADER takes two strings
export const wrong = new TusErrors.INVALID_HEADER(1)
`)
  // esModuleInterop, as most projects have it: without it, fastify's own types fail (pino default-imports thread-stream).
  for (const [moduleResolution, module] of [['nodenext', 'nodenext'], ['bundler', 'esnext'], ['node10', 'commonjs']] as const) {
    const config = `tsconfig.errors-${moduleResolution}.json`
    await writeFile(join(consumer, config), JSON.stringify({
      compilerOptions: { ...strict, skipLibCheck: false, esModuleInterop: true, module, moduleResolution }, files: ['errors.ts']
    }))
    await sh(process.execPath, [tsc, '-p', config], consumer)
    t.pass(`moduleResolution ${moduleResolution}, skipLibCheck false: the errors are typed and the declarations compile`)
  }
})

t.test('the package.json a user sees: truthful engines, metadata, a lock that npm install leaves alone', async (t) => {
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as Record<string, unknown>
  t.equal((pkg.engines as { node: string }).node, '>=20.19', 'zlib.crc32 needs 20.15, require(esm) 20.19')
  t.match(pkg, {
    repository: { type: 'git', url: /^git\+https:\/\/github\.com\// },
    homepage: /^https:\/\//,
    bugs: { url: /^https:\/\// },
    bin: { 'fastify-tus': 'dist/cli.js' },
    scripts: { prepare: 'npm run build' }
  })
  // npm normalises the bin path and records it in the lock's root entry; both must already agree.
  const rootEntry = lock.packages[''] as unknown as { bin?: Record<string, string>, engines?: Record<string, string>, dependencies?: Record<string, string> }
  t.same(rootEntry.bin, pkg.bin, 'the lock records the bin as package.json has it')
  t.same(rootEntry.engines, pkg.engines, 'and the engines')
  t.same(rootEntry.dependencies, pkg.dependencies, 'and the dependencies')
})
