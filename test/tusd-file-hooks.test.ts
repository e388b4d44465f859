// tusd's file hooks (lib/cli-hooks.ts `tusdFileHooks`, `fastify-tus --hooks-dir DIR`): executables named after the
// hooks get tusd's hook request as JSON on stdin and answer tusd's hook response on stdout, through both protocols.
import t from 'tap'
import { existsSync } from 'node:fs'
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tusPlugin from '../lib/index.js'
import { tusdFileHooks, type TusdHookRequest } from '../lib/cli-hooks.js'
import { idOf, rawRequest, sha256, startServer, tusRequest, tusUpload } from './helpers.js'
import { runProcess, startProcess, waitForOutput } from './process.js'

const root = join(import.meta.dirname, '..')
const DRAFT = { 'Upload-Draft-Interop-Version': '6' }

/** A hook directory: pre-create renames or refuses, post-finish records, pre-terminate fails (exit 3). */
async function hookDir (t: { teardown: (fn: () => unknown) => void }): Promise<{ hooks: string, log: string }> {
  const hooks = await mkdtemp(join(tmpdir(), 'fastify-tus-hooks-dir-'))
  t.teardown(async () => { await rm(hooks, { recursive: true, force: true }) })
  const log = join(hooks, 'log.jsonl')
  const script = (body: string): string => `#!/usr/bin/env node
const { appendFileSync } = require('node:fs')
let input = ''
process.stdin.setEncoding('utf8').on('data', (chunk) => { input += chunk }).on('end', () => {
  const hook = JSON.parse(input)
  appendFileSync(${JSON.stringify(log)}, JSON.stringify(hook) + '\\n')
  ${body}
})
`
  await writeFile(join(hooks, 'pre-create'), script(`
  if (hook.Event.HTTPRequest.Header['X-Refuse'] !== undefined) {
    process.stdout.write(JSON.stringify({ RejectUpload: true, HTTPResponse: { StatusCode: 403, Body: '{"error":"refused by the hook"}', Header: { 'X-Hook': 'pre-create', 'Content-Type': 'application/json' } } }))
  } else {
    process.stdout.write(JSON.stringify({ ChangeFileInfo: { MetaData: { ...hook.Event.Upload.MetaData, checked: 'yes' } } }))
  }`))
  await writeFile(join(hooks, 'post-finish'), script(''))
  await writeFile(join(hooks, 'pre-terminate'), script("process.stderr.write('no deletions'); process.exit(3)"))
  for (const name of ['pre-create', 'post-finish', 'pre-terminate']) await chmod(join(hooks, name), 0o755)
  // Not executable: it fails its hook (as in tusd, only a missing file is no hook); post-create is not blocking.
  await writeFile(join(hooks, 'post-create'), 'not a program')
  return { hooks, log }
}

async function logged (log: string): Promise<TusdHookRequest[]> {
  if (!existsSync(log)) return []
  return (await readFile(log, 'utf8')).split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as TusdHookRequest)
}

