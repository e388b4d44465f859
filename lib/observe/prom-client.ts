import { Counter, Gauge, Histogram, register as defaultRegistry, type Registry } from 'prom-client'
import { DURATION_BUCKETS, SIZE_BUCKETS, type TusMetrics } from './metrics.js'

/**
 * `fastify-tus/prom-client`: the plugin's metrics in a prom-client registry, beside the app's own. Counters and
 * gauges are read from the plugin at each scrape (so they hold everything since the plugin started); the
 * histograms are fed as requests end, from the moment the collector is attached. prom-client is an optional peer
 * dependency: only this module imports it.
 */

export interface TusCollectorOptions {
  /** The registry the metrics go to. Default: prom-client's global `register`. */
  registry?: Registry
  /** What every metric name starts with. Default `tus_` (the names of `app.tus.metrics()`). */
  prefix?: string
}

/** What the collector reads: `app.tus`. */
export interface TusMetricsSource {
  readonly stats: TusMetrics
}

/**
 * Registers the plugin's metrics in `options.registry` (or prom-client's global one); returns the function that
 * removes them again. Call it once per registry, after `app.register(tus)`:
 * `tusCollector(app.tus, { registry })`.
 */
export function tusCollector (source: TusMetricsSource, options: TusCollectorOptions = {}): () => void {
  const stats = source.stats
  const registry = options.registry ?? defaultRegistry
  const prefix = options.prefix ?? 'tus_'
  const registers = [registry]
  const names: string[] = []
  const name = (suffix: string): string => {
    names.push(prefix + suffix)
    return prefix + suffix
  }

  const counter = (suffix: string, help: string, read: () => number): void => {
    void new Counter({
      name: name(suffix),
      help,
      registers,
      collect () {
        this.reset()
        this.inc(read())
      }
    })
  }
  counter('uploads_created_total', 'Uploads created.', () => stats.uploadsCreated)
  counter('uploads_completed_total', 'Uploads whose last byte was stored.', () => stats.uploadsCompleted)
  counter('uploads_terminated_total', 'Uploads removed by a DELETE.', () => stats.uploadsTerminated)
  counter('uploads_expired_total', 'Uploads removed because they expired.', () => stats.uploadsExpired)
  counter('upload_failures_total', 'Requests storing bytes that ended in an error (storage, a hook, a body beyond the length).',
    () => stats.uploadFailures)
  counter('bytes_received_total', 'Upload bytes stored; moves while a body streams.', () => stats.bytesReceived)
  counter('lock_waits_total', 'Lock requests that found the upload held by another request of this process.', () => stats.lockWaits)
  counter('lock_wait_seconds_total', 'Time spent waiting for upload locks.', () => stats.lockWaitSeconds)
  counter('lock_timeouts_total', 'Lock requests that gave up waiting (answered 423).', () => stats.lockTimeouts)
  void new Gauge({
    name: name('uploads_active'),
    help: 'Requests storing upload bytes right now.',
    registers,
    collect () { this.set(stats.activeUploads) }
  })
  void new Counter({
    name: name('requests_total'),
    help: 'Requests answered by the tus routes, by method and status.',
    labelNames: ['method', 'status'] as const,
    registers,
    collect () {
      this.reset()
      for (const [key, count] of stats.requests) {
        const [method = '', status = ''] = key.split(' ')
        this.inc({ method, status }, count)
      }
    }
  })
  void new Counter({
    name: name('errors_total'),
    help: 'Requests of the tus routes answered with an error, by its code.',
    labelNames: ['code'] as const,
    registers,
    collect () {
      this.reset()
      for (const [code, count] of stats.errors) this.inc({ code }, count)
    }
  })
  const durations = new Histogram({
    name: name('request_duration_seconds'),
    help: 'Time to answer a request of the tus routes, by method and status.',
    labelNames: ['method', 'status'] as const,
    buckets: [...DURATION_BUCKETS],
    registers
  })
  const sizes = new Histogram({
    name: name('upload_size_bytes'),
    help: 'Lengths of the uploads completed.',
    buckets: [...SIZE_BUCKETS],
    registers
  })
  const stop = stats.observe({
    requestDuration: (method, status, seconds) => { durations.observe({ method, status: String(status) }, seconds) },
    uploadSize: (bytes) => { sizes.observe(bytes) }
  })
  return () => {
    stop()
    for (const metric of names) registry.removeSingleMetric(metric)
  }
}
