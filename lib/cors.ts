import type { FastifyCorsOptions } from '@fastify/cors'
import type { FastifyRequest } from 'fastify'

/**
 * The response headers a browser client must be allowed to read, for tus 1.0 and the IETF draft.
 * `tusCorsOptions` exposes them; give them to `@fastify/cors` as `exposedHeaders` if you build your own options.
 */
export const TUS_EXPOSED_HEADERS: readonly string[] = Object.freeze([
  'Location', 'Upload-Offset', 'Upload-Length', 'Upload-Metadata', 'Upload-Expires', 'Upload-Defer-Length',
  'Upload-Concat', 'Upload-Complete', 'Upload-Incomplete', 'Upload-Limit', 'Upload-Draft-Interop-Version', 'Accept-Patch',
  'Tus-Resumable', 'Tus-Version', 'Tus-Extension', 'Tus-Max-Size', 'Tus-Checksum-Algorithm'
])

/** Every method a tus or IETF-draft client sends (`@fastify/cors` allows only GET, HEAD and POST by default). */
export const TUS_ALLOWED_METHODS: readonly string[] = Object.freeze(['POST', 'HEAD', 'PATCH', 'OPTIONS', 'GET', 'DELETE'])

/**
 * The request headers tus 1.0 and IETF-draft clients send (tus-js-client, Uppy, the browsers' draft clients),
 * plus `Authorization` for apps with an `auth` hook, `X-HTTP-Method-Override` / `X-Requested-With`, and
 * `X-Request-ID` (tus-js-client's `addRequestId`; tusd allows it too).
 */
export const TUS_ALLOWED_HEADERS: readonly string[] = Object.freeze([
  'Tus-Resumable', 'Upload-Offset', 'Upload-Length', 'Upload-Metadata', 'Upload-Defer-Length', 'Upload-Concat',
  'Upload-Checksum', 'Upload-Complete', 'Upload-Incomplete', 'Upload-Draft-Interop-Version',
  'Content-Type', 'Content-Disposition', 'Authorization', 'X-HTTP-Method-Override', 'X-Requested-With', 'X-Request-ID'
])

/** A CORS preflight: an OPTIONS naming the method the browser wants to send. */
function isPreflight (request: FastifyRequest): boolean {
  return request.method === 'OPTIONS' && request.headers['access-control-request-method'] !== undefined
}

/**
 * `@fastify/cors` options for browser uploads from `origin` (anything `@fastify/cors` takes: a string, `true`
 * to reflect any origin, a list, a RegExp, a function), in one line:
 *
 *     await app.register(cors, tusCorsOptions(['https://app.example.com']))
 *
 * - preflights are answered (204) by `@fastify/cors` in its onRequest hook, before any auth, allowing every
 *   tus method (`TUS_ALLOWED_METHODS`) and request header (`TUS_ALLOWED_HEADERS`);
 * - every tus response header is exposed (`TUS_EXPOSED_HEADERS`), errors included;
 * - an OPTIONS that is no preflight (a tus discovery request, with or without `Origin`) is left to the route,
 *   so the plugin answers it with `Tus-Version`, `Tus-Extension`, `Tus-Max-Size`... (`@fastify/cors` alone
 *   answers it `400 Invalid Preflight Request`, or 204 without tus headers with `strictPreflight: false`).
 *
 * `options` are merged over these (e.g. `{ credentials: true }`, or
 * `{ allowedHeaders: [...TUS_ALLOWED_HEADERS, 'X-My-Header'] }`).
 */
export function tusCorsOptions (origin: FastifyCorsOptions['origin'], options: Omit<FastifyCorsOptions, 'delegator' | 'origin'> = {}): FastifyCorsOptions {
  const base: FastifyCorsOptions = {
    origin,
    methods: [...TUS_ALLOWED_METHODS],
    allowedHeaders: [...TUS_ALLOWED_HEADERS],
    exposedHeaders: [...TUS_EXPOSED_HEADERS],
    maxAge: 86400,
    strictPreflight: false,
    ...options
  }
  const preflight: FastifyCorsOptions = { ...base, preflight: base.preflight ?? true }
  const other: FastifyCorsOptions = { ...base, preflight: false }
  return {
    ...(options.hook === undefined ? {} : { hook: options.hook }),
    // Chosen per request: @fastify/cors would otherwise treat every OPTIONS as a preflight.
    delegator: (request, callback) => { callback(null, isPreflight(request) ? preflight : other) }
  }
}
