import type { FastifyReply, FastifyRequest } from 'fastify'
import { getLiveUpload, uploadIdOf, type TusContext } from '../context.js'
import { terminateUpload } from '../hooks.js'

/** DELETE: termination. Waits for a running PATCH on the same upload, then removes everything. */
export async function handleDelete (context: TusContext, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const id = uploadIdOf(request)
  const lock = await context.locker.lock(id, { timeoutMs: context.options.lockTimeout })
  try {
    await terminateUpload(context, request, await getLiveUpload(context, id))
  } finally {
    await lock.release()
  }
  await reply.code(204).send()
}
