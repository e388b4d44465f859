import type { FastifyReply, FastifyRequest } from 'fastify'
import { getLiveUpload, uploadIdOf, type TusContext } from '../context.js'
import { serializeMetadata } from '../metadata.js'
import { setExpires } from '../reply.js'

/** HEAD: the upload's offset, length and metadata. */
export async function handleHead (context: TusContext, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const upload = await getLiveUpload(context, uploadIdOf(request))
  reply.header('Cache-Control', 'no-store').header('Upload-Offset', String(upload.offset))
  if (upload.size === undefined) reply.header('Upload-Defer-Length', '1')
  else reply.header('Upload-Length', String(upload.size))
  if (Object.keys(upload.metadata).length > 0) reply.header('Upload-Metadata', serializeMetadata(upload.metadata))
  setExpires(context, reply, upload)
  await reply.code(200).send()
}
