import { Http2ServerResponse } from 'node:http2'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { DraftVersion } from './versions.js'

/**
 * Sends a `104 Upload Resumption Supported` interim response. HTTP/2: the stream's `additionalHeaders`.
 * HTTP/1.1: Node has no API for arbitrary 1xx (writeEarlyHints is 103 only), so it is written on the
 * socket before the final response head, as writeEarlyHints does; only while this response owns the
 * socket (not a pipelined request still queued) and never after the final head. HTTP/1.0 clients get
 * no 1xx at all (RFC 9110 §15.2).
 */
export function sendInterim (request: FastifyRequest, reply: FastifyReply, version: DraftVersion, headers: Record<string, string>): boolean {
  const all = { ...headers, 'Upload-Draft-Interop-Version': String(version.interop) }
  if (Object.values(all).some((value) => /[\r\n]/.test(value))) return false
  const response: unknown = reply.raw
  if (response instanceof Http2ServerResponse) {
    if (response.headersSent || response.stream.destroyed) return false
    response.stream.additionalHeaders({ ':status': 104, ...lowerCase(all) })
    return true
  }
  const socket = reply.raw.socket
  if (request.raw.httpVersion !== '1.1' || socket === null || reply.raw.headersSent || socket.destroyed || !socket.writable) return false
  let head = 'HTTP/1.1 104 Upload Resumption Supported\r\n'
  for (const [name, value] of Object.entries(all)) head += `${name}: ${value}\r\n`
  socket.write(head + '\r\n')
  return true
}

function lowerCase (headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]))
}
