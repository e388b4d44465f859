// The ceiling for any Node.js tus server on this machine: node's http server piping each PATCH body into
// an append-mode file, with just enough protocol for the benchmark client (bare-tus.mjs). No validation,
// no info file, no locking. Usage: node limit.mjs <data dir> [--fsync]
// --fsync: fsync the data file when an upload reaches its length, as fastify-tus does before it reports
// completion (the ceiling for a server with that durability).
import { createWriteStream } from 'node:fs'
import { open } from 'node:fs/promises'
import { pipeline } from 'node:stream/promises'
import { serveBareTus } from './bare-tus.mjs'

const dir = process.argv[2]
if (dir === undefined) throw new Error('usage: limit.mjs <data dir> [--fsync]')
const fsync = process.argv.includes('--fsync')

serveBareTus(dir, async (req, path, upload) => {
  const file = createWriteStream(path, { flags: 'a' })
  await pipeline(req, file)
  if (fsync && upload.offset + file.bytesWritten === upload.length) {
    const handle = await open(path, 'r')
    await handle.sync()
    await handle.close()
  }
  return file.bytesWritten
})
