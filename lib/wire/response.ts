import type { FastifyReply, FastifyRequest } from 'fastify'
import { errorStatus, isLogged, publicMessage, statusErrorCode, type TusHttpError } from '../errors.js'
import type { FormatError, TusErrorAnswer, TusErrorBody, UploadResponse } from '../types.js'

/** Sends the final answer of a request that stored bytes: `status`, or what onUploadComplete asked for. */
export async function sendUploadResponse (reply: FastifyReply, status: number, response: UploadResponse | undefined): Promise<void> {
  if (response === undefined) {
    await reply.code(status).send()
    return
  }
  for (const [name, value] of Object.entries(response.headers ?? {})) reply.header(name, typeof value === 'string' ? value : [...value])
  const bodyStatus = status === 204 && response.body !== undefined ? 200 : status
  await reply.code(response.status ?? bodyStatus).send(response.body)
}

const TEXT = 'text/plain; charset=utf-8'

/**
 * What every protocol does first with an error: its status, its own headers, and the text a client may
 * read, with the body and Content-Type that carry it. Errors of our own and client errors say what was wrong;
 * unexpected server errors are logged and their message, which may hold internals, is never sent.
 */
export function prepareErrorReply (
  error: TusHttpError, request: FastifyRequest, reply: FastifyReply
): { status: number, message: string, body: string | Buffer, contentType: string } {
  const status = errorStatus(error)
  const message = publicMessage(error)
  if (message !== error.message && !isLogged(error)) {
    // A lock service that is unreachable, or a lock lost: the client is told to retry, and nothing failed here.
    if (error.code === 'FST_TUS_LOCK_FAILED') request.log.warn({ err: error }, 'fastify-tus: upload lock unavailable; answered 503')
    else request.log.error({ err: error }, 'fastify-tus: unexpected error')
  }
  if (error.headers !== undefined) reply.headers(error.headers)
  reply.code(status)
  // An error that names its own Content-Type carries a message in that type (a tusd hook receiver's refusal,
  // often JSON); labelled text/plain, its client would not parse it. Sent as bytes, so the type goes out as named
  // (a string would gain a charset parameter). A message replaced by ours is ours: text.
  const own = message === error.message ? ownContentType(error) : undefined
  if (own !== undefined) return { status, message, body: Buffer.from(message), contentType: own }
  return { status, message, body: message, contentType: TEXT }
}

function ownContentType (error: TusHttpError): string | undefined {
  const entry = Object.entries(error.headers ?? {}).find(([name]) => name.toLowerCase() === 'content-type')
  return entry?.[1]
}

/**
 * Sends the body of an error answer whose status and headers are set: the app's (`formatError`) or the
 * protocol's. A formatter that throws is logged and the protocol's body is sent.
 */
export function sendErrorBody (
  format: FormatError | undefined, error: TusHttpError, request: FastifyRequest, reply: FastifyReply, answer: TusErrorAnswer
): void {
  let chosen: TusErrorBody | undefined | null
  if (format !== undefined) {
    try {
      chosen = format(coded(error, answer.status), request, answer)
    } catch (formatError) {
      request.log.error({ err: formatError }, 'fastify-tus: formatError failed; the default error body is sent')
    }
  }
  if (chosen !== undefined && chosen !== null && !isErrorBody(chosen)) {
    // Sent as it is, it would change the answer: Fastify's own 500 for a body it cannot send (a client told 500 for a 409
    // that carries the offset to resume from), or its error JSON for a missing Content-Type.
    request.log.error({ returned: chosen }, 'fastify-tus: formatError returned no { body: string | Buffer, contentType: string }; the default error body is sent')
    chosen = undefined
  }
  const { body, contentType } = chosen ?? answer
  // 460 has no reason phrase in Node ("unknown"); the checksum extension names it, whichever protocol answers.
  // HTTP/2 has no reason phrases (Node warns).
  if (answer.status === 460 && request.raw.httpVersionMajor < 2) reply.raw.statusMessage = 'Checksum Mismatch'
  void reply.type(contentType).send(body)
}

/** What `formatError` may return: a string or Buffer body and a Content-Type that is a valid header value. */
function isErrorBody (value: unknown): value is TusErrorBody {
  if (typeof value !== 'object' || value === null) return false
  const { body, contentType } = value as Partial<TusErrorBody>
  return (typeof body === 'string' || Buffer.isBuffer(body)) && typeof contentType === 'string' && /^[\t\x20-\x7e\x80-\xff]+$/.test(contentType)
}

/**
 * The error as `formatError` is typed to get it, with a string `code`. A code-less one (a hook's refusal, thrown as
 * `Object.assign(new Error(...), { statusCode: 403 })`) is named by its status, `HTTP_403`, as `tus_errors_total`
 * names it; the object the hook threw is left as it is (the formatter sees it through a view).
 */
function coded (error: TusHttpError, status: number): TusHttpError {
  if (typeof error === 'object' && error !== null && typeof error.code === 'string') return error
  const code = statusErrorCode(status)
  if (typeof error !== 'object' || error === null) return Object.assign(new Error(String(error)), { code, statusCode: status }) as TusHttpError
  return Object.assign(Object.create(error) as TusHttpError, { code })
}
