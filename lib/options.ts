import { constants } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { access, mkdir, open, stat, unlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import type { ResolvedOptions } from './core/services.js'
import { TusErrors } from './errors.js'
import { MAX_ID_LENGTH } from './ids.js'
import { refuseUnknownKeys } from './known-keys.js'
import { DEFAULT_DRAFT_VERSIONS, DRAFT_VERSIONS, type DraftInteropVersion } from './ietf/versions.js'
import { MAX_TIMER_MS, type UploadLocker } from './lockers/lock.js'
import type { DataStore } from './store/types.js'
import type {
  GenerateUrl, GetUploadIdFromRequest, MaxSizeOf, OnUploadAccess, OnUploadComplete, OnUploadCreate, OnUploadExpire, OnUploadProgress,
  OnUploadTerminate, TusAuthHook, FormatError
} from './types.js'

export interface TusPluginOptions {
  /** Path the tus routes live under. Default `/files`. */
  prefix?: string
  /** Directory for the default file store; created if missing. Default `<os tmpdir>/fastify-tus`. */
  dir?: string
  /**
   * Largest upload accepted, in bytes; announced as Tus-Max-Size. Default 128849018880 (120 GiB). A function of the
   * request gives each request its own (see MaxSizeOf).
   */
  maxSize?: number | MaxSizeOf
  /** Uploads expire this many days after their last write (fractions allowed, at most 1000000). Default 5; `Infinity` never. */
  daysToKeep?: number
  auth?: TusAuthHook
  /**
   * The body of every error answer, in both protocols (e.g. JSON for a JSON API): return undefined to keep the
   * plugin's. See the README's Errors.
   */
  formatError?: FormatError
  /** Per-upload access: sees the upload and the action before any answer about it, in every protocol (see the README's Security). */
  onUploadAccess?: OnUploadAccess
  /** Lifecycle hooks: see the README's hooks table and lib/core/lifecycle.ts. */
  onUploadCreate?: OnUploadCreate
  onUploadProgress?: OnUploadProgress
  /** Least time between two onUploadProgress calls (and `progress` events) of one request, in ms. Default 1000. */
  progressInterval?: number
  onUploadComplete?: OnUploadComplete
  onUploadTerminate?: OnUploadTerminate
  /** Before expiry removes an upload: return false to keep it, or archive it first. See OnUploadExpire. */
  onUploadExpire?: OnUploadExpire
  /** Serve `app.tus.metrics()` (Prometheus text format) with GET on this path, e.g. `/metrics`. Default: no route. */
  metricsPath?: string
  /** Answer creation with a path-only Location (`/files/<id>`) instead of an absolute URL. Default false. */
  relativeLocation?: boolean
  /** Builds the Location of a new upload instead (see GenerateUrl). */
  generateUrl?: GenerateUrl
  /** Reads the upload id from an upload URL's last path segment instead (see GetUploadIdFromRequest). */
  getUploadIdFromRequest?: GetUploadIdFromRequest
  /** Longest Upload-Metadata header accepted, in bytes. Default 4096. */
  maxMetadataSize?: number
  /** How long a request waits for another request on the same upload to finish, in ms. Default 3000. */
  lockTimeout?: number
  /**
   * A request body that brings no byte for this long (ms) is ended, its bytes kept; a download whose client takes no
   * byte for this long is cut. Default 60000.
   */
  idleTimeout?: number
  /**
   * Bytes that must stay free on the filesystem of `dir`: a creation that would leave less is refused
   * with 507. Default 0 (no check).
   */
  minFreeSpace?: number
  /**
   * Complete uploads expire too, `daysToKeep` after their last write (tuspyserver's staging-area behaviour).
   * Default false: expiration concerns unfinished uploads, as tus defines it; finished files are kept.
   */
  expireCompleted?: boolean
  /** Most partial uploads one `Upload-Concat: final;...` may list, repeats counted. Default 100. */
  maxConcatReferences?: number
  /** How long `app.close()` waits for in-flight writes to reach a consistent point, and for held locks to be released, in ms (at most 2^31 - 1, as for every timeout). Default 10000. */
  closeTimeout?: number
  /** Where uploads are kept. Default: a FileStore in `dir`. */
  store?: DataStore
  /** How requests on one upload are serialised. Default: in-process. */
  locker?: UploadLocker
  /**
   * The `Upload-Draft-Interop-Version`s of the IETF resumable-upload draft served beside tus 1.0.0 on the
   * same routes. Default: every known one, [3, 4, 5, 6, 7, 8, 9]. `[]`: tus only (the header is ignored).
   */
  ietfDraftVersions?: readonly DraftInteropVersion[]
}

export const DEFAULT_MAX_SIZE = 128_849_018_880

/** Every option of the plugin (the compiler checks that none of TusPluginOptions is missing). */
const PLUGIN_OPTIONS = Object.keys({
  prefix: true,
  dir: true,
  maxSize: true,
  daysToKeep: true,
  auth: true,
  formatError: true,
  onUploadAccess: true,
  onUploadCreate: true,
  onUploadProgress: true,
  progressInterval: true,
  onUploadComplete: true,
  onUploadTerminate: true,
  onUploadExpire: true,
  metricsPath: true,
  relativeLocation: true,
  generateUrl: true,
  getUploadIdFromRequest: true,
  maxMetadataSize: true,
  lockTimeout: true,
  idleTimeout: true,
  minFreeSpace: true,
  expireCompleted: true,
  maxConcatReferences: true,
  closeTimeout: true,
  store: true,
  locker: true,
  ietfDraftVersions: true
} satisfies Record<keyof TusPluginOptions, true>)

/**
 * The options Fastify's `register` reads besides `prefix` (its RegisterOptions): they reach the plugin in the same
 * object. The plugin applies them to its routes.
 */
export const REGISTER_OPTIONS = ['logLevel', 'logSerializers'] as const

const FILE_STORE = 'an option of FileStore: `store: new FileStore({ directory, ... })`'
const S3_STORE = 'an option of S3Store (fastify-tus/s3): `store: new S3Store({ ... })`'
const LOCKER = 'an option of FileLocker and RedisLocker: `locker: new FileLocker({ ... })`'
const CORS = 'CORS is @fastify/cors\'s: see the README\'s "CORS for browsers" (tusCorsOptions)'

/** Where keys that are not options of the plugin belong: a store's or a locker's, or another server's name for one of ours. */
const OPTIONS_ELSEWHERE: Readonly<Record<string, string>> = {
  directory: 'the file store\'s directory is the plugin\'s `dir`',
  cacheSize: FILE_STORE,
  cacheBytes: FILE_STORE,
  fsync: FILE_STORE,
  bucket: S3_STORE,
  s3: S3_STORE,
  partSize: S3_STORE,
  partsInFlight: S3_STORE,
  redis: LOCKER,
  ttlMs: LOCKER,
  retryMs: LOCKER,
  commandTimeoutMs: LOCKER,
  // @tus/server's names
  path: 'did you mean "prefix"?',
  datastore: 'did you mean "store"?',
  namingFunction: 'onUploadCreate may return { id }',
  onUploadFinish: 'did you mean "onUploadComplete"?',
  onIncomingRequest: 'did you mean "auth"?',
  onResponseError: 'did you mean "formatError"?',
  getFileIdFromRequest: 'did you mean "getUploadIdFromRequest"?',
  lockDrainTimeout: 'did you mean "lockTimeout"?',
  postReceiveInterval: 'did you mean "progressInterval"?',
  disableTerminationForFinishedUploads: 'onUploadTerminate may refuse a termination',
  allowedOrigins: CORS,
  allowedHeaders: CORS,
  allowedCredentials: CORS,
  exposedHeaders: CORS
}

/** What the plugin learns from the Fastify instance it is registered on. */
export interface RouterLimits {
  /** Fastify's `maxParamLength`: ids longer than this cannot be routed. */
  maxParamLength: number
}

/** Validates the options once, at register time, and fills in the defaults. */
export function resolveOptions (options: TusPluginOptions, router: RouterLimits): ResolvedOptions {
  if ('respectForwardedHeaders' in options) {
    throw new TusErrors.INVALID_OPTION('respectForwardedHeaders was removed: Location follows Fastify\'s trustProxy (set it to the proxies you trust)')
  }
  // A misspelt option (`maxsize`, `onUploadCreated`) would leave the limit or the hook the app meant silently off.
  refuseUnknownKeys('the plugin', options, [...PLUGIN_OPTIONS, ...REGISTER_OPTIONS], OPTIONS_ELSEWHERE)
  const prefix = options.prefix ?? '/files'
  if (typeof prefix !== 'string' || !/^(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*\/?$/.test(prefix)) {
    throw new TusErrors.INVALID_OPTION(`prefix must be a path such as "/files" (got ${JSON.stringify(prefix)})`)
  }
  notEncoded('prefix', prefix)
  implementing('store', 'a DataStore', options.store, STORE_CALLS)
  implementing('locker', 'an UploadLocker', options.locker, LOCKER_CALLS)
  const dir = options.dir ?? join(tmpdir(), 'fastify-tus')
  if (typeof dir !== 'string' || dir === '') {
    throw new TusErrors.INVALID_OPTION('dir must be a non-empty string')
  }
  return {
    prefix: prefix === '/' ? '' : prefix.replace(/\/$/, ''),
    dir: resolve(dir),
    maxSize: typeof options.maxSize === 'function' ? DEFAULT_MAX_SIZE : positiveInteger('maxSize', options.maxSize ?? DEFAULT_MAX_SIZE),
    maxSizeOf: typeof options.maxSize === 'function' ? options.maxSize : undefined,
    daysToKeep: retentionDays('daysToKeep', options.daysToKeep ?? 5),
    auth: optionalFunction('auth', options.auth),
    formatError: optionalFunction('formatError', options.formatError),
    onUploadAccess: optionalFunction('onUploadAccess', options.onUploadAccess),
    onUploadCreate: optionalFunction('onUploadCreate', options.onUploadCreate),
    onUploadProgress: optionalFunction('onUploadProgress', options.onUploadProgress),
    progressInterval: nonNegativeInteger('progressInterval', options.progressInterval ?? 1000),
    onUploadComplete: optionalFunction('onUploadComplete', options.onUploadComplete),
    onUploadTerminate: optionalFunction('onUploadTerminate', options.onUploadTerminate),
    onUploadExpire: optionalFunction('onUploadExpire', options.onUploadExpire),
    generateUrl: synchronousFunction('generateUrl', options.generateUrl),
    getUploadIdFromRequest: synchronousFunction('getUploadIdFromRequest', options.getUploadIdFromRequest),
    metricsPath: optionalPath('metricsPath', options.metricsPath),
    relativeLocation: boolean('relativeLocation', options.relativeLocation ?? false),
    maxMetadataSize: positiveInteger('maxMetadataSize', options.maxMetadataSize ?? 4096),
    lockTimeout: timeout('lockTimeout', options.lockTimeout ?? 3000),
    idleTimeout: timeout('idleTimeout', options.idleTimeout ?? 60_000),
    closeTimeout: timeout('closeTimeout', options.closeTimeout ?? 10_000),
    minFreeSpace: nonNegativeInteger('minFreeSpace', options.minFreeSpace ?? 0),
    expireCompleted: boolean('expireCompleted', options.expireCompleted ?? false),
    maxConcatReferences: positiveInteger('maxConcatReferences', options.maxConcatReferences ?? 100),
    maxIdLength: Math.min(MAX_ID_LENGTH, router.maxParamLength),
    ietfDraftVersions: draftVersions(options.ietfDraftVersions ?? DEFAULT_DRAFT_VERSIONS)
  }
}

/**
 * The default file store's `dir`: created when missing, and it must be a directory this process can write to. A file
 * there, a path through a file, or one that cannot be created or written is refused at registration, where it
 * used to be accepted and then fail every creation (500).
 */
export async function prepareDirectory (dir: string): Promise<void> {
  const refuse = (problem: string): never => { throw new TusErrors.INVALID_OPTION(`dir ${JSON.stringify(dir)} ${problem}`) }
  const existing = await stat(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    if (error.code === 'ENOTDIR') return refuse('must be a directory, but a part of its path is a file')
    return refuse(`cannot be used: ${error.message}`)
  })
  if (existing === undefined) {
    await makeDirectory(dir, refuse)
  } else if (!existing.isDirectory()) {
    refuse('must be a directory, but it is a file')
  }
  await access(dir, constants.W_OK | constants.X_OK).catch((error: Error) => refuse(`cannot be written to: ${error.message}`))
  // access() answers for the permission bits only, which root passes everywhere: a file is made and removed, as the
  // store will (a filesystem that takes no file, such as /sys, failed every creation with 500).
  const probe = join(dir, `.fastify-tus-probe-${process.pid}-${randomBytes(6).toString('hex')}`)
  const file = await open(probe, 'wx').catch((error: Error) => refuse(`cannot be written to: ${error.message}`))
  await file.close()
  await unlink(probe)
}

/**
 * mkdir -p, one directory at a time. Node's own (`recursive: true`) never returns where a directory cannot be made
 * although its parent exists (`/proc/self/uploads`: ENOENT): it tries again forever, spinning a thread of libuv's
 * pool, and the registration waited for Fastify's plugin timeout.
 */
async function makeDirectory (dir: string, refuse: (problem: string) => never): Promise<void> {
  const missing: string[] = []
  for (let path = dir; ; path = dirname(path)) {
    const found = await stat(path).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined
      if (error.code === 'ENOTDIR') return refuse('must be a directory, but a part of its path is a file')
      return refuse(`cannot be created: ${error.message}`)
    })
    if (found !== undefined) {
      if (!found.isDirectory()) refuse('must be a directory, but a part of its path is a file')
      break
    }
    missing.unshift(path)
    if (dirname(path) === path) break
  }
  for (const path of missing) {
    await mkdir(path).catch(async (error: NodeJS.ErrnoException) => {
      // Made meanwhile by another process (several instances starting on one volume): fine if it is a directory.
      if (error.code === 'EEXIST' && (await stat(path).catch(() => undefined))?.isDirectory() === true) return
      if (error.code === 'ENOTDIR' || error.code === 'EEXIST') refuse('must be a directory, but a part of its path is a file')
      refuse(`cannot be created: ${error.message}`)
    })
  }
}