t.test('in an app: both protocols run pre-create (changes, refusals), post-finish, and a failing pre-terminate', async (t) => {
  const { hooks: directory, log } = await hookDir(t)
  const fileHooks = tusdFileHooks({ directory, events: ['pre-create', 'post-create', 'post-finish', 'pre-terminate'] })
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, fileHooks.options({ dir }))
    fileHooks.attach(app.tus, app.log)
  })

  // tus: created with the hook's metadata, finished, post-finish told.
  const bytes = Buffer.from('file hooks through tus')
  const url = await tusUpload(bytes, { endpoint: server.endpoint, metadata: { filename: 'a.txt' } })
  const head = await tusRequest(url, { method: 'HEAD' })
  t.match(head.headers['upload-metadata'], /checked eWVz/, 'pre-create changed the metadata (checked=yes)')
  t.equal(sha256((await rawRequest(url)).body), sha256(bytes))
  await fileHooks.idle() // post-finish is not blocking: its turn in the log is after it is done

  // The draft: one POST with the whole body.
  const draftBody = Buffer.from('file hooks through the draft')
  const created = await rawRequest(server.endpoint, { method: 'POST', headers: { ...DRAFT, 'Upload-Complete': '?1' }, body: draftBody })
  t.equal(created.status, 201)
  const draftUrl = new URL(created.headers.location!, server.origin).href
  await fileHooks.idle()

  // Refusals in both protocols: the hook's status, body and headers, its Content-Type too.
  const refusedTus = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3', 'X-Refuse': '1' } })
  t.equal(refusedTus.status, 403)
  t.equal(refusedTus.text, '{"error":"refused by the hook"}')
  t.equal(refusedTus.headers['x-hook'], 'pre-create')
  t.equal(refusedTus.headers['content-type'], 'application/json')
  const refusedDraft = await rawRequest(server.endpoint, { method: 'POST', headers: { ...DRAFT, 'Upload-Complete': '?1', 'X-Refuse': '1' }, body: 'abc' })
  t.equal(refusedDraft.status, 403)
  t.equal(refusedDraft.text, '{"error":"refused by the hook"}')
  t.equal(refusedDraft.headers['content-type'], 'application/json')

  // A hook exiting non-zero fails its request (500), in both protocols; nothing is deleted.
  const deleteTus = await tusRequest(url, { method: 'DELETE' })
  t.equal(deleteTus.status, 500)
  const deleteDraft = await rawRequest(draftUrl, { method: 'DELETE', headers: DRAFT })
  t.equal(deleteDraft.status, 500)
  t.equal((await rawRequest(draftUrl)).status, 200, 'still there')

  await fileHooks.idle()
  const seen = await logged(log)
  t.same(seen.map((hook) => hook.Type), [
    'pre-create', 'post-finish', 'pre-create', 'post-finish', 'pre-create', 'pre-create', 'pre-terminate', 'pre-terminate'
  ], 'the executable hooks ran, in order; the non-executable post-create could not')
  const finished = seen.filter((hook) => hook.Type === 'post-finish')
  t.same(finished.map((hook) => hook.Event.Upload.ID), [idOf(url), idOf(draftUrl)])
  t.same(finished.map((hook) => hook.Event.Upload.Offset), [bytes.length, draftBody.length])
  t.equal(finished[0]!.Event.Upload.MetaData.checked, 'yes')
  t.equal(seen[0]!.Event.HTTPRequest.Method, 'POST')
  t.equal(seen[0]!.Event.Upload.ID, '', 'pre-create: no id yet')
})

t.test('the CLI: --hooks-dir (and FASTIFY_TUS_HOOKS_DIR); not with --hooks-http', async (t) => {
  // From the source, as tusd-hooks.test.ts runs it: the mutation check runs this file in a copy without dist/.
  const cli = ['--import', 'tsx', join(root, 'lib', 'cli.ts')]
  const { hooks, log } = await hookDir(t)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-hooks-dir-cli-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })

  const both = await runProcess(t, process.execPath, [...cli, '--dir', dir, '--hooks-dir', hooks, '--hooks-http', 'http://127.0.0.1:9/'])
  t.equal(both.code, 2)
  t.match(both.stderr, /--hooks-dir and --hooks-http/)

  // A --hooks-dir that is no directory is refused at start: running without the hooks would let through what
  // they refuse (the directory's pre-create refuses X-Refuse). The variable is checked as the flag is, and named as itself.
  const uploads = join(dir, 'never-created')
  for (const [args, env, message] of [
    [['--hooks-dir', `${hooks}-typo`], {}, `--hooks-dir must be a directory, but ${hooks}-typo does not exist`],
    [[], { FASTIFY_TUS_HOOKS_DIR: join(hooks, 'pre-create') }, `FASTIFY_TUS_HOOKS_DIR must be a directory, but ${join(hooks, 'pre-create')} is not one`],
    [['--hooks-dir', join(hooks, 'pre-create', 'below')], {}, `--hooks-dir must be a directory, but a part of ${join(hooks, 'pre-create', 'below')} is a file`]
  ] as const) {
    const refused = startProcess(t, process.execPath, [...cli, '--dir', uploads, '--port', '0', '--log-level', 'silent', ...args], { env })
    // A server that starts would run until killed: fail at once rather than at the test's timeout.
    const listening = await waitForOutput(refused, /tus endpoint at/).then(() => true, () => false)
    if (listening) refused.child.kill('SIGTERM')
    t.notOk(listening, 'never started listening')
    t.equal((await refused.exited).code, 2, `${message}: exit code 2`)
    t.equal(refused.stderr(), `fastify-tus: ${message}\nRun "fastify-tus --help" for the options.\n`)
  }
  t.notOk(existsSync(uploads), 'refused before --dir is created')

  const server = startProcess(t, process.execPath, [...cli, '--dir', dir, '--port', '0', '--log-level', 'silent'], { env: { FASTIFY_TUS_HOOKS_DIR: hooks } })
  const [, endpoint = ''] = await waitForOutput(server, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/files\/)/)
  const url = await tusUpload(Buffer.from('cli'), { endpoint, metadata: { filename: 'c.txt' } })
  const refused = await tusRequest(endpoint, { method: 'POST', headers: { 'Upload-Length': '3', 'X-Refuse': '1' } })
  t.equal(refused.status, 403)
  server.child.kill('SIGTERM')
  t.equal((await server.exited).code, 0)
  // On shutdown the server waited for post-finish.
  const seen = await logged(log)
  // post-finish is not blocking: it may run after the next pre-create.
  t.same(seen.map((hook) => hook.Type).sort(), ['post-finish', 'pre-create', 'pre-create'])
  const finished = seen.find((hook) => hook.Type === 'post-finish')!
  t.equal(finished.Event.Upload.ID, idOf(url))
  t.equal(finished.Event.Upload.Storage?.Path, join(dir, idOf(url)))
})

