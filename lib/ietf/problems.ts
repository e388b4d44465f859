import createError from '@fastify/error'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import type { DraftVersion } from './versions.js'

/** The errors only draft requests get. Stable codes, like TusErrors; the message is the `detail`. */
export const TusDraftErrors = {
  UNSUPPORTED_INTEROP_VERSION: createError<[string, string]>(
    'FST_TUS_DRAFT_UNSUPPORTED_VERSION',
    'Unsupported Upload-Draft-Interop-Version "%s"; this server speaks interop versions %s',
    400
  ),
  INCONSISTENT_LENGTH: createError<[string]>('FST_TUS_DRAFT_INCONSISTENT_LENGTH', 'Inconsistent upload length: %s', 400),
  COMPLETED_UPLOAD: createError<[]>('FST_TUS_DRAFT_COMPLETED_UPLOAD', 'The upload is already complete and cannot be appended to', 400),
  PARTIAL_UPLOAD_TYPE: createError<[string]>(
    'FST_TUS_DRAFT_PARTIAL_UPLOAD_TYPE',
    'An append must be Content-Type: application/partial-upload (got "%s")',
    415
  )
} as const

const PROBLEM_BASE = 'https://iana.org/assignments/http-problem-types#'

/** A problem type (RFC 9457) an error stands for, with its extension members. */
export interface DraftProblem {
  type: 'mismatching-upload-offset' | 'inconsistent-upload-length' | 'completed-upload'
  title: string
  members?: Record<string, number>
}

/** Marks an error as one of the draft's problem types, sent as application/problem+json where the version defines it. */
export function withProblem<E extends Error> (error: E, problem: DraftProblem): E & { problem: DraftProblem } {
  return Object.assign(error, { problem })
}

export function mismatchingOffset (expected: number, provided: number): DraftProblem {
  return { type: 'mismatching-upload-offset', title: 'offset from request does not match offset of resource', members: { 'expected-offset': expected, 'provided-offset': provided } }
}

export function inconsistentLength (): DraftProblem {
  return { type: 'inconsistent-upload-length', title: 'inconsistent length values for upload' }
}

export function completedUpload (): DraftProblem {
  return { type: 'completed-upload', title: 'upload is already completed' }
}

type DraftError = FastifyError & { headers?: Record<string, string>, problem?: DraftProblem }

/**
 * The error answer of a draft request: no Tus-Resumable; the interop version echoed; a problem-details
 * body when the error is a problem type this version defines, else the short plain-text body every
 * other error of the plugin has.
 */
export function sendDraftError (error: DraftError, request: FastifyRequest, reply: FastifyReply, version: DraftVersion | undefined): void {
  const status = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 600 ? error.statusCode : 500
  const ours = error.code?.startsWith('FST_TUS_') ?? false
  if (status >= 500 && !ours) request.log.error({ err: error }, 'fastify-tus: unexpected error')
  reply.removeHeader('Tus-Resumable')
  if (error.headers !== undefined) reply.headers(error.headers)
  if (version !== undefined) reply.header('Upload-Draft-Interop-Version', String(version.interop))
  reply.code(status)
  const problem = error.problem
  if (version !== undefined && problem !== undefined && version.problemTypes &&
      (problem.type !== 'completed-upload' || version.completedUploadProblem)) {
    // A Buffer, so no charset parameter is added: JSON is UTF-8 by definition (RFC 8259).
    void reply.type('application/problem+json').send(Buffer.from(JSON.stringify({
      type: PROBLEM_BASE + problem.type,
      title: problem.title,
      status,
      detail: error.message,
      ...problem.members
    })))
    return
  }
  void reply.type('text/plain; charset=utf-8').send(status >= 500 && !ours ? 'Internal server error' : error.message)
}
