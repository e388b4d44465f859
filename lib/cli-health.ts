import { unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'

let probes = 0

/**
 * `--health-path`: GET answers 200 `ok` only when the store's directory takes a write (a probe file written and
 * removed), else 503; for load balancers and orchestrators. Never cached.
 */
export function healthRoute (app: FastifyInstance, path: string, dir: string): void {
  app.get(path, async (request, reply) => {
    reply.header('Cache-Control', 'no-store').type('text/plain; charset=utf-8')
    const probe = join(dir, `.health-${process.pid}-${probes++}`)
    try {
      await writeFile(probe, '')
      await unlink(probe)
    } catch (error) {
      request.log.warn({ err: error }, 'fastify-tus: health check: the upload directory is not writable')
      return await reply.code(503).send('store not writable')
    }
    return await reply.code(200).send('ok')
  })
}
