import { spawn } from 'node:child_process'
import { constants as fsConstants, statSync } from 'node:fs'
import { access } from 'node:fs/promises'
import { validateHeaderName, validateHeaderValue } from 'node:http'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import { TusErrors } from './errors.js'
import { refuseUnknownKeys } from './known-keys.js'
import { MAX_TIMER_MS } from './lockers/lock.js'
import type { TusDecorator } from './index.js'
import type { TusPluginOptions } from './options.js'
import type { NewUpload, UploadInfo } from './store/types.js'
import type { UploadResponse } from './types.js'

/**
 * tusd's hooks over HTTP (`fastify-tus --hooks-http URL`): the same hook names, the same JSON hook request
 * (`{ Type, Event: { Upload, HTTPRequest } }`) POSTed to the same kind of receiver, and the same hook response
 * (`{ HTTPResponse, RejectUpload, RejectTermination, ChangeFileInfo, StopUpload }`), so a receiver written for
 * tusd works unchanged. Blocking hooks run as the plugin's lifecycle hooks; the others are sent from its events.
 */

export const TUSD_HOOK_NAMES = ['pre-create', 'post-create', 'post-receive', 'pre-finish', 'post-finish', 'pre-terminate', 'post-terminate'] as const
export type TusdHookName = typeof TUSD_HOOK_NAMES[number]
/** tusd's `-hooks-enabled-events` default. */
export const DEFAULT_TUSD_HOOKS: readonly TusdHookName[] = ['pre-create', 'post-create', 'post-receive', 'post-terminate', 'post-finish']

/** A comma-separated list of hook names (`--hooks-enabled-events`); throws naming an unknown one. */
export function parseHookEvents (value: string): TusdHookName[] {
  const names = value.split(',').map((name) => name.trim()).filter((name) => name !== '')
  for (const name of names) {
    if (!(TUSD_HOOK_NAMES as readonly string[]).includes(name)) {
      throw new TypeError(`--hooks-enabled-events: "${name}" is not a hook (${TUSD_HOOK_NAMES.join(', ')})`)
    }
  }
  return names as TusdHookName[]
}

/** tusd's `FileInfo` as its hooks send it. */
export interface TusdUpload {
  /** Empty in pre-create: the upload has no id yet. */
  ID: string
  /** 0 while the length is deferred. */
  Size: number
  SizeIsDeferred: boolean
  Offset: number
  MetaData: Record<string, string>
  IsPartial: boolean
  IsFinal: boolean
  PartialUploads: string[] | null
  /** Where the upload is kept (`Type`, `Path`, `InfoPath` for the file store); null in pre-create. */
  Storage: Record<string, string> | null
}

export interface TusdHttpRequest {
  Method: string
  URI: string
  RemoteAddr: string
  /** Header names canonicalised as Go does (`Upload-Length`), values as arrays. */
  Header: Record<string, string[]>
}

/** What the receiver gets: tusd's `HookRequest`. */
export interface TusdHookRequest {
  Type: TusdHookName
  Event: { Upload: TusdUpload, HTTPRequest: TusdHttpRequest }
}

/** What the receiver may answer: tusd's `HookResponse`, every field optional. */
export interface TusdHookResponse {
  HTTPResponse?: { StatusCode?: number, Body?: string, Header?: Record<string, string> }
  RejectUpload?: boolean
  RejectTermination?: boolean
  ChangeFileInfo?: { ID?: string, MetaData?: Record<string, string> }
  StopUpload?: boolean
}

export interface TusdHooksConfig {
  /** The receiver: each hook is a POST of its JSON hook request to this http(s) URL. */
  url: string
  /** The hooks sent. Default: tusd's (pre-create, post-create, post-receive, post-terminate, post-finish). */
  events?: readonly TusdHookName[]
  /** How long a hook request may take, in ms. Default 15000 (tusd's). */
  timeoutMs?: number
  /** The file store's directory, to tell receivers `Storage.Path` and `Storage.InfoPath`. */
  dir?: string
  /**
   * Headers of the client's request also set on each hook request (tusd's `-hooks-http-forward-headers`), e.g.
   * `Authorization` or `Cookie` for a receiver behind an authenticating proxy.
   */
  forwardHeaders?: readonly string[]
  /** How often a hook request is retried after a network error or a 5xx answer. Default 3 (tusd's). */
  retries?: number
  /** The wait between two tries, in ms. Default 1000 (tusd's). */
  backoffMs?: number
}

const MAX_RESPONSE = 64 * 1024

