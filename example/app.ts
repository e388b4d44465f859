// The example app, as a function so the server script and the browser test build the very same app:
// fastify-tus under /files, CORS for browser uploads from any origin (tusCorsOptions), the Uppy upload page and a JSON list of
// finished uploads. Uppy's prebuilt bundle is served from node_modules, so the page works offline.
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import cors from '@fastify/cors'
import fastifyStatic from '@fastify/static'
import tus, { TusErrors, tusCorsOptions, type UploadInfo } from '../lib/index.js'

const here = dirname(fileURLToPath(import.meta.url))

/** Where the example keeps uploads unless told otherwise (git-ignored). */
export const DEFAULT_UPLOAD_DIR = join(here, 'uploads')

export interface ExampleOptions {
  /** Upload directory. Default: example/uploads. */
  dir?: string
  /** Fastify's logger option. Default: true (info level, JSON lines on stdout). */
  logger?: FastifyServerOptions['logger']
}

/** A finished upload as GET /api/uploads lists it. */
export interface FinishedUpload {
  id: string
  name: string
  type: string | null
  size: number
  /** Our own tus GET route: the bytes, with Content-Disposition from the filename. */
  url: string
  completedAt: string
}

/** Builds (does not start) the example app. */
export async function buildExampleApp (options: ExampleOptions = {}): Promise<FastifyInstance> {
  // While closing, fastify-tus answers reads and refuses writes itself (503, Retry-After): Uppy, given a 503 to its
  // HEAD by Fastify, would take the upload for gone and start it over (README, Guarantees).
  const app = Fastify({ logger: options.logger ?? true, return503OnClosing: false })
  // Any origin (true reflects it): the example is for trying things out. The same one line as the README.
  await app.register(cors, tusCorsOptions(true))
  await app.register(tus, {
    prefix: '/files',
    dir: options.dir ?? DEFAULT_UPLOAD_DIR,
    onUploadComplete: async (upload, request) => {
      request.log.info({ id: upload.id, size: upload.size, metadata: upload.metadata, path: upload.path }, 'upload complete')
    }
  })

  await app.register(fastifyStatic, { root: join(here, 'public'), prefix: '/' })
  // uppy ships no `exports` map, so its package.json resolves and dist/ sits beside it.
  const uppyDist = join(dirname(createRequire(import.meta.url).resolve('uppy/package.json')), 'dist')
  await app.register(fastifyStatic, { root: uppyDist, prefix: '/vendor/uppy/', decorateReply: false })

  app.get('/api/uploads', async () => await finishedUploads(app))
  return app
}

/** Every finished upload in the store, newest first. */
async function finishedUploads (app: FastifyInstance): Promise<FinishedUpload[]> {
  const finished: UploadInfo[] = []
  for await (const id of app.tus.store.list()) {
    let upload: UploadInfo
    try {
      upload = await app.tus.store.getInfo(id)
    } catch (error) {
      // Removed (expired, terminated) between listing and reading: simply not in the list.
      if (error instanceof TusErrors.NOT_FOUND) continue
      throw error
    }
    if (upload.size === undefined || upload.offset !== upload.size || upload.concat?.type === 'partial') continue
    finished.push(upload)
  }
  finished.sort((a, b) => b.modifiedAt.getTime() - a.modifiedAt.getTime())
  return finished.map((upload) => ({
    id: upload.id,
    name: upload.metadata.filename ?? upload.metadata.name ?? upload.id,
    type: upload.metadata.filetype ?? upload.metadata.type ?? null,
    size: upload.offset,
    url: `/files/${encodeURIComponent(upload.id)}`,
    completedAt: upload.modifiedAt.toISOString()
  }))
}
