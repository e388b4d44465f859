import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Readable, Writable } from 'node:stream'
import { freeReadChunk } from '../core/free-memory.js'
import { openFinished } from '../core/operations.js'
import { stringHeader } from '../core/request.js'
import type { TusServices } from '../core/services.js'
import { TusErrors, withFacts } from '../errors.js'
import { contentDisposition, contentType } from '../metadata.js'
import type { ByteRange, UploadInfo } from '../store/types.js'

// The file name and type rules live in the bottom layer, where the stores use them too (S3 object headers).
export { cleanFilename, contentDisposition, isPathStep } from '../metadata.js'

/**
 * Sends a finished upload (see readFinished), whole or one byte range (206), or 304 / 412 as its conditional headers
 * ask (preconditionsHold). The same download for every protocol;
 * `setHeaders` adds a protocol's own headers (the draft's offset retrieval). No header is set before the store has
 * opened the bytes, and those set are taken back if the bytes fail before the first is sent: an error answer carries
 * the error's headers only, never a file's name, type or length. `Cache-Control: no-store`, as on HEAD: a download
 * is someone's file, which no cache (a CDN or proxy in front of the app) may keep and serve to another; an app's
 * `onSend` hook may set another.
 */
export async function sendDownload (
  services: TusServices, request: FastifyRequest, reply: FastifyReply, upload: UploadInfo, setHeaders?: (reply: FastifyReply) => void
): Promise<void> {
  const size = upload.offset
  const lastModified = upload.modifiedAt.toUTCString()
  const etag = entityTag(upload)
  if (!preconditionsHold(request, etag, upload.modifiedAt)) {
    setHeaders?.(reply)
    await reply.code(304).header('ETag', etag).header('Last-Modified', lastModified).header('Cache-Control', 'no-store').send()
    return
  }
  const rangeHeader = stringHeader(request, 'range')
  const range = rangeHeader === undefined || !ifRangeHolds(stringHeader(request, 'if-range'), etag, upload.modifiedAt, lastModified)
    ? undefined
    : parseRange(rangeHeader, size)
  const length = range === undefined ? size : range.end - range.start + 1
  const body = length === 0 ? '' : await bytesOf(services, request, reply, upload, length, range)
  const before = new Set(Object.keys(reply.getHeaders()))
  setHeaders?.(reply)
  reply
    .header('Content-Type', contentType(upload.metadata))
    .header('Content-Disposition', contentDisposition(upload.metadata, upload.id))
    .header('X-Content-Type-Options', 'nosniff')
    .header('Accept-Ranges', 'bytes')
    .header('Last-Modified', lastModified)
    .header('ETag', etag)
    .header('Cache-Control', 'no-store')
    .header('Content-Length', String(length))
  if (range !== undefined) reply.header('Content-Range', `bytes ${range.start}-${range.end}/${size}`)
  if (typeof body !== 'string') withdrawnOnEarlyError(body, reply, before)
  await reply.code(range === undefined ? 200 : 206).send(body)
}

/**
 * Takes back the headers set since `before` when `body` fails before the response's headers are sent (a read
 * error on its first bytes): Fastify has copied them onto the response, where its error answer would keep them.
 */
function withdrawnOnEarlyError (body: Readable, reply: FastifyReply, before: ReadonlySet<string>): void {
  body.once('error', () => {
    if (reply.raw.headersSent) return
    for (const name of Object.keys(reply.getHeaders())) {
      if (!before.has(name)) reply.removeHeader(name)
    }
  })
}

/** The store's stream of the `length` bytes to send, checked and freed as it is sent (see sentExactly). */
async function bytesOf (services: TusServices, request: FastifyRequest, reply: FastifyReply, upload: UploadInfo, length: number, range?: ByteRange): Promise<Readable> {
  const id = upload.id
  const body = await openFinished(services, upload, range)
  return sentExactly(body, reply.raw as unknown as Writable, length, {
    freeChunks: services.store.readChunksDisposable === true,
    idleTimeout: services.options.idleTimeout,
    onMismatch: (sent) => {
      request.log.error({ uploadId: id, expected: length, sent }, 'fastify-tus: a download did not match its length (the data file changed outside the plugin?); its response was cut')
    },
    onStalled: (sent) => {
      request.log.warn({ uploadId: id, expected: length, sent }, 'fastify-tus: a download\'s client took no byte for idleTimeout; its response was cut')
    }
  })
}

interface SendOptions {
  freeChunks: boolean
  /** ms the response may take no byte before it is cut. */
  idleTimeout: number
  onMismatch: (sent: number) => void
  onStalled: (sent: number) => void
}

