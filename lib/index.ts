import type { FastifyInstance, FastifyPluginAsync, RegisterOptions } from 'fastify'
import fp from 'fastify-plugin'
import { DiskReserve } from './core/capacity.js'
import { removeExpired } from './core/expiry.js'
import { PendingFinals } from './core/pending-finals.js'
import { InFlightWrites } from './core/in-flight.js'
import type { TusServices } from './core/services.js'
import { TusErrors } from './errors.js'
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
     * draft alike, as soon as the request reaches an upload; null on every other request of the context the plugin is
     * registered in and of its children (the whole app when registered on it). Undefined on a route outside that
     * context: Fastify lets a plugin decorate only its own context.
     */
    tus: TusRequestUpload | null
  }
}

const plugin: FastifyPluginAsync<TusPluginOptions> = async (fastify, rawOptions) => {
  refuseTakenNames(fastify)
  const options = resolveOptions(rawOptions, { maxParamLength: pathMatchingOf(fastify).maxParamLength })
  if (rawOptions.store === undefined) await prepareDirectory(options.dir)
  const store = rawOptions.store ?? new FileStore({ directory: options.dir })
  const metrics = new TusMetrics()
  const heldLocks = new HeldLocks()
  const inFlight = new InFlightWrites(heldLocks)
  const locker = measuredLocker(rawOptions.locker ?? new MemoryLocker(), metrics, heldLocks)
  const events = new TusEvents()
  const services: Omit<TusServices, 'basePath'> = {
    options, store, locker, events, metrics, pendingFinals: new PendingFinals(), diskReserve: new DiskReserve(options.dir, options.minFreeSpace), inFlight, sharedReads: new SharedReads(), expiring: new Set(), log: fastify.log
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
  // Fastify applies its own register options to the plugins it encapsulates only: this one is not, so they are
  // given to the routes' context (logLevel: 'warn' quiets the tus routes).
  const { logLevel, logSerializers } = rawOptions as RegisterOptions
  await fastify.register(tusRoutes, { prefix: options.prefix, services, ...(logLevel === undefined ? {} : { logLevel }), ...(logSerializers === undefined ? {} : { logSerializers }) })
}

/**
 * `app.tus` and `request.tus` are the plugin's: Fastify's own answer to a second registration in one context (or in a
 * child of one that has it), or to an app that decorates requests with `tus`, named the decorator only.
 */
function refuseTakenNames (fastify: FastifyInstance): void {
  if (fastify.hasDecorator('tus')) {
    throw new TusErrors.INVALID_OPTION('the plugin is already registered in this context or a parent of it (app.tus is taken): to serve ' +
      'several endpoints, register each in a context of its own, with its own prefix and dir, e.g. ' +
      'app.register(async (scope) => { await scope.register(tus, { prefix: \'/other\', dir: \'./other\' }) })')
  }
  if (fastify.hasRequestDecorator('tus')) {
    throw new TusErrors.INVALID_OPTION('requests are already decorated with "tus" by the app, and request.tus is the plugin\'s (what a request did to an upload): rename the app\'s decoration')
  }
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
export type { DraftInteropVersion, DraftVersion } from './ietf/versions.js'
