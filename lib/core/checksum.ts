import { createHash, type Hash } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import { crc32 } from 'node:zlib'
import { TusErrors } from '../errors.js'
import { stringHeader } from './request.js'

/** Announced in Tus-Checksum-Algorithm; sha1 is the one the spec requires. */
export const CHECKSUM_ALGORITHMS = ['sha1', 'md5', 'sha256', 'sha512', 'crc32'] as const
type ChecksumAlgorithm = typeof CHECKSUM_ALGORITHMS[number]

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
const DIGEST_BYTES: Record<ChecksumAlgorithm, number> = { sha1: 20, md5: 16, sha256: 32, sha512: 64, crc32: 4 }

/** A parsed `Upload-Checksum: <algorithm> <base64 digest>`. */
export interface ExpectedChecksum {
  algorithm: ChecksumAlgorithm
  digest: Buffer
}

/** Computes a digest while the bytes stream past. */
export interface RunningChecksum {
  update (chunk: Buffer): void
  digest (): Buffer
}

/** The Upload-Checksum header (or trailer) value, validated: 400 when malformed or unsupported. */
export function parseChecksum (value: string): ExpectedChecksum {
  const match = /^([A-Za-z0-9-]+) ([A-Za-z0-9+/=]+)$/.exec(value.trim())
  if (match === null) throw new TusErrors.INVALID_HEADER('Upload-Checksum', 'expected "<algorithm> <base64 digest>"')
  const name = match[1]!.toLowerCase()
  if (!isAlgorithm(name)) throw new TusErrors.CHECKSUM_UNSUPPORTED(name.slice(0, 32), CHECKSUM_ALGORITHMS.join(', '))
  const encoded = match[2]!
  const digest = Buffer.from(encoded, 'base64')
  if (!BASE64.test(encoded) || digest.length !== DIGEST_BYTES[name]) {
    throw new TusErrors.INVALID_HEADER('Upload-Checksum', `not a base64 ${name} digest`)
  }
  return { algorithm: name, digest }
}

/** The checksum announced in the request headers, if any. */
export function headerChecksum (request: FastifyRequest): ExpectedChecksum | undefined {
  const value = stringHeader(request, 'upload-checksum')
  return value === undefined ? undefined : parseChecksum(value)
}

/** Whether the request announces an Upload-Checksum trailer (`Trailer: Upload-Checksum`, among others). */
export function announcesChecksumTrailer (request: FastifyRequest): boolean {
  const names = stringHeader(request, 'trailer')
  return names !== undefined && names.split(',').some((name) => name.trim().toLowerCase() === 'upload-checksum')
}

/** The checksum sent as a trailer of a chunked request; read once the body has ended. */
export function trailerChecksum (request: FastifyRequest): ExpectedChecksum | undefined {
  // A request that came through no connection (`app.inject()`) has no trailers object at all.
  const trailers = request.raw.trailers as NodeJS.Dict<string> | undefined
  const value = trailers?.['upload-checksum']
  return value === undefined ? undefined : parseChecksum(value)
}

export function runningChecksum (algorithm: ChecksumAlgorithm): RunningChecksum {
  if (algorithm === 'crc32') {
    let value = 0
    return {
      update: (chunk) => { value = crc32(chunk, value) },
      digest: () => {
        const digest = Buffer.alloc(4)
        digest.writeUInt32BE(value >>> 0)
        return digest
      }
    }
  }
  const hash: Hash = createHash(algorithm)
  return { update: (chunk) => { hash.update(chunk) }, digest: () => hash.digest() }
}

function isAlgorithm (name: string): name is ChecksumAlgorithm {
  return (CHECKSUM_ALGORITHMS as readonly string[]).includes(name)
}
