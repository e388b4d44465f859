// The ceiling for a download: node's http server piping the data file (`<data dir>/<id>`, the last segment of the
// URL) into the response, with Content-Length, and nothing else. Usage: node plain-download.mjs <data dir>
import { createReadStream, statSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'

const dir = process.argv[2]
if (dir === undefined) throw new Error('usage: plain-download.mjs <data dir>')
const server = createServer((request, response) => {
  const path = join(dir, request.url.split('/').pop())
  response.writeHead(200, { 'Content-Length': statSync(path).size })
  createReadStream(path).pipe(response)
})
server.listen(0, '127.0.0.1', () => { process.stdout.write(`${server.address().port}\n`) })
process.on('SIGTERM', () => { process.exit(0) })
