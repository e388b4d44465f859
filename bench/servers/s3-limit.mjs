// The ceiling for a Node.js tus server that stores into S3 on this machine, as limit.mjs is for the file
// store: node's http server cutting each PATCH body into parts of --part-size bytes (default 8 MiB) and
// sending them with UploadPart one at a time (as S3Store does), CompleteMultipartUpload when the upload has
// its length. Just enough protocol for the benchmark client (POST, PATCH, HEAD) plus GET for verification;
// no info object, no incomplete-part object (a PATCH that ends mid-part leaves its bytes in memory), no
// locking, no offset read back from S3. The protocol is bare-tus.mjs's, as limit.mjs's is.
// Usage: node s3-limit.mjs <data dir, unused> --endpoint=<url> --bucket=<name> [--part-size=<bytes>]
import {
  CompleteMultipartUploadCommand, CreateMultipartUploadCommand, GetObjectCommand, S3Client, UploadPartCommand
} from '@aws-sdk/client-s3'
import { serveBareTus } from './bare-tus.mjs'

function option (name) {
  const prefix = `--${name}=`
  return process.argv.find((arg) => arg.startsWith(prefix))?.slice(prefix.length)
}

const dir = process.argv[2]
const endpoint = option('endpoint')
const bucket = option('bucket')
if (endpoint === undefined || bucket === undefined) throw new Error('usage: s3-limit.mjs <data dir> --endpoint=<url> --bucket=<name> [--part-size=<bytes>]')
const partSize = Number(option('part-size') ?? 8 * 1024 * 1024)
const s3 = new S3Client({
  endpoint,
  region: 'us-east-1',
  forcePathStyle: true,
  credentials: { accessKeyId: process.env.TUS_TEST_S3_ACCESS_KEY, secretAccessKey: process.env.TUS_TEST_S3_SECRET_KEY },
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED'
})

/** The part of the upload's bytes not sent yet: `pending` (chunks) and `pendingLength`. */
function takePending (upload, size) {
  const all = Buffer.concat(upload.pending, upload.pendingLength)
  // The remainder is copied so that the part's buffer is not kept alive by it.
  const rest = Buffer.from(all.subarray(size))
  upload.pending = rest.length === 0 ? [] : [rest]
  upload.pendingLength = rest.length
  return all.subarray(0, size)
}

async function uploadPart (upload, body) {
  const PartNumber = upload.parts.length + 1
  const { ETag } = await s3.send(new UploadPartCommand({ Bucket: bucket, Key: upload.id, UploadId: upload.uploadId, PartNumber, Body: body, ContentLength: body.length }))
  upload.parts.push({ PartNumber, ETag })
}

serveBareTus(dir, async (req, _path, upload) => {
  let appended = 0
  for await (const chunk of req) {
    upload.pending.push(chunk)
    upload.pendingLength += chunk.length
    appended += chunk.length
    while (upload.pendingLength >= partSize) await uploadPart(upload, takePending(upload, partSize))
  }
  if (upload.offset + appended === upload.length) {
    if (upload.pendingLength > 0 || upload.parts.length === 0) await uploadPart(upload, takePending(upload, upload.pendingLength))
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: upload.id, UploadId: upload.uploadId, MultipartUpload: { Parts: upload.parts } }))
  }
  return appended
}, {
  async create (upload) {
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: upload.id }))
    Object.assign(upload, { uploadId: UploadId, parts: [], pending: [], pendingLength: 0 })
  },
  async download (res, upload) {
    const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: upload.id }))
    res.writeHead(200, { 'Content-Length': String(upload.length) })
    object.Body.pipe(res)
  }
})