/** A hook's answer that refuses what the request asked for: reaches the client as its status, body and headers. */
class HookRefusal extends Error {
  readonly statusCode: number
  readonly headers: Record<string, string> | undefined

  constructor (response: TusdHookResponse['HTTPResponse'], fallback: string) {
    super(response?.Body !== undefined && response.Body !== '' ? response.Body : fallback)
    const status = response?.StatusCode
    this.statusCode = typeof status === 'number' && Number.isInteger(status) && status >= 400 && status <= 599 ? status : 400
    this.headers = response?.Header
  }
}

/** The plugin options and event listeners of a set of tusd hooks (over HTTP, or files in a directory). */
export interface TusdHooks {
  /** Wraps the hooks of `base` (each runs first). */
  options: (base: TusPluginOptions) => TusPluginOptions
  /** Sends the non-blocking hooks from the upload events. */
  attach: (tus: TusDecorator, log: FastifyBaseLogger) => void
  /** Resolves once every non-blocking hook sent so far has been answered (or failed). */
  idle: () => Promise<void>
  /**
   * For the server's `preClose`: from now on a hook request that fails is not retried, and a wait before a retry
   * ends at once. A receiver that is down would otherwise hold the shutdown for all its retries (about 63 s with
   * the defaults, past `docker stop`'s 10 s); a request already sent still gets its timeout.
   */
  stopRetrying: () => void
}

type HookSender = (type: TusdHookName, event: TusdHookRequest['Event']) => Promise<TusdHookResponse>

/**
 * The plugin options and event listeners that send tusd's hooks to `config.url`. `options(base)` wraps the
 * hooks of `base` (each runs first); `attach(app.tus, log)` sends the non-blocking hooks.
 */
/**
 * How long a hook may take, in ms: a positive integer a timer can wait for. 0 or a longer one made every hook request
 * fail at once (an AbortSignal of 1 ms), or a hook program never be killed (execFile's 0: no limit).
 */
function hookTimeout (hooks: string, value: number | undefined): number {
  const ms = value ?? 15_000
  if (!Number.isSafeInteger(ms) || ms <= 0 || ms > MAX_TIMER_MS) {
    throw new TusErrors.INVALID_OPTION(`${hooks}: timeoutMs must be a positive integer of ms up to ${MAX_TIMER_MS}, the longest a Node.js timer waits (got ${String(value)})`)
  }
  return ms
}

export function tusdHttpHooks (config: TusdHooksConfig): TusdHooks {
  refuseUnknownKeys('tusdHttpHooks', config, Object.keys({
    url: true, events: true, timeoutMs: true, dir: true, forwardHeaders: true, retries: true, backoffMs: true
  } satisfies Record<keyof TusdHooksConfig, true>))
  const url = new URL(config.url)
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`the hook URL must start with http:// or https:// (got "${url.protocol}//...")`)
  // Credentials in the URL go as Basic authentication, as Go's client (tusd's) sends them; fetch refuses such a URL.
  const authorization = url.username === '' && url.password === ''
    ? undefined
    : `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`
  url.username = ''
  url.password = ''
  const timeoutMs = hookTimeout('tusdHttpHooks', config.timeoutMs)
  const retries = config.retries ?? 3
  const backoffMs = config.backoffMs ?? 1000
  if (!Number.isSafeInteger(retries) || retries < 0) throw new TypeError(`retries must be a non-negative integer (got ${retries})`)
  if (!Number.isSafeInteger(backoffMs) || backoffMs < 0 || backoffMs > MAX_TIMER_MS) throw new TypeError(`backoffMs must be a non-negative integer up to ${MAX_TIMER_MS} (got ${backoffMs})`)
  const retrying = new AbortController()
  const send = async (type: TusdHookName, event: TusdHookRequest['Event']): Promise<TusdHookResponse> => {
    const body: TusdHookRequest = { Type: type, Event: event }
    const headers = new Headers()
    for (const name of config.forwardHeaders ?? []) {
      for (const value of event.HTTPRequest.Header[canonical(name)] ?? []) headers.append(name, value)
    }
    headers.set('Content-Type', 'application/json')
    if (authorization !== undefined) headers.set('Authorization', authorization)
    let response: Response
    let text: string
    for (let attempt = 0; ; attempt++) {
      try {
        response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) })
        text = await response.text()
        if (response.status < 500 || attempt >= retries || retrying.signal.aborted) break
      } catch (error) {
        if (attempt >= retries || retrying.signal.aborted) throw error
      }
      await delay(backoffMs, undefined, { signal: retrying.signal }).catch(() => undefined)
      if (retrying.signal.aborted) throw new Error(`the ${type} hook failed and the server is closing: not retried`)
    }
    if (response.status < 200 || response.status > 299) throw new Error(`the ${type} hook answered ${response.status}`)
    return hookAnswer(type, text)
  }

  return tusdHooks(send, config.events, config.dir, () => { retrying.abort() })
}

