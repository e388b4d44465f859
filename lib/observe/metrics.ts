import type { FastifyInstance } from 'fastify'
import { statusErrorCode } from '../errors.js'
import type { HeldLocks, LockOptions, UploadLock, UploadLocker } from '../lockers/lock.js'

const METHODS = new Set(['OPTIONS', 'POST', 'HEAD', 'GET', 'PATCH', 'DELETE'])
const ERROR_CODE = /^[A-Z][A-Z0-9_]{0,63}$/

/** Upper bounds (seconds) of `tus_request_duration_seconds`: an append of a large chunk may take minutes. */
export const DURATION_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
/** Upper bounds (bytes) of `tus_upload_size_bytes`: powers of 4 from 1 KiB to 64 GiB. */
export const SIZE_BUCKETS: readonly number[] = Array.from({ length: 14 }, (_, power) => 1024 * 4 ** power)

/** Observations as they happen, for a bridge to another metrics library (lib/observe/prom-client.ts). */
export interface TusMetricsObserver {
  /** A request of the tus routes was answered after `seconds`. */
  requestDuration?: (method: string, status: number, seconds: number) => void
  /** An upload of `bytes` completed. */
  uploadSize?: (bytes: number) => void
}

/** A Prometheus histogram kept as plain numbers: the count per bucket (not cumulative), the sum and the count. */
export class HistogramData {
  readonly buckets: readonly number[]
  readonly counts: number[]
  sum = 0
  count = 0

  constructor (buckets: readonly number[]) {
    this.buckets = buckets
    this.counts = buckets.map(() => 0)
  }

  observe (value: number): void {
    const index = this.buckets.findIndex((bound) => value <= bound)
    if (index >= 0) this.counts[index] = (this.counts[index] ?? 0) + 1
    this.sum += value
    this.count++
  }

  /** `[le, cumulative count]`, `+Inf` last. */
  cumulative (): Array<[le: string, count: number]> {
    let total = 0
    const rows = this.buckets.map((bound, index): [string, number] => {
      total += this.counts[index] ?? 0
      return [String(bound), total]
    })
    rows.push(['+Inf', this.count])
    return rows
  }
}

/**
 * The plugin's counters and gauges, rendered in the Prometheus text exposition format (version 0.0.4)
 * by `app.tus.metrics()` and the opt-in `metricsPath` route. Plain numbers: counting costs nothing and
 * needs no client library.
 */
export class TusMetrics {
  uploadsCreated = 0
  uploadsCompleted = 0
  uploadsTerminated = 0
  uploadsExpired = 0
  uploadFailures = 0
  bytesReceived = 0
  activeUploads = 0
  lockWaits = 0
  lockWaitSeconds = 0
  lockTimeouts = 0
  /** `METHOD status` -> count. */
  readonly requests = new Map<string, number>()
  /** Error code (FST_TUS_*, or what a hook's error carried) -> count of requests answered with it. */
  readonly errors = new Map<string, number>()
  /** `METHOD status` -> how long the requests took. */
  readonly requestDurations = new Map<string, HistogramData>()
  /** Lengths of the uploads completed. */
  readonly uploadSizes = new HistogramData(SIZE_BUCKETS)
  readonly #observers = new Set<TusMetricsObserver>()

