import type { FastifyRequest } from 'fastify'
import { stringHeader } from '../core/request.js'
import type { UploadMetadata } from '../store/types.js'
import { cleanFilename, isPathStep } from '../wire/download.js'
import type { DraftVersion } from './versions.js'

/**
 * The draft's headers are Structured Fields (RFC 9651). A field whose value has the wrong type MUST be
 * ignored as a whole, so these readers answer `undefined` for "absent or not of the right type";
 * parameters (`;key` or `;key=value`, RFC 9651 §3.1.2) are allowed and ignored. Anything else after the item (a
 * second member, `?1, ?0`, as a field sent twice reads; a `;` naming no key) makes the field no Item: ignored.
 */
const PARAMETERS = String.raw`(?:; *[a-z*][a-z0-9_.*-]*(?:=(?:"(?:[^"\\]|\\.)*"|[^;,\s"]+))?)*`
const SF_INTEGER = new RegExp(String.raw`^([0-9]{1,15})${PARAMETERS}$`)
const SF_BOOLEAN = new RegExp(String.raw`^\?([01])${PARAMETERS}$`)

export function sfInteger (request: FastifyRequest, name: string): number | undefined {
  return sfIntegerValue(stringHeader(request, name) ?? '')
}

/**
 * A field value read as a non-negative sf-integer Item: at most 15 digits, leading zeros allowed (`06` is 6, RFC 9651
 * §4.2.4), parameters ignored; undefined for anything else.
 */
export function sfIntegerValue (value: string): number | undefined {
  const match = SF_INTEGER.exec(value.trim())
  return match === null ? undefined : Number(match[1])
}

export function sfBoolean (request: FastifyRequest, name: string): boolean | undefined {
  const match = SF_BOOLEAN.exec(stringHeader(request, name)?.trim() ?? '')
  return match === null ? undefined : match[1] === '1'
}

/** Whether the request says the upload is complete with it (`Upload-Complete: ?1` or `Upload-Incomplete: ?0`). */
export function completeFlag (request: FastifyRequest, version: DraftVersion): boolean | undefined {
  const value = sfBoolean(request, version.completeHeader)
  if (value === undefined) return undefined
  return version.completeHeader === 'Upload-Incomplete' ? !value : value
}

/** The response header telling whether the upload is complete, in the version's own words. */
export function completeHeaderValue (version: DraftVersion, complete: boolean): [string, string] {
  const flag = version.completeHeader === 'Upload-Incomplete' ? !complete : complete
  return [version.completeHeader, flag ? '?1' : '?0']
}

/** True when the request carries any of the given headers, whatever their values. */
export function hasAnyHeader (request: FastifyRequest, names: string[]): string | undefined {
  return names.find((name) => request.headers[name.toLowerCase()] !== undefined)
}

// Media types that describe the transfer, not the representation: never stored as the file's type.
const TRANSFER_TYPES = new Set(['application/partial-upload', 'application/offset+octet-stream'])
const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/
const MAX_FILENAME = 255

/**
 * The representation metadata a draft creation request carries (I-C-10), in the keys tus uploads use,
 * so GET serves the file the same way: `filename` from Content-Disposition, `filetype` from Content-Type.
 * Both are validated; anything unusable is left out rather than refused.
 */
export function representationMetadata (request: FastifyRequest): UploadMetadata {
  const metadata: UploadMetadata = {}
  const type = (stringHeader(request, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase()
  if (MEDIA_TYPE.test(type) && !TRANSFER_TYPES.has(type)) metadata.filetype = type
  const disposition = stringHeader(request, 'content-disposition')
  const filename = disposition === undefined ? undefined : dispositionFilename(disposition)
  if (filename !== undefined) metadata.filename = filename
  return metadata
}

/**
 * The filename of a Content-Disposition value (RFC 6266): `filename*` (RFC 8187, UTF-8) wins over
 * `filename` (token or quoted-string). Path separators and control characters are removed.
 */
export function dispositionFilename (header: string): string | undefined {
  const parameters = new Map<string, string>()
  const pattern = /;\s*([A-Za-z0-9!#$&+.^_`|~*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)/g
  for (const match of header.matchAll(pattern)) {
    const name = match[1]!.toLowerCase()
    if (parameters.has(name)) continue
    const raw = match[2]!
    parameters.set(name, raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw)
  }
  let name: string | undefined
  const extended = parameters.get('filename*')
  if (extended !== undefined) {
    const match = /^utf-8'[A-Za-z0-9-]*'(.*)$/i.exec(extended)
    if (match !== null) {
      try {
        name = decodeURIComponent(match[1]!)
      } catch {
        name = undefined
      }
    }
  }
  name ??= parameters.get('filename')
  if (name === undefined) return undefined
  let clean = cleanFilename(name).trim().slice(0, MAX_FILENAME)
  // Never half of a character: a cut between the two halves of a surrogate pair (an emoji) drops the first.
  if (/[\ud800-\udbff]$/.test(clean)) clean = clean.slice(0, -1)
  return isPathStep(clean) ? undefined : clean
}