/** The hooks of tusd, whatever carries them (`send`). */
function tusdHooks (send: HookSender, events: readonly TusdHookName[] | undefined, dir: string | undefined, stopRetrying: () => void): TusdHooks {
  /** Uploads a post-receive answer stopped: every later progress report of theirs is refused. */
  const stopped = new Map<string, TusdHookResponse['HTTPResponse']>()
  const pending = new Set<Promise<void>>()

  const enabled = new Set(events ?? DEFAULT_TUSD_HOOKS)
  const upload = (info: UploadInfo | NewUpload, created: boolean): TusdUpload => ({
    ID: created ? info.id : '',
    Size: info.size ?? 0,
    SizeIsDeferred: info.size === undefined,
    Offset: 'offset' in info ? info.offset : 0,
    MetaData: { ...info.metadata },
    IsPartial: info.concat?.type === 'partial',
    IsFinal: info.concat?.type === 'final',
    PartialUploads: info.concat?.type === 'final' ? [...info.concat.parts] : null,
    Storage: created ? storage(info as UploadInfo) : null
  })
  const storage = (info: UploadInfo): Record<string, string> => {
    const path = info.path ?? (dir === undefined ? undefined : join(dir, info.directory ?? '', info.id))
    return {
      Type: 'filestore',
      ...(path === undefined ? {} : { Path: path }),
      ...(dir === undefined ? {} : { InfoPath: join(dir, `${info.id}.json`) })
    }
  }

  const notify = (log: FastifyBaseLogger, type: TusdHookName, info: UploadInfo, request: FastifyRequest): void => {
    if (!enabled.has(type)) return
    const sent = send(type, { Upload: upload(info, true), HTTPRequest: httpRequest(request) }).then((answer) => {
      if (type === 'post-receive' && answer.StopUpload === true) stopped.set(info.id, answer.HTTPResponse)
    }, (error: unknown) => {
      log.error({ err: error, uploadId: info.id, hook: type }, 'fastify-tus: a tusd hook failed')
    }).finally(() => { pending.delete(sent) })
    pending.add(sent)
  }

  return {
    options: (base) => ({
      ...base,
      ...(enabled.has('pre-create')
        ? {
            onUploadCreate: async (proposed, request) => {
              const changes = await base.onUploadCreate?.(proposed, request) ?? undefined
              const merged = { ...proposed, ...changes }
              const answer = await send('pre-create', { Upload: upload(merged, false), HTTPRequest: httpRequest(request) })
              if (answer.RejectUpload === true) throw new HookRefusal(answer.HTTPResponse, 'upload creation has been rejected by server')
              const change = answer.ChangeFileInfo
              return {
                ...changes,
                ...(change?.ID === undefined || change.ID === '' ? {} : { id: change.ID }),
                ...(change?.MetaData === undefined ? {} : { metadata: change.MetaData })
              }
            }
          }
        : {}),
      ...(enabled.has('post-receive')
        ? {
            onUploadProgress: async (info, request) => {
              await base.onUploadProgress?.(info, request)
              if (stopped.has(info.id)) throw new HookRefusal(stopped.get(info.id), 'upload has been stopped by server')
            }
          }
        : {}),
      ...(enabled.has('pre-finish')
        ? {
            onUploadComplete: async (info, request) => {
              const own = await base.onUploadComplete?.(info, request) ?? undefined
              const answer = await send('pre-finish', { Upload: upload(info, true), HTTPRequest: httpRequest(request) })
              return finishResponse(answer.HTTPResponse) ?? own
            }
          }
        : {}),
      ...(enabled.has('pre-terminate')
        ? {
            onUploadTerminate: async (info, request) => {
              await base.onUploadTerminate?.(info, request)
              const answer = await send('pre-terminate', { Upload: upload(info, true), HTTPRequest: httpRequest(request) })
              if (answer.RejectTermination === true) throw new HookRefusal(answer.HTTPResponse, 'upload termination has been rejected by server')
            }
          }
        : {})
    }),
    attach: (tus, log) => {
      // A request whose completion failed (pre-finish refused it, or its own onUploadComplete threw) emits `failed`
      // before `completed`: tusd sends no post-finish then, so a receiver never processes what pre-finish refused.
      const failedRequests = new WeakSet<FastifyRequest>()
      // post-receive as tusd sends it: an offset that moved. A request's first progress report is where it starts,
      // before its first byte; the last one of a completing request is left to the completion, so it is sent here.
      const received = new WeakMap<FastifyRequest, number>()
      tus.on('created', (info, request) => { notify(log, 'post-create', info, request) })
      tus.on('progress', (info, request) => {
        const last = received.get(request)
        received.set(request, info.offset)
        if (last !== undefined && info.offset !== last) notify(log, 'post-receive', info, request)
      })
      tus.on('failed', (_error, _info, request) => { failedRequests.add(request) })
      tus.on('completed', (info, request) => {
        const last = received.get(request)
        if (last !== undefined && last !== info.offset) notify(log, 'post-receive', info, request)
        if (!failedRequests.has(request)) notify(log, 'post-finish', info, request)
      })
      tus.on('terminated', (info, request) => {
        stopped.delete(info.id)
        notify(log, 'post-terminate', info, request)
      })
      tus.on('expired', (info) => { stopped.delete(info.id) })
    },
    idle: async () => {
      while (pending.size > 0) await Promise.allSettled([...pending])
    },
    stopRetrying
  }
}

