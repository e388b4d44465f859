import { TusErrors } from './errors.js'
import type { UploadMetadata } from './store/types.js'

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
// Printable ASCII without space and comma: the separators of the header's grammar.
const KEY = /^[\x21-\x2b\x2d-\x7e]+$/
const utf8 = new TextDecoder('utf-8', { fatal: true })

/**
 * Parses `Upload-Metadata` strictly: comma-separated `key [base64value]` pairs, unique keys, standard
 * padded base64 holding UTF-8 text. Throws FST_TUS_INVALID_METADATA (400) on anything else.
 */
export function parseMetadata (header: string, maxBytes: number): UploadMetadata {
  if (Buffer.byteLength(header) > maxBytes) {
    throw new TusErrors.INVALID_METADATA(`longer than ${maxBytes} bytes`)
  }
  const metadata: UploadMetadata = Object.create(null) as UploadMetadata
  if (header.trim() === '') return metadata
  for (const rawPair of header.split(',')) {
    const pair = rawPair.trim()
    const space = pair.indexOf(' ')
    const key = space === -1 ? pair : pair.slice(0, space)
    const encoded = space === -1 ? '' : pair.slice(space + 1)
    if (!KEY.test(key)) throw new TusErrors.INVALID_METADATA(`bad key "${printable(key)}"`)
    if (Object.hasOwn(metadata, key)) throw new TusErrors.INVALID_METADATA(`duplicate key "${key}"`)
    if (!BASE64.test(encoded)) throw new TusErrors.INVALID_METADATA(`value of "${key}" is not base64`)
    try {
      metadata[key] = utf8.decode(Buffer.from(encoded, 'base64'))
    } catch {
      throw new TusErrors.INVALID_METADATA(`value of "${key}" is not UTF-8 text`)
    }
  }
  return metadata
}

/** The `Upload-Metadata` header for `metadata`; empty values are sent as a bare key. */
export function serializeMetadata (metadata: UploadMetadata): string {
  return Object.entries(metadata)
    .map(([key, value]) => value === '' ? key : `${key} ${Buffer.from(value, 'utf8').toString('base64')}`)
    .join(',')
}

/** True when `key` can be sent in Upload-Metadata (printable ASCII, no space or comma). */
export function isMetadataKey (key: string): boolean {
  return KEY.test(key)
}

function printable (text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 64)
}
