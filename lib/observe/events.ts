import { EventEmitter } from 'node:events'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { UploadInfo } from '../store/types.js'

/**
 * What `app.tus` emits, each with the upload as it is at that moment and, for events a request caused, that
 * request (the second argument; listeners written for the upload alone keep working). For code that only observes.
 */
export interface TusEventMap {
  /** An upload was created (after onUploadCreate, before any byte of it is stored). */
  created: [upload: UploadInfo, request: FastifyRequest]
  /** Bytes arrived; emitted as often as onUploadProgress would be called (see `progressInterval`). */
  progress: [upload: UploadInfo, request: FastifyRequest]
  /** The last byte is durable and onUploadComplete has run; emitted once per upload. */
  completed: [upload: UploadInfo, request: FastifyRequest]
  /** A DELETE removed the upload. */
  terminated: [upload: UploadInfo, request: FastifyRequest]
  /** `app.tus.removeExpired()` removed the upload (no request caused it). */
  expired: [upload: UploadInfo]
  /**
   * A request storing bytes ended in an error (storage, a hook, a body beyond the length, a checksum mismatch,
   * onUploadComplete): the error it is answered with, the upload with the bytes kept, the request. Counted in
   * `tus_upload_failures_total`.
   */
  failed: [error: Error, upload: UploadInfo, request: FastifyRequest]
}

export type TusEventName = keyof TusEventMap

/** The typed emitter behind `app.tus.on(...)`. */
export class TusEvents extends EventEmitter<TusEventMap> {}

/**
 * Emits without letting an observer break the request that caused the event, nor another observer: each
 * listener is called on its own; one that throws, or returns a promise that rejects, is logged, and the
 * others and the upload go on as if it had not been there.
 */
export function notify<E extends TusEventName> (events: TusEvents, log: FastifyBaseLogger, name: E, ...args: TusEventMap[E]): void {
  // Nobody listens (the usual case): no copy of the listener list, no closure.
  if (events.listenerCount(name) === 0) return
  const failed = (error: unknown): void => { log.error({ err: error, event: name }, 'fastify-tus: an event listener failed') }
  for (const listener of events.rawListeners(name) as Array<(...args: TusEventMap[E]) => unknown>) {
    try {
      const result = listener.apply(events, args)
      if (result instanceof Promise) result.catch(failed)
    } catch (error) {
      failed(error)
    }
  }
}
