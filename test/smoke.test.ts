import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { idOf, randomBytesSeeded, sha256, startServer, tusUpload } from './helpers.js'

t.test('tus-js-client uploads a buffer in chunks, byte-identical on disk', async (t) => {
  const server = await startServer(t)
  const data = randomBytesSeeded(300_000)
  const url = await tusUpload(data, { endpoint: server.endpoint, chunkSize: 100_000, metadata: { filename: 'a.bin' } })
  t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(data))
})
