// The CLI's flags for running several instances: uploads in S3 (or an S3-compatible store) and the upload
// lock in Redis. lib/cli.ts spreads SCALE_FLAGS into its parser, prints SCALE_HELP, and builds the store and
// locker with scaleServices(). Both clients are optional peer dependencies, loaded only when asked for.
import type { FastifyInstance } from 'fastify'
import { parseSize } from './cli-env.js'
import type { HealthProbe } from './cli-health.js'
import type { UploadLocker } from './lockers/lock.js'
import type { DataStore } from './store/types.js'

/** What the scale-out flags and variables ask for. */
export interface ScaleOptions {
  s3: { bucket: string, endpoint: string | undefined, region: string, prefix: string, partSize: number | undefined, partsInFlight: number | undefined } | undefined
  redis: { url: string, prefix: string } | undefined
}

/** The flags, in node:util parseArgs form. */
export const SCALE_FLAGS = {
  's3-bucket': { type: 'string' },
  's3-endpoint': { type: 'string' },
  's3-region': { type: 'string' },
  's3-prefix': { type: 'string' },
  's3-part-size': { type: 'string' },
  's3-parts-in-flight': { type: 'string' },
  'redis-url': { type: 'string' },
  'redis-prefix': { type: 'string' }
} as const

export const SCALE_HELP = `
Several instances (S3 for the uploads, Redis for the lock; each flag also reads the variable named):
  --s3-bucket <name>        keep uploads in this S3 bucket (must exist) instead of --dir   [FASTIFY_TUS_S3_BUCKET]
  --s3-endpoint <url>       an S3-compatible endpoint (Ceph, MinIO...); path-style requests  [FASTIFY_TUS_S3_ENDPOINT]
  --s3-region <region>      the bucket's region (default: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1) [FASTIFY_TUS_S3_REGION]
  --s3-prefix <prefix>      prefix of every object key, e.g. tus/ (default: none)          [FASTIFY_TUS_S3_PREFIX]
  --s3-part-size <bytes>    multipart part size, 5M to 4G; K, M, G suffixes (default: 8M)    [FASTIFY_TUS_S3_PART_SIZE]
  --s3-parts-in-flight <n>  parts a PATCH uploads at once, 1 to 64 (default: 4)             [FASTIFY_TUS_S3_PARTS_IN_FLIGHT]
  --redis-url <url>         lock uploads through Redis, e.g. redis://127.0.0.1:6379        [FASTIFY_TUS_REDIS_URL]
  --redis-prefix <prefix>   prefix of the lock keys and channels (default: fastify-tus:)    [FASTIFY_TUS_REDIS_PREFIX]
  S3 credentials come from the AWS SDK's usual sources: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
  AWS_PROFILE, an instance role... Run every instance with the same flags behind any load balancer.
`

type Values = Partial<Record<keyof typeof SCALE_FLAGS, string>>

const VARIABLES: Record<keyof typeof SCALE_FLAGS, string> = {
  's3-bucket': 'FASTIFY_TUS_S3_BUCKET',
  's3-endpoint': 'FASTIFY_TUS_S3_ENDPOINT',
  's3-region': 'FASTIFY_TUS_S3_REGION',
  's3-prefix': 'FASTIFY_TUS_S3_PREFIX',
  's3-part-size': 'FASTIFY_TUS_S3_PART_SIZE',
  's3-parts-in-flight': 'FASTIFY_TUS_S3_PARTS_IN_FLIGHT',
  'redis-url': 'FASTIFY_TUS_REDIS_URL',
  'redis-prefix': 'FASTIFY_TUS_REDIS_PREFIX'
}

/**
 * Reads the scale-out flags (a flag wins over its variable). `usage` makes the error a bad value is
 * reported with (the CLI's usage error: exit code 2).
 */
