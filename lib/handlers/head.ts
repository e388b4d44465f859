import type { FastifyReply, FastifyRequest } from 'fastify'
import { isComplete } from '../append.js'
import { finishFinal } from '../concat.js'
import { settledUpload, uploadIdOf, type TusContext } from '../context.js'
import { serializeMetadata } from '../metadata.js'
import { setExpires } from '../reply.js'

/** HEAD: the upload's offset, length and metadata. */
export async function handleHead (context: TusContext, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  let upload = await settledUpload(context, uploadIdOf(request), { timeoutMs: context.options.lockTimeout })
  reply.header('Cache-Control', 'no-store')
  if (upload.concat?.type === 'final' && !isComplete(upload)) {
    // Its partials may have completed while no process was waiting for them (a restart): finish it now.
    upload = (await finishFinal(context, request, upload.id, 1))?.upload ?? upload
  }
  // A final upload has no offset until its concatenation is done (T-N-9).
  if (upload.concat?.type !== 'final' || isComplete(upload)) reply.header('Upload-Offset', String(upload.offset))
  if (upload.concat !== undefined) reply.header('Upload-Concat', upload.concat.type === 'final' ? upload.concat.header : 'partial')
  if (upload.size === undefined) reply.header('Upload-Defer-Length', '1')
  else reply.header('Upload-Length', String(upload.size))
  if (Object.keys(upload.metadata).length > 0) reply.header('Upload-Metadata', serializeMetadata(upload.metadata))
  setExpires(context, reply, upload)
  await reply.code(200).send()
}
