// The example app: fastify-tus under /files with CORS for browser clients, uploads kept in example/uploads.
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import cors from '@fastify/cors'
import tus from '../lib/index.js'

const here = dirname(fileURLToPath(import.meta.url))
const port = Number(process.env.PORT ?? 8080)
const host = process.env.HOST ?? '127.0.0.1'

const app = Fastify({ logger: true })
await app.register(cors, {
  origin: true,
  exposedHeaders: [
    'Location', 'Upload-Offset', 'Upload-Length', 'Upload-Metadata', 'Upload-Expires', 'Upload-Defer-Length',
    'Upload-Concat', 'Upload-Complete', 'Upload-Limit', 'Upload-Draft-Interop-Version',
    'Tus-Resumable', 'Tus-Version', 'Tus-Extension', 'Tus-Max-Size', 'Tus-Checksum-Algorithm'
  ]
})
await app.register(tus, {
  prefix: '/files',
  dir: join(here, 'uploads'),
  onUploadComplete: async (upload, request) => {
    request.log.info({ id: upload.id, size: upload.size, metadata: upload.metadata, path: upload.path }, 'upload complete')
  }
})
await app.listen({ port, host })
console.log(`fastify-tus example: tus endpoint at http://${host}:${port}/files/`)