/** What the plugin calls on a store and a locker of the app's (the optional calls are checked only when present). */
const STORE_CALLS = ['create', 'getInfo', 'write', 'flush', 'declareLength', 'read', 'terminate', 'list', 'close']
const LOCKER_CALLS = ['lock']

/**
 * A store or a locker given as an option must have the calls the plugin makes (and its optional `close`, when it has
 * one, must be a function): one without them was accepted, then failed every request (500) and `app.close()`.
 */
function implementing (name: string, kind: string, value: unknown, calls: string[]): void {
  if (value === undefined || value === null) return
  if (typeof value !== 'object' && typeof value !== 'function') throw new TusErrors.INVALID_OPTION(`${name} must be ${kind} (got ${typeof value})`)
  const target = value as Record<string, unknown>
  const missing = calls.filter((call) => typeof target[call] !== 'function')
  if (name === 'locker' && target.close !== undefined && typeof target.close !== 'function') missing.push('close')
  if (missing.length > 0) {
    throw new TusErrors.INVALID_OPTION(`${name} must be ${kind}, but its ${missing.join(', ')} ${missing.length === 1 ? 'is not a function' : 'are not functions'}`)
  }
}

function positiveInteger (name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new TusErrors.INVALID_OPTION(`${name} must be a positive integer (got ${String(value)})`)
  }
  return value
}

