import type { FastifyReply, FastifyRequest } from 'fastify'
import type { TusHttpError } from '../errors.js'
import type { FormatError } from '../types.js'
import { prepareErrorReply, sendErrorBody } from '../wire/response.js'
import { TUS_VERSION } from './headers.js'

/**
 * The tus answer to an error: its status, `Upload-Offset` when the upload's standing is known (and `Upload-Expires`
 * when it will expire), a short plain-text body (or the error's message in the Content-Type the error names).
 */
export function sendTusError (error: TusHttpError, request: FastifyRequest, reply: FastifyReply, format?: FormatError): void {
  const { status, message, body, contentType } = prepareErrorReply(error, request, reply)
  if (error.offset !== undefined) reply.header('Upload-Offset', String(error.offset))
  if (error.expires !== undefined) reply.header('Upload-Expires', error.expires.toUTCString())
  reply.header('Tus-Resumable', TUS_VERSION)
  sendErrorBody(format, error, request, reply, { protocol: 'tus', status, message, body, contentType })
}
