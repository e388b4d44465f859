// The ceiling for a Node.js tus server that stores into S3 on this machine, as limit.mjs is for the file
// store: node's http server cutting each PATCH body into parts of --part-size bytes (default 8 MiB) and
// sending them with UploadPart one at a time (as S3Store does), CompleteMultipartUpload when the upload has
// its length. Just enough protocol for the benchmark client (POST, PATCH, HEAD) plus GET for verification;
// no info object, no incomplete-part object (a PATCH that ends mid-part leaves its bytes in memory), no
// locking, no offset read back from S3.
// Usage: node s3-limit.mjs <data dir, unused> --endpoint=<url> --bucket=<name> [--part-size=<bytes>]
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import {
  CompleteMultipartUploadCommand, CreateMultipartUploadCommand, GetObjectCommand, S3Client, UploadPartCommand
} from '@aws-sdk/client-s3'

function option (name) {
  const prefix = `--${name}=`
  return process.argv.find((arg) => arg.startsWith(prefix))?.slice(prefix.length)
}

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
const PREFIX = '/files/'
/** id -> { offset, length, uploadId, parts: [{ PartNumber, ETag }], pending: Buffer[], pendingLength, done } */
const uploads = new Map()

function answer (res, status, headers) {
  res.writeHead(status, { 'Tus-Resumable': '1.0.0', ...headers })
  res.end()
}

async function uploadPart (id, upload, body) {
  const PartNumber = upload.parts.length + 1
  const { ETag } = await s3.send(new UploadPartCommand({ Bucket: bucket, Key: id, UploadId: upload.uploadId, PartNumber, Body: body, ContentLength: body.length }))
  upload.parts.push({ PartNumber, ETag })
}

function takePending (upload, size) {
  const all = Buffer.concat(upload.pending, upload.pendingLength)
  // The remainder is copied so that the part's buffer is not kept alive by it.
  const rest = Buffer.from(all.subarray(size))
  upload.pending = rest.length === 0 ? [] : [rest]
  upload.pendingLength = rest.length
  return all.subarray(0, size)
}

async function patch (req, res, id, upload) {
  if (Number(req.headers['upload-offset']) !== upload.offset) {
    req.resume()
    return answer(res, 409, { 'Upload-Offset': String(upload.offset) })
  }
  for await (const chunk of req) {
    upload.pending.push(chunk)
    upload.pendingLength += chunk.length
    upload.offset += chunk.length
    while (upload.pendingLength >= partSize) await uploadPart(id, upload, takePending(upload, partSize))
  }
  if (upload.offset === upload.length) {
    if (upload.pendingLength > 0 || upload.parts.length === 0) await uploadPart(id, upload, takePending(upload, upload.pendingLength))
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: id, UploadId: upload.uploadId, MultipartUpload: { Parts: upload.parts } }))
    upload.done = true
  }
  answer(res, 204, { 'Upload-Offset': String(upload.offset) })
}

async function create (req, res) {
  req.resume()
  const id = randomBytes(16).toString('hex')
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: id }))
  uploads.set(id, { offset: 0, length: Number(req.headers['upload-length']), uploadId: UploadId, parts: [], pending: [], pendingLength: 0, done: false })
  answer(res, 201, { Location: `http://${req.headers.host}${PREFIX}${id}` })
}

async function download (res, id, upload) {
  const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: id }))
  res.writeHead(200, { 'Content-Length': String(upload.length) })
  object.Body.pipe(res)
}

const server = http.createServer((req, res) => {
  const fail = (error) => { res.destroy(error) }
  if (req.method === 'POST' && req.url === '/files') return create(req, res).catch(fail)
  const id = req.url.startsWith(PREFIX) ? req.url.slice(PREFIX.length) : ''
  const upload = uploads.get(id)
  if (upload === undefined) {
    req.resume()
    return answer(res, 404, {})
  }
  if (req.method === 'HEAD') {
    return answer(res, 200, { 'Upload-Offset': String(upload.offset), 'Upload-Length': String(upload.length), 'Cache-Control': 'no-store' })
  }
  if (req.method === 'PATCH') return patch(req, res, id, upload).catch(fail)
  if (req.method === 'GET' && upload.done) return download(res, id, upload).catch(fail)
  req.resume()
  answer(res, 405, {})
})
server.listen(0, '127.0.0.1', () => { process.stdout.write(`${server.address().port}\n`) })
process.on('SIGTERM', () => { process.exit(0) })
