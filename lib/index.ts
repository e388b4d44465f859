import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { TusContext } from './context.js'
import { removeExpired } from './expiry.js'
import { MemoryLocker } from './lock.js'
import { resolveOptions, type TusPluginOptions } from './options.js'
import { tusRoutes } from './routes.js'
import { FileStore } from './store/file-store.js'
import type { DataStore, UploadInfo } from './store/types.js'

/** What `app.tus` offers. */
export interface TusDecorator {
  /** Removes every expired upload (never one being written to) and resolves with what it removed. */
  removeExpired (): Promise<UploadInfo[]>
  /** The store the uploads live in. */
  readonly store: DataStore
}

declare module 'fastify' {
  interface FastifyInstance {
    tus: TusDecorator
  }
}

const plugin: FastifyPluginAsync<TusPluginOptions> = async (fastify, rawOptions) => {
  const options = resolveOptions(rawOptions)
  const store = rawOptions.store ?? new FileStore({ directory: options.dir })
  const locker = rawOptions.locker ?? new MemoryLocker()
  const context: Omit<TusContext, 'basePath'> = { options, store, locker }

  fastify.decorate('tus', {
    removeExpired: async () => await removeExpired({ ...context, basePath: options.prefix }),
    store
  } satisfies TusDecorator)
  fastify.addHook('onClose', async () => { await store.close() })
  await fastify.register(tusRoutes, { prefix: options.prefix, context })
}

/** The fastify-tus plugin: `app.register(tusPlugin, options)`. */
export const tusPlugin = fp(plugin, { fastify: '5.x', name: 'fastify-tus' })
export default tusPlugin

export { TusErrors } from './errors.js'
export { MemoryLocker } from './lock.js'
export type { LockOptions, UploadLock, UploadLocker } from './lock.js'
export { FileStore } from './store/file-store.js'
export type { FileStoreOptions } from './store/file-store.js'
export type { ByteRange, DataStore, NewUpload, UploadConcat, UploadInfo, UploadMetadata } from './store/types.js'
export type { OnUploadComplete, OnUploadCreate, TusAuthHook, TusPluginOptions } from './options.js'
export { DEFAULT_MAX_SIZE } from './options.js'
