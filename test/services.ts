// Where the real services the Redis and S3 suites use are: scripts/services/run.sh (which `npm test` uses)
// starts them and exports these variables.
import { randomBytes } from 'node:crypto'

const HOW = 'run the tests through `npm test` or `bash scripts/services/run.sh npx tap <file>`, which start ' +
  'redis-server and Ceph radosgw (Debian, as root: apt-get install --no-install-recommends ceph-mon ceph-osd radosgw redis-server curl)'

function required (name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') throw new Error(`${name} is not set: ${HOW}`)
  return value
}

export function redisUrl (): string {
  return required('TUS_TEST_REDIS_URL')
}

export interface S3Settings {
  endpoint: string
  accessKeyId: string
  secretAccessKey: string
}

export function s3Settings (): S3Settings {
  return {
    endpoint: required('TUS_TEST_S3_ENDPOINT'),
    accessKeyId: required('TUS_TEST_S3_ACCESS_KEY'),
    secretAccessKey: required('TUS_TEST_S3_SECRET_KEY')
  }
}

/** A name no other test (or concurrent test run) uses: Redis key prefixes, bucket names. */
export function uniqueName (label: string): string {
  return `${label}-${randomBytes(6).toString('hex')}`
}
