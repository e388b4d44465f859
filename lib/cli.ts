#!/usr/bin/env node
// `npx fastify-tus`: a standalone tus server, like tusd, for people who want an endpoint without writing
// code. It is Fastify + this package's plugin (imported, nothing copied) + @fastify/cors with tusCorsOptions.
// A plain `#!/usr/bin/env node`: `env -S` (to pass node flags) does not exist in BusyBox, so the CLI
// would not start on Alpine; node flags go through NODE_OPTIONS.
import { constants } from 'node:fs'
import { access, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import cors from '@fastify/cors'
import Fastify from 'fastify'
import { envArguments, namingVariables, parseSize, unknownEnvVariables, type CliOptionSpec } from './cli-env.js'
import { directoryProbe, healthRoute } from './cli-health.js'
import { parseHookEvents, tusdFileHooks, tusdHttpHooks, type TusdHookName } from './cli-hooks.js'
import { SCALE_FLAGS, SCALE_HELP, describeStorage, parseScale, scaleServices, type ScaleOptions } from './cli-scale.js'
import { tusCorsOptions } from './cors.js'
import tus, { FileStore, type TusPluginOptions } from './index.js'
import { MAX_TIMER_MS } from './lockers/lock.js'

const USAGE_EXIT = 2
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
type LogLevel = typeof LOG_LEVELS[number]

const HELP = `Usage: fastify-tus [options]

A resumable-upload server storing uploads as files in a directory: tus 1.0.0 (its OPTIONS response
lists the tus extensions it speaks in Tus-Extension) and, on the same URLs, the IETF draft
"Resumable Uploads for HTTP" (Upload-Draft-Interop-Version 3 to 9).

Options:
  --dir <path>              directory the uploads are stored in; created if missing (default: ./uploads)
  --port <n>                port to listen on; 0 picks a free one (default: 1080)
  --host <address>          address to listen on; 0.0.0.0 or :: for every interface (default: 127.0.0.1)
  --prefix <path>           path of the tus endpoint; uploads live at <prefix>/<id> (default: /files)
  --max-size <bytes>        largest upload accepted, announced as Tus-Max-Size; a number of bytes, or
                            with a binary suffix K, M, G or T, e.g. 10G (default: 120G)
  --days-to-keep <days>     an unfinished upload expires this many days after its last write; fractions
                            allowed; "never" keeps uploads forever (default: 5)
  --expire-completed        finished uploads expire too, --days-to-keep after their last write
                            (default: finished uploads are kept)
  --expiry-interval <s>     seconds between two sweeps removing expired uploads (default: 3600)
  --min-free-space <bytes>  refuse new uploads (507) that would leave less free disk than this; bytes
                            or K, M, G, T (default: 0, no check)
  --idle-timeout <s>        end a request body that brings no byte for this many seconds (its bytes
                            are kept), and cut a download whose client takes none (default: 60)
  --cors-origin <origin>    allow browser uploads from this origin, e.g. https://app.example.com; repeat
                            it for several, or "*" for any origin (default: none, same-origin only)
  --metrics-path <path>     serve Prometheus metrics with GET on this path, e.g. /metrics (default: off)
  --relative-location       answer creation with a path-only Location (/files/<id>)
  --behind-proxy            build upload URLs from X-Forwarded-Proto and X-Forwarded-Host (and log the
                            client from X-Forwarded-For), as tusd's -behind-proxy: only when every request
                            comes through your proxy, which must set them (default: off, ignored)
  --hooks-http <url>        send tusd's hooks (JSON POSTs, tusd's hook request and response) to this
                            http(s) URL, so a receiver written for tusd works unchanged (default: off)
  --hooks-dir <dir>         run tusd's file hooks: the executable named after each hook in this directory
                            gets tusd's hook request as JSON on stdin and answers on stdout (default: off)
  --hooks-http-forward-headers <names>
                            client request headers also set on each hook request, comma-separated,
                            e.g. Authorization,Cookie (default: none)
  --hooks-http-retry <n>    retries of a hook request after a network error or a 5xx answer (default: 3)
  --hooks-http-backoff <s>  seconds between two tries of a hook request (default: 1)
  --hooks-enabled-events <names>
                            the hooks sent, comma-separated: pre-create, post-create, post-receive,
                            pre-finish, post-finish, pre-terminate, post-terminate (default: tusd's,
                            pre-create,post-create,post-receive,post-terminate,post-finish)
  --no-fsync                never fsync: faster on large uploads where the disk is slower than the
                            network, but a power loss may lose uploads already reported complete
  --log-level <level>       ${LOG_LEVELS.join(', ')} (default: info)
  --health-path <path>      GET on this path answers 200 only while the upload directory is writable
                            and S3 and Redis, when used, answer; else 503, e.g. /healthz (default: off)
  --health-file <file>      once listening, write the URL of --health-path to this file (removed at
                            shutdown): a container's health check reads it, since it does not see the
                            flags the server was given (default: off)
  -h, --help                show this help and exit
  -v, --version             show the version and exit
${SCALE_HELP}

Every flag can also be set with an environment variable FASTIFY_TUS_<FLAG>: FASTIFY_TUS_MAX_SIZE=10G,
FASTIFY_TUS_NO_FSYNC=1, FASTIFY_TUS_CORS_ORIGIN=<origin>,<origin>; a flag given on the command line wins.

Uploads: <dir>/<id> holds the bytes, <dir>/<id>.json the length and metadata. Finished uploads can be
downloaded with GET <prefix>/<id>. SIGTERM or SIGINT closes the server gracefully (no new requests;
every byte received is kept, so clients resume later) and exits 0; a second signal exits at once.

Example:
  npx fastify-tus --dir ./uploads --port 1080 --max-size 10G --cors-origin https://app.example.com
`

/** A bad flag or value: reported with a pointer to --help, exit code 2 (as most CLIs do). */
class UsageError extends Error {}

interface CliOptions {
  dir: string
  port: number
  host: string
  prefix: string
  maxSize: number | undefined
  daysToKeep: number | undefined
  expireCompleted: boolean
  expiryIntervalSeconds: number
  minFreeSpace: number
  idleTimeoutSeconds: number
  corsOrigins: string[]
  metricsPath: string | undefined
  relativeLocation: boolean
  behindProxy: boolean
  hooksHttp: string | undefined
  hooksDir: string | undefined
  hooksEvents: TusdHookName[] | undefined
  hooksForwardHeaders: string[]
  hooksRetry: number
  hooksBackoffSeconds: number
  healthPath: string | undefined
  healthFile: string | undefined
  fsync: boolean
  logLevel: LogLevel
  scale: ScaleOptions
}

type Parsed = { help: true } | { version: true } | { options: CliOptions }

const CLI_OPTIONS = {
  dir: { type: 'string' },
  port: { type: 'string' },
  host: { type: 'string' },
  prefix: { type: 'string' },
  'max-size': { type: 'string' },
  'days-to-keep': { type: 'string' },
  'expiry-interval': { type: 'string' },
  'min-free-space': { type: 'string' },
  'idle-timeout': { type: 'string' },
  'cors-origin': { type: 'string', multiple: true },
  'metrics-path': { type: 'string' },
  'relative-location': { type: 'boolean' },
  'behind-proxy': { type: 'boolean' },
  'hooks-http': { type: 'string' },
  'hooks-dir': { type: 'string' },
  'hooks-enabled-events': { type: 'string' },
  'hooks-http-forward-headers': { type: 'string' },
  'hooks-http-retry': { type: 'string' },
  'hooks-http-backoff': { type: 'string' },
  'health-path': { type: 'string' },
  'health-file': { type: 'string' },
  'no-fsync': { type: 'boolean' },
  'expire-completed': { type: 'boolean' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
  ...SCALE_FLAGS
} as const satisfies Record<string, CliOptionSpec & { short?: string }>

/** The flags that take a value (parseArgs refuses a value starting with "-" unless it is joined with "="). */
const VALUE_FLAGS = new Set(Object.entries(CLI_OPTIONS).filter(([, spec]) => spec.type === 'string').map(([name]) => `--${name}`))

/** `--days-to-keep -1` as `--days-to-keep=-1`, so a negative number gets the flag's own validation message. */
function joinNegativeValues (argv: string[]): string[] {
  const joined: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    const next = argv[i + 1]
    if (VALUE_FLAGS.has(arg) && next !== undefined && /^-(\d|\.\d)/.test(next)) {
      joined.push(`${arg}=${next}`)
      i++
    } else {
      joined.push(arg)
    }
  }
  return joined
}

function parseCli (argv: string[]): Parsed {
  let values
  try {
    ({ values } = parseArgs({
      args: [...usage(() => envArguments(CLI_OPTIONS, process.env, argv)), ...joinNegativeValues(argv)],
      strict: true,
      allowPositionals: false,
      options: CLI_OPTIONS
    }))
  } catch (error) {
    // parseArgs explains unknown flags, missing values and stray arguments well enough.
    throw new UsageError((error as Error).message)
  }
  if (values.help === true) return { help: true }
  if (values.version === true) return { version: true }
  const logLevel = values['log-level'] ?? 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')} (got "${logLevel}")`)
  }
  refuseDependentsAlone(values)
  return {
    options: {
      dir: resolve(nonEmpty('--dir', values.dir ?? './uploads')),
      port: parsePort(values.port ?? '1080'),
      host: nonEmpty('--host', values.host ?? '127.0.0.1'),
      prefix: parsePath('--prefix', values.prefix ?? '/files'),
      maxSize: values['max-size'] === undefined ? undefined : parseSize('--max-size', values['max-size'], usageError),
      daysToKeep: values['days-to-keep'] === undefined ? undefined : parseDays(values['days-to-keep']),
      expireCompleted: values['expire-completed'] === true,
      expiryIntervalSeconds: parseSeconds('--expiry-interval', values['expiry-interval'] ?? '3600'),
      minFreeSpace: values['min-free-space'] === undefined || values['min-free-space'] === '0' ? 0 : parseSize('--min-free-space', values['min-free-space'], usageError),
      idleTimeoutSeconds: parseSeconds('--idle-timeout', values['idle-timeout'] ?? '60'),
      corsOrigins: (values['cors-origin'] ?? []).map(parseOrigin),
      metricsPath: values['metrics-path'] === undefined ? undefined : parsePath('--metrics-path', values['metrics-path']),
      relativeLocation: values['relative-location'] === true,
      behindProxy: values['behind-proxy'] === true,
      hooksHttp: values['hooks-http'] === undefined ? undefined : parseHookUrl(values['hooks-http']),
      hooksDir: values['hooks-dir'] === undefined ? undefined : parseHooksDir(values['hooks-dir'], values['hooks-http']),
      hooksForwardHeaders: (values['hooks-http-forward-headers'] ?? '').split(',').map((name) => name.trim()).filter((name) => name !== ''),
      hooksRetry: parseCount('--hooks-http-retry', values['hooks-http-retry'] ?? '3'),
      hooksBackoffSeconds: parseCount('--hooks-http-backoff', values['hooks-http-backoff'] ?? '1', 'seconds'),
      healthPath: values['health-path'] === undefined ? undefined : parseHealthPath(values['health-path'], values['metrics-path']),
      healthFile: values['health-file'] === undefined ? undefined : parseHealthFile(values['health-file'], values['health-path']),
      hooksEvents: values['hooks-enabled-events'] === undefined ? undefined : usage(() => parseHookEvents(values['hooks-enabled-events'] ?? '')),
      fsync: values['no-fsync'] !== true,
      logLevel: logLevel as LogLevel,
      scale: parseScale(values, process.env, usageError)
    }
  }
}

