import { nanoid } from 'nanoid'

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
