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
 * Redis answer, when the server uses them), else 503 naming each that failed, in the order of `checks`; for load
 * balancers and orchestrators. Never cached.
 */
export function healthRoute (app: FastifyInstance, path: string, checks: readonly HealthProbe[]): void {
  app.get(path, async (request, reply) => {
    reply.header('Cache-Control', 'no-store').type('text/plain; charset=utf-8')
    // All at once: an answer within one probe's timeout, naming every part that failed (a whole region down).
    const outcomes = await Promise.all(checks.map(async (probe) => {
      let timer: NodeJS.Timeout | undefined
      try {
        await Promise.race([
          probe.check(),
          new Promise((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)) }, PROBE_TIMEOUT_MS) })
        ])
        return undefined
      } catch (error) {
        request.log.warn({ err: error }, `fastify-tus: health check: ${probe.failure}`)
        return probe.failure
      } finally {
        clearTimeout(timer)
      }
    }))
    const failures = outcomes.filter((failure) => failure !== undefined)
    if (failures.length > 0) return await reply.code(503).send(failures.join(', '))
    return await reply.code(200).send('ok')
  })
}