function parseCount (flag: string, value: string, unit?: string): number {
  const count = /^\d{1,6}$/.test(value) ? Number(value) : NaN
  if (!Number.isSafeInteger(count)) throw new UsageError(`${flag} must be a whole number${unit === undefined ? '' : ` of ${unit}`} from 0 to 999999 (got "${value}")`)
  return count
}

/**
 * Flags that only tune another one: given without it they would be ignored, and whoever gave them would believe
 * them in effect (a retry count for hooks never sent), as `--health-file` without `--health-path` is refused.
 */
function refuseDependentsAlone (values: Record<string, unknown>): void {
  if (values['hooks-http'] === undefined) {
    for (const flag of ['hooks-http-forward-headers', 'hooks-http-retry', 'hooks-http-backoff']) {
      if (values[flag] !== undefined) throw new UsageError(`--${flag} needs --hooks-http`)
    }
  }
  if (values['hooks-enabled-events'] !== undefined && values['hooks-http'] === undefined && values['hooks-dir'] === undefined) {
    throw new UsageError('--hooks-enabled-events needs --hooks-http or --hooks-dir')
  }
}

function parseHealthPath (value: string, metricsPath: string | undefined): string {
  const path = parsePath('--health-path', value)
  if (metricsPath !== undefined && path === parsePath('--metrics-path', metricsPath)) throw new UsageError(`--health-path and --metrics-path must differ (both "${path}")`)
  return path
}

