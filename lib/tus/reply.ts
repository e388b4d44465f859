import type { FastifyReply, FastifyRequest } from 'fastify'
import type { TusHttpError } from '../errors.js'
import type { FormatError } from '../types.js'
import { prepareErrorReply, sendErrorBody } from '../wire/response.js'
import { TUS_VERSION } from './headers.js'

/**
 * The tus answer to an error: its status, `Upload-Offset` when the upload's standing is known, a short plain-text
 * body (or the error's message in the Content-Type the error names).
 */
export function sendTusError (error: TusHttpError, request: FastifyRequest, reply: FastifyReply, format?: FormatError): void {
  const { status, message, body, contentType } = prepareErrorReply(error, request, reply)
  if (error.offset !== undefined) reply.header('Upload-Offset', String(error.offset))
  reply.header('Tus-Resumable', TUS_VERSION)
  sendErrorBody(format, error, request, reply, { protocol: 'tus', status, message, body, contentType })
}
