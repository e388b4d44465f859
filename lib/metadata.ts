import { TusErrors } from './errors.js'
import type { UploadMetadata } from './store/types.js'

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
// Printable ASCII without space and comma: the separators of the header's grammar.
const KEY = /^[\x21-\x2b\x2d-\x7e]+$/
const utf8 = new TextDecoder('utf-8', { fatal: true })
// type/subtype with optional parameters, no control characters: safe to send back as Content-Type. The whitespace
// around a parameter's `;` is RFC 9110's OWS, spaces and tabs only: `\s` let line breaks and U+2028 through, which
// Node refuses in a header (every download of the upload failed), and U+00A0, sent as a stray byte.
const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}([ \t]*;[ \t]*[A-Za-z0-9!#$&^_.+-]+=("[\x20\x21\x23-\x7e]*"|[A-Za-z0-9!#$&^_.+-]+))*$/

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

/** The media type a client declared (`filetype`, `type` or `contentType`) when it is a valid one, else application/octet-stream. */
export function contentType (metadata: UploadMetadata): string {
  const type = metadata.filetype ?? metadata.type ?? metadata.contentType
  return type !== undefined && MEDIA_TYPE.test(type) ? type : 'application/octet-stream'
}

/**
 * A file name as a client sent it, made harmless: no path separators, no control characters (C0, C1, and the
 * invisible ones that reorder or break what is shown: `\u202egnp.exe` shows as `exe.png`), and well-formed UTF-16 (a
 * lone surrogate, which a name cut in the middle of an emoji ends with, becomes U+FFFD: it has no UTF-8 form, so
 * `filename*` could not be written and every download of the upload would fail).
 */
export function cleanFilename (raw: string): string {
  return raw.replace(/[\\/]/g, '_').replace(INVISIBLE_CONTROLS, '').replace(LONE_SURROGATE, '\ufffd')
}

/** A cleaned name that is only a path step (or nothing): it would be one in a client that saves a file as named. */
export function isPathStep (name: string): boolean {
  return name === '' || name === '.' || name === '..'
}

// eslint-disable-next-line no-control-regex -- control characters are what it matches
const INVISIBLE_CONTROLS = /[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** RFC 6266: an ASCII fallback name plus the exact UTF-8 name in RFC 5987 encoding. */
export function contentDisposition (metadata: UploadMetadata, id: string): string {
  const cleaned = cleanFilename(metadata.filename ?? metadata.name ?? id)
  const name = isPathStep(cleaned) ? id : cleaned
  const fallback = name.replace(/[^\x20-\x7e]/g, '_').replace(/["\\%]/g, '_')
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encoded}`
}