function parseHealthFile (value: string, healthPath: string | undefined): string {
  if (healthPath === undefined) throw new UsageError('--health-file needs --health-path (the URL it holds)')
  return resolve(nonEmpty('--health-file', value))
}

function parseHooksDir (value: string, url: string | undefined): string {
  if (url !== undefined) throw new UsageError('--hooks-dir and --hooks-http: one way to run the hooks, not both')
  if (value === '') throw new UsageError('--hooks-dir must name a directory')
  return resolve(value)
}

function parseHookUrl (value: string): string {
  const protocol = URL.canParse(value) ? new URL(value).protocol : ''
  if (protocol !== 'http:' && protocol !== 'https:') throw new UsageError(`--hooks-http must be an http:// or https:// URL (got "${value}")`)
  return value
}

function usageError (message: string): UsageError {
  return new UsageError(message)
}

function usage<T> (parse: () => T): T {
  try {
    return parse()
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
}

function nonEmpty (flag: string, value: string): string {
  if (value.trim() === '') throw new UsageError(`${flag} must not be empty`)
  return value
}

function parsePort (value: string): number {
  const port = /^\d{1,5}$/.test(value) ? Number(value) : NaN
  if (!(port <= 65535)) throw new UsageError(`--port must be a whole number from 0 to 65535 (got "${value}")`)
  return port
}

function parsePath (flag: string, value: string): string {
  if (!/^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/.test(value)) throw new UsageError(`${flag} must be a URL path starting with "/" (got "${value}")`)
  return value
}

function parseDays (value: string): number {
  if (value === 'never') return Infinity
  const days = /^\d+(\.\d+)?$|^\.\d+$/.test(value) ? Number(value) : NaN
  if (!(days > 0 && Number.isFinite(days))) throw new UsageError(`--days-to-keep must be a positive number of days or "never" (got "${value}")`)
  return days
}

function parseSeconds (flag: string, value: string): number {
  const seconds = /^\d+$/.test(value) ? Number(value) : NaN
  // setInterval takes at most 2^31-1 ms.
  if (!(seconds >= 1 && seconds * 1000 <= MAX_TIMER_MS)) {
    throw new UsageError(`${flag} must be a whole number of seconds from 1 to 2147483 (got "${value}")`)
  }
  return seconds
}

/**
 * An origin as browsers send it in the Origin header (scheme://host[:port], lower case, no default port), however it is
 * spelt: `HTTPS://App.example.com:443/` is `https://app.example.com`. Nothing else, and no pattern: `*` alone allows
 * any origin, while `https://*.example.com` would match none (the header never holds a `*`).
 */
function parseOrigin (value: string): string {
  if (value === '*') return value
  const refuse = (why: string): UsageError => new UsageError(`--cors-origin must be "*" or an origin like https://app.example.com: ${why} (got "${value}")`)
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw refuse('not a URL')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw refuse('an origin is http:// or https://')
  if (value.includes('*')) throw refuse('no wildcards: repeat the flag for each origin, or give "*" for any')
  if (url.username !== '' || url.password !== '' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || /[?#]/.test(value)) {
    throw refuse('an origin has no path, query or credentials')
  }
  return url.origin
}

function packageVersion (): string {
  // dist/cli.js and lib/cli.ts both sit one level below package.json.
  const manifest: unknown = createRequire(import.meta.url)('../package.json')
  return (manifest as { version: string }).version
}

/**
 * Creates --dir if missing and checks it is a directory this process can write to, so a wrong --dir fails
 * at start instead of answering every upload 500. A file there is a bad value (exit 2); anything else
 * (permissions, a read-only filesystem) a failure to start (exit 1).
 */
async function prepareDirectory (dir: string): Promise<void> {
  const existing = await stat(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    if (error.code === 'ENOTDIR') throw new UsageError(`--dir must be a directory, but a part of ${dir} is a file`)
    throw new Error(`cannot use --dir ${dir}: ${error.message}`)
  })
  if (existing !== undefined && !existing.isDirectory()) throw new UsageError(`--dir must be a directory, but ${dir} is a file`)
  if (existing === undefined) {
    await mkdir(dir, { recursive: true }).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOTDIR' || error.code === 'EEXIST') throw new UsageError(`--dir must be a directory, but a part of ${dir} is a file`)
      throw new Error(`cannot create --dir ${dir}: ${error.message}`)
    })
  }
  await access(dir, constants.W_OK | constants.X_OK).catch((error: Error) => {
    throw new Error(`cannot write to --dir ${dir}: ${error.message}`)
  })
}