/**
 * Makes `body`, when it is piped straight into `response` (as Fastify pipes a stream payload), cut the response
 * if it does not send exactly `length` bytes: a data file shortened by another tool under a download would
 * otherwise leave the client waiting on its kept-alive connection for the rest of the announced Content-Length,
 * and a longer one would send bytes the client reads as its next response. A cut response is a broken download
 * the client sees and retries. With `freeChunks`, each chunk is freed once the response has written it, when nothing
 * else listens to the body (an onSend hook may read it without replacing it): each chunk
 * of a download is a new buffer outside the heap, like a body's (see free-memory.ts); left to V8, a 1 GiB download
 * cost 34-36 full collections in a Fastify app, and 1.5x the CPU of a plain pipe.
 * A client that takes no byte for `idleTimeout` has its response cut too, as a body that brings none is ended: until
 * then the download holds what its store reads with (a file descriptor; with S3Store one of its client's pooled
 * sockets, so that 50 clients that never read stopped every other request to S3).
 * Piped anywhere else (an onSend hook replaced the payload: a compression, say, which changes the length anyway)
 * it is piped as usual: it cannot know when another reader is done with a chunk.
 */
function sentExactly (body: Readable, response: Writable, length: number, options: SendOptions): Readable {
  const { freeChunks, idleTimeout, onMismatch, onStalled } = options
  const pipe = body.pipe.bind(body)
  body.pipe = <T extends NodeJS.WritableStream>(destination: T, pipeOptions?: { end?: boolean }): T => {
    if (destination !== response as unknown) return pipe(destination, pipeOptions)
    let sent = 0
    let stall: NodeJS.Timeout | undefined
    const cut = (report: (sent: number) => void): void => {
      report(sent)
      response.destroy(new Error(`a download of ${length} bytes ended after ${sent}`))
      body.destroy()
    }
    const resume = (): void => {
      clearTimeout(stall)
      stall = undefined
      body.resume()
    }
    body.on('data', (chunk: Buffer) => {
      sent += chunk.length
      if (sent > length) { cut(onMismatch); return }
      // Freed only when nothing but the response got the chunk: an onSend hook that reads the payload without
      // replacing it (a cache, an audit copy) listens to it too, and keeps its chunks.
      const alone = freeChunks && body.listenerCount('data') === 1 && body.listenerCount('readable') === 0
      const written = alone ? response.write(chunk, () => { freeReadChunk(chunk) }) : response.write(chunk)
      if (written) return
      body.pause()
      stall ??= setTimeout(() => { cut(onStalled) }, idleTimeout).unref()
    })
    response.on('drain', resume)
    body.once('close', () => {
      clearTimeout(stall)
      response.off('drain', resume)
    })
    body.once('end', () => {
      if (sent !== length) cut(onMismatch)
      else if (pipeOptions?.end !== false) response.end()
    })
    return destination
  }
  return body
}

/**
 * The upload's strong entity tag: its creation time and length. A finished upload's bytes never change (appends are
 * refused; a final is made once), and one removed and made again under the same id (which onUploadCreate may
 * choose) has another creation time, so the tag names these very bytes. Unlike its modification time, the same in
 * every instance and with every store (S3Store's differs between the instance that wrote the last byte and others).
 */
function entityTag (upload: UploadInfo): string {
  return `"${upload.createdAt.getTime().toString(36)}-${upload.offset.toString(36)}"`
}

/**
 * RFC 9110 13.2.2, for a GET: false when the answer is 304 (If-None-Match names the upload's tag, or, without it,
 * If-Modified-Since is not older than Last-Modified); throws 412 when If-Match names no tag of it (strong
 * comparison, or `*`) or, without If-Match, it was modified after If-Unmodified-Since. Dates compare to the second,
 * as Last-Modified is sent; one that does not parse is ignored, as the RFC asks.
 */
function preconditionsHold (request: FastifyRequest, etag: string, modifiedAt: Date): boolean {
  const modified = Math.floor(modifiedAt.getTime() / 1000) * 1000
  const ifMatch = stringHeader(request, 'if-match')
  if (ifMatch !== undefined) {
    if (!tagListMatches(ifMatch, etag, false)) throw new TusErrors.PRECONDITION_FAILED('If-Match')
  } else {
    const since = httpDate(stringHeader(request, 'if-unmodified-since'))
    if (since !== undefined && modified > since) throw new TusErrors.PRECONDITION_FAILED('If-Unmodified-Since')
  }
  const ifNoneMatch = stringHeader(request, 'if-none-match')
  if (ifNoneMatch !== undefined) return !tagListMatches(ifNoneMatch, etag, true)
  const since = httpDate(stringHeader(request, 'if-modified-since'))
  return since === undefined || modified > since
}

/** Whether a list of entity tags (or `*`) names `etag`: weakly, a `W/` tag of the same opaque value matches too. */
function tagListMatches (header: string, etag: string, weak: boolean): boolean {
  if (header.trim() === '*') return true
  return header.split(',').some((member) => {
    let tag = member.trim()
    if (tag.startsWith('W/')) {
      if (!weak) return false
      tag = tag.slice(2)
    }
    return tag === etag
  })
}

