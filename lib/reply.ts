import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { expiresAt, type TusContext } from './context.js'
import { TUS_VERSION } from './protocol.js'
import type { UploadInfo } from './store/types.js'

export function setExpires (context: TusContext, reply: FastifyReply, upload: UploadInfo): void {
  const expiry = expiresAt(context, upload)
  if (expiry !== undefined) reply.header('Upload-Expires', expiry.toUTCString())
}

/**
 * Every error becomes its status code and a short plain-text body. Errors of our own (FST_TUS_*) and
 * client errors say what was wrong; unexpected server errors are logged and answered generically.
 */
export function sendError (error: FastifyError & { headers?: Record<string, string> }, request: FastifyRequest, reply: FastifyReply): void {
  const status = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 600 ? error.statusCode : 500
  const ours = error.code?.startsWith('FST_TUS_') ?? false
  if (status >= 500 && !ours) request.log.error({ err: error }, 'fastify-tus: unexpected error')
  if (error.headers !== undefined) reply.headers(error.headers)
  // 460 has no reason phrase in Node; the checksum extension names it.
  if (status === 460) reply.raw.statusMessage = 'Checksum Mismatch'
  void reply
    .code(status)
    .header('Tus-Resumable', TUS_VERSION)
    .type('text/plain; charset=utf-8')
    .send(status >= 500 && !ours ? 'Internal server error' : error.message)
}
