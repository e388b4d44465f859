import { unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'

let probes = 0

/** One thing uploads need, checked by each health request: resolves when it works, rejects when it does not. */
export interface HealthProbe {
  /** What the 503 says when it fails, e.g. `lock service unreachable`. */
  failure: string
  check: () => Promise<void>
}

/** How long a probe may take before it counts as failed: a health check that hangs tells an orchestrator nothing. */
const PROBE_TIMEOUT_MS = 2000

/** The upload directory takes a write: a probe file written and removed. */
export function directoryProbe (dir: string): HealthProbe {
  return {
    failure: 'store not writable',
    check: async () => {
      const probe = join(dir, `.health-${process.pid}-${probes++}`)
      await writeFile(probe, '')
      await unlink(probe)
    }
  }
}

/**
 * `--health-path`: GET answers 200 `ok` only while every probe passes (the upload directory takes a write; S3 and
 * Redis answer, when the server uses them), else 503 naming the first that failed; for load balancers and
 * orchestrators. Never cached.
 */
export function healthRoute (app: FastifyInstance, path: string, checks: readonly HealthProbe[]): void {
  app.get(path, async (request, reply) => {
    reply.header('Cache-Control', 'no-store').type('text/plain; charset=utf-8')
    for (const probe of checks) {
      let timer: NodeJS.Timeout | undefined
      try {
        await Promise.race([
          probe.check(),
          new Promise((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)) }, PROBE_TIMEOUT_MS) })
        ])
      } catch (error) {
        request.log.warn({ err: error }, `fastify-tus: health check: ${probe.failure}`)
        return await reply.code(503).send(probe.failure)
      } finally {
        clearTimeout(timer)
      }
    }
    return await reply.code(200).send('ok')
  })
}
