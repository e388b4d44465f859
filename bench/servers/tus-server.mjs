// The official Node.js tus server: @tus/server with @tus/file-store on node's http server, defaults
// otherwise (as in its README). Usage: node tus-server.mjs <data dir>
import http from 'node:http'
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'

const dir = process.argv[2]
if (dir === undefined) throw new Error('usage: tus-server.mjs <data dir>')

const tus = new Server({ path: '/files', datastore: new FileStore({ directory: dir }) })
const server = http.createServer((req, res) => { void tus.handle(req, res) })
server.listen(0, '127.0.0.1', () => { process.stdout.write(`${server.address().port}\n`) })
// Exit normally on SIGTERM so that --cpu-prof can write its profile.
process.on('SIGTERM', () => { process.exit(0) })