t.test('in an app: a directory that is not one is refused when the hooks are made, never a server without its hooks', async (t) => {
  const { hooks } = await hookDir(t)
  for (const directory of [join(hooks, 'missing'), join(hooks, 'pre-create')]) {
    t.throws(() => tusdFileHooks({ directory }), {
      code: 'FST_TUS_INVALID_OPTION',
      message: `fastify-tus: tusdFileHooks: directory must be an existing directory (got ${JSON.stringify(directory)})`
    })
  }
})

t.test('a hook file that cannot run fails its hook; one that overstays its timeout is killed, whatever it traps or starts; tusd\'s environment', async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'fastify-tus-hooks-run-'))
  t.teardown(async () => { await rm(directory, { recursive: true, force: true }) })
  const log = join(directory, 'env.log')
  await writeFile(join(directory, 'pre-create'), `#!/bin/bash
trap '' TERM
cat > /dev/null
echo "pre-create id=[$TUS_ID] size=$TUS_SIZE offset=$TUS_OFFSET cwd=$PWD" >> env.log
if [ -e hang ]; then sleep 30; fi
if [ -e linger ]; then (sleep 30 &); fi
echo '{}'
`)
  await writeFile(join(directory, 'post-finish'), `#!/bin/bash
cat > /dev/null
echo "post-finish id=[$TUS_ID] size=$TUS_SIZE offset=$TUS_OFFSET cwd=$PWD" >> env.log
`)
  await chmod(join(directory, 'post-finish'), 0o755)
  const fileHooks = tusdFileHooks({ directory, events: ['pre-create', 'post-finish'], timeoutMs: 1000 })
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, fileHooks.options({ dir }))
    fileHooks.attach(app.tus, app.log)
  })
  const create = async (protocol: 'tus' | 'draft') => protocol === 'tus'
    ? await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3' } })
    : await rawRequest(server.endpoint, { method: 'POST', headers: { ...DRAFT, 'Upload-Complete': '?1' }, body: 'abc' })

  // Mode 644 (a copy without chmod, a ConfigMap's default): the pre-create meant to refuse uploads fails them instead.
  for (const protocol of ['tus', 'draft'] as const) t.equal((await create(protocol)).status, 500, `${protocol}: a pre-create that cannot run`)
  await chmod(join(directory, 'pre-create'), 0o755)

  for (const marker of ['hang', 'linger']) {
    await writeFile(join(directory, marker), '')
    for (const protocol of ['tus', 'draft'] as const) {
      const begin = Date.now()
      const response = await create(protocol)
      t.equal(response.status, 500, `${protocol}, ${marker}: killed at its timeout, failed`)
      t.ok(Date.now() - begin < 10_000, `${protocol}, ${marker}: answered in ${Date.now() - begin} ms, not after its 30 s`)
    }
    await rm(join(directory, marker))
  }

  const url = await tusUpload(Buffer.from('abc'), { endpoint: server.endpoint })
  await fileHooks.idle()
  const lines = (await readFile(log, 'utf8')).trim().split('\n')
  t.equal(lines.at(-2), `pre-create id=[] size=3 offset=0 cwd=${directory}`, 'pre-create: no id yet, the size; the hooks directory')
  t.equal(lines.at(-1), `post-finish id=[${idOf(url)}] size=3 offset=3 cwd=${directory}`)
})
