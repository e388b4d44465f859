import t from 'tap'
import { appendFile, chmod, mkdtemp, rm, stat } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileStore } from '../lib/index.js'
import { contractId, storeContract } from './store-contract.js'

const directory = await mkdtemp(join(tmpdir(), 'fastify-tus-contract-'))
const store = new FileStore({ directory })
t.teardown(async () => {
  await store.close()
  await rm(directory, { recursive: true, force: true })
})
storeContract(t, store)

t.test('the contract holds with fsync: false', async (t) => {
  const unsynced = new FileStore({ directory: join(directory, 'no-fsync'), fsync: false })
  t.teardown(async () => { await unsynced.close() })
  storeContract(t, unsynced)
})

t.test('completion marks: a full data file still marked pending reads as completing until flushed; one written before the marks reads as complete', async (t) => {
  for (const fsync of [true, false]) {
    const marked = new FileStore({ directory: join(directory, `marks-${String(fsync)}`), fsync })
    t.teardown(async () => { await marked.close() })
    const id = contractId()
    await marked.create({ id, size: 3, metadata: {} })
    const path = join(directory, `marks-${String(fsync)}`, id)
    t.not((await stat(path)).mode & 0o100, 0, 'a new data file is marked pending')
    // Its last bytes written by something that died before completing it (here: not through the store).
    await appendFile(path, 'abc')
    const pending = new FileStore({ directory: join(directory, `marks-${String(fsync)}`), fsync })
    t.teardown(async () => { await pending.close() })
    t.equal((await pending.getInfo(id)).completing, true)
    await pending.flush(id)
    t.equal((await stat(path)).mode & 0o100, 0, 'flush clears the mark')
    t.equal((await pending.getInfo(id)).completing, undefined)

    const written = contractId()
    await marked.create({ id: written, size: 2, metadata: {} })
    t.equal(await marked.write(written, 0, Readable.from([Buffer.from('de')])), 2)
    t.equal((await stat(join(directory, `marks-${String(fsync)}`, written))).mode & 0o100, 0, 'a write that stores the last byte completes the file')
    t.equal((await pending.getInfo(written)).completing, undefined)

    // A data file from before the marks (no owner execute permission) at its length: complete, as it always was.
    const old = contractId()
    await marked.create({ id: old, size: 1, metadata: {} })
    await appendFile(join(directory, `marks-${String(fsync)}`, old), 'x')
    await chmod(join(directory, `marks-${String(fsync)}`, old), 0o644)
    t.equal((await pending.getInfo(old)).completing, undefined)
  }
})
