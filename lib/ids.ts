import { nanoid } from 'nanoid'

/** Longest upload id; the router may allow fewer (Fastify's maxParamLength, 100 by default). */
export const MAX_ID_LENGTH = 128

// URL-safe characters only: an id is used verbatim as a path segment and as a file name.
const UPLOAD_ID = /^[A-Za-z0-9_-]{1,128}$/

/** True when `id` could be one of ours; anything else never reaches a store. */
export function isValidUploadId (id: string): boolean {
  return UPLOAD_ID.test(id)
}

/** A new unguessable upload id (nanoid, 21 URL-safe characters, 126 bits). */
export function newUploadId (): string {
  return nanoid()
}

// Sub-directory segments use the id alphabet: no dots (so no `..`, no `x.json` beside the info files),
// no separators but the `/` between segments.
const DIRECTORY = /^[A-Za-z0-9_-]{1,128}(\/[A-Za-z0-9_-]{1,128}){0,7}$/

/** True when `directory` is a safe relative storage sub-directory such as `alice` or `2024/alice`. */
export function isValidDirectory (directory: string): boolean {
  return DIRECTORY.test(directory)
}