export function parseScale (values: Values, env: NodeJS.ProcessEnv, usage: (message: string) => Error): ScaleOptions {
  const read = (name: keyof typeof SCALE_FLAGS): string | undefined => {
    const value = values[name] ?? env[VARIABLES[name]]
    return value === undefined || value.trim() === '' ? undefined : value.trim()
  }
  const bucket = read('s3-bucket')
  const s3Only = (['s3-endpoint', 's3-region', 's3-prefix', 's3-part-size', 's3-parts-in-flight'] as const).find((name) => read(name) !== undefined)
  if (bucket === undefined && s3Only !== undefined) throw usage(`--${s3Only} needs --s3-bucket (or ${VARIABLES['s3-bucket']})`)
  let s3: ScaleOptions['s3']
  if (bucket !== undefined) {
    const endpoint = read('s3-endpoint')
    if (endpoint !== undefined && !/^https?:\/\/[^/]+\/?$/.test(endpoint)) throw usage(`--s3-endpoint must be an http(s) URL without a path (got "${endpoint}")`)
    const partSize = read('s3-part-size')
    const partsInFlight = read('s3-parts-in-flight')
    if (partsInFlight !== undefined && !/^\d+$/.test(partsInFlight)) throw usage(`--s3-parts-in-flight must be a whole number (got "${partsInFlight}")`)
    s3 = {
      bucket,
      endpoint,
      region: read('s3-region') ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
      prefix: read('s3-prefix') ?? '',
      partSize: partSize === undefined ? undefined : parseSize('--s3-part-size', partSize, usage),
      partsInFlight: partsInFlight === undefined ? undefined : Number(partsInFlight)
    }
  }
  const url = read('redis-url')
  if (url === undefined && read('redis-prefix') !== undefined) throw usage(`--redis-prefix needs --redis-url (or ${VARIABLES['redis-url']})`)
  if (url !== undefined && !/^rediss?:\/\/./.test(url)) throw usage(`--redis-url must be a redis:// or rediss:// URL (got "${url}")`)
  return { s3, redis: url === undefined ? undefined : { url, prefix: read('redis-prefix') ?? 'fastify-tus:' } }
}

/** Where the uploads go, for the start-up line. */
export function describeStorage (scale: ScaleOptions, dir: string): string {
  return scale.s3 === undefined ? dir : `s3://${scale.s3.bucket}/${scale.s3.prefix}`
}

/**
 * The S3 store and Redis locker the options ask for (none when they ask for none). The Redis connection is
 * closed with the app; its options make a Redis outage fail fast (see README, "Several instances").
 */
export async function scaleServices (app: FastifyInstance, scale: ScaleOptions): Promise<{ store?: DataStore, locker?: UploadLocker, probes: HealthProbe[] }> {
  const services: { store?: DataStore, locker?: UploadLocker, probes: HealthProbe[] } = { probes: [] }
  if (scale.s3 !== undefined) {
    const { S3Store } = await peer('@aws-sdk/client-s3', '--s3-bucket', async () => await import('./store/s3-store.js'))
    const { bucket, endpoint, region, prefix, partSize, partsInFlight } = scale.s3
    try {
      services.store = new S3Store({
        bucket,
        prefix,
        ...(partSize === undefined ? {} : { partSize }),
        ...(partsInFlight === undefined ? {} : { partsInFlight }),
        s3: { region, ...(endpoint === undefined ? {} : { endpoint, forcePathStyle: true }) }
      })
    } catch (error) {
      // The store's words, about the flag the user set (or its variable: the CLI names it so), not about S3Store.
      const message = (error as Error).message
      throw Object.assign(error as Error, { message: message.replace('S3Store partSize', '--s3-part-size').replace('S3Store partsInFlight', '--s3-parts-in-flight') })
    }
    const store = services.store
    // An upload that never exists: S3 answering "no such key" is S3 reachable, with the credentials it takes.
    services.probes.push({
      failure: 'store unreachable',
      check: async () => {
        await store.getInfo('health-probe').catch((error: unknown) => {
          if ((error as { code?: unknown }).code !== 'FST_TUS_NOT_FOUND') throw error
        })
      }
    })
  }
  if (scale.redis !== undefined) {
    const [{ Redis }, { RedisLocker }] = await peer('ioredis', '--redis-url', async () => await Promise.all([import('ioredis'), import('./lockers/redis-locker.js')]))
    const redis = new Redis(scale.redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0 })
    redis.on('error', (error: Error) => { app.log.warn({ err: error }, 'Redis connection error') })
    app.addHook('onClose', async () => { redis.disconnect() })
    services.locker = new RedisLocker({ redis, prefix: scale.redis.prefix })
    services.probes.push({ failure: 'lock service unreachable', check: async () => { await redis.ping() } })
  }
  return services
}

/**
 * Loads a module needing an optional peer dependency, saying how to install it when it is missing. It is loaded from
 * where fastify-tus is installed, never from the working directory: `npx fastify-tus` and a global install (the Docker
 * image's) install no optional peer, and one installed in the directory the command runs in is not found.
 */
async function peer<T> (name: string, flag: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load()
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND' && String((error as Error).message).includes(name)) {
      throw new Error(`${flag} needs ${name}, an optional peer dependency that is not installed beside fastify-tus: in the ` +
        `project that has fastify-tus, npm install ${name}; with a global fastify-tus, npm install --global ${name}; ` +
        `with npx, npx -p fastify-tus -p ${name} fastify-tus ...`)
    }
    throw error
  }
}
