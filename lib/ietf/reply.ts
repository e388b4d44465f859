import type { FastifyReply, FastifyRequest } from 'fastify'
import type { TusServices } from '../core/services.js'
import type { TusHttpError } from '../errors.js'
import { prepareErrorReply, sendErrorBody } from '../wire/response.js'
import { completeHeaderValue } from './headers.js'
import { uploadLimit } from './handlers.js'
import type { DraftVersion } from './versions.js'

const PROBLEM_BASE = 'https://iana.org/assignments/http-problem-types#'

/** A problem type (RFC 9457) of the draft, with its extension members. */
interface DraftProblem {
  type: 'mismatching-upload-offset' | 'inconsistent-upload-length' | 'completed-upload'
  title: string
  members?: Record<string, number>
}

const INCONSISTENT_LENGTH: DraftProblem = { type: 'inconsistent-upload-length', title: 'inconsistent length values for upload' }
const COMPLETED_UPLOAD: DraftProblem = { type: 'completed-upload', title: 'upload is already completed' }
const LENGTH_CODES = new Set(['FST_TUS_LENGTH_ALREADY_SET', 'FST_TUS_LENGTH_BELOW_OFFSET', 'FST_TUS_DRAFT_INCONSISTENT_LENGTH'])

/**
 * The draft's reading of an error the core raised: the status and problem type each version gives it.
 * Lengths that disagree, bytes beyond a known length and appends to a finished upload are 400s here
 * (I-A-7, I-A-8), where tus answers 413 for the latter two.
 */
function draftProblem (error: TusHttpError, version: DraftVersion): { status?: number, problem?: DraftProblem } {
  // First: the wrong offset of an append to a complete upload is a 409 like any other (its complete flag says ?1).
  if (error.code === 'FST_TUS_OFFSET_MISMATCH' && error.offset !== undefined && error.providedOffset !== undefined) {
    return {
      problem: {
        type: 'mismatching-upload-offset',
        title: 'offset from request does not match offset of resource',
        members: { 'expected-offset': error.offset, 'provided-offset': error.providedOffset }
      }
    }
  }
  if (error.uploadComplete === true) return { status: 400, problem: version.completedUploadProblem ? COMPLETED_UPLOAD : INCONSISTENT_LENGTH }
  if (error.code === 'FST_TUS_LENGTH_EXCEEDED' && error.limit === 'length') return { status: 400, problem: INCONSISTENT_LENGTH }
  if (error.code !== undefined && LENGTH_CODES.has(error.code)) return { problem: INCONSISTENT_LENGTH }
  return {}
}

/**
 * The error answer of a draft request: no Tus-Resumable; the interop version echoed; `Upload-Offset` (and
 * with a 409 the complete flag) when the upload's standing is known; `Upload-Limit` with a 413; a problem-details
 * body where the version defines the problem type (whatever Content-Type the error names: the body is the
 * problem document), else the short plain-text body of every other error, or its message in its own Content-Type.
 * `version` is undefined when the request named one the server does not accept.
 */
export function sendDraftError (
  services: TusServices, error: TusHttpError, request: FastifyRequest, reply: FastifyReply, version: DraftVersion | undefined
): void {
  const { status: ownStatus, message, body: plainBody, contentType } = prepareErrorReply(error, request, reply)
  reply.removeHeader('Tus-Resumable')
  const format = services.options.formatError
  const plain = (status: number): void => {
    sendErrorBody(format, error, request, reply, { protocol: 'ietf-draft', status, message, body: plainBody, contentType })
  }
  if (version === undefined) {
    plain(ownStatus)
    return
  }
  const { status = ownStatus, problem } = draftProblem(error, version)
  reply.code(status).header('Upload-Draft-Interop-Version', String(version.interop))
  if (error.offset !== undefined) reply.header('Upload-Offset', String(error.offset))
  // The upload's completeness as it stands: ?0 (resume at Upload-Offset) only if it is not complete.
  if (problem?.type === 'mismatching-upload-offset') reply.header(...completeHeaderValue(version, error.uploadComplete === true))
  const limit = status === 413 ? uploadLimit(services, version) : undefined
  if (limit !== undefined) reply.header('Upload-Limit', limit)
  if (problem !== undefined && version.problemTypes) {
    // A Buffer, so no charset parameter is added: JSON is UTF-8 by definition (RFC 8259).
    const body = Buffer.from(JSON.stringify({ type: PROBLEM_BASE + problem.type, title: problem.title, status, detail: message, ...problem.members }))
    sendErrorBody(format, error, request, reply, {
      protocol: 'ietf-draft', status, message, body, contentType: 'application/problem+json', problemType: PROBLEM_BASE + problem.type
    })
    return
  }
  plain(status)
}