  countRequest (method: string, status: number): void {
    const key = `${METHODS.has(method) ? method : 'OTHER'} ${status}`
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1)
  }

  /** By the error's `code`; a code-less error or answer (a hook's refusal) by its status, `HTTP_403`. */
  countError (code: unknown, statusCode: unknown): void {
    const key = typeof code === 'string' && ERROR_CODE.test(code)
      ? code
      : typeof statusCode === 'number' && Number.isInteger(statusCode) && statusCode >= 400 && statusCode <= 599 ? statusErrorCode(statusCode) : 'OTHER'
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1)
  }

  timeRequest (method: string, status: number, seconds: number): void {
    const label = METHODS.has(method) ? method : 'OTHER'
    const key = `${label} ${status}`
    let histogram = this.requestDurations.get(key)
    if (histogram === undefined) {
      histogram = new HistogramData(DURATION_BUCKETS)
      this.requestDurations.set(key, histogram)
    }
    histogram.observe(seconds)
    for (const observer of this.#observers) observer.requestDuration?.(label, status, seconds)
  }

  sizeUpload (bytes: number): void {
    this.uploadSizes.observe(bytes)
    for (const observer of this.#observers) observer.uploadSize?.(bytes)
  }

  /** Calls `observer` with every observation from now on; returns the function that stops it. */
  observe (observer: TusMetricsObserver): () => void {
    this.#observers.add(observer)
    return () => { this.#observers.delete(observer) }
  }

  render (): string {
    const lines: string[] = []
    const metric = (name: string, type: 'counter' | 'gauge', help: string, samples: Array<[labels: string, value: number]>): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
      for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`)
    }
    metric('tus_uploads_created_total', 'counter', 'Uploads created.', [['', this.uploadsCreated]])
    metric('tus_uploads_completed_total', 'counter', 'Uploads whose last byte was stored.', [['', this.uploadsCompleted]])
    metric('tus_uploads_terminated_total', 'counter', 'Uploads removed by a DELETE.', [['', this.uploadsTerminated]])
    metric('tus_uploads_expired_total', 'counter', 'Uploads removed because they expired.', [['', this.uploadsExpired]])
    metric('tus_upload_failures_total', 'counter',
      'Requests storing bytes that ended in an error (storage, a hook, a body beyond the length).', [['', this.uploadFailures]])
    metric('tus_bytes_received_total', 'counter', 'Upload bytes stored.', [['', this.bytesReceived]])
    metric('tus_uploads_active', 'gauge', 'Requests storing upload bytes right now.', [['', this.activeUploads]])
    metric('tus_requests_total', 'counter', 'Requests answered by the tus routes, by method and status.',
      [...this.requests].sort(([a], [b]) => a.localeCompare(b)).map(([key, count]) => {
        const [method, status] = key.split(' ')
        return [`{method="${method ?? ''}",status="${status ?? ''}"}`, count]
      }))
    metric('tus_lock_waits_total', 'counter', 'Lock requests that found the upload held by another request of this process.', [['', this.lockWaits]])
    metric('tus_lock_wait_seconds_total', 'counter', 'Time spent waiting for upload locks.', [['', this.lockWaitSeconds]])
    metric('tus_lock_timeouts_total', 'counter', 'Lock requests that gave up waiting (answered 423).', [['', this.lockTimeouts]])
    // Last, and not in a fixed order of samples: durations differ from run to run.
    metric('tus_errors_total', 'counter', 'Requests of the tus routes answered with an error, by its code.',
      [...this.errors].sort(([a], [b]) => a.localeCompare(b)).map(([code, count]) => [`{code="${code}"}`, count]))
    lines.push('# HELP tus_request_duration_seconds Time to answer a request of the tus routes, by method and status.',
      '# TYPE tus_request_duration_seconds histogram')
    for (const [key, histogram] of [...this.requestDurations].sort(([a], [b]) => a.localeCompare(b))) {
      const [method, status] = key.split(' ')
      histogramLines(lines, 'tus_request_duration_seconds', `method="${method ?? ''}",status="${status ?? ''}"`, histogram)
    }
    lines.push('# HELP tus_upload_size_bytes Lengths of the uploads completed.', '# TYPE tus_upload_size_bytes histogram')
    histogramLines(lines, 'tus_upload_size_bytes', '', this.uploadSizes)
    return lines.join('\n') + '\n'
  }
}

function histogramLines (lines: string[], name: string, labels: string, histogram: HistogramData): void {
  const prefix = labels === '' ? '' : `${labels},`
  for (const [le, count] of histogram.cumulative()) lines.push(`${name}_bucket{${prefix}le="${le}"} ${count}`)
  const suffix = labels === '' ? '' : `{${labels}}`
  lines.push(`${name}_sum${suffix} ${histogram.sum}`, `${name}_count${suffix} ${histogram.count}`)
}

/** The Content-Type of the Prometheus text format. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** Counts every answered request of the tus routes (refusals by auth or the version check included), its time and its error. */
export function countRequests (instance: FastifyInstance, metrics: TusMetrics): void {
  // onSend, not onResponse: the status is final here, and a scrape that follows the response counts it.
  // Callbacks, not promises: these run on every request.
  // A request whose error onError has counted: onSend must not count its answer again.
  const errored = new WeakSet<object>()
  instance.addHook('onSend', (request, reply, payload, done) => {
    const status = reply.statusCode
    metrics.countRequest(request.method, status)
    // An answer >= 400 that no error passed onError for (an `auth` that refused by replying) is still an error.
    if (status >= 400 && !errored.has(request)) metrics.countError(undefined, status)
    done(null, payload)
  })
  instance.addHook('onError', (request, _reply, error, done) => {
    const { code, statusCode } = error as { code?: unknown, statusCode?: unknown }
    metrics.countError(code, statusCode)
    errored.add(request)
    done()
  })
  instance.addHook('onResponse', (request, reply, done) => {
    metrics.timeRequest(request.method, reply.statusCode, reply.elapsedTime / 1000)
    done()
  })
}

/**
 * Wraps a locker so that waiting is measured. A wait is counted when this process already holds or
 * awaits the same upload; time is measured for every acquisition, so a cross-process locker's waits
 * show up in the seconds even when the other holder is elsewhere.
 * Each lock given is counted in `held` until its release has ended (closing waits for them).
 */
export function measuredLocker (locker: UploadLocker, metrics: TusMetrics, held?: HeldLocks): UploadLocker {
  const busy = new Map<string, number>()
  return {
    async lock (id: string, options: LockOptions): Promise<UploadLock> {
      const users = busy.get(id) ?? 0
      if (users > 0) metrics.lockWaits++
      busy.set(id, users + 1)
      const started = performance.now()
      let lock: UploadLock
      try {
        lock = await locker.lock(id, options)
      } catch (error) {
        leave(id)
        if ((error as { code?: unknown }).code === 'FST_TUS_LOCKED') metrics.lockTimeouts++
        throw error
      } finally {
        metrics.lockWaitSeconds += (performance.now() - started) / 1000
      }
      held?.taken()
      return new MeasuredLock(lock, () => { leave(id) }, held)
    }
  }

  function leave (id: string): void {
    const users = (busy.get(id) ?? 1) - 1
    if (users === 0) busy.delete(id)
    else busy.set(id, users)
  }
}

/**
 * A lock given by measuredLocker. A class, not an object literal with a getter: one is made for every request
 * that takes a lock, and V8 builds such a literal much more slowly than a class instance.
 */
class MeasuredLock implements UploadLock {
  readonly soleWriter: boolean | undefined
  readonly #lock: UploadLock
  /** Called once, when the hold ends: the upload is no longer busy for this hold. */
  readonly #leave: () => void
  readonly #held: HeldLocks | undefined
  #released = false

  constructor (lock: UploadLock, leave: () => void, held: HeldLocks | undefined) {
    this.#lock = lock
    this.#leave = leave
    this.#held = held
    this.soleWriter = lock.soleWriter
  }

  // Read when asked for: a lease makes its signal only then.
  get signal (): AbortSignal | undefined {
    return this.#lock.signal
  }

  async release (): Promise<void> {
    if (this.#released) {
      await this.#lock.release()
      return
    }
    this.#released = true
    this.#leave()
    try {
      await this.#lock.release()
    } finally {
      this.#held?.released()
    }
  }
}