/** A hook's output as its response: nothing is `{}`; else a JSON object of at most 64 KiB. */
function hookAnswer (type: TusdHookName, text: string): TusdHookResponse {
  if (text.length > MAX_RESPONSE) throw new Error(`the ${type} hook answered more than ${MAX_RESPONSE} bytes`)
  if (text.trim() === '') return {}
  const parsed: unknown = JSON.parse(text)
  if (!isObject(parsed)) throw new Error(`the ${type} hook answered no JSON object`)
  const wrong = wrongHttpResponse(parsed.HTTPResponse)
  if (wrong !== undefined) throw new Error(`the ${type} hook answered an HTTPResponse that cannot be sent: ${wrong}`)
  return parsed as TusdHookResponse
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * What makes a hook's HTTPResponse unusable, as tusd's decoding would find it (a `StatusCode` that is no number, a
 * `Body` that is no string), or as no HTTP response can carry it (a header name that is no token, a value with a line
 * break): failing the hook answers 500 `<hook> failed`, where sending it would fail or inject a header.
 */
function wrongHttpResponse (response: unknown): string | undefined {
  if (response === undefined || response === null) return undefined
  if (!isObject(response)) return 'it is no object'
  if (response.StatusCode !== undefined && (typeof response.StatusCode !== 'number' || !Number.isInteger(response.StatusCode))) return 'StatusCode is no integer'
  if (response.Body !== undefined && typeof response.Body !== 'string') return 'Body is no string'
  if (response.Header === undefined || response.Header === null) return undefined
  if (!isObject(response.Header)) return 'Header is no object'
  for (const [name, value] of Object.entries(response.Header)) {
    if (typeof value !== 'string') return `the value of header ${JSON.stringify(name)} is no string`
    try {
      validateHeaderName(name)
      validateHeaderValue(name, value)
    } catch {
      return `header ${JSON.stringify(name.slice(0, 64))} is no valid HTTP header`
    }
  }
  return undefined
}

export interface TusdFileHooksConfig {
  /** tusd's `-hooks-dir`: each hook is the executable named after it here (`pre-create`, `post-finish` ...); a missing one is no hook. It must exist (INVALID_OPTION otherwise). */
  directory: string
  /** The hooks run. Default: tusd's (pre-create, post-create, post-receive, post-terminate, post-finish). */
  events?: readonly TusdHookName[]
  /** How long a hook may run, in ms (then it is killed and fails). Default 15000. */
  timeoutMs?: number
  /** The file store's directory, to tell hooks `Storage.Path` and `Storage.InfoPath`. */
  dir?: string
}

/**
 * tusd's file hooks (`fastify-tus --hooks-dir DIR`): the executable named after each hook gets tusd's hook request
 * as JSON on its stdin and answers tusd's hook response as JSON on its stdout (nothing: no change). A non-zero exit,
 * a timeout or output that is no JSON object fails the hook, as a failing HTTP receiver does.
 */
export function tusdFileHooks (config: TusdFileHooksConfig): TusdHooks {
  refuseUnknownKeys('tusdFileHooks', config, Object.keys({ directory: true, events: true, timeoutMs: true, dir: true } satisfies Record<keyof TusdFileHooksConfig, true>))
  // Checked once, here: a mistyped directory would run no hook at all (a pre-create meant to refuse uploads skipped),
  // where a missing file in it is only a hook not wanted.
  if (statSync(config.directory, { throwIfNoEntry: false })?.isDirectory() !== true) {
    throw new TusErrors.INVALID_OPTION(`tusdFileHooks: directory must be an existing directory (got ${JSON.stringify(config.directory)})`)
  }
  const timeoutMs = hookTimeout('tusdFileHooks', config.timeoutMs)
  const send: HookSender = async (type, event) => {
    const file = join(config.directory, type)
    try {
      await access(file, fsConstants.X_OK)
    } catch (error) {
      // Only a missing file is no hook (as in tusd): one that cannot run (mode 644 after a copy, a ConfigMap's
      // default) fails, or a pre-create meant to refuse uploads would let every one through.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {}
      throw new Error(`the ${type} hook ${file} cannot be run (${(error as NodeJS.ErrnoException).code ?? 'error'}): make it executable (chmod +x)`)
    }
    const output = await runHook(file, type, event, config.directory, timeoutMs)
    return hookAnswer(type, output)
  }
  // A hook program runs once: nothing to stop.
  return tusdHooks(send, config.events, config.dir, () => undefined)
}

/**
 * Runs a hook file as tusd does (its hook request on stdin, `TUS_ID`, `TUS_SIZE`, `TUS_OFFSET` in its environment,
 * the hooks directory as its working directory) and resolves with its stdout. A process group of its own, so that
 * the timeout kills what the hook started too (a child left holding its stdout would keep the request waiting), and
 * for good: SIGKILL, which a trap cannot ignore. A timeout, a non-zero exit or more than 64 KiB of output fails it.
 */
async function runHook (file: string, type: TusdHookName, event: TusdHookRequest['Event'], directory: string, timeoutMs: number): Promise<string> {
  return await new Promise<string>((resolve, reject) => {
    const child = spawn(file, [], {
      cwd: directory,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, TUS_ID: event.Upload.ID, TUS_SIZE: String(event.Upload.Size), TUS_OFFSET: String(event.Upload.Offset) }
    })
    let failure: string | undefined
    const kill = (why: string): void => {
      failure ??= why
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {
        child.kill('SIGKILL')
      }
    }
    const timer = setTimeout(() => { kill(`did not exit within ${timeoutMs} ms and was killed`) }, timeoutMs)
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text
      if (stdout.length > MAX_RESPONSE) kill(`answered more than ${MAX_RESPONSE} bytes`)
    })
    child.stderr.setEncoding('utf8').on('data', (text: string) => { if (stderr.length < 1000) stderr += text })
    child.on('error', (error) => {
      clearTimeout(timer)
      reject(new Error(`the ${type} hook failed (${error.message})`))
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const detail = stderr === '' ? '' : `: ${stderr.slice(0, 1000)}`
      if (failure !== undefined) reject(new Error(`the ${type} hook ${failure}${detail}`))
      else if (code === 0) resolve(stdout)
      else reject(new Error(`the ${type} hook failed (${code === null ? `killed by ${signal ?? 'a signal'}` : `exit code ${code}`})${detail}`))
    })
    // A hook that does not read its stdin closes it: nothing to report.
    child.stdin.on('error', () => {})
    child.stdin.end(JSON.stringify({ Type: type, Event: event } satisfies TusdHookRequest))
  })
}

