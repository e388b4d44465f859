import type { FastifyRequest } from 'fastify'
import { TusErrors } from '../errors.js'
import type { GenerateUrl, UploadUrlParts } from '../types.js'

// RFC 3986 allows none of these in a URI reference. `%` is not one: what the app encoded itself is kept.
const NOT_IN_A_URI = /[\u0080-\uffff]+|[ "<>\\^`{|}]/g

/**
 * Runs `generateUrl`: its answer must be a URL or a path without control characters; anything else is a 500 naming
 * the hook. Non-ASCII text in it (a tenant's name) is percent-encoded as UTF-8, as a browser does with such a URL: a
 * header carries ASCII (node refused anything beyond Latin-1 with its own 500, and the draft's 104, written as
 * UTF-8, named another URL than the 201's Latin-1 bytes). So are the ASCII characters no URI holds (a space, a quote, a
 * backslash, which a browser reads as `/`): the client resolves the URL the server routes.
 */
export function generateLocation (generate: GenerateUrl, request: FastifyRequest, parts: UploadUrlParts): string {
  let url: unknown
  try {
    url = generate(request, parts)
  } catch (error) {
    request.log.error({ err: error }, 'fastify-tus: generateUrl failed')
    throw new TusErrors.HOOK_FAILED('generateUrl')
  }
  // eslint-disable-next-line no-control-regex -- control characters are what is refused
  if (typeof url !== 'string' || url === '' || /[\x00-\x1f\x7f]/.test(url)) throw invalid()
  try {
    return url.replace(NOT_IN_A_URI, (text) => encodeURI(text))
  } catch {
    // A lone surrogate: no UTF-8 for it.
    throw invalid()
  }
}

function invalid (): Error {
  return new TusErrors.HOOK_RESULT_INVALID('generateUrl', 'it must return a URL')
}
