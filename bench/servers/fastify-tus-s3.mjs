// fastify-tus with S3Store as a user gets it: the built package (dist/, through the package's own names) in a
// plain Fastify app without a logger, storing into an S3-compatible service (the bench uses Ceph radosgw).
// Usage: node fastify-tus-s3.mjs <data dir, unused> --endpoint=<url> --bucket=<name> [--part-size=<bytes>]
//        [--parts-in-flight=<n>] [--access-key=<key> --secret-key=<key>]  (default: TUS_TEST_S3_ACCESS_KEY / TUS_TEST_S3_SECRET_KEY)
// The data directory argument is only there so that bench/servers.ts starts every server the same way.
import Fastify from 'fastify'
import tus from 'fastify-tus'
import { S3Store } from 'fastify-tus/s3'

function option (name) {
  const prefix = `--${name}=`
  return process.argv.find((arg) => arg.startsWith(prefix))?.slice(prefix.length)
}

const endpoint = option('endpoint')
const bucket = option('bucket')
if (endpoint === undefined || bucket === undefined) {
  throw new Error('usage: fastify-tus-s3.mjs <data dir> --endpoint=<url> --bucket=<name> [--part-size=<bytes>]')
}
const partSize = option('part-size')
const partsInFlight = option('parts-in-flight')
const store = new S3Store({
  bucket,
  ...(partSize === undefined ? {} : { partSize: Number(partSize) }),
  ...(partsInFlight === undefined ? {} : { partsInFlight: Number(partsInFlight) }),
  // As test/services.ts s3ClientConfig; the two checksum settings Ceph needs are S3Store's defaults.
  s3: {
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: {
      accessKeyId: option('access-key') ?? process.env.TUS_TEST_S3_ACCESS_KEY,
      secretAccessKey: option('secret-key') ?? process.env.TUS_TEST_S3_SECRET_KEY
    }
  }
})
const app = Fastify()
await app.register(tus, { prefix: '/files', store })
await app.listen({ host: '127.0.0.1', port: 0 })
process.stdout.write(`${app.server.address().port}\n`)
// Exit normally on SIGTERM so that --cpu-prof can write its profile.
process.on('SIGTERM', () => { process.exit(0) })
