import type { FastifyReply, FastifyRequest } from 'fastify'
import { errorStatus, publicMessage, type TusHttpError } from '../errors.js'
import type { FormatError, TusErrorAnswer, TusErrorBody, UploadResponse } from '../types.js'

/** Sends the final answer of a request that stored bytes: `status`, or what onUploadComplete asked for. */
export async function sendUploadResponse (reply: FastifyReply, status: number, response: UploadResponse | undefined): Promise<void> {
  if (response === undefined) {
    await reply.code(status).send()
    return
  }
  if (response.headers !== undefined) reply.headers(response.headers)
  const bodyStatus = status === 204 && response.body !== undefined ? 200 : status
  await reply.code(response.status ?? bodyStatus).send(response.body)
}

/**
 * What every protocol does first with an error: its status, its own headers, and the text a client may
 * read. Errors of our own and client errors say what was wrong; unexpected server errors are logged and
 * their message, which may hold internals, is never sent.
 */
export function prepareErrorReply (error: TusHttpError, request: FastifyRequest, reply: FastifyReply): { status: number, message: string } {
  const status = errorStatus(error)
  const message = publicMessage(error)
  if (message !== error.message) request.log.error({ err: error }, 'fastify-tus: unexpected error')
  if (error.headers !== undefined) reply.headers(error.headers)
  reply.code(status)
  return { status, message }
}

/**
 * Sends the body of an error answer whose status and headers are set: the app's (`formatError`) or the
 * protocol's. A formatter that throws is logged and the protocol's body is sent.
 */
export function sendErrorBody (
  format: FormatError | undefined, error: TusHttpError, request: FastifyRequest, reply: FastifyReply, answer: TusErrorAnswer
): void {
  let chosen: TusErrorBody | undefined
  if (format !== undefined) {
    try {
      chosen = format(error, request, answer)
    } catch (formatError) {
      request.log.error({ err: formatError }, 'fastify-tus: formatError failed; the default error body is sent')
    }
  }
  const { body, contentType } = chosen ?? answer
  void reply.type(contentType).send(body)
}