/** pre-finish's HTTPResponse as onUploadComplete's response: a 2xx status, headers, a body. */
function finishResponse (response: TusdHookResponse['HTTPResponse']): UploadResponse | undefined {
  if (response === undefined) return undefined
  const status = response.StatusCode
  return {
    ...(typeof status === 'number' && status >= 200 && status <= 299 ? { status } : {}),
    ...(response.Header === undefined ? {} : { headers: response.Header }),
    ...(response.Body === undefined || response.Body === '' ? {} : { body: response.Body })
  }
}

function httpRequest (request: FastifyRequest): TusdHttpRequest {
  const header: Record<string, string[]> = {}
  // A field sent several times is one value each, as Go has them (`request.headers` joins them with ", ").
  for (const [name, values] of Object.entries(request.raw.headersDistinct)) {
    if (values !== undefined) header[canonical(name)] = values
  }
  const socket = request.raw.socket
  return { Method: request.method, URI: request.url, RemoteAddr: `${socket.remoteAddress ?? ''}:${socket.remotePort ?? ''}`, Header: header }
}

/** Go's http.CanonicalHeaderKey: `upload-length` -> `Upload-Length`. */
function canonical (name: string): string {
  return name.toLowerCase().replace(/(^|-)([a-z])/g, (_match, dash: string, letter: string) => dash + letter.toUpperCase())
}
