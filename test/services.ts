// Where the real services the Redis and S3 suites use are: scripts/services/run.sh (which `npm test` uses)
// starts them and exports these variables.
import { randomBytes } from 'node:crypto'
import {
  AbortMultipartUploadCommand, CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, ListMultipartUploadsCommand,
  ListObjectsV2Command, S3Client, type S3ClientConfig
} from '@aws-sdk/client-s3'

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

/** An S3 client for the test S3 service, with the settings Ceph needs. */
export function testS3Client (): S3Client {
  const settings = s3Settings()
  return new S3Client(s3ClientConfig(settings))
}

export function s3ClientConfig (settings: S3Settings = s3Settings()): S3ClientConfig {
  return {
    endpoint: settings.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey }
  }
}

/** Creates a fresh bucket; at teardown aborts its multipart uploads, deletes its objects and the bucket. */
export async function testBucket (t: { teardown: (fn: () => unknown) => void }): Promise<string> {
  const client = testS3Client()
  const bucket = uniqueName('tus-test')
  await client.send(new CreateBucketCommand({ Bucket: bucket }))
  t.teardown(async () => {
    const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))
    for (const upload of uploads.Uploads ?? []) {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key, UploadId: upload.UploadId }))
    }
    const objects = await client.send(new ListObjectsV2Command({ Bucket: bucket }))
    for (const object of objects.Contents ?? []) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: object.Key }))
    await client.send(new DeleteBucketCommand({ Bucket: bucket }))
    client.destroy()
  })
  return bucket
}