/**
 * Checks --hooks-dir at start: each hook missing there is no hook, so a typo would run the server with none,
 * letting through what a pre-create hook was there to refuse. A path that is no directory is a bad value (exit 2).
 */
async function checkHooksDirectory (dir: string): Promise<void> {
  const existing = await stat(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') throw new UsageError(`--hooks-dir must be a directory, but ${dir} does not exist`)
    if (error.code === 'ENOTDIR') throw new UsageError(`--hooks-dir must be a directory, but a part of ${dir} is a file`)
    throw new Error(`cannot use --hooks-dir ${dir}: ${error.message}`)
  })
  if (!existing.isDirectory()) throw new UsageError(`--hooks-dir must be a directory, but ${dir} is not one`)
}

async function serve (options: CliOptions): Promise<void> {
  if (options.hooksDir !== undefined) await checkHooksDirectory(options.hooksDir)
  await prepareDirectory(options.dir)
  // Emptied before anything else: a URL left by an earlier run must not vouch for this one, and an unwritable
  // file fails the start (exit 1) rather than every health check after it.
  if (options.healthFile !== undefined) {
    await writeFile(options.healthFile, '').catch((error: Error) => { throw new Error(`cannot write --health-file: ${error.message}`) })
  }
  // While closing, the plugin answers reads and refuses writes itself (503, Retry-After): a tus client that got a
  // 503 to its HEAD from Fastify would take its upload for gone and start over.
  const app = Fastify({ logger: { level: options.logLevel }, return503OnClosing: false, trustProxy: options.behindProxy })
  for (const warning of unknownEnvVariables(CLI_OPTIONS, process.env)) app.log.warn(`fastify-tus: ${warning}`)
  const events = options.hooksEvents === undefined ? {} : { events: options.hooksEvents }
  const hooks = options.hooksHttp !== undefined
    ? tusdHttpHooks({
      url: options.hooksHttp,
      dir: options.dir,
      forwardHeaders: options.hooksForwardHeaders,
      retries: options.hooksRetry,
      backoffMs: options.hooksBackoffSeconds * 1000,
      ...events
    })
    : options.hooksDir !== undefined ? tusdFileHooks({ directory: options.hooksDir, dir: options.dir, ...events }) : undefined
  if (options.corsOrigins.length > 0) {
    // The README's recipe, nothing of its own: '*' answers any origin without varying by it.
    await app.register(cors, tusCorsOptions(options.corsOrigins.includes('*') ? '*' : options.corsOrigins))
  }
  // eslint-disable-next-line prefer-const -- set once the server runs; onClose, registered first, reads it
  let sweepTimer: NodeJS.Timeout | undefined
  app.addHook('onClose', async () => { clearInterval(sweepTimer) })
  // After the requests: their post-finish and post-terminate hooks still reach the receiver.
  app.addHook('onClose', async () => { await hooks?.idle() })
  app.addHook('preClose', async () => { hooks?.stopRetrying() })
  app.addHook('onClose', async () => { if (options.healthFile !== undefined) await rm(options.healthFile, { force: true }) })
  try {
    const scale = await scaleServices(app, options.scale)
    await app.register(tus, withHooks({
      dir: options.dir,
      store: scale.store ?? new FileStore({ directory: options.dir, fsync: options.fsync }),
      ...(scale.locker === undefined ? {} : { locker: scale.locker }),
      prefix: options.prefix,
      ...(options.maxSize === undefined ? {} : { maxSize: options.maxSize }),
      ...(options.daysToKeep === undefined ? {} : { daysToKeep: options.daysToKeep }),
      expireCompleted: options.expireCompleted,
      ...(options.metricsPath === undefined ? {} : { metricsPath: options.metricsPath }),
      relativeLocation: options.relativeLocation,
      minFreeSpace: options.minFreeSpace,
      idleTimeout: options.idleTimeoutSeconds * 1000,
      onUploadComplete: async (upload, request) => {
        request.log.info({ id: upload.id, size: upload.size, metadata: upload.metadata, path: upload.path }, 'upload complete')
      }
    }))
    hooks?.attach(app.tus, app.log)
    if (options.healthPath !== undefined) {
      // The directory in every mode: with S3 too, chunked bodies are staged there.
      healthRoute(app, options.healthPath, [directoryProbe(options.dir), ...scale.probes])
    }
    await app.ready()
  } catch (error) {
    // The plugin validates its options once at registration; those are the user's flags.
    if ((error as { code?: unknown }).code === 'FST_TUS_INVALID_OPTION') throw new UsageError((error as Error).message.replace(/^fastify-tus: /, ''))
    throw error
  }

  function withHooks (base: TusPluginOptions): TusPluginOptions {
    return hooks === undefined ? base : hooks.options(base)
  }

  app.tus.on('expired', (upload) => { app.log.info({ uploadId: upload.id }, 'expired upload removed') })
  const sweep = async (): Promise<void> => {
    try {
      const removed = await app.tus.removeExpired()
      if (removed > 0) app.log.info({ removed }, 'expired uploads removed')
    } catch (error) {
      app.log.error({ err: error }, 'removing expired uploads failed')
    }
  }
  sweepTimer = setInterval(() => { void sweep() }, options.expiryIntervalSeconds * 1000)
  sweepTimer.unref()

  // Before listening, so a signal during start-up also closes the app instead of killing it.
  let stopping = false
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      app.log.warn({ signal }, 'second signal: exiting without waiting for running requests')
      process.exit(1)
    }
    stopping = true
    app.log.info({ signal }, 'shutting down')
    app.close().then(() => process.exit(0), (error: unknown) => {
      app.log.error({ err: error }, 'shutdown failed')
      process.exit(1)
    })
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)

  try {
    await app.listen({ port: options.port, host: options.host })
  } catch (error) {
    // No onClose runs for a server that never listened: the file emptied above would be left, naming nothing.
    if (options.healthFile !== undefined) await rm(options.healthFile, { force: true })
    throw error
  }
  const { port } = app.server.address() as AddressInfo
  const host = options.host.includes(':') ? `[${options.host}]` : options.host
  const endpoint = `http://${host}:${port}${options.prefix.replace(/\/+$/, '')}/`
  // Before the line that says the server runs: whoever waits for it may probe at once.
  if (options.healthFile !== undefined && options.healthPath !== undefined) await writeHealthFile(options.healthFile, app.server.address() as AddressInfo, options.healthPath)
  process.stdout.write(`fastify-tus ${packageVersion()}: tus endpoint at ${endpoint} (uploads in ${describeStorage(options.scale, options.dir)})\n`)
  void sweep()
}

