import type { FastifyRequest } from 'fastify'
import { TusErrors } from '../errors.js'
import type { GenerateUrl, UploadUrlParts } from '../types.js'

/** Runs `generateUrl`: its answer must be a URL or a path without CR/LF; anything else is a 500 naming the hook. */
export function generateLocation (generate: GenerateUrl, request: FastifyRequest, parts: UploadUrlParts): string {
  let url: unknown
  try {
    url = generate(request, parts)
  } catch (error) {
    request.log.error({ err: error }, 'fastify-tus: generateUrl failed')
    throw new TusErrors.HOOK_FAILED('generateUrl')
  }
  if (typeof url !== 'string' || url === '' || /[\r\n\0]/.test(url)) throw new TusErrors.HOOK_RESULT_INVALID('generateUrl', 'it must return a URL')
  return url
}