/** A delay in ms that becomes a timer: a positive integer a timer can wait for. */
function timeout (name: string, value: unknown): number {
  const ms = positiveInteger(name, value)
  if (ms > MAX_TIMER_MS) {
    throw new TusErrors.INVALID_OPTION(`${name} must be at most ${MAX_TIMER_MS} ms (about 24.8 days), the longest a Node.js timer waits (got ${ms})`)
  }
  return ms
}

function nonNegativeInteger (name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new TusErrors.INVALID_OPTION(`${name} must be a non-negative integer up to Number.MAX_SAFE_INTEGER (got ${String(value)})`)
  }
  return value
}

function optionalPath (name: string, value: unknown): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !/^(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$/.test(value)) {
    throw new TusErrors.INVALID_OPTION(`${name} must be a path such as "/metrics" (got ${JSON.stringify(value)})`)
  }
  notEncoded(name, value)
  return value
}

/**
 * The longest finite retention: an upload's expiry must be a date an HTTP-date can say (a 4-digit year). Beyond
 * JavaScript's last date, Upload-Expires read "Invalid Date" and the draft's Upload-Limit `max-age=NaN`.
 */
const MAX_DAYS_TO_KEEP = 1_000_000

/**
 * A route path with a `%`: Fastify's router matches the decoded path of a request, so a route registered as "/a%20b"
 * is never reached (404 for every request; "/a%zz" 400), whatever the client sends.
 */