/**
 * An HTTP-date (RFC 9110 5.6.7: the IMF-fixdate, or the obsolete RFC 850 and asctime forms, which recipients must
 * accept too) as ms since the epoch; undefined when absent or anything else, which a condition must then ignore
 * (13.1.3, 13.1.4). Not Date.parse: it reads "-1" (the year -1) or a year 10000 as dates, and a download would then
 * be refused (412) or answered as cached (304) on a value that is no HTTP-date.
 */
function httpDate (header: string | undefined): number | undefined {
  const fields = header === undefined ? undefined : dateFields(header.trim())
  if (fields === undefined) return undefined
  const { day, month, year, time } = fields
  const [hours, minutes, seconds] = time.split(':').map(Number) as [number, number, number]
  const ms = Date.UTC(year, month, day, hours, minutes, seconds)
  const date = new Date(ms)
  // Feb 30, 24:00 and the like are no dates (nor a year below 100, which Date.UTC takes for 19xx).
  const exact = date.getUTCFullYear() === year && date.getUTCDate() === day && date.getUTCMonth() === month && date.getUTCHours() === hours &&
    date.getUTCMinutes() === minutes && date.getUTCSeconds() === seconds
  return exact ? ms : undefined
}

/** The parts of an HTTP-date in any of its three forms (month from 0). */
function dateFields (value: string): { day: number, month: number, year: number, time: string } | undefined {
  const fixed = IMF_FIXDATE.exec(value)
  if (fixed !== null) return { day: Number(fixed[1]), month: MONTHS.indexOf(fixed[2]!), year: Number(fixed[3]), time: fixed[4]! }
  const rfc850 = RFC850_DATE.exec(value)
  if (rfc850 !== null) {
    // A two-digit year more than 50 years ahead is the most recent year in the past with those digits.
    const now = new Date().getUTCFullYear()
    const year = Math.floor(now / 100) * 100 + Number(rfc850[3])
    return { day: Number(rfc850[1]), month: MONTHS.indexOf(rfc850[2]!), year: year > now + 50 ? year - 100 : year, time: rfc850[4]! }
  }
  const asctime = ASCTIME_DATE.exec(value)
  if (asctime !== null) return { day: Number(asctime[2]), month: MONTHS.indexOf(asctime[1]!), year: Number(asctime[4]), time: asctime[3]! }
  return undefined
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
const MONTH = `(${MONTHS.join('|')})`
const TIME = '(\\d{2}:\\d{2}:\\d{2})'
const IMF_FIXDATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`)
const RFC850_DATE = new RegExp(`^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`)
const ASCTIME_DATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ${MONTH} ( \\d|\\d{2}) ${TIME} (\\d{4})$`)

/**
 * Whether a `Range` may be served (RFC 9110 13.1.5): always without `If-Range`; with it, only when it names the
 * representation the client already has part of, else the whole body is sent. A resumed download whose URL now
 * holds other bytes (an upload removed and made again under the same id, which onUploadCreate may choose) would
 * otherwise get the new file's tail to append to the old one's head. An entity tag matches when it is exactly our
 * (strong) ETag; a date only when it is exactly our Last-Modified, and only once it is strong (at least a second old).
 */
function ifRangeHolds (header: string | undefined, etag: string, modifiedAt: Date, lastModified: string): boolean {
  if (header === undefined) return true
  const value = header.trim()
  if (value.startsWith('"') || value.startsWith('W/')) return value === etag
  return value === lastModified && Date.now() - modifiedAt.getTime() >= 1000
}

/**
 * One `bytes=` range (first-last, first-, or -suffix), the unit in any case (RFC 9110 §14.1). Several ranges or
 * another unit: the whole body (RFC 9110 lets a server ignore Range). Unsatisfiable: 416 with
 * `Content-Range: bytes * /size`.
 */
export function parseRange (header: string, size: number): ByteRange | undefined {
  const match = /^bytes=(\d*)-(\d*)$/i.exec(header.trim())
  if (match === null) return undefined
  const [, first = '', last = ''] = match
  let start: number
  let end: number
  if (first === '') {
    if (last === '') return undefined
    const suffix = Number(last)
    if (suffix === 0 || size === 0) throw unsatisfiable(header, size)
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(first)
    end = last === '' ? size - 1 : Math.min(Number(last), size - 1)
    if (last !== '' && Number(last) < start) return undefined
    if (start >= size) throw unsatisfiable(header, size)
  }
  return { start, end }
}

function unsatisfiable (header: string, size: number): Error {
  return withFacts(new TusErrors.RANGE_NOT_SATISFIABLE(header.slice(0, 64), size), { headers: { 'Content-Range': `bytes */${size}` } })
}
