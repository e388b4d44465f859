// `npm start`: the example app on http://127.0.0.1:8080/ (PORT, HOST and UPLOAD_DIR change that).
import type { AddressInfo } from 'node:net'
import { buildExampleApp, DEFAULT_UPLOAD_DIR } from './app.js'

const portText = process.env.PORT ?? '8080'
const port = Number(portText)
const host = process.env.HOST ?? '127.0.0.1'
const dir = process.env.UPLOAD_DIR ?? DEFAULT_UPLOAD_DIR
if (!/^\d{1,5}$/.test(portText) || port > 65535) {
  console.error(`fastify-tus example: PORT must be a port number from 0 to 65535 (got "${portText}"): PORT=8081 npm start (PORT=0 picks a free one)`)
  process.exit(1)
}

const app = await buildExampleApp({ dir })
try {
  await app.listen({ port, host })
} catch (error) {
  // The usual first-run failure: say what to do instead of a stack trace.
  const code = (error as NodeJS.ErrnoException).code
  const hint = code === 'EADDRINUSE'
    ? `port ${port} on ${host} is already in use; choose another one: PORT=8081 npm start (PORT=0 picks a free one)`
    : code === 'EACCES'
      ? `no permission to listen on port ${port}; choose one above 1023: PORT=8081 npm start`
      : code === 'EADDRNOTAVAIL'
        ? `${host} is no address of this machine; set HOST, e.g. HOST=127.0.0.1 npm start`
        : undefined
  if (hint === undefined) throw error
  console.error(`fastify-tus example: ${hint}`)
  await app.close()
  process.exit(1)
}
const { port: boundPort } = app.server.address() as AddressInfo
const shownHost = host.includes(':') ? `[${host}]` : host
console.log(`fastify-tus example: open http://${shownHost}:${boundPort}/ (tus endpoint /files/, uploads in ${dir})`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    app.log.info({ signal }, 'shutting down')
    app.close().then(() => process.exit(0), (error: unknown) => {
      app.log.error(error)
      process.exit(1)
    })
  })
}