function notEncoded (name: string, path: string): void {
  if (path.includes('%')) {
    throw new TusErrors.INVALID_OPTION(`${name} cannot hold "%": the router matches decoded paths, so ${JSON.stringify(path)} would never be reached`)
  }
}

function retentionDays (name: string, value: unknown): number {
  if (typeof value !== 'number' || Number.isNaN(value) || value <= 0 || (Number.isFinite(value) && value > MAX_DAYS_TO_KEEP)) {
    throw new TusErrors.INVALID_OPTION(`${name} must be a positive number of days up to ${MAX_DAYS_TO_KEEP} (about 2700 years), or Infinity for never (got ${String(value)})`)
  }
  return value
}

function boolean (name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new TusErrors.INVALID_OPTION(`${name} must be a boolean`)
  return value
}

function optionalFunction<F> (name: string, value: F | undefined): F | undefined {
  if (value !== undefined && typeof value !== 'function') {
    throw new TusErrors.INVALID_OPTION(`${name} must be a function`)
  }
  return value
}

/**
 * A function whose answer is used as it returns (a URL, an id): an `async` one answers a promise, which no request could
 * use (every creation 500 with an orphan upload left to expire, every upload URL 404).
 */
function synchronousFunction<F> (name: string, value: F | undefined): F | undefined {
  const fn = optionalFunction(name, value)
  if (fn !== undefined && (fn as { constructor?: { name?: unknown } }).constructor?.name === 'AsyncFunction') {
    throw new TusErrors.INVALID_OPTION(`${name} must be synchronous: its answer is used as it returns, never awaited`)
  }
  return fn
}

function draftVersions (value: unknown): number[] {
  const known = [...DRAFT_VERSIONS.keys()].join(', ')
  if (!Array.isArray(value)) throw new TusErrors.INVALID_OPTION(`ietfDraftVersions must be an array of interop versions (${known})`)
  return [...new Set(value.map((interop: unknown) => {
    if (typeof interop !== 'number' || !DRAFT_VERSIONS.has(interop)) {
      throw new TusErrors.INVALID_OPTION(`ietfDraftVersions: ${String(interop)} is not a known interop version (${known})`)
    }
    return interop
  }))]
}
