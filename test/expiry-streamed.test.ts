// removeExpired() reads the store's listing as it streams and checks several uploads at a time: every expired
// upload must still be removed exactly once, every fresh one kept, and a failing listing must reject.
import t from 'tap'
import { readdir } from 'node:fs/promises'
import { FileStore } from '../lib/index.js'
import type { DataStore } from '../lib/index.js'
import { backdate, createUpload, idOf, startServer } from './helpers.js'

t.test('many uploads, expired and fresh interleaved: exactly the expired ones removed, each once', async (t) => {
  const server = await startServer(t, { daysToKeep: 0.5 })
  const expired: string[] = []
  const fresh: string[] = []
  for (let index = 0; index < 90; index++) {
    const id = idOf(await createUpload(server, { 'Upload-Length': '5' }))
    if (index % 3 === 0) fresh.push(id)
    else expired.push(id)
  }
  for (const id of expired) await backdate(server.dir, id, 1)
  const expiredEvents: string[] = []
  server.app.tus.on('expired', (upload) => { expiredEvents.push(upload.id) })
  t.equal(await server.app.tus.removeExpired(), expired.length, 'each expired upload counted once')
  t.same(expiredEvents.sort(), [...expired].sort(), 'one event each')
  t.same((await readdir(server.dir)).sort(), fresh.flatMap((id) => [id, `${id}.json`]).sort(), 'the fresh ones are untouched')
})

t.test('a listing that fails part-way rejects removeExpired()', async (t) => {
  const dir = t.testdir()
  const inner = new FileStore({ directory: dir })
  const failing: DataStore = {
    create: async (upload) => await inner.create(upload),
    getInfo: async (id) => await inner.getInfo(id),
    write: async (id, offset, source) => await inner.write(id, offset, source),
    flush: async (id) => { await inner.flush(id) },
    declareLength: async (id, size) => { await inner.declareLength(id, size) },
    read: async (id, range) => await inner.read(id, range),
    terminate: async (id) => { await inner.terminate(id) },
    list: async function * () {
      yield 'one'
      throw new Error('listing failed')
    },
    close: async () => { await inner.close() }
  }
  const server = await startServer(t, { dir, store: failing })
  await t.rejects(server.app.tus.removeExpired(), { message: 'listing failed' })
})
