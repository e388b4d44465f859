import type { FastifyReply, FastifyRequest } from 'fastify'
import type { TusContext } from '../context.js'
import { CHECKSUM_ALGORITHMS } from '../checksum.js'
import { EXTENSIONS, TUS_VERSION } from '../protocol.js'

/** OPTIONS: discovery. Tus-Resumable in the request is ignored (T-O-3). */
export async function handleOptions (context: TusContext, _request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const extensions = Number.isFinite(context.options.daysToKeep)
    ? EXTENSIONS
    : EXTENSIONS.filter((name) => name !== 'expiration')
  reply
    .code(204)
    .header('Tus-Version', TUS_VERSION)
    .header('Tus-Extension', extensions.join(','))
    .header('Tus-Max-Size', String(context.options.maxSize))
    .header('Tus-Checksum-Algorithm', CHECKSUM_ALGORITHMS.join(','))
  await reply.send()
}
