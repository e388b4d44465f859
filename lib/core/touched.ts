import type { FastifyRequest } from 'fastify'
import type { UploadInfo } from '../store/types.js'
import type { TusRequestUpload } from '../types.js'

/**
 * `request.tus`: what a request did to the upload it addressed. The core records it as it happens (so a request
 * that fails halfway still tells what it did); the plugin decorates the request with `null` first
 * (lib/http/decorate.ts), which also types it.
 */
type Tracked = FastifyRequest & { tus?: TusRequestUpload | null }

/** The upload this request addresses, as it stands now. A second upload (a final finished on the side) is ignored. */
export function touchUpload (request: FastifyRequest, upload: UploadInfo): TusRequestUpload | undefined {
  const tracked = request as Tracked
  const current = tracked.tus
  if (current === undefined || current === null) {
    const state: TusRequestUpload = { id: upload.id, upload, created: false, bytesStored: 0, completed: false, terminated: false, finalsCompleted: [] }
    tracked.tus = state
    return state
  }
  if (current.id !== upload.id) return undefined
  current.upload = upload
  return current
}

export function noteCreated (request: FastifyRequest, upload: UploadInfo): void {
  const state = touchUpload(request, upload)
  if (state !== undefined) state.created = true
}

export function noteBytes (request: FastifyRequest, upload: UploadInfo, bytes: number): void {
  const state = touchUpload(request, upload)
  if (state !== undefined) state.bytesStored += bytes
}

/** The upload this request addressed became complete in it; a final completed on the side is listed apart. */
export function noteCompleted (request: FastifyRequest, upload: UploadInfo): void {
  const state = touchUpload(request, upload)
  if (state !== undefined) state.completed = true
  else (request as Tracked).tus?.finalsCompleted.push(upload)
}

export function noteTerminated (request: FastifyRequest, upload: UploadInfo): void {
  const state = touchUpload(request, upload)
  if (state !== undefined) state.terminated = true
}

/** `touchUpload` in an expression: records `upload` and hands it on. */
export function touched (request: FastifyRequest, upload: UploadInfo): UploadInfo {
  touchUpload(request, upload)
  return upload
}
