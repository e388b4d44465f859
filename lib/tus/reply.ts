import type { FastifyReply, FastifyRequest } from 'fastify'
import type { TusHttpError } from '../errors.js'
import { prepareErrorReply } from '../wire/response.js'
import { TUS_VERSION } from './headers.js'

/** The tus answer to an error: its status, `Upload-Offset` when the upload's standing is known, a short plain-text body. */
export function sendTusError (error: TusHttpError, request: FastifyRequest, reply: FastifyReply): void {
  const { status, message } = prepareErrorReply(error, request, reply)
  if (error.offset !== undefined) reply.header('Upload-Offset', String(error.offset))
  // 460 has no reason phrase in Node; the checksum extension names it.
  if (status === 460) reply.raw.statusMessage = 'Checksum Mismatch'
  void reply.header('Tus-Resumable', TUS_VERSION).type('text/plain; charset=utf-8').send(message)
}
