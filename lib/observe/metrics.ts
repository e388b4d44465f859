import type { FastifyInstance } from 'fastify'
import type { LockOptions, UploadLock, UploadLocker } from '../lockers/lock.js'

const METHODS = new Set(['OPTIONS', 'POST', 'HEAD', 'GET', 'PATCH', 'DELETE'])

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

  countRequest (method: string, status: number): void {
    const key = `${METHODS.has(method) ? method : 'OTHER'} ${status}`
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1)
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
    return lines.join('\n') + '\n'
  }
}

/** The Content-Type of the Prometheus text format. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** Counts every answered request of the tus routes (refusals by auth or the version check included). */
export function countRequests (instance: FastifyInstance, metrics: TusMetrics): void {
  // onSend, not onResponse: the status is final here, and a scrape that follows the response counts it.
  instance.addHook('onSend', async (request, reply) => {
    metrics.countRequest(request.method, reply.statusCode)
  })
}

/**
 * Wraps a locker so that waiting is measured. A wait is counted when this process already holds or
 * awaits the same upload; time is measured for every acquisition, so a cross-process locker's waits
 * show up in the seconds even when the other holder is elsewhere.
 */
export function measuredLocker (locker: UploadLocker, metrics: TusMetrics): UploadLocker {
  const busy = new Map<string, number>()
  return {
    async lock (id: string, options: LockOptions): Promise<UploadLock> {
      const users = busy.get(id) ?? 0
      if (users > 0) metrics.lockWaits++
      busy.set(id, users + 1)
      const started = process.hrtime.bigint()
      let lock: UploadLock
      try {
        lock = await locker.lock(id, options)
      } catch (error) {
        leave(id)
        if ((error as { code?: unknown }).code === 'FST_TUS_LOCKED') metrics.lockTimeouts++
        throw error
      } finally {
        metrics.lockWaitSeconds += Number(process.hrtime.bigint() - started) / 1e9
      }
      let released = false
      return {
        ...(lock.signal === undefined ? {} : { signal: lock.signal }),
        release: async () => {
          if (!released) {
            released = true
            leave(id)
          }
          await lock.release()
        }
      }
    }
  }

  function leave (id: string): void {
    const users = (busy.get(id) ?? 1) - 1
    if (users === 0) busy.delete(id)
    else busy.set(id, users)
  }
}