/**
 * The URL of the health route as the server bound it, for a probe on the same machine (an unspecified address is
 * reached through loopback). Renamed into place, so a probe never reads half of it.
 */
async function writeHealthFile (file: string, bound: AddressInfo, path: string): Promise<void> {
  const address = bound.address === '0.0.0.0' ? '127.0.0.1' : bound.address === '::' ? '::1' : bound.address
  const host = bound.family === 'IPv6' ? `[${address}]` : address
  const written = `${file}.${process.pid}.tmp`
  await writeFile(written, `http://${host}:${bound.port}${path}`)
  await rename(written, file)
}

async function main (argv: string[]): Promise<void> {
  try {
    const parsed = parseCli(argv)
    if ('help' in parsed) {
      process.stdout.write(HELP)
      return
    }
    if ('version' in parsed) {
      process.stdout.write(`${packageVersion()}\n`)
      return
    }
    await serve(parsed.options)
  } catch (error) {
    const message = namingVariables((error as Error).message, CLI_OPTIONS, process.env, argv)
    if (error instanceof UsageError) {
      process.stderr.write(`fastify-tus: ${message}\nRun "fastify-tus --help" for the options.\n`)
      process.exitCode = USAGE_EXIT
      return
    }
    process.stderr.write(`fastify-tus: ${message}\n`)
    process.exitCode = 1
  }
}

await main(process.argv.slice(2))
