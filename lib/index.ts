import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { DiskReserve } from './core/capacity.js'
import { removeExpired } from './core/expiry.js'
import { PendingFinals } from './core/pending-finals.js'
import { InFlightWrites } from './core/in-flight.js'
import type { TusServices } from './core/services.js'
import { decorateTusRequests } from './http/decorate.js'
import { pathMatchingOf } from './http/router-options.js'
import { tusRoutes } from './http/routes.js'
import { HeldLocks, MemoryLocker } from './lockers/lock.js'
import { SharedReads } from './lockers/shared-reads.js'
import { TusEvents } from './observe/events.js'
import { METRICS_CONTENT_TYPE, TusMetrics, measuredLocker } from './observe/metrics.js'
import { prepareDirectory, resolveOptions, type TusPluginOptions } from './options.js'
import { FileStore } from './store/file-store.js'
import type { DataStore } from './store/types.js'
import type { TusRequestUpload } from './types.js'

/** What `app.tus` offers; it is also the typed emitter of the upload events (`app.tus.on('completed', ...)`). */
export interface TusDecorator extends TusEvents {
  /**
   * Removes every expired upload (never one being written to) and resolves with how many it removed; each is
   * emitted as `expired` (`app.tus.on('expired', ...)`).
   */
  removeExpired (): Promise<number>
  /** The store the uploads live in. */
  readonly store: DataStore
  /** The plugin's counters and gauges in the Prometheus text format. */
  metrics (): string
  /** The numbers behind `metrics()`, for a bridge to a metrics library (`fastify-tus/prom-client`). */
  readonly stats: TusMetrics
}

// Here, in the entry point, so that its declaration file carries them to every consumer (a declaration in another
// module reaches only consumers whose compilation happens to include that module).
declare module 'fastify' {
  interface FastifyInstance {
    tus: TusDecorator
  }
  interface FastifyRequest {
    /**
     * What this request did to an upload (fastify-tus): set on the tus routes, for tus 1.0.0 and the IETF
     * draft alike, as soon as the request reaches an upload; null on every other request.
     */
    tus: TusRequestUpload | null
  }
}

const plugin: FastifyPluginAsync<TusPluginOptions> = async (fastify, rawOptions) => {
  const options = resolveOptions(rawOptions, { maxParamLength: pathMatchingOf(fastify).maxParamLength })
  if (rawOptions.store === undefined) await prepareDirectory(options.dir)
  const store = rawOptions.store ?? new FileStore({ directory: options.dir })
  const metrics = new TusMetrics()
  const heldLocks = new HeldLocks()
  const inFlight = new InFlightWrites(heldLocks)
  const locker = measuredLocker(rawOptions.locker ?? new MemoryLocker(), metrics, heldLocks)
  const events = new TusEvents()
  const services: Omit<TusServices, 'basePath'> = {
    options, store, locker, events, metrics, pendingFinals: new PendingFinals(), diskReserve: new DiskReserve(options.dir, options.minFreeSpace), inFlight, sharedReads: new SharedReads(), log: fastify.log
  }

  const decorator: TusDecorator = Object.assign(events, {
    removeExpired: async () => await removeExpired({ ...services, basePath: options.prefix }),
    store,
    metrics: () => metrics.render(),
    stats: metrics
  })
  fastify.decorate('tus', decorator)
  decorateTusRequests(fastify)
  const metricsPath = options.metricsPath
  if (metricsPath !== undefined) {
    fastify.get(metricsPath, async (_request, reply) => await reply.type(METRICS_CONTENT_TYPE).send(metrics.render()))
  }
  // Before the server waits for its connections: end the bodies being written so their clients let go, and wait for
  // the locks to be released.
  fastify.addHook('preClose', async () => { await services.inFlight.drain(options.closeTimeout) })
  fastify.addHook('onClose', async () => {
    // Requests admitted before the close may have begun writing since preClose (after a hook or a lock wait): their
    // bodies are ended too, and their writes and locks settle before the store and the locker close under them.
    await services.inFlight.drain(options.closeTimeout)
    await store.close()
    await rawOptions.locker?.close?.()
  })
  await fastify.register(tusRoutes, { prefix: options.prefix, services })
}

/** The fastify-tus plugin: `app.register(tusPlugin, options)`. */
export const tusPlugin = fp(plugin, { fastify: '5.x', name: 'fastify-tus' })
export default tusPlugin

export { TusDraftErrors, TusErrors } from './errors.js'
export type { TusErrorConstructor, TusErrorFacts, TusHttpError } from './errors.js'
export { MemoryLocker } from './lockers/lock.js'
export { FileLocker } from './lockers/file-locker.js'
export type { FileLockerOptions } from './lockers/file-locker.js'
export type { LockOptions, UploadLock, UploadLocker } from './lockers/lock.js'
export { FileStore } from './store/file-store.js'
export type { FileStoreOptions } from './store/file-store.js'
export type { ByteRange, DataStore, NewUpload, PartialIdentity, UploadConcat, UploadInfo, UploadMetadata, WriteOptions } from './store/types.js'
export type { TusPluginOptions } from './options.js'
export type {
  FormatError, GenerateUrl, GetUploadIdFromRequest, MaxSizeOf, OnUploadAccess, OnUploadComplete, OnUploadCreate, OnUploadExpire, OnUploadProgress,
  OnUploadTerminate, TusAuthHook, TusErrorAnswer, TusErrorBody, TusRequestUpload, UploadAction, UploadCreateChanges, UploadResponse, UploadUrlParts
} from './types.js'
export { TusEvents } from './observe/events.js'
export type { TusEventMap, TusEventName } from './observe/events.js'
export type { HistogramData, TusMetrics, TusMetricsObserver } from './observe/metrics.js'
export { DEFAULT_MAX_SIZE } from './options.js'
export { TUS_ALLOWED_HEADERS, TUS_ALLOWED_METHODS, TUS_EXPOSED_HEADERS, tusCorsOptions } from './cors.js'
export type { DraftVersion } from './ietf/versions.js'
